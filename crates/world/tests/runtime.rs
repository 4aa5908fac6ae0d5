use std::cell::Cell;
use std::ops::ControlFlow;
use std::rc::Rc;
use world::*;

fn cont() -> ControlFlow<String> {
    ControlFlow::Continue(())
}

/// Three actors contend on a rwsem and a spinlock and bump a shared counter.
fn contended_world() -> (World, Rc<Cell<u64>>) {
    let mut w = World::new();
    let sem = w.lock("mmap_lock", LockKind::RwSem);
    let spin = w.lock("ptl", LockKind::Spin);
    let ctr_obj = w.object("counter");
    let ctr = Rc::new(Cell::new(0u64));
    for i in 0..3 {
        let ctr = ctr.clone();
        w.spawn(format!("t{i}"), move |cx| async move {
            for _ in 0..3 {
                let mode = if i == 0 {
                    LockMode::Exclusive
                } else {
                    LockMode::Shared
                };
                cx.lock(sem, mode).await;
                cx.lock(spin, LockMode::Exclusive).await;
                cx.access(ctr_obj, Access::Write, "counter++").await;
                ctr.set(ctr.get() * 3 + i);
                cx.emit(format!("counter = {}", ctr.get()));
                cx.unlock(spin).await;
                cx.unlock(sem).await;
            }
        });
    }
    (w, ctr)
}

#[test]
fn random_schedule_replays_to_identical_trace() {
    let (mut w, ctr) = contended_world();
    let first = w.run(&mut Random::new(7), &mut cont);
    assert_eq!(first.status, Status::Completed);
    let (mut w2, ctr2) = contended_world();
    let again = w2.run(&mut Replay::new(first.schedule.clone()), &mut cont);
    assert_eq!(again.status, Status::Completed);
    assert_eq!(first.trace.to_string(), again.trace.to_string());
    assert_eq!(first.records, again.records);
    assert_eq!(ctr.get(), ctr2.get());
    // A different seed gives a different interleaving (the test can fail if replay ignored it).
    let (mut w3, _) = contended_world();
    let other = w3.run(&mut Random::new(8), &mut cont);
    assert_ne!(first.schedule, other.schedule);
}

#[test]
fn replay_of_a_foreign_schedule_diverges() {
    let (mut w, _) = contended_world();
    let r = w.run(
        &mut Replay::new(vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]),
        &mut cont,
    );
    assert!(
        matches!(r.status, Status::Diverged { .. }),
        "{:?}",
        r.status
    );
}

#[test]
fn lock_order_inversion_is_reported_as_deadlock() {
    let mut w = World::new();
    let a = w.lock("mmap_lock", LockKind::RwSem);
    let b = w.lock("vgpu->lock", LockKind::Mutex);
    w.spawn("vcpu0", move |cx| async move {
        cx.lock(a, LockMode::Shared).await;
        cx.lock(b, LockMode::Exclusive).await;
        cx.unlock(b).await;
        cx.unlock(a).await;
    });
    w.spawn("reset", move |cx| async move {
        cx.lock(b, LockMode::Exclusive).await;
        cx.lock(a, LockMode::Exclusive).await;
        cx.unlock(a).await;
        cx.unlock(b).await;
    });
    let r = w.run(&mut RoundRobin, &mut cont);
    let Status::Deadlock(blocked) = r.status else {
        panic!("expected deadlock, got {:?}", r.status)
    };
    let text: Vec<String> = blocked.iter().map(|b| b.to_string()).collect();
    assert_eq!(
        text,
        vec![
            "vcpu0 waits for vgpu->lock held by reset (held)".to_string(),
            "reset waits for mmap_lock (write) held by vcpu0 (read)".to_string(),
        ]
    );
    // The sequential schedule never interleaves the two, so there is no deadlock there.
    let mut w = World::new();
    let a = w.lock("a", LockKind::Mutex);
    w.spawn("x", move |cx| async move {
        cx.lock(a, LockMode::Exclusive).await;
        cx.unlock(a).await;
    });
    assert_eq!(
        w.run(&mut FirstEnabled, &mut cont).status,
        Status::Completed
    );
}

