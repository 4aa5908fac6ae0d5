//! A checker runs millions of executions: each must free what it built. Alone in its test
//! binary, so the resident set measured is this test's.

mod common;

use check::{Options, Strategy};
use common::with;
use model::kvm::PolicyId;

/// Resident set size in KiB.
fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").expect("procfs");
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .expect("statm resident field");
    pages * 4
}

#[test]
fn memory_after_100k_executions_stays_within_a_few_mb_of_after_1k() {
    let run = |n: u64| {
        // Random schedules over a scenario that builds drivers, vmas with vm_ops, a VM and a
        // userfaultfd-free device path: the shape that used to leak every execution.
        with(
            "vgpu-reset-race",
            PolicyId::Linux6_13,
            &Options {
                strategy: Strategy::Random,
                samples: n,
                counterexamples: false,
                ..Options::default()
            },
        )
    };
    let r = run(1_000);
    assert_eq!(r.executions, 1_000);
    let after_1k = rss_kib();
    let r = run(100_000);
    assert_eq!(r.executions, 100_000);
    let after_100k = rss_kib();
    assert!(
        after_100k <= after_1k + 4 * 1024,
        "resident set grew from {after_1k} KiB to {after_100k} KiB"
    );
}
