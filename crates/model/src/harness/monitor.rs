//! A (scenario, policy) cell as something explorers can run again and again: each
//! [`world::Program::instance`] builds a fresh world, and its [`CellMonitor`] runs the
//! oracles after every step and says what the execution showed.

use super::build::{build_with, Backend, BuildOptions, Sys};
use super::oracle::{Checker, Oracle, Violation};
use crate::kvm::pin::PinOutcome;
use crate::kvm::vcpu::Outcome;
use crate::kvm::PolicyId;
use scenario::Scenario;
use std::hash::{Hash, Hasher};
use world::{Failure, FastHasher, Monitor, Observation, Program, Status, StepRecord, World};

/// One cell of the matrix, runnable from its initial state any number of times.
#[derive(Clone, Debug)]
pub struct CellProgram {
    pub sc: Scenario,
    pub policy: PolicyId,
    pub build: BuildOptions,
    pub tracing: bool,
    pub max_steps: u64,
}

impl CellProgram {
    pub fn new(sc: &Scenario, policy: PolicyId) -> Self {
        CellProgram {
            sc: sc.clone(),
            policy,
            build: BuildOptions::default(),
            tracing: false,
            max_steps: step_bound(sc),
        }
    }
}

/// Steps after which an execution counts as a livelock: scaled to the scenario, so that a
/// long program that finishes is never called one. Every guest access, nested map round,
/// host step and touch finishes within a few hundred steps when nothing keeps invalidating
/// it (the longest fault path with its retries is under 300 steps on the built-ins); 500
/// per piece of work, plus 20,000, leaves a margin and still stops a real livelock — a fault
/// retried forever — after a bounded number of retries. Capped at [`MAX_STEP_BOUND`].
pub fn step_bound(sc: &Scenario) -> u64 {
    let accesses: usize = sc.vcpus.iter().map(|v| v.program.len()).sum();
    let rounds: usize = sc.nested.iter().map(|n| n.rounds).sum();
    let touches: usize = sc.mappings.iter().map(|m| m.touch.len()).sum();
    let work = (accesses + rounds + touches + sc.host.len()) as u64;
    20_000u64
        .saturating_add(work.saturating_mul(500))
        .min(MAX_STEP_BOUND)
}

/// The step bound's ceiling: a run records every step, so the bound is also what one run may
/// cost in memory (about 100 MB at this many steps).
pub const MAX_STEP_BOUND: u64 = 2_000_000;

impl Program for CellProgram {
    fn instance(&mut self) -> Result<(World, Box<dyn Monitor>), String> {
        let (mut w, sys) = build_with(&self.sc, self.policy, &self.build)?;
        w.set_tracing(self.tracing);
        w.set_max_steps(self.max_steps);
        w.set_records(false);
        Ok((w, Box::new(CellMonitor::new(sys))))
    }
}

/// The oracles of one execution, and what it showed.
pub struct CellMonitor {
    pub sys: Sys,
    pub checker: Checker,
    /// Violations already handed out as failures.
    emitted: usize,
    status: Option<Status>,
}

impl CellMonitor {
    pub fn new(sys: Sys) -> Self {
        CellMonitor {
            sys,
            checker: Checker::default(),
            emitted: 0,
            status: None,
        }
    }

    fn flush(&mut self, out: &mut Vec<Failure>) {
        for v in &self.checker.violations[self.emitted..] {
            out.push(Failure {
                oracle: v.oracle.name(),
                step: v.step,
                detail: v.detail.clone(),
            });
        }
        self.emitted = self.checker.violations.len();
    }

