//! `kvmmu merge`: shard results in, one verdict per (scenario, policy) out — the result one
//! process would have printed: executions add up, violations join (the shortest
//! counterexample kept, confirmed again by replay), and a cell is complete only when every
//! shard's share of it was.

use crate::cell::Cell;
use crate::checkcmd::{self, CheckArgs, Done};
use crate::input::Source;
use crate::replay::content_hash;
use crate::shard::{ShardFile, FORMAT};
use crate::Format;
use check::{Level, Strategy};
use model::harness::CellProgram;
use model::kvm::PolicyId;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// What `kvmmu merge` was asked.
#[derive(clap::Args)]
pub struct MergeArgs {
    /// Shard result files, or directories of them (every `*.json` inside).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Where replay files go.
    #[arg(long, value_name = "DIR", default_value = "kvmmu-replays")]
    pub replay_dir: PathBuf,
    /// Write no replay files.
    #[arg(long)]
    pub no_replay_files: bool,
    /// Write the result here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn merge(m: &MergeArgs) -> ExitCode {
    match load(&m.inputs).and_then(|files| combine(m, files)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvmmu: merge: {e}");
            ExitCode::from(2)
        }
    }
}

/// Read every shard file named, or found in a named directory.
fn load(inputs: &[String]) -> Result<Vec<(PathBuf, ShardFile)>, String> {
    let mut paths = Vec::new();
    for i in inputs {
        let p = Path::new(i);
        if p.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("cannot read directory {i}: {e}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            inside.sort();
            if inside.is_empty() {
                return Err(format!("{i}: no *.json shard files in this directory"));
            }
            paths.extend(inside);
        } else {
            paths.push(p.to_path_buf());
        }
    }
    let mut out = Vec::new();
    for p in paths {
        let text =
            std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        let f: ShardFile = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a shard file: {e}", p.display()))?;
        if f.format != FORMAT {
            return Err(format!(
                "{}: format {:?}, expected {FORMAT:?}",
                p.display(),
                f.format
            ));
        }
        out.push((p, f));
    }
    Ok(out)
}

/// Check that the files are the N shards of one campaign, then merge them cell by cell.
fn combine(m: &MergeArgs, files: Vec<(PathBuf, ShardFile)>) -> Result<ExitCode, String> {
    let (p0, f0) = files.first().ok_or("no shard files given")?;
    let ours = env!("CARGO_PKG_VERSION");
    let n = f0.shards;
    let mut by_index: Vec<Option<&Path>> = vec![None; n];
    for (p, f) in &files {
        if f.kvmmu != ours {
            return Err(format!(
                "{} was written by kvmmu {}, this is kvmmu {ours}: results of different versions are not comparable",
                p.display(),
                f.kvmmu
            ));
        }
        if f.shards != n {
            return Err(format!(
                "{} is shard {} of {}, but {} is of {n}: not one campaign",
                p.display(),
                f.shard,
                f.shards,
                p0.display()
            ));
        }
        if f.campaign != f0.campaign {
            return Err(format!(
                "{} was explored with other options than {} ({:?} vs {:?})",
                p.display(),
                p0.display(),
                f.campaign,
                f0.campaign
            ));
        }
        let slot = by_index.get_mut(f.shard).ok_or(format!(
            "{}: shard {} of {n} is out of range",
            p.display(),
            f.shard
        ))?;
        if let Some(other) = slot {
            return Err(format!(
                "shard {} of {n} appears twice: {} and {}",
                f.shard,
                other.display(),
                p.display()
            ));
        }
        *slot = Some(p);
        check_cells(p, f, p0, f0)?;
    }
    let missing: Vec<String> = (0..n)
        .filter(|&k| by_index[k].is_none())
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing shard{} {} of {n}",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", ")
        ));
    }
    let strategy = Strategy::from_name(&f0.campaign.strategy)
        .ok_or(format!("unknown strategy {:?}", f0.campaign.strategy))?;
    let args = view_args(m, f0, strategy);
    let mut done = Vec::new();
    let mut elapsed = Duration::ZERO;
    for (c, part0) in f0.cells.iter().enumerate() {
        let src = source(part0)?;
        let policy = PolicyId::from_name(&part0.policy)
            .ok_or(format!("unknown policy {:?}", part0.policy))?;
        let mut parts: Vec<Vec<Level>> = Vec::new();
        for (_, f) in &files {
            let mut levels = Vec::new();
            for l in &f.cells[c].levels {
                levels.push(l.to_level(strategy)?);
            }
            parts.push(levels);
        }
        let mut report = check::combine(parts).ok_or("a cell with no levels")?;
        elapsed = elapsed.max(report.elapsed);
        // Confirm the kept counterexamples by replay (and get their stories back).
        let mut prog = CellProgram::new(&src.scenario, policy);
        for f in report.found.iter_mut() {
            let Some(ce) = f.counterexample.take() else {
                continue;
            };
            f.counterexample = Some(
                match check::confirm(&mut prog, &ce.schedule, f.oracle)
                    .map_err(|e| e.to_string())?
                {
                    Some(c) => c.into_counterexample(f.oracle, true),
                    None => check::Counterexample {
                        confirmed: false,
                        ..ce
                    },
                },
            );
        }
        let cell = Cell::new(&src.scenario, policy, report);
        let replays = checkcmd::write_replays(&args, &src, &cell)?;
        done.push(Done {
            cell,
            replays,
            estimate: None,
        });
    }
    Ok(checkcmd::report(&args, &done, elapsed))
}

