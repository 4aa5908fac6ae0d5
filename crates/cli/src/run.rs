//! `kvmmu run`: the scenario × policy matrix, each cell sampled (round-robin, seeded random
//! and PCT schedules) — the quick view; `kvmmu check` explores every interleaving.

use crate::cell::{self, Cell};
use crate::input;
use crate::text::Pad;
use crate::{Format, ModeArg};
use check::{Options, Strategy};
use model::harness::{run_once_with, ScheduleKind};
use serde_json::json;
use std::process::ExitCode;

/// `kvmmu run`'s arguments.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Built-in scenario names or scenario files (default: every built-in scenario).
    pub scenarios: Vec<String>,
    /// Policies to run (default: all). Repeatable.
    #[arg(long = "policy", value_name = "P")]
    pub policies: Vec<String>,
    /// Seed of the random schedules.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seeded random schedules per cell, and as many PCT schedules, besides round-robin.
    #[arg(long, default_value_t = 200)]
    pub schedules: usize,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Print the step trace of each cell (its counterexample if it has one).
    #[arg(long)]
    pub trace: bool,
    /// Also write the HTML report (index.html and svg/, see docs/report.md) to DIR.
    #[arg(long, value_name = "DIR")]
    pub report: Option<std::path::PathBuf>,
    /// The guest's mode: native (CPL3, the stage-2 fault path) or emulated (CPL0 on this
    /// PVM host: KVM's instruction emulator reaches memory with user copies; `[expect]` and
    /// `[[seen]]`, which state the native path, are not judged).
    #[arg(long, value_enum, default_value_t = ModeArg::Native)]
    pub mode: ModeArg,
}

