//! Plan validation and multi-vCPU/multi-slot plumbing.
mod common;
use common::*;
use probe::{BackingKind as K, GuestOp, HostAction, Memslot, Mode, Plan, ProbeError, Vcpu};

fn bad(p: &Plan, needle: &str) {
    match probe::run(p) {
        Err(ProbeError::BadPlan(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        Err(e) => panic!("expected BadPlan({needle}), got {e:?}"),
        Ok(r) => panic!(
            "expected BadPlan({needle}), got a result with {} accesses",
            r.accesses.len()
        ),
    }
}

#[test]
fn bad_plans_are_rejected_with_a_reason() {
    let base = || {
        one(
            "bad",
            backing("d", K::AnonPrivate, 2, true, None),
            false,
            vec![r(D)],
            vec![],
            Mode::Native,
        )
    };
    let mut p = base();
    p.vcpus.clear();
    bad(&p, "vCPUs");
    let mut p = base();
    p.memslots[0].gpa = 0x1000;
    bad(&p, "gpa");
    let mut p = base();
    p.memslots[0].gpa = 0x10800;
    bad(&p, "aligned");
    let mut p = base();
    p.memslots[0].pages = 3;
    bad(&p, "outside backing");
    let mut p = base();
    p.memslots[0].backing = "nope".into();
    bad(&p, "nope");
    let mut p = base();
    p.memslots[0].slot = 100;
    bad(&p, "reserved");
    let mut p = base();
    p.memslots.push(Memslot {
        slot: 2,
        gpa: D + 0x1000,
        backing: "d".into(),
        offset_pages: 0,
        pages: 1,
        readonly: false,
    });
    bad(&p, "overlaps");
    let mut p = base();
    p.vcpus[0].program = vec![GuestOp::Read { gpa: D, size: 3 }];
    bad(&p, "size 3");
    let mut p = base();
    p.vcpus[0].program = vec![r(0x1C0000)];
    bad(&p, "overlaps the guest layout's own ranges");
    let mut p = base();
    p.vcpus[0].program = vec![r(1 << 48)];
    bad(&p, "not below 2^48");
    let mut p = base();
    p.vcpus[0].program = vec![GuestOp::Read {
        gpa: (1 << 48) - 2,
        size: 4,
    }];
    bad(&p, "not below 2^48");
    let mut p = base();
    p.vcpus[0].program = vec![GuestOp::Write {
        gpa: D,
        size: 1,
        value: 0x100,
    }];
    bad(&p, "does not fit");
    let mut p = base();
    p.host = vec![after(0, 5, mprotect("d", 1, true, true))];
    bad(&p, "does not exist");
    let mut p = base();
    p.host = vec![before(HostAction::Munmap {
        backing: "d".into(),
        offset_pages: 1,
        pages: 2,
    })];
    bad(&p, "outside backing");
    let mut p = base();
    p.backings.push(backing("d", K::Memfd, 1, true, None));
    bad(&p, "repeated");
    let mut p = base();
    p.vcpus[0].program = vec![r(D); 20000];
    bad(&p, "pages");
}

/// A failing host step is a Sys error naming the step, not a crash.
#[test]
fn failing_host_step_is_a_sys_error() {
    if skip("failing_host_step_is_a_sys_error") {
        return;
    }
    let host = vec![after(0, 0, host_write("d", 0, 1))];
    let p = one(
        "write-hole",
        backing("d", K::Hole, 1, true, None),
        false,
        vec![r(D)],
        host,
        Mode::Native,
    );
    match probe::run(&p) {
        Err(ProbeError::Sys(m)) => assert!(
            m.contains("step after (vcpu 0, access 0)") && m.contains("not mapped"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    let host = vec![before(host_write("d", 0, 1))];
    let p = one(
        "write-ro",
        backing("d", K::AnonPrivate, 1, false, None),
        false,
        vec![r(D)],
        host,
        Mode::Native,
    );
    assert!(matches!(probe::run(&p), Err(ProbeError::Sys(m)) if m.contains("Bad address")));
}

/// Two backings with offsets, two vCPUs, each with its own steps.
#[test]
fn two_vcpus_two_slots_with_offsets() {
    if skip("two_vcpus_two_slots_with_offsets") {
        return;
    }
    let p = Plan {
        name: "two".into(),
        backings: vec![
            backing("a", K::AnonShared, 4, true, Some(0xA)),
            backing("b", K::Memfd, 2, true, Some(0xB)),
        ],
        memslots: vec![
            Memslot {
                slot: 1,
                gpa: 0x10000,
                backing: "a".into(),
                offset_pages: 2,
                pages: 2,
                readonly: false,
            },
            Memslot {
                slot: 7,
                gpa: 0x40000,
                backing: "b".into(),
                offset_pages: 0,
                pages: 2,
                readonly: true,
            },
        ],
        vcpus: vec![
            Vcpu {
                program: vec![r(0x10000), w(0x11000, 0x1111), r(0x11000)],
                ..Vcpu::default()
            },
            Vcpu {
                program: vec![r(0x40004), r(0x40004)],
                ..Vcpu::default()
            },
        ],
        host: vec![after(1, 0, host_write("b", 4, 0xBB))],
        mode: Mode::Native,
        timeout_ms: 1000,
        inject: Default::default(),
        peeks: Vec::new(),
    };
    let res = probe::run(&p).unwrap();
    assert_eq!(
        exits(&res),
        vec![v(0xA), done(), v(0x1111), v(0xB), v(0xBB)]
    );
    assert_eq!(
        res.accesses
            .iter()
            .map(|a| (a.vcpu, a.index))
            .collect::<Vec<_>>(),
        vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    );
    assert_eq!(hread(&res, "a", 0x3000), Some(0x1111));
    assert_eq!(hread(&res, "b", 4), Some(0xBB));
}
