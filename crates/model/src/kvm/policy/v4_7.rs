//! linux-4.7: `hva_to_pfn` before the patch (virt/kvm/kvm_main.c, v2.6.27–v4.7).
//!
//! A `VM_PFNMAP` vma was assumed to be one linear `remap_pfn_range` done at mmap time, so
//! the pfn is computed from `vm_pgoff` without looking at the page tables, and every pfn
//! there is assumed reserved — `BUG_ON(!kvm_is_reserved_pfn(pfn))`.

use super::common::{gup_pre_6_13, kvm_is_reserved_pfn, kvm_release_pfn_clean, slot_hva};
use super::{Faultin, Lookup, Policy, PolicyId};
use crate::kvm::{Kvm, KvmPfn};
use crate::mm::{LocalBoxFuture, Pfn, VmFlags, PAGE_SHIFT};
use std::rc::Rc;
use world::Cx;

pub struct Linux4_7;

impl Policy for Linux4_7 {
    fn id(&self) -> PolicyId {
        PolicyId::Linux4_7
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

/// `hva_to_pfn(addr, atomic=false, async, write_fault, writable)`, v4.7.
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
    let vma = mm.vma_lookup(addr);
    let r = match vma {
        None => {
            world::emit!(cx, "find_vma_intersection({addr:#x}) = NULL: KVM_PFN_ERR_FAULT");
            Faultin::err(KvmPfn::ErrFault)
        }
        Some(vma) if vma.flags().contains(VmFlags::VM_PFNMAP) => {
            let pfn = Pfn(((addr - vma.start) >> PAGE_SHIFT) + vma.pgoff.get());
            world::emit!(cx, "VM_PFNMAP {}: pfn = (hva - vm_start) >> PAGE_SHIFT + vm_pgoff = {pfn}", vma.name);
            if !kvm_is_reserved_pfn(kvm, pfn, false) {
                mm.mmap_unlock(cx).await;
                return cx.bug(format!("BUG_ON(!kvm_is_reserved_pfn({pfn}))")).await;
            }
            Faultin {
                pfn: KvmPfn::Pfn(pfn),
                writable: write_fault,
                page: None,
            }
        }
        Some(vma) => {
            if nowait && vma_is_valid(&vma, write_fault) {
                Faultin::err(KvmPfn::ErrNeedsIo)
            } else {
                Faultin::err(KvmPfn::ErrFault)
            }
        }
    };
    mm.mmap_unlock(cx).await;
    r
}

/// `vma_is_valid(vma, write_fault)`.
pub(super) fn vma_is_valid(vma: &crate::mm::Vma, write: bool) -> bool {
    let need = if write { VmFlags::VM_WRITE } else { VmFlags::VM_READ };
    vma.flags().intersects(need)
}
