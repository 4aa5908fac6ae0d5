//! The system calls a VMM's host threads make on guest memory: `mmap(MAP_FIXED)`, `munmap`,
//! `mprotect`, `madvise(MADV_DONTNEED)` (mm/mmap.c, mm/vma.c, mm/mprotect.c, mm/madvise.c).

use super::notifier::{NotifierRange, NotifyEvent};
use super::types::*;
use super::vma::AddressSpace;
use super::vma::Vma;
use super::zap::{unmap_ptes, zap_page_range_single};
use super::{Mm, MmapArgs};
use std::rc::Rc;
use world::{Cx, LockMode};

/// Run `f`, a change of the vma tree that links or unlinks vmas of `file`, with the file's
/// `i_mmap_rwsem` held for write (`vma_prepare` / `vma_complete`, `unlink_file_vma`).
pub(crate) async fn with_i_mmap<R>(
    cx: &Cx,
    file: Option<&Rc<AddressSpace>>,
    f: impl FnOnce() -> R,
) -> R {
    let Some(file) = file else { return f() };
    cx.lock(file.i_mmap_rwsem, LockMode::Exclusive).await;
    let r = f();
    cx.unlock(file.i_mmap_rwsem).await;
    r
}

/// Split the vmas overlapping `[start, end)` so that the range is covered by whole vmas;
/// returns those inner vmas. `flags_of` gives the flags of the inner parts.
async fn split_range(
    cx: &Cx,
    mm: &Rc<Mm>,
    start: Hva,
    end: Hva,
    flags_of: impl Fn(&Vma) -> VmFlags,
) -> Vec<Rc<Vma>> {
    let mut inner = Vec::new();
    for v in mm.vmas_in(start, end) {
        let lo = start.max(v.start);
        let hi = end.min(v.end);
        let mid = with_i_mmap(cx, v.file.as_ref(), || {
            let mut parts = Vec::new();
            if v.start < lo {
                parts.push(mm.split_part(&v, v.start, lo, v.flags()));
            }
            let mid = mm.split_part(&v, lo, hi, flags_of(&v));
            parts.push(mid.clone());
            if hi < v.end {
                parts.push(mm.split_part(&v, hi, v.end, v.flags()));
            }
            mm.replace_vma(&v, parts);
            mid
        })
        .await;
        inner.push(mid);
    }
    inner
}

/// `munmap(start, len)`: `unmap_region` with `MMU_NOTIFY_UNMAP`, then the vmas are freed
/// (any pointer to them is now dangling: the model marks them dead).
pub async fn sys_munmap(cx: &Cx, mm: &Rc<Mm>, start: Hva, len: u64) -> Result<(), Errno> {
    let _f = cx.func("munmap");
    if !start.is_multiple_of(PAGE_SIZE) || len == 0 {
        return Err(EINVAL);
    }
    let end = start + len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    mm.mmap_write_lock(cx).await;
    do_munmap(cx, mm, start, end).await;
    mm.mmap_unlock(cx).await;
    Ok(())
}

async fn do_munmap(cx: &Cx, mm: &Rc<Mm>, start: Hva, end: Hva) {
    let victims = split_range(cx, mm, start, end, |v| v.flags()).await;
    if victims.is_empty() {
        return;
    }
    let range = NotifierRange {
        start,
        end,
        event: NotifyEvent::Unmap,
    };
    mm.notify_start(cx, &range).await;
    let pages = unmap_ptes(cx, mm, start, end).await;
    mm.notify_end(cx, &range).await;
    for p in pages {
        mm.frames.put_page(cx, p).await;
    }
    for v in victims {
        world::emit!(cx, "vma {} [{:#x}, {:#x}) freed", v.name, v.start, v.end);
        with_i_mmap(cx, v.file.as_ref(), || mm.replace_vma(&v, Vec::new())).await;
    }
}

