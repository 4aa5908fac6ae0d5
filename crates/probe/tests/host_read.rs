//! `HostAction::Read`: a fault-safe host load, the probe's form of a scenario's `touch`.
mod common;
use common::*;
use probe::{BackingKind as K, Exit, HostAction, Mode, ProbeError};

fn read(b: &str, offset: u64) -> HostAction {
    HostAction::Read {
        backing: b.into(),
        offset,
        size: 4,
    }
}

#[test]
fn host_reads_are_allowed_on_vvar_and_never_fail_a_run() {
    if skip("host_reads_are_allowed_on_vvar_and_never_fail_a_run") {
        return;
    }
    for mode in MODES {
        // [vvar] page 0 touched by the host first, as after clock_gettime; page 1 cannot be
        // faulted by the host either: the read is not an error.
        let mut p = one(
            "vvar",
            backing("v", K::Vvar, 2, false, None),
            false,
            vec![r(D + 4)],
            vec![before(read("v", 0)), before(read("v", 0x1000))],
            mode,
        );
        let res = isolated(&p).unwrap();
        assert_eq!(exits(&res), vec![v(1)], "{mode:?}");
        // A read of a hole (after the refill step too) and of PROT_NONE memory.
        p = one(
            "hole",
            backing("d", K::Hole, 1, true, None),
            false,
            vec![r(D)],
            vec![
                before(read("d", 0)),
                after(0, 0, mmap_fixed("d", 1, Some(7))),
                after(0, 0, read("d", 0)),
            ],
            mode,
        );
        let res = isolated(&p).unwrap();
        let want = match mode {
            Mode::Native => vec![Exit::Efault, Exit::Value(7)],
            Mode::Emulated => vec![Exit::MmioRead { gpa: D, len: 4 }, Exit::Value(0)],
        };
        assert_eq!(exits(&res), vec![want], "{mode:?}");
        let res = probe::run(&one(
            "none",
            backing("d", K::ProtNone, 1, false, Some(5)),
            false,
            vec![r(D)],
            vec![before(read("d", 0))],
            mode,
        ))
        .unwrap();
        let want = match mode {
            Mode::Native => vec![Exit::Efault],
            Mode::Emulated => vec![Exit::MmioRead { gpa: D, len: 4 }, Exit::Value(0)],
        };
        assert_eq!(exits(&res), vec![want], "{mode:?}");
    }
}

#[test]
fn host_read_outside_the_backing_is_a_bad_plan() {
    let p = one(
        "bad",
        backing("d", K::AnonPrivate, 1, true, None),
        false,
        vec![r(D)],
        vec![before(read("d", 0x1000))],
        Mode::Native,
    );
    assert!(matches!(probe::run(&p), Err(ProbeError::BadPlan(m)) if m.contains("outside")));
}
