//! The checker's acceptance points, on the built-in scenarios: exhaustive proofs for the
//! newest era, every violation of the older eras found by exploration alone with short
//! counterexamples, the mutants caught, DPOR against plain DFS, replays, determinism.

mod common;

use check::{estimate_dfs, explore, replay, Options, Replayed, Report, Strategy};
use common::{bound_for, dpor, meets, program, sample, with};
use model::kvm::{Mutant, PolicyId};
use scenario::BUILTIN;
use std::collections::BTreeSet;

#[test]
fn dpor_proves_linux_6_13_clean_on_every_built_in_scenario() {
    for (name, _) in BUILTIN {
        let r = dpor(name, PolicyId::Linux6_13, bound_for(name));
        if *name == "nested-pfnmap-unsafe" {
            // kvm.allow_unsafe_mappings: the administrator opted out of safety.
            assert_eq!(r.oracles(), vec!["no-freed-frame"], "{name}");
            continue;
        }
        assert!(r.found.is_empty(), "{name}: {:?}", r.found);
        assert_eq!(r.diverged, 0, "{name}");
        if bound_for(name).is_none() {
            assert!(r.complete(), "{name}: cut by {:?}", r.cuts);
        }
    }
}

#[test]
fn exploration_finds_every_violation_the_run_matrix_shows() {
    for (name, _) in BUILTIN {
        for p in PolicyId::ALL {
            let d = dpor(name, p, bound_for(name));
            let s = sample(name, p);
            let (found, sampled): (BTreeSet<_>, BTreeSet<_>) = (
                d.oracles().into_iter().collect(),
                s.oracles().into_iter().collect(),
            );
            assert!(
                sampled.is_subset(&found),
                "{name} / {p}: sampling found {sampled:?}, exploration only {found:?}"
            );
            assert_ne!(
                meets(name, p, &d),
                Some(false),
                "{name} / {p}: exploration found {found:?}"
            );
            // Every counterexample replays.
            for f in &d.found {
                let ce = f.counterexample.as_ref().expect("a counterexample");
                assert!(ce.confirmed, "{name} / {p} / {}", f.oracle);
            }
        }
    }
}

fn preemptions(r: &Report, oracle: &str) -> u32 {
    r.found
        .iter()
        .find(|f| f.oracle == oracle)
        .unwrap_or_else(|| panic!("{oracle} not found: {:?}", r.oracles()))
        .counterexample
        .as_ref()
        .expect("counterexample")
        .preemptions
}

#[test]
fn race_dependent_violations_have_counterexamples_of_at_most_two_preemptions() {
    let r = dpor("vgpu-reset-race", PolicyId::Linux4_8, None);
    assert!(r.complete());
    assert!(preemptions(&r, "refcount-sane") <= 2);
    let r = dpor("nested-pfnmap", PolicyId::Linux4_8, None);
    assert!(r.complete());
    for o in ["refcount-sane", "no-freed-frame"] {
        assert!(preemptions(&r, o) <= 2, "{o}");
    }
    // The counterexample is the reset landing between follow_pfn and kvm_get_pfn.
    let f = &dpor("vgpu-reset-race", PolicyId::Linux4_8, None).found[0];
    assert!(
        f.detail.contains("get_page on refcount 0 (free page)"),
        "{}",
        f.detail
    );
}

#[test]
fn every_mutant_is_caught_with_at_most_two_preemptions() {
    for (m, name) in [
        (Mutant::NoLockedRecheck, "vgpu-reset-race"),
        (Mutant::LateSeqSnapshot, "vgpu-reset-race"),
        (Mutant::IgnoreUnlocked, "vgpu-retry-vma-replaced"),
        (Mutant::NoSlotFlush, "memslot-delete"),
        (Mutant::NoSlotFlush, "memslot-move"),
        (Mutant::NoSlotFlush, "memslot-recreate"),
        (Mutant::NoSlotFlush, "memslot-readonly-toggle"),
        (Mutant::NoSrcuSync, "memslot-delete"),
        (Mutant::NoSrcuSync, "memslot-move"),
    ] {
        let r = dpor(name, PolicyId::Mutant(m), Some(2));
        assert!(!r.found.is_empty(), "{m:?} not caught on {name}");
        for f in &r.found {
            let ce = f.counterexample.as_ref().expect("counterexample");
            assert!(ce.preemptions <= 2, "{m:?}: {} preemptions", ce.preemptions);
            assert!(ce.confirmed);
        }
        // The same scenario is clean on the real era.
        assert!(dpor(name, PolicyId::Linux6_13, Some(2)).found.is_empty());
    }
    let r = dpor(
        "vgpu-retry-vma-replaced",
        PolicyId::Mutant(Mutant::IgnoreUnlocked),
        Some(2),
    );
    assert!(
        r.found[0].detail.contains("use-after-free of vma"),
        "{:?}",
        r.found
    );
}

/// The outcome classes (headline, oracles, end-state fingerprint) of an exploration.
fn outcomes(r: &Report) -> BTreeSet<(world::Headline, Vec<&'static str>, u64)> {
    r.outcomes
        .keys()
        .map(|o| (o.headline, o.oracles.clone(), o.fingerprint))
        .collect()
}

