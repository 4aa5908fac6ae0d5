//! The fault core: `fixup_user_fault` (current and v4.6 forms), `handle_mm_fault`,
//! userfaultfd MISSING, and host user accesses (kernel-history.md §c6, B1, B3).

mod common;

use common::*;
use model::mm::fault::{fixup_user_fault, fixup_user_fault_v4_6, handle_mm_fault, user_access};
use model::mm::gup::{get_user_pages_unlocked, unpin_user_page};
use model::mm::syscalls::{sys_madvise_dontneed, sys_mprotect, sys_munmap};
use model::mm::userfaultfd::{UffdMsg, Userfaultfd};
use model::mm::*;
use std::rc::Rc;
use world::{LockMode, Status};

type FixupOut = (Result<(), Errno>, bool, Option<LockMode>);

/// `mmap_read_lock; fixup_user_fault(addr, flags, &unlocked); <who holds mmap_lock>; unlock`.
fn fixup(e: &mut Env, addr: Hva, flags: FaultFlags, v4_6: bool) -> Slot<FixupOut> {
    let mm = e.mm.clone();
    spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        mm.mmap_read_lock(&cx).await;
        let mut unlocked = false;
        let r = if v4_6 {
            fixup_user_fault_v4_6(&cx, &mm, addr, flags, &mut unlocked).await
        } else {
            fixup_user_fault(&cx, &mm, addr, flags, &mut unlocked).await
        };
        let held = cx.holds(mm.mmap_lock);
        mm.mmap_unlock(&cx).await;
        (r, unlocked, held)
    })
}

const W: FaultFlags = FaultFlags::FAULT_FLAG_WRITE;
const HELD: Option<LockMode> = Some(LockMode::Shared);

fn bar_with(e: &mut Env, script: Vec<Step>) -> Rc<Driver> {
    let drv = Driver::new(script);
    device(&e.mm, "bar0", DEV, 4, pfnmap_flags(), drv.ops());
    drv
}

// ---- fixup_user_fault ----

#[test]
fn fixup_runs_driver_fault_that_inserts_pfn() {
    let mut e = env();
    let drv = bar_with(&mut e, vec![Step::InsertPfn(bar(0))]);
    let out = fixup(&mut e, DEV + PAGE, W, false);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some((Ok(()), false, HELD)));
    assert_eq!(e.mm.pte(DEV + PAGE), Some(special(bar(1), true)));
    assert_eq!(drv.ncalls(), 1);
}

#[test]
fn fixup_retry_sets_unlocked_and_returns_with_lock_held() {
    let mut e = env();
    let drv = bar_with(&mut e, vec![Step::DropLockRetry, Step::InsertPfn(bar(0))]);
    let out = fixup(&mut e, DEV, W, false);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some((Ok(()), true, HELD)));
    assert_eq!(e.mm.pte(DEV), Some(special(bar(0), true)));
    let calls = drv.calls.borrow();
    assert_eq!(calls.len(), 2);
    assert!(calls[0].contains(FaultFlags::FAULT_FLAG_ALLOW_RETRY | FaultFlags::FAULT_FLAG_KILLABLE));
    assert!(!calls[0].contains(FaultFlags::FAULT_FLAG_TRIED));
    assert!(calls[1].contains(FaultFlags::FAULT_FLAG_TRIED));
}

#[test]
fn fixup_keeps_retrying_until_the_page_is_faulted_in() {
    let mut e = env();
    let drv = bar_with(
        &mut e,
        vec![
            Step::DropLockRetry,
            Step::DropLockRetry,
            Step::InsertPfn(bar(0)),
        ],
    );
    let out = fixup(&mut e, DEV, W, false);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some((Ok(()), true, HELD)));
    assert_eq!(drv.ncalls(), 3);
    assert!(e.mm.pte(DEV).is_some());
}

#[test]
fn fixup_completed_sets_unlocked_and_relocks() {
    let mut e = env();
    let drv = bar_with(&mut e, vec![Step::InsertDropLockCompleted(bar(0))]);
    let out = fixup(&mut e, DEV + 2 * PAGE, FaultFlags::empty(), false);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some((Ok(()), true, HELD)));
    assert_eq!(drv.ncalls(), 1, "COMPLETED is not retried");
    assert_eq!(e.mm.pte(DEV + 2 * PAGE), Some(special(bar(2), true)));
}

