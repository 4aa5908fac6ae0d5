//! linux-5.13: f8be156be163 "KVM: do not allow mapping valid but non-reference-counted
//! pages" (CVE-2021-22543), through v6.12.
//!
//! Same walk as v5.12, but the reference is taken with `kvm_try_get_pfn`: a `pfn_valid`,
//! non-reserved page whose refcount is 0 (a tail of a non-compound high-order allocation)
//! gives -EFAULT instead of being resurrected — which also refuses legitimate TTM/amdgpu
//! buffers (the functional regression that v6.13 fixed).

use super::common::{kvm_release_pfn_clean, kvm_try_get_pfn, slot_hva};
use super::v5_12::{hva_to_pfn_era, Remapped};
use super::{Faultin, Lookup, Policy, PolicyId};
use crate::kvm::{Kvm, KvmPfn};
use crate::mm::fault::fixup_user_fault;
use crate::mm::follow::{follow_pte, pte_unmap_unlock};
use crate::mm::{Errno, FaultFlags, LocalBoxFuture, EAGAIN, EFAULT};
use std::rc::Rc;
use world::Cx;

pub struct Linux5_13;

impl Policy for Linux5_13 {
    fn id(&self) -> PolicyId {
        PolicyId::Linux5_13
    }

    fn faultin<'a>(&'a self, cx: &'a Cx, kvm: &'a Rc<Kvm>, l: &'a Lookup) -> LocalBoxFuture<'a, Faultin> {
        Box::pin(async move {
            let _f = cx.func("__gfn_to_pfn_memslot");
            let (addr, slot_writable) = match slot_hva(&l.slot, l.gfn, l.write) {
                Ok(x) => x,
                Err(e) => return Faultin::err(e),
            };
            hva_to_pfn_era(cx, kvm, addr, l.nowait, l.write, slot_writable && !l.pin, Remapped::V5_13).await
        })
    }

    fn release<'a>(&'a self, cx: &'a Cx, kvm: &'a Rc<Kvm>, f: &'a Faultin) -> LocalBoxFuture<'a, ()> {
        Box::pin(kvm_release_pfn_clean(cx, kvm, f.pfn, true))
    }
}

/// `hva_to_pfn_remapped(vma, addr, write_fault, writable, p_pfn)`, v5.13.
pub(super) async fn hva_to_pfn_remapped(cx: &Cx, kvm: &Kvm, addr: u64, write_fault: bool, want_writable: bool) -> Result<Faultin, Errno> {
    let _f = cx.func("hva_to_pfn_remapped");
    let mm = &kvm.mm;
    let pte = match follow_pte(cx, mm, addr).await {
        Ok(p) => p,
        Err(_) => {
            let mut unlocked = false;
            let flags = if write_fault { FaultFlags::FAULT_FLAG_WRITE } else { FaultFlags::empty() };
            let r = fixup_user_fault(cx, mm, addr, flags, &mut unlocked).await;
            if unlocked {
                cx.emit_str("mmap_lock was dropped: -EAGAIN");
                return Err(EAGAIN);
            }
            r?;
            follow_pte(cx, mm, addr).await?
        }
    };
    let mut r = Ok(());
    let f = if write_fault && !pte.write {
        cx.emit_str("write fault on a read-only pte: KVM_PFN_ERR_RO_FAULT");
        Faultin::err(KvmPfn::ErrRoFault)
    } else {
        let writable = want_writable && pte.write;
        // "Get a reference here because callers of *hva_to_pfn* and *gfn_to_pfn* ultimately
        // call kvm_release_pfn_clean on the returned pfn."
        if !kvm_try_get_pfn(cx, kvm, pte.pfn).await {
            world::emit!(cx, "{} has refcount 0: -EFAULT", pte.pfn);
            r = Err(EFAULT);
        }
        Faultin {
            pfn: KvmPfn::Pfn(pte.pfn),
            writable,
            page: Some(pte.pfn),
        }
    };
    pte_unmap_unlock(cx, mm).await;
    r.map(|()| f)
}
