//! Running a (scenario, policy) cell under several schedules.

use super::build::build;
use super::oracle::{Checker, Oracle, Violation};
use crate::kvm::pin::PinOutcome;
use crate::kvm::vcpu::Outcome;
use crate::kvm::PolicyId;
use scenario::Scenario;
use std::collections::BTreeSet;
use std::ops::ControlFlow;
use world::{FirstEnabled, Pct, Random, Replay, RoundRobin, Scheduler, Status, Trace};

/// Which schedule a run used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    Sequential,
    RoundRobin,
    Random(u64),
    /// Probabilistic concurrency testing with `depth - 1` priority change points over a run
    /// of about `steps` steps.
    Pct {
        seed: u64,
        depth: u32,
        steps: u64,
    },
    Replay(Vec<usize>),
    /// Deterministic, in the order a VMM imposes when it runs host steps that are not
    /// sequenced after a guest access (`after`) before it starts the vCPUs, as the real-KVM
    /// probe does: every host-side actor (host threads, uffd handlers) runs before any
    /// guest-side actor (vCPU, nested map) whenever it can; otherwise as `Sequential`.
    VcpusLast,
}

impl std::fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScheduleKind::Sequential => f.write_str("sequential"),
            ScheduleKind::RoundRobin => f.write_str("round-robin"),
            ScheduleKind::Random(s) => write!(f, "random seed {s}"),
            ScheduleKind::Pct { seed, depth, .. } => write!(f, "pct depth {depth} seed {seed}"),
            ScheduleKind::Replay(_) => f.write_str("replay"),
            ScheduleKind::VcpusLast => f.write_str("vcpus-last"),
        }
    }
}

/// One run of a cell.
#[derive(Clone, Debug)]
pub struct SingleRun {
    pub schedule: ScheduleKind,
    pub status: Status,
    pub violations: Vec<Violation>,
    /// Per vCPU, per access: `"read32 0x10000: 0x1"`.
    pub outcomes: Vec<Vec<String>>,
    pub raw_outcomes: Vec<Vec<Vec<Outcome>>>,
    pub nested: Vec<String>,
    pub trace: Trace,
    pub choices: Vec<usize>,
    pub steps: u64,
    /// Page references KVM took during the run (0: a reference-free mapping).
    pub refs_taken: u64,
    /// userfaultfd messages the handlers read, in order: (mapping, page index, write).
    pub uffd: Vec<(String, u64, bool)>,
}

/// [`ScheduleKind::VcpusLast`]: the first enabled host-side actor, else the first enabled.
struct VcpusLast {
    guests: Vec<world::ActorId>,
}

impl Scheduler for VcpusLast {
    fn pick(&mut self, d: &world::Decision) -> Option<world::ActorId> {
        d.enabled
            .iter()
            .copied()
            .find(|a| !self.guests.contains(a))
            .or_else(|| d.enabled.first().copied())
    }
}

