//! get_user_pages (slow and fast) and the PTE walkers KVM uses on PFNMAP memory:
//! `follow_pfn`, `follow_pte`, `follow_pfnmap_start/end` (kernel-history.md §c6, B5).

mod common;

use common::*;
use model::mm::follow::{
    follow_pfn, follow_pfnmap_end, follow_pfnmap_start, follow_pte, pte_unmap_unlock, PfnmapArgs,
};
use model::mm::gup::{get_user_page_fast_only, get_user_pages_unlocked};
use model::mm::userfaultfd::Userfaultfd;
use model::mm::*;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use world::{LockMode, Status};

fn gup(e: &mut Env, addr: Hva, foll: FollFlags) -> Slot<Result<Option<Pfn>, Errno>> {
    let mm = e.mm.clone();
    spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        get_user_pages_unlocked(&cx, &mm, addr, foll).await
    })
}

// ---- get_user_pages_unlocked ----

#[test]
fn gup_returns_present_anon_page_with_a_reference() {
    let mut e = env();
    anon(&e.mm, ANON, 4, RW);
    let page = e.frames.alloc(0, Owner::Anon, false).unwrap();
    e.mm.set_pte_setup(ANON, normal(page, true));
    let out = gup(&mut e, ANON + 8, FollFlags::FOLL_WRITE);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some(Ok(Some(page))));
    assert_eq!(e.frames.refcount(page), 2, "mapping ref + GUP ref");
}

#[test]
fn gup_write_demand_fault_allocates_anon_page() {
    let mut e = env();
    anon(&e.mm, ANON, 4, RW);
    let out = gup(&mut e, ANON + PAGE, FollFlags::FOLL_WRITE);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    let page = out.take().unwrap().unwrap().expect("a page");
    assert_ne!(page, e.frames.zero_pfn());
    assert_eq!(e.mm.pte(ANON + PAGE), Some(normal(page, true)));
    assert_eq!(e.frames.owner(page), Some(Owner::Anon));
    assert_eq!(e.frames.refcount(page), 2);
}

#[test]
fn gup_read_demand_fault_maps_zero_page() {
    let mut e = env();
    anon(&e.mm, ANON, 4, RW);
    let out = gup(&mut e, ANON, FollFlags::empty());
    assert_eq!(run(&mut e.w).status, Status::Completed);
    let zero = e.frames.zero_pfn();
    assert_eq!(out.take(), Some(Ok(Some(zero))));
    assert_eq!(e.mm.pte(ANON), Some(special(zero, false)));
    assert_eq!(e.frames.refcount(zero), 2);
}

#[test]
fn gup_refuses_pfnmap_vma_with_efault() {
    let mut e = env();
    device(&e.mm, "bar0", DEV, 4, pfnmap_flags(), None);
    e.mm.set_pte_setup(DEV, special(bar(0), true));
    let out = gup(&mut e, DEV, FollFlags::empty());
    let r = run(&mut e.w);
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out.take(), Some(Err(EFAULT)));
    let trace = r.trace.to_string();
    assert!(
        trace.contains("check_vma_flags(bar0") && trace.contains("-EFAULT"),
        "{trace}"
    );
}

#[test]
fn gup_efault_without_vma() {
    let mut e = env();
    anon(&e.mm, ANON, 1, RW);
    let out = gup(&mut e, NOWHERE, FollFlags::empty());
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some(Err(EFAULT)));
}

#[test]
fn gup_write_to_vma_without_vm_write_is_efault() {
    let mut e = env();
    anon(&e.mm, ANON, 1, VmFlags::VM_READ);
    let page = e.frames.alloc(0, Owner::Anon, false).unwrap();
    e.mm.set_pte_setup(ANON, normal(page, false));
    let out = gup(&mut e, ANON, FollFlags::FOLL_WRITE);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some(Err(EFAULT)));
    assert_eq!(e.frames.refcount(page), 1);
}

