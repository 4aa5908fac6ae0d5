//! Safety oracles, checked after every step. Each looks only at model state (frames, host
//! page tables, SPTEs, pins, device logs), never at how the state was reached, so a
//! violation is found by exploring, not by recognising a scenario.
//!
//! Checks are incremental: after a step, only the invariants over objects the step wrote
//! (its footprint) are re-checked. The steps that change either side of an invariant declare
//! ghost reads of the other side (see [`crate::kvm`]), so every interleaving an explorer
//! treats as equivalent is judged the same.

use super::build::{Backend, Sys};
use crate::kvm::Spte;
use crate::mm::{VmFlags, PAGE_SHIFT};
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use world::StepRecord;

fn describe(pfns: &[crate::mm::Pfn]) -> String {
    if pfns.is_empty() {
        "no PTE at all".to_string()
    } else {
        pfns.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The oracles, by name.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Oracle {
    NoHostBug,
    NoDeadlock,
    RefcountSane,
    NoFreedFrame,
    NoWriteEscalation,
    RightFrame,
    NoStaleSpte,
    GuestCoherent,
    FirstAccessTrapped,
}

impl Oracle {
    pub const ALL: [Oracle; 9] = [
        Oracle::NoHostBug,
        Oracle::NoDeadlock,
        Oracle::RefcountSane,
        Oracle::NoFreedFrame,
        Oracle::NoWriteEscalation,
        Oracle::RightFrame,
        Oracle::NoStaleSpte,
        Oracle::GuestCoherent,
        Oracle::FirstAccessTrapped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Oracle::NoHostBug => "no-host-bug",
            Oracle::NoDeadlock => "no-deadlock",
            Oracle::RefcountSane => "refcount-sane",
            Oracle::NoFreedFrame => "no-freed-frame",
            Oracle::NoWriteEscalation => "no-write-escalation",
            Oracle::RightFrame => "right-frame",
            Oracle::NoStaleSpte => "no-stale-spte",
            Oracle::GuestCoherent => "guest-coherent",
            Oracle::FirstAccessTrapped => "first-access-trapped",
        }
    }

    pub fn summary(self) -> &'static str {
        match self {
            Oracle::NoHostBug => "the host kernel never hits BUG()",
            Oracle::NoDeadlock => "the run never ends with threads blocked forever",
            Oracle::RefcountSane => "no get on a zero refcount, no put below zero, every KVM reference released",
            Oracle::NoFreedFrame => "no SPTE or pinned map reaches a frame that was freed or now belongs to someone else",
            Oracle::NoWriteEscalation => "a writable SPTE implies a writable host PTE, VM_WRITE and a writable memslot",
            Oracle::RightFrame => "an installed SPTE maps a pfn the host page table held for that hva during the fault",
            Oracle::NoStaleSpte => "while no invalidation covering its gfn is in progress, an SPTE maps what the host page table maps now, through a memslot that still exists",
            Oracle::GuestCoherent => "a guest read returns the current content of the frame the host maps there",
            Oracle::FirstAccessTrapped => "on trap-on-first-access memory the device saw the access before the guest got a mapping",
        }
    }

    pub fn from_name(s: &str) -> Option<Oracle> {
        Oracle::ALL.into_iter().find(|o| o.name() == s)
    }
}

impl fmt::Display for Oracle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One violation: which oracle, at which step, and what exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub oracle: Oracle,
    pub step: u64,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {}: {}: {}", self.step, self.oracle, self.detail)
    }
}

/// Incremental oracle state for one run.
#[derive(Default)]
pub struct Checker {
    anomalies_seen: usize,
    installs_seen: usize,
    pins_seen: usize,
    pins_now: usize,
    reported: Vec<(Oracle, String)>,
    pub violations: Vec<Violation>,
}

impl Checker {
    fn report(&mut self, oracle: Oracle, step: u64, detail: String) {
        // One report per (oracle, subject): a stale SPTE stays stale for many steps.
        let key = (oracle, detail.clone());
        if self.reported.contains(&key) {
            return;
        }
        self.reported.push(key);
        self.violations.push(Violation {
            oracle,
            step,
            detail,
        });
    }

    /// Check every step-local invariant. `step` is the step just taken.
    pub fn check_step(&mut self, sys: &Sys, step: u64) {
        self.check_after(sys, step, None);
    }

