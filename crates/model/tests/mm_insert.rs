//! How drivers populate vmas: `remap_pfn_range`, `vmf_insert_pfn`, `vmf_insert_mixed`,
//! `vm_insert_page` (kernel-history.md §c6).

mod common;

use common::*;
use model::mm::insert::{remap_pfn_range, vm_insert_page, vmf_insert_mixed, vmf_insert_pfn};
use model::mm::*;
use std::cell::RefCell;
use std::rc::Rc;
use world::{RunResult, Status};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    None,
    Read,
    Write,
}

/// Run `body` in one actor holding the mmap lock as asked.
fn with_lock<T, F>(e: &mut Env, lock: Lock, body: F) -> (RunResult, Option<T>)
where
    T: 'static,
    F: FnOnce(world::Cx) -> LocalBoxFuture<'static, T> + 'static,
{
    let mm = e.mm.clone();
    let out: Rc<RefCell<Option<T>>> = spawn_ret(&mut e.w, "drv", move |cx| async move {
        match lock {
            Lock::None => {}
            Lock::Read => mm.mmap_read_lock(&cx).await,
            Lock::Write => mm.mmap_write_lock(&cx).await,
        }
        let v = body(cx.clone()).await;
        if lock != Lock::None {
            mm.mmap_unlock(&cx).await;
        }
        v
    });
    let r = run(&mut e.w);
    let v = out.take();
    (r, v)
}

fn assert_bug(r: &RunResult, needle: &str) {
    match &r.status {
        Status::Bug { what, .. } => assert!(what.contains(needle), "{what}"),
        s => panic!("expected BUG containing {needle:?}, got {s:?}"),
    }
}

// ---- remap_pfn_range ----

#[test]
fn remap_pfn_range_sets_remap_flags_and_installs_special_ptes() {
    let mut e = env();
    let vma =
        e.mm.mmap(MmapArgs {
            name: "usbfs".into(),
            start: DEV,
            pages: 3,
            flags: shared_flags(),
            pgoff: 0x1234,
            ops: None,
            file: None,
        })
        .unwrap();
    let v = vma.clone();
    let (r, out) = with_lock(&mut e, Lock::Write, move |cx| {
        Box::pin(async move { remap_pfn_range(&cx, &v, DEV, bar(4), 3).await })
    });
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out, Some(Ok(())));
    assert!(vma.flags().contains(
        VmFlags::VM_IO | VmFlags::VM_PFNMAP | VmFlags::VM_DONTEXPAND | VmFlags::VM_DONTDUMP
    ));
    let ptes: Vec<_> = (0..3).map(|i| e.mm.pte(DEV + i * PAGE)).collect();
    assert_eq!(
        ptes,
        (0..3)
            .map(|i| Some(special(bar(4 + i), true)))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        vma.pgoff(),
        0x1234,
        "a shared mapping keeps its mmap offset"
    );
    assert!(!r.trace.to_string().contains("WARNING"));
}

#[test]
fn remap_pfn_range_on_populated_pte_is_a_bug() {
    let mut e = env();
    let vma = device(&e.mm, "usbfs", DEV, 3, shared_flags(), None);
    e.mm.set_pte_setup(DEV + 2 * PAGE, special(bar(9), true));
    let (r, _) = with_lock(&mut e, Lock::Write, move |cx| {
        Box::pin(async move { remap_pfn_range(&cx, &vma, DEV, bar(0), 3).await })
    });
    assert_bug(&r, "BUG_ON(!pte_none)");
}

#[test]
fn remap_pfn_range_warns_without_mmap_write_lock() {
    let mut e = env();
    let vma = device(&e.mm, "vfio", DEV, 1, shared_flags(), None);
    let (r, out) = with_lock(&mut e, Lock::Read, move |cx| {
        Box::pin(async move { remap_pfn_range(&cx, &vma, DEV, bar(0), 1).await })
    });
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out, Some(Ok(())));
    assert!(
        r.trace
            .to_string()
            .contains("WARNING: vm_flags_set() without mmap_lock held for write"),
        "{}",
        r.trace
    );
}

