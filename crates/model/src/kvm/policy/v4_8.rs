//! linux-4.8: the patch, add6a0cd1c5b "KVM: MMU: try to fix up page faults before giving up"
//! (virt/kvm/kvm_main.c, v4.8–v5.11).
//!
//! `hva_to_pfn_remapped` asks `follow_pfn`; when there is no PTE yet it runs the vma's fault
//! handler through `fixup_user_fault`, returns -EAGAIN if the mmap lock was dropped (the
//! caller looks the vma up again), and takes a reference with `kvm_get_pfn`. `*writable` is
//! not touched here: it stays `write_fault` as `hva_to_pfn_slow` set it (B1 item 6).

use super::common::{gup_pre_6_13, kvm_get_pfn, kvm_release_pfn_clean, slot_hva};
use super::v4_7::vma_is_valid;
use super::{Faultin, Lookup, Policy, PolicyId};
use crate::kvm::{Kvm, KvmPfn};
use crate::mm::fault::fixup_user_fault_v4_6;
use crate::mm::follow::follow_pfn;
use crate::mm::{Errno, FaultFlags, LocalBoxFuture, Pfn, Vma, VmFlags, EAGAIN};
use std::rc::Rc;
use world::Cx;

pub struct Linux4_8;

impl Policy for Linux4_8 {
    fn id(&self) -> PolicyId {
        PolicyId::Linux4_8
    }

    fn faultin<'a>(&'a self, cx: &'a Cx, kvm: &'a Rc<Kvm>, l: &'a Lookup) -> LocalBoxFuture<'a, Faultin> {
        Box::pin(async move {
            let _f = cx.func("__gfn_to_pfn_memslot");
            let (addr, slot_writable) = match slot_hva(&l.slot, l.gfn, l.write) {
                Ok(x) => x,
                Err(e) => return Faultin::err(e),
            };
            hva_to_pfn(cx, kvm, addr, l.nowait, l.write, slot_writable && !l.pin).await
        })
    }

    fn release<'a>(&'a self, cx: &'a Cx, kvm: &'a Rc<Kvm>, f: &'a Faultin) -> LocalBoxFuture<'a, ()> {
        Box::pin(kvm_release_pfn_clean(cx, kvm, f.pfn, false))
    }
}

/// `hva_to_pfn_remapped(vma, addr, async, write_fault, p_pfn)`, as the patch wrote it.
async fn hva_to_pfn_remapped(cx: &Cx, kvm: &Kvm, vma: &Rc<Vma>, addr: u64, write_fault: bool) -> Result<Pfn, Errno> {
    let _f = cx.func("hva_to_pfn_remapped");
    let pfn = match follow_pfn(cx, vma, addr).await {
        Ok(p) => p,
        Err(_) => {
            // get_user_pages fails for VM_IO and VM_PFNMAP vmas and does not call the fault
            // handler, so do it here.
            let mut unlocked = false;
            let flags = if write_fault { FaultFlags::FAULT_FLAG_WRITE } else { FaultFlags::empty() };
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
async fn hva_to_pfn(cx: &Cx, kvm: &Rc<Kvm>, addr: u64, nowait: bool, write_fault: bool, want_writable: bool) -> Faultin {
    let _f = cx.func("hva_to_pfn");
    let mm = &kvm.mm;
    match gup_pre_6_13(cx, kvm, addr, nowait, write_fault, want_writable).await {
        Ok((p, w)) => {
            return Faultin {
                pfn: KvmPfn::Pfn(p),
                writable: w,
                page: Some(p),
            }
        }
        Err(e) => world::emit!(cx, "get_user_pages: {}", e.map_or("0 pages".to_string(), |e| e.to_string())),
    }
    mm.mmap_read_lock(cx).await;
    let r = loop {
        // retry:
        let Some(vma) = mm.vma_lookup(addr) else {
            world::emit!(cx, "find_vma_intersection({addr:#x}) = NULL: KVM_PFN_ERR_FAULT");
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
