//! `kvmmu check`: explore every interleaving of each (scenario, policy) cell, prove the clean
//! cells, and tell the shortest story of each violation (written as replay files).

use crate::cell::{self, Cell};
use crate::input::{self, Source};
use crate::replay::ReplayFile;
use crate::shard;
use crate::text::Pad;
use crate::Format;
use check::{Options, Part, Progress, Strategy};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// What `kvmmu check` was asked (its command line).
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Built-in scenario names or scenario files (default: every built-in scenario).
    pub scenarios: Vec<String>,
    /// Policies to check (default: every era; `mutants` for the mutants). Repeatable.
    #[arg(long = "policy", value_name = "P")]
    pub policies: Vec<String>,
    /// dpor (default), dfs (no reduction), pct or random (seeded sampling).
    #[arg(long, default_value = "dpor", value_parser = crate::parse_strategy)]
    pub strategy: Strategy,
    /// Only schedules with at most N preemptions, explored bound 0, 1, ... N.
    #[arg(long, value_name = "N")]
    pub preemptions: Option<u32>,
    /// Stop exploring after SECS seconds in all (the result is then not complete).
    #[arg(long, value_name = "SECS", value_parser = crate::parse_secs)]
    pub budget: Option<std::time::Duration>,
    /// Stop each cell after N executions (the result is then not complete).
    #[arg(long, value_name = "N")]
    pub max_executions: Option<u64>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Seed of pct and random.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Executions pct and random run per cell.
    #[arg(long, default_value_t = 1000)]
    pub samples: u64,
    /// Stop each cell at its first violation.
    #[arg(long)]
    pub stop_on_violation: bool,
    /// Report counterexamples as found, without minimising them.
    #[arg(long)]
    pub no_minimize: bool,
    /// Where replay files go.
    #[arg(long, value_name = "DIR", default_value = "kvmmu-replays")]
    pub replay_dir: PathBuf,
    /// Write no replay files.
    #[arg(long)]
    pub no_replay_files: bool,
    /// Check every step's accesses against its declared footprint (slower).
    #[arg(long)]
    pub audit: bool,
    /// Also estimate how many executions plain dfs would need, from PROBES random paths
    /// (Knuth's tree-size estimator), and the reduction dpor achieved against it.
    #[arg(long, value_name = "PROBES", value_parser = clap::value_parser!(u64).range(1..))]
    pub estimate_dfs: Option<u64>,
    /// Threads exploring each cell (default: one per core). The result does not depend on
    /// it: the same executions, verdicts and counterexamples.
    #[arg(long, short = 'j', value_name = "J", value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: Option<u64>,
    /// Explore only shard K of N (counted from 0) and write its result for `kvmmu merge`.
    /// Without it, a Slurm array job (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN,
    /// SLURM_ARRAY_TASK_COUNT) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with
    /// --shards) chooses the shard.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,
    /// How many shards there are, when the shard index comes from JOB_COMPLETION_INDEX (the
    /// Indexed Job's `completions`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub shards: Option<u64>,
    /// Write the result here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Explore spaces that plain DPOR covers within N executions whole, and split larger
    /// ones into independent subtrees (part of what defines the executions run: shards
    /// of one campaign must agree on it).
    #[arg(long, value_name = "N", default_value_t = check::Options::default().split_above, hide = true)]
    pub split_above: u64,
    /// No progress line on stderr (it is also hidden when stderr is not a terminal).
    #[arg(long, short)]
    pub quiet: bool,
    /// Also write the HTML report (index.html and svg/, see docs/report.md) to DIR.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("expected K/N with 0 <= K < N, like 2/4; got {s:?}");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || k >= n {
        return Err(bad());
    }
    Ok((k, n))
}

/// Which shard this process explores, if any: `--shard`, else the scheduler's environment.
pub fn shard_of(
    a: &CheckArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(usize, usize)>, String> {
    if let Some(s) = a.shard {
        return Ok(Some(s));
    }
    let num = |var: &str| -> Result<Option<usize>, String> {
        match env(var) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("{var}={v:?} is not a number")),
        }
    };
    if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let count = num("SLURM_ARRAY_TASK_COUNT")?
            .ok_or("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")?;
        let k = id.checked_sub(min).filter(|&k| k < count).ok_or(format!(
            "SLURM_ARRAY_TASK_ID={id} is not within SLURM_ARRAY_TASK_MIN={min} and \
             SLURM_ARRAY_TASK_COUNT={count} (use a contiguous array, like --array=0-{})",
            count.saturating_sub(1)
        ))?;
        return Ok(Some((k, count)));
    }
    match (num("JOB_COMPLETION_INDEX")?, a.shards) {
        (Some(k), Some(n)) if (k as u64) < n => Ok(Some((k, n as usize))),
        (Some(k), Some(n)) => Err(format!(
            "JOB_COMPLETION_INDEX={k} but --shards {n}: the index must be below the count"
        )),
        (Some(_), None) => Err(
            "JOB_COMPLETION_INDEX is set: say how many shards (the Job's completions) with --shards N"
                .into(),
        ),
        (None, Some(_)) => Err(
            "--shards needs JOB_COMPLETION_INDEX in the environment (or use --shard K/N)".into(),
        ),
        (None, None) => Ok(None),
    }
}