#[test]
fn dpor_reaches_exactly_the_outcomes_plain_dfs_reaches() {
    // Every cell whose plain-dfs tree has at most a million executions. Knuth's estimate
    // (1,000 probes) picks them without running the millions of the others to their cap;
    // a cell it misjudges runs into the cap and is skipped as incomplete.
    const CAP: u64 = 1_000_000;
    let mut compared = Vec::new();
    for (name, _) in BUILTIN {
        for p in PolicyId::ALL {
            let e = estimate_dfs(&mut program(name, p), 1_000, 1).expect("estimates");
            if e.mean > 2.0 * CAP as f64 {
                continue;
            }
            let dfs = with(
                name,
                p,
                &Options {
                    strategy: Strategy::Dfs,
                    max_executions: Some(CAP),
                    counterexamples: false,
                    ..Options::default()
                },
            );
            if !dfs.complete() {
                continue;
            }
            let d = dpor(name, p, None);
            assert!(d.complete(), "{name} / {p}");
            assert_eq!(
                outcomes(&d),
                outcomes(&dfs),
                "{name} / {p}: dpor and dfs disagree"
            );
            assert!(d.executions <= dfs.executions, "{name} / {p}");
            if dfs.executions > 1 {
                compared.push((name, p, dfs.executions, d.executions));
            }
        }
    }
    // Not vacuous: cells with real interleavings were compared, large ones among them.
    assert!(compared.len() >= 20, "{compared:?}");
    assert!(
        compared
            .iter()
            .any(|c| *c.0 == "nested-pfnmap" && c.2 > 100_000),
        "{compared:?}"
    );
    assert!(
        compared.iter().any(|c| c.2 >= 10 * c.3),
        "no tenfold reduction anywhere: {compared:?}"
    );
}

#[test]
fn a_counterexample_replays_to_the_same_failure() {
    let r = dpor("vgpu-reset-race", PolicyId::Linux4_8, None);
    let ce = r.found[0].counterexample.clone().expect("counterexample");
    let mut prog = program("vgpu-reset-race", PolicyId::Linux4_8);
    match replay(&mut prog, &ce.schedule, ce.oracle).expect("replays") {
        Replayed::Failed(c) => {
            assert_eq!(c.failing_step, ce.failing_step);
            assert_eq!(c.detail, ce.detail);
            assert_eq!(c.trace.to_string(), ce.trace.to_string());
        }
        other => panic!("did not reproduce: {other:?}"),
    }
    // On the fixed era the same schedule either diverges or holds.
    let mut fixed = program("vgpu-reset-race", PolicyId::Linux5_13);
    assert!(!matches!(
        replay(&mut fixed, &ce.schedule, ce.oracle).expect("replays"),
        Replayed::Failed(_)
    ));
}

#[test]
fn seeded_pct_and_random_are_deterministic() {
    for strategy in [Strategy::Pct, Strategy::Random] {
        let opts = Options {
            strategy,
            samples: 300,
            seed: 7,
            ..Options::default()
        };
        let run = || {
            let r = with("vgpu-reset-race", PolicyId::Linux4_8, &opts);
            let cx: Vec<Vec<usize>> = r
                .found
                .iter()
                .filter_map(|f| f.counterexample.as_ref().map(|c| c.schedule.clone()))
                .collect();
            (r.executions, r.oracles(), cx, r.outcomes)
        };
        assert_eq!(run(), run(), "{strategy}");
    }
}

#[test]
fn audit_finds_no_undeclared_access_in_any_built_in_scenario() {
    for (name, _) in BUILTIN {
        for p in PolicyId::ALL.into_iter().chain(PolicyId::MUTANTS) {
            for opts in [
                Options {
                    strategy: Strategy::Sample,
                    samples: 25,
                    counterexamples: false,
                    ..Options::default()
                },
                Options {
                    strategy: Strategy::Dpor,
                    preemptions: Some(1),
                    counterexamples: false,
                    max_executions: Some(3_000),
                    ..Options::default()
                },
            ] {
                let mut prog = program(name, p);
                prog.build.audit = true;
                if let Err(e) = explore(&mut prog, &opts, &mut |_| {}) {
                    panic!("{name} / {p} ({}): {e}", opts.strategy);
                }
            }
        }
    }
}

#[test]
fn knuth_estimate_agrees_with_the_dfs_count() {
    // nested-pfnmap / linux-6.13: a balanced tree of about 100,000 dfs executions.
    let dfs = with(
        "nested-pfnmap",
        PolicyId::Linux6_13,
        &Options {
            strategy: Strategy::Dfs,
            counterexamples: false,
            ..Options::default()
        },
    );
    assert!(dfs.complete());
    let e = estimate_dfs(&mut program("nested-pfnmap", PolicyId::Linux6_13), 5_000, 7)
        .expect("estimates");
    let n = dfs.executions as f64;
    assert!(
        (e.mean - n).abs() < 4.0 * e.std_error.max(0.02 * n),
        "estimate {e:?} vs dfs {n}"
    );
    // A single-actor cell has exactly one schedule, and the estimate knows it.
    let e1 = estimate_dfs(&mut program("vfio-bar", PolicyId::Linux6_13), 10, 1).unwrap();
    assert_eq!((e1.mean, e1.std_error), (1.0, 0.0));
}