#[test]
fn fixup_efault_without_vma() {
    let mut e = env();
    let drv = bar_with(&mut e, vec![Step::InsertPfn(bar(0))]);
    let out = fixup(&mut e, NOWHERE, FaultFlags::empty(), false);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some((Err(EFAULT), false, HELD)));
    assert_eq!(drv.ncalls(), 0);
}

#[test]
fn fixup_efault_for_write_to_readonly_vvar_but_read_succeeds() {
    let mut e = env();
    let drv = Driver::new(vec![Step::InsertPfn(bar(0))]);
    device(&e.mm, "[vvar]", DEV, 4, vvar_flags(), drv.ops());
    let wr = fixup(&mut e, DEV, W, false);
    let rd = fixup(&mut e, DEV, FaultFlags::empty(), false);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(wr.take(), Some((Err(EFAULT), false, HELD)));
    assert_eq!(rd.take(), Some((Ok(()), false, HELD)));
    assert_eq!(drv.ncalls(), 1, "only the read reached ->fault");
    assert_eq!(e.mm.pte(DEV), Some(special(bar(0), false)));
}

#[test]
fn fixup_efault_on_vm_fault_sigbus() {
    let mut e = env();
    bar_with(&mut e, vec![Step::Ret(VmFault::VM_FAULT_SIGBUS)]);
    let out = fixup(&mut e, DEV, FaultFlags::empty(), false);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some((Err(EFAULT), false, HELD)));
}

#[test]
fn fixup_enomem_on_vm_fault_oom() {
    let mut e = env();
    bar_with(&mut e, vec![Step::Ret(VmFault::VM_FAULT_OOM)]);
    let out = fixup(&mut e, DEV, FaultFlags::empty(), false);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some((Err(ENOMEM), false, HELD)));
}

#[test]
fn fixup_eintr_with_fatal_signal_pending() {
    let mut e = env();
    let drv = bar_with(&mut e, vec![Step::InsertPfn(bar(0))]);
    e.mm.fatal_signal.set(true);
    let out = fixup(&mut e, DEV, FaultFlags::empty(), false);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some((Err(EINTR), false, HELD)));
    assert_eq!(drv.ncalls(), 0);
}

/// B3: between 4426e945df58 (v5.7) and Peter Xu's fix, and in the model's v4.6 form, a
/// second `VM_FAULT_RETRY` made fixup_user_fault return 0 without the page.
#[test]
fn fixup_v4_6_bails_out_on_second_retry_without_the_page() {
    let mut e = env();
    let drv = bar_with(
        &mut e,
        vec![
            Step::DropLockRetry,
            Step::DropLockRetry,
            Step::InsertPfn(bar(0)),
        ],
    );
    let out = fixup(&mut e, DEV, W, true);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some((Ok(()), true, HELD)));
    assert_eq!(drv.ncalls(), 2);
    assert_eq!(e.mm.pte(DEV), None, "0 returned, yet nothing is mapped");
    let calls = drv.calls.borrow();
    assert!(calls[0].contains(FaultFlags::FAULT_FLAG_ALLOW_RETRY));
    assert!(
        !calls[0].contains(FaultFlags::FAULT_FLAG_KILLABLE),
        "v4.6 did not add KILLABLE"
    );
    assert!(calls[1].contains(FaultFlags::FAULT_FLAG_TRIED));
}

// ---- handle_mm_fault ----

/// `mmap_read_lock; handle_mm_fault(vma at addr); unlock` for each of `faults` in turn.
fn faults(e: &mut Env, addr: Hva, seq: Vec<FaultFlags>) -> Slot<Vec<VmFault>> {
    let mm = e.mm.clone();
    spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        let mut rets = Vec::new();
        for flags in seq {
            mm.mmap_read_lock(&cx).await;
            let vma = mm.vma_lookup(addr).unwrap();
            rets.push(handle_mm_fault(&cx, &mm, &vma, addr, flags).await);
            mm.mmap_unlock(&cx).await;
        }
        rets
    })
}

#[test]
fn anon_read_fault_maps_zero_page_special_readonly() {
    let mut e = env();
    anon(&e.mm, ANON, 2, RW);
    let out = faults(&mut e, ANON + PAGE, vec![FaultFlags::empty()]);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some(vec![VmFault::empty()]));
    assert_eq!(
        e.mm.pte(ANON + PAGE),
        Some(special(e.frames.zero_pfn(), false))
    );
    assert_eq!(
        e.frames.refcount(e.frames.zero_pfn()),
        1,
        "the zero page is not refcounted by mappings"
    );
}