/// A cell's result plus where its counterexamples went.
pub struct Done {
    pub cell: Cell,
    pub replays: Vec<(&'static str, PathBuf)>,
    pub estimate: Option<check::Estimate>,
}

pub fn check(a: &CheckArgs) -> ExitCode {
    let (srcs, pols) = match (input::sources(&a.scenarios), input::policies(&a.policies)) {
        (Ok(s), Ok(p)) => (s, p),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("kvmmu: {e}");
            return ExitCode::from(2);
        }
    };
    let shard = match shard_of(a, &|v| std::env::var(v).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kvmmu: {e}");
            return ExitCode::from(2);
        }
    };
    let jobs = a.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |j| j as usize,
    );
    if let Some(dir) = a.report.as_ref().filter(|_| shard.is_none()) {
        if let Err(e) = crate::reportdata::prepare_dir(dir) {
            eprintln!("kvmmu: {e}");
            return ExitCode::from(2);
        }
    }
    let interrupt = crate::signals::interrupt_flag();
    let start = Instant::now();
    let (done, parts) = match explore_cells(a, &srcs, &pols, shard, jobs, &interrupt, start) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if shard.is_none() {
        if let Some(dir) = &a.report {
            if let Err(e) = crate::reportcmd::write_checked(a, &srcs, &pols, &done, dir) {
                eprintln!("kvmmu: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let total = srcs.len() * pols.len();
    if interrupt.load(std::sync::atomic::Ordering::Relaxed) {
        // What finished (the last cell cut short, not complete), then a non-zero exit.
        let _ = report(a, &done, start.elapsed());
        eprintln!(
            "kvmmu: interrupted after {} of {total} cells (the last one cut short)",
            done.len()
        );
        return ExitCode::from(130);
    }
    if let Some((k, n)) = shard {
        let file = shard::ShardFile {
            format: shard::FORMAT.to_string(),
            kvmmu: env!("CARGO_PKG_VERSION").to_string(),
            shard: k,
            shards: n,
            campaign: campaign(a),
            cells: parts,
        };
        let text = serde_json::to_string(&file).expect("serialisable") + "\n";
        return match output(a, &text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kvmmu: {e}");
                ExitCode::from(2)
            }
        };
    }
    report(a, &done, start.elapsed())
}

/// Explore every (scenario, policy) cell (or this shard's share of them), writing replay
/// files as `a` says; the cells' results, and a shard's parts.
#[allow(clippy::too_many_arguments)]
pub fn explore_cells(
    a: &CheckArgs,
    srcs: &[Source],
    pols: &[model::kvm::PolicyId],
    shard: Option<(usize, usize)>,
    jobs: usize,
    interrupt: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    start: Instant,
) -> Result<(Vec<Done>, Vec<shard::CellPart>), ExitCode> {
    let total = srcs.len() * pols.len();
    let bar = progress_bar(a.quiet);
    let mut done: Vec<Done> = Vec::new();
    let mut parts: Vec<shard::CellPart> = Vec::new();
    'cells: for src in srcs {
        for &p in pols {
            if interrupt.load(std::sync::atomic::Ordering::Relaxed) {
                break 'cells;
            }
            // Successive cells start on successive shards, so small cells spread too.
            let part = shard.map_or(Part::ALL, |(k, n)| Part {
                index: k,
                count: n,
                offset: done.len(),
            });
            // A scenario too large to check completely names its bound (and why).
            let declared = src.scenario.check.as_ref().map(|c| c.preemptions);
            let opts = Options {
                interrupt: Some(interrupt.clone()),
                split_above: a.split_above,
                strategy: a.strategy,
                preemptions: a
                    .preemptions
                    .or(declared.filter(|_| a.strategy.exhaustive())),
                max_executions: a.max_executions,
                budget: a.budget.map(|b| b.saturating_sub(start.elapsed())),
                seed: a.seed,
                samples: a.samples,
                stop_on_failure: a.stop_on_violation,
                minimize: !a.no_minimize,
                // `[[seen]]` values are judged on what every execution showed.
                observe: !src.scenario.seen.is_empty(),
                ..Options::default()
            };
            let label = format!(
                "[{}/{total}] {} / {}",
                done.len() + 1,
                src.scenario.name,
                p.name()
            );
            bar.set_message(label.clone());
            let mut tick = |pr: &Progress| {
                bar.set_message(format!(
                    "{label}: {} executions ({:.0}/s), depth {}{}",
                    pr.executions,
                    pr.executions as f64 / pr.elapsed.as_secs_f64().max(1e-3),
                    pr.depth,
                    if pr.failures > 0 {
                        format!(", {} oracle(s) violated", pr.failures)
                    } else {
                        String::new()
                    }
                ));
            };
            let explored = cell::explore(
                &src.scenario,
                p,
                &opts,
                model::harness::BuildOptions {
                    audit: a.audit,
                    emulated: false,
                },
                jobs,
                part,
                &mut tick,
            );
            let cell = match explored {
                Ok((c, levels)) => {
                    // Only a shard writes its levels out.
                    if shard.is_some() {
                        parts.push(shard::CellPart {
                            scenario: src.scenario.name.clone(),
                            source: src.origin.clone(),
                            hash: crate::replay::content_hash(&src.text),
                            content: src.text.clone(),
                            policy: p.name().to_string(),
                            levels: levels.iter().map(shard::LevelPart::from_level).collect(),
                        });
                    }
                    c
                }
                Err(e) => {
                    bar.finish_and_clear();
                    eprintln!("kvmmu: {} / {}: {e}", src.scenario.name, p.name());
                    return Err(ExitCode::from(2));
                }
            };
            if shard.is_some() {
                // A shard's counterexamples are confirmed and written by `kvmmu merge`.
                done.push(Done {
                    cell,
                    replays: Vec::new(),
                    estimate: None,
                });
                continue;
            }
            let replays = match write_replays(a, src, &cell) {
                Ok(r) => r,
                Err(e) => {
                    bar.finish_and_clear();
                    eprintln!("kvmmu: {e}");
                    return Err(ExitCode::from(2));
                }
            };
            let estimate = match a.estimate_dfs {
                Some(n) => {
                    bar.set_message(format!("{label}: estimating the dfs tree"));
                    let mut prog = model::harness::CellProgram::new(&src.scenario, p);
                    match check::estimate_dfs(&mut prog, n, a.seed) {
                        Ok(e) => Some(e),
                        Err(e) => {
                            bar.finish_and_clear();
                            eprintln!("kvmmu: {} / {}: {e}", src.scenario.name, p.name());
                            return Err(ExitCode::from(2));
                        }
                    }
                }
                None => None,
            };
            done.push(Done {
                cell,
                replays,
                estimate,
            });
        }
    }
    bar.finish_and_clear();
    Ok((done, parts))
}

/// What every shard of a campaign must agree on.
pub fn campaign(a: &CheckArgs) -> shard::Campaign {
    shard::Campaign {
        strategy: a.strategy.name().to_string(),
        preemptions: a.preemptions,
        max_executions: a.max_executions,
        seed: a.seed,
        samples: a.samples,
        split_depth: Options::default().split_depth,
        split_above: a.split_above,
        minimize: !a.no_minimize,
        stop_on_violation: a.stop_on_violation,
    }
}

/// Write `text` to `--out` or standard output.
fn output(a: &CheckArgs, text: &str) -> Result<(), String> {
    match &a.out {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        None => {
            crate::emit(text);
            Ok(())
        }
    }
}

/// Print the cells' results (and exit 0 when every one meets its `[expect]`, else 1).
pub fn report(a: &CheckArgs, done: &[Done], elapsed: Duration) -> ExitCode {
    let all_match = done.iter().all(|d| d.cell.matches != Some(false));
    let text = match a.format {
        Format::Text => print_text(a, done, elapsed),
        Format::Json => {
            let mut o = String::new();
            for d in done {
                outln!(o, "{}", cell_json(a, d));
            }
            o
        }
    };
    if let Err(e) = output(a, &text) {
        eprintln!("kvmmu: {e}");
        return ExitCode::from(2);
    }
    if all_match {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A spinner on stderr, hidden when stderr is not a terminal or with `--quiet`.
pub fn progress_bar(quiet: bool) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}").expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

pub fn write_replays(
    a: &CheckArgs,
    src: &Source,
    cell: &Cell,
) -> Result<Vec<(&'static str, PathBuf)>, String> {
    if a.no_replay_files {
        return Ok(Vec::new());
    }
    let dir = &a.replay_dir;
    let mut out = Vec::new();
    for f in &cell.report.found {
        if let Some(ce) = f.counterexample.as_ref().filter(|c| c.confirmed) {
            let rf = ReplayFile::new(src, cell.policy, ce);
            out.push((f.oracle, rf.write(dir)?));
        }
    }
    Ok(out)
}

/// A count for a table: plain up to a million, then `4.7e6`.
fn sci(x: f64) -> String {
    if x < 1e6 {
        format!("{x:.0}")
    } else {
        let e = x.log10().floor();
        format!("{:.1}e{e}", x / 10f64.powf(e))
    }
}

fn verdict(c: &Cell) -> &'static str {
    if !c.report.found.is_empty() {
        "violation"
    } else if c.report.diverged > 0 {
        "diverged"
    } else if c.report.complete() {
        "clean"
    } else {
        "clean so far"
    }
}

fn cell_json(a: &CheckArgs, d: &Done) -> serde_json::Value {
    let c = &d.cell;
    let r = &c.report;
    let ce_json = |f: &check::Found| -> Option<serde_json::Value> {
        let ce = f.counterexample.as_ref()?;
        let replay = d
            .replays
            .iter()
            .find(|(o, _)| *o == f.oracle)
            .map(|(_, p)| p.display().to_string());
        Some(json!({
            "oracle": ce.oracle,
            "detail": ce.detail,
            "preemptions": ce.preemptions,
            "steps": ce.schedule.len(),
            "failing_step": ce.failing_step,
            "schedule": ce.schedule,
            "actors": ce.actors,
            "confirmed": ce.confirmed,
            "trace": ce.steps.iter().map(|s| json!({
                "step": s.step,
                "actor": ce.actors.get(s.actor).cloned().unwrap_or_default(),
                "what": s.what,
                "func": s.func,
                "lines": s.lines,
            })).collect::<Vec<_>>(),
            "replay": replay,
        }))
    };
    let cexs: Vec<serde_json::Value> = r.found.iter().filter_map(ce_json).collect();
    json!({
        "scenario": c.scenario.name,
        "policy": c.policy.name(),
        "verdict": verdict(c),
        "violations": c.oracles(),
        "executions": r.executions,
        "complete": r.complete(),
        "strategy": a.strategy.name(),
        "preemption_bound": r.preemption_bound,
        "bound_reason": c.scenario.check.as_ref().filter(|_| a.preemptions.is_none()).map(|b| b.why.clone()),
        "cuts": r.cuts.iter().map(|x| x.name()).collect::<Vec<_>>(),
        "finished": r.finished,
        "redundant": r.redundant,
        "diverged": r.diverged,
        "max_depth": r.max_depth,
        "outcomes": r.outcomes.len(),
        "headlines": r.headlines().iter().map(|h| h.name).collect::<Vec<_>>(),
        "elapsed_ms": r.elapsed.as_secs_f64() * 1e3,
        "executions_per_second": r.rate(),
        "expected": c.matches,
        "dfs_estimate": d.estimate.map(|e| json!({
            "probes": e.probes,
            "mean": e.mean,
            "std_error": e.std_error,
            "reduction": e.mean / r.executions.max(1) as f64,
        })),
        "counterexample": cexs.first().cloned(),
        "counterexamples": cexs,
    })
}

fn print_text(a: &CheckArgs, done: &[Done], elapsed: Duration) -> String {
    let mut o = String::new();
    let bound = a
        .preemptions
        .map_or(String::new(), |b| format!(", at most {b} preemptions"));
    outln!(o, "kvmmu check: strategy {}{bound}", a.strategy);
    let sw = done
        .iter()
        .map(|d| d.cell.scenario.name.chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let pw = done
        .iter()
        .map(|d| d.cell.policy.name().len())
        .max()
        .unwrap_or(6)
        .max(6);
    let texts: Vec<String> = done
        .iter()
        .map(|d| {
            let c = &d.cell;
            let mut t = if c.report.found.is_empty() {
                if c.report.diverged > 0 {
                    "diverged".to_string()
                } else {
                    "clean".to_string()
                }
            } else {
                c.oracles().join(", ")
            };
            if c.matches == Some(false) {
                t.push_str(" (!)");
            }
            t
        })
        .collect();
    let vw = texts.iter().map(|t| t.len()).max().unwrap_or(7).max(7);
    let est = a.estimate_dfs.is_some();
    outln!(
        o,
        "{}  {}  {}  {:>10}  {:<8}  {:>8}{}",
        Pad("scenario", sw),
        Pad("policy", pw),
        Pad("verdict", vw),
        "executions",
        "complete",
        "time",
        if est {
            "  dfs (estimate)  reduction"
        } else {
            ""
        }
    );
    for (d, t) in done.iter().zip(&texts) {
        let r = &d.cell.report;
        let complete = if r.complete() {
            "yes".to_string()
        } else {
            "no".to_string()
        };
        let estimate = d.estimate.map_or(String::new(), |e| {
            format!(
                "  {:>14}  {:>9}",
                sci(e.mean),
                sci(e.mean / r.executions.max(1) as f64)
            )
        });
        outln!(
            o,
            "{}  {}  {}  {:>10}  {:<8}  {:>7.2}s{estimate}",
            Pad(&d.cell.scenario.name, sw),
            Pad(d.cell.policy.name(), pw),
            Pad(t, vw),
            r.executions,
            complete,
            r.elapsed.as_secs_f64()
        );
    }
    let incomplete: Vec<&Done> = done.iter().filter(|d| !d.cell.report.complete()).collect();
    let mut reasons: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    if !incomplete.is_empty() {
        outln!(o, "\nnot complete (not a proof):");
        for d in incomplete {
            let r = &d.cell.report;
            let why: Vec<&str> = r.cuts.iter().map(|c| c.name()).collect();
            let declared = match (&d.cell.scenario.check, a.preemptions) {
                (Some(c), None) if r.cuts.contains(&check::Cut::Bound) => {
                    if !reasons.contains(&d.cell.scenario.name) {
                        reasons.push(d.cell.scenario.name.clone());
                        notes.push(format!(
                            "  {}: the scenario's [check] bound of {} preemptions: {}",
                            d.cell.scenario.name, c.preemptions, c.why
                        ));
                    }
                    " (the scenario's [check] bound)".to_string()
                }
                _ => String::new(),
            };
            outln!(
                o,
                "  {} / {}: cut by {}{declared}{}",
                d.cell.scenario.name,
                d.cell.policy,
                why.join(", "),
                if r.diverged > 0 {
                    format!(
                        "; {} execution(s) hit the step bound (livelock?)",
                        r.diverged
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    let mism: Vec<&Done> = done
        .iter()
        .filter(|d| d.cell.matches == Some(false))
        .collect();
    if !mism.is_empty() {
        outln!(o, "\n(!) differs from the scenario's [expect]:");
        for d in mism {
            outln!(
                o,
                "  {} / {}: got {}",
                d.cell.scenario.name,
                d.cell.policy,
                d.cell.text()
            );
            for m in &d.cell.seen_mismatches {
                outln!(o, "    {m}");
            }
        }
    }
    for d in done.iter().filter(|d| !d.cell.report.found.is_empty()) {
        let c = &d.cell;
        outln!(o, "\n=== {} / {}", c.scenario.name, c.policy);
        for f in &c.report.found {
            let Some(ce) = &f.counterexample else {
                outln!(o, "  {}: {}", f.oracle, f.detail);
                continue;
            };
            let replay = d
                .replays
                .iter()
                .find(|(x, _)| *x == f.oracle)
                .map_or(String::new(), |(_, p)| {
                    format!("  replay: kvmmu replay {}", p.display())
                });
            outln!(
                o,
                "  {}: {} preemption{}, {} steps ({} of {} executions fail it){}",
                f.oracle,
                ce.preemptions,
                if ce.preemptions == 1 { "" } else { "s" },
                ce.schedule.len(),
                f.executions,
                c.report.executions,
                if replay.is_empty() {
                    String::new()
                } else {
                    format!("\n  {replay}")
                }
            );
        }
        // The story of the first oracle, in columns.
        if let Some(ce) = c
            .report
            .found
            .iter()
            .find_map(|f| f.counterexample.as_ref())
        {
            o.push('\n');
            for l in check::render_columns(ce).lines() {
                outln!(o, "  {l}");
            }
        }
    }
    let execs: u64 = done.iter().map(|d| d.cell.report.executions).sum();
    let clean = done
        .iter()
        .filter(|d| d.cell.report.found.is_empty() && d.cell.report.complete())
        .count();
    let viol = done
        .iter()
        .filter(|d| !d.cell.report.found.is_empty())
        .count();
    let inc = done
        .iter()
        .filter(|d| d.cell.report.found.is_empty() && !d.cell.report.complete())
        .count();
    outln!(
        o,
        "\n{} cells: {clean} proved clean, {viol} with violations, {inc} clean but not complete; {execs} executions in {:.1} s ({:.0} executions/s)",
        done.len(),
        elapsed.as_secs_f64(),
        execs as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    o
}