    /// How the run ended (after [`Monitor::end`]).
    pub fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }

    /// Per vCPU, per access: the attempts it took, and their text (`read32 0x10000: 0x1`).
    pub fn accesses(&self) -> (Vec<Vec<String>>, Vec<Vec<Vec<Outcome>>>) {
        let bug = matches!(self.status, Some(Status::Bug { .. }));
        let mut text = Vec::new();
        let mut raw = Vec::new();
        for v in &self.sys.vcpus {
            let recs = v.records.borrow();
            let mut per = Vec::new();
            let mut per_raw = Vec::new();
            for (i, op) in v.program.iter().enumerate() {
                let atts = recs.get(i).map(|r| r.attempts.clone()).unwrap_or_default();
                let t = if atts.is_empty() {
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
                per.push(format!("{op}: {t}"));
                per_raw.push(atts);
            }
            text.push(per);
            raw.push(per_raw);
        }
        (text, raw)
    }

    /// What each nested map showed.
    pub fn nested(&self) -> Vec<String> {
        self.sys
            .nested
            .iter()
            .map(|n| {
                n.borrow()
                    .as_ref()
                    .map_or("not finished".to_string(), PinOutcome::to_string)
            })
            .collect()
    }

    /// userfaultfd messages the handlers read, per mapping in order: (mapping, page, write).
    pub fn uffd(&self) -> Vec<(String, u64, bool)> {
        let mut out = Vec::new();
        for m in &self.sys.mappings {
            if let Backend::Userfault(u) = &m.backend {
                out.extend(
                    u.accesses
                        .log()
                        .into_iter()
                        .map(|r| (m.name.clone(), r.page, r.write)),
                );
            }
        }
        out
    }

    /// The violations found so far.
    pub fn violations(&self) -> &[Violation] {
        &self.checker.violations
    }

    fn fingerprint(&self, raw: &[Vec<Vec<Outcome>>], nested: &[String]) -> u64 {
        let mut h = FastHasher::default();
        self.sys.frames.digest(&mut h);
        self.sys.mm.digest(&mut h);
        self.sys.kvm.with_sptes(|s| {
            for (g, x) in s {
                (g, x.pfn.0, x.write).hash(&mut h);
            }
        });
        self.sys.kvm.invalidation().hash(&mut h);
        raw.hash(&mut h);
        nested.hash(&mut h);
        self.uffd().hash(&mut h);
        self.sys.host_results.borrow().hash(&mut h);
        match &self.status {
            Some(Status::Bug { actor, what }) => (1u8, actor, what).hash(&mut h),
            Some(Status::Deadlock(b)) => {
                2u8.hash(&mut h);
                for x in b {
                    x.to_string().hash(&mut h);
                }
            }
            Some(Status::StepLimit) => 3u8.hash(&mut h),
            _ => 0u8.hash(&mut h),
        }
        h.finish()
    }
}

/// The observed item of a memslot host step's result: `host step 2 (set-memslot 1): EINVAL`.
pub fn host_step_item(k: usize, what: &str, result: &str) -> String {
    format!("host step {k} ({what}): {result}")
}

/// The observed item of a cell's userfaultfd messages: `uffd: ram:0:r ram:2:w`, `uffd: none`;
/// `sorted` (several vCPUs, whose messages arrive in any order): as a multiset.
pub fn uffd_item(events: &[(String, u64, bool)], sorted: bool) -> String {
    if events.is_empty() {
        return "uffd: none".into();
    }
    let mut v: Vec<String> = events
        .iter()
        .map(|(m, p, w)| format!("{m}:{p}:{}", if *w { "w" } else { "r" }))
        .collect();
    if sorted {
        v.sort_unstable();
    }
    format!("uffd: {}", v.join(" "))
}

/// What a cell's executions ended in, most serious first: what the matrix prints when no
/// oracle failed, and what `[expect] outcome` names.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Headline {
    /// The host hit `BUG()`.
    Bug,
    /// Threads blocked forever, or an execution that never ended (livelock).
    Deadlock,
    /// `KVM_RUN` failed with a bare `-EFAULT`.
    Efault,
    /// A nested `kvm_vcpu_map` was refused.
    Refused,
    /// An exit to the VMM.
    Mmio,
    /// A store KVM emulated through the host mapping.
    Emulated,
    Ok,
}

impl Headline {
    pub const ALL: [Headline; 7] = [
        Headline::Bug,
        Headline::Deadlock,
        Headline::Efault,
        Headline::Refused,
        Headline::Mmio,
        Headline::Emulated,
        Headline::Ok,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Headline::Bug => "BUG",
            Headline::Deadlock => "DEADLOCK",
            Headline::Efault => "EFAULT",
            Headline::Refused => "refused",
            Headline::Mmio => "MMIO",
            Headline::Emulated => "emulated",
            Headline::Ok => "ok",
        }
    }

    /// As an explorer sees it (a name and a rank).
    pub fn world(self) -> world::Headline {
        world::Headline {
            rank: self as u8,
            name: self.name(),
        }
    }

    /// Back from what an explorer reports: a diverged execution is a livelock.
    pub fn from_world(h: world::Headline) -> Option<Headline> {
        if h == world::Headline::DIVERGED {
            return Some(Headline::Deadlock);
        }
        Headline::ALL.get(h.rank as usize).copied()
    }

    /// The most serious headline of a set of executions (`ok` for none).
    pub fn worst(hs: impl IntoIterator<Item = world::Headline>) -> Headline {
        hs.into_iter()
            .filter_map(Headline::from_world)
            .min()
            .unwrap_or(Headline::Ok)
    }
}

