//! Issue 10: right before the first KVM_RUN, no page of a backing may be present in the
//! probe's page tables unless the scenario touched it. The probe checks it on every run
//! (`/proc/self/pagemap` for its own memory; a write by a throwaway guest for `[vvar]`, which
//! pagemap cannot see); these tests show the check passes on clean runs and catches the two
//! ways the probe could touch a page behind the guest's back.
//!
//! To see the vDSO-clock test fail the way the original bug did, put
//! `std::hint::black_box(std::time::Instant::now());` at the top of `run_locked` in
//! crates/probe/src/run.rs (or use `Instant` in the watchdog again): every fresh-process run
//! over an untouched `[vvar]` page then fails with "page 0 of backing 'v' is present".
mod common;
use common::*;
use probe::{BackingKind as K, Mode, ProbeError, ProbeResult};

fn present(r: Result<ProbeResult, ProbeError>, backing: &str, page: u64) {
    match r {
        Err(ProbeError::Invalid(m)) => assert!(
            m.contains(&format!("page {page} of backing '{backing}' is present")),
            "{m}"
        ),
        other => panic!("expected an invalid run, got {other:?}"),
    }
}

/// Every own-memory kind, filled or not, with and without a declared touch: clean runs pass
/// the check; an undeclared read of every page right before KVM_RUN fails it.
#[test]
fn an_undeclared_touch_of_own_memory_makes_the_run_invalid() {
    if skip("an_undeclared_touch_of_own_memory_makes_the_run_invalid") {
        return;
    }
    for kind in [
        K::AnonPrivate,
        K::AnonShared,
        K::Memfd,
        K::FilePrivate,
        K::FileShared,
        K::Userfault,
    ] {
        // Unfilled, page 17 touched by the scenario: clean. (Files are filled on disk with
        // write(2), which maps nothing; a read of a file or shmem page may map its 16-page
        // fault-around window, 16..20 here, never page 0.)
        let fill = matches!(kind, K::FilePrivate | K::FileShared).then_some(7);
        let mut p = one(
            "clean",
            backing("d", kind, 20, true, fill),
            false,
            vec![r(D)],
            vec![before(touch("d", 17))],
            Mode::Native,
        );
        probe::run(&p).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        p.inject.touch_behind_back = true;
        present(probe::run(&p), "d", 0);
    }
}

/// A fresh process over an untouched `[vvar]` passes; the same run with one vDSO clock read
/// before KVM_RUN (`Instant::now()`) is refused, naming page 0.
#[test]
fn a_vdso_clock_read_before_kvm_run_makes_the_run_invalid() {
    if skip("a_vdso_clock_read_before_kvm_run_makes_the_run_invalid") {
        return;
    }
    let mut p = one(
        "vvar",
        backing("v", K::Vvar, 4, false, None),
        false,
        vec![r(D + 0x2000)],
        vec![],
        Mode::Native,
    );
    isolated(&p).unwrap();
    p.inject.read_vdso_clock = true;
    present(isolated(&p), "v", 0);
    // In this test process the clock has been read: the same plan is refused in-process.
    p.inject.read_vdso_clock = false;
    present(probe::run(&p), "v", 0);
}
