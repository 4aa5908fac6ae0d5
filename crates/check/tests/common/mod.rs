//! Shared helpers: explore a built-in cell with a strategy, and read the result the way
//! `kvmmu` does.
#![allow(dead_code)]

use check::{explore, Options, Report, Strategy};
use model::harness::{expectation_met, CellProgram, Headline};
use model::kvm::PolicyId;
use scenario::{builtin, Scenario};

pub fn sc(name: &str) -> Scenario {
    builtin(name).expect("built-in").expect("parses")
}

pub fn program(name: &str, p: PolicyId) -> CellProgram {
    CellProgram::new(&sc(name), p)
}

pub fn with(name: &str, p: PolicyId, opts: &Options) -> Report {
    explore(&mut program(name, p), opts, &mut |_| {}).expect("explores")
}

/// What `kvmmu run` does: round-robin, 200 random and 200 PCT schedules.
pub fn sample(name: &str, p: PolicyId) -> Report {
    with(
        name,
        p,
        &Options {
            strategy: Strategy::Sample,
            ..Options::default()
        },
    )
}

/// Exhaustive DPOR, optionally under a preemption bound.
pub fn dpor(name: &str, p: PolicyId, bound: Option<u32>) -> Report {
    with(
        name,
        p,
        &Options {
            strategy: Strategy::Dpor,
            preemptions: bound,
            ..Options::default()
        },
    )
}

/// The most serious outcome over the executions (`ok` ... `BUG`).
pub fn headline(r: &Report) -> &'static str {
    Headline::worst(r.headlines()).name()
}

/// Whether `r` meets the scenario's `[expect]` for `p` (`None`: nothing expected).
pub fn meets(name: &str, p: PolicyId, r: &Report) -> Option<bool> {
    let mut o = r.oracles();
    if r.diverged > 0 {
        o.push("no-deadlock");
        o.sort_unstable();
    }
    expectation_met(&sc(name), p, &o, Headline::worst(r.headlines()))
}

/// The built-ins too large for an exhaustive check in a test build (hundreds of thousands
/// of executions per era; `kvmmu check` proves them unbounded in a release build, and CI
/// runs it): tests check them under a preemption bound of 2.
pub const LARGE: [&str; 2] = ["vgpu-retry-vma-replaced", "concurrent-invalidations"];

/// The bound a test explores a built-in under: its own `[check]` bound if it declares one,
/// 2 for the large ones, none otherwise.
pub fn bound_for(name: &str) -> Option<u32> {
    sc(name)
        .check
        .map(|c| c.preemptions)
        .or(LARGE.contains(&name).then_some(2))
}
