//! Audit mode: model state reports its accesses, and a step touching something neither its
//! footprint nor a lock it holds covers fails the run.

use std::cell::Cell;
use std::rc::Rc;
use world::{audit, Access, FirstEnabled, Footprint, FpSet, LockKind, LockMode, Status, World};

fn cont() -> std::ops::ControlFlow<String> {
    std::ops::ControlFlow::Continue(())
}

#[test]
fn undeclared_access_fails_the_step_that_made_it() {
    let mut w = World::new();
    w.set_audit(true);
    let declared = w.object("declared");
    let other = w.object("other");
    w.spawn("t", move |cx| async move {
        cx.access(declared, Access::Write, "store").await;
        audit::write(declared);
        audit::read(other);
    });
    let r = w.run(&mut FirstEnabled, &mut cont);
    let Status::Audit { actor, detail } = r.status else {
        panic!("{:?}", r.status)
    };
    assert_eq!(actor, "t");
    assert!(detail.contains("read of other not declared"), "{detail}");
    assert!(detail.contains("write declared"), "{detail}");
}

#[test]
fn declared_write_covers_reads_but_a_declared_read_does_not_cover_writes() {
    let run = |decl: Access, done: Access| {
        let mut w = World::new();
        w.set_audit(true);
        let o = w.object("o");
        w.spawn("t", move |cx| async move {
            cx.access(o, decl, "x").await;
            audit::touch(o, done);
        });
        w.run(&mut FirstEnabled, &mut cont).status
    };
    assert_eq!(run(Access::Write, Access::Read), Status::Completed);
    assert_eq!(run(Access::Read, Access::Read), Status::Completed);
    assert!(matches!(
        run(Access::Read, Access::Write),
        Status::Audit { .. }
    ));
}

#[test]
fn numbered_objects_and_ranges() {
    let mut w = World::new();
    w.set_audit(true);
    let pte = w.class("pte");
    w.spawn("t", move |cx| async move {
        let mut fp = FpSet::new();
        fp.add(pte.range(10, 14, Access::Read));
        cx.step_with(fp, "walk").await;
        audit::read(pte.obj(12));
        audit::read_range(pte, 10, 14);
        cx.step_with(fp, "walk again").await;
        audit::read(pte.obj(14));
    });
    let r = w.run(&mut FirstEnabled, &mut cont);
    let Status::Audit { detail, .. } = r.status else {
        panic!("{:?}", r.status)
    };
    assert!(detail.contains("read of pte 0xe not declared"), "{detail}");
    assert!(detail.starts_with("step 2 (walk again)"), "{detail}");
}

#[test]
fn protected_objects_need_the_lock_not_a_declaration() {
    let scenario = |mode: Option<LockMode>, access: Access| {
        let mut w = World::new();
        w.set_audit(true);
        let l = w.lock("mmap_lock", LockKind::RwSem);
        let vmas = w.object("vma list");
        w.protect(Footprint::new(vmas, Access::Write), l);
        w.spawn("t", move |cx| async move {
            if let Some(m) = mode {
                cx.lock(l, m).await;
            } else {
                // Declaring the object does not help: the lock is the rule.
                cx.access(vmas, Access::Write, "racy").await;
            }
            audit::touch(vmas, access);
            if mode.is_some() {
                cx.unlock(l).await;
            }
        });
        w.run(&mut FirstEnabled, &mut cont).status
    };
    assert_eq!(
        scenario(Some(LockMode::Shared), Access::Read),
        Status::Completed
    );
    assert_eq!(
        scenario(Some(LockMode::Exclusive), Access::Write),
        Status::Completed
    );
    let Status::Audit { detail, .. } = scenario(Some(LockMode::Shared), Access::Write) else {
        panic!()
    };
    assert!(detail.contains("while holding it shared only"), "{detail}");
    assert!(matches!(scenario(None, Access::Read), Status::Audit { .. }));
}

#[test]
fn access_after_the_unlock_in_the_same_step_is_not_covered() {
    let mut w = World::new();
    w.set_audit(true);
    let l = w.lock("ptl", LockKind::Spin);
    let o = w.object("page table");
    w.protect(Footprint::new(o, Access::Write), l);
    w.spawn("t", move |cx| async move {
        cx.lock(l, LockMode::Exclusive).await;
        audit::write(o);
        cx.unlock(l).await;
        audit::read(o);
    });
    let r = w.run(&mut FirstEnabled, &mut cont);
    assert!(matches!(r.status, Status::Audit { .. }), "{:?}", r.status);
}

#[test]
fn wait_conditions_are_audited_against_their_object() {
    let run = |declared_is_read: bool| {
        let mut w = World::new();
        w.set_audit(true);
        let flag_obj = w.object("flag");
        let other = w.object("other");
        let flag = Rc::new(Cell::new(false));
        let f2 = flag.clone();
        w.spawn("waiter", move |cx| async move {
            let f = f2.clone();
            cx.wait_until(flag_obj, "flag set", move || {
                audit::read(if declared_is_read { flag_obj } else { other });
                f.get()
            })
            .await;
        });
        w.spawn("setter", move |cx| async move {
            cx.access(flag_obj, Access::Write, "set").await;
            audit::write(flag_obj);
            flag.set(true);
        });
        w.run(&mut FirstEnabled, &mut cont).status
    };
    assert_eq!(run(true), Status::Completed);
    let Status::Audit { actor, detail } = run(false) else {
        panic!()
    };
    assert_eq!(actor, "waiter");
    assert!(detail.contains("wait condition \"flag set\""), "{detail}");
}

#[test]
fn nothing_is_recorded_outside_audited_steps() {
    let mut w = World::new();
    let o = w.object("o");
    w.spawn("t", move |cx| async move {
        cx.access(o, Access::Read, "r").await;
        audit::write(o);
        assert!(!audit::recording());
    });
    assert_eq!(
        w.run(&mut FirstEnabled, &mut cont).status,
        Status::Completed
    );
}
