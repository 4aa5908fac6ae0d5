//! `check`: explores the interleavings of a [`world::Program`] and reports what its monitors
//! found, with the shortest story of each failure.
//!
//! Strategies ([`Strategy`]):
//! * `dpor` — stateless exploration (every execution re-runs from the initial state under a
//!   prefix of choices) with dynamic partial-order reduction over the steps' footprints:
//!   source sets and sleep sets (Abdulla, Aronis, Jonsson, Sagonas, POPL 2014). Exploring one
//!   execution per class of executions that differ only in the order of independent steps
//!   covers every class, so a clean `complete` result is a proof for the given program.
//! * `dfs` — the same exploration without reduction: every interleaving (the baseline).
//! * `pct` and `random` — seeded sampling (probabilistic concurrency testing, uniform).
//!
//! A preemption bound (`preemptions`) limits exploration to schedules that switch away
//! from a runnable actor at most that many times (iterative context bounding, Musuvathi and
//! Qadeer, PLDI 2007; with DPOR, the conservative backtracking of Coons, Musuvathi and
//! McKinley, OOPSLA 2013). A result is `complete` only when nothing — bound, budget,
//! execution cap, step bound — cut the exploration short.
//!
//! Counterexamples are minimised: the execution is cut to the causal cone of the failing
//! step (everything it depends on), re-ordered to switch actors as rarely as possible, and
//! confirmed by replaying it; the one with the fewest preemptions, then the fewest steps, is
//! kept per oracle.
//!
//! This crate knows nothing of kernels: it sees actors, footprints, and the failures and
//! observations a [`world::Monitor`] reports.
#![forbid(unsafe_code)]

mod estimate;
mod explore;
pub mod hb;
mod minimize;
mod par;
mod sample;
pub mod view;

pub use estimate::{estimate_dfs, Estimate};
pub use explore::{explore, merge_parts};
pub use minimize::{confirm, replay, Confirmed, Replayed};
pub use par::{combine, explore_part, Level, MakeProgram, Part};
pub use view::render_columns;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use world::Trace;

