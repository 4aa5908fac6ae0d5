//! Shard results on disk (`kvmmu check --shard K/N` writes one, `kvmmu merge` reads them):
//! per cell, per bound level, what this shard's share of the tasks found. Counterexamples
//! travel as schedules and are confirmed again by replay when merged.

use check::{Counterexample, Cut, Found, Level, Outcome, Report, Strategy};
use model::harness::{Headline, Oracle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The format tag of shard files.
pub const FORMAT: &str = "kvmmu-shard/1";

/// What every shard of one campaign must agree on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Campaign {
    pub strategy: String,
    pub preemptions: Option<u32>,
    pub max_executions: Option<u64>,
    pub seed: u64,
    pub samples: u64,
    pub split_depth: u32,
    pub split_above: u64,
    pub minimize: bool,
    pub stop_on_violation: bool,
}

/// One shard's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardFile {
    pub format: String,
    pub kvmmu: String,
    pub shard: usize,
    pub shards: usize,
    pub campaign: Campaign,
    pub cells: Vec<CellPart>,
}

/// One cell's share.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellPart {
    pub scenario: String,
    /// `built-in` or the file's path.
    pub source: String,
    /// `fnv64:<hex>` of `content`.
    pub hash: String,
    pub content: String,
    pub policy: String,
    pub levels: Vec<LevelPart>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LevelPart {
    pub bound: Option<u32>,
    pub executions: u64,
    pub finished: u64,
    pub redundant: u64,
    pub diverged: u64,
    pub max_depth: usize,
    pub cuts: Vec<String>,
    pub found: Vec<FoundPart>,
    pub outcomes: Vec<OutcomePart>,
    pub observed: Vec<Vec<String>>,
    pub elapsed_ms: f64,
    pub divergence: Option<Vec<usize>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FoundPart {
    pub oracle: String,
    pub detail: String,
    pub executions: u64,
    /// The best counterexample's schedule (up to its failing step) and preemptions.
    pub schedule: Option<Vec<usize>>,
    pub preemptions: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutcomePart {
    pub headline: String,
    pub oracles: Vec<String>,
    pub fingerprint: String,
    pub count: u64,
}

impl LevelPart {
    pub fn from_level(l: &Level) -> Self {
        let r = &l.report;
        LevelPart {
            bound: l.bound,
            executions: r.executions,
            finished: r.finished,
            redundant: r.redundant,
            diverged: r.diverged,
            max_depth: r.max_depth,
            cuts: r.cuts.iter().map(|c| c.name().to_string()).collect(),
            found: r
                .found
                .iter()
                .map(|f| FoundPart {
                    oracle: f.oracle.to_string(),
                    detail: f.detail.clone(),
                    executions: f.executions,
                    schedule: f.counterexample.as_ref().map(|c| c.schedule.clone()),
                    preemptions: f.counterexample.as_ref().map(|c| c.preemptions),
                })
                .collect(),
            outcomes: r
                .outcomes
                .iter()
                .map(|(o, n)| OutcomePart {
                    headline: o.headline.name.to_string(),
                    oracles: o.oracles.iter().map(|s| s.to_string()).collect(),
                    fingerprint: format!("{:016x}", o.fingerprint),
                    count: *n,
                })
                .collect(),
            observed: r.observed.clone(),
            elapsed_ms: r.elapsed.as_secs_f64() * 1e3,
            divergence: r.divergence.clone(),
        }
    }

    /// Back to a level report; counterexamples are unconfirmed schedules until replayed.
    pub fn to_level(&self, strategy: Strategy) -> Result<Level, String> {
        let oracle = |n: &str| {
            Oracle::from_name(n)
                .map(|o| o.name())
                .ok_or_else(|| format!("unknown oracle {n:?}"))
        };
        let mut cuts = Vec::new();
        for c in &self.cuts {
            cuts.push(Cut::from_name(c).ok_or_else(|| format!("unknown cut {c:?}"))?);
        }
        let mut found = Vec::new();
        for f in &self.found {
            let o = oracle(&f.oracle)?;
            found.push(Found {
                oracle: o,
                detail: f.detail.clone(),
                executions: f.executions,
                counterexample: f.schedule.as_ref().map(|s| Counterexample {
                    oracle: o,
                    detail: f.detail.clone(),
                    schedule: s.clone(),
                    failing_step: s.len().saturating_sub(1),
                    preemptions: f.preemptions.unwrap_or(0),
                    actors: Vec::new(),
                    steps: Vec::new(),
                    trace: Default::default(),
                    confirmed: true,
                }),
            });
        }
        let mut outcomes = BTreeMap::new();
        for o in &self.outcomes {
            let headline = if o.headline == world::Headline::DIVERGED.name {
                world::Headline::DIVERGED
            } else {
                Headline::ALL
                    .into_iter()
                    .find(|h| h.name() == o.headline)
                    .ok_or_else(|| format!("unknown outcome {:?}", o.headline))?
                    .world()
            };
            let mut oracles = Vec::new();
            for n in &o.oracles {
                oracles.push(oracle(n)?);
            }
            let fingerprint = u64::from_str_radix(&o.fingerprint, 16)
                .map_err(|_| format!("bad fingerprint {:?}", o.fingerprint))?;
            let key = Outcome {
                headline,
                oracles,
                fingerprint,
            };
            *outcomes.entry(key).or_insert(0) += o.count;
        }
        Ok(Level {
            bound: self.bound,
            report: Report {
                strategy,
                preemption_bound: self.bound,
                executions: self.executions,
                finished: self.finished,
                redundant: self.redundant,
                diverged: self.diverged,
                max_depth: self.max_depth,
                cuts,
                found,
                outcomes,
                observed: self.observed.clone(),
                // Whole observations are for `kvmmu diff`; shard files do not carry them.
                joint: Default::default(),
                joint_truncated: false,
                elapsed: Duration::from_secs_f64(self.elapsed_ms.max(0.0) / 1e3),
                divergence: self.divergence.clone(),
            },
        })
    }
}