/// Run one schedule.
pub fn run_once(
    sc: &Scenario,
    policy: PolicyId,
    kind: ScheduleKind,
    tracing: bool,
    max_steps: u64,
) -> Result<SingleRun, String> {
    let (mut w, sys) = build(sc, policy)?;
    w.set_tracing(tracing);
    w.set_max_steps(max_steps);
    let mut sched: Box<dyn Scheduler> = match &kind {
        ScheduleKind::Sequential => Box::new(FirstEnabled),
        ScheduleKind::RoundRobin => Box::new(RoundRobin),
        ScheduleKind::Random(s) => Box::new(Random::new(*s)),
        ScheduleKind::Pct { seed, depth, steps } => Box::new(Pct::new(*seed, *depth, *steps)),
        ScheduleKind::Replay(c) => Box::new(Replay::new(c.clone())),
        ScheduleKind::VcpusLast => Box::new(VcpusLast {
            guests: sys.guest_actors.clone(),
        }),
    };
    let mut checker = Checker::default();
    let mut step = 0u64;
    let r = w.run(sched.as_mut(), &mut || {
        checker.check_step(&sys, step);
        step += 1;
        ControlFlow::Continue(())
    });
    match &r.status {
        Status::Completed => checker.check_end(&sys, r.steps),
        Status::Bug { actor, what } => checker.violations.push(Violation {
            oracle: Oracle::NoHostBug,
            step: r.steps,
            detail: format!("{actor}: {what}"),
        }),
        Status::Deadlock(b) => checker.violations.push(Violation {
            oracle: Oracle::NoDeadlock,
            step: r.steps,
            detail: b
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        }),
        Status::StepLimit => checker.violations.push(Violation {
            oracle: Oracle::NoDeadlock,
            step: r.steps,
            detail: format!("no progress within {max_steps} steps (livelock)"),
        }),
        Status::Audit { actor, detail } => {
            return Err(format!("audit: {actor}: {detail}"));
        }
        Status::Stopped(_) | Status::Diverged { .. } => {}
    }
    let bug = matches!(r.status, Status::Bug { .. });
    let mut outcomes = Vec::new();
    let mut raw = Vec::new();
    for v in &sys.vcpus {
        let recs = v.records.borrow();
        let mut per = Vec::new();
        let mut per_raw = Vec::new();
        for (i, op) in v.program.iter().enumerate() {
            let atts = recs.get(i).map(|r| r.attempts.clone()).unwrap_or_default();
            let text = if atts.is_empty() {
                if bug && i == recs.len().saturating_sub(1) {
                    "BUG".to_string()
                } else {
                    "not run".to_string()
                }
            } else {
                atts.iter()
                    .map(|o| o.to_string())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            };
            per.push(format!("{op}: {text}"));
            per_raw.push(atts);
        }
        outcomes.push(per);
        raw.push(per_raw);
    }
    let nested = sys
        .nested
        .iter()
        .map(|n| {
            n.borrow()
                .as_ref()
                .map_or("not finished".to_string(), PinOutcome::to_string)
        })
        .collect();
    let mut uffd: Vec<(u64, String, u64, bool)> = Vec::new();
    for m in &sys.mappings {
        if let super::Backend::Userfault(u) = &m.backend {
            uffd.extend(
                u.accesses
                    .log()
                    .into_iter()
                    .map(|r| (r.step, m.name.clone(), r.page, r.write)),
            );
        }
    }
    uffd.sort_by_key(|e| e.0);
    Ok(SingleRun {
        uffd: uffd.into_iter().map(|(_, n, p, w)| (n, p, w)).collect(),
        schedule: kind,
        status: r.status,
        violations: checker.violations,
        outcomes,
        raw_outcomes: raw,
        nested,
        trace: r.trace,
        choices: r.schedule,
        steps: r.steps,
        refs_taken: sys.kvm.refs_taken(),
    })
}

/// How a cell is explored.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub seed: u64,
    /// Seeded random schedules in addition to round-robin.
    pub schedules: usize,
    pub tracing: bool,
    pub max_steps: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            seed: 1,
            schedules: 200,
            tracing: false,
            max_steps: 20_000,
        }
    }
}

/// The summary of a (scenario, policy) cell over all its schedules.
#[derive(Clone, Debug)]
pub struct CellResult {
    pub scenario: String,
    pub policy: PolicyId,
    /// First violation of each oracle, with the run that showed it.
    pub violations: Vec<(Violation, ScheduleKind)>,
    /// Per vCPU access: the distinct outcomes seen across schedules.
    pub outcomes: Vec<Vec<String>>,
    pub nested: Vec<String>,
    /// `ok`, `emulated`, `MMIO`, `refused`, `EFAULT`, `BUG`, `DEADLOCK`.
    pub outcome: String,
    pub schedules: usize,
    /// The counterexample run (first violating schedule), else the round-robin run.
    pub witness: SingleRun,
    /// `Some(false)` when the scenario declares an expectation this cell does not meet.
    pub matches: Option<bool>,
}