#[test]
fn remap_pfn_range_on_cow_mapping_sets_pgoff_to_pfn_and_needs_whole_vma() {
    let mut e = env();
    let private = VmFlags::VM_READ | VmFlags::VM_WRITE | VmFlags::VM_MAYREAD | VmFlags::VM_MAYWRITE;
    let whole = device(&e.mm, "cow", DEV, 2, private, None);
    let part = device(&e.mm, "cow2", DEV + 4 * PAGE, 2, private, None);
    assert!(whole.is_cow_mapping());
    let (w2, p2) = (whole.clone(), part.clone());
    let (r, out) = with_lock(&mut e, Lock::Write, move |cx| {
        Box::pin(async move {
            (
                remap_pfn_range(&cx, &w2, DEV, bar(6), 2).await,
                remap_pfn_range(&cx, &p2, DEV + 4 * PAGE, bar(8), 1).await,
            )
        })
    });
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out, Some((Ok(()), Err(EINVAL))));
    assert_eq!(whole.pgoff(), bar(6).0);
    assert_eq!(
        e.mm.pte(DEV),
        Some(special(bar(6), false)),
        "private: mapped read-only"
    );
    assert_ne!(part.pgoff(), bar(8).0);
    assert_eq!(e.mm.pte(DEV + 4 * PAGE), None);
}

// ---- vmf_insert_pfn ----

fn insert_pfn(e: &mut Env, vma: Rc<Vma>, addr: Hva, pfn: Pfn) -> (RunResult, Option<VmFault>) {
    with_lock(e, Lock::Read, move |cx| {
        Box::pin(async move { vmf_insert_pfn(&cx, &vma, addr, pfn).await })
    })
}

#[test]
fn vmf_insert_pfn_installs_special_pte() {
    let mut e = env();
    let vma = device(&e.mm, "bar0", DEV, 2, pfnmap_flags(), None);
    let (r, out) = insert_pfn(&mut e, vma, DEV + PAGE + 5, bar(7));
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out, Some(VmFault::VM_FAULT_NOPAGE));
    assert_eq!(e.mm.pte(DEV + PAGE), Some(special(bar(7), true)));
}

#[test]
fn vmf_insert_pfn_on_present_pte_is_nopage_and_leaves_it() {
    let mut e = env();
    let vma = device(&e.mm, "bar0", DEV, 1, pfnmap_flags(), None);
    e.mm.set_pte_setup(DEV, special(bar(0), false));
    let (r, out) = insert_pfn(&mut e, vma, DEV, bar(9));
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out, Some(VmFault::VM_FAULT_NOPAGE));
    assert_eq!(e.mm.pte(DEV), Some(special(bar(0), false)));
}

#[test]
fn vmf_insert_pfn_outside_vma_is_sigbus() {
    let mut e = env();
    let vma = device(&e.mm, "bar0", DEV, 1, pfnmap_flags(), None);
    let (r, out) = insert_pfn(&mut e, vma, DEV + PAGE, bar(0));
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out, Some(VmFault::VM_FAULT_SIGBUS));
    assert_eq!(e.mm.pte(DEV + PAGE), None);
}

#[test]
fn vmf_insert_pfn_with_both_pfnmap_and_mixedmap_is_a_bug() {
    let mut e = env();
    let vma = device(
        &e.mm,
        "bar0",
        DEV,
        1,
        pfnmap_flags() | VmFlags::VM_MIXEDMAP,
        None,
    );
    let (r, _) = insert_pfn(&mut e, vma, DEV, bar(0));
    assert_bug(&r, "BUG_ON(!(VM_PFNMAP ^ VM_MIXEDMAP))");
}

#[test]
fn vmf_insert_pfn_with_neither_pfnmap_nor_mixedmap_is_a_bug() {
    let mut e = env();
    let vma = device(&e.mm, "plain", DEV, 1, shared_flags(), None);
    let (r, _) = insert_pfn(&mut e, vma, DEV, bar(0));
    assert_bug(&r, "BUG_ON(!(VM_PFNMAP ^ VM_MIXEDMAP))");
}

// ---- vmf_insert_mixed ----

#[test]
fn vmf_insert_mixed_without_mixedmap_is_sigbus() {
    let mut e = env();
    let vma = device(&e.mm, "bar0", DEV, 1, pfnmap_flags(), None);
    let (r, out) = with_lock(&mut e, Lock::Read, move |cx| {
        Box::pin(async move { vmf_insert_mixed(&cx, &vma, DEV, bar(0)).await })
    });
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out, Some(VmFault::VM_FAULT_SIGBUS));
    assert_eq!(e.mm.pte(DEV), None);
}