#[test]
fn gup_eexist_on_special_pte_in_mixedmap_vma() {
    let mut e = env();
    let page = e
        .frames
        .alloc(0, Owner::Driver("gpu".into()), false)
        .unwrap();
    let drv = Driver::new(vec![Step::InsertMixed(page)]);
    device(
        &e.mm,
        "mixed",
        DEV,
        1,
        shared_flags() | VmFlags::VM_MIXEDMAP,
        drv.ops(),
    );
    let out = gup(&mut e, DEV, FollFlags::empty());
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some(Err(EEXIST)));
    assert_eq!(drv.ncalls(), 1);
    assert_eq!(e.mm.pte(DEV), Some(special(page, true)));
    assert_eq!(
        e.frames.refcount(page),
        1,
        "no reference taken on a special PTE"
    );
}

#[test]
fn gup_nowait_on_uffd_missing_returns_none_without_dropping_lock_or_queuing() {
    let mut e = env();
    anon(&e.mm, ANON, 1, RW);
    let uffd = Userfaultfd::new(&mut e.w, false);
    uffd.register(&e.mm, ANON, ANON + PAGE);
    let out = gup(&mut e, ANON, FollFlags::FOLL_WRITE | FollFlags::FOLL_NOWAIT);
    let r = run(&mut e.w);
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out.take(), Some(Ok(None)));
    assert!(!uffd.has_pending());
    assert!(uffd.delivered.borrow().is_empty());
    assert_eq!(e.mm.pte(ANON), None);
    let trace = r.trace.to_string();
    assert_eq!(
        count(&trace, "lock mmap_lock (read)"),
        1,
        "mmap_lock taken once, never dropped:\n{trace}"
    );
    assert!(!trace.contains("queued message"), "{trace}");
}

#[test]
fn gup_on_uffd_missing_blocks_until_uffdio_copy() {
    let mut e = env();
    anon(&e.mm, ANON, 1, RW);
    let uffd = Userfaultfd::new(&mut e.w, false);
    uffd.register(&e.mm, ANON, ANON + PAGE);
    let out = gup(&mut e, ANON, FollFlags::FOLL_WRITE);
    let (u, mm) = (uffd.clone(), e.mm.clone());
    e.w.spawn("uffd-handler", move |cx| async move {
        let msg = u.read_msg(&cx).await;
        u.copy(&cx, &mm, msg.address, 0xabcd_0123).await.unwrap();
    });
    assert_eq!(run(&mut e.w).status, Status::Completed);
    let page = out
        .take()
        .unwrap()
        .unwrap()
        .expect("page after UFFDIO_COPY");
    assert_eq!(e.mm.pte(ANON).map(|p| p.pfn), Some(page));
    assert_eq!(e.frames.read(page, 0, 4), Some(0xabcd_0123));
    assert_eq!(e.frames.refcount(page), 2);
    assert_eq!(
        *uffd.delivered.borrow(),
        vec![userfaultfd::UffdMsg {
            address: ANON,
            write: true
        }]
    );
}

#[test]
fn gup_eagain_with_fatal_signal_pending() {
    let mut e = env();
    anon(&e.mm, ANON, 1, RW);
    e.mm.fatal_signal.set(true);
    let out = gup(&mut e, ANON, FollFlags::FOLL_WRITE);
    let r = run(&mut e.w);
    assert_eq!(out.take(), Some(Err(EAGAIN)));
    assert!(
        !r.trace.to_string().contains("lock mmap_lock"),
        "mmap_read_lock_killable failed"
    );
    assert_eq!(e.mm.pte(ANON), None);
}

// ---- get_user_page_fast_only ----

fn gup_fast(e: &mut Env, addr: Hva, foll: FollFlags) -> Slot<Option<Pfn>> {
    let mm = e.mm.clone();
    spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        get_user_page_fast_only(&cx, &mm, addr, foll).await
    })
}

#[test]
fn gup_fast_returns_normal_present_page_with_a_reference() {
    let mut e = env();
    let page = e.frames.alloc(0, Owner::Anon, false).unwrap();
    e.mm.set_pte_setup(ANON, normal(page, true));
    let out = gup_fast(&mut e, ANON, FollFlags::FOLL_WRITE);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some(Some(page)));
    assert_eq!(e.frames.refcount(page), 2);
}

