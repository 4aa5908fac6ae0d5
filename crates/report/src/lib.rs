//! `report`: the kvmmu HTML report — the scenario × policy matrix coloured by verdict, each
//! counterexample as an SVG timeline (one lane per actor, lock holds as bars, notifier calls
//! as arrows, the violating step marked with its oracle), the model-vs-real-KVM comparison
//! per access, and fault-cost and checker-statistics plots.
//!
//! Pure functions from the typed data below to strings: the CLI fills the data from its
//! explorations, probe runs and measurements, calls [`render`], and writes the files. The
//! page is static — inline CSS, a few lines of inline script that only record load errors,
//! SVG made here — and fetches nothing, so it opens from `file://`.
#![forbid(unsafe_code)]

mod escape;
mod matrix;
mod page;
mod plot;
mod timeline;

pub use escape::esc;
pub use matrix::Verdict;
pub use timeline::{lock_holds, LockHold};

/// Everything the report shows.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// How the report was made (the command line).
    pub command: String,
    /// The kvmmu version.
    pub version: String,
    /// How the cells were explored, for people ("every interleaving (dpor)", ...).
    pub exploration: String,
    /// Whether a clean cell is a proof (the checker) or only "nothing found" (sampling).
    pub exhaustive: bool,
    /// Matrix columns.
    pub policies: Vec<String>,
    pub scenarios: Vec<Scenario>,
    /// First-touch costs, when measured.
    pub costs: Option<Costs>,
    /// One-line notes shown under the title (what was skipped, and why).
    pub notes: Vec<String>,
}

/// One scenario: a matrix row, its cells' details and its real-KVM comparison.
#[derive(Clone, Debug, Default)]
pub struct Scenario {
    pub name: String,
    /// `built-in` or the file's path.
    pub origin: String,
    pub description: String,
    /// One per policy of [`Report::policies`]; `None` where the cell was not explored.
    pub cells: Vec<Option<Cell>>,
    pub comparison: Option<Comparison>,
}

/// One (scenario, policy) cell.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    pub policy: String,
    /// What the text matrix prints: the violated oracles or the headline outcome.
    pub text: String,
    /// The most serious outcome of the cell's executions (`ok`, `EFAULT`, `MMIO`, ...).
    pub headline: String,
    pub violations: Vec<Violation>,
    /// `Some(false)` when the cell differs from the scenario's `[expect]`.
    pub expected: Option<bool>,
    /// No bound, cap or budget cut the exploration.
    pub complete: bool,
    /// What cut it (`preemption bound`, ...), and the scenario's reason for a declared bound.
    pub cuts: Vec<String>,
    pub bound_reason: Option<String>,
    pub executions: u64,
    pub elapsed_ms: f64,
    /// Knuth's estimate of the plain-dfs tree, when made (for the reduction).
    pub dfs_estimate: Option<f64>,
}

/// One violated oracle of a cell.
#[derive(Clone, Debug, Default)]
pub struct Violation {
    pub oracle: String,
    pub detail: String,
    /// Executions that failed it.
    pub executions: u64,
    pub timeline: Option<Timeline>,
}

/// A counterexample: the schedule's steps up to the failing one.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    pub actors: Vec<String>,
    pub steps: Vec<Step>,
    /// Index in `steps` of the step after which the oracle failed (`>= steps.len()`: at the
    /// end of the run).
    pub failing_step: usize,
    pub oracle: String,
    pub detail: String,
    pub preemptions: u32,
    /// Replaying the schedule reproduced the failure.
    pub confirmed: bool,
    /// The command that replays it, when a replay file was written.
    pub replay: Option<String>,
}

/// One step of a counterexample.
#[derive(Clone, Debug, Default)]
pub struct Step {
    pub step: usize,
    pub actor: usize,
    /// The kernel function the actor was in at the scheduling point.
    pub func: String,
    /// The scheduling point (`lock`, `put_page_testzero`, `guest access`, ...).
    pub what: String,
    /// Trace lines, `kernel_function: event`.
    pub lines: Vec<String>,
}

/// The model next to real KVM for one scenario.
#[derive(Clone, Debug)]
pub enum Comparison {
    Compared {
        /// `native` or `emulated`.
        mode: String,
        /// The real host's MMU.
        mmu: String,
        model_policy: String,
        accesses: Vec<Access>,
        notes: Vec<String>,
        /// Differences are failures (native mode).
        fails: bool,
    },
    /// Not realizable on real KVM (a model-only driver), with the reason.
    Skipped(String),
    /// The probe or the model run failed.
    Failed(String),
}

/// One compared access (or the userfaultfd events, as one row).
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub access: String,
    pub model: String,
    pub kvm: String,
    pub agree: bool,
}

/// First-touch costs per backing.
#[derive(Clone, Debug, Default)]
pub struct Costs {
    pub model_policy: String,
    /// The real host's MMU, or why real KVM was not measured.
    pub real: String,
    pub rows: Vec<Cost>,
    /// Wall time the measurement took.
    pub seconds: f64,
}

/// One backing's first-touch cost, µs per access.
#[derive(Clone, Debug, Default)]
pub struct Cost {
    pub backing: String,
    pub model: Option<Spread>,
    pub real: Option<Spread>,
}

/// A median with its spread (µs).
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct Spread {
    pub median: f64,
    /// Lower and upper quartile of the samples.
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
}

impl Spread {
    /// Median and quartiles of `samples` (`None` when empty or not finite).
    pub fn of(samples: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
        Some(Spread {
            median: q(0.5),
            lo: q(0.25),
            hi: q(0.75),
            n: v.len(),
        })
    }
}

/// The report's files: `index.html` and the SVGs it shows (paths relative to it).
#[derive(Clone, Debug, Default)]
pub struct Site {
    pub index: String,
    pub svgs: Vec<(String, String)>,
}

/// Render the report. Pure: the caller writes [`Site`]'s files.
pub fn render(r: &Report) -> Site {
    page::render(r)
}

#[cfg(test)]
mod tests;
