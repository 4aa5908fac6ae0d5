//! `kvmmu diff`: is what real KVM did one of the things the model says can happen?
//!
//! The model side explores every interleaving of the scenario under policy linux-6.13 (the
//! host kernel here is 6.18, whose `hva_to_pfn` is the 6.13 code, kernel-history §c) with the
//! checker (dpor; the scenario's `[check]` bound if it declares one; at most
//! [`MODEL_EXECUTIONS`] executions) and keeps every distinct *whole observation*: each
//! access's attempts and the userfaultfd messages of one execution together. The real side
//! runs the adapted plan ([`crate::plan`]) `--repeat N` times, each in a fresh process
//! ([`crate::probe::run_plan`]), in whatever order its threads take.
//!
//! A real run is *allowed* when its whole observation equals one of the model's, after
//! normalisation ([`crate::probe::Norm`]): a value read, a completed write (the model's
//! `Emulated`, KVM writing through the host mapping without an exit, is a completed write to
//! the VMM too), an MMIO exit with the same address, length and data, EFAULT; a load of
//! kernel data the model does not know (the vDSO pages) matches any value. The verdict is
//! "allowed" when every real run is, and the coverage says how many of the model's
//! observations real KVM was seen to produce. Per access, the table shows the distinct
//! values on each side.
//!
//! `--mode emulated` runs the guest at CPL0, where KVM's instruction emulator (not
//! `hva_to_pfn`) reaches guest memory and inaccessible memory becomes MMIO instead of
//! EFAULT (realkvm.md §0); the model then predicts the emulated path too
//! ([`model::harness::BuildOptions::emulated`]), and a disagreement fails as in native mode.
//! `--predict` compares one mode's real runs with the other mode's prediction (which real
//! KVM should refute wherever the paths differ).
//!
//! Exit status: 0 when every compared scenario is allowed, 1 on a real run the model does not
//! allow or a failed probe run, 2 on bad input or unusable KVM.

use crate::plan::Adapted;
use crate::probe::{attempts_text, error_status, mode_name, norm_exits, prepare};
use crate::text::Pad;
use crate::{Format, ModeArg};
use ::probe::{Mode, ProbeResult};
use check::{Options, Strategy};
use model::harness::{host_step_item, uffd_item, CellProgram};
use model::kvm::PolicyId;
use scenario::{Backing, Scenario};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

/// The policy the model runs by default: the real host's `hva_to_pfn` era. `--policy`
/// compares real KVM with another era's model instead (which real KVM should then refute).
pub const POLICY: PolicyId = PolicyId::Linux6_13;
/// At most this many model executions per scenario (every built-in needs far fewer).
pub const MODEL_EXECUTIONS: u64 = 200_000;

/// One whole observation: per access (vCPU order, then program order) its attempts in the
/// probe's words (`0x1`, `EFAULT -> 0x600d600d`), then the userfaultfd item if the scenario
/// has a userfault mapping (`uffd ram:0:r ...`).
pub type Observation = Vec<String>;

/// What the model says can happen.
pub struct ModelSet {
    pub observations: BTreeSet<Observation>,
    pub executions: u64,
    /// Every interleaving (within the scenario's declared bound) was explored and every
    /// distinct observation kept.
    pub complete: bool,
    /// The scenario's `[check]` preemption bound, if it declares one.
    pub bound: Option<u32>,
    /// Oracles linux-6.13 violates on this scenario (a note: the model itself is broken).
    pub violations: Vec<&'static str>,
    /// The era explored.
    pub policy: PolicyId,
    /// The emulated path was predicted (else the native one).
    pub emulated: bool,
}

