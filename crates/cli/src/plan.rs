//! Scenario → [`probe::Plan`]: what of a scenario real KVM can run, and how.
//!
//! A scenario is *realizable* when every backing is one a VMM process can create on this
//! machine (anonymous, shmem, memfd, files, its own `[vvar]`, userfaultfd, holes, PROT_NONE)
//! and every host step is a syscall it can make. Model-only drivers (vGPU, vfio, usbfs, TTM,
//! mixedmap), device operations (reset, evict), nested `kvm_vcpu_map` and module parameters
//! make it unrealizable: [`plan`] then returns the reason instead of a plan.
//!
//! Host steps: `after = "vcpuV:I"` runs while the vCPU is stopped after access I (or after
//! its first EFAULT, which is then retried), exactly as the model's sequencer does. Steps
//! without `after` run **before the vCPUs start** on real KVM: the model explores them racing
//! with the vCPUs, the probe cannot. `touch` pages become host reads before the run.

use ::probe::{BackingKind, HostAction as PAction, Mode, Plan, Step};
use scenario::{Backing, GuestOp, HostAction, Scenario};

/// A runnable plan and what the reader should know about how it differs from the model run.
pub struct Adapted {
    pub plan: Plan,
    pub notes: Vec<String>,
}

/// Slot ids the probe keeps for its own code and page tables.
const RESERVED_SLOTS: [u32; 2] = [100, 101];
/// vCPUs the probe accepts.
const MAX_VCPUS: usize = 8;

