//! `kvmmu run`: the scenario × policy matrix.

use crate::input;
use crate::Format;
use model::harness::{run_cell, CellResult, RunOptions};
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
    let opts = RunOptions {
        seed,
        schedules,
        tracing: trace,
        ..RunOptions::default()
    };
    let mut rows: Vec<Vec<CellResult>> = Vec::new();
    for sc in &scs {
        let mut row = Vec::new();
        for &p in &pols {
            match run_cell(sc, p, &opts) {
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

fn cell_json(c: &CellResult) -> serde_json::Value {
    json!({
        "scenario": c.scenario,
        "policy": c.policy.name(),
        "verdict": if c.violations.is_empty() { "ok" } else { "violation" },
        "violations": c.oracle_names(),
        "details": c.violations.iter().map(|(v, k)| json!({"oracle": v.oracle.name(), "step": v.step, "detail": v.detail, "schedule": k.to_string()})).collect::<Vec<_>>(),
        "outcome": c.outcome,
        "outcomes": c.outcomes.iter().enumerate().map(|(v, accs)| json!({"vcpu": v, "accesses": accs})).collect::<Vec<_>>(),
        "nested": c.nested,
        "schedules": c.schedules,
        "expected": c.matches,
    })
}

fn print_matrix(rows: &[Vec<CellResult>], pols: &[model::kvm::PolicyId], trace: bool) {
    let mut o = String::new();
    let name_w = rows
        .iter()
        .filter_map(|r| r.first())
        .map(|c| c.scenario.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| match c.matches {
                    Some(false) => format!("{} (!)", c.cell()),
                    _ => c.cell(),
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
    out!(o, "{:<name_w$}", "scenario");
    for (j, p) in pols.iter().enumerate() {
        out!(o, "  {:<w$}", p.name(), w = col_w[j]);
    }
    o.push('\n');
    for (r, row) in rows.iter().zip(&cells) {
        out!(o, "{:<name_w$}", r[0].scenario);
        for (j, c) in row.iter().enumerate() {
            out!(o, "  {:<w$}", c, w = col_w[j]);
        }
        o.push('\n');
    }
    let mismatches: Vec<&CellResult> = rows
        .iter()
        .flatten()
        .filter(|c| c.matches == Some(false))
        .collect();
    if !mismatches.is_empty() {
        outln!(o, "\n(!) differs from the scenario's [expect]:");
        for c in mismatches {
            outln!(o, "  {} / {}: got {}", c.scenario, c.policy, c.cell());
        }
    }
    let violated: Vec<&CellResult> = rows
        .iter()
        .flatten()
        .filter(|c| !c.violations.is_empty())
        .collect();
    if !violated.is_empty() {
        outln!(
            o,
            "\nviolations (first per oracle; rerun with --trace for the steps):"
        );
        for c in violated {
            for (v, k) in &c.violations {
                outln!(o, "  {} / {} [{k}] {v}", c.scenario, c.policy);
            }
        }
    }
    if trace {
        for c in rows.iter().flatten() {
            outln!(
                o,
                "\n=== {} / {} ({}): {}",
                c.scenario,
                c.policy,
                c.witness.schedule,
                c.cell()
            );
            for (v, acc) in c.witness.outcomes.iter().enumerate() {
                for a in acc {
                    outln!(o, "  vcpu{v} {a}");
                }
            }
            for n in &c.witness.nested {
                outln!(o, "  nested: {n}");
            }
            for v in &c.witness.violations {
                outln!(o, "  violation at {v}");
            }
            out!(o, "{}", c.witness.trace);
        }
    }
    crate::emit(&o);
}
