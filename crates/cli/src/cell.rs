//! One (scenario, policy) cell, explored by the checker: what `run` and `check` print of it.

use check::{Level, Options, Part, Progress, Report};
use model::harness::{expectation_met, seen_mismatches, CellProgram, Headline, Oracle};
use model::kvm::PolicyId;
use scenario::Scenario;

/// A cell and its exploration.
pub struct Cell {
    pub scenario: Scenario,
    pub policy: PolicyId,
    pub report: Report,
    /// `Some(false)` when the scenario declares an expectation this cell does not meet.
    pub matches: Option<bool>,
    /// The scenario's `[[seen]]` values this cell's executions broke, one sentence each.
    pub seen_mismatches: Vec<String>,
}

/// Explore one cell (or the share `part` of it) with `jobs` threads; also its bound levels,
/// which a shard reports.
pub fn explore(
    sc: &Scenario,
    policy: PolicyId,
    opts: &Options,
    build: model::harness::BuildOptions,
    jobs: usize,
    part: Part,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(Cell, Vec<Level>), String> {
    let program = || {
        let mut prog = CellProgram::new(sc, policy);
        prog.build = build;
        prog
    };
    let levels = if opts.strategy.exhaustive() {
        let make = || Box::new(program()) as Box<dyn world::Program>;
        check::explore_part(&make, opts, jobs, part, progress).map_err(|e| e.to_string())?
    } else if !part.owns(0) {
        // A sampled cell is not split: it belongs to one shard.
        vec![Level {
            bound: opts.preemptions,
            report: Report::empty(opts.strategy, opts.preemptions),
        }]
    } else {
        let report = check::explore(&mut program(), opts, progress).map_err(|e| e.to_string())?;
        vec![Level {
            bound: opts.preemptions,
            report,
        }]
    };
    let report = check::combine(vec![levels.clone()]).ok_or("nothing explored")?;
    Ok((Cell::new(sc, policy, report), levels))
}

impl Cell {
    /// A cell from its report, judged against the scenario's `[expect]`.
    pub fn new(sc: &Scenario, policy: PolicyId, report: Report) -> Self {
        let mut cell = Cell {
            scenario: sc.clone(),
            policy,
            report,
            matches: None,
            seen_mismatches: Vec::new(),
        };
        let mut sorted = cell.oracles_with_divergence();
        sorted.sort_unstable();
        cell.matches = expectation_met(sc, policy, &sorted, cell.headline());
        // Values are judged only where the exploration observed them (`Options::observe`,
        // which `run` and `check` turn on for scenarios with `[[seen]]`).
        if sc.seen.iter().any(|s| s.applies(policy.name())) && !cell.report.observed.is_empty() {
            cell.seen_mismatches = seen_mismatches(sc, policy, &cell.report.observed);
            if !cell.seen_mismatches.is_empty() {
                cell.matches = Some(false);
            }
        }
        cell
    }

    /// The violated oracles, in the order `kvmmu list` gives them.
    pub fn oracles(&self) -> Vec<&'static str> {
        let mut o = self.report.oracles();
        o.sort_by_key(|n| Oracle::from_name(n).map_or(usize::MAX, |x| x as usize));
        o
    }

    /// The violated oracles, a divergence (livelock) counting as `no-deadlock`.
    pub fn oracles_with_divergence(&self) -> Vec<&'static str> {
        let mut o = self.oracles();
        if self.report.diverged > 0 && !o.contains(&"no-deadlock") {
            o.push("no-deadlock");
            o.sort_by_key(|n| Oracle::from_name(n).map_or(usize::MAX, |x| x as usize));
        }
        o
    }

    /// The most serious outcome over every execution (`BUG`, ..., `ok`).
    pub fn headline(&self) -> Headline {
        Headline::worst(self.report.headlines())
    }

    /// The matrix cell: violated oracles (BUG and DEADLOCK by those words), else the
    /// headline outcome.
    pub fn text(&self) -> String {
        let names = self.oracles_with_divergence();
        if names.is_empty() {
            return self.headline().name().to_string();
        }
        names
            .iter()
            .map(|n| match *n {
                "no-host-bug" => "BUG",
                "no-deadlock" => "DEADLOCK",
                n => n,
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Per vCPU, per access: `read32 0x10000: 0x1 | 0x2` (distinct values over executions).
    pub fn access_outcomes(&self) -> Vec<Vec<String>> {
        let mut per: Vec<Vec<String>> = Vec::new();
        for vals in &self.report.observed {
            let Some(first) = vals.first() else { continue };
            let Some(rest) = first.strip_prefix("vcpu") else {
                continue;
            };
            let Some((v, _)) = rest.split_once(' ') else {
                continue;
            };
            let Ok(v) = v.parse::<usize>() else { continue };
            let prefix = format!("vcpu{v} ");
            // "vcpu0 read32 0x10000: 0x1" -> access "read32 0x10000", value "0x1".
            let (access, _) = first[prefix.len()..]
                .split_once(": ")
                .unwrap_or((&first[prefix.len()..], ""));
            let values: Vec<&str> = vals
                .iter()
                .map(|x| {
                    x[prefix.len()..]
                        .split_once(": ")
                        .map_or("", |(_, val)| val)
                })
                .collect();
            while per.len() <= v {
                per.push(Vec::new());
            }
            per[v].push(format!("{access}: {}", values.join(" | ")));
        }
        per
    }

    /// What the nested maps showed (distinct over executions).
    pub fn nested_outcomes(&self) -> Vec<String> {
        self.report
            .observed
            .iter()
            .filter_map(|vals| {
                let first = vals.first()?;
                first.starts_with("nested").then(|| {
                    vals.iter()
                        .map(|x| x.split_once(' ').map_or(x.as_str(), |(_, r)| r))
                        .collect::<Vec<_>>()
                        .join(" | ")
                })
            })
            .collect()
    }
}