/// The scenario as a probe plan in `mode`, or why real KVM cannot run it.
pub fn plan(sc: &Scenario, mode: Mode) -> Result<Adapted, String> {
    if let Some(r) = &sc.probe_skip {
        return Err(r.clone());
    }
    if !sc.nested.is_empty() {
        return Err(
            "nested kvm_vcpu_map is model-only (no nested virtualization on this PVM host)".into(),
        );
    }
    if sc.allow_unsafe_mappings {
        return Err(
            "needs kvm.allow_unsafe_mappings=1, a module parameter the probe does not change"
                .into(),
        );
    }
    if sc.vcpus.is_empty() {
        return Err("no vCPUs: nothing for real KVM to run".into());
    }
    if sc.vcpus.len() > MAX_VCPUS {
        return Err(format!(
            "{} vCPUs; the probe runs at most {MAX_VCPUS}",
            sc.vcpus.len()
        ));
    }
    let mut notes = Vec::new();
    let mut backings = Vec::new();
    for m in &sc.mappings {
        let (kind, prot_write) = match m.backing {
            b if !b.realizable() => return Err(format!("mapping {:?}: backing {} is model-only", m.name, b.name())),
            Backing::Vvar => (BackingKind::Vvar, false),
            Backing::VvarVclock => (BackingKind::VvarVclock, false),
            Backing::Hole => (BackingKind::Hole, true),
            Backing::ProtNone | Backing::AnonPrivate if !m.read && !m.write => (BackingKind::ProtNone, false),
            // A prot-none backing given r or rw is plain private anon on both sides.
            Backing::ProtNone | Backing::AnonPrivate => (BackingKind::AnonPrivate, m.write),
            Backing::Userfault if m.user_mode_only => {
                return Err(format!("mapping {:?}: UFFD_USER_MODE_ONLY is not implemented by the probe", m.name))
            }
            Backing::Userfault if !(m.read && m.write) => {
                return Err(format!("mapping {:?}: the model's userfault region is always read-write", m.name))
            }
            Backing::Userfault => (BackingKind::Userfault, true),
            b if !m.read => return Err(format!("mapping {:?}: prot \"none\" is realizable only for anonymous private memory, not {}", m.name, b.name())),
            Backing::AnonShared => (BackingKind::AnonShared, m.write),
            Backing::Memfd => (BackingKind::Memfd, m.write),
            Backing::FilePrivate => (BackingKind::FilePrivate, m.write),
            Backing::FileShared => (BackingKind::FileShared, m.write),
            b => return Err(format!("mapping {:?}: backing {} has no probe counterpart", m.name, b.name())),
        };
        backings.push(::probe::Backing {
            name: m.name.clone(),
            kind,
            pages: m.pages,
            prot_write,
            fill: m.fill,
            uffd_delay_ms: m.handler_delay_ms,
            follows: m.follows.clone(),
        });
    }
    let mut memslots = Vec::new();
    for s in &sc.memslots {
        if RESERVED_SLOTS.contains(&s.slot) {
            return Err(format!("memslot id {} is reserved by the probe (100 and 101 hold its code and page tables)", s.slot));
        }
        memslots.push(::probe::Memslot {
            slot: s.slot,
            gpa: s.gpa,
            backing: s.mapping.clone(),
            offset_pages: s.offset,
            pages: s.pages,
            readonly: s.readonly,
        });
    }
    let vcpus = sc
        .vcpus
        .iter()
        .map(|v| ::probe::Vcpu {
            program: v.program.iter().map(guest_op).collect(),
            reruns: v.reruns.clone(),
            mmio: v.mmio.clone(),
        })
        .collect();
    let mut host = Vec::new();
    for m in &sc.mappings {
        for &page in &m.touch {
            host.push(Step {
                after: None,
                action: PAction::Read {
                    backing: m.name.clone(),
                    offset: page * 4096,
                    size: 4,
                },
                race: false,
            });
        }
    }
    let mut sequenced_threads: Vec<&str> = Vec::new();
    let mut racing_threads: Vec<&str> = Vec::new();
    let mut unsequenced = 0;
    for (k, h) in sc.host.iter().enumerate() {
        if !h.action.realizable() {
            return Err(format!(
                "host step {k} ({}) is a model-only device operation",
                action_name(&h.action)
            ));
        }
        let slot = match h.action {
            HostAction::SetMemslot { slot, .. } | HostAction::DeleteMemslot { slot } => Some(slot),
            _ => None,
        };
        if let Some(slot) = slot.filter(|s| RESERVED_SLOTS.contains(s)) {
            return Err(format!("host step {k}: memslot id {slot} is reserved by the probe (100 and 101 hold its code and page tables)"));
        }
        let m = h.action.mapping().and_then(|n| sc.mapping(n));
        if m.is_some_and(|m| m.backing.is_vdso())
            && !matches!(
                h.action,
                HostAction::Read { .. } | HostAction::SetMemslot { .. }
            )
        {
            return Err(format!(
                "host step {k} ({}) changes [vvar], which the probe never does",
                action_name(&h.action)
            ));
        }
        let thread = h.thread.as_str();
        match (h.after, h.race) {
            (Some(_), _) => sequenced_threads.push(thread),
            (None, _) if sequenced_threads.contains(&thread) => {
                return Err(format!(
                    "host step {k} (thread {}) has no `after` but follows a sequenced step of its thread; the probe runs un-sequenced steps before the vCPUs start or, with race = true, from the vCPUs' start on",
                    h.thread
                ))
            }
            (None, true) => racing_threads.push(thread),
            (None, false) if racing_threads.contains(&thread) => {
                return Err(format!(
                    "host step {k} (thread {}) follows a racing step of its thread but is not racing itself; the probe would run it first (before the vCPUs start): give it race = true",
                    h.thread
                ))
            }
            (None, false) => unsequenced += 1,
        }
        host.push(Step {
            after: h.after,
            action: action(&h.action),
            race: h.race,
        });
    }
    if unsequenced > 0 {
        notes.push(format!(
            "{unsequenced} host step(s) without `after` run before the vCPUs start on real KVM (the model explores them racing with the vCPUs; the probe cannot)"
        ));
    }
    let plan = Plan {
        name: sc.name.clone(),
        backings,
        memslots,
        vcpus,
        host,
        mode,
        timeout_ms: 0,
        inject: Default::default(),
        peeks: sc
            .peeks()
            .into_iter()
            .map(|p| ::probe::Peek {
                backing: p.mapping.clone(),
                offset: p.offset,
                size: p.size,
                file: p.file,
            })
            .collect(),
    };
    // One validation for every command: what the model accepts but the probe cannot run
    // is said here, as the reason the probe skips it.
    ::probe::check(&plan).map_err(|e| {
        let why = match e {
            ::probe::ProbeError::BadPlan(s) => s,
            other => other.to_string(),
        };
        format!("valid for the model, but beyond the probe: {why}")
    })?;
    Ok(Adapted { plan, notes })
}

fn guest_op(op: &GuestOp) -> ::probe::GuestOp {
    match *op {
        GuestOp::Read { gpa, size } => ::probe::GuestOp::Read { gpa, size },
        GuestOp::Write { gpa, size, value } => ::probe::GuestOp::Write { gpa, size, value },
    }
}

fn action_name(a: &HostAction) -> &'static str {
    match a {
        HostAction::Write { .. } => "write",
        HostAction::Read { .. } => "read",
        HostAction::MadviseDontneed { .. } => "madvise-dontneed",
        HostAction::Mprotect { .. } => "mprotect",
        HostAction::Munmap { .. } => "munmap",
        HostAction::MmapAnon { .. } => "mmap-anon",
        HostAction::DeviceReset { .. } => "device-reset",
        HostAction::Evict { .. } => "evict",
        HostAction::SetMemslot { .. } => "set-memslot",
        HostAction::DeleteMemslot { .. } => "delete-memslot",
    }
}

