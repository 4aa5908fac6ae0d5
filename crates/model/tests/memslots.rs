//! Issue 11 §1: `KVM_SET_USER_MEMORY_REGION` while vCPUs run — KVM's answers to each kind of
//! request, the `KVM_MEMSLOT_INVALID` retry, and what a vCPU sees of a deleted, moved or
//! re-created slot, under random schedules with the footprint audit on. (The checker proves
//! the same scenarios clean under every interleaving and catches the mutants that drop the
//! flush or the SRCU wait: crates/check/tests/checker.rs.)

use model::harness::{run_once_with, step_bound, BuildOptions, ScheduleKind};
use model::kvm::vcpu::Outcome;
use model::kvm::PolicyId;

fn run(sc: &scenario::Scenario, kind: ScheduleKind, emulated: bool) -> model::harness::SingleRun {
    run_once_with(
        sc,
        PolicyId::Linux6_13,
        kind,
        true,
        step_bound(sc),
        &BuildOptions {
            audit: true,
            emulated,
        },
    )
    .unwrap()
}

#[test]
fn kvm_answers_each_kind_of_request_as_the_kernel_does() {
    let sc = scenario::parse(
        "requests.toml",
        r#"
name = "requests"
description = "every kind of KVM_SET_USER_MEMORY_REGION"
[[mapping]]
name = "a"
backing = "anon-private"
pages = 2
fill = 0x11111111
[[memslot]]
slot = 1
gpa = 0x10000
mapping = "a"
pages = 1
[[vcpu]]
program = [{ read = 0x30000 }]
[[host]]
action = "set-memslot"      # KVM_MEM_READONLY on an existing slot
slot = 1
gpa = 0x10000
mapping = "a"
pages = 1
readonly = true
[[host]]
action = "set-memslot"      # another size for an existing slot
slot = 1
gpa = 0x10000
mapping = "a"
pages = 2
[[host]]
action = "set-memslot"      # a new slot over slot 1's gfn
slot = 2
gpa = 0x10000
mapping = "a"
offset = 1
pages = 1
[[host]]
action = "delete-memslot"   # no such slot
slot = 7
[[host]]
action = "set-memslot"      # the same slot again: nothing to do
slot = 1
gpa = 0x10000
mapping = "a"
pages = 1
[[host]]
action = "set-memslot"      # a move
slot = 1
gpa = 0x30000
mapping = "a"
pages = 1
"#,
    )
    .unwrap();
    let r = run(&sc, ScheduleKind::VcpusLast, false);
    let t = r.trace.to_string();
    let failed: Vec<&str> = t
        .lines()
        .filter_map(|l| l.split(" failed: ").nth(1))
        .collect();
    assert_eq!(failed, ["-EINVAL", "-EINVAL", "-EEXIST", "-EINVAL"], "{t}");
    assert!(t.contains("nothing to change"), "{t}");
    assert!(t.contains("slot 1: Move"), "{t}");
    // The vCPU ran after the move: gpa 0x30000 is slot 1's page now.
    assert_eq!(r.raw_outcomes[0][0], vec![Outcome::Value(0x1111_1111)]);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
}

/// Over many random schedules of the built-in deletion: every read is the data or an MMIO
/// exit, some fault meets the invalid slot and retries (native), and none breaks an oracle.
#[test]
fn a_fault_on_a_slot_being_deleted_retries_and_then_exits_as_mmio() {
    let sc = scenario::builtin("memslot-delete").unwrap().unwrap();
    let mut retried = 0;
    let mut outcomes = std::collections::BTreeSet::new();
    for seed in 0..400 {
        let r = run(&sc, ScheduleKind::Random(seed), false);
        assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
        let t = r.trace.to_string();
        if t.contains("KVM_MEMSLOT_INVALID (slot being deleted or moved): RET_PF_RETRY") {
            retried += 1;
        }
        for o in r.raw_outcomes[0].iter().flatten() {
            assert!(
                matches!(
                    o,
                    Outcome::Value(0x1111_1111)
                        | Outcome::MmioRead {
                            gpa: 0x10000,
                            len: 4
                        }
                ),
                "seed {seed}: {o:?}"
            );
            outcomes.insert(format!("{o:?}"));
        }
    }
    assert!(retried > 0, "no schedule met the invalid slot");
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
}

/// The emulator reaches memory through `__gfn_to_hva_many`, which refuses an invalid slot:
/// a CPL0 read in the window of a move is an MMIO exit (what set_memory_region_test's
/// "val == 1 || val == MMIO_VAL" allows), where the native path would retry.
#[test]
fn the_emulator_turns_the_invalid_window_into_mmio() {
    let sc = scenario::parse(
        "move-race.toml",
        r#"
name = "move-race"
description = "a slot moved away and back while the guest reads"
[[mapping]]
name = "region"
backing = "anon-private"
pages = 2
fill = 0x0
[[memslot]]
slot = 10
gpa = 0xc0001000
mapping = "region"
pages = 2
[[vcpu]]
program = [{ read = 0xc0001000, size = 8 }, { read = 0xc0001000, size = 8 }]
[[host]]
thread = "main"
action = "set-memslot"
slot = 10
gpa = 0xc0000000
mapping = "region"
pages = 2
[[host]]
thread = "main"
action = "write"
mapping = "region"
size = 8
value = 2
[[host]]
thread = "main"
action = "write"
mapping = "region"
size = 8
value = 1
[[host]]
thread = "main"
action = "set-memslot"
slot = 10
gpa = 0xc0001000
mapping = "region"
pages = 2
"#,
    )
    .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..400 {
        let r = run(&sc, ScheduleKind::Random(seed), true);
        assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
        for o in r.raw_outcomes[0].iter().flatten() {
            assert_ne!(
                *o,
                Outcome::Value(2),
                "seed {seed}: the guest saw the other page"
            );
            seen.insert(format!("{o:?}"));
        }
        let native = run(&sc, ScheduleKind::Random(seed), false);
        for o in native.raw_outcomes[0].iter().flatten() {
            assert!(
                !matches!(o, Outcome::MmioRead { .. }),
                "seed {seed}: native MMIO"
            );
        }
    }
    assert!(
        seen.iter().any(|o| o.starts_with("MmioRead")),
        "no emulated read met the window: {seen:?}"
    );
}

/// e0c378684b65 (v5.13): before it, a fault on a slot being moved found "no slot" and exited
/// as MMIO even at a gfn the slot covers before and after the move; since, it retries.
#[test]
fn the_invalid_window_is_mmio_before_v5_13_and_a_retry_since() {
    let sc = scenario::builtin("memslot-move-window").unwrap().unwrap();
    for p in PolicyId::ALL {
        let mut mmio = 0;
        for seed in 0..300 {
            let r = run_once_with(
                &sc,
                p,
                ScheduleKind::Random(seed),
                true,
                step_bound(&sc),
                &BuildOptions {
                    audit: true,
                    emulated: false,
                },
            )
            .unwrap();
            assert!(
                r.violations.is_empty(),
                "{p} seed {seed}: {:?}",
                r.violations
            );
            let t = r.trace.to_string();
            if r.raw_outcomes[0]
                .iter()
                .flatten()
                .any(|o| matches!(o, Outcome::MmioRead { .. }))
            {
                assert!(t.contains("KVM_PFN_NOSLOT: MMIO"), "{p} seed {seed}: {t}");
                mmio += 1;
            }
        }
        assert_eq!(mmio > 0, !p.invalid_slot_retries(), "{p}: {mmio} MMIO runs");
    }
}
