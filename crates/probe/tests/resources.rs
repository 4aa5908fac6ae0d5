//! Every mmap, fd and thread is released on every path: successful runs, bad plans, failing
//! host steps, EFAULTs and watchdog timeouts. This file holds a single test so that no other
//! test runs concurrently in its process.
mod common;
use common::*;
use probe::{BackingKind as K, Exit, HostAction, Vcpu};

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Mapping lines, except what glibc and std create and cache on their own schedule: malloc
/// arena heaps (64 MiB-aligned reservations) and cached thread stacks (2 MiB plus a guard
/// page). The probe never maps anything of that shape: its anonymous mappings are a few
/// pages at most.
fn maps() -> usize {
    maps_text()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let anonymous = f.len() < 6;
            let (lo, hi) = f[0].split_once('-').unwrap();
            let lo = u64::from_str_radix(lo, 16).unwrap();
            let size = u64::from_str_radix(hi, 16).unwrap() - lo;
            let runtime =
                size >= 1 << 20 || lo % (64 << 20) == 0 || (f[1] == "---p" && size == 4096);
            !(anonymous && runtime)
        })
        .count()
}

fn maps_text() -> String {
    std::fs::read_to_string("/proc/self/maps").unwrap()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn batch() {
    for mode in MODES {
        for kind in [
            K::AnonPrivate,
            K::AnonShared,
            K::Memfd,
            K::FilePrivate,
            K::FileShared,
            K::Userfault,
            K::ProtNone,
            K::Hole,
        ] {
            let p = one(
                "ok",
                backing("d", kind, 2, true, Some(1)),
                false,
                vec![r(D), w(D + 4, 2), r(D + 0x1000)],
                vec![],
                mode,
            );
            probe::run(&p).unwrap();
        }
        // EFAULT repaired by refill, and the [vvar] slot.
        let host = vec![after(0, 0, mmap_fixed("d", 1, None))];
        probe::run(&one(
            "hole",
            backing("d", K::Hole, 1, true, None),
            false,
            vec![r(D)],
            host,
            mode,
        ))
        .unwrap();
        // Page 0 declared touched: this test process has read the vDSO clock.
        probe::run(&one(
            "vvar",
            backing("v", K::Vvar, 2, false, None),
            false,
            vec![r(D), r(D + 0x1000)],
            vec![before(touch("v", 0))],
            mode,
        ))
        .unwrap();
        // Two vCPUs on one uffd page.
        let mut p = one(
            "2",
            backing("u", K::Userfault, 1, true, None),
            false,
            vec![r(D)],
            vec![],
            mode,
        );
        p.vcpus.push(Vcpu {
            program: vec![r(D)],
            ..Vcpu::default()
        });
        probe::run(&p).unwrap();
        // Bad plans, at validation and at creation time.
        let p = one(
            "bad",
            backing("v", K::Vvar, 999, false, None),
            false,
            vec![r(D)],
            vec![],
            mode,
        );
        assert!(probe::run(&p).is_err());
        let mut p = one(
            "bad",
            backing("d", K::Memfd, 1, true, None),
            false,
            vec![r(D)],
            vec![],
            mode,
        );
        p.memslots[0].gpa = 0;
        assert!(probe::run(&p).is_err());
        // A host step that fails half-way through a run (uffd thread and memfd are live).
        let host = vec![
            after(
                0,
                0,
                HostAction::Munmap {
                    backing: "u".into(),
                    offset_pages: 0,
                    pages: 1,
                },
            ),
            after(0, 0, host_write("u", 0, 1)),
        ];
        let mut p = one(
            "fail",
            backing("u", K::Userfault, 1, true, None),
            false,
            vec![r(D), r(D)],
            host,
            mode,
        );
        p.backings.push(backing("m", K::Memfd, 1, true, None));
        assert!(matches!(probe::run(&p), Err(probe::ProbeError::Sys(_))));
        // Watchdog timeouts.
        assert_eq!(probe::testing::spin(mode, 30).unwrap(), Exit::Timeout);
        // Timings (uffd handler, fresh VMs for vvar).
        probe::measure_first_touch(K::Userfault, 4, mode).unwrap();
        probe::measure_first_touch(K::Vvar, 2, mode).unwrap();
    }
}

fn leftover_temp_files() -> usize {
    let prefix = format!("kvmmu-probe-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        })
        .count()
}

#[test]
fn runs_release_every_fd_mapping_and_thread() {
    if skip("runs_release_every_fd_mapping_and_thread") {
        return;
    }
    // Warm-up: lets glibc/std set up their caches (thread stacks, malloc arenas) first.
    batch();
    let before = (fds(), maps(), threads());
    let mt = maps_text();
    for _ in 0..3 {
        batch();
    }
    let after = (fds(), maps(), threads());
    if before != after {
        // Say what changed, for whoever debugs a failure.
        let (b, now) = (mt.lines().collect::<Vec<_>>(), maps_text());
        for l in now.lines().filter(|l| !b.contains(l)) {
            eprintln!("new mapping: {l}");
        }
    }
    assert_eq!(
        before, after,
        "(fds, maps lines, threads) before vs after 3 batches"
    );
    assert_eq!(leftover_temp_files(), 0);
}