#[test]
fn anon_write_fault_maps_fresh_page() {
    let mut e = env();
    anon(&e.mm, ANON, 2, RW);
    let out = faults(&mut e, ANON, vec![W]);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some(vec![VmFault::empty()]));
    let pte = e.mm.pte(ANON).unwrap();
    assert_eq!(pte, normal(pte.pfn, true));
    assert_ne!(pte.pfn, e.frames.zero_pfn());
    assert_eq!(e.frames.owner(pte.pfn), Some(Owner::Anon));
    assert_eq!(e.frames.refcount(pte.pfn), 1);
}

#[test]
fn write_fault_on_zero_page_mapping_copies_on_write() {
    let mut e = env();
    anon(&e.mm, ANON, 1, RW);
    let out = faults(&mut e, ANON, vec![FaultFlags::empty(), W]);
    let r = run(&mut e.w);
    assert_eq!(r.status, Status::Completed);
    assert_eq!(out.take(), Some(vec![VmFault::empty(), VmFault::empty()]));
    let pte = e.mm.pte(ANON).unwrap();
    assert_ne!(pte.pfn, e.frames.zero_pfn());
    assert_eq!(pte, normal(pte.pfn, true));
    assert_eq!(
        e.frames.read(pte.pfn, 0, 8),
        Some(0),
        "copied from the zero page"
    );
    assert_eq!(e.frames.refcount(e.frames.zero_pfn()), 1);
    assert!(r.trace.to_string().contains("wp_page_copy"), "{}", r.trace);
}

/// mm/memory.c `wp_page_copy()` brackets the PTE switch with
/// `mmu_notifier_invalidate_range_start/end(MMU_NOTIFY_CLEAR, [addr, addr + PAGE_SIZE))`,
/// so a secondary MMU (KVM) drops its mapping of the old page (the zero page here).
/// (Missing in the model until 7ea631d.)
#[test]
fn cow_copy_is_bracketed_by_notifier_clear() {
    let mut e = env();
    anon(&e.mm, ANON, 1, RW);
    e.mm.set_pte_setup(ANON, special(e.frames.zero_pfn(), false));
    let rec = Recorder::attach(&e.mm);
    faults(&mut e, ANON, vec![W]);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    let (start, end) = rec.one_pair(ANON, ANON + PAGE, NotifyEvent::Clear);
    assert_eq!(
        start.ptes,
        vec![(ANON, special(e.frames.zero_pfn(), false))]
    );
    assert_ne!(end.ptes[0].1.pfn, e.frames.zero_pfn());
}

#[test]
fn shared_pfnmap_write_fault_calls_pfn_mkwrite_then_makes_pte_writable() {
    let mut e = env();
    let drv = bar_with(&mut e, vec![Step::Ret(VmFault::VM_FAULT_SIGBUS)]);
    e.mm.set_pte_setup(DEV, special(bar(0), false));
    let out = faults(&mut e, DEV, vec![W]);
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some(vec![VmFault::empty()]));
    assert_eq!(drv.mkwrites.get(), 1);
    assert_eq!(drv.ncalls(), 0, "->fault is not called for a present PTE");
    assert_eq!(e.mm.pte(DEV), Some(special(bar(0), true)));
}

#[test]
fn handle_mm_fault_on_munmapped_vma_is_a_bug() {
    let mut e = env();
    let vma = anon(&e.mm, ANON, 1, RW);
    let mm = e.mm.clone();
    e.w.spawn("vcpu0", move |cx| async move {
        sys_munmap(&cx, &mm, ANON, PAGE).await.unwrap();
        mm.mmap_read_lock(&cx).await;
        handle_mm_fault(&cx, &mm, &vma, ANON, W).await;
        mm.mmap_unlock(&cx).await;
    });
    match run(&mut e.w).status {
        Status::Bug { actor, what } => {
            assert_eq!(actor, "vcpu0");
            assert!(what.contains("use-after-free of vma anon"), "{what}");
        }
        s => panic!("expected a BUG, got {s:?}"),
    }
}

// ---- userfaultfd ----

