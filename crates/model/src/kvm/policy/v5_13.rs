//! linux-5.13: f8be156be163 "KVM: do not allow mapping valid but non-reference-counted
//! pages" (CVE-2021-22543), through v6.12.
//!
//! Same walk as v5.12, but the reference is taken with `kvm_try_get_pfn`: a `pfn_valid`,
//! non-reserved page whose refcount is 0 (a tail of a non-compound high-order allocation)
//! gives -EFAULT instead of being resurrected — which also refuses legitimate TTM/amdgpu
//! buffers (the functional regression that v6.13 fixed).

use super::common::kvm_try_get_pfn;
use super::v5_12::{follow_pte_or_fixup, hva_to_pfn_era, Remapped};
use super::{Faultin, PolicyId};
use crate::kvm::{Kvm, KvmPfn};
use crate::mm::follow::pte_unmap_unlock;
use crate::mm::{Errno, EFAULT};
use world::Cx;

// `hva_to_pfn()`, v5.13–v6.12: v5.12's, with this era's `hva_to_pfn_remapped`.
pre_6_13_policy!(
    Linux5_13,
    PolicyId::Linux5_13,
    hva_to_pfn_era[Remapped::V5_13],
    true
);

/// `hva_to_pfn_remapped(vma, addr, write_fault, writable, p_pfn)`, v5.13.
pub(super) async fn hva_to_pfn_remapped(
    cx: &Cx,
    kvm: &Kvm,
    addr: u64,
    write_fault: bool,
    want_writable: bool,
) -> Result<Faultin, Errno> {
    let _f = cx.func("hva_to_pfn_remapped");
    let mm = &kvm.mm;
    let pte = follow_pte_or_fixup(cx, kvm, addr, write_fault).await?;
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