/// Explores the scenario on the model and collects its distinct whole observations.
pub fn model_set(sc: &Scenario, policy: PolicyId, emulated: bool) -> Result<ModelSet, String> {
    let bound = sc.check.as_ref().map(|c| c.preemptions);
    let opts = Options {
        strategy: Strategy::Dpor,
        preemptions: bound,
        max_executions: Some(MODEL_EXECUTIONS),
        counterexamples: false,
        observe: true,
        ..Options::default()
    };
    let mut prog = CellProgram::new(sc, policy);
    prog.build.emulated = emulated;
    let r = check::explore(&mut prog, &opts, &mut |_| {}).map_err(|e| e.to_string())?;
    // Everything real KVM can show too: not the nested maps (model-only).
    let keep = |item: &String| !item.starts_with("nested");
    let observations = r
        .joint
        .iter()
        .map(|o| {
            o.iter()
                .filter(|i| keep(i))
                .map(|i| model_item(i))
                .collect()
        })
        .collect();
    let only_bound = r.cuts.iter().all(|c| *c == check::Cut::Bound);
    Ok(ModelSet {
        observations,
        executions: r.executions,
        complete: only_bound && !r.joint_truncated,
        bound,
        violations: r.oracles(),
        policy,
        emulated,
    })
}

/// A model item in the probe's words: `vcpu0 write32 0x10000 = 0x5: done (emulated)` is a
/// completed write to the VMM.
fn model_item(item: &str) -> String {
    item.replace("done (emulated)", "done")
}

/// A real run's whole observation, in the model's item format.
pub fn real_observation(sc: &Scenario, r: &ProbeResult) -> Observation {
    let mut out = Vec::new();
    for (v, cpu) in sc.vcpus.iter().enumerate() {
        for (i, op) in cpu.program.iter().enumerate() {
            let atts = r
                .accesses
                .iter()
                .find(|x| x.vcpu == v && x.index == i)
                .map(|x| norm_exits(&x.attempts))
                .unwrap_or_default();
            out.push(format!("vcpu{v} {op}: {}", attempts_text(&atts)));
        }
    }
    if sc.mappings.iter().any(|m| m.backing == Backing::Userfault) {
        let ev: Vec<(String, u64, bool)> = r
            .uffd_events
            .iter()
            .map(|e| (e.backing.clone(), e.page, e.write))
            .collect();
        out.push(uffd_item(&ev, sc.vcpus.len() > 1));
    }
    for (p, v) in sc.peeks().into_iter().zip(&r.peeks) {
        out.push(format!("{p}: {v}"));
    }
    // The plan's host steps are the mappings' touches, then the scenario's steps.
    let touches: usize = sc.mappings.iter().map(|m| m.touch.len()).sum();
    for (k, what) in model::harness::memslot_steps(sc) {
        let got = r.host_steps.get(touches + k).cloned().flatten();
        out.push(host_step_item(
            k,
            &what,
            got.as_deref().unwrap_or("not run"),
        ));
    }
    out
}

/// The value part of an item (`EFAULT -> 0x1` of `vcpu0 read32 0x10000: EFAULT -> 0x1`).
fn value_of(item: &str) -> &str {
    item.split_once(": ").map_or(item, |(_, v)| v)
}

/// Whether a real item is allowed by a model item: equal, or equal but where the model
/// read kernel data it does not know and real KVM read some value.
fn item_allows(model: &str, real: &str) -> bool {
    if model == real {
        return true;
    }
    let (Some((mo, mv)), Some((ro, rv))) = (model.split_once(": "), real.split_once(": ")) else {
        return false;
    };
    mo == ro && model::harness::seen_allows(mv, rv)
}

fn observation_allows(model: &Observation, real: &Observation) -> bool {
    model.len() == real.len() && model.iter().zip(real).all(|(m, r)| item_allows(m, r))
}

/// One access (or the userfaultfd messages) compared: the distinct values on each side.
pub struct Row {
    pub label: String,
    pub model: Vec<String>,
    pub kvm: Vec<String>,
    /// Every real value is allowed by one of the model's.
    pub agree: bool,
}

