//! `kvmmu diff`: the model's prediction next to what real KVM did, access by access.
//!
//! The model side is one deterministic run under policy linux-6.13 (the host kernel here is
//! 6.18, whose `hva_to_pfn` is the 6.13 code, kernel-history §c) with the `vcpus-last`
//! schedule: host steps sequenced with `after` run exactly where the probe runs them, and
//! steps without `after` run before the vCPUs start, as the probe must run them. The real
//! side is [`::probe::run`] of the adapted plan ([`crate::plan`]).
//!
//! Outcomes are compared after normalisation ([`crate::probe::Norm`]): a value read, a
//! completed write (the model's `Emulated` — KVM wrote through the host mapping without an
//! exit — is a completed write to the VMM too), an MMIO exit with the same address, length
//! and (for writes) data, or EFAULT; each access's attempts (first try, then re-runs after a
//! host repair) must match one for one. The userfaultfd first-access events (mapping, page,
//! write flag) must match too: in order for one vCPU, as a multiset for several.
//!
//! `--mode emulated` runs the guest at CPL0, where KVM's instruction emulator (not
//! `hva_to_pfn`) reaches guest memory and inaccessible memory becomes MMIO instead of
//! EFAULT (realkvm.md §0). The model predicts only the native path, so in emulated mode the
//! comparison is printed, labelled "emulated: model predicts the native path", and a
//! difference is not a failure.
//!
//! Exit status: 0 when every compared scenario agrees (or in emulated mode), 1 on a
//! disagreement or a failed probe run, 2 on bad input or unusable KVM.

use crate::plan::Adapted;
use crate::probe::{attempts_text, error_status, mode_name, norm_exits, prepare, uffd_text, Norm};
use crate::text::Pad;
use crate::{Format, ModeArg};
use ::probe::{Mode, ProbeResult};
use model::harness::{run_once, ScheduleKind, SingleRun};
use model::kvm::vcpu::Outcome;
use model::kvm::PolicyId;
use scenario::Scenario;
use serde_json::json;
use std::process::ExitCode;

/// The policy the model runs: the real host's `hva_to_pfn` era.
pub const POLICY: PolicyId = PolicyId::Linux6_13;
const EMULATED_LABEL: &str = "emulated: model predicts the native path";

/// A model outcome in the probe's terms.
pub fn norm_outcome(o: &Outcome) -> Norm {
    match o {
        Outcome::Value(v) => Norm::Value(*v),
        Outcome::Done | Outcome::Emulated => Norm::Done,
        Outcome::MmioRead { gpa, len } => Norm::MmioRead {
            gpa: *gpa,
            len: *len,
        },
        Outcome::MmioWrite { gpa, len, data } => Norm::MmioWrite {
            gpa: *gpa,
            len: *len,
            data: *data,
        },
        Outcome::Efault => Norm::Efault,
        Outcome::Intr => Norm::Other("EINTR".into()),
        Outcome::Sigbus => Norm::Other("SIGBUS".into()),
        Outcome::HostBug => Norm::Other("BUG".into()),
    }
}

/// One compared access.
pub struct Row {
    pub vcpu: usize,
    pub index: usize,
    pub op: String,
    pub model: Vec<Norm>,
    pub kvm: Vec<Norm>,
}

impl Row {
    pub fn agree(&self) -> bool {
        self.model == self.kvm
    }
}

/// One scenario compared.
pub struct Compared {
    pub rows: Vec<Row>,
    pub uffd_model: Vec<(String, u64, bool)>,
    pub uffd_kvm: Vec<(String, u64, bool)>,
    pub uffd_agree: bool,
    pub notes: Vec<String>,
}

impl Compared {
    pub fn agree(&self) -> bool {
        self.uffd_agree && self.rows.iter().all(Row::agree)
    }
}

/// The model's run for comparison with real KVM.
pub fn model_run(sc: &Scenario) -> Result<SingleRun, String> {
    run_once(
        sc,
        POLICY,
        ScheduleKind::VcpusLast,
        false,
        model::harness::step_bound(sc),
    )
}

