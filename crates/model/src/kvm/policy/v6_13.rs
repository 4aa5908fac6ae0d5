//! linux-6.13: the "kvm-no-struct-page" series (merge 5cb1659f4120), current through v6.18.
//!
//! `kvm_follow_pfn` → `hva_to_pfn`: GUP for ordinary memory (fast path only when a writable
//! mapping is wanted), and for `VM_IO|VM_PFNMAP` `follow_pfnmap_start/end` with **no page
//! reference at all** — the mapping is protected by the MMU notifier alone. Callers that
//! would keep the page mapped outside notifier protection (`kvm_vcpu_map`, `pin`) are
//! refused unless `kvm.allow_unsafe_mappings`.

use super::common::{slot_hva, upgrade_to_writable};
use super::v4_7::vma_is_valid;
use super::{Faultin, Lookup, Mutant, Policy, PolicyId};
use crate::kvm::{Kvm, KvmPfn};
use crate::mm::fault::fixup_user_fault;
use crate::mm::follow::{follow_pfnmap_end, follow_pfnmap_start};
use crate::mm::gup::{get_user_page_fast_only, get_user_pages_unlocked};
use crate::mm::{
    Errno, FaultFlags, FollFlags, LocalBoxFuture, Pfn, VmFlags, Vma, EAGAIN, EINTR, EINVAL,
};
use std::rc::Rc;
use world::Cx;

/// linux-6.13, or one of its mutants.
pub struct Linux6_13 {
    pub mutant: Option<Mutant>,
}

impl Policy for Linux6_13 {
    fn id(&self) -> PolicyId {
        self.mutant.map_or(PolicyId::Linux6_13, PolicyId::Mutant)
    }

    fn mutant(&self) -> Option<Mutant> {
        self.mutant
    }

    /// `kvm_follow_pfn(kfp)`.
    fn faultin<'a>(
        &'a self,
        cx: &'a Cx,
        kvm: &'a Rc<Kvm>,
        l: &'a Lookup,
    ) -> LocalBoxFuture<'a, Faultin> {
        Box::pin(async move {
            let _f = cx.func("kvm_follow_pfn");
            let (hva, slot_writable) = match slot_hva(&l.slot, l.gfn, l.write) {
                Ok(x) => x,
                Err(e) => return Faultin::err(e),
            };
            let mut flags = FollFlags::empty();
            if l.write {
                flags |= FollFlags::FOLL_WRITE;
            }
            if l.nowait {
                flags |= FollFlags::FOLL_NOWAIT;
            } else if !l.pin {
                flags |= FollFlags::FOLL_INTERRUPTIBLE;
            }
            // A read-only slot, and pinned users, pass map_writable = NULL.
            let map_writable = slot_writable && !l.pin;
            let ignore_unlocked = self.mutant == Some(Mutant::IgnoreUnlocked);
            hva_to_pfn(cx, kvm, hva, flags, map_writable, l.pin, ignore_unlocked).await
        })
    }

    /// `kvm_release_faultin_page(kvm, refcounted_page, unused, dirty)`: a no-op for NULL
    /// (every PFNMAP lookup); otherwise drops the GUP reference (`put_page`/`unpin`).
    fn release<'a>(
        &'a self,
        cx: &'a Cx,
        kvm: &'a Rc<Kvm>,
        f: &'a Faultin,
    ) -> LocalBoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(page) = f.page else { return };
            let _f = cx.func("kvm_release_faultin_page");
            kvm.frames.put_page(cx, page).await;
            kvm.note_ref(page, -1);
        })
    }
}

/// `kvm_resolve_pfn(kfp, page, map, writable)` for a GUP page: the reference is the
/// `refcounted_page`.
fn resolve_page(page: Pfn, writable: bool) -> Faultin {
    Faultin {
        pfn: KvmPfn::Pfn(page),
        writable,
        page: Some(page),
    }
}

