//! linux-4.8: the patch, add6a0cd1c5b "KVM: MMU: try to fix up page faults before giving up"
//! (virt/kvm/kvm_main.c, v4.8–v5.11).
//!
//! `hva_to_pfn_remapped` asks `follow_pfn`; when there is no PTE yet it runs the vma's fault
//! handler through `fixup_user_fault`, returns -EAGAIN if the mmap lock was dropped (the
//! caller looks the vma up again), and takes a reference with `kvm_get_pfn`. `*writable` is
//! not touched here: it stays `write_fault` as `hva_to_pfn_slow` set it (B1 item 6).

use super::common::{gup_first, kvm_get_pfn};
use super::v4_7::vma_is_valid;
use super::{Faultin, PolicyId};
use crate::kvm::{Kvm, KvmPfn};
use crate::mm::fault::fixup_user_fault_v4_6;
use crate::mm::follow::follow_pfn;
use crate::mm::{Errno, FaultFlags, Pfn, VmFlags, Vma, EAGAIN};
use std::rc::Rc;
use world::Cx;

pre_6_13_policy!(Linux4_8, PolicyId::Linux4_8, hva_to_pfn, false);

/// `hva_to_pfn_remapped(vma, addr, async, write_fault, p_pfn)`, as the patch wrote it.
async fn hva_to_pfn_remapped(
    cx: &Cx,
    kvm: &Kvm,
    vma: &Rc<Vma>,
    addr: u64,
    write_fault: bool,
) -> Result<Pfn, Errno> {
    let _f = cx.func("hva_to_pfn_remapped");
    let pfn = match follow_pfn(cx, vma, addr).await {
        Ok(p) => p,
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
            follow_pfn(cx, vma, addr).await?
        }
    };
    // "Whoever called remap_pfn_range is also going to call e.g. unmap_mapping_range before
    // the underlying pages are freed, causing a call to our MMU notifier."
    kvm_get_pfn(cx, kvm, pfn, false).await;
    Ok(pfn)
}

/// `hva_to_pfn(addr, atomic=false, async, write_fault, writable)`, v4.8.
async fn hva_to_pfn(
    cx: &Cx,
    kvm: &Rc<Kvm>,
    addr: u64,
    nowait: bool,
    write_fault: bool,
    want_writable: bool,
) -> Faultin {
    let _f = cx.func("hva_to_pfn");
    let mm = &kvm.mm;
    if let Some(f) = gup_first(cx, kvm, addr, nowait, write_fault, want_writable).await {
        return f;
    }
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
            match hva_to_pfn_remapped(cx, kvm, &vma, addr, write_fault).await {
                Err(e) if e == EAGAIN => continue,
                Err(_) => break Faultin::err(KvmPfn::ErrFault),
                Ok(p) => {
                    break Faultin {
                        pfn: KvmPfn::Pfn(p),
                        writable: write_fault,
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
