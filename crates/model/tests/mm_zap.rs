//! PTE teardown and permission changes, and the MMU notifier brackets around them:
//! zap_page_range_single, zap_vma_ptes, unmap_mapping_pages, munmap, mprotect,
//! madvise(MADV_DONTNEED) (kernel-history.md §c5 notifier side, §c6 Zap).

mod common;

use common::*;
use model::mm::syscalls::{sys_madvise_dontneed, sys_mprotect, sys_munmap};
use model::mm::zap::{unmap_mapping_pages, zap_page_range_single, zap_vma_ptes};
use model::mm::*;
use std::rc::Rc;
use world::Status;

fn act<F>(e: &mut Env, body: F)
where
    F: FnOnce(world::Cx, Rc<Mm>) -> LocalBoxFuture<'static, ()> + 'static,
{
    let mm = e.mm.clone();
    e.w.spawn("host", move |cx| body(cx, mm));
    let r = run(&mut e.w);
    assert_eq!(r.status, Status::Completed, "{}", r.trace);
}

/// An anonymous vma with `n` faulted-in pages; returns them (refcount 1 each, the mapping's).
fn anon_with_pages(e: &mut Env, pages: u64, n: u64) -> (Rc<Vma>, Vec<Pfn>) {
    let vma = anon(&e.mm, ANON, pages, RW);
    let ps = (0..n)
        .map(|i| {
            let p = e.frames.alloc(0, Owner::Anon, false).unwrap();
            e.mm.set_pte_setup(ANON + i * PAGE, normal(p, true));
            p
        })
        .collect();
    (vma, ps)
}

#[test]
fn zap_page_range_single_clears_ptes_inside_clear_bracket_then_frees_pages() {
    let mut e = env();
    let (vma, ps) = anon_with_pages(&mut e, 4, 3);
    let rec = Recorder::attach(&e.mm);
    rec.watch.borrow_mut().extend(ps.iter().copied());
    act(&mut e, move |cx, mm| {
        Box::pin(async move {
            mm.mmap_read_lock(&cx).await;
            zap_page_range_single(&cx, &vma, ANON, ANON + 2 * PAGE, NotifyEvent::Clear).await;
            mm.mmap_unlock(&cx).await;
        })
    });
    let (start, end) = rec.one_pair(ANON, ANON + 2 * PAGE, NotifyEvent::Clear);
    assert_eq!(start.ptes.len(), 2, "present at start");
    assert!(end.ptes.is_empty(), "gone by end");
    assert_eq!(
        end.free,
        vec![false, false, false],
        "pages are released only after _end"
    );
    assert!(e.frames.is_free(ps[0]) && e.frames.is_free(ps[1]));
    assert!(
        !e.frames.is_free(ps[2]) && e.mm.pte(ANON + 2 * PAGE).is_some(),
        "outside the range"
    );
}

#[test]
fn zap_vma_ptes_clears_pfnmap_range() {
    let mut e = env();
    let vma = device(&e.mm, "bar0", DEV, 2, pfnmap_flags(), None);
    e.mm.set_pte_setup(DEV, special(bar(0), true));
    e.mm.set_pte_setup(DEV + PAGE, special(bar(1), true));
    let rec = Recorder::attach(&e.mm);
    act(&mut e, move |cx, _| {
        Box::pin(async move { zap_vma_ptes(&cx, &vma, DEV, DEV + 2 * PAGE).await })
    });
    let (start, end) = rec.one_pair(DEV, DEV + 2 * PAGE, NotifyEvent::Clear);
    assert_eq!(start.ptes.len(), 2);
    assert!(end.ptes.is_empty());
}

#[test]
fn zap_vma_ptes_does_nothing_on_non_pfnmap_vma() {
    let mut e = env();
    let (vma, ps) = anon_with_pages(&mut e, 1, 1);
    let rec = Recorder::attach(&e.mm);
    act(&mut e, move |cx, _| {
        Box::pin(async move { zap_vma_ptes(&cx, &vma, ANON, ANON + PAGE).await })
    });
    assert!(rec.calls().is_empty());
    assert_eq!(e.mm.pte(ANON), Some(normal(ps[0], true)));
    assert_eq!(e.frames.refcount(ps[0]), 1);
}

