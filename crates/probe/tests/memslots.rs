//! Issue 11 §1, probe side: memslots added, deleted and moved as host steps
//! (`HostAction::SetMemslot` / `DeleteMemslot`), at a vCPU exit or from a host thread racing
//! the vCPUs (`Step::race`), on the real /dev/kvm.
//!
//! Every run with KVM goes through a fresh process (`isolated`), as the other probe tests'
//! hole and `[vvar]` runs do: this test process reads the vDSO clock and has other tests'
//! threads coming and going.
mod common;
use common::*;
use probe::{
    BackingKind as K, Exit, GuestOp, HostAction, Memslot, Mode, Peek, Plan, ProbeError,
    ProbeResult, Step,
};

const FILL: u32 = 0x1111_1111;
/// The gpa slots are moved to / created at, in the low data range.
const D2: u64 = 0x20000;
/// A far gpa (4 GiB): only reachable if the guest page tables include a step's gpa.
const FAR: u64 = 0x1_0000_0000;

fn set(slot: u32, gpa: u64, b: &str, pages: u64, readonly: bool) -> HostAction {
    HostAction::SetMemslot(Memslot {
        slot,
        gpa,
        backing: b.into(),
        offset_pages: 0,
        pages,
        readonly,
    })
}

fn del(slot: u32) -> HostAction {
    HostAction::DeleteMemslot { slot }
}

fn racing(action: HostAction) -> Step {
    Step {
        after: None,
        action,
        race: true,
    }
}

fn mmio_read(gpa: u64, len: u8, supplied: u64) -> Vec<Exit> {
    vec![Exit::MmioRead { gpa, len }, Exit::Value(supplied)]
}

fn ok(n: usize) -> Vec<Option<String>> {
    vec![Some("ok".to_string()); n]
}

fn run(p: &Plan) -> ProbeResult {
    isolated(p).unwrap_or_else(|e| panic!("{} ({:?}): {e}", p.name, p.mode))
}

/// One slot 1 at D over `d` (1 page of FILL) and `program`.
fn base(name: &str, program: Vec<GuestOp>, host: Vec<Step>, mode: Mode) -> Plan {
    one(
        name,
        backing("d", K::AnonPrivate, 1, true, Some(FILL)),
        false,
        program,
        host,
        mode,
    )
}

/// (1) A slot deleted after access 0: the next accesses to its gpa are MMIO exits at that gpa
/// with the access's length (a read completed with what the VMM supplies), on both paths.
#[test]
fn a_deleted_slot_is_mmio() {
    if skip("a_deleted_slot_is_mmio") {
        return;
    }
    for mode in MODES {
        let mut p = base(
            "delete",
            vec![
                r(D),
                GuestOp::Read {
                    gpa: D + 0x10,
                    size: 2,
                },
                w(D + 8, 0x99),
            ],
            vec![after(0, 0, del(1))],
            mode,
        );
        p.vcpus[0].mmio = vec![0, 0x600d];
        let res = run(&p);
        assert_eq!(
            exits(&res),
            vec![
                v(u64::from(FILL)),
                mmio_read(D + 0x10, 2, 0x600d),
                vec![
                    Exit::MmioWrite {
                        gpa: D + 8,
                        len: 4,
                        data: 0x99
                    },
                    Exit::Done
                ],
            ],
            "{mode:?}"
        );
        assert_eq!(res.host_steps, ok(1), "{mode:?}");
        // The backing is untouched by the write that went to MMIO.
        assert_eq!(hread(&res, "d", 8), Some(u64::from(FILL)), "{mode:?}");
    }
}

/// (2) Delete, then create the same slot over a fresh backing: the guest reads the new
/// backing's 0; the old data never shows. Memfd and private anon.
#[test]
fn a_recreated_slot_shows_the_fresh_backing() {
    if skip("a_recreated_slot_shows_the_fresh_backing") {
        return;
    }
    for mode in MODES {
        for kind in [K::Memfd, K::AnonPrivate] {
            let mut p = base(
                "recreate",
                vec![r(D), r(D), w(D + 4, 0x77), r(D + 4)],
                vec![after(0, 0, del(1)), after(0, 0, set(1, D, "f", 1, false))],
                mode,
            );
            p.backings.push(backing("f", kind, 1, true, None));
            let res = run(&p);
            assert_eq!(
                exits(&res),
                vec![v(u64::from(FILL)), v(0), done(), v(0x77)],
                "{mode:?} {kind:?}"
            );
            assert_eq!(res.host_steps, ok(2));
            // Both backings' final view: the write went to the new one only.
            assert_eq!(hread(&res, "d", 4), Some(u64::from(FILL)));
            assert_eq!(hread(&res, "f", 4), Some(0x77));
            assert_eq!(hread(&res, "f", 0), Some(0));
        }
    }
}