#[test]
fn vmf_insert_mixed_maps_valid_page_as_special_without_a_reference() {
    let mut e = env();
    let vma = device(
        &e.mm,
        "mixed",
        DEV,
        1,
        shared_flags() | VmFlags::VM_MIXEDMAP,
        None,
    );
    let page = e
        .frames
        .alloc(0, Owner::Driver("gpu".into()), false)
        .unwrap();
    assert!(e.frames.pfn_valid(page));
    let (r, out) = with_lock(&mut e, Lock::Read, move |cx| {
        Box::pin(async move { vmf_insert_mixed(&cx, &vma, DEV, page).await })
    });
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out, Some(VmFault::VM_FAULT_NOPAGE));
    assert_eq!(e.mm.pte(DEV), Some(special(page, true)));
    assert_eq!(e.frames.refcount(page), 1);
}

// ---- vm_insert_page ----

fn insert_page(
    e: &mut Env,
    lock: Lock,
    vma: Rc<Vma>,
    addr: Hva,
    page: Pfn,
) -> (RunResult, Option<Result<(), Errno>>) {
    with_lock(e, lock, move |cx| {
        Box::pin(async move { vm_insert_page(&cx, &vma, addr, page).await })
    })
}

#[test]
fn vm_insert_page_takes_a_reference_and_maps_normal_pte() {
    let mut e = env();
    let vma = device(&e.mm, "dmabuf", DEV, 2, shared_flags(), None);
    let page = e
        .frames
        .alloc(0, Owner::Driver("gpu".into()), false)
        .unwrap();
    let (r, out) = insert_page(&mut e, Lock::Write, vma.clone(), DEV + PAGE, page);
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out, Some(Ok(())));
    assert_eq!(e.frames.refcount(page), 2);
    assert_eq!(e.mm.pte(DEV + PAGE), Some(normal(page, true)));
    assert!(vma.flags().contains(VmFlags::VM_MIXEDMAP));
    assert!(e.frames.anomalies().is_empty());
}

#[test]
fn vm_insert_page_einval_for_refcount_zero_tail_page() {
    let mut e = env();
    let vma = device(&e.mm, "ttm", DEV, 1, shared_flags(), None);
    let head = e
        .frames
        .alloc(1, Owner::Driver("ttm".into()), false)
        .unwrap();
    let tail = Pfn(head.0 + 1);
    let (r, out) = insert_page(&mut e, Lock::Write, vma, DEV, tail);
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out, Some(Err(EINVAL)));
    assert_eq!(e.frames.refcount(tail), 0);
    assert_eq!(e.mm.pte(DEV), None);
    assert!(e.frames.anomalies().is_empty());
}

#[test]
fn vm_insert_page_ebusy_on_populated_pte() {
    let mut e = env();
    let vma = device(&e.mm, "dmabuf", DEV, 1, shared_flags(), None);
    let page = e
        .frames
        .alloc(0, Owner::Driver("gpu".into()), false)
        .unwrap();
    e.mm.set_pte_setup(DEV, special(bar(0), true));
    let (r, out) = insert_page(&mut e, Lock::Write, vma, DEV, page);
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out, Some(Err(EBUSY)));
    assert_eq!(e.frames.refcount(page), 1);
    assert_eq!(e.mm.pte(DEV), Some(special(bar(0), true)));
}

#[test]
fn vm_insert_page_efault_outside_vma() {
    let mut e = env();
    let vma = device(&e.mm, "dmabuf", DEV, 1, shared_flags(), None);
    let page = e
        .frames
        .alloc(0, Owner::Driver("gpu".into()), false)
        .unwrap();
    let (r, out) = insert_page(&mut e, Lock::Write, vma, DEV + PAGE, page);
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out, Some(Err(EFAULT)));
    assert_eq!(e.frames.refcount(page), 1);
}

#[test]
fn vm_insert_page_without_mmap_write_lock_is_a_bug_unless_already_mixedmap() {
    let mut e = env();
    let vma = device(&e.mm, "dmabuf", DEV, 1, shared_flags(), None);
    let page = e
        .frames
        .alloc(0, Owner::Driver("gpu".into()), false)
        .unwrap();
    let (r, _) = insert_page(&mut e, Lock::Read, vma, DEV, page);
    assert_bug(&r, "BUG_ON(mmap_read_trylock");
    // A vma that is already VM_MIXEDMAP needs no write lock (fault-time insertion).
    let mut e = env();
    let vma = device(
        &e.mm,
        "dmabuf",
        DEV,
        1,
        shared_flags() | VmFlags::VM_MIXEDMAP,
        None,
    );
    let page = e
        .frames
        .alloc(0, Owner::Driver("gpu".into()), false)
        .unwrap();
    let (r, out) = insert_page(&mut e, Lock::Read, vma, DEV, page);
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out, Some(Ok(())));
}