/// `hva_to_pfn(kfp)`, v6.13 (c3 in kernel-history.md).
async fn hva_to_pfn(
    cx: &Cx,
    kvm: &Rc<Kvm>,
    hva: u64,
    flags: FollFlags,
    map_writable: bool,
    pin: bool,
    ignore_unlocked: bool,
) -> Faultin {
    let _f = cx.func("hva_to_pfn");
    let mm = &kvm.mm;
    let write = flags.contains(FollFlags::FOLL_WRITE);
    // hva_to_pfn_fast: only when a writable mapping is wanted (avoids CoW races for reads).
    if write || map_writable {
        if let Some(p) = get_user_page_fast_only(cx, mm, hva, FollFlags::FOLL_WRITE).await {
            kvm.note_ref(p, 1);
            return resolve_page(p, true);
        }
    }
    // hva_to_pfn_slow.
    let gup_flags = flags
        | FollFlags::FOLL_HWPOISON
        | if pin {
            FollFlags::FOLL_PIN
        } else {
            FollFlags::empty()
        };
    match get_user_pages_unlocked(cx, mm, hva, gup_flags).await {
        Ok(Some(mut page)) => {
            kvm.note_ref(page, 1);
            let mut writable = write;
            if !write && map_writable && !pin {
                if let Some(w) = upgrade_to_writable(cx, kvm, hva, page).await {
                    (page, writable) = (w, true);
                }
            }
            return resolve_page(page, writable);
        }
        Err(e) if e == EINTR || e == EAGAIN => {
            world::emit!(cx, "get_user_pages: {e}: KVM_PFN_ERR_SIGPENDING");
            return Faultin::err(KvmPfn::ErrSigpending);
        }
        Err(e) => world::emit!(cx, "get_user_pages: {e}"),
        Ok(None) => cx.emit_str("get_user_pages: 0 pages (FOLL_NOWAIT)"),
    }
    mm.mmap_read_lock(cx).await;
    let r = loop {
        // retry:
        let Some(vma) = mm.vma_lookup(hva) else {
            world::emit!(cx, "vma_lookup({hva:#x}) = NULL: KVM_PFN_ERR_FAULT");
            break Faultin::err(KvmPfn::ErrFault);
        };
        if vma.flags().intersects(VmFlags::VM_IO | VmFlags::VM_PFNMAP) {
            let r = hva_to_pfn_remapped(
                cx,
                kvm,
                &vma,
                hva,
                write,
                map_writable,
                pin,
                ignore_unlocked,
            );
            match r.await {
                Err(e) if e == EAGAIN => continue,
                Err(e) => {
                    world::emit!(cx, "hva_to_pfn_remapped: {e}: KVM_PFN_ERR_FAULT");
                    break Faultin::err(KvmPfn::ErrFault);
                }
                Ok(f) => break f,
            }
        }
        break if flags.contains(FollFlags::FOLL_NOWAIT) && vma_is_valid(&vma, write) {
            Faultin::err(KvmPfn::ErrNeedsIo)
        } else {
            Faultin::err(KvmPfn::ErrFault)
        };
    };
    mm.mmap_unlock(cx).await;
    r
}

/// `hva_to_pfn_remapped(vma, kfp, p_pfn)`, v6.13 (c4). Returns with the PTL released; the
/// pfn is only safe under MMU-notifier protection. `ignore_unlocked`: the
/// [`Mutant::IgnoreUnlocked`] defect.
#[allow(clippy::too_many_arguments)]
async fn hva_to_pfn_remapped(
    cx: &Cx,
    kvm: &Kvm,
    vma: &Rc<Vma>,
    hva: u64,
    write: bool,
    map_writable: bool,
    pin: bool,
    ignore_unlocked: bool,
) -> Result<Faultin, Errno> {
    let _f = cx.func("hva_to_pfn_remapped");
    // "Remapped memory cannot be pinned in any meaningful sense."
    if pin && !kvm.allow_unsafe_mappings.get() {
        cx.emit_str("pin && !allow_unsafe_mappings: -EINVAL");
        return Err(EINVAL);
    }
    let args = match follow_pfnmap_start(cx, vma, hva).await {
        Ok(a) => a,
        Err(_) => {
            let mut unlocked = false;
            let flags = if write {
                FaultFlags::FAULT_FLAG_WRITE
            } else {
                FaultFlags::empty()
            };
            let r = fixup_user_fault(cx, &kvm.mm, hva, flags, &mut unlocked).await;
            if unlocked && !ignore_unlocked {
                cx.emit_str("mmap_lock was dropped: -EAGAIN");
                return Err(EAGAIN);
            }
            if unlocked {
                cx.emit_str("MUTANT: mmap_lock was dropped, but keep using the old vma");
            }
            r?;
            follow_pfnmap_start(cx, vma, hva).await?
        }
    };
    let f = if write && !args.writable {
        cx.emit_str("write fault on a read-only pte: KVM_PFN_ERR_RO_FAULT");
        Faultin::err(KvmPfn::ErrRoFault)
    } else {
        // kvm_resolve_pfn(kfp, NULL, &args, args.writable): no reference.
        Faultin {
            pfn: KvmPfn::Pfn(args.pfn),
            writable: map_writable && args.writable,
            page: None,
        }
    };
    follow_pfnmap_end(cx, vma).await;
    Ok(f)
}
