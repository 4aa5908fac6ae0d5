//! Tearing PTEs down (mm/memory.c): every path brackets the clear with the MMU notifier pair,
//! and frees the pages only after `invalidate_range_end` (`tlb_finish_mmu`).

use super::notifier::{NotifierRange, NotifyEvent};
use super::types::*;
use super::vma::{AddressSpace, Vma};
use super::Mm;
use std::rc::Rc;
use world::{Cx, LockMode};

/// Clear the PTEs of `[start, end)` under the PTL; returns the normal pages whose mapping
/// reference the caller must drop after the notifier end.
pub(crate) async fn unmap_ptes(cx: &Cx, mm: &Mm, start: Hva, end: Hva) -> Vec<Pfn> {
    let mut pages = Vec::new();
    mm.ptl_lock_range(cx, start, end).await;
    for (a, _) in mm.ptes_in(start, end) {
        if let Some(old) = mm.clear_pte(cx, a).await {
            if !old.special {
                pages.push(old.pfn);
            }
        }
    }
    mm.ptl_unlock(cx).await;
    pages
}

/// `zap_page_range_single(vma, address, size, details)`: notifier start (`event`), clear the
/// PTEs, notifier end, then release the pages.
pub async fn zap_page_range_single(
    cx: &Cx,
    vma: &Rc<Vma>,
    start: Hva,
    end: Hva,
    event: NotifyEvent,
) {
    let _f = cx.func("zap_page_range_single");
    let mm = vma.mm.upgrade().expect("vma outlives its mm");
    let start = start.max(vma.start);
    let end = end.min(vma.end);
    if start >= end {
        return;
    }
    let range = NotifierRange { start, end, event };
    mm.notify_start(cx, &range).await;
    let pages = unmap_ptes(cx, &mm, start, end).await;
    mm.notify_end(cx, &range).await;
    for p in pages {
        mm.frames.put_page(cx, p).await;
    }
}

/// `zap_vma_ptes(vma, address, size)`: like [`zap_page_range_single`] but silently does
/// nothing unless the range lies in a `VM_PFNMAP` vma.
pub async fn zap_vma_ptes(cx: &Cx, vma: &Rc<Vma>, start: Hva, end: Hva) {
    if start < vma.start || end > vma.end || !vma.flags().contains(VmFlags::VM_PFNMAP) {
        return;
    }
    zap_page_range_single(cx, vma, start, end, NotifyEvent::Clear).await
}

/// `unmap_mapping_range(mapping, holebegin, holelen, even_cows)` /
/// `unmap_mapping_pages(mapping, pgoff, nr)`: zap every vma that maps file pages
/// `[pgoff, pgoff + nr)`, holding `i_mmap_rwsem` for read — **not** the mmap lock, so it
/// races with faults in progress.
pub async fn unmap_mapping_pages(cx: &Cx, mapping: &AddressSpace, pgoff: u64, nr: u64) {
    let _f = cx.func("unmap_mapping_range");
    cx.lock(mapping.i_mmap_rwsem, LockMode::Shared).await;
    for vma in mapping.vmas() {
        let vstart = vma.pgoff();
        let vend = vstart + (vma.end - vma.start) / PAGE_SIZE;
        let lo = pgoff.max(vstart);
        let hi = (pgoff + nr).min(vend);
        if lo >= hi {
            continue;
        }
        let start = vma.start + (lo - vstart) * PAGE_SIZE;
        let end = vma.start + (hi - vstart) * PAGE_SIZE;
        zap_page_range_single(cx, &vma, start, end, NotifyEvent::Clear).await;
    }
    cx.unlock(mapping.i_mmap_rwsem).await;
}