/// Every shard must list the same cells, from the same scenario text.
fn check_cells(p: &Path, f: &ShardFile, p0: &Path, f0: &ShardFile) -> Result<(), String> {
    if f.cells.len() != f0.cells.len() {
        return Err(format!(
            "{} has {} cells, {} has {}: not one campaign",
            p.display(),
            f.cells.len(),
            p0.display(),
            f0.cells.len()
        ));
    }
    for (a, b) in f.cells.iter().zip(&f0.cells) {
        if content_hash(&a.content) != a.hash {
            return Err(format!(
                "{}: the text of scenario {} does not match its hash {}",
                p.display(),
                a.scenario,
                a.hash
            ));
        }
        if (&a.scenario, &a.policy) != (&b.scenario, &b.policy) {
            return Err(format!(
                "{} lists {} / {} where {} lists {} / {}: not one campaign",
                p.display(),
                a.scenario,
                a.policy,
                p0.display(),
                b.scenario,
                b.policy
            ));
        }
        if a.hash != b.hash {
            return Err(format!(
                "scenario {} differs between {} ({}) and {} ({}): results of different scenario files are not merged",
                a.scenario,
                p.display(),
                a.hash,
                p0.display(),
                b.hash
            ));
        }
    }
    Ok(())
}

fn source(c: &crate::shard::CellPart) -> Result<Source, String> {
    let scenario = scenario::parse(&c.source, &c.content)
        .map_err(|e| format!("scenario {} in the shard files: {e}", c.scenario))?;
    Ok(Source {
        scenario,
        text: c.content.clone(),
        origin: c.source.clone(),
    })
}

/// The `kvmmu check` arguments the merged result is printed as.
fn view_args(m: &MergeArgs, f: &ShardFile, strategy: Strategy) -> CheckArgs {
    CheckArgs {
        scenarios: Vec::new(),
        policies: Vec::new(),
        strategy,
        preemptions: f.campaign.preemptions,
        budget: None,
        max_executions: f.campaign.max_executions,
        format: m.format,
        seed: f.campaign.seed,
        samples: f.campaign.samples,
        stop_on_violation: f.campaign.stop_on_violation,
        no_minimize: !f.campaign.minimize,
        replay_dir: m.replay_dir.clone(),
        no_replay_files: m.no_replay_files,
        audit: false,
        estimate_dfs: None,
        jobs: None,
        shard: None,
        shards: None,
        out: m.out.clone(),
        split_above: f.campaign.split_above,
        quiet: true,
        report: None,
    }
}