/// Compare a model run with a probe result of the same scenario.
pub fn compare(sc: &Scenario, a: &Adapted, m: &SingleRun, r: &ProbeResult) -> Compared {
    let mut rows = Vec::new();
    for (v, cpu) in sc.vcpus.iter().enumerate() {
        for (i, op) in cpu.program.iter().enumerate() {
            let model = m
                .raw_outcomes
                .get(v)
                .and_then(|x| x.get(i))
                .map(|x| x.iter().map(norm_outcome).collect())
                .unwrap_or_default();
            let kvm = r
                .accesses
                .iter()
                .find(|x| x.vcpu == v && x.index == i)
                .map(|x| norm_exits(&x.attempts))
                .unwrap_or_default();
            rows.push(Row {
                vcpu: v,
                index: i,
                op: op.to_string(),
                model,
                kvm,
            });
        }
    }
    let uffd_model = m.uffd.clone();
    let uffd_kvm: Vec<(String, u64, bool)> = r
        .uffd_events
        .iter()
        .map(|e| (e.backing.clone(), e.page, e.write))
        .collect();
    let uffd_agree = if sc.vcpus.len() == 1 {
        uffd_model == uffd_kvm
    } else {
        let (mut a, mut b) = (uffd_model.clone(), uffd_kvm.clone());
        a.sort();
        b.sort();
        a == b
    };
    let mut notes = a.notes.clone();
    if !m.violations.is_empty() {
        let v: Vec<String> = m.violations.iter().map(|v| v.to_string()).collect();
        notes.push(format!("the model run violates: {}", v.join("; ")));
    }
    Compared {
        rows,
        uffd_model,
        uffd_kvm,
        uffd_agree,
        notes,
    }
}

pub fn uffd_list(ev: &[(String, u64, bool)]) -> String {
    if ev.is_empty() {
        return "none".into();
    }
    ev.iter()
        .map(|(m, p, w)| uffd_text(m, *p, *w))
        .collect::<Vec<_>>()
        .join(", ")
}

fn uffd_json(ev: &[(String, u64, bool)]) -> Vec<serde_json::Value> {
    ev.iter()
        .map(|(m, p, w)| json!({"mapping": m, "page": p, "write": w}))
        .collect()
}

/// One scenario's comparison: compared (with the real MMU), not realizable, or failed (with
/// the exit status it asks for).
pub enum Verdict {
    Compared(Compared, String),
    Skipped(String),
    Failed(String, u8),
}

/// Run `sc` on the model and (when realizable) on real KVM, and compare.
pub fn compare_one(sc: &Scenario, a: &Result<Adapted, String>) -> Verdict {
    match a {
        Err(reason) => Verdict::Skipped(reason.clone()),
        Ok(a) => match (model_run(sc), ::probe::run(&a.plan)) {
            (Err(e), _) => Verdict::Failed(format!("model: {e}"), 2),
            (_, Err(e)) => Verdict::Failed(format!("real KVM: {e}"), error_status(&e)),
            (Ok(m), Ok(r)) => {
                let c = compare(sc, a, &m, &r);
                Verdict::Compared(c, r.mmu)
            }
        },
    }
}

/// Whether the comparison shows the userfaultfd events (the scenario has a uffd mapping or
/// either side saw one).
pub fn shows_uffd(sc: &Scenario, c: &Compared) -> bool {
    !c.uffd_model.is_empty()
        || !c.uffd_kvm.is_empty()
        || sc
            .mappings
            .iter()
            .any(|m| m.backing == scenario::Backing::Userfault)
}

pub fn diff(
    args: &[String],
    format: Format,
    mode: ModeArg,
    report: Option<&std::path::Path>,
) -> ExitCode {
    let mode = mode.probe();
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
        let v = compare_one(sc, a);
        match &v {
            Verdict::Compared(c, _) if c.agree() => agree += 1,
            Verdict::Compared(..) => {
                differ += 1;
                if mode == Mode::Native {
                    status = status.max(1);
                }
            }
            Verdict::Skipped(_) => skipped += 1,
            Verdict::Failed(_, s) => {
                failed += 1;
                status = status.max(*s);
            }
        }
        match format {
            Format::Text => text(&mut o, sc, mode, &v),
            Format::Json => outln!(o, "{}", to_json(sc, mode, &mmu, &v)),
        }
        verdicts.push(v);
    }
    if format == Format::Text {
        let label = if mode == Mode::Emulated {
            format!(" ({EMULATED_LABEL}; differences are not failures)")
        } else {
            String::new()
        };
        outln!(
            o,
            "\n{} scenario(s), {}{label}: {agree} agree, {differ} disagree, {skipped} skipped (not realizable), {failed} failed",
            adapted.len(),
            mode_name(mode)
        );
    }
    crate::emit(&o);
    if let Some(dir) = report {
        let scs: Vec<Scenario> = adapted.iter().map(|(sc, _)| sc.clone()).collect();
        if let Err(e) = crate::reportcmd::write_compared(&scs, mode, &verdicts, dir) {
            eprintln!("kvmmu: {e}");
            return ExitCode::from(2);
        }
    }
    ExitCode::from(status)
}

