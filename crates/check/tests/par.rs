//! Threads and shards explore exactly what one thread does.

mod common;

use check::{combine, explore, explore_part, Level, Options, Part, Report};
use common::{program, sc};
use model::harness::CellProgram;
use model::kvm::PolicyId;
use world::Program;

/// Small enough for a test build, split (a low `split_above`) so that tasks exist.
const CELLS: [(&str, PolicyId); 4] = [
    ("vgpu-reset-race", PolicyId::Linux4_8),
    ("invalidate-during-fault", PolicyId::Linux6_13),
    ("nested-pfnmap", PolicyId::Linux4_8),
    ("two-vcpus-dontneed", PolicyId::Linux6_13),
];

fn opts(name: &str) -> Options {
    Options {
        split_above: 4,
        preemptions: sc(name).check.map(|c| c.preemptions.min(2)),
        ..Options::default()
    }
}

fn part(name: &str, p: PolicyId, jobs: usize, part: Part) -> Vec<Level> {
    let s = sc(name);
    let make = || Box::new(CellProgram::new(&s, p)) as Box<dyn Program>;
    explore_part(&make, &opts(name), jobs, part, &mut |_| {}).expect("explores")
}

/// Everything a result says, but time.
fn key(r: &Report) -> String {
    let found: Vec<String> = r
        .found
        .iter()
        .map(|f| {
            let ce = f.counterexample.as_ref().expect("counterexample");
            format!(
                "{} {} {} {:?}",
                f.oracle, f.executions, f.detail, ce.schedule
            )
        })
        .collect();
    format!(
        "{} {} {} {} {} {:?} {:?} {:?} {:?}",
        r.executions,
        r.finished,
        r.redundant,
        r.diverged,
        r.max_depth,
        r.cuts,
        r.outcomes,
        r.observed,
        found
    )
}

#[test]
fn two_threads_explore_exactly_what_one_does() {
    for (name, p) in CELLS {
        let one = explore(&mut program(name, p), &opts(name), &mut |_| {}).expect("explores");
        assert!(one.executions > 4, "{name}: not split");
        for jobs in [1, 2, 3] {
            let levels = part(name, p, jobs, Part::ALL);
            let r = combine(vec![levels]).expect("a level");
            assert_eq!(key(&r), key(&one), "{name} / {p} with {jobs} threads");
        }
    }
}

#[test]
fn shards_merged_equal_one_process() {
    for (name, p) in CELLS {
        let one = explore(&mut program(name, p), &opts(name), &mut |_| {}).expect("explores");
        for n in [1usize, 3, 4, 7] {
            let parts: Vec<Vec<Level>> = (0..n)
                .map(|i| {
                    part(
                        name,
                        p,
                        1,
                        Part {
                            index: i,
                            count: n,
                            offset: 5,
                        },
                    )
                })
                .collect();
            // Each shard did only its share.
            if n > 1 {
                let most = parts
                    .iter()
                    .map(|l| l.iter().map(|x| x.report.executions).sum::<u64>())
                    .max()
                    .unwrap();
                assert!(most < one.executions, "{name}: shard did everything");
            }
            let r = combine(parts).expect("levels");
            assert_eq!(r.executions, one.executions, "{name} / {p}, {n} shards");
            assert_eq!(r.complete(), one.complete());
            assert_eq!(r.oracles(), one.oracles());
            assert_eq!(r.outcomes, one.outcomes);
            assert_eq!(r.cuts, one.cuts);
        }
    }
}