#[test]
fn unmap_mapping_pages_clears_file_range_inside_clear_bracket() {
    let mut e = env();
    let file = AddressSpace::new(&mut e.w, "vfio-dev", 8);
    e.mm.mmap(MmapArgs {
        name: "bar0".into(),
        start: DEV,
        pages: 4,
        flags: pfnmap_flags(),
        pgoff: 2,
        ops: None,
        file: Some(file.clone()),
    })
    .unwrap();
    for i in 0..4 {
        e.mm.set_pte_setup(DEV + i * PAGE, special(bar(i), true));
    }
    let rec = Recorder::attach(&e.mm);
    // File pages 3 and 4 are vma pages 1 and 2. No mmap_lock: i_mmap_rwsem only.
    act(&mut e, move |cx, _| {
        Box::pin(async move { unmap_mapping_pages(&cx, &file, 3, 2).await })
    });
    let (start, end) = rec.one_pair(DEV + PAGE, DEV + 3 * PAGE, NotifyEvent::Clear);
    assert_eq!(
        start.ptes,
        vec![
            (DEV + PAGE, special(bar(1), true)),
            (DEV + 2 * PAGE, special(bar(2), true))
        ]
    );
    assert!(end.ptes.is_empty());
    assert!(e.mm.pte(DEV).is_some() && e.mm.pte(DEV + 3 * PAGE).is_some());
}

#[test]
fn munmap_clears_ptes_inside_unmap_bracket_and_frees_pages() {
    let mut e = env();
    let (_vma, ps) = anon_with_pages(&mut e, 4, 2);
    let rec = Recorder::attach(&e.mm);
    act(&mut e, move |cx, mm| {
        Box::pin(async move { sys_munmap(&cx, &mm, ANON, 2 * PAGE).await.unwrap() })
    });
    let (start, end) = rec.one_pair(ANON, ANON + 2 * PAGE, NotifyEvent::Unmap);
    assert_eq!(start.ptes.len(), 2);
    assert!(end.ptes.is_empty());
    assert!(ps.iter().all(|&p| e.frames.is_free(p)));
    assert!(e.mm.vma_lookup(ANON).is_none());
    assert!(e.mm.vma_lookup(ANON + 2 * PAGE).is_some());
}

#[test]
fn mprotect_write_protects_ptes_inside_protection_vma_bracket() {
    let mut e = env();
    let (_vma, ps) = anon_with_pages(&mut e, 2, 1);
    let rec = Recorder::attach(&e.mm);
    act(&mut e, move |cx, mm| {
        Box::pin(async move {
            sys_mprotect(&cx, &mm, ANON, PAGE, true, false)
                .await
                .unwrap()
        })
    });
    let (start, end) = rec.one_pair(ANON, ANON + PAGE, NotifyEvent::ProtectionVma);
    assert_eq!(
        start.ptes,
        vec![(ANON, normal(ps[0], true))],
        "writable at start"
    );
    assert_eq!(
        end.ptes,
        vec![(ANON, normal(ps[0], false))],
        "write-protected by end"
    );
    assert_eq!(e.frames.refcount(ps[0]), 1, "mprotect frees nothing");
    assert!(!e
        .mm
        .vma_lookup(ANON)
        .unwrap()
        .flags()
        .contains(VmFlags::VM_WRITE));
}

#[test]
fn mprotect_without_ptes_does_not_call_notifier() {
    let mut e = env();
    anon(&e.mm, ANON, 2, RW);
    let rec = Recorder::attach(&e.mm);
    act(&mut e, move |cx, mm| {
        Box::pin(async move {
            sys_mprotect(&cx, &mm, ANON, 2 * PAGE, true, false)
                .await
                .unwrap()
        })
    });
    assert!(rec.calls().is_empty(), "{:?}", rec.calls());
    assert!(!e
        .mm
        .vma_lookup(ANON)
        .unwrap()
        .flags()
        .contains(VmFlags::VM_WRITE));
}

#[test]
fn madvise_dontneed_clears_inside_clear_bracket_and_frees_anon_page_for_reuse() {
    let mut e = env();
    let (_vma, ps) = anon_with_pages(&mut e, 1, 1);
    let gen = e.frames.generation(ps[0]);
    let rec = Recorder::attach(&e.mm);
    act(&mut e, move |cx, mm| {
        Box::pin(async move { sys_madvise_dontneed(&cx, &mm, ANON, PAGE).await.unwrap() })
    });
    let (start, end) = rec.one_pair(ANON, ANON + PAGE, NotifyEvent::Clear);
    assert_eq!(start.ptes, vec![(ANON, normal(ps[0], true))]);
    assert!(end.ptes.is_empty());
    assert!(e.frames.is_free(ps[0]));
    assert_eq!(
        e.frames.alloc(0, Owner::Anon, false),
        Some(ps[0]),
        "LIFO reuse"
    );
    assert_eq!(e.frames.generation(ps[0]), gen + 1);
}

#[test]
fn madvise_dontneed_einval_on_pfnmap() {
    let mut e = env();
    device(&e.mm, "bar0", DEV, 1, pfnmap_flags(), None);
    e.mm.set_pte_setup(DEV, special(bar(0), true));
    let rec = Recorder::attach(&e.mm);
    let mm = e.mm.clone();
    let out = spawn_ret(&mut e.w, "host", move |cx| async move {
        sys_madvise_dontneed(&cx, &mm, DEV, PAGE).await
    });
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some(Err(EINVAL)));
    assert!(rec.calls().is_empty());
    assert!(e.mm.pte(DEV).is_some());
}