#[test]
fn gup_fast_refuses_special_pte() {
    let mut e = env();
    // A pfn_valid page behind a special PTE: only `special` makes it fall back.
    let page = e
        .frames
        .alloc(0, Owner::Driver("gpu".into()), false)
        .unwrap();
    e.mm.set_pte_setup(ANON, special(page, true));
    let out = gup_fast(&mut e, ANON, FollFlags::empty());
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some(None));
    assert_eq!(e.frames.refcount(page), 1);
}

#[test]
fn gup_fast_refuses_readonly_pte_for_foll_write_but_not_for_read() {
    let mut e = env();
    let page = e.frames.alloc(0, Owner::Anon, false).unwrap();
    e.mm.set_pte_setup(ANON, normal(page, false));
    let w_out = gup_fast(&mut e, ANON, FollFlags::FOLL_WRITE);
    let r_out = gup_fast(&mut e, ANON, FollFlags::empty());
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(w_out.take(), Some(None));
    assert_eq!(r_out.take(), Some(Some(page)));
    assert_eq!(e.frames.refcount(page), 2, "only the read took a reference");
}

#[test]
fn gup_fast_returns_none_without_pte() {
    let mut e = env();
    anon(&e.mm, ANON, 1, RW);
    let out = gup_fast(&mut e, ANON, FollFlags::empty());
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some(None));
    assert_eq!(e.mm.pte(ANON), None, "gup-fast never faults");
}

// ---- follow_pfn (v4.8–v6.9) ----

/// Run `follow_pfn` under the mmap read lock; also report whether the PTL is held after.
fn run_follow_pfn(e: &mut Env, vma: Rc<Vma>, addr: Hva) -> (Result<Pfn, Errno>, Option<LockMode>) {
    let mm = e.mm.clone();
    let out = spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        mm.mmap_read_lock(&cx).await;
        let r = follow_pfn(&cx, &vma, addr).await;
        let ptl = cx.holds(mm.ptl);
        mm.mmap_unlock(&cx).await;
        (r, ptl)
    });
    assert_eq!(run(&mut e.w).status, Status::Completed);
    out.take().unwrap()
}

#[test]
fn follow_pfn_einval_on_non_pfnmap_vma() {
    let mut e = env();
    let vma = anon(&e.mm, ANON, 1, RW);
    let page = e.frames.alloc(0, Owner::Anon, false).unwrap();
    e.mm.set_pte_setup(ANON, normal(page, true));
    assert_eq!(run_follow_pfn(&mut e, vma, ANON), (Err(EINVAL), None));
}

#[test]
fn follow_pfn_einval_without_pte() {
    let mut e = env();
    let vma = device(&e.mm, "bar0", DEV, 2, pfnmap_flags(), None);
    assert_eq!(run_follow_pfn(&mut e, vma, DEV + PAGE), (Err(EINVAL), None));
}

#[test]
fn follow_pfn_returns_pfn_and_releases_ptl() {
    let mut e = env();
    let vma = device(&e.mm, "bar0", DEV, 2, pfnmap_flags(), None);
    e.mm.set_pte_setup(DEV + PAGE, special(bar(3), false));
    assert_eq!(
        run_follow_pfn(&mut e, vma, DEV + PAGE + 0x10),
        (Ok(bar(3)), None)
    );
}

// ---- follow_pte (v5.12–v6.11) ----