/// (3) Move (same slot, backing and size, new gpa): the new gpa sees the data, the old one is
/// MMIO. To a low gpa and to 4 GiB, which the guest can reach only because the page tables
/// include the step's gpa.
#[test]
fn a_moved_slot_shows_its_data_at_the_new_gpa() {
    if skip("a_moved_slot_shows_its_data_at_the_new_gpa") {
        return;
    }
    for mode in MODES {
        for to in [D2, FAR] {
            let p = base(
                "move",
                vec![r(D), r(to), w(to + 4, 0x5a), r(D + 4), r(to + 4)],
                vec![after(0, 0, set(1, to, "d", 1, false))],
                mode,
            );
            let res = run(&p);
            assert_eq!(
                exits(&res),
                vec![
                    v(u64::from(FILL)),
                    v(u64::from(FILL)),
                    done(),
                    mmio_read(D + 4, 4, 0),
                    v(0x5a),
                ],
                "{mode:?} to {to:#x}"
            );
            assert_eq!(res.host_steps, ok(1));
            assert_eq!(hread(&res, "d", 4), Some(0x5a));
        }
    }
}

/// (4) KVM_MEM_READONLY cannot be flipped on an existing slot (EINVAL, the slot unchanged);
/// delete + create with it works: a guest write is an MMIO write, a read sees the data.
#[test]
fn readonly_is_flipped_by_delete_and_create_only() {
    if skip("readonly_is_flipped_by_delete_and_create_only") {
        return;
    }
    for mode in MODES {
        let p = base(
            "readonly",
            vec![r(D), w(D, 0x22), r(D), w(D, 0x33), r(D)],
            vec![
                after(0, 0, set(1, D, "d", 1, true)),
                after(0, 2, del(1)),
                after(0, 2, set(1, D, "d", 1, true)),
            ],
            mode,
        );
        let res = run(&p);
        assert_eq!(
            res.host_steps,
            vec![
                Some("EINVAL".to_string()),
                Some("ok".to_string()),
                Some("ok".to_string())
            ],
            "{mode:?}"
        );
        assert_eq!(
            exits(&res),
            vec![
                v(u64::from(FILL)),
                done(),
                v(0x22),
                vec![
                    Exit::MmioWrite {
                        gpa: D,
                        len: 4,
                        data: 0x33
                    },
                    Exit::Done
                ],
                v(0x22),
            ],
            "{mode:?}"
        );
        assert_eq!(hread(&res, "d", 0), Some(0x22));
    }
}

/// The other errnos a VMM meets: a size change (EINVAL), an overlap (EEXIST), deleting a
/// slot that does not exist (EINVAL). None changes what the guest sees.
#[test]
fn memslot_errnos_are_outcomes() {
    if skip("memslot_errnos_are_outcomes") {
        return;
    }
    let mut p = base(
        "errnos",
        vec![r(D), r(D + 0x1000)],
        vec![
            after(0, 0, set(1, D, "e", 2, false)),
            after(0, 0, set(2, D, "e", 1, false)),
            after(0, 0, del(7)),
            after(0, 0, set(2, D + 0x1000, "e", 1, false)),
        ],
        Mode::Native,
    );
    p.backings
        .push(backing("e", K::AnonPrivate, 2, true, Some(0x4444_4444)));
    let res = run(&p);
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        res.host_steps,
        vec![s("EINVAL"), s("EEXIST"), s("EINVAL"), s("ok")]
    );
    assert_eq!(exits(&res), vec![v(u64::from(FILL)), v(0x4444_4444)]);
}

