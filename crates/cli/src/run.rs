//! `kvmmu run`: the scenario × policy matrix, each cell sampled (round-robin, seeded random
//! and PCT schedules) — the quick view; `kvmmu check` explores every interleaving.

use crate::cell::{self, Cell};
use crate::input;
use crate::text::Pad;
use crate::Format;
use check::{Options, Strategy};
use model::harness::{run_once, ScheduleKind};
use serde_json::json;
use std::process::ExitCode;

pub fn run(
    scenarios: &[String],
    policies: &[String],
    seed: u64,
    schedules: usize,
    format: Format,
    trace: bool,
) -> ExitCode {
    let (scs, pols) = match (input::scenarios(scenarios), input::policies(policies)) {
        (Ok(s), Ok(p)) => (s, p),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("kvmmu: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = Options {
        strategy: Strategy::Sample,
        seed,
        samples: schedules as u64,
        counterexamples: trace,
        ..Options::default()
    };
    let mut rows: Vec<Vec<Cell>> = Vec::new();
    for sc in &scs {
        let mut row = Vec::new();
        for &p in &pols {
            match cell::explore(sc, p, &opts, false, 1, check::Part::ALL, &mut |_| {}).map(|x| x.0)
            {
                Ok(c) => row.push(c),
                Err(e) => {
                    eprintln!("kvmmu: {}: {e}", sc.name);
                    return ExitCode::from(2);
                }
            }
        }
        rows.push(row);
    }
    let all_match = rows.iter().flatten().all(|c| c.matches != Some(false));
    match format {
        Format::Text => print_matrix(&rows, &pols, trace),
        Format::Json => {
            let mut o = String::new();
            for c in rows.iter().flatten() {
                outln!(o, "{}", cell_json(c));
            }
            crate::emit(&o);
        }
    }
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

fn print_matrix(rows: &[Vec<Cell>], pols: &[model::kvm::PolicyId], trace: bool) {
    let mut o = String::new();
    let name_w = rows
        .iter()
        .filter_map(|r| r.first())
        .map(|c| c.scenario.name.chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| match c.matches {
                    Some(false) => format!("{} (!)", c.text()),
                    _ => c.text(),
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
        out!(o, "{}", Pad(&r[0].scenario.name, name_w));
        for (j, c) in row.iter().enumerate() {
            out!(o, "  {}", Pad(c, col_w[j]));
        }
        o.push('\n');
    }
    let mismatches: Vec<&Cell> = rows
        .iter()
        .flatten()
        .filter(|c| c.matches == Some(false))
        .collect();
    if !mismatches.is_empty() {
        outln!(o, "\n(!) differs from the scenario's [expect]:");
        for c in mismatches {
            outln!(o, "  {} / {}: got {}", c.scenario.name, c.policy, c.text());
        }
    }
    let violated: Vec<&Cell> = rows
        .iter()
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
        for c in rows.iter().flatten() {
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
                    if let Ok(r) = run_once(
                        &c.scenario,
                        c.policy,
                        ScheduleKind::RoundRobin,
                        true,
                        model::harness::step_bound(&c.scenario),
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