    /// Re-check what step `step` (`rec`) may have broken: invariants over the objects it
    /// wrote. Without a record, everything.
    pub fn check_after(&mut self, sys: &Sys, step: u64, rec: Option<&StepRecord>) {
        let writes = |c: world::Class| rec.is_none_or(|r| r.fp.writes_class(c));
        let spte = writes(sys.kvm.spte_class());
        let pte = writes(sys.mm.pte_class());
        let page = writes(sys.frames.page_class());
        let written = |o: world::ObjId| {
            rec.is_none_or(|r| {
                r.fp.iter()
                    .any(|f| f.access() != world::Access::Read && f.contains(o))
            })
        };
        let inv = written(sys.kvm.inv_obj);
        let slots = sys.kvm.dynamic_slots() && written(sys.kvm.slots_obj());
        if sys.frames.anomaly_count() != self.anomalies_seen {
            self.refcounts(sys, step);
        }
        let pins_changed = sys.kvm.pin_count() != self.pins_now;
        self.pins_now = sys.kvm.pin_count();
        if spte || page || pte || inv || slots || pins_changed {
            // The per-SPTE checks look at the stage-2 table in place.
            sys.kvm.with_sptes(|sptes| {
                if spte || page || pins_changed {
                    self.frames_alive(sys, sptes, step);
                }
                if spte || pte || slots {
                    self.write_escalation(sys, sptes, step);
                }
                if spte || pte || inv {
                    self.stale(sys, sptes, step);
                }
                if (spte || slots) && sys.kvm.dynamic_slots() {
                    self.slot_gone(sys, sptes, step);
                }
            });
        }
        if sys.kvm.install_count() != self.installs_seen || sys.kvm.pin_log_len() != self.pins_seen
        {
            self.new_installs(sys, step);
        }
        self.coherent(sys, step);
    }

    /// End-of-run invariants (after every actor finished).
    pub fn check_end(&mut self, sys: &Sys, step: u64) {
        for (pfn, n) in sys.kvm.outstanding_refs() {
            self.report(
                Oracle::RefcountSane,
                step,
                format!("KVM still holds {n} reference(s) on {pfn} at teardown"),
            );
        }
    }

    fn refcounts(&mut self, sys: &Sys, step: u64) {
        let a = sys.frames.anomalies_from(self.anomalies_seen);
        self.anomalies_seen += a.len();
        for x in &a {
            self.report(
                Oracle::RefcountSane,
                step,
                format!("{} by {}: {}", x.pfn, x.actor, x.what),
            );
        }
    }

    fn frame_problem(
        sys: &Sys,
        pfn: crate::mm::Pfn,
        generation: u32,
        owner: &Option<crate::mm::Owner>,
    ) -> Option<String> {
        if !sys.frames.pfn_valid(pfn) {
            return None;
        }
        match sys.frames.owner(pfn) {
            None => Some(format!("{pfn}, which is free")),
            Some(now)
                if sys.frames.generation(pfn) != generation || Some(&now) != owner.as_ref() =>
            {
                Some(format!("{pfn}, which was freed and now belongs to {now}"))
            }
            _ => None,
        }
    }

    fn frames_alive(&mut self, sys: &Sys, sptes: &BTreeMap<u64, Spte>, step: u64) {
        for (&gfn, s) in sptes {
            if let Some(p) = Self::frame_problem(sys, s.pfn, s.generation, &s.owner) {
                self.report(
                    Oracle::NoFreedFrame,
                    step,
                    format!("SPTE for gfn {gfn:#x} maps {p}"),
                );
            }
        }
        for m in sys.kvm.pins() {
            if let Some(p) = Self::frame_problem(sys, m.pfn, m.generation, &m.owner) {
                self.report(
                    Oracle::NoFreedFrame,
                    step,
                    format!("kvm_vcpu_map of gfn {:#x} maps {p}", m.gfn),
                );
            }
        }
    }

    fn write_escalation(&mut self, sys: &Sys, sptes: &BTreeMap<u64, Spte>, step: u64) {
        for (&gfn, s) in sptes {
            if !s.write {
                continue;
            }
            // The host PTE is authoritative; VM_WRITE matters where it is missing or
            // read-only (mprotect changes vm_flags before it write-protects the PTEs and
            // fires the notifier, so a writable SPTE over a writable PTE of a vma that just
            // lost VM_WRITE is the kernel's own transient, not an escalation).
            let vma = sys.mm.vma_lookup(s.hva);
            let why = match (sys.mm.pte(s.hva), sys.kvm.gfn_to_memslot(gfn)) {
                (_, Some(slot)) if slot.readonly => {
                    Some("the memslot is KVM_MEM_READONLY".to_string())
                }
                (Some(p), _) if p.write && !p.protnone => None,
                (pte, _) => {
                    let pte = match pte {
                        None => "the host PTE is not present".to_string(),
                        Some(p) => format!("the host PTE ({}) is read-only", p.pfn),
                    };
                    Some(match vma {
                        None => format!("{pte} and no vma maps the hva"),
                        Some(v) if !v.flags().contains(VmFlags::VM_WRITE) => {
                            format!("{pte} and {} lacks VM_WRITE", v.name)
                        }
                        Some(_) => pte,
                    })
                }
            };
            if let Some(why) = why {
                self.report(
                    Oracle::NoWriteEscalation,
                    step,
                    format!("writable SPTE for gfn {gfn:#x} ({}) but {why}", s.pfn),
                );
            }
        }
    }