/// Summary of a racing run on one vCPU: (accesses that read the data, that were MMIO).
/// Panics unless every access is the data or an MMIO read completed with 0, never EFAULT,
/// and MMIO once means MMIO for the rest.
fn data_then_mmio(res: &ProbeResult, gpa: u64, data: u64) -> (usize, usize) {
    let (mut vals, mut mmio) = (0, 0);
    for a in &res.accesses {
        if a.attempts == v(data) {
            assert_eq!(mmio, 0, "data after MMIO at access {}: {res:?}", a.index);
            vals += 1;
        } else if a.attempts == mmio_read(gpa, 4, 0) {
            mmio += 1;
        } else {
            panic!("access {}: {:?}", a.index, a.attempts);
        }
    }
    (vals, mmio)
}

/// (5) A host thread deletes the slot while the vCPU reads it 50 times: each read is the data
/// or an MMIO exit, never EFAULT (KVM retries a fault on a slot being deleted), and once
/// MMIO always MMIO. Several runs per mode; the split is printed (`--nocapture`).
#[test]
fn a_racing_delete_turns_reads_into_mmio_never_efault() {
    if skip("a_racing_delete_turns_reads_into_mmio_never_efault") {
        return;
    }
    for mode in MODES {
        let mut splits = Vec::new();
        for _ in 0..5 {
            let p = base("race-delete", vec![r(D); 50], vec![racing(del(1))], mode);
            let res = run(&p);
            assert_eq!(res.host_steps, ok(1));
            assert_eq!(res.accesses.len(), 50);
            splits.push(data_then_mmio(&res, D, u64::from(FILL)));
        }
        println!("{mode:?}: (data, MMIO) reads per run: {splits:?}");
    }
}

/// (6) A host thread creates and deletes another slot 10 times while the vCPU writes and
/// reads its own slot: every access completes with the right value
/// (memslot_modification_stress_test's point: slot updates elsewhere never disturb a slot).
#[test]
fn racing_updates_of_another_slot_leave_this_one_alone() {
    if skip("racing_updates_of_another_slot_leave_this_one_alone") {
        return;
    }
    for mode in MODES.iter().flat_map(|&m| [m; 3]) {
        let program: Vec<GuestOp> = (0..40u64)
            .flat_map(|i| {
                let gpa = D + (i % 2) * 0x1000 + 8 * i;
                [w(gpa, 0x1000 + i), r(gpa)]
            })
            .collect();
        let want: Vec<Vec<Exit>> = (0..40u64).flat_map(|i| [done(), v(0x1000 + i)]).collect();
        let host: Vec<Step> = (0..10)
            .flat_map(|_| [racing(set(2, D2, "e", 1, false)), racing(del(2))])
            .collect();
        let mut p = one(
            "race-other",
            backing("d", K::AnonPrivate, 2, true, None),
            false,
            program,
            host,
            mode,
        );
        p.backings.push(backing("e", K::Memfd, 1, true, Some(7)));
        let res = run(&p);
        assert_eq!(exits(&res), want, "{mode:?}");
        assert_eq!(res.host_steps, ok(20), "{mode:?}");
    }
}

/// A racing step with vCPU-paced steps beside it: the vCPU's own step still runs at its exit,
/// and a racing host write lands (the guest's later reads see the old or the new value,
/// never anything else).
#[test]
fn racing_and_sequenced_steps_together() {
    if skip("racing_and_sequenced_steps_together") {
        return;
    }
    let mut host = vec![racing(host_write("d", 0, 0x2222_2222))];
    host.push(after(0, 19, del(1)));
    let p = base(
        "race-write",
        [vec![r(D); 20], vec![r(D)]].concat(),
        host,
        Mode::Native,
    );
    let res = run(&p);
    assert_eq!(res.host_steps, ok(2));
    let e = exits(&res);
    let mut new = false;
    for a in &e[..20] {
        if *a == v(0x2222_2222) {
            new = true;
        } else {
            assert!(!new && *a == v(u64::from(FILL)), "{e:?}");
        }
    }
    assert_eq!(e[20], mmio_read(D, 4, 0));
    assert_eq!(hread(&res, "d", 0), Some(0x2222_2222));
}

