//! Helpers shared by the pre-v6.13 eras: the "is this pfn refcounted?" guesswork of
//! virt/kvm/kvm_main.c that kvm-no-struct-page (v6.13) deleted.

use crate::kvm::{Kvm, KvmPfn, Memslot};
use crate::mm::gup::{get_user_page_fast_only, get_user_pages_unlocked};
use crate::mm::{FollFlags, Hva, Pfn};
use world::Cx;

/// `kvm_is_reserved_pfn(pfn)`: `!pfn_valid(pfn) || PageReserved(page)` (v4.x; ZONE_DEVICE
/// exemption from v5.4 is irrelevant here). `zero_refcounted` models 7df003c85218 ("KVM: fix
/// overflow of zero page refcount with ksm running", v5.5 [U]): before it the zero page
/// counted as reserved, so the reference GUP took on it was never dropped.
///
/// `PageReserved` is a load of the page's flags: a step of its own on `page <pfn>`.
pub async fn kvm_is_reserved_pfn(cx: &Cx, kvm: &Kvm, pfn: Pfn, zero_refcounted: bool) -> bool {
    if !kvm.frames.pfn_valid(pfn) {
        return true;
    }
    if zero_refcounted && pfn == kvm.frames.zero_pfn() {
        return false;
    }
    cx.access(kvm.frames.obj(pfn), world::Access::Read, "PageReserved")
        .await;
    kvm.frames.reserved(pfn)
}

/// `kvm_get_pfn(pfn)` (v4.8–v5.12): `get_page()` unless reserved — on *any* non-reserved
/// pfn, including a refcount-0 tail page.
pub async fn kvm_get_pfn(cx: &Cx, kvm: &Kvm, pfn: Pfn, zero_refcounted: bool) {
    let _f = cx.func("kvm_get_pfn");
    if kvm_is_reserved_pfn(cx, kvm, pfn, zero_refcounted).await {
        world::emit!(cx, "{pfn} is reserved: no reference");
        return;
    }
    kvm.frames.get_page(cx, pfn).await;
    kvm.note_ref(pfn, 1);
}

/// `kvm_try_get_pfn(pfn)` (v5.13–v6.12): reserved → true without a reference; otherwise
/// `get_page_unless_zero()`.
pub async fn kvm_try_get_pfn(cx: &Cx, kvm: &Kvm, pfn: Pfn) -> bool {
    let _f = cx.func("kvm_try_get_pfn");
    if kvm_is_reserved_pfn(cx, kvm, pfn, true).await {
        world::emit!(cx, "{pfn} is reserved: no reference");
        return true;
    }
    let ok = kvm.frames.get_page_unless_zero(cx, pfn).await;
    if ok {
        kvm.note_ref(pfn, 1);
    }
    ok
}

/// `kvm_release_pfn_clean(pfn)` (≤ v6.12): `put_page()` unless the pfn is an error or
/// reserved — the heuristic is re-evaluated now, on whatever the frame has become.
pub async fn kvm_release_pfn_clean(cx: &Cx, kvm: &Kvm, pfn: KvmPfn, zero_refcounted: bool) {
    let KvmPfn::Pfn(p) = pfn else { return };
    let _f = cx.func("kvm_release_pfn_clean");
    if kvm_is_reserved_pfn(cx, kvm, p, zero_refcounted).await {
        return;
    }
    kvm.frames.put_page(cx, p).await;
    kvm.note_ref(p, -1);
}

/// The GUP half of pre-v6.13 `hva_to_pfn`: `hva_to_pfn_fast` (only for atomic/async callers
/// that want a writable page) then `hva_to_pfn_slow`. Returns `Ok((pfn, writable))`,
/// `Err(None)` for "FOLL_NOWAIT would sleep", `Err(Some(e))` for a GUP error.
pub async fn gup_pre_6_13(
    cx: &Cx,
    kvm: &Kvm,
    addr: Hva,
    nowait: bool,
    write_fault: bool,
    want_writable: bool,
) -> Result<(Pfn, bool), Option<crate::mm::Errno>> {
    let mm = &kvm.mm;
    if nowait && (write_fault || want_writable) {
        if let Some(p) = get_user_page_fast_only(cx, mm, addr, FollFlags::FOLL_WRITE).await {
            kvm.note_ref(p, 1);
            return Ok((p, true));
        }
    }
    // hva_to_pfn_slow: *writable = write_fault.
    let mut writable = write_fault;
    let mut foll = FollFlags::FOLL_HWPOISON;
    if write_fault {
        foll |= FollFlags::FOLL_WRITE;
    }
    if nowait {
        foll |= FollFlags::FOLL_NOWAIT;
    }
    let mut page = match get_user_pages_unlocked(cx, mm, addr, foll).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err(None),
        Err(e) => return Err(Some(e)),
    };
    kvm.note_ref(page, 1);
    if !write_fault && want_writable {
        if let Some(w) = upgrade_to_writable(cx, kvm, addr, page).await {
            (page, writable) = (w, true);
        }
    }
    Ok((page, writable))
}

/// "map read fault as writable if possible" (`hva_to_pfn_slow`, every era): after a read
/// GUP, try GUP-fast for write; on success trade the read reference for the writable page's.
pub async fn upgrade_to_writable(cx: &Cx, kvm: &Kvm, addr: Hva, page: Pfn) -> Option<Pfn> {
    let w = get_user_page_fast_only(cx, &kvm.mm, addr, FollFlags::FOLL_WRITE).await?;
    kvm.note_ref(w, 1);
    kvm.frames.put_page(cx, page).await;
    kvm.note_ref(page, -1);
    Some(w)
}

/// The pre-v6.13 `hva_to_pfn` prologue: the page from GUP, with the reference GUP took,
/// or `None` (after tracing why) when the vma path must be tried.
pub async fn gup_first(
    cx: &Cx,
    kvm: &Kvm,
    addr: Hva,
    nowait: bool,
    write_fault: bool,
    want_writable: bool,
) -> Option<super::Faultin> {
    match gup_pre_6_13(cx, kvm, addr, nowait, write_fault, want_writable).await {
        Ok((p, w)) => Some(super::Faultin {
            pfn: KvmPfn::Pfn(p),
            writable: w,
            page: Some(p),
        }),
        Err(e) => {
            world::emit!(
                cx,
                "get_user_pages: {}",
                e.map_or("0 pages".to_string(), |e| e.to_string())
            );
            None
        }
    }
}

/// `__gfn_to_pfn_memslot()`'s prologue: `KVM_HVA_ERR_RO_BAD` → `RO_FAULT`; a read-only slot
/// never maps writable.
pub fn slot_hva(slot: &Memslot, gfn: u64, write: bool) -> Result<(Hva, bool), KvmPfn> {
    match slot.gfn_to_hva_many(gfn, write) {
        crate::kvm::GfnHva::RoBad => Err(KvmPfn::ErrRoFault),
        crate::kvm::GfnHva::Hva(h) => Ok((h, !slot.readonly)),
    }
}
