//! get_user_pages (mm/gup.c, v6.18 semantics): the path KVM takes for ordinary memory, and
//! the one that refuses `VM_IO|VM_PFNMAP` vmas and special PTEs — which is why
//! `hva_to_pfn_remapped` exists at all.
//!
//! Simplification: `FOLL_PIN` is modelled as a plain reference (no `GUP_PIN_COUNTING_BIAS`).

use super::fault::handle_mm_fault;
use super::types::*;
use super::vma::Vma;
use super::Mm;
use std::rc::Rc;
use world::{Access, Cx};

/// `check_vma_flags(vma, gup_flags)`: -EFAULT for `VM_IO|VM_PFNMAP`, for a write without
/// `VM_WRITE`, and for a read without `VM_READ`. `VM_MIXEDMAP` alone passes.
pub fn check_vma_flags(vma: &Vma, foll: FollFlags) -> Result<(), Errno> {
    let f = vma.flags();
    if f.intersects(VmFlags::VM_IO | VmFlags::VM_PFNMAP) {
        return Err(EFAULT);
    }
    if foll.contains(FollFlags::FOLL_WRITE) {
        if !f.contains(VmFlags::VM_WRITE) {
            return Err(EFAULT);
        }
    } else if !f.contains(VmFlags::VM_READ) {
        return Err(EFAULT);
    }
    Ok(())
}

/// `get_user_page_fast_only(addr, gup_flags, &page)` / `pin_user_pages_fast` without the
/// slow fallback: a lockless walk (`gup_fast_pte_range`) that gives up on a missing,
/// protnone, special or (for `FOLL_WRITE`) read-only PTE. Returns the page with a
/// reference taken.
pub async fn get_user_page_fast_only(cx: &Cx, mm: &Mm, addr: Hva, foll: FollFlags) -> Option<Pfn> {
    let _f = cx.func("get_user_page_fast_only");
    cx.access(mm.pte_obj(addr), Access::Read, "gup_fast: READ_ONCE(pte)")
        .await;
    let Some(pte) = mm.pte(addr) else {
        world::emit!(cx, "{addr:#x}: pte none, fall back");
        return None;
    };
    if pte.protnone || pte.special || (foll.contains(FollFlags::FOLL_WRITE) && !pte.write) {
        world::emit!(
            cx,
            "{addr:#x}: {} pte, fall back",
            if pte.special {
                "special"
            } else if pte.protnone {
                "protnone"
            } else {
                "read-only"
            }
        );
        return None;
    }
    if !mm.frames.get_page_unless_zero(cx, pte.pfn).await {
        return None;
    }
    // Re-check the PTE did not change under us (gup_fast_pte_range's pte_val compare).
    cx.access(mm.pte_obj(addr), Access::Read, "gup_fast: recheck pte")
        .await;
    if mm.pte(addr) != Some(pte) {
        cx.emit_str("pte changed under gup_fast: drop the page and fall back");
        mm.frames.put_page(cx, pte.pfn).await;
        return None;
    }
    world::emit!(cx, "{addr:#x} -> {}", pte.pfn);
    Some(pte.pfn)
}

enum Follow {
    Page(Pfn),
    NeedFault,
}

/// `follow_page_pte()`: the page at `addr` with a reference, under the PTL.
async fn follow_page_pte(cx: &Cx, mm: &Mm, addr: Hva, foll: FollFlags) -> Result<Follow, Errno> {
    mm.ptl_lock_at(cx, addr).await;
    let r = match mm.pte(addr) {
        None => Ok(Follow::NeedFault),
        Some(p) if p.protnone => Ok(Follow::NeedFault),
        Some(p) if foll.contains(FollFlags::FOLL_WRITE) && !p.write => Ok(Follow::NeedFault),
        Some(p) if p.special && p.pfn != mm.frames.zero_pfn() => {
            world::emit!(cx, "{addr:#x}: special pte, no struct page: -EEXIST");
            Err(EEXIST)
        }
        Some(p) => {
            mm.frames.get_page(cx, p.pfn).await;
            Ok(Follow::Page(p.pfn))
        }
    };
    mm.ptl_unlock(cx).await;
    r
}

