//! Footprint sets: conflicts, merging, and the lock operations' own entries.

use world::{
    Access, Decision, FirstEnabled, Footprint, FpSet, LockKind, LockMode, ObjId, OpKind, Scheduler,
    Status, World, FP_CAP,
};

#[test]
fn conflicts_need_a_shared_object_and_a_write() {
    let mut w = World::new();
    let page = w.class("page");
    let r = |i| FpSet::one(page.obj(i), Access::Read);
    let wr = |i| FpSet::one(page.obj(i), Access::Write);
    assert!(!r(1).conflicts(&r(1)));
    assert!(r(1).conflicts(&wr(1)));
    assert!(!wr(1).conflicts(&wr(2)));
    let mut range = FpSet::new();
    range.add(page.range(0, 8, Access::Read));
    assert!(range.conflicts(&wr(7)));
    assert!(!range.conflicts(&wr(8)));
    let other = w.class("spte");
    assert!(!FpSet::one(other.obj(1), Access::Write).conflicts(&wr(1)));
}

#[test]
fn a_full_set_merges_into_covering_ranges() {
    let mut w = World::new();
    let c = w.class("pte");
    let mut s = FpSet::new();
    for i in 0..(FP_CAP as u64 * 3) {
        s.push(c.obj(i * 2), Access::Read);
    }
    assert!(s.len() <= FP_CAP);
    for i in 0..(FP_CAP as u64 * 3) {
        assert!(s.covers(c.obj(i * 2), Access::Read), "{i}");
    }
    // Adjacent entries of one access merge; a write upgrades an identical read entry.
    let mut t = FpSet::new();
    t.push(c.obj(1), Access::Read).push(c.obj(2), Access::Read);
    assert_eq!(t.len(), 1);
    t.push(c.obj(1), Access::Write);
    assert!(t.covers(c.obj(1), Access::Write));
}

/// Records the footprint of every lock step.
struct Spy(Vec<(OpKind, Footprint)>);

impl Scheduler for Spy {
    fn pick(&mut self, d: &Decision) -> Option<usize> {
        let a = *d.enabled.first()?;
        let p = d.pending.iter().find(|p| p.actor == a).unwrap();
        if matches!(
            p.kind,
            OpKind::Lock(..) | OpKind::Unlock(_) | OpKind::TryLock(_)
        ) {
            self.0.push((p.kind, p.fp.as_slice()[0]));
        }
        Some(a)
    }
}

#[test]
fn read_side_lock_operations_are_reads_of_the_lock() {
    let mut w = World::new();
    let l = w.lock("mmap_lock", LockKind::RwSem);
    w.spawn("reader", move |cx| async move {
        cx.lock(l, LockMode::Shared).await;
        cx.unlock(l).await;
        cx.lock(l, LockMode::Exclusive).await;
        cx.unlock(l).await;
    });
    let mut spy = Spy(Vec::new());
    let r = w.run(&mut spy, &mut || std::ops::ControlFlow::Continue(()));
    assert_eq!(r.status, Status::Completed);
    let acc: Vec<Access> = spy.0.iter().map(|(_, f)| f.access()).collect();
    assert_eq!(
        acc,
        vec![Access::Read, Access::Read, Access::Write, Access::Write]
    );
    assert!(spy.0.iter().all(|(_, f)| f.obj() == l.0));
}

#[test]
fn trylock_reports_whether_it_got_the_lock() {
    let mut w = World::new();
    let l = w.lock("bo->resv", LockKind::Mutex);
    let out = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let o = out.clone();
    w.spawn("holder", move |cx| async move {
        cx.lock(l, LockMode::Exclusive).await;
        let o2 = o.clone();
        cx.spawn("other", move |cx| async move {
            let got = cx.try_lock(l).await;
            o2.borrow_mut().push(got);
        });
        // Let the other actor try while the lock is held (FirstEnabled runs us first, so
        // yield on something else).
        let x = ObjId(7);
        cx.access(x, Access::Read, "spin").await;
        cx.access(x, Access::Read, "spin").await;
        cx.unlock(l).await;
        let got = cx.try_lock(l).await;
        o.borrow_mut().push(got);
        cx.unlock(l).await;
    });
    struct OtherFirst;
    impl Scheduler for OtherFirst {
        fn pick(&mut self, d: &Decision) -> Option<usize> {
            d.enabled.last().copied()
        }
    }
    let r = w.run(&mut OtherFirst, &mut || std::ops::ControlFlow::Continue(()));
    assert_eq!(r.status, Status::Completed);
    assert_eq!(*out.borrow(), vec![false, true]);
    let _ = FirstEnabled;
}
