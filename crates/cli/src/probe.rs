//! `kvmmu probe`: run scenarios on this machine's real `/dev/kvm` and print what happened.
//!
//! Each realizable scenario (see [`crate::plan`]) becomes one VM. Per access the attempts are
//! printed in the same words as `kvmmu run --trace` (`0x1`, `done`, `MMIO write 0x99999999`,
//! `EFAULT -> 0x600d600d`), followed by the userfaultfd events and the host's final view of
//! every accessed offset. Every result names the mode (native: CPL3 code through the shadow
//! MMU and `hva_to_pfn`; emulated: CPL0 code through KVM's instruction emulator) and the
//! host's MMU (`shadow (kvm_pvm, tdp_mmu=N)` here).

use crate::plan::{self, Adapted};
use crate::{input, Format, ModeArg};
use ::probe::{Exit, Mode, ProbeError, ProbeResult};
use scenario::Scenario;
use serde_json::json;
use std::fmt;
use std::process::ExitCode;

/// Runs a plan on real KVM in a fresh process (`kvmmu probe-child`): a `[vvar]` page stays
/// mapped in a process once anything read it, so every scenario starts from a process that
/// has touched nothing ([`::probe::run_isolated`]).
pub fn run_plan(plan: &::probe::Plan) -> Result<ProbeResult, ProbeError> {
    let exe = std::env::current_exe()
        .map_err(|e| ProbeError::Sys(format!("locate the kvmmu executable: {e}")))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("probe-child");
    ::probe::run_isolated(plan, &mut cmd)
}

/// One attempt of an access, normalised so that model and real KVM read the same: an MMIO
/// exit and the completion that follows it (the probe supplies 0 for an MMIO read, then the
/// guest reports that value; an MMIO write is followed by the access's marker) are one
/// outcome, as `KVM_EXIT_MMIO` is one outcome in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Norm {
    Value(u64),
    Done,
    MmioRead {
        gpa: u64,
        len: u8,
    },
    MmioWrite {
        gpa: u64,
        len: u8,
        data: u64,
    },
    Efault,
    /// Anything else (EINTR, SIGBUS, BUG, internal error, shutdown, timeout), described.
    Other(String),
}

impl fmt::Display for Norm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Norm::Value(v) => write!(f, "{v:#x}"),
            Norm::Done => f.write_str("done"),
            Norm::MmioRead { gpa, len } => write!(f, "MMIO read @{gpa:#x}/{len}"),
            Norm::MmioWrite { gpa, len, data } => write!(f, "MMIO write {data:#x} @{gpa:#x}/{len}"),
            Norm::Efault => f.write_str("EFAULT"),
            Norm::Other(s) => f.write_str(s),
        }
    }
}

/// `0x1 -> done`; `not run` when there is no attempt.
pub fn attempts_text(a: &[Norm]) -> String {
    if a.is_empty() {
        return "not run".into();
    }
    a.iter()
        .map(Norm::to_string)
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// The probe's exits of one access, normalised.
pub fn norm_exits(exits: &[Exit]) -> Vec<Norm> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < exits.len() {
        let next = exits.get(i + 1);
        let (n, used) = match (&exits[i], next) {
            (Exit::MmioRead { gpa, len }, Some(Exit::Value(_))) => (
                Norm::MmioRead {
                    gpa: *gpa,
                    len: *len,
                },
                2,
            ),
            (Exit::MmioWrite { gpa, len, data }, Some(Exit::Done)) => (
                Norm::MmioWrite {
                    gpa: *gpa,
                    len: *len,
                    data: *data,
                },
                2,
            ),
            (Exit::MmioRead { gpa, len }, _) => (
                Norm::MmioRead {
                    gpa: *gpa,
                    len: *len,
                },
                1,
            ),
            (Exit::MmioWrite { gpa, len, data }, _) => (
                Norm::MmioWrite {
                    gpa: *gpa,
                    len: *len,
                    data: *data,
                },
                1,
            ),
            (Exit::Value(v), _) => (Norm::Value(*v), 1),
            (Exit::Done, _) => (Norm::Done, 1),
            (Exit::Efault, _) => (Norm::Efault, 1),
            (Exit::InternalError { suberror }, _) => (
                Norm::Other(format!("KVM_EXIT_INTERNAL_ERROR suberror {suberror}")),
                1,
            ),
            (Exit::Shutdown, _) => (Norm::Other("KVM_EXIT_SHUTDOWN".into()), 1),
            (Exit::Timeout, _) => (Norm::Other("timeout".into()), 1),
            (Exit::Other(s), _) => (Norm::Other(s.clone()), 1),
        };
        out.push(n);
        i += used;
    }
    out
}