/// A backing only a step's slot uses is checked like any other: a `[vvar]` one goes through
/// the presence detector and reads the host's value; an own-memory one read behind the
/// guest's back makes the run invalid, naming it.
#[test]
fn a_backing_only_a_step_uses_is_checked_like_any_other() {
    if skip("a_backing_only_a_step_uses_is_checked_like_any_other") {
        return;
    }
    let mut p = base(
        "step-vvar",
        vec![r(D), r(D2 + 4)],
        vec![before(set(2, D2, "v", 1, false))],
        Mode::Native,
    );
    p.backings.push(backing("v", K::Vvar, 1, false, None));
    p.peeks.push(Peek {
        backing: "v".into(),
        offset: 4,
        size: 4,
        file: false,
    });
    let res = run(&p);
    assert_eq!(res.host_steps, ok(1));
    let e = exits(&res);
    let host: u64 = u64::from_str_radix(res.peeks[0].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(e, vec![v(u64::from(FILL)), v(host)]);

    let mut p = base(
        "step-only",
        vec![r(D), r(D2)],
        vec![after(0, 0, set(2, D2, "f", 1, false))],
        Mode::Native,
    );
    p.backings.push(backing("f", K::Memfd, 1, true, None));
    let res = run(&p);
    assert_eq!(exits(&res), vec![v(u64::from(FILL)), v(0)]);
    p.inject.touch_behind_back = true;
    match isolated(&p) {
        Err(ProbeError::Invalid(m)) => assert!(m.contains("backing 'f' is present"), "{m}"),
        other => panic!("expected an invalid run, got {other:?}"),
    }
}

/// The new fields survive JSON, default when absent, and the refusals name the problem.
/// (No KVM needed: `probe::check` validates without creating anything.)
#[test]
fn memslot_steps_serde_and_validation() {
    let p = base(
        "serde",
        vec![r(D)],
        vec![
            racing(set(3, FAR, "d", 1, true)),
            after(0, 0, del(1)),
            before(set(4, D2, "d", 1, false)),
        ],
        Mode::Native,
    );
    let text = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<Plan>(&text).unwrap(), p);
    // A step without "race" is not racing.
    let old = r#"{"after":null,"action":{"DeleteMemslot":{"slot":1}}}"#;
    let s: Step = serde_json::from_str(old).unwrap();
    assert_eq!(s, before(del(1)));
    // A result without "host_steps" has none; with them they round-trip.
    let r = ProbeResult {
        plan: "x".into(),
        mode: Mode::Native,
        mmu: "m".into(),
        accesses: vec![],
        uffd_events: vec![],
        host_reads: vec![],
        peeks: vec![],
        host_steps: vec![None, Some("EEXIST".into()), Some("ok".into())],
    };
    let text = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<ProbeResult>(&text).unwrap(), r);
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("host_steps");
    let r2: ProbeResult = serde_json::from_value(v).unwrap();
    assert!(r2.host_steps.is_empty());
    assert_eq!(del(1).backing(), None);
    assert_eq!(set(1, D, "d", 1, false).backing(), Some("d"));

    // Valid, including a step's far gpa in the page tables.
    probe::check(&p).unwrap();

    let bad = |p: &Plan, needle: &str| match probe::check(p) {
        Err(ProbeError::BadPlan(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        other => panic!("expected BadPlan({needle}), got {other:?}"),
    };
    let with = |s: Step| {
        let mut q = p.clone();
        q.host = vec![s];
        q
    };
    bad(
        &with(Step {
            after: Some((0, 0, 1)),
            action: del(1),
            race: true,
        }),
        "cannot also wait",
    );
    bad(
        &with(racing(HostAction::Munmap {
            backing: "d".into(),
            offset_pages: 0,
            pages: 1,
        })),
        "hole guard",
    );
    bad(&with(racing(mmap_fixed("d", 1, None))), "hole guard");
    bad(&with(before(set(100, D2, "d", 1, false))), "reserved");
    bad(&with(racing(del(101))), "reserved");
    bad(&with(before(set(2, D2 + 0x800, "d", 1, false))), "aligned");
    bad(&with(before(set(2, 0x1000, "d", 1, false))), "gpa");
    bad(&with(before(set(2, 0x1C0000, "d", 1, false))), "gpa");
    bad(&with(before(set(2, D2, "d", 0, false))), "outside backing");
    bad(&with(before(set(2, D2, "d", 2, false))), "outside backing");
    bad(&with(before(set(2, D2, "nope", 1, false))), "nope");
    // Other actions may race; a step may re-create a plan slot or overlap one (KVM decides).
    probe::check(&with(racing(mprotect("d", 1, true, false)))).unwrap();
    probe::check(&with(racing(set(1, D, "d", 1, false)))).unwrap();
    probe::check(&with(racing(set(2, D, "d", 1, false)))).unwrap();
}