pub fn run(a: &RunArgs) -> ExitCode {
    let (scenarios, policies, seed, schedules, format, trace, report, mode) = (
        &a.scenarios,
        &a.policies,
        a.seed,
        a.schedules,
        a.format,
        a.trace,
        a.report.as_deref(),
        a.mode,
    );
    let (scs, pols) = match (input::scenarios(scenarios), input::policies(policies)) {
        (Ok(s), Ok(p)) => (s, p),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("kvmmu: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = report {
        if let Err(e) = crate::reportdata::prepare_dir(dir) {
            eprintln!("kvmmu: {e}");
            return ExitCode::from(2);
        }
    }
    let opts = Options {
        strategy: Strategy::Sample,
        seed,
        samples: schedules as u64,
        // The report shows every violation's counterexample as a timeline.
        counterexamples: trace || report.is_some(),
        interrupt: Some(crate::signals::interrupt_flag()),
        ..Options::default()
    };
    // Cells print as they finish: JSON lines on stdout, a line per cell on a terminal's
    // stderr (the text matrix needs every cell first).
    let bar = crate::checkcmd::progress_bar(format == Format::Json);
    let total = scs.len() * pols.len();
    let mut rows: Vec<Vec<Option<Cell>>> = Vec::new();
    let mut finished = 0;
    'cells: for sc in &scs {
        let mut row = Vec::new();
        for &p in &pols {
            bar.set_message(format!(
                "[{}/{total}] {} / {}",
                finished + 1,
                sc.name,
                p.name()
            ));
            let build = model::harness::BuildOptions {
                audit: false,
                emulated: mode == ModeArg::Emulated,
            };
            let c = match cell::explore(sc, p, &opts, build, 1, check::Part::ALL, &mut |_| {}) {
                // `[expect]` and `[[seen]]` state the native path: not judged in emulated mode.
                Ok((mut c, _)) if build.emulated => {
                    c.matches = None;
                    c.seen_mismatches.clear();
                    c
                }
                Ok((c, _)) => c,
                Err(e) => {
                    bar.finish_and_clear();
                    eprintln!("kvmmu: {}: {e}", sc.name);
                    return ExitCode::from(2);
                }
            };
            finished += 1;
            match format {
                Format::Json => crate::emit(&format!("{}\n", cell_json(&c))),
                Format::Text => bar.println(format!(
                    "[{finished}/{total}] {} / {}: {} ({} schedules)",
                    sc.name,
                    p.name(),
                    c.text(),
                    c.report.executions
                )),
            }
            row.push(Some(c));
            if opts.interrupted() {
                row.resize_with(pols.len(), || None);
                rows.push(row);
                break 'cells;
            }
        }
        rows.push(row);
    }
    bar.finish_and_clear();
    if format == Format::Text {
        print_matrix(&rows, &pols, trace, mode);
    }
    if let Some(dir) = report {
        if let Err(e) = crate::reportcmd::write_sampled(&rows, &pols, schedules, dir) {
            eprintln!("kvmmu: {e}");
            return ExitCode::from(2);
        }
    }
    if opts.interrupted() {
        eprintln!("kvmmu: interrupted after {finished} of {total} cells (the last one cut short)");
        return ExitCode::from(130);
    }
    let all_match = rows
        .iter()
        .flatten()
        .flatten()
        .all(|c| c.matches != Some(false));
    if all_match {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn cell_json(c: &Cell) -> serde_json::Value {
    let r = &c.report;
    json!({
        "scenario": c.scenario.name,
        "policy": c.policy.name(),
        "verdict": if c.oracles_with_divergence().is_empty() { "ok" } else { "violation" },
        "violations": c.oracles_with_divergence(),
        "details": r.found.iter().map(|f| json!({"oracle": f.oracle, "detail": f.detail, "executions": f.executions})).collect::<Vec<_>>(),
        "outcome": c.headline().name(),
        "outcomes": c.access_outcomes().iter().enumerate().map(|(v, accs)| json!({"vcpu": v, "accesses": accs})).collect::<Vec<_>>(),
        "nested": c.nested_outcomes(),
        "schedules": r.executions,
        "expected": c.matches,
    })
}

/// The matrix; cells not run (interrupted) show `-`.
fn print_matrix(
    rows: &[Vec<Option<Cell>>],
    pols: &[model::kvm::PolicyId],
    trace: bool,
    mode: ModeArg,
) {
    let mut o = String::new();
    let name_w = rows
        .iter()
        .filter_map(|r| r.first().and_then(Option::as_ref))
        .map(|c| c.scenario.name.chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| match c {
                    None => "-".to_string(),
                    Some(c) if c.matches == Some(false) => format!("{} (!)", c.text()),
                    Some(c) => c.text(),
                })
                .collect()
        })
        .collect();
    let col_w: Vec<usize> = (0..pols.len())
        .map(|j| {
            cells
                .iter()
                .map(|r| r[j].len())
                .max()
                .unwrap_or(0)
                .max(pols[j].name().len())
        })
        .collect();
    out!(o, "{}", Pad("scenario", name_w));
    for (j, p) in pols.iter().enumerate() {
        out!(o, "  {}", Pad(p.name(), col_w[j]));
    }
    o.push('\n');
    for (r, row) in rows.iter().zip(&cells) {
        let name = r
            .iter()
            .flatten()
            .next()
            .map_or("", |c| c.scenario.name.as_str());
        out!(o, "{}", Pad(name, name_w));
        for (j, c) in row.iter().enumerate() {
            out!(o, "  {}", Pad(c, col_w[j]));
        }
        o.push('\n');
    }
    let mismatches: Vec<&Cell> = rows
        .iter()
        .flatten()
        .flatten()
        .filter(|c| c.matches == Some(false))
        .collect();
    if !mismatches.is_empty() {
        outln!(o, "\n(!) differs from the scenario's [expect]:");
        for c in mismatches {
            outln!(o, "  {} / {}: got {}", c.scenario.name, c.policy, c.text());
            for m in &c.seen_mismatches {
                outln!(o, "    {m}");
            }
        }
    }
    let violated: Vec<&Cell> = rows
        .iter()
        .flatten()
        .flatten()
        .filter(|c| !c.report.found.is_empty())
        .collect();
    if !violated.is_empty() {
        outln!(
            o,
            "\nviolations (first per oracle; rerun with --trace for the steps, or `kvmmu check` for all interleavings):"
        );
        for c in violated {
            for f in &c.report.found {
                outln!(
                    o,
                    "  {} / {} {}: {} ({} of {} schedules)",
                    c.scenario.name,
                    c.policy,
                    f.oracle,
                    f.detail,
                    f.executions,
                    c.report.executions
                );
            }
        }
    }
    if trace {
        for c in rows.iter().flatten().flatten() {
            outln!(o, "\n=== {} / {}: {}", c.scenario.name, c.policy, c.text());
            for (v, acc) in c.access_outcomes().iter().enumerate() {
                for a in acc {
                    outln!(o, "  vcpu{v} {a}");
                }
            }
            for n in c.nested_outcomes() {
                outln!(o, "  nested: {n}");
            }
            match c
                .report
                .found
                .iter()
                .find_map(|f| f.counterexample.as_ref())
            {
                Some(ce) => {
                    outln!(
                        o,
                        "  counterexample for {} ({} preemptions, {} steps):",
                        ce.oracle,
                        ce.preemptions,
                        ce.schedule.len()
                    );
                    out!(o, "{}", ce.trace);
                }
                None => {
                    // A clean cell: show the round-robin run.
                    if let Ok(r) = run_once_with(
                        &c.scenario,
                        c.policy,
                        ScheduleKind::RoundRobin,
                        true,
                        model::harness::step_bound(&c.scenario),
                        &model::harness::BuildOptions {
                            audit: false,
                            emulated: mode == ModeArg::Emulated,
                        },
                    ) {
                        outln!(o, "  (round-robin schedule)");
                        out!(o, "{}", r.trace);
                    }
                }
            }
        }
    }
    crate::emit(&o);
}
