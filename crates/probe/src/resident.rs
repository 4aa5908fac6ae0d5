//! Right before the first `KVM_RUN`: no page of a backing is present in this process's page
//! tables unless the scenario put it there.
//!
//! A page the probe itself touched (a clock read through the vDSO maps `[vvar]` page 0, an
//! allocation or a thread stack can land in anonymous memory) would let the guest's first
//! access find a present PTE and skip the path under test (`fixup_user_fault`, the
//! userfaultfd handler, the zero page), so the run would not measure what the scenario says.
//!
//! Two observers, because the kernel's page-table walkers skip `VM_PFNMAP` vmas
//! (`walk_page_test` reports them as holes: `/proc/self/pagemap` shows 0 and `mincore` shows 1
//! for `[vvar]` whether or not its PTEs are present, measured on this machine):
//! * the probe's own memory: `/proc/self/pagemap` bit 63 (present) or 62 (swapped);
//! * `[vvar]`/`[vvar_vclock]`: a throwaway native guest *writes* each page. The vma has no
//!   `VM_WRITE`, so with no PTE `hva_to_pfn_remapped` → `fixup_user_fault` refuses the write
//!   (`-EFAULT`) before any fault handler runs: nothing is installed. With a present read-only
//!   PTE, `follow_pfnmap_start` succeeds and KVM emulates the write as MMIO. So EFAULT means
//!   absent, an MMIO exit means present, and the check changes nothing either way.

use crate::backing::Backings;
use crate::layout::PAGE;
use crate::outcome::{sys, Exit, ProbeError};
use crate::plan::{Backing, BackingKind, GuestOp, HostAction, Memslot, Mode, Plan, Vcpu};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;

/// Pages a read fault of a file or shmem mapping may map at once (`fault_around_bytes`).
const FAULT_AROUND_PAGES: u64 = 16;

/// The pages of each backing the scenario may have made present before the vCPUs start: the
/// fill the host stores through its mapping, and the steps scheduled before the start, in
/// order (a read of a file or shmem page with its fault-around window).
/// `first_vpn(name)`: the virtual page number of the backing's first page (the fault-around
/// window is aligned in the address space, not in the file).
pub(crate) fn expected<'a>(
    plan: &'a Plan,
    first_vpn: &dyn Fn(&str) -> u64,
) -> BTreeMap<&'a str, BTreeSet<u64>> {
    let mut out: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for b in &plan.backings {
        let stored = matches!(
            b.kind,
            BackingKind::AnonPrivate
                | BackingKind::AnonShared
                | BackingKind::Memfd
                | BackingKind::ProtNone
        );
        let pages = if stored && b.fill.is_some() {
            (0..b.pages).collect()
        } else {
            BTreeSet::new()
        };
        out.insert(&b.name, pages);
    }
    let span = |off: u64, len: u64| off / PAGE..(off + len).div_ceil(PAGE);
    // Backings whose read faults map around (`vm_ops->map_pages`: files and shmem), with
    // their sizes.
    let page_cache: BTreeMap<&str, u64> = plan
        .backings
        .iter()
        .filter(|b| {
            matches!(
                b.kind,
                BackingKind::AnonShared
                    | BackingKind::Memfd
                    | BackingKind::FilePrivate
                    | BackingKind::FileShared
            )
        })
        .map(|b| (b.name.as_str(), b.pages))
        .collect();
    // Racing steps run after this check, memslot steps touch no page.
    for s in plan.host.iter().filter(|s| s.after.is_none() && !s.race) {
        let Some(name) = s.action.backing() else {
            continue;
        };
        let Some(set) = out.get_mut(name) else {
            continue;
        };
        match s.action {
            HostAction::Write { offset, size, .. } => set.extend(span(offset, u64::from(size))),
            HostAction::Read { offset, size, .. } => {
                let pages = span(offset, u64::from(size));
                match page_cache.get(name) {
                    // do_read_fault → do_fault_around also maps the cached pages of the
                    // aligned fault-around window (fault_around_bytes, 64 KiB by default).
                    Some(&n) => {
                        let v0 = first_vpn(name);
                        let (a, b) = (v0 + pages.start, v0 + pages.end);
                        let lo = a / FAULT_AROUND_PAGES * FAULT_AROUND_PAGES;
                        let hi = b.div_ceil(FAULT_AROUND_PAGES) * FAULT_AROUND_PAGES;
                        set.extend(lo.max(v0) - v0..hi.min(v0 + n) - v0);
                    }
                    None => set.extend(pages),
                }
            }
            HostAction::MadviseDontneed {
                offset_pages,
                pages,
                ..
            }
            | HostAction::Munmap {
                offset_pages,
                pages,
                ..
            }
            | HostAction::MmapFixedAnon {
                offset_pages,
                pages,
                fill: None,
                ..
            } => {
                for p in offset_pages..offset_pages + pages {
                    set.remove(&p);
                }
            }
            HostAction::MmapFixedAnon {
                offset_pages,
                pages,
                fill: Some(_),
                ..
            } => set.extend(offset_pages..offset_pages + pages),
            HostAction::Mprotect { .. }
            | HostAction::SetMemslot { .. }
            | HostAction::DeleteMemslot { .. } => {}
        }
    }
    out
}

