//! The watchdog, the MMU description, and first-touch timings (realkvm.md §10).
mod common;
use common::*;
use probe::{BackingKind as K, Exit, Mode};
use std::time::{Duration, Instant};

#[test]
fn spinning_guest_times_out() {
    if skip("spinning_guest_times_out") {
        return;
    }
    for mode in MODES {
        let t = Instant::now();
        assert_eq!(
            probe::testing::spin(mode, 200).unwrap(),
            Exit::Timeout,
            "{mode:?}"
        );
        let el = t.elapsed();
        assert!(
            el >= Duration::from_millis(200) && el < Duration::from_secs(5),
            "{el:?}"
        );
    }
}

#[test]
fn mmu_is_described() {
    if skip("mmu_is_described") {
        return;
    }
    let m = probe::mmu_description();
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        assert!(m.starts_with("shadow (kvm_pvm, tdp_mmu="), "{m}");
    }
    let p = one(
        "m",
        backing("d", K::AnonPrivate, 1, true, None),
        false,
        vec![r(D)],
        vec![],
        Mode::Native,
    );
    assert_eq!(probe::run(&p).unwrap().mmu, m);
}

/// timing.c: first touch vs mapped. Only sanity and the large uffd gap (≈60 µs) are asserted:
/// the host is noisy.
#[test]
fn first_touch_timings() {
    if skip("first_touch_timings") {
        return;
    }
    for kind in [K::AnonPrivate, K::Memfd, K::Userfault, K::FilePrivate] {
        let t = probe::measure_first_touch(kind, 16, Mode::Native).unwrap();
        println!(
            "{kind:?}: first {:?} mapped {:?} rt {:?} cost {:.2} us",
            t.first_touch, t.mapped, t.round_trip, t.first_touch_cost_us
        );
        assert_eq!((t.first_touch.n, t.mapped.n), (16, 16));
        assert!(t.first_touch.min_us > 0.0 && t.mapped.median_us > 0.0 && t.round_trip.n >= 64);
        if kind == K::Userfault {
            assert!(
                t.first_touch_cost_us > 5.0,
                "uffd first touch should cost tens of µs: {t:?}"
            );
        }
    }
    let t = probe::measure_first_touch(K::Vvar, 4, Mode::Native).unwrap();
    assert_eq!(t.first_touch.n, 4);
    let t = probe::measure_first_touch(K::AnonPrivate, 4, Mode::Emulated).unwrap();
    assert_eq!(t.first_touch.n, 4);
    assert!(matches!(
        probe::measure_first_touch(K::Hole, 1, Mode::Native),
        Err(probe::ProbeError::BadPlan(_))
    ));
}
