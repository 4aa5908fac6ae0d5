//! From what `run`, `check` and `diff` computed to the report's typed data
//! ([`report::Report`]), and writing the rendered site to a directory.

use crate::cell::Cell;
use crate::diff::Verdict;
use crate::probe::mode_name;
use check::Counterexample;
use probe::Mode;
use scenario::Scenario;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The command line, for the report's header.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args().collect();
    let mut v = vec!["kvmmu".to_string()];
    v.extend(args.into_iter().skip(1));
    v.join(" ")
}

/// A report with no rows yet.
pub fn base(
    exploration: String,
    exhaustive: bool,
    policies: &[model::kvm::PolicyId],
) -> report::Report {
    report::Report {
        command: command_line(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        exploration,
        exhaustive,
        policies: policies.iter().map(|p| p.name().to_string()).collect(),
        ..report::Report::default()
    }
}

pub fn timeline(ce: &Counterexample, replay: Option<&Path>) -> report::Timeline {
    report::Timeline {
        actors: ce.actors.clone(),
        steps: ce
            .steps
            .iter()
            .map(|s| report::Step {
                step: s.step,
                actor: s.actor,
                func: s.func.clone(),
                what: s.what.clone(),
                lines: s.lines.clone(),
            })
            .collect(),
        failing_step: ce.failing_step,
        oracle: ce.oracle.to_string(),
        detail: ce.detail.clone(),
        preemptions: ce.preemptions,
        confirmed: ce.confirmed,
        replay: replay.map(|p| format!("kvmmu replay {}", p.display())),
    }
}

/// A cell; `replays` name the replay file per oracle, `declared` says the cell ran under
/// the scenario's own `[check]` bound.
pub fn cell(
    c: &Cell,
    replays: &[(&'static str, PathBuf)],
    estimate: Option<f64>,
    declared: bool,
) -> report::Cell {
    let r = &c.report;
    let bound_reason = c
        .scenario
        .check
        .as_ref()
        .filter(|_| declared && r.cuts.contains(&check::Cut::Bound))
        .map(|b| {
            format!(
                "the scenario's [check] bound of {} preemptions: {}",
                b.preemptions, b.why
            )
        });
    report::Cell {
        policy: c.policy.name().to_string(),
        text: c.text(),
        headline: c.headline().name().to_string(),
        violations: r
            .found
            .iter()
            .map(|f| report::Violation {
                oracle: f.oracle.to_string(),
                detail: f.detail.clone(),
                executions: f.executions,
                timeline: f.counterexample.as_ref().map(|ce| {
                    let rp = replays
                        .iter()
                        .find(|(o, _)| *o == f.oracle)
                        .map(|(_, p)| p.as_path());
                    timeline(ce, rp)
                }),
            })
            .collect(),
        expected: c.matches,
        complete: r.complete(),
        cuts: r.cuts.iter().map(|x| x.name().to_string()).collect(),
        bound_reason,
        executions: r.executions,
        elapsed_ms: r.elapsed.as_secs_f64() * 1e3,
        dfs_estimate: estimate,
    }
}

pub fn scenario(sc: &Scenario, origin: &str, cells: Vec<Option<report::Cell>>) -> report::Scenario {
    report::Scenario {
        name: sc.name.clone(),
        origin: origin.to_string(),
        description: sc.description.clone(),
        cells,
        comparison: None,
    }
}

/// `diff`'s verdict for one scenario, as the report shows it.
pub fn comparison(mode: Mode, v: &Verdict) -> report::Comparison {
    match v {
        Verdict::Skipped(r) => report::Comparison::Skipped(r.clone()),
        Verdict::Failed(e, _) => report::Comparison::Failed(e.clone()),
        Verdict::Compared(c, mmu) => {
            let accesses: Vec<report::Access> = c
                .rows
                .iter()
                .map(|r| report::Access {
                    access: r.label.clone(),
                    model: r.model.join(" | "),
                    kvm: r.kvm.join(" | "),
                    agree: r.agree,
                })
                .collect();
            let mut notes = c.notes.clone();
            notes.push(format!(
                "model: any of its {} observation(s); {}",
                c.model_observations,
                c.summary()
            ));
            report::Comparison::Compared {
                mode: mode_name(mode).to_string(),
                mmu: mmu.clone(),
                model_policy: c.policy.name().to_string(),
                accesses,
                notes,
                fails: true,
            }
        }
    }
}

/// Check that `dir` can take the report before anything long runs.
pub fn prepare_dir(dir: &Path) -> Result<(), String> {
    let svg = dir.join("svg");
    std::fs::create_dir_all(&svg).map_err(|e| {
        format!(
            "--report/--out {}: cannot create the directory: {e}",
            dir.display()
        )
    })?;
    let probe = dir.join(".kvmmu-write-test");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| format!("--report/--out {}: not writable: {e}", dir.display()))
}

/// Render `r` and write `index.html` and its SVGs under `dir`; returns the page's path and
/// the milliseconds rendering and writing took.
pub fn write(r: &report::Report, dir: &Path) -> Result<(PathBuf, f64), String> {
    let t = Instant::now();
    prepare_dir(dir)?;
    let site = report::render(r);
    let err = |p: &Path, e: std::io::Error| format!("cannot write {}: {e}", p.display());
    for (name, text) in &site.svgs {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| err(&p, e))?;
    }
    let index = dir.join("index.html");
    std::fs::write(&index, &site.index).map_err(|e| err(&index, e))?;
    Ok((index, t.elapsed().as_secs_f64() * 1e3))
}