    fn new_installs(&mut self, sys: &Sys, step: u64) {
        let installs = sys.kvm.installs_from(self.installs_seen);
        self.installs_seen += installs.len();
        for (gfn, s) in &installs {
            let seen = sys.mm.pfns_since(s.hva, s.fault_start);
            if !seen.contains(&s.pfn) {
                self.report(Oracle::RightFrame, step, format!("SPTE for gfn {gfn:#x} maps {} but the host page table held {} for hva {:#x}", s.pfn, describe(&seen), s.hva));
            }
            self.trap_check(sys, step, *gfn, s.hva, "SPTE");
        }
        let pins = sys.kvm.pin_log_from(self.pins_seen);
        self.pins_seen += pins.len();
        for m in &pins {
            let seen = sys.mm.pfns_since(m.hva, m.fault_start);
            if !seen.contains(&m.pfn) {
                self.report(Oracle::RightFrame, step, format!("kvm_vcpu_map of gfn {:#x} maps {} but the host page table held {} for hva {:#x}", m.gfn, m.pfn, describe(&seen), m.hva));
            }
            self.trap_check(sys, step, m.gfn, m.hva, "kvm_vcpu_map");
        }
    }

    /// On trap-on-first-access memory still backed by the trapping device (the vma at the
    /// hva is the device's), the device must have seen an access to the page.
    fn trap_check(&mut self, sys: &Sys, step: u64, gfn: u64, hva: crate::mm::Hva, what: &str) {
        let Some(vma) = sys.mm.vma_lookup(hva) else {
            return;
        };
        for m in &sys.mappings {
            let page = (hva.wrapping_sub(m.base)) >> PAGE_SHIFT;
            if hva < m.base || page >= m.pages {
                continue;
            }
            let trapped = match &m.backend {
                Backend::Vgpu(d)
                    if vma.file.as_ref().is_some_and(|f| Rc::ptr_eq(f, &d.mapping)) =>
                {
                    d.first_access(page).is_some()
                }
                Backend::Userfault(u)
                    if vma.uffd().as_ref().is_some_and(|x| Rc::ptr_eq(x, &u.uffd)) =>
                {
                    u.first_access(page).is_some()
                }
                _ => continue,
            };
            if !trapped {
                self.report(
                    Oracle::FirstAccessTrapped,
                    step,
                    format!(
                        "{what} for gfn {gfn:#x} installed before {} saw any access to page {page}",
                        m.name
                    ),
                );
            }
        }
    }

    /// Whenever no invalidation covering a gfn is in progress, its SPTE must map what the
    /// host page table maps at its hva now. Judged from the SPTE and the host PTE alone, not
    /// from the notifier's bookkeeping: a zap that forgot the notifier shows up here at once.
    fn stale(&mut self, sys: &Sys, sptes: &BTreeMap<u64, Spte>, step: u64) {
        let (in_progress, range) = sys.kvm.invalidation();
        for (&gfn, s) in sptes {
            if in_progress > 0 && range.is_none_or(|(a, b)| a <= gfn && gfn < b) {
                continue;
            }
            let host = sys.mm.pte(s.hva).filter(|p| !p.protnone).map(|p| p.pfn);
            if host != Some(s.pfn) {
                let now = host.map_or("nothing".to_string(), |p| p.to_string());
                self.report(
                    Oracle::NoStaleSpte,
                    step,
                    format!(
                        "SPTE for gfn {gfn:#x} maps {} with no invalidation in progress; the host maps {now} at {:#x}",
                        s.pfn, s.hva
                    ),
                );
            }
        }
    }

    /// An SPTE must go with the memslot it was installed through: once a delete or move
    /// has replaced that slot (after its `KVM_MEMSLOT_INVALID` window, in which the flush
    /// runs), no SPTE may still map a gfn through it.
    fn slot_gone(&mut self, sys: &Sys, sptes: &BTreeMap<u64, Spte>, step: u64) {
        for (&gfn, s) in sptes {
            if sys.kvm.slot_installed(s.slot.1) {
                continue;
            }
            let now = match sys.kvm.gfn_to_memslot(gfn) {
                None => "no memslot covers the gfn now".to_string(),
                Some(n) => format!(
                    "memslot {} maps the gfn to hva {:#x} now",
                    n.id,
                    n.gfn_to_hva(gfn)
                ),
            };
            self.report(
                Oracle::NoStaleSpte,
                step,
                format!(
                    "SPTE for gfn {gfn:#x} maps {} through memslot {} as it was before it was deleted or moved; {now}",
                    s.pfn, s.slot.0
                ),
            );
        }
    }

    fn coherent(&mut self, sys: &Sys, step: u64) {
        for v in &sys.vcpus {
            for r in [v.last_spte_read.take(), v.last_spte_read2.take()]
                .into_iter()
                .flatten()
            {
                let host = sys.mm.pte(r.hva).filter(|p| !p.protnone);
                let expect =
                    host.and_then(|p| sys.frames.read(p.pfn, r.hva % crate::mm::PAGE_SIZE, r.size));
                if expect != Some(r.value) {
                    let what = expect.map_or("the host maps nothing there".to_string(), |e| {
                        format!("the host's frame holds {e:#x}")
                    });
                    self.report(
                        Oracle::GuestCoherent,
                        step,
                        format!(
                            "vcpu{} read {:#x} from gpa {:#x}; {what}",
                            v.id, r.value, r.gpa
                        ),
                    );
                }
            }
        }
    }
}