/// One scenario compared.
pub struct Compared {
    /// The era whose model was compared.
    pub policy: PolicyId,
    pub rows: Vec<Row>,
    pub runs: usize,
    /// Real runs whose whole observation the model allows.
    pub allowed_runs: usize,
    /// Distinct real observations, with how many runs showed each and whether allowed.
    pub real: Vec<(Observation, usize, bool)>,
    pub model_observations: usize,
    /// Model observations real KVM was seen to produce.
    pub covered: usize,
    pub model_executions: u64,
    pub model_complete: bool,
    pub notes: Vec<String>,
    /// The scenario's `[[seen]]` values (for the compared policy) real KVM broke.
    pub seen_mismatches: Vec<String>,
}

impl Compared {
    /// Every real run is one of the things the model says can happen.
    pub fn agree(&self) -> bool {
        self.allowed_runs == self.runs && self.seen_mismatches.is_empty()
    }

    /// `2 of 3 real run(s) allowed; real KVM produced 1 of the model's 2 observation(s)`.
    pub fn summary(&self) -> String {
        format!(
            "{} of {} real run(s) allowed; real KVM produced {} of the model's {} observation(s)",
            self.allowed_runs, self.runs, self.covered, self.model_observations
        )
    }
}

/// Compares the model's set with the real runs of the same scenario.
pub fn compare(sc: &Scenario, a: &Adapted, m: &ModelSet, runs: &[ProbeResult]) -> Compared {
    let mut real: BTreeMap<Observation, usize> = BTreeMap::new();
    for r in runs {
        *real.entry(real_observation(sc, r)).or_insert(0) += 1;
    }
    let allowed = |o: &Observation| m.observations.iter().any(|x| observation_allows(x, o));
    let real: Vec<(Observation, usize, bool)> = real
        .into_iter()
        .map(|(o, n)| {
            let ok = allowed(&o);
            (o, n, ok)
        })
        .collect();
    let covered = m
        .observations
        .iter()
        .filter(|x| real.iter().any(|(o, _, _)| observation_allows(x, o)))
        .count();
    let width = m
        .observations
        .iter()
        .chain(real.iter().map(|(o, _, _)| o))
        .map(Vec::len)
        .max()
        .unwrap_or(0);
    let mut rows = Vec::new();
    // Per item, the distinct real values: for the rows and for the `[[seen]]` check.
    let mut observed: Vec<Vec<String>> = Vec::with_capacity(width);
    for k in 0..width {
        let distinct = |it: &mut dyn Iterator<Item = &Observation>| {
            let mut v: Vec<String> = Vec::new();
            for o in it {
                if let Some(x) = o.get(k) {
                    let x = x.to_string();
                    if !v.contains(&x) {
                        v.push(x);
                    }
                }
            }
            v
        };
        let mi = distinct(&mut m.observations.iter());
        let ri = distinct(&mut real.iter().map(|(o, _, _)| o));
        let label = mi
            .first()
            .or(ri.first())
            .map(|x| {
                x.split_once(": ")
                    .map_or(x.as_str(), |(l, _)| l)
                    .to_string()
            })
            .unwrap_or_default();
        let agree = ri.iter().all(|r| mi.iter().any(|x| item_allows(x, r)));
        rows.push(Row {
            label,
            model: mi.iter().map(|x| value_of(x).to_string()).collect(),
            kvm: ri.iter().map(|x| value_of(x).to_string()).collect(),
            agree,
        });
        observed.push(ri);
    }
    let mut notes = a.notes.clone();
    if m.observations
        .iter()
        .flatten()
        .any(|i| i.contains("kernel data"))
    {
        notes.push(
            "loads of kernel data (the vDSO pages) are compared as outcomes only: the model \
             does not know their values"
                .into(),
        );
    }
    if !m.complete {
        notes.push(format!(
            "the model's set is not complete: {} executions{}",
            m.executions,
            m.bound
                .map(|b| format!(", schedules with at most {b} preemptions"))
                .unwrap_or_default()
        ));
    }
    if !m.violations.is_empty() {
        notes.push(format!("the model violates: {}", m.violations.join(", ")));
    }
    // `[[seen]]` states the native path: it holds real KVM to it where the native path is
    // predicted (with `--mode emulated --predict native`: whether it holds in emulated mode).
    let seen_mismatches = if !m.emulated {
        model::harness::seen_mismatches(sc, m.policy, &observed)
    } else {
        Vec::new()
    };
    Compared {
        policy: m.policy,
        seen_mismatches,
        rows,
        runs: runs.len(),
        allowed_runs: real.iter().filter(|r| r.2).map(|r| r.1).sum(),
        model_observations: m.observations.len(),
        covered,
        model_executions: m.executions,
        model_complete: m.complete,
        real,
        notes,
    }
}