#[test]
fn two_faulters_on_one_missing_page_get_one_message_and_the_same_page() {
    let mut e = env();
    anon(&e.mm, ANON, 1, RW);
    let uffd = Userfaultfd::new(&mut e.w, false);
    uffd.register(&e.mm, ANON, ANON + PAGE);
    let outs: Vec<_> = ["vcpu0", "vcpu1"]
        .into_iter()
        .map(|name| {
            let mm = e.mm.clone();
            spawn_ret(&mut e.w, name, move |cx| async move {
                get_user_pages_unlocked(&cx, &mm, ANON, FollFlags::FOLL_WRITE).await
            })
        })
        .collect();
    let (u, mm) = (uffd.clone(), e.mm.clone());
    e.w.spawn("uffd-handler", move |cx| async move {
        let msg = u.read_msg(&cx).await;
        u.copy(&cx, &mm, msg.address, 0x5eed_5eed).await.unwrap();
    });
    let r = run(&mut e.w);
    assert_eq!(r.status, Status::Completed, "{}", r.trace);
    assert_eq!(
        count(&r.trace.to_string(), "queued message"),
        2,
        "both faulters queued"
    );
    assert_eq!(
        *uffd.delivered.borrow(),
        vec![UffdMsg {
            address: ANON,
            write: true
        }]
    );
    assert!(
        !uffd.has_pending(),
        "the copy's wake removed the second wait entry"
    );
    let page = e.mm.pte(ANON).unwrap().pfn;
    for o in outs {
        assert_eq!(o.take(), Some(Ok(Some(page))));
    }
    assert_eq!(e.frames.read(page, 0, 4), Some(0x5eed_5eed));
    assert_eq!(e.frames.refcount(page), 3);
}

#[test]
fn madv_dontneed_then_retouch_raises_a_new_message() {
    let mut e = env();
    anon(&e.mm, ANON, 1, RW);
    let uffd = Userfaultfd::new(&mut e.w, false);
    uffd.register(&e.mm, ANON, ANON + PAGE);
    let mm = e.mm.clone();
    let out = spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        let first = get_user_pages_unlocked(&cx, &mm, ANON, FollFlags::empty())
            .await
            .unwrap()
            .unwrap();
        let v1 = mm.frames.read(first, 0, 4);
        unpin_user_page(&cx, &mm, first).await;
        sys_madvise_dontneed(&cx, &mm, ANON, PAGE).await.unwrap();
        let second = get_user_pages_unlocked(&cx, &mm, ANON, FollFlags::empty())
            .await
            .unwrap()
            .unwrap();
        (v1, mm.frames.read(second, 0, 4))
    });
    let (u, mm) = (uffd.clone(), e.mm.clone());
    e.w.spawn("uffd-handler", move |cx| async move {
        for pattern in [0x1111_1111, 0x2222_2222] {
            let msg = u.read_msg(&cx).await;
            u.copy(&cx, &mm, msg.address, pattern).await.unwrap();
        }
    });
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some((Some(0x1111_1111), Some(0x2222_2222))));
    assert_eq!(uffd.delivered.borrow().len(), 2);
}

// ---- user_access ----

#[test]
fn host_write_then_read_through_mapping() {
    let mut e = env();
    anon(&e.mm, ANON, 1, RW);
    let mm = e.mm.clone();
    let out = spawn_ret(&mut e.w, "host", move |cx| async move {
        let w = user_access(&cx, &mm, ANON + 8, 4, Some(0xdead_beef), true).await;
        let r = user_access(&cx, &mm, ANON + 8, 4, None, true).await;
        (w, r)
    });
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some((Ok(0), Ok(0xdead_beef))));
}

#[test]
fn host_write_to_prot_read_mapping_is_efault() {
    let mut e = env();
    anon(&e.mm, ANON, 1, VmFlags::VM_READ);
    let mm = e.mm.clone();
    let out = spawn_ret(&mut e.w, "host", move |cx| async move {
        let w = user_access(&cx, &mm, ANON, 4, Some(1), true).await;
        let r = user_access(&cx, &mm, ANON, 4, None, true).await;
        (w, r)
    });
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some((Err(EFAULT), Ok(0))));
}

#[test]
fn host_read_after_mprotect_none_is_efault() {
    let mut e = env();
    anon(&e.mm, ANON, 1, RW);
    let mm = e.mm.clone();
    let out = spawn_ret(&mut e.w, "host", move |cx| async move {
        let w = user_access(&cx, &mm, ANON, 4, Some(0x55), true).await;
        let before = user_access(&cx, &mm, ANON, 4, None, true).await;
        sys_mprotect(&cx, &mm, ANON, PAGE, false, false)
            .await
            .unwrap();
        let after = user_access(&cx, &mm, ANON, 4, None, true).await;
        (w, before, after)
    });
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(out.take(), Some((Ok(0), Ok(0x55), Err(EFAULT))));
    assert!(e.mm.pte(ANON).unwrap().protnone);
}