/// Actor `walker` runs `lookup` (which must leave the PTL held on success) and keeps using
/// the PTE for a few steps. Actor `zapper` (spawned first, so the FirstEnabled scheduler
/// prefers it whenever it can run) asks for the PTL as soon as the walker holds it: it must
/// not get it before the walker unlocks.
fn ptl_excludes_other_actor<F, G>(e: &mut Env, lookup: F, release: G) -> Vec<&'static str>
where
    F: FnOnce(world::Cx, Rc<Mm>) -> LocalBoxFuture<'static, bool> + 'static,
    G: FnOnce(world::Cx, Rc<Mm>) -> LocalBoxFuture<'static, ()> + 'static,
{
    let log: Rc<RefCell<Vec<&'static str>>> = Rc::default();
    let held = Rc::new(Cell::new(false));
    let obj = e.mm.pte_obj(DEV);
    let (mm, l, h) = (e.mm.clone(), log.clone(), held.clone());
    e.w.spawn("zapper", move |cx| async move {
        cx.wait_until(obj, "walker holds the PTL", move || h.get())
            .await;
        mm.ptl_lock(&cx).await;
        l.borrow_mut().push("zapper got ptl");
        mm.ptl_unlock(&cx).await;
    });
    let (mm, l) = (e.mm.clone(), log.clone());
    e.w.spawn("walker", move |cx| async move {
        mm.mmap_read_lock(&cx).await;
        let ok = lookup(cx.clone(), mm.clone()).await;
        assert!(
            ok && cx.holds(mm.ptl) == Some(LockMode::Exclusive),
            "lookup must succeed holding the PTL"
        );
        l.borrow_mut().push("walker holds ptl");
        held.set(true);
        for _ in 0..3 {
            cx.access(obj, world::Access::Read, "use the pte").await;
        }
        l.borrow_mut().push("walker unlocks");
        release(cx.clone(), mm.clone()).await;
        assert_eq!(cx.holds(mm.ptl), None);
        mm.mmap_unlock(&cx).await;
    });
    let r = run(&mut e.w);
    assert_eq!(r.status, Status::Completed, "{}", r.trace);
    let v = log.borrow().clone();
    v
}

#[test]
fn follow_pte_holds_ptl_until_pte_unmap_unlock() {
    let mut e = env();
    device(&e.mm, "bar0", DEV, 1, pfnmap_flags(), None);
    e.mm.set_pte_setup(DEV, special(bar(1), true));
    let log = ptl_excludes_other_actor(
        &mut e,
        |cx, mm| {
            Box::pin(async move { follow_pte(&cx, &mm, DEV).await == Ok(special(bar(1), true)) })
        },
        |cx, mm| Box::pin(async move { pte_unmap_unlock(&cx, &mm).await }),
    );
    assert_eq!(
        log,
        vec!["walker holds ptl", "walker unlocks", "zapper got ptl"]
    );
}

#[test]
fn follow_pte_einval_when_absent_and_ptl_released() {
    let mut e = env();
    device(&e.mm, "bar0", DEV, 1, pfnmap_flags(), None);
    let mm = e.mm.clone();
    let out = spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        mm.mmap_read_lock(&cx).await;
        let r = follow_pte(&cx, &mm, DEV).await;
        let ptl = cx.holds(mm.ptl);
        if r.is_ok() {
            pte_unmap_unlock(&cx, &mm).await;
        }
        mm.mmap_unlock(&cx).await;
        (r, ptl)
    });
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some((Err(EINVAL), None)));
}

// ---- follow_pfnmap_start / follow_pfnmap_end (v6.12+) ----

fn run_pfnmap_start(
    e: &mut Env,
    vma: Rc<Vma>,
    addr: Hva,
) -> (Result<PfnmapArgs, Errno>, Option<LockMode>) {
    let mm = e.mm.clone();
    let out = spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        mm.mmap_read_lock(&cx).await;
        let r = follow_pfnmap_start(&cx, &vma, addr).await;
        let ptl = cx.holds(mm.ptl);
        if r.is_ok() {
            follow_pfnmap_end(&cx, &vma).await;
        }
        mm.mmap_unlock(&cx).await;
        (r, ptl)
    });
    let r = run(&mut e.w);
    assert_eq!(r.status, Status::Completed, "{}", r.trace);
    out.take().unwrap()
}

#[test]
fn follow_pfnmap_start_einval_outside_vma() {
    let mut e = env();
    let vma = device(&e.mm, "bar0", DEV, 1, pfnmap_flags(), None);
    e.mm.set_pte_setup(DEV + PAGE, special(bar(1), true)); // beyond vm_end
    assert_eq!(
        run_pfnmap_start(&mut e, vma, DEV + PAGE),
        (Err(EINVAL), None)
    );
}