/// One raw probe exit, for the JSON `exits` list.
pub fn exit_text(e: &Exit) -> String {
    match e {
        Exit::Value(v) => format!("value {v:#x}"),
        Exit::Done => "done".into(),
        Exit::MmioRead { gpa, len } => format!("KVM_EXIT_MMIO read gpa={gpa:#x} len={len}"),
        Exit::MmioWrite { gpa, len, data } => {
            format!("KVM_EXIT_MMIO write gpa={gpa:#x} len={len} data={data:#x}")
        }
        Exit::Efault => "KVM_RUN -1 EFAULT, exit_reason 0".into(),
        Exit::InternalError { suberror } => format!("KVM_EXIT_INTERNAL_ERROR suberror {suberror}"),
        Exit::Shutdown => "KVM_EXIT_SHUTDOWN".into(),
        Exit::Timeout => "timeout (watchdog)".into(),
        Exit::Other(s) => s.clone(),
    }
}

/// `read32 0x10004`, `write32 0x10004 = 0x99999999` (as the model prints accesses).
pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Native => "native",
        Mode::Emulated => "emulated",
    }
}

/// A userfaultfd event as `ram page 0 read`.
pub fn uffd_text(mapping: &str, page: u64, write: bool) -> String {
    format!(
        "{mapping} page {page} {}",
        if write { "write" } else { "read" }
    )
}

/// Exit status for a failed probe run: bad input (2) or a failure of this run (1).
pub fn error_status(e: &ProbeError) -> u8 {
    match e {
        ProbeError::NoKvm(_) | ProbeError::BadPlan(_) => 2,
        ProbeError::Sys(_) | ProbeError::Invalid(_) => 1,
    }
}

/// A scenario and its plan, or why real KVM cannot run it.
pub type Prepared = (Scenario, Result<Adapted, String>);

/// Resolve the arguments and adapt each scenario; on a realizable one, check KVM first.
/// `Err` is the exit status after the one-line message was printed.
pub fn prepare(args: &[String], mode: Mode) -> Result<Vec<Prepared>, ExitCode> {
    let scs = input::scenarios(args).map_err(|e| {
        eprintln!("kvmmu: {e}");
        ExitCode::from(2)
    })?;
    let adapted: Vec<_> = scs
        .into_iter()
        .map(|sc| {
            let a = plan::plan(&sc, mode);
            (sc, a)
        })
        .collect();
    if adapted.iter().any(|(_, a)| a.is_ok()) {
        if let Err(e) = ::probe::kvm_available() {
            eprintln!("kvmmu: /dev/kvm is not usable here: {e}");
            return Err(ExitCode::from(2));
        }
    }
    Ok(adapted)
}

pub fn probe(args: &[String], format: Format, mode: ModeArg) -> ExitCode {
    let mode = mode.probe();
    let adapted = match prepare(args, mode) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let mut o = String::new();
    let mut status = 0u8;
    for (sc, a) in &adapted {
        let a = match a {
            Ok(a) => a,
            Err(reason) => {
                match format {
                    Format::Text => outln!(o, "{}: skip: {reason}", sc.name),
                    Format::Json => outln!(
                        o,
                        "{}",
                        json!({"scenario": sc.name, "mode": mode_name(mode), "skipped": reason})
                    ),
                }
                continue;
            }
        };
        match run_plan(&a.plan) {
            Ok(r) => match format {
                Format::Text => text(&mut o, sc, a, &r),
                Format::Json => outln!(o, "{}", result_json(sc, a, &r)),
            },
            Err(e) => {
                status = status.max(error_status(&e));
                match format {
                    Format::Text => outln!(o, "{}: error: {e}", sc.name),
                    Format::Json => outln!(
                        o,
                        "{}",
                        json!({"scenario": sc.name, "mode": mode_name(mode), "skipped": null, "error": e.to_string()})
                    ),
                }
            }
        }
    }
    crate::emit(&o);
    ExitCode::from(status)
}