fn headline(status: Option<&Status>, raw: &[Vec<Vec<Outcome>>], nested: &[String]) -> Headline {
    match status {
        Some(Status::Bug { .. }) => return Headline::Bug,
        Some(Status::Deadlock(_) | Status::StepLimit) => return Headline::Deadlock,
        _ => {}
    }
    let has = |p: &dyn Fn(&Outcome) -> bool| raw.iter().flatten().flatten().any(p);
    if has(&|o| *o == Outcome::Efault) {
        Headline::Efault
    } else if nested.iter().any(|n| n.starts_with("map refused")) {
        Headline::Refused
    } else if has(&|o| matches!(o, Outcome::MmioRead { .. } | Outcome::MmioWrite { .. })) {
        Headline::Mmio
    } else if has(&|o| *o == Outcome::Emulated) {
        Headline::Emulated
    } else {
        Headline::Ok
    }
}

impl Monitor for CellMonitor {
    fn step(&mut self, rec: &StepRecord, step: u64, out: &mut Vec<Failure>) {
        self.checker.check_after(&self.sys, step, Some(rec));
        if self.checker.violations.len() > self.emitted {
            self.flush(out);
        }
    }

    fn end(&mut self, status: &Status, steps: u64, out: &mut Vec<Failure>) {
        match status {
            Status::Completed => self.checker.check_end(&self.sys, steps),
            Status::Bug { actor, what } => self.checker.violations.push(Violation {
                oracle: Oracle::NoHostBug,
                step: steps,
                detail: format!("{actor}: {what}"),
            }),
            Status::Deadlock(b) => self.checker.violations.push(Violation {
                oracle: Oracle::NoDeadlock,
                step: steps,
                detail: b
                    .iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
            _ => {}
        }
        self.status = Some(status.clone());
        self.flush(out);
    }

    fn observe(&self, detail: bool) -> Observation {
        let raw: Vec<Vec<Vec<Outcome>>> = self
            .sys
            .vcpus
            .iter()
            .map(|v| {
                v.records
                    .borrow()
                    .iter()
                    .map(|r| r.attempts.clone())
                    .collect()
            })
            .collect();
        let nested = self.nested();
        let mut outcomes = Vec::new();
        if detail {
            let (text, _) = self.accesses();
            for (v, acc) in text.iter().enumerate() {
                for a in acc {
                    outcomes.push(format!("vcpu{v} {a}"));
                }
            }
            for (i, n) in nested.iter().enumerate() {
                outcomes.push(format!("nested{i} {n}"));
            }
            if self
                .sys
                .mappings
                .iter()
                .any(|m| matches!(m.backend, Backend::Userfault(_)))
            {
                outcomes.push(uffd_item(&self.uffd(), self.sys.vcpus.len() > 1));
            }
            for p in &self.sys.peeks {
                outcomes.push(format!("{p}: {}", super::peek::peek(&self.sys, p)));
            }
            let results = self.sys.host_results.borrow();
            for (k, what) in &self.sys.memslot_steps {
                let r = results[*k].as_deref().unwrap_or("not run");
                outcomes.push(host_step_item(*k, what, r));
            }
        }
        Observation {
            fingerprint: self.fingerprint(&raw, &nested),
            headline: headline(self.status.as_ref(), &raw, &nested).world(),
            outcomes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Headline;

    #[test]
    fn headlines_are_what_scenario_files_may_expect_and_rank_by_severity() {
        let mut names: Vec<&str> = Headline::ALL.iter().map(|h| h.name()).collect();
        let mut allowed = scenario::OUTCOMES.to_vec();
        names.sort_unstable();
        allowed.sort_unstable();
        assert_eq!(names, allowed);
        for h in Headline::ALL {
            assert_eq!(Headline::from_world(h.world()), Some(h));
        }
        let seen = [
            Headline::Ok.world(),
            Headline::Efault.world(),
            Headline::Mmio.world(),
        ];
        assert_eq!(Headline::worst(seen), Headline::Efault);
        assert_eq!(
            Headline::worst([world::Headline::DIVERGED]),
            Headline::Deadlock
        );
        assert_eq!(Headline::worst([]), Headline::Ok);
    }
}
