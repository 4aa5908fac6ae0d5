//! Running a (scenario, policy) cell under several schedules.

use super::monitor::{CellMonitor, Headline};
use super::oracle::{Oracle, Violation};
use crate::kvm::vcpu::Outcome;
use crate::kvm::PolicyId;
use scenario::Scenario;
use std::collections::BTreeSet;
use std::ops::ControlFlow;

/// Whether a cell that violated `oracles` (sorted names) with headline `headline` meets the
/// scenario's `[expect]` for `policy`; `None` when the scenario expects nothing of it.
pub fn expectation_met(
    sc: &Scenario,
    policy: PolicyId,
    oracles: &[&str],
    headline: Headline,
) -> Option<bool> {
    let e = sc.expect.get(policy.name())?;
    let want: BTreeSet<&str> = e.violations.iter().map(String::as_str).collect();
    let got: BTreeSet<&str> = oracles.iter().copied().collect();
    let outcome_ok = e.outcome.as_ref().is_none_or(|o| o == headline.name());
    Some(want == got && outcome_ok)
}
use world::{FirstEnabled, Monitor, Pct, Random, Replay, RoundRobin, Scheduler, Status, Trace};

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
    run_once_with(sc, policy, kind, tracing, max_steps, &Default::default())
}

/// [`run_once`] with build options (e.g. the emulated guest).
pub fn run_once_with(
    sc: &Scenario,
    policy: PolicyId,
    kind: ScheduleKind,
    tracing: bool,
    max_steps: u64,
    opts: &super::build::BuildOptions,
) -> Result<SingleRun, String> {
    let (mut w, sys) = super::build::build_with(sc, policy, opts)?;
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
    let mut mon = CellMonitor::new(sys);
    let mut sink = Vec::new();
    let mut step = 0u64;
    let r = w.run_observed(sched.as_mut(), &mut |rec| {
        mon.step(rec, step, &mut sink);
        step += 1;
        ControlFlow::Continue(())
    });
    if let Status::Audit { actor, detail } = &r.status {
        return Err(format!("audit: {actor}: {detail}"));
    }
    mon.end(&r.status, r.steps, &mut sink);
    if r.status == Status::StepLimit {
        mon.checker.violations.push(Violation {
            oracle: Oracle::NoDeadlock,
            step: r.steps,
            detail: format!("no progress within {max_steps} steps (livelock)"),
        });
    }
    let (outcomes, raw_outcomes) = mon.accesses();
    Ok(SingleRun {
        uffd: mon.uffd(),
        nested: mon.nested(),
        schedule: kind,
        status: r.status,
        violations: mon.checker.violations.clone(),
        outcomes,
        raw_outcomes,
        trace: r.trace,
        choices: r.schedule,
        steps: r.steps,
        refs_taken: mon.sys.kvm.refs_taken(),
    })
}

/// The `[[seen]]` entries of `sc` for `policy` that `observed` (per observed item, the
/// distinct values of the executions, as [`CellMonitor`] formats them: the accesses in vCPU
/// and program order, the nested maps, then the userfaultfd item) breaks, one sentence each.
pub fn seen_mismatches(sc: &Scenario, policy: PolicyId, observed: &[Vec<String>]) -> Vec<String> {
    let accesses: usize = sc.vcpus.iter().map(|v| v.program.len()).sum();
    let has_uffd = sc
        .mappings
        .iter()
        .any(|m| m.backing == scenario::Backing::Userfault);
    let mut out = Vec::new();
    for s in sc.seen.iter().filter(|s| s.applies(policy.name())) {
        let (index, name) = match &s.item {
            scenario::SeenItem::Access { vcpu, index } => (
                sc.vcpus[..*vcpu]
                    .iter()
                    .map(|v| v.program.len())
                    .sum::<usize>()
                    + index,
                format!(
                    "vcpu{vcpu} access {index} ({})",
                    sc.vcpus[*vcpu].program[*index]
                ),
            ),
            scenario::SeenItem::Uffd => (accesses + sc.nested.len(), "userfaultfd messages".into()),
            scenario::SeenItem::Peek(p) => {
                let k = sc.peeks().iter().position(|q| *q == p).unwrap_or(0);
                (
                    accesses + sc.nested.len() + usize::from(has_uffd) + k,
                    p.to_string(),
                )
            }
            scenario::SeenItem::HostStep(k) => {
                let steps = super::build::memslot_steps(sc);
                let i = steps.iter().position(|(j, _)| j == k).unwrap_or(0);
                (
                    accesses + sc.nested.len() + usize::from(has_uffd) + sc.peeks().len() + i,
                    format!("host step {k} ({})", steps[i].1),
                )
            }
        };
        let Some(values) = observed.get(index) else {
            out.push(format!("{name}: not observed"));
            continue;
        };
        for v in values {
            let got = scenario::canonical_value(v.split_once(": ").map_or(v.as_str(), |x| x.1));
            if !s.values.iter().any(|v| seen_allows(v, &got)) {
                out.push(format!(
                    "{name}: saw {got}; [[seen]] allows {}",
                    s.values.join(" | ")
                ));
            }
        }
    }
    out
}

/// Whether a stated value allows an observed one: equal attempt by attempt, where a stated
/// `kernel data` (vDSO data the model does not know) allows any value real KVM read.
pub fn seen_allows(stated: &str, got: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) =
        (stated.split(" -> ").collect(), got.split(" -> ").collect());
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(x, y)| x == y || (*x == "kernel data" && y.starts_with("0x")))
}

#[cfg(test)]
mod tests {
    use super::seen_allows;

    #[test]
    fn stated_kernel_data_allows_any_value_attempt_by_attempt() {
        assert!(seen_allows("kernel data", "kernel data"));
        assert!(seen_allows("kernel data", "0x34f"));
        assert!(seen_allows("EFAULT -> kernel data", "EFAULT -> 0x1"));
        assert!(!seen_allows("kernel data", "EFAULT"));
        assert!(!seen_allows("0x1", "0x2"));
        assert!(!seen_allows("EFAULT", "EFAULT -> 0x1"));
    }
}