/// How to explore.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Dynamic partial-order reduction (source sets + sleep sets).
    Dpor,
    /// Every interleaving.
    Dfs,
    /// Probabilistic concurrency testing, seeded.
    Pct,
    /// Uniformly random choices, seeded.
    Random,
    /// What `kvmmu run` samples: round-robin, then `samples` random and `samples` PCT
    /// schedules (depth 2 and 3) over the round-robin run's length.
    Sample,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::Dpor,
        Strategy::Dfs,
        Strategy::Pct,
        Strategy::Random,
        Strategy::Sample,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Dpor => "dpor",
            Strategy::Dfs => "dfs",
            Strategy::Pct => "pct",
            Strategy::Random => "random",
            Strategy::Sample => "sample",
        }
    }

    pub fn from_name(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Whether the strategy can cover the whole space (and so claim `complete`).
    pub fn exhaustive(self) -> bool {
        matches!(self, Strategy::Dpor | Strategy::Dfs)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Exploration options.
#[derive(Clone, Debug)]
pub struct Options {
    pub strategy: Strategy,
    /// At most this many preemptions per schedule (`None`: unbounded).
    pub preemptions: Option<u32>,
    /// Stop after this many executions.
    pub max_executions: Option<u64>,
    /// Stop after this much wall time.
    pub budget: Option<Duration>,
    /// Seed of `pct` and `random` (and `sample`).
    pub seed: u64,
    /// Executions `pct`/`random` run (and random + PCT pairs `sample` runs).
    pub samples: u64,
    /// Stop at the first execution that fails an oracle.
    pub stop_on_failure: bool,
    /// Produce counterexamples at all (replays them; off for a quick verdict).
    pub counterexamples: bool,
    /// Collect what each observed item showed ([`Report::observed`]; costs formatting on
    /// every execution). Always on for the `sample` strategy.
    pub observe: bool,
    /// Minimise counterexamples (off: report the raw failing schedule, still confirmed).
    pub minimize: bool,
    /// With `preemptions`, explore bound 0, then 1, ... up to it, stopping early once a
    /// bound leaves nothing unexplored.
    pub iterative: bool,
    /// `dpor`/`dfs`: the first this many branching choice points try every runnable actor,
    /// splitting the space into independent subtrees (tasks) that threads and shards
    /// explore separately with the same result. Part of what defines the executions run:
    /// every way of running one exploration uses the same value.
    pub split_depth: u32,
    /// Spaces that plain DPOR covers within this many executions are explored whole (0
    /// split depth): splitting them would only add executions.
    pub split_above: u64,
    /// Set from outside (a signal handler) to stop the exploration after the execution
    /// under way; the result is then cut [`Cut::Interrupted`].
    pub interrupt: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Options {
    /// Whether [`Options::interrupt`] was raised.
    pub fn interrupted(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            strategy: Strategy::Dpor,
            preemptions: None,
            max_executions: None,
            budget: None,
            seed: 1,
            samples: 200,
            stop_on_failure: false,
            counterexamples: true,
            observe: false,
            minimize: true,
            iterative: true,
            split_depth: explore::SPLIT_DEPTH,
            split_above: explore::SPLIT_ABOVE,
            interrupt: None,
        }
    }
}

/// Why an exploration is not complete.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cut {
    /// A sampling strategy: it never covers the whole space.
    Sampled,
    /// The preemption bound pruned some schedules.
    Bound,
    /// `max_executions` was reached.
    Executions,
    /// The time budget ran out.
    Budget,
    /// Stopped at the first failure, as asked.
    Failure,
    /// Some execution hit the step bound (its continuation is unexplored).
    Diverged,
    /// Interrupted from outside (a signal).
    Interrupted,
}

impl Cut {
    pub fn name(self) -> &'static str {
        match self {
            Cut::Sampled => "sampled",
            Cut::Bound => "preemption bound",
            Cut::Executions => "execution cap",
            Cut::Budget => "time budget",
            Cut::Failure => "stopped at first failure",
            Cut::Diverged => "step bound",
            Cut::Interrupted => "interrupted",
        }
    }

    pub const ALL: [Cut; 7] = [
        Cut::Sampled,
        Cut::Bound,
        Cut::Executions,
        Cut::Budget,
        Cut::Failure,
        Cut::Diverged,
        Cut::Interrupted,
    ];

    pub fn from_name(s: &str) -> Option<Cut> {
        Cut::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// One step of a counterexample, for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepView {
    pub step: usize,
    pub actor: usize,
    /// What the scheduling point was (`lock`, `put_page_testzero`, ...).
    pub what: String,
    /// The kernel function the actor was in at that point (empty outside any).
    pub func: String,
    /// Trace lines the step emitted: `kernel function: text`.
    pub lines: Vec<String>,
}

/// The shortest story of one oracle's failure.
#[derive(Clone, Debug)]
pub struct Counterexample {
    pub oracle: &'static str,
    pub detail: String,
    /// The actor chosen at each step, up to and including the failing one.
    pub schedule: Vec<usize>,
    /// Index (in `schedule`) of the step after which the oracle failed.
    pub failing_step: usize,
    /// Switches away from an actor that could have continued.
    pub preemptions: u32,
    pub actors: Vec<String>,
    /// One entry per step of `schedule`.
    pub steps: Vec<StepView>,
    /// The full trace of the confirming replay.
    pub trace: Trace,
    /// Whether replaying `schedule` reproduced the failure (always, unless minimisation
    /// was off and the raw schedule is reported).
    pub confirmed: bool,
}

/// What an oracle found: its first report and the best counterexample.
#[derive(Clone, Debug)]
pub struct Found {
    pub oracle: &'static str,
    /// The first failure's detail.
    pub detail: String,
    /// How many executions failed this oracle.
    pub executions: u64,
    pub counterexample: Option<Counterexample>,
}

/// What one class of executions ended in: how it ended, which oracles failed, and the
/// final state's fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Outcome {
    pub headline: world::Headline,
    pub oracles: Vec<&'static str>,
    pub fingerprint: u64,
}

