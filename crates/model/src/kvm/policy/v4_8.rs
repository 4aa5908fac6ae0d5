//! linux-4.8: the patch, add6a0cd1c5b "KVM: MMU: try to fix up page faults before giving up"
//! (virt/kvm/kvm_main.c, v4.8–v4.15; from v4.16 a340b3e229b2 changed the result's
//! writability, see [`super::v4_16`]).
//!
//! `hva_to_pfn_remapped` asks `follow_pfn`; when there is no PTE yet it runs the vma's fault
//! handler through `fixup_user_fault`, returns -EAGAIN if the mmap lock was dropped (the
//! caller looks the vma up again), and takes a reference with `kvm_get_pfn`. `*writable` is
//! not touched here: it stays `write_fault` as `hva_to_pfn_slow` set it (B1 item 6), so a
//! read fault maps the page read-only and a later write faults again.

use super::common::{gup_first, kvm_get_pfn};
use super::v4_7::vma_is_valid;
use super::{Faultin, PolicyId};
use crate::kvm::{Kvm, KvmPfn};
use crate::mm::fault::fixup_user_fault_v4_6;
use crate::mm::follow::follow_pfn;
use crate::mm::{Errno, FaultFlags, Pfn, VmFlags, Vma, EAGAIN};
use std::rc::Rc;
use world::Cx;

// `hva_to_pfn(addr, atomic=false, async, write_fault, writable)`, v4.8: the body below with
// the patch's `hva_to_pfn_remapped`.
pre_6_13_policy!(
    Linux4_8,
    PolicyId::Linux4_8,
    hva_to_pfn_era[Remapped::V4_8],
    false
);

/// The walk both v4.8 and v4.16 start with: `follow_pfn`, and when there is no PTE,
/// `fixup_user_fault` then `follow_pfn` again — or -EAGAIN if the mmap lock was dropped.
pub(super) async fn follow_pfn_or_fixup(
    cx: &Cx,
    kvm: &Kvm,
    vma: &Rc<Vma>,
    addr: u64,
    write_fault: bool,
) -> Result<Pfn, Errno> {
    match follow_pfn(cx, vma, addr).await {
        Ok(p) => Ok(p),
        Err(_) => {
            // get_user_pages fails for VM_IO and VM_PFNMAP vmas and does not call the fault
            // handler, so do it here.
            let mut unlocked = false;
            let flags = if write_fault {
                FaultFlags::FAULT_FLAG_WRITE
            } else {
                FaultFlags::empty()
            };
            let r = fixup_user_fault_v4_6(cx, &kvm.mm, addr, flags, &mut unlocked).await;
            if unlocked {
                cx.emit_str("mmap_sem was dropped: -EAGAIN");
                return Err(EAGAIN);
            }
            r?;
            follow_pfn(cx, vma, addr).await
        }
    }
}

/// `hva_to_pfn_remapped(vma, addr, async, write_fault, p_pfn)`, as the patch wrote it: no
/// `writable` argument.
async fn hva_to_pfn_remapped(
    cx: &Cx,
    kvm: &Kvm,
    vma: &Rc<Vma>,
    addr: u64,
    write_fault: bool,
) -> Result<Pfn, Errno> {
    let _f = cx.func("hva_to_pfn_remapped");
    let pfn = follow_pfn_or_fixup(cx, kvm, vma, addr, write_fault).await?;
    // "Whoever called remap_pfn_range is also going to call e.g. unmap_mapping_range before
    // the underlying pages are freed, causing a call to our MMU notifier."
    kvm_get_pfn(cx, kvm, pfn, false).await;
    Ok(pfn)
}

/// Which `hva_to_pfn_remapped` the shared v4.8–v5.11 `hva_to_pfn` calls.
#[derive(Copy, Clone)]
pub(super) enum Remapped {
    V4_8,
    V4_16,
}

/// The body of `hva_to_pfn` from v4.8 to v5.11; only the remapped walker differs.
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
    // hva_to_pfn_slow has already set *writable = write_fault.
    let mut writable = write_fault;
    mm.mmap_read_lock(cx).await;
    let r = loop {
        // retry:
        let Some(vma) = mm.vma_lookup(addr) else {
            world::emit!(
                cx,
                "find_vma_intersection({addr:#x}) = NULL: KVM_PFN_ERR_FAULT"
            );
            break Faultin::err(KvmPfn::ErrFault);
        };
        if vma.flags().intersects(VmFlags::VM_IO | VmFlags::VM_PFNMAP) {
            let r = match remapped {
                Remapped::V4_8 => hva_to_pfn_remapped(cx, kvm, &vma, addr, write_fault).await,
                Remapped::V4_16 => {
                    // A read-only slot, and kvm_vcpu_map, pass writable = NULL.
                    let w = want_writable.then_some(&mut writable);
                    super::v4_16::hva_to_pfn_remapped(cx, kvm, &vma, addr, write_fault, w).await
                }
            };
            match r {
                Err(e) if e == EAGAIN => continue,
                Err(_) => break Faultin::err(KvmPfn::ErrFault),
                Ok(p) => {
                    break Faultin {
                        pfn: KvmPfn::Pfn(p),
                        writable,
                        page: Some(p),
                    }
                }
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
