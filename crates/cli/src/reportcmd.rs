//! `kvmmu report`: explore the cells (every interleaving, or sampled), run the real-KVM
//! comparison where the probe can, optionally measure fault costs, and write the HTML
//! report; and the `--report DIR` of `run`, `check` and `diff`.

use crate::cell::Cell;
use crate::checkcmd::{self, CheckArgs, Done};
use crate::diff::{self, Verdict};
use crate::input::{self, Source};
use crate::reportdata as data;
use model::kvm::PolicyId;
use probe::Mode;
use scenario::Scenario;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Built-in scenario names or scenario files (default: every built-in scenario).
    pub scenarios: Vec<String>,
    /// Policies (default: every era; `mutants` for the mutants). Repeatable.
    #[arg(long = "policy", value_name = "P")]
    pub policies: Vec<String>,
    /// Where the report goes (index.html and svg/).
    #[arg(long, value_name = "DIR", default_value = "kvmmu-report")]
    pub out: PathBuf,
    /// Sample schedules as `kvmmu run` does (seconds) instead of exploring every
    /// interleaving with the checker (about a minute for the built-ins).
    #[arg(long)]
    pub sampled: bool,
    /// With --sampled: random and PCT schedules per cell, besides round-robin.
    #[arg(long, default_value_t = 200)]
    pub schedules: u64,
    /// Stop each cell after N executions (the result is then not complete).
    #[arg(long, value_name = "N")]
    pub max_executions: Option<u64>,
    /// Estimate the plain-dfs tree of each cell from PROBES random paths, for the reduction.
    #[arg(long, value_name = "PROBES", value_parser = clap::value_parser!(u64).range(1..))]
    pub estimate_dfs: Option<u64>,
    /// Threads exploring each cell (default: one per core).
    #[arg(long, short = 'j', value_name = "J", value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: Option<u64>,
    /// Measure first-touch fault cost per backing, model and real KVM (a few seconds).
    #[arg(long)]
    pub measure: bool,
    /// Do not run the scenarios on real KVM.
    #[arg(long)]
    pub no_probe: bool,
    /// No progress line on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The `CheckArgs` `kvmmu check` would get for these cells.
fn check_args(a: &ReportArgs) -> CheckArgs {
    CheckArgs {
        scenarios: a.scenarios.clone(),
        policies: a.policies.clone(),
        strategy: check::Strategy::Dpor,
        preemptions: None,
        budget: None,
        max_executions: a.max_executions,
        format: crate::Format::Text,
        seed: 1,
        samples: 1000,
        stop_on_violation: false,
        no_minimize: false,
        replay_dir: a.out.join("replays"),
        no_replay_files: false,
        audit: false,
        estimate_dfs: a.estimate_dfs,
        jobs: a.jobs,
        shard: None,
        shards: None,
        out: None,
        split_above: check::Options::default().split_above,
        quiet: a.quiet,
        report: None,
    }
}

/// `run`'s sampling of one cell, with counterexamples.
fn sampled(src: &Source, p: PolicyId, schedules: u64) -> Result<Done, String> {
    let opts = check::Options {
        strategy: check::Strategy::Sample,
        samples: schedules,
        counterexamples: true,
        interrupt: Some(crate::signals::interrupt_flag()),
        ..check::Options::default()
    };
    let (cell, _) = crate::cell::explore(
        &src.scenario,
        p,
        &opts,
        Default::default(),
        1,
        check::Part::ALL,
        &mut |_| {},
    )?;
    Ok(Done {
        cell,
        replays: Vec::new(),
        estimate: None,
    })
}

/// The matrix rows from explored cells (in `srcs` × `pols` order).
fn rows(
    srcs: &[Source],
    pols: &[PolicyId],
    done: &[Done],
    declared: bool,
) -> Vec<report::Scenario> {
    srcs.iter()
        .map(|src| {
            let cells = pols
                .iter()
                .map(|&p| {
                    done.iter()
                        .find(|d| d.cell.policy == p && d.cell.scenario.name == src.scenario.name)
                        .map(|d| {
                            data::cell(&d.cell, &d.replays, d.estimate.map(|e| e.mean), declared)
                        })
                })
                .collect();
            data::scenario(&src.scenario, &src.origin, cells)
        })
        .collect()
}

/// Real runs per scenario in the report's comparison (as `kvmmu diff`'s default).
const REPORT_REPEAT: usize = 3;

/// The comparison of every scenario with real KVM, or why there is none.
fn comparisons(scs: &[Scenario]) -> Result<Vec<Verdict>, String> {
    ::probe::kvm_available()
        .map_err(|e| format!("real KVM not compared: /dev/kvm is not usable here: {e}"))?;
    Ok(scs
        .iter()
        .map(|sc| {
            diff::compare_one(
                sc,
                &crate::plan::plan(sc, Mode::Native),
                diff::POLICY,
                Mode::Native,
                REPORT_REPEAT,
            )
        })
        .collect())
}

fn print_written(index: &Path, ms: f64) {
    eprintln!(
        "kvmmu: report written to {} (rendered and written in {ms:.0} ms)",
        index.display()
    );
}