/// The result of exploring one program.
#[derive(Clone, Debug)]
pub struct Report {
    pub strategy: Strategy,
    pub preemption_bound: Option<u32>,
    /// Executions run (including redundant ones cut short by sleep sets or the bound).
    pub executions: u64,
    /// Executions that ran to their end (completed, deadlocked, BUG or diverged).
    pub finished: u64,
    /// Executions cut short as redundant (every runnable actor asleep).
    pub redundant: u64,
    /// Executions that hit the step bound: livelocks (or a bound too small).
    pub diverged: u64,
    /// The longest execution, in steps.
    pub max_depth: usize,
    /// Why the result is not a proof, if it is not.
    pub cuts: Vec<Cut>,
    /// Per oracle, in the order first found.
    pub found: Vec<Found>,
    /// Every distinct outcome of the finished executions.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Per observed item (access, nested map): the distinct values, in first-seen order.
    pub observed: Vec<Vec<String>>,
    /// The distinct whole observations (every item of one execution together), at most
    /// [`JOINT_CAP`]; collected with [`Options::observe`]. What `kvmmu diff` checks a real
    /// run against: one of the things the model says can happen.
    pub joint: std::collections::BTreeSet<Vec<String>>,
    /// More distinct whole observations existed than [`JOINT_CAP`].
    pub joint_truncated: bool,
    pub elapsed: Duration,
    /// A diverged execution, if any, as (schedule, steps) for diagnosis.
    pub divergence: Option<Vec<usize>>,
}

impl Report {
    /// Nothing explored yet.
    pub fn empty(strategy: Strategy, bound: Option<u32>) -> Report {
        Report {
            strategy,
            preemption_bound: bound,
            executions: 0,
            finished: 0,
            redundant: 0,
            diverged: 0,
            max_depth: 0,
            cuts: Vec::new(),
            found: Vec::new(),
            outcomes: BTreeMap::new(),
            observed: Vec::new(),
            joint: std::collections::BTreeSet::new(),
            joint_truncated: false,
            elapsed: Duration::ZERO,
            divergence: None,
        }
    }

    /// The whole space was covered: no bound, budget, cap or step bound cut it.
    pub fn complete(&self) -> bool {
        self.cuts.is_empty()
    }

    /// The violated oracles, sorted by name.
    pub fn oracles(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.found.iter().map(|f| f.oracle).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Distinct headlines of the finished executions, most serious first.
    pub fn headlines(&self) -> Vec<world::Headline> {
        let mut v: Vec<world::Headline> = self.outcomes.keys().map(|o| o.headline).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The most serious headline of the finished executions, if any finished.
    pub fn worst_headline(&self) -> Option<world::Headline> {
        self.outcomes.keys().map(|o| o.headline).min()
    }

    /// Executions per second.
    pub fn rate(&self) -> f64 {
        self.executions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// At most this many distinct whole observations are kept per report.
pub const JOINT_CAP: usize = 4096;

/// Adds one whole observation to a report's set, within [`JOINT_CAP`].
pub(crate) fn add_joint(r: &mut Report, obs: &[String]) {
    if r.joint.contains(obs) {
        return;
    }
    if r.joint.len() >= JOINT_CAP {
        r.joint_truncated = true;
        return;
    }
    r.joint.insert(obs.to_vec());
}

/// Progress of a running exploration, for a progress line.
#[derive(Copy, Clone, Debug, Default)]
pub struct Progress {
    pub executions: u64,
    pub depth: usize,
    pub failures: usize,
    pub elapsed: Duration,
}

/// Errors that stop an exploration: the program, not the kernel it models, is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Building an instance failed.
    Build(String),
    /// Re-running a prefix of choices did not reproduce the same enabled actors.
    Nondeterministic { step: usize },
    /// Audit mode found an access the step did not declare.
    Audit { actor: String, detail: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Build(e) => write!(f, "{e}"),
            Error::Nondeterministic { step } => write!(
                f,
                "the program is not deterministic: replaying a schedule gave different runnable actors at step {step}"
            ),
            Error::Audit { actor, detail } => {
                write!(f, "audit: {actor}: {detail}")
            }
        }
    }
}

impl std::error::Error for Error {}