#[test]
fn follow_pfnmap_start_einval_on_non_pfnmap_vma() {
    let mut e = env();
    let vma = anon(&e.mm, ANON, 1, RW);
    let page = e.frames.alloc(0, Owner::Anon, false).unwrap();
    e.mm.set_pte_setup(ANON, normal(page, true));
    assert_eq!(run_pfnmap_start(&mut e, vma, ANON), (Err(EINVAL), None));
}

#[test]
fn follow_pfnmap_start_einval_when_not_present() {
    let mut e = env();
    let vma = device(&e.mm, "bar0", DEV, 2, pfnmap_flags(), None);
    assert_eq!(run_pfnmap_start(&mut e, vma, DEV), (Err(EINVAL), None));
}

#[test]
fn follow_pfnmap_start_reports_pfn_writable_and_special_holding_ptl() {
    let mut e = env();
    let vma = device(&e.mm, "bar0", DEV, 2, pfnmap_flags(), None);
    e.mm.set_pte_setup(DEV, special(bar(4), true));
    let page = e
        .frames
        .alloc(0, Owner::Driver("gpu".into()), false)
        .unwrap();
    e.mm.set_pte_setup(DEV + PAGE, normal(page, false));
    assert_eq!(
        run_pfnmap_start(&mut e, vma, DEV + 0x123),
        (
            Ok(PfnmapArgs {
                pfn: bar(4),
                writable: true,
                special: true
            }),
            Some(LockMode::Exclusive)
        )
    );
    let mut e2 = env();
    let vma2 = device(&e2.mm, "bar0", DEV, 2, pfnmap_flags(), None);
    e2.mm.set_pte_setup(DEV + PAGE, normal(page, false));
    assert_eq!(
        run_pfnmap_start(&mut e2, vma2, DEV + PAGE),
        (
            Ok(PfnmapArgs {
                pfn: page,
                writable: false,
                special: false
            }),
            Some(LockMode::Exclusive)
        )
    );
}

#[test]
fn follow_pfnmap_start_holds_ptl_until_end() {
    let mut e = env();
    let vma = device(&e.mm, "bar0", DEV, 1, pfnmap_flags(), None);
    e.mm.set_pte_setup(DEV, special(bar(2), true));
    let v = vma.clone();
    let log = ptl_excludes_other_actor(
        &mut e,
        move |cx, _| {
            Box::pin(async move {
                follow_pfnmap_start(&cx, &v, DEV)
                    .await
                    .is_ok_and(|a| a.pfn == bar(2))
            })
        },
        move |cx, _| Box::pin(async move { follow_pfnmap_end(&cx, &vma).await }),
    );
    assert_eq!(
        log,
        vec!["walker holds ptl", "walker unlocks", "zapper got ptl"]
    );
}

/// x86 `pte_present()` is true for a PROT_NONE (`_PAGE_PROTNONE`) PTE, and
/// `follow_pfnmap_start` only tests `pte_present`, so it succeeds (read-only) on a
/// PFNMAP PTE that mprotect(PROT_NONE) left behind.
#[test]
fn follow_pfnmap_start_succeeds_on_protnone_pte_like_x86() {
    let mut e = env();
    device(&e.mm, "bar0", DEV, 1, pfnmap_flags(), None);
    e.mm.set_pte_setup(DEV, special(bar(5), true));
    let mm = e.mm.clone();
    let out = spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        syscalls::sys_mprotect(&cx, &mm, DEV, PAGE, false, false)
            .await
            .unwrap();
        mm.mmap_read_lock(&cx).await;
        let vma = mm.vma_lookup(DEV).unwrap();
        let r = follow_pfnmap_start(&cx, &vma, DEV).await;
        if r.is_ok() {
            follow_pfnmap_end(&cx, &vma).await;
        }
        mm.mmap_unlock(&cx).await;
        r
    });
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert!(e.mm.pte(DEV).unwrap().protnone);
    assert_eq!(
        out.take(),
        Some(Ok(PfnmapArgs {
            pfn: bar(5),
            writable: false,
            special: true
        }))
    );
}