pub fn report(a: &ReportArgs) -> ExitCode {
    let (srcs, pols) = match (input::sources(&a.scenarios), input::policies(&a.policies)) {
        (Ok(s), Ok(p)) => (s, p),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("kvmmu: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = data::prepare_dir(&a.out) {
        eprintln!("kvmmu: {e}");
        return ExitCode::from(2);
    }
    let t = Instant::now();
    let (done, exploration) = if a.sampled {
        let mut done = Vec::new();
        for src in &srcs {
            for &p in &pols {
                match sampled(src, p, a.schedules) {
                    Ok(d) => done.push(d),
                    Err(e) => {
                        eprintln!("kvmmu: {} / {}: {e}", src.scenario.name, p.name());
                        return ExitCode::from(2);
                    }
                }
            }
        }
        (
            done,
            format!(
                "sampled: round-robin, {0} random and {0} PCT schedules per cell (kvmmu run)",
                a.schedules
            ),
        )
    } else {
        let ca = check_args(a);
        let jobs = a.jobs.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |j| j as usize,
        );
        let interrupt = crate::signals::interrupt_flag();
        match checkcmd::explore_cells(&ca, &srcs, &pols, None, jobs, &interrupt, Instant::now()) {
            Ok((done, _)) => (done, "every interleaving, dpor (kvmmu check)".to_string()),
            Err(code) => return code,
        }
    };
    let explore_s = t.elapsed().as_secs_f64();
    let mut r = data::base(exploration, !a.sampled, &pols);
    r.scenarios = rows(&srcs, &pols, &done, true);
    let t = Instant::now();
    if a.no_probe {
        r.notes.push("real KVM not compared (--no-probe)".into());
    } else {
        let scs: Vec<Scenario> = srcs.iter().map(|s| s.scenario.clone()).collect();
        match comparisons(&scs) {
            Ok(vs) => {
                for (row, v) in r.scenarios.iter_mut().zip(&vs) {
                    row.comparison = Some(data::comparison(Mode::Native, v));
                }
            }
            Err(note) => r.notes.push(note),
        }
    }
    let probe_s = t.elapsed().as_secs_f64();
    if a.measure {
        r.costs = Some(crate::cost::measure());
    }
    let (index, ms) = match data::write(&r, &a.out) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("kvmmu: {e}");
            return ExitCode::from(2);
        }
    };
    let timelines: usize = r
        .scenarios
        .iter()
        .flat_map(|s| s.cells.iter().flatten())
        .flat_map(|c| &c.violations)
        .filter(|v| v.timeline.is_some())
        .count();
    crate::emit(&format!(
        "{}\n{} cells, {timelines} timelines; exploration {explore_s:.1} s, real KVM {probe_s:.1} s{}, report rendered and written in {ms:.0} ms\n",
        index.display(),
        done.len(),
        r.costs.as_ref().map_or(String::new(), |c| format!(", measurement {:.1} s", c.seconds)),
    ));
    if done.iter().all(|d| d.cell.matches != Some(false)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `kvmmu check --report DIR`.
pub fn write_checked(
    a: &CheckArgs,
    srcs: &[Source],
    pols: &[PolicyId],
    done: &[Done],
    dir: &Path,
) -> Result<(), String> {
    let bound = a
        .preemptions
        .map_or(String::new(), |b| format!(", at most {b} preemptions"));
    let mut r = data::base(
        format!("kvmmu check: strategy {}{bound}", a.strategy),
        a.strategy.exhaustive(),
        pols,
    );
    r.scenarios = rows(srcs, pols, done, a.preemptions.is_none());
    let (index, ms) = data::write(&r, dir)?;
    print_written(&index, ms);
    Ok(())
}

/// `kvmmu run --report DIR`: the sampled matrix (cells not run are `None`).
pub fn write_sampled(
    rows: &[Vec<Option<Cell>>],
    pols: &[PolicyId],
    schedules: usize,
    dir: &Path,
) -> Result<(), String> {
    let mut r = data::base(format!("kvmmu run: sampled, round-robin, {schedules} random and {schedules} PCT schedules per cell"), false, pols);
    r.scenarios = rows
        .iter()
        .filter_map(|row| {
            let sc = row.iter().flatten().next()?.scenario.clone();
            let cells = row
                .iter()
                .map(|c| c.as_ref().map(|c| data::cell(c, &[], None, false)))
                .collect();
            Some(data::scenario(&sc, "", cells))
        })
        .collect();
    let (index, ms) = data::write(&r, dir)?;
    print_written(&index, ms);
    Ok(())
}

/// `kvmmu diff --report DIR`: the comparisons only.
pub fn write_compared(
    scs: &[Scenario],
    mode: Mode,
    policy: model::kvm::PolicyId,
    verdicts: &[Verdict],
    dir: &Path,
) -> Result<(), String> {
    let mut r = data::base(
        format!(
            "kvmmu diff: model ({}) vs real KVM, {} mode",
            policy.name(),
            crate::probe::mode_name(mode)
        ),
        false,
        &[],
    );
    r.scenarios = scs
        .iter()
        .zip(verdicts)
        .map(|(sc, v)| {
            let mut s = data::scenario(sc, "", Vec::new());
            s.comparison = Some(data::comparison(mode, v));
            s
        })
        .collect();
    let (index, ms) = data::write(&r, dir)?;
    print_written(&index, ms);
    Ok(())
}