fn text(o: &mut String, sc: &Scenario, mode: Mode, v: &Verdict) {
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
    let label = if mode == Mode::Emulated {
        format!("; {EMULATED_LABEL}")
    } else {
        String::new()
    };
    outln!(
        o,
        "{}  [{}; mmu: {real_mmu}; model: {}, host steps before vCPUs{label}]",
        sc.name,
        mode_name(mode),
        POLICY.name()
    );
    for n in &c.notes {
        outln!(o, "  note: {n}");
    }
    let mut lines: Vec<[String; 4]> = vec![[
        "access".into(),
        "model".into(),
        "real KVM".into(),
        "agree".into(),
    ]];
    for r in &c.rows {
        lines.push([
            format!("vcpu{} {}", r.vcpu, r.op),
            attempts_text(&r.model),
            attempts_text(&r.kvm),
            yes(r.agree()).into(),
        ]);
    }
    if shows_uffd(sc, c) {
        lines.push([
            "uffd events".into(),
            uffd_list(&c.uffd_model),
            uffd_list(&c.uffd_kvm),
            yes(c.uffd_agree).into(),
        ]);
    }
    let w: Vec<usize> = (0..3)
        .map(|j| lines.iter().map(|l| l[j].len()).max().unwrap_or(0))
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
        (true, _) => "agree",
        (false, Mode::Native) => "DISAGREE",
        (false, Mode::Emulated) => "differ (expected in emulated mode: not a failure)",
    };
    outln!(o, "  => {verdict}");
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}

fn to_json(sc: &Scenario, mode: Mode, mmu: &str, v: &Verdict) -> serde_json::Value {
    let base = |agree: bool, skipped: Option<&str>, error: Option<&str>| {
        json!({
            "scenario": sc.name,
            "agree": agree,
            "mode": mode_name(mode),
            "mmu": mmu,
            "model_policy": POLICY.name(),
            "prediction": "native",
            "fails": false,
            "accesses": [],
            "uffd": {"model": [], "kvm": [], "agree": true},
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
            j["fails"] = json!(!c.agree() && mode == Mode::Native);
            j["notes"] = json!(c.notes);
            j["accesses"] = c
                .rows
                .iter()
                .map(|r| {
                    json!({
                        "vcpu": r.vcpu,
                        "index": r.index,
                        "op": r.op,
                        "model": attempts_text(&r.model),
                        "kvm": attempts_text(&r.kvm),
                        "agree": r.agree(),
                    })
                })
                .collect();
            j["uffd"] = json!({"model": uffd_json(&c.uffd_model), "kvm": uffd_json(&c.uffd_kvm), "agree": c.uffd_agree});
            if mode == Mode::Emulated {
                j["label"] = json!(EMULATED_LABEL);
            }
            j
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_outcomes_normalise_like_the_probe() {
        assert_eq!(norm_outcome(&Outcome::Emulated), Norm::Done);
        assert_eq!(
            norm_outcome(&Outcome::MmioRead {
                gpa: 0x11000,
                len: 4
            }),
            Norm::MmioRead {
                gpa: 0x11000,
                len: 4
            }
        );
        assert_eq!(
            norm_outcome(&Outcome::MmioWrite {
                gpa: 0x10004,
                len: 4,
                data: 0x99999999
            })
            .to_string(),
            "MMIO write 0x99999999"
        );
    }

    #[test]
    fn the_model_orders_unsequenced_host_steps_before_the_vcpus() {
        // Without `after` the host's store races the guest's read; the probe (and the
        // vcpus-last schedule) run it first.
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
        let m = model_run(&sc).unwrap();
        assert_eq!(m.raw_outcomes[0][0], vec![Outcome::Value(0x2222_2222)]);
    }
}