/// `faultin_page()`: returns `Ok(())` to retry the follow, `Err(EBUSY)` for a retry that
/// dropped the lock (`*locked = false`) or, under `FOLL_NOWAIT`, one that did not, and
/// `Err(EAGAIN)` for `VM_FAULT_COMPLETED`.
async fn faultin_page(
    cx: &Cx,
    mm: &Rc<Mm>,
    vma: &Rc<Vma>,
    addr: Hva,
    foll: FollFlags,
    locked: &mut bool,
) -> Result<(), Errno> {
    let mut flags = FaultFlags::FAULT_FLAG_ALLOW_RETRY | FaultFlags::FAULT_FLAG_KILLABLE;
    if foll.contains(FollFlags::FOLL_WRITE) {
        flags |= FaultFlags::FAULT_FLAG_WRITE;
    }
    if foll.contains(FollFlags::FOLL_INTERRUPTIBLE) {
        flags |= FaultFlags::FAULT_FLAG_INTERRUPTIBLE;
    }
    if foll.contains(FollFlags::FOLL_NOWAIT) {
        flags |= FaultFlags::FAULT_FLAG_RETRY_NOWAIT;
    }
    if foll.contains(FOLL_TRIED) {
        flags |= FaultFlags::FAULT_FLAG_TRIED;
    }
    let ret = handle_mm_fault(cx, mm, vma, addr, flags).await;
    if ret.contains(VmFault::VM_FAULT_COMPLETED) {
        *locked = false;
        return Err(EAGAIN);
    }
    if ret.intersects(VmFault::ERROR) {
        return Err(vm_fault_to_errno(ret, foll).unwrap_or(EFAULT));
    }
    if ret.contains(VmFault::VM_FAULT_RETRY) {
        if !flags.contains(FaultFlags::FAULT_FLAG_RETRY_NOWAIT) {
            *locked = false;
        }
        return Err(EBUSY);
    }
    Ok(())
}

/// `FOLL_TRIED` (internal to GUP).
const FOLL_TRIED: FollFlags = FollFlags(0x800);

/// `__get_user_pages()` for one page; `Ok(None)` means zero pages (a retry, or `FOLL_NOWAIT`
/// that would have had to sleep).
async fn __get_user_pages(
    cx: &Cx,
    mm: &Rc<Mm>,
    addr: Hva,
    foll: FollFlags,
    locked: &mut bool,
) -> Result<Option<Pfn>, Errno> {
    let Some(vma) = mm.vma_lookup(addr) else {
        world::emit!(cx, "no vma at {addr:#x}: -EFAULT");
        return Err(EFAULT);
    };
    if let Err(e) = check_vma_flags(&vma, foll) {
        world::emit!(cx, "check_vma_flags({}, {foll}): {e}", vma.name);
        return Err(e);
    }
    loop {
        if mm.fatal_signal.get() {
            return Err(EINTR);
        }
        match follow_page_pte(cx, mm, addr, foll).await? {
            Follow::Page(p) => {
                world::emit!(cx, "{addr:#x} -> {p}");
                return Ok(Some(p));
            }
            Follow::NeedFault => match faultin_page(cx, mm, &vma, addr, foll, locked).await {
                Ok(()) => continue,
                Err(e) if e == EBUSY || e == EAGAIN => return Ok(None),
                Err(e) => return Err(e),
            },
        }
    }
}

/// `get_user_pages_unlocked(addr, 1, &page, gup_flags)` (and `pin_user_pages_unlocked` with
/// `FOLL_PIN`): takes the mmap lock itself, retries with `FOLL_TRIED` whenever a fault
/// dropped it, and returns `Ok(None)` only for `FOLL_NOWAIT` when the page would need I/O.
pub async fn get_user_pages_unlocked(
    cx: &Cx,
    mm: &Rc<Mm>,
    addr: Hva,
    mut foll: FollFlags,
) -> Result<Option<Pfn>, Errno> {
    let _f = cx.func("get_user_pages_unlocked");
    if mm.fatal_signal.get() {
        // mmap_read_lock_killable failed: the only -EAGAIN GUP returns.
        return Err(EAGAIN);
    }
    mm.mmap_read_lock(cx).await;
    loop {
        let mut locked = true;
        let r = __get_user_pages(cx, mm, addr, foll, &mut locked).await;
        if !locked {
            // The fault handler dropped mmap_lock: take it again and retry (FOLL_TRIED).
            mm.mmap_read_lock(cx).await;
            foll |= FOLL_TRIED;
            continue;
        }
        mm.mmap_unlock(cx).await;
        if let Ok(None) = r {
            cx.emit_str("0 pages (FOLL_NOWAIT)");
        }
        return r;
    }
}

/// `unpin_user_page()` / `put_page()` for a page GUP returned.
pub async fn unpin_user_page(cx: &Cx, mm: &Mm, page: Pfn) {
    mm.frames.put_page(cx, page).await
}