#[test]
fn waiter_is_not_runnable_until_condition_holds() {
    let mut w = World::new();
    let flag_obj = w.object("uffd page");
    let flag = Rc::new(Cell::new(false));
    let order = Rc::new(std::cell::RefCell::new(Vec::new()));
    let (f1, o1) = (flag.clone(), order.clone());
    w.spawn("vcpu0", move |cx| async move {
        let f = f1.clone();
        cx.wait_until(flag_obj, "page filled", move || f.get())
            .await;
        o1.borrow_mut().push("vcpu0 saw page");
    });
    let (f2, o2) = (flag.clone(), order.clone());
    w.spawn("handler", move |cx| async move {
        cx.access(flag_obj, Access::Write, "UFFDIO_COPY").await;
        f2.set(true);
        o2.borrow_mut().push("handler filled");
    });
    // FirstEnabled would run vcpu0 forever if waiting were not real blocking.
    let r = w.run(&mut FirstEnabled, &mut cont);
    assert_eq!(r.status, Status::Completed);
    assert_eq!(*order.borrow(), vec!["handler filled", "vcpu0 saw page"]);
}

#[test]
fn waiting_forever_is_a_deadlock_naming_the_condition() {
    let mut w = World::new();
    let o = w.object("never");
    w.spawn("vcpu0", move |cx| async move {
        cx.wait_until(o, "uffd page never filled", || false).await;
    });
    let r = w.run(&mut FirstEnabled, &mut cont);
    assert_eq!(
        r.status,
        Status::Deadlock(vec![Blocked {
            actor: "vcpu0".into(),
            waits_for: "uffd page never filled".into(),
            holders: vec![]
        }])
    );
}

#[test]
fn bug_stops_the_run_and_unlock_of_unheld_lock_is_a_bug() {
    let mut w = World::new();
    let l = w.lock("ptl", LockKind::Spin);
    w.spawn("vcpu0", move |cx| async move {
        let _f = cx.func("hva_to_pfn_remapped");
        cx.bug::<()>("BUG_ON(!kvm_is_reserved_pfn(pfn))").await;
    });
    let r = w.run(&mut FirstEnabled, &mut cont);
    assert_eq!(
        r.status,
        Status::Bug {
            actor: "vcpu0".into(),
            what: "BUG_ON(!kvm_is_reserved_pfn(pfn))".into()
        }
    );
    assert!(r
        .trace
        .to_string()
        .contains("hva_to_pfn_remapped: BUG: BUG_ON"));
    let mut w = World::new();
    let l2 = w.lock("ptl", LockKind::Spin);
    assert_eq!(l, l2);
    w.spawn("t", move |cx| async move { cx.unlock(l2).await });
    assert!(matches!(
        w.run(&mut FirstEnabled, &mut cont).status,
        Status::Bug { .. }
    ));
}

#[test]
fn returning_with_a_lock_held_is_a_bug() {
    let mut w = World::new();
    let l = w.lock("mmap_lock", LockKind::RwSem);
    w.spawn(
        "t",
        move |cx| async move { cx.lock(l, LockMode::Shared).await },
    );
    let r = w.run(&mut FirstEnabled, &mut cont);
    assert!(matches!(&r.status, Status::Bug { what, .. } if what.contains("mmap_lock")));
}

#[test]
fn observer_can_stop_and_step_limit_bounds_livelock() {
    let mut w = World::new();
    let o = w.object("x");
    w.spawn("spin", move |cx| async move {
        loop {
            cx.access(o, Access::Read, "poll").await;
        }
    });
    w.set_max_steps(50);
    assert_eq!(
        w.run(&mut FirstEnabled, &mut cont).status,
        Status::StepLimit
    );
    let mut w = World::new();
    let o = w.object("x");
    w.spawn("spin", move |cx| async move {
        loop {
            cx.access(o, Access::Read, "poll").await;
        }
    });
    let mut n = 0;
    let r = w.run(&mut FirstEnabled, &mut || {
        n += 1;
        if n == 10 {
            ControlFlow::Break("oracle".into())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert_eq!(r.status, Status::Stopped("oracle".into()));
    assert_eq!(r.steps, 10);
}

#[test]
fn spawned_actors_run_and_footprints_are_recorded() {
    let mut w = World::new();
    let o = w.object("seq");
    w.spawn("parent", move |cx| async move {
        cx.spawn("child", move |cx| async move {
            cx.access(o, Access::Write, "seq++").await;
        });
        cx.access(o, Access::Read, "READ_ONCE(seq)").await;
    });
    let r = w.run(&mut FirstEnabled, &mut cont);
    assert_eq!(r.status, Status::Completed);
    assert_eq!(r.trace.actors, vec!["parent", "child"]);
    let accesses: Vec<_> = r
        .records
        .iter()
        .filter(|s| s.fp.touches(o))
        .map(|s| (s.actor, s.fp.as_slice()[0].access(), s.what))
        .collect();
    assert_eq!(
        accesses,
        vec![
            (0, Access::Read, "READ_ONCE(seq)"),
            (1, Access::Write, "seq++")
        ]
    );
}