impl CellResult {
    pub fn oracle_names(&self) -> Vec<&'static str> {
        let set: BTreeSet<Oracle> = self.violations.iter().map(|(v, _)| v.oracle).collect();
        set.into_iter().map(Oracle::name).collect()
    }

    /// The matrix cell: violated oracles (BUG and DEADLOCK by those words), else the outcome.
    pub fn cell(&self) -> String {
        let names = self.oracle_names();
        if names.is_empty() {
            return self.outcome.clone();
        }
        names
            .iter()
            .map(|n| match *n {
                "no-host-bug" => "BUG",
                "no-deadlock" => "DEADLOCK",
                n => n,
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn headline(runs: &[SingleRun]) -> String {
    let any = |f: &dyn Fn(&SingleRun) -> bool| runs.iter().any(f);
    if any(&|r| matches!(r.status, Status::Bug { .. })) {
        return "BUG".into();
    }
    if any(&|r| matches!(r.status, Status::Deadlock(_) | Status::StepLimit)) {
        return "DEADLOCK".into();
    }
    let has = |p: &dyn Fn(&Outcome) -> bool| {
        runs.iter()
            .any(|r| r.raw_outcomes.iter().flatten().flatten().any(p))
    };
    if has(&|o| *o == Outcome::Efault) {
        return "EFAULT".into();
    }
    if any(&|r| r.nested.iter().any(|n| n.starts_with("map refused"))) {
        return "refused".into();
    }
    if has(&|o| matches!(o, Outcome::MmioRead { .. } | Outcome::MmioWrite { .. })) {
        return "MMIO".into();
    }
    if has(&|o| *o == Outcome::Emulated) {
        return "emulated".into();
    }
    "ok".into()
}

/// The distinct values, in first-seen order, joined by ` | `.
fn distinct<'a>(values: impl Iterator<Item = &'a String>) -> String {
    let mut seen: Vec<&String> = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen.iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Explore a cell: round-robin, then `opts.schedules` seeded uniformly random schedules and
/// as many PCT schedules (depth 2 and 3, change points spread over the round-robin run's
/// length) — uniform choice rarely lands a long host operation inside a one-step window,
/// PCT does.
pub fn run_cell(sc: &Scenario, policy: PolicyId, opts: &RunOptions) -> Result<CellResult, String> {
    let mut runs = vec![run_once(
        sc,
        policy,
        ScheduleKind::RoundRobin,
        false,
        opts.max_steps,
    )?];
    let steps = runs[0].steps;
    let mut kinds = Vec::new();
    for i in 0..opts.schedules as u64 {
        let seed = opts.seed.wrapping_mul(1_000_003).wrapping_add(i);
        kinds.push(ScheduleKind::Random(seed));
        kinds.push(ScheduleKind::Pct {
            seed,
            depth: 2 + (i % 2) as u32,
            steps,
        });
    }
    for k in kinds {
        runs.push(run_once(sc, policy, k, false, opts.max_steps)?);
    }
    let mut violations: Vec<(Violation, ScheduleKind)> = Vec::new();
    for r in &runs {
        for v in &r.violations {
            if !violations.iter().any(|(x, _)| x.oracle == v.oracle) {
                violations.push((v.clone(), r.schedule.clone()));
            }
        }
    }
    let outcomes: Vec<Vec<String>> = (0..runs[0].outcomes.len())
        .map(|v| {
            (0..runs[0].outcomes[v].len())
                .map(|i| distinct(runs.iter().map(|r| &r.outcomes[v][i])))
                .collect()
        })
        .collect();
    let nested: Vec<String> = (0..runs[0].nested.len())
        .map(|i| distinct(runs.iter().map(|r| &r.nested[i])))
        .collect();
    let outcome = headline(&runs);
    let witness_kind = violations
        .first()
        .map_or(ScheduleKind::RoundRobin, |(_, k)| k.clone());
    // Runs are deterministic: rerun the witness only to record its trace.
    let witness = if opts.tracing {
        run_once(sc, policy, witness_kind, true, opts.max_steps)?
    } else {
        runs.iter()
            .find(|r| r.schedule == witness_kind)
            .expect("the witness was run")
            .clone()
    };
    let mut cell = CellResult {
        scenario: sc.name.clone(),
        policy,
        violations,
        outcomes,
        nested,
        outcome,
        schedules: runs.len(),
        witness,
        matches: None,
    };
    if let Some(e) = sc.expect.get(policy.name()) {
        let want: BTreeSet<&str> = e.violations.iter().map(String::as_str).collect();
        let got: BTreeSet<&str> = cell.oracle_names().into_iter().collect();
        let outcome_ok = e.outcome.as_ref().is_none_or(|o| *o == cell.outcome);
        cell.matches = Some(want == got && outcome_ok);
    }
    Ok(cell)
}