fn text(o: &mut String, sc: &Scenario, a: &Adapted, r: &ProbeResult) {
    outln!(o, "{}  [{}; mmu: {}]", sc.name, mode_name(r.mode), r.mmu);
    for n in &a.notes {
        outln!(o, "  note: {n}");
    }
    for (v, cpu) in sc.vcpus.iter().enumerate() {
        for (i, op) in cpu.program.iter().enumerate() {
            let att = r
                .accesses
                .iter()
                .find(|x| x.vcpu == v && x.index == i)
                .map(|x| norm_exits(&x.attempts))
                .unwrap_or_default();
            outln!(o, "  vcpu{v} {}: {}", op.to_string(), attempts_text(&att));
        }
    }
    if r.uffd_events.is_empty() {
        if sc
            .mappings
            .iter()
            .any(|m| m.backing == scenario::Backing::Userfault)
        {
            outln!(o, "  uffd: no events");
        }
    } else {
        let ev: Vec<String> = r
            .uffd_events
            .iter()
            .map(|e| uffd_text(&e.backing, e.page, e.write))
            .collect();
        outln!(o, "  uffd: {}", ev.join(", "));
    }
    if !r.host_reads.is_empty() {
        let hv: Vec<String> = r
            .host_reads
            .iter()
            .map(|(b, off, v)| format!("{b}+{off:#x} = {v:#x}"))
            .collect();
        outln!(o, "  host view after the run: {}", hv.join(", "));
    }
    for (p, v) in sc.peeks().into_iter().zip(&r.peeks) {
        outln!(o, "  {p}: {v}");
    }
    for item in memslot_results(sc, r) {
        outln!(o, "  {item}");
    }
}

/// What the scenario's memslot steps returned on real KVM, as the model's items say it
/// (`host step 0 (set-memslot 1): EINVAL`).
fn memslot_results(sc: &Scenario, r: &ProbeResult) -> Vec<String> {
    crate::diff::real_observation(sc, r)
        .into_iter()
        .filter(|i| i.starts_with("host step "))
        .collect()
}

fn result_json(sc: &Scenario, a: &Adapted, r: &ProbeResult) -> serde_json::Value {
    let mut accesses = Vec::new();
    for (v, cpu) in sc.vcpus.iter().enumerate() {
        for (i, op) in cpu.program.iter().enumerate() {
            let exits = r
                .accesses
                .iter()
                .find(|x| x.vcpu == v && x.index == i)
                .map(|x| x.attempts.clone())
                .unwrap_or_default();
            accesses.push(json!({
                "vcpu": v,
                "index": i,
                "op": op.to_string(),
                "outcome": attempts_text(&norm_exits(&exits)),
                "exits": exits.iter().map(exit_text).collect::<Vec<_>>(),
            }));
        }
    }
    json!({
        "scenario": sc.name,
        "mode": mode_name(r.mode),
        "mmu": r.mmu,
        "skipped": null,
        "notes": a.notes,
        "accesses": accesses,
        "uffd": r.uffd_events.iter().map(|e| json!({"mapping": e.backing, "page": e.page, "write": e.write})).collect::<Vec<_>>(),
        "host_reads": r.host_reads.iter().map(|(b, off, v)| json!({"mapping": b, "offset": off, "value": format!("{v:#x}")})).collect::<Vec<_>>(),
        "seen_reads": sc.peeks().into_iter().zip(&r.peeks).map(|(p, v)| json!({"read": p.to_string(), "value": v})).collect::<Vec<_>>(),
        "memslot_steps": memslot_results(sc, r),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mmio_exit_and_its_completion_are_one_outcome() {
        let e = [
            Exit::MmioRead {
                gpa: 0x11000,
                len: 4,
            },
            Exit::Value(0),
            Exit::Efault,
            Exit::MmioWrite {
                gpa: 0x10004,
                len: 4,
                data: 0x99,
            },
            Exit::Done,
        ];
        assert_eq!(
            norm_exits(&e),
            vec![
                Norm::MmioRead {
                    gpa: 0x11000,
                    len: 4
                },
                Norm::Efault,
                Norm::MmioWrite {
                    gpa: 0x10004,
                    len: 4,
                    data: 0x99
                }
            ]
        );
        assert_eq!(
            attempts_text(&norm_exits(&[Exit::Efault, Exit::Value(0x600d600d)])),
            "EFAULT -> 0x600d600d"
        );
        assert_eq!(attempts_text(&[]), "not run");
    }
}
