//! Replay files: one counterexample, self-contained (the scenario text travels with it, with
//! its hash), and `kvmmu replay FILE`, which reproduces it bit for bit or says why not.

use crate::input::Source;
use check::{Counterexample, Replayed};
use model::harness::CellProgram;
use model::kvm::PolicyId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The format tag of replay files.
pub const FORMAT: &str = "kvmmu-replay/1";

/// A counterexample on disk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplayFile {
    pub format: String,
    /// The kvmmu version that wrote it.
    pub kvmmu: String,
    pub scenario: String,
    /// Where the scenario came from: `built-in` or the file's path.
    pub source: String,
    /// The scenario file's text.
    pub content: String,
    /// `fnv64:<hex>` of `content`.
    pub hash: String,
    pub policy: String,
    pub oracle: String,
    pub detail: String,
    /// Index of the step after which the oracle fails.
    pub failing_step: usize,
    pub preemptions: u32,
    /// The actor chosen at each step.
    pub schedule: Vec<usize>,
    /// Actor names, by id.
    pub actors: Vec<String>,
}

/// `fnv64:<hex>` of a scenario's text.
pub fn content_hash(text: &str) -> String {
    format!("fnv64:{:016x}", world::fnv64(text.as_bytes()))
}

impl ReplayFile {
    pub fn new(src: &Source, policy: PolicyId, ce: &Counterexample) -> Self {
        ReplayFile {
            format: FORMAT.to_string(),
            kvmmu: env!("CARGO_PKG_VERSION").to_string(),
            scenario: src.scenario.name.clone(),
            source: src.origin.clone(),
            content: src.text.clone(),
            hash: content_hash(&src.text),
            policy: policy.name().to_string(),
            oracle: ce.oracle.to_string(),
            detail: ce.detail.clone(),
            failing_step: ce.failing_step,
            preemptions: ce.preemptions,
            schedule: ce.schedule.clone(),
            actors: ce.actors.clone(),
        }
    }

    /// `<dir>/<scenario>--<policy>--<oracle>.json`, with characters that are awkward in
    /// file names replaced.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        dir.join(format!(
            "{}--{}--{}.json",
            clean(&self.scenario),
            clean(&self.policy),
            clean(&self.oracle)
        ))
    }

    pub fn write(&self, dir: &Path) -> Result<PathBuf, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("{}: cannot create directory: {e}", dir.display()))?;
        let p = self.path_in(dir);
        let text = serde_json::to_string_pretty(self).expect("serialisable");
        std::fs::write(&p, text + "\n")
            .map_err(|e| format!("{}: cannot write: {e}", p.display()))?;
        Ok(p)
    }
}

/// `kvmmu replay FILE [--trace]`: exit 0 when the counterexample reproduces exactly, 1 when
/// it does not (and why), 2 on bad input.
pub fn replay(file: &str, trace: bool) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kvmmu: {file}: cannot read: {e}");
            return ExitCode::from(2);
        }
    };
    let rf: ReplayFile = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "kvmmu: {file}:{}:{}: not a kvmmu replay file: {e}",
                e.line(),
                e.column()
            );
            return ExitCode::from(2);
        }
    };
    if rf.format != FORMAT {
        eprintln!(
            "kvmmu: {file}: format {:?}, this kvmmu reads {FORMAT:?}",
            rf.format
        );
        return ExitCode::from(2);
    }
    let hash = content_hash(&rf.content);
    if hash != rf.hash {
        eprintln!(
            "kvmmu: {file}: the scenario text does not match its hash ({hash}, recorded {}): it was edited",
            rf.hash
        );
        return ExitCode::from(2);
    }
    let sc = match scenario::parse(&rf.source, &rf.content) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kvmmu: {file}: the recorded scenario does not parse here: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(policy) = PolicyId::from_name(&rf.policy) else {
        eprintln!("kvmmu: {file}: unknown policy {:?}", rf.policy);
        return ExitCode::from(2);
    };
    let mut o = String::new();
    if rf.kvmmu != env!("CARGO_PKG_VERSION") {
        outln!(
            o,
            "note: recorded by kvmmu {}, replayed by kvmmu {}",
            rf.kvmmu,
            env!("CARGO_PKG_VERSION")
        );
    }
    let mut prog = CellProgram::new(&sc, policy);
    let result = match check::replay(&mut prog, &rf.schedule, &rf.oracle) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kvmmu: {file}: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match result {
        Replayed::Failed(c) => {
            let exact = c.failing_step == rf.failing_step && c.detail == rf.detail;
            let ce = Counterexample {
                oracle: model::harness::Oracle::from_name(&rf.oracle).map_or("?", |x| x.name()),
                detail: c.detail.clone(),
                schedule: c.schedule.clone(),
                failing_step: c.failing_step,
                preemptions: c.preemptions,
                actors: c.actors.clone(),
                steps: c.steps.clone(),
                trace: c.trace.clone(),
                confirmed: true,
            };
            outln!(
                o,
                "{} / {}: {} — {} preemption{}, {} steps",
                rf.scenario,
                rf.policy,
                rf.oracle,
                c.preemptions,
                if c.preemptions == 1 { "" } else { "s" },
                c.failing_step + 1
            );
            out!(o, "{}", check::render_columns(&ce));
            if trace {
                outln!(o, "\nfull trace:");
                out!(o, "{}", c.trace);
            }
            if exact {
                outln!(
                    o,
                    "reproduced bit for bit (failing step {}, same detail)",
                    c.failing_step
                );
                ExitCode::SUCCESS
            } else {
                if c.failing_step != rf.failing_step {
                    outln!(
                        o,
                        "NOT reproduced exactly: {} fails after step {}, recorded after step {}",
                        rf.oracle,
                        c.failing_step,
                        rf.failing_step
                    );
                }
                if c.detail != rf.detail {
                    outln!(
                        o,
                        "NOT reproduced exactly: the detail differs\n  now:      {}\n  recorded: {}",
                        c.detail,
                        rf.detail
                    );
                }
                ExitCode::from(1)
            }
        }
        Replayed::Diverged { step, status } => {
            outln!(
                o,
                "NOT reproduced: at step {step} the schedule picks {} (actor {}), which cannot run there ({status:?}): the model is not the one this file was recorded on",
                rf.actors.get(rf.schedule[step]).map_or("?", String::as_str),
                rf.schedule[step]
            );
            ExitCode::from(1)
        }
        Replayed::Held { status } => {
            outln!(
                o,
                "NOT reproduced: the whole schedule ran ({} steps, {status:?}) and {} held",
                rf.schedule.len(),
                rf.oracle
            );
            ExitCode::from(1)
        }
    };
    crate::emit(&o);
    code
}
