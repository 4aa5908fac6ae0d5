//! linux-4.7: `hva_to_pfn` before the patch (virt/kvm/kvm_main.c, v2.6.27–v4.7).
//!
//! A `VM_PFNMAP` vma was assumed to be one linear `remap_pfn_range` done at mmap time, so
//! the pfn is computed from `vm_pgoff` without looking at the page tables, and every pfn
//! there is assumed reserved — `BUG_ON(!kvm_is_reserved_pfn(pfn))`.

use super::common::{gup_first, kvm_is_reserved_pfn};
use super::{Faultin, PolicyId};
use crate::kvm::{Kvm, KvmPfn};
use crate::mm::{Pfn, VmFlags, PAGE_SHIFT};
use std::rc::Rc;
use world::Cx;

pre_6_13_policy!(Linux4_7, PolicyId::Linux4_7, hva_to_pfn, false);

/// `hva_to_pfn(addr, atomic=false, async, write_fault, writable)`, v4.7.
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
    let vma = mm.vma_lookup(addr);
    let r = match vma {
        None => {
            world::emit!(
                cx,
                "find_vma_intersection({addr:#x}) = NULL: KVM_PFN_ERR_FAULT"
            );
            Faultin::err(KvmPfn::ErrFault)
        }
        Some(vma) if vma.flags().contains(VmFlags::VM_PFNMAP) => {
            let pfn = Pfn(((addr - vma.start) >> PAGE_SHIFT) + vma.pgoff());
            world::emit!(
                cx,
                "VM_PFNMAP {}: pfn = (hva - vm_start) >> PAGE_SHIFT + vm_pgoff = {pfn}",
                vma.name
            );
            if !kvm_is_reserved_pfn(cx, kvm, pfn, false).await {
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
    // VM_READ always (a PROT_WRITE-only vma is not valid even for a write fault), VM_WRITE
    // for a write fault.
    let f = vma.flags();
    f.contains(VmFlags::VM_READ) && (!write || f.contains(VmFlags::VM_WRITE))
}
