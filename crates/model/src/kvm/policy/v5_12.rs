//! linux-5.12: bd2fae8da794 "KVM: do not assume PTE is writable after follow_pfn" (with
//! a340b3e229b2 "Map PFN-type memory regions as writable (if possible)" and a9545779ee9e).
//!
//! `follow_pte` returns with the PTL held, so the write bit and the `kvm_get_pfn` are taken
//! while the PTE cannot change; a write fault on a read-only PTE gives `KVM_PFN_ERR_RO_FAULT`.

use super::common::{gup_first, kvm_get_pfn};
use super::v4_7::vma_is_valid;
use super::{Faultin, PolicyId};
use crate::kvm::{Kvm, KvmPfn};
use crate::mm::fault::fixup_user_fault;
use crate::mm::follow::{follow_pte, pte_unmap_unlock};
use crate::mm::{Errno, FaultFlags, Pte, VmFlags, EAGAIN};
use std::rc::Rc;
use world::Cx;

// `hva_to_pfn(addr, atomic, async, write_fault, writable)`, v5.12: the body below with this
// era's `hva_to_pfn_remapped` (shared with v5.13, which differs only in `try_get`).
pre_6_13_policy!(
    Linux5_12,
    PolicyId::Linux5_12,
    hva_to_pfn_era[Remapped::V5_12],
    true
);

/// `hva_to_pfn_remapped(vma, addr, async, write_fault, writable, p_pfn)`, v5.12.
async fn hva_to_pfn_remapped(
    cx: &Cx,
    kvm: &Kvm,
    addr: u64,
    write_fault: bool,
    want_writable: bool,
) -> Result<Faultin, Errno> {
    let _f = cx.func("hva_to_pfn_remapped");
    let mm = &kvm.mm;
    let pte = follow_pte_or_fixup(cx, kvm, addr, write_fault).await?;
    let f = if write_fault && !pte.write {
        cx.emit_str("write fault on a read-only pte: KVM_PFN_ERR_RO_FAULT");
        Faultin::err(KvmPfn::ErrRoFault)
    } else {
        // "if (writable) *writable = pte_write(*ptep);"
        let writable = want_writable && pte.write;
        kvm_get_pfn(cx, kvm, pte.pfn, true).await;
        Faultin {
            pfn: KvmPfn::Pfn(pte.pfn),
            writable,
            page: Some(pte.pfn),
        }
    };
    pte_unmap_unlock(cx, mm).await;
    Ok(f)
}

/// The walk both v5.12 and v5.13 start with: `follow_pte`, and when there is no PTE,
/// `fixup_user_fault` then `follow_pte` again — or -EAGAIN if the mmap lock was dropped.
/// On success the PTL is held (release with `pte_unmap_unlock`).
pub(super) async fn follow_pte_or_fixup(
    cx: &Cx,
    kvm: &Kvm,
    addr: u64,
    write_fault: bool,
) -> Result<Pte, Errno> {
    let mm = &kvm.mm;
    match follow_pte(cx, mm, addr).await {
        Ok(p) => Ok(p),
        Err(_) => {
            let mut unlocked = false;
            let flags = if write_fault {
                FaultFlags::FAULT_FLAG_WRITE
            } else {
                FaultFlags::empty()
            };
            let r = fixup_user_fault(cx, mm, addr, flags, &mut unlocked).await;
            if unlocked {
                cx.emit_str("mmap_lock was dropped: -EAGAIN");
                return Err(EAGAIN);
            }
            r?;
            follow_pte(cx, mm, addr).await
        }
    }
}

/// Which `hva_to_pfn_remapped` the shared v5.12–v6.12 `hva_to_pfn` calls.
#[derive(Copy, Clone)]
pub(super) enum Remapped {
    V5_12,
    V5_13,
}

/// The body of `hva_to_pfn` from v5.12 to v6.12; only the remapped walker differs.
pub(super) async fn hva_to_pfn_era(
    cx: &Cx,
    kvm: &Rc<Kvm>,
    addr: u64,
    nowait: bool,
    write_fault: bool,
    want_writable: bool,
    remapped: Remapped,
) -> Faultin {
    let _f = cx.func("hva_to_pfn");
    let mm = &kvm.mm;
    if let Some(f) = gup_first(cx, kvm, addr, nowait, write_fault, want_writable).await {
        return f;
    }
    mm.mmap_read_lock(cx).await;
    let r = loop {
        let Some(vma) = mm.vma_lookup(addr) else {
            world::emit!(cx, "vma_lookup({addr:#x}) = NULL: KVM_PFN_ERR_FAULT");
            break Faultin::err(KvmPfn::ErrFault);
        };
        if vma.flags().intersects(VmFlags::VM_IO | VmFlags::VM_PFNMAP) {
            let r = match remapped {
                Remapped::V5_12 => {
                    hva_to_pfn_remapped(cx, kvm, addr, write_fault, want_writable).await
                }
                Remapped::V5_13 => {
                    super::v5_13::hva_to_pfn_remapped(cx, kvm, addr, write_fault, want_writable)
                        .await
                }
            };
            match r {
                Err(e) if e == EAGAIN => continue,
                Err(e) => {
                    world::emit!(cx, "hva_to_pfn_remapped: {e}: KVM_PFN_ERR_FAULT");
                    break Faultin::err(KvmPfn::ErrFault);
                }
                Ok(f) => break f,
            }
        }
        break if nowait && vma_is_valid(&vma, write_fault) {
            Faultin::err(KvmPfn::ErrNeedsIo)
        } else {
            Faultin::err(KvmPfn::ErrFault)
        };
    };
    mm.mmap_unlock(cx).await;
    r
}