/// Fails the run (`Invalid`) when a page the scenario did not make present is present.
pub(crate) fn check(plan: &Plan, backings: &Backings) -> Result<(), ProbeError> {
    let base = |name: &str| backings.get(name).map_or(0, |hb| hb.base as u64 / PAGE);
    let want = expected(plan, &base);
    let pagemap =
        std::fs::File::open("/proc/self/pagemap").map_err(|e| sys("open /proc/self/pagemap", e))?;
    let mut vvar = Vec::new();
    for hb in &backings.0 {
        let allowed = want.get(hb.spec.name.as_str());
        let untouched = |p: &u64| allowed.is_none_or(|a| !a.contains(p));
        if matches!(hb.spec.kind, BackingKind::Vvar | BackingKind::VvarVclock) {
            let pages: Vec<u64> = (0..hb.spec.pages).filter(untouched).collect();
            if !pages.is_empty() {
                vvar.push((&hb.spec, pages));
            }
            continue;
        }
        for p in (0..hb.spec.pages).filter(untouched) {
            let va = hb.base as u64 + p * PAGE;
            let mut e = [0u8; 8];
            pagemap
                .read_exact_at(&mut e, va / PAGE * 8)
                .map_err(|e| sys("read /proc/self/pagemap", e))?;
            let e = u64::from_le_bytes(e);
            if e & (3 << 62) != 0 {
                return Err(present(&hb.spec.name, p));
            }
        }
    }
    for (spec, pages) in vvar {
        if let Some(p) = pfnmap_present(spec, &pages)? {
            return Err(present(&spec.name, p));
        }
    }
    Ok(())
}

fn present(name: &str, page: u64) -> ProbeError {
    ProbeError::Invalid(format!(
        "page {page} of backing '{name}' is present in the probe's page tables before the \
         first KVM_RUN, but the scenario did not touch it: the guest would not take the \
         first-access path"
    ))
}

/// Runs the write detector over `pages` of a `[vvar]`-kind backing; the first present page.
fn pfnmap_present(spec: &Backing, pages: &[u64]) -> Result<Option<u64>, ProbeError> {
    const GPA: u64 = 0x10000;
    let plan = Plan {
        name: format!("presence of {}", spec.name),
        backings: vec![Backing {
            fill: None,
            ..spec.clone()
        }],
        memslots: vec![Memslot {
            slot: 1,
            gpa: GPA,
            backing: spec.name.clone(),
            offset_pages: 0,
            pages: spec.pages,
            readonly: false,
        }],
        vcpus: vec![Vcpu {
            program: pages
                .iter()
                .map(|&p| GuestOp::Write {
                    gpa: GPA + p * PAGE,
                    size: 4,
                    value: 0,
                })
                .collect(),
            ..Vcpu::default()
        }],
        host: Vec::new(),
        mode: Mode::Native,
        timeout_ms: 0,
        inject: Default::default(),
        peeks: Vec::new(),
    };
    let r = crate::run::run_locked(&plan, true)?;
    for a in &r.accesses {
        match a.attempts.first() {
            Some(Exit::Efault) => {}
            Some(Exit::MmioWrite { .. }) => return Ok(Some(pages[a.index])),
            other => {
                return Err(ProbeError::Sys(format!(
                "presence check of '{}' page {}: expected EFAULT or an MMIO write, got {other:?}",
                spec.name, pages[a.index]
            )))
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Step;

    #[test]
    fn fill_and_early_steps_make_pages_expected_and_zaps_unmake_them() {
        let b = |name: &str, kind, fill| Backing {
            name: name.into(),
            kind,
            pages: 4,
            prot_write: true,
            fill,
            uffd_delay_ms: 0,
            follows: None,
        };
        let plan = Plan {
            name: "x".into(),
            backings: vec![
                b("a", BackingKind::AnonPrivate, Some(1)),
                b("f", BackingKind::FileShared, Some(1)),
                b("v", BackingKind::Vvar, None),
            ],
            memslots: vec![],
            vcpus: vec![],
            host: vec![
                Step {
                    after: None,
                    action: HostAction::MadviseDontneed {
                        backing: "a".into(),
                        offset_pages: 1,
                        pages: 2,
                    },
                    race: false,
                },
                Step {
                    after: None,
                    action: HostAction::Read {
                        backing: "v".into(),
                        offset: 0xffe,
                        size: 4,
                    },
                    race: false,
                },
                Step {
                    after: Some((0, 0, 1)),
                    action: HostAction::Read {
                        backing: "f".into(),
                        offset: 0,
                        size: 4,
                    },
                    race: false,
                },
            ],
            mode: Mode::Native,
            timeout_ms: 0,
            inject: Default::default(),
            peeks: Vec::new(),
        };
        let e = expected(&plan, &|_| 0);
        assert_eq!(e["a"], BTreeSet::from([0, 3]));
        // A racing step runs after the check: its zap does not unmake a page, nor its read
        // make one; memslot steps touch nothing.
        let mut p = plan.clone();
        p.host[0].race = true;
        p.host.push(Step {
            after: None,
            action: HostAction::SetMemslot(Memslot {
                slot: 2,
                gpa: 0x20000,
                backing: "a".into(),
                offset_pages: 0,
                pages: 4,
                readonly: false,
            }),
            race: false,
        });
        p.host.push(Step {
            after: None,
            action: HostAction::DeleteMemslot { slot: 2 },
            race: false,
        });
        assert_eq!(expected(&p, &|_| 0)["a"], BTreeSet::from([0, 1, 2, 3]));
        // A file's fill is written with write(2), not through the mapping; a later step is
        // not before the start.
        assert!(e["f"].is_empty());
        // A read across a page boundary touches both pages.
        assert_eq!(e["v"], BTreeSet::from([0, 1]));
        let mut p = plan.clone();
        p.host[2].after = None;
        // A file read maps its fault-around window: the aligned 16 pages of the address
        // space around it, clipped to the mapping.
        assert_eq!(expected(&p, &|_| 0)["f"], BTreeSet::from([0, 1, 2, 3]));
        assert_eq!(expected(&p, &|_| 15)["f"], BTreeSet::from([0]));
        assert_eq!(expected(&p, &|_| 14)["f"], BTreeSet::from([0, 1]));
    }
}