/// A realizable host action (checked by the caller) as the probe's.
fn action(a: &HostAction) -> PAction {
    match a.clone() {
        HostAction::Write {
            mapping,
            offset,
            size,
            value,
        } => PAction::Write {
            backing: mapping,
            offset,
            size,
            value,
        },
        HostAction::Read {
            mapping,
            offset,
            size,
        } => PAction::Read {
            backing: mapping,
            offset,
            size,
        },
        HostAction::MadviseDontneed {
            mapping,
            offset,
            pages,
        } => PAction::MadviseDontneed {
            backing: mapping,
            offset_pages: offset,
            pages,
        },
        HostAction::Mprotect {
            mapping,
            offset,
            pages,
            read,
            write,
        } => PAction::Mprotect {
            backing: mapping,
            offset_pages: offset,
            pages,
            read,
            write,
        },
        HostAction::Munmap {
            mapping,
            offset,
            pages,
        } => PAction::Munmap {
            backing: mapping,
            offset_pages: offset,
            pages,
        },
        HostAction::MmapAnon {
            mapping,
            offset,
            pages,
            fill,
        } => PAction::MmapFixedAnon {
            backing: mapping,
            offset_pages: offset,
            pages,
            fill,
        },
        HostAction::SetMemslot {
            slot,
            gpa,
            mapping,
            offset,
            pages,
            readonly,
        } => PAction::SetMemslot(::probe::Memslot {
            slot,
            gpa,
            backing: mapping,
            offset_pages: offset,
            pages,
            readonly,
        }),
        HostAction::DeleteMemslot { slot } => PAction::DeleteMemslot { slot },
        HostAction::DeviceReset { .. } | HostAction::Evict { .. } => {
            unreachable!("checked realizable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_either_adapts_or_says_why_not() {
        for (n, _) in scenario::BUILTIN {
            let sc = scenario::builtin(n).expect("listed").expect("parses");
            match plan(&sc, Mode::Native) {
                Ok(a) => assert_eq!(a.plan.vcpus.len(), sc.vcpus.len(), "{n}"),
                Err(r) => assert!(!r.is_empty(), "{n}: empty skip reason"),
            }
        }
    }

    #[test]
    fn touch_becomes_an_early_host_read_and_after_is_kept() {
        let sc = scenario::builtin("vvar-write").unwrap().unwrap();
        let a = plan(&sc, Mode::Native).unwrap();
        assert_eq!(
            a.plan.host,
            vec![Step {
                after: None,
                action: PAction::Read {
                    backing: "vvar".into(),
                    offset: 0,
                    size: 4
                },
                race: false,
            }]
        );
        let sc = scenario::builtin("mprotect-ro").unwrap().unwrap();
        let a = plan(&sc, Mode::Native).unwrap();
        assert_eq!(
            a.plan.host.iter().map(|s| s.after).collect::<Vec<_>>(),
            vec![Some((0, 1, 1)), Some((0, 3, 1))]
        );
        assert!(a.notes.is_empty());
    }

    #[test]
    fn model_only_drivers_and_actions_are_unrealizable() {
        let text = r#"
name = "x"
[[mapping]]
name = "bo"
backing = "ttm"
pages = 1
[[memslot]]
slot = 1
gpa = 0x10000
mapping = "bo"
pages = 1
[[vcpu]]
program = [{ read = 0x10000 }]
"#;
        let sc = scenario::parse("x.toml", text).unwrap();
        let r = plan(&sc, Mode::Native).err().unwrap();
        assert!(r.contains("ttm") && r.contains("model-only"), "{r}");
        let sc = scenario::builtin("vgpu-reset-race").unwrap().unwrap();
        assert!(plan(&sc, Mode::Native).is_err());
    }

    #[test]
    fn unsequenced_steps_are_noted_and_prot_none_maps_to_its_kind() {
        let text = r#"
name = "x"
[[mapping]]
name = "ram"
backing = "anon-private"
pages = 1
prot = "none"
[[memslot]]
slot = 1
gpa = 0x10000
mapping = "ram"
pages = 1
[[vcpu]]
program = [{ read = 0x10000 }]
[[host]]
action = "mprotect"
mapping = "ram"
prot = "rw"
"#;
        let sc = scenario::parse("x.toml", text).unwrap();
        let a = plan(&sc, Mode::Emulated).unwrap();
        assert_eq!(a.plan.backings[0].kind, BackingKind::ProtNone);
        assert_eq!(a.plan.host[0].after, None);
        assert_eq!(a.plan.mode, Mode::Emulated);
        assert!(
            a.notes[0].contains("before the vCPUs start"),
            "{:?}",
            a.notes
        );
    }

    #[test]
    fn vvar_cannot_be_filled_on_either_side() {
        let text = "name = \"x\"\n[[mapping]]\nname = \"v\"\nbacking = \"vvar\"\npages = 1\nprot = \"r\"\nfill = 1\n";
        let e = scenario::parse("x.toml", text).unwrap_err();
        assert!(e.to_string().contains("cannot be filled"), "{e}");
    }
}