/// `mmap(addr, len, ..., MAP_FIXED)`: replaces whatever was mapped there (an implicit
/// munmap), under the mmap lock for write.
pub async fn sys_mmap(cx: &Cx, mm: &Rc<Mm>, args: MmapArgs) -> Result<Rc<Vma>, Errno> {
    let _f = cx.func("mmap");
    mm.mmap_write_lock(cx).await;
    let end = args.start + args.pages * PAGE_SIZE;
    do_munmap(cx, mm, args.start, end).await;
    let name = args.name.clone();
    let file = args.file.clone();
    let r = with_i_mmap(cx, file.as_ref(), || mm.mmap(args)).await;
    if let Ok(v) = &r {
        world::emit!(
            cx,
            "new vma {name} [{:#x}, {:#x}) {}",
            v.start,
            v.end,
            v.flags()
        );
    }
    mm.mmap_unlock(cx).await;
    r
}

/// `mprotect(start, len, prot)`: new `VM_READ/VM_WRITE` on the vmas (split as needed) and
/// `change_protection` on present PTEs, bracketed by `MMU_NOTIFY_PROTECTION_VMA` when there
/// is any PTE to change. Write permission is only ever removed from PTEs here; adding it
/// happens lazily at the next write fault. `PROT_NONE` leaves protnone PTEs.
pub async fn sys_mprotect(
    cx: &Cx,
    mm: &Rc<Mm>,
    start: Hva,
    len: u64,
    read: bool,
    write: bool,
) -> Result<(), Errno> {
    let _f = cx.func("mprotect");
    let end = start + len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    mm.mmap_write_lock(cx).await;
    let covered: u64 = mm
        .vmas_in(start, end)
        .iter()
        .map(|v| end.min(v.end) - start.max(v.start))
        .sum();
    if covered != end - start {
        mm.mmap_unlock(cx).await;
        return Err(ENOMEM);
    }
    if write
        && mm
            .vmas_in(start, end)
            .iter()
            .any(|v| !v.flags().contains(VmFlags::VM_MAYWRITE))
    {
        mm.mmap_unlock(cx).await;
        return Err(Errno(13)); // -EACCES
    }
    let mut newf = VmFlags::empty();
    if read {
        newf |= VmFlags::VM_READ;
    }
    if write {
        newf |= VmFlags::VM_WRITE;
    }
    let rw = VmFlags::VM_READ | VmFlags::VM_WRITE;
    split_range(cx, mm, start, end, |v| v.flags().without(rw) | newf).await;
    // change_protection's walk: which entries are populated (a lockless look at the tables).
    cx.step_with(mm.pte_read_fp(start, end), "change_protection: walk")
        .await;
    let ptes = mm.ptes_in(start, end);
    if !ptes.is_empty() {
        let range = NotifierRange {
            start,
            end,
            event: NotifyEvent::ProtectionVma,
        };
        mm.notify_start(cx, &range).await;
        mm.ptl_lock_range(cx, start, end).await;
        for (a, _) in ptes {
            mm.modify_pte(cx, a, |p| {
                if !write {
                    p.write = false;
                }
                p.protnone = !read && !write;
            })
            .await;
        }
        mm.ptl_unlock(cx).await;
        mm.notify_end(cx, &range).await;
    }
    mm.mmap_unlock(cx).await;
    Ok(())
}

/// `madvise(start, len, MADV_DONTNEED)`: zap the range (`MMU_NOTIFY_CLEAR`). Private
/// anonymous pages are freed (the next touch sees zeroes, or traps to userfaultfd again);
/// shared memory keeps its pages in the page cache. -EINVAL on `VM_PFNMAP` vmas.
pub async fn sys_madvise_dontneed(cx: &Cx, mm: &Rc<Mm>, start: Hva, len: u64) -> Result<(), Errno> {
    let _f = cx.func("madvise(MADV_DONTNEED)");
    let end = start + len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    mm.mmap_read_lock(cx).await;
    // madvise_walk_vmas: vma by vma; a PFNMAP vma fails madvise_dontneed_free_valid_vma()
    // after the vmas before it were already zapped.
    for v in mm.vmas_in(start, end) {
        if v.flags().contains(VmFlags::VM_PFNMAP) {
            mm.mmap_unlock(cx).await;
            return Err(EINVAL);
        }
        zap_page_range_single(cx, &v, start, end, NotifyEvent::Clear).await;
    }
    mm.mmap_unlock(cx).await;
    Ok(())
}