/// One scenario's comparison: compared (with the real MMU), not realizable, or failed (with
/// the exit status it asks for).
pub enum Verdict {
    Compared(Compared, String),
    Skipped(String),
    Failed(String, u8),
}

/// Runs `sc` on the model (every interleaving) and, when realizable, `repeat` times on real
/// KVM, and compares.
pub fn compare_one(
    sc: &Scenario,
    a: &Result<Adapted, String>,
    policy: PolicyId,
    predict: Mode,
    repeat: usize,
) -> Verdict {
    let a = match a {
        Err(reason) => return Verdict::Skipped(reason.clone()),
        Ok(a) => a,
    };
    let m = match model_set(sc, policy, predict == Mode::Emulated) {
        Ok(m) => m,
        Err(e) => return Verdict::Failed(format!("model: {e}"), 2),
    };
    let mut runs = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        match crate::probe::run_plan(&a.plan) {
            Ok(r) => runs.push(r),
            Err(e) => return Verdict::Failed(format!("real KVM: {e}"), error_status(&e)),
        }
    }
    let mmu = runs.first().map(|r| r.mmu.clone()).unwrap_or_default();
    Verdict::Compared(compare(sc, a, &m, &runs), mmu)
}

pub fn diff(
    args: &[String],
    format: Format,
    mode: ModeArg,
    predict: Option<ModeArg>,
    policy: &str,
    repeat: usize,
    report: Option<&std::path::Path>,
) -> ExitCode {
    let predict = predict.unwrap_or(mode).probe();
    let mode = mode.probe();
    let Some(policy) = PolicyId::from_name(policy) else {
        let names: Vec<&str> = PolicyId::ALL.iter().map(|p| p.name()).collect();
        eprintln!(
            "kvmmu: unknown policy {policy:?}; expected one of {}",
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    let adapted = match prepare(args, mode) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let Some(dir) = report {
        if let Err(e) = crate::reportdata::prepare_dir(dir) {
            eprintln!("kvmmu: {e}");
            return ExitCode::from(2);
        }
    }
    let mmu = ::probe::mmu_description();
    let mut o = String::new();
    let (mut agree, mut differ, mut skipped, mut failed) = (0, 0, 0, 0);
    let mut status = 0u8;
    let mut verdicts = Vec::new();
    for (sc, a) in &adapted {
        let v = compare_one(sc, a, policy, predict, repeat);
        match &v {
            Verdict::Compared(c, _) if c.agree() => agree += 1,
            Verdict::Compared(..) => {
                differ += 1;
                status = status.max(1);
            }
            Verdict::Skipped(_) => skipped += 1,
            Verdict::Failed(_, s) => {
                failed += 1;
                status = status.max(*s);
            }
        }
        match format {
            Format::Text => text(&mut o, sc, mode, predict, policy, &v),
            Format::Json => outln!(o, "{}", to_json(sc, mode, predict, policy, &mmu, &v)),
        }
        verdicts.push(v);
    }
    if format == Format::Text {
        let label = if predict != mode {
            format!(" (model: the {} path)", mode_name(predict))
        } else {
            String::new()
        };
        outln!(
            o,
            "\n{} scenario(s), {}, {repeat} real run(s) each{label}: {agree} allowed by the model, {differ} not allowed, {skipped} skipped (not realizable), {failed} failed",
            adapted.len(),
            mode_name(mode)
        );
    }
    crate::emit(&o);
    if let Some(dir) = report {
        let scs: Vec<Scenario> = adapted.iter().map(|(sc, _)| sc.clone()).collect();
        if let Err(e) = crate::reportcmd::write_compared(&scs, mode, policy, &verdicts, dir) {
            eprintln!("kvmmu: {e}");
            return ExitCode::from(2);
        }
    }
    ExitCode::from(status)
}

fn text(o: &mut String, sc: &Scenario, mode: Mode, predict: Mode, policy: PolicyId, v: &Verdict) {
    let (c, real_mmu) = match v {
        Verdict::Skipped(r) => {
            outln!(o, "{}: skip: {r}", sc.name);
            return;
        }
        Verdict::Failed(e, _) => {
            outln!(o, "{}: error: {e}", sc.name);
            return;
        }
        Verdict::Compared(c, mmu) => (c, mmu),
    };
    let label = if predict != mode {
        format!("; model: the {} path", mode_name(predict))
    } else {
        String::new()
    };
    outln!(
        o,
        "{}  [{}; mmu: {real_mmu}; model: {}, {} observation(s) over {} execution(s){label}]",
        sc.name,
        mode_name(mode),
        policy.name(),
        c.model_observations,
        c.model_executions
    );
    for n in &c.notes {
        outln!(o, "  note: {n}");
    }
    let mut lines: Vec<[String; 4]> = vec![[
        "access".into(),
        "model (any of)".into(),
        "real KVM (seen)".into(),
        "allowed".into(),
    ]];
    for r in &c.rows {
        lines.push([
            r.label.clone(),
            r.model.join(" | "),
            r.kvm.join(" | "),
            yes(r.agree).into(),
        ]);
    }
    let w: Vec<usize> = (0..3)
        .map(|j| {
            lines
                .iter()
                .map(|l| l[j].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for l in &lines {
        outln!(
            o,
            "  {}  {}  {}  {}",
            Pad(&l[0], w[0]),
            Pad(&l[1], w[1]),
            Pad(&l[2], w[2]),
            l[3]
        );
    }
    let verdict = match (c.agree(), mode) {
        (true, _) => "allowed by the model",
        (false, _) if c.allowed_runs == c.runs => {
            "allowed by the model, but NOT the scenario's [[seen]] values"
        }
        (false, _) => "NOT ALLOWED by the model",
    };
    for m in &c.seen_mismatches {
        outln!(o, "  [[seen]] broken by real KVM: {m}");
    }
    outln!(o, "  => {verdict}: {}", c.summary());
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}

fn to_json(
    sc: &Scenario,
    mode: Mode,
    predict: Mode,
    policy: PolicyId,
    mmu: &str,
    v: &Verdict,
) -> serde_json::Value {
    let base = |agree: bool, skipped: Option<&str>, error: Option<&str>| {
        json!({
            "scenario": sc.name,
            "agree": agree,
            "mode": mode_name(mode),
            "mmu": mmu,
            "model_policy": policy.name(),
            "prediction": mode_name(predict),
            "fails": false,
            "accesses": [],
            "notes": [],
            "skipped": skipped,
            "error": error,
        })
    };
    match v {
        Verdict::Skipped(r) => base(true, Some(r), None),
        Verdict::Failed(e, _) => {
            let mut j = base(false, None, Some(e));
            j["fails"] = json!(true);
            j
        }
        Verdict::Compared(c, real_mmu) => {
            let mut j = base(c.agree(), None, None);
            j["mmu"] = json!(real_mmu);
            j["fails"] = json!(!c.agree());
            j["notes"] = json!(c.notes);
            j["runs"] = json!(c.runs);
            j["allowed_runs"] = json!(c.allowed_runs);
            j["model"] = json!({
                "executions": c.model_executions,
                "complete": c.model_complete,
                "observations": c.model_observations,
            });
            j["coverage"] = json!({"seen": c.covered, "of": c.model_observations});
            j["seen_mismatches"] = json!(c.seen_mismatches);
            j["real"] = c
                .real
                .iter()
                .map(|(o, n, ok)| json!({"observation": o, "runs": n, "allowed": ok}))
                .collect();
            j["accesses"] = c
                .rows
                .iter()
                .map(|r| {
                    json!({
                        "access": r.label,
                        "model": r.model,
                        "kvm": r.kvm,
                        "agree": r.agree,
                    })
                })
                .collect();
            j
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Norm;
    use model::kvm::vcpu::Outcome;

    #[test]
    fn model_items_read_like_the_probe() {
        // The model's Display of its outcomes is the probe's Norm Display, except that a
        // write KVM emulated through the host mapping is a completed write to the VMM.
        assert_eq!(
            Outcome::Value(0x1).to_string(),
            Norm::Value(0x1).to_string()
        );
        assert_eq!(
            Outcome::MmioWrite {
                gpa: 0x10004,
                len: 4,
                data: 0x99999999
            }
            .to_string(),
            Norm::MmioWrite {
                gpa: 0x10004,
                len: 4,
                data: 0x99999999
            }
            .to_string()
        );
        assert_eq!(Outcome::Efault.to_string(), Norm::Efault.to_string());
        assert_eq!(
            Outcome::MmioRead { gpa: 1, len: 4 }.to_string(),
            Norm::MmioRead { gpa: 1, len: 4 }.to_string()
        );
        assert_eq!(Outcome::Done.to_string(), Norm::Done.to_string());
        assert_eq!(
            model_item("vcpu0 write32 0x1 = 0x5: done (emulated)"),
            "vcpu0 write32 0x1 = 0x5: done"
        );
    }

    #[test]
    fn kernel_data_allows_any_value_and_nothing_else() {
        let m = "vcpu0 read32 0x12000: kernel data";
        assert!(item_allows(m, "vcpu0 read32 0x12000: 0x318"));
        assert!(!item_allows(m, "vcpu0 read32 0x12000: EFAULT"));
        assert!(!item_allows(m, "vcpu0 read32 0x12004: 0x318"));
        assert!(item_allows(
            "vcpu0 read32 0x1: EFAULT -> kernel data",
            "vcpu0 read32 0x1: EFAULT -> 0x7"
        ));
        assert!(!item_allows(
            "vcpu0 read32 0x1: 0x7",
            "vcpu0 read32 0x1: 0x8"
        ));
    }

    #[test]
    fn a_race_gives_the_model_several_observations_and_real_runs_need_only_one() {
        // The host's store races the guest's read: the model allows both values.
        let text = r#"
name = "x"
[[mapping]]
name = "ram"
backing = "anon-private"
pages = 1
fill = 0x11111111
[[memslot]]
slot = 1
gpa = 0x10000
mapping = "ram"
pages = 1
[[vcpu]]
program = [{ read = 0x10000 }]
[[host]]
action = "write"
mapping = "ram"
value = 0x22222222
"#;
        let sc = scenario::parse("x.toml", text).unwrap();
        let m = model_set(&sc, POLICY, false).unwrap();
        assert!(m.complete);
        let values: BTreeSet<&str> = m.observations.iter().map(|o| value_of(&o[0])).collect();
        assert_eq!(values, BTreeSet::from(["0x11111111", "0x22222222"]));
        let real: Observation = vec!["vcpu0 read32 0x10000: 0x22222222".into()];
        assert!(m.observations.iter().any(|o| observation_allows(o, &real)));
        let wrong: Observation = vec!["vcpu0 read32 0x10000: 0x33333333".into()];
        assert!(!m.observations.iter().any(|o| observation_allows(o, &wrong)));
    }
}
