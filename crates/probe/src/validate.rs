//! Plan validation: every mistake is a `BadPlan` naming what is wrong, never a panic.

use crate::layout::{usable, CODE_SLOT, PAGE, PT_SLOT, RESERVED};
use crate::outcome::{bad, ProbeError};
use crate::plan::{BackingKind, GuestOp, HostAction, Memslot, Plan};
use std::collections::HashSet;

/// Largest backing accepted (1 GiB): plans describe a few pages, this only stops typos.
const MAX_BACKING_PAGES: u64 = 1 << 18;
/// Largest number of vCPUs.
const MAX_VCPUS: usize = 8;
/// Largest per-KVM_RUN timeout (10 min).
const MAX_TIMEOUT_MS: u64 = 600_000;

fn fits(value: u64, size: u8) -> bool {
    size >= 8 || value >> (u32::from(size) * 8) == 0
}

fn check_size(size: u8, what: &str) -> Result<(), ProbeError> {
    if matches!(size, 1 | 2 | 4 | 8) {
        Ok(())
    } else {
        Err(bad(format!("{what}: size {size} is not 1, 2, 4 or 8")))
    }
}

fn check_op(op: &GuestOp, what: &str) -> Result<(), ProbeError> {
    check_size(op.size(), what)?;
    let (gpa, size) = (op.gpa(), u64::from(op.size()));
    if !usable(gpa, gpa.saturating_add(size)) {
        return Err(bad(format!(
            "{what}: gpa {gpa:#x}+{size} is not below 2^48 or overlaps the guest layout's own \
             ranges {RESERVED:x?} (code, page tables, report pages)"
        )));
    }
    if let GuestOp::Write { value, size, .. } = *op {
        if !fits(value, size) {
            return Err(bad(format!(
                "{what}: value {value:#x} does not fit in {size} bytes"
            )));
        }
    }
    Ok(())
}

fn check_range(
    plan: &Plan,
    name: &str,
    first: u64,
    pages: u64,
    what: &str,
) -> Result<(), ProbeError> {
    check_range_of(plan, name, first, pages, what, false)
}

/// `vvar_ok`: the action only reads, so a `[vvar]` backing is allowed.
fn check_range_of(
    plan: &Plan,
    name: &str,
    first: u64,
    pages: u64,
    what: &str,
    vvar_ok: bool,
) -> Result<(), ProbeError> {
    let b = plan
        .backings
        .iter()
        .find(|b| b.name == name)
        .ok_or_else(|| bad(format!("{what}: no backing named '{name}'")))?;
    if !vvar_ok && matches!(b.kind, BackingKind::Vvar | BackingKind::VvarVclock) {
        return Err(bad(format!(
            "{what}: backing '{name}' is [vvar]; the probe never changes it"
        )));
    }
    if pages == 0 || first.checked_add(pages).is_none_or(|end| end > b.pages) {
        return Err(bad(format!(
            "{what}: pages {first}..{first}+{pages} outside backing '{name}' ({} pages)",
            b.pages
        )));
    }
    Ok(())
}

fn check_action(plan: &Plan, a: &HostAction, what: &str) -> Result<(), ProbeError> {
    match *a {
        HostAction::Write {
            ref backing,
            offset,
            size,
            value,
        } => {
            check_size(size, what)?;
            if !fits(value, size) {
                return Err(bad(format!(
                    "{what}: value {value:#x} does not fit in {size} bytes"
                )));
            }
            let end = offset.saturating_add(u64::from(size));
            check_range(
                plan,
                backing,
                offset / PAGE,
                (end.div_ceil(PAGE) - offset / PAGE).max(1),
                what,
            )
        }
        HostAction::Read {
            ref backing,
            offset,
            size,
        } => {
            check_size(size, what)?;
            let end = offset.saturating_add(u64::from(size));
            check_range_of(
                plan,
                backing,
                offset / PAGE,
                (end.div_ceil(PAGE) - offset / PAGE).max(1),
                what,
                true,
            )
        }
        HostAction::MadviseDontneed {
            ref backing,
            offset_pages,
            pages,
        }
        | HostAction::Mprotect {
            ref backing,
            offset_pages,
            pages,
            ..
        }
        | HostAction::Munmap {
            ref backing,
            offset_pages,
            pages,
        }
        | HostAction::MmapFixedAnon {
            ref backing,
            offset_pages,
            pages,
            ..
        } => check_range(plan, backing, offset_pages, pages, what),
        HostAction::SetMemslot(ref m) => check_slot(plan, m, what).map(|_| ()),
        HostAction::DeleteMemslot { slot } => check_slot_id(slot, what),
    }
}

fn check_slot_id(slot: u32, what: &str) -> Result<(), ProbeError> {
    if slot == CODE_SLOT || slot == PT_SLOT {
        return Err(bad(format!(
            "{what}: slot id {slot} is reserved ({CODE_SLOT}, {PT_SLOT} are the probe's code and \
             page-table slots)"
        )));
    }
    Ok(())
}

/// The rules for a memslot, of the plan or of a `SetMemslot` step: a slot id that is not
/// the probe's, an existing backing, `pages` > 0 within the backing (and those that follow
/// it), and a page-aligned gpa range the guest layout leaves to plans. Returns the end of
/// the gpa range.
fn check_slot(plan: &Plan, m: &Memslot, what: &str) -> Result<u64, ProbeError> {
    let Memslot {
        slot,
        gpa,
        ref backing,
        offset_pages,
        pages,
        ..
    } = *m;
    check_slot_id(slot, what)?;
    let b = plan
        .backings
        .iter()
        .find(|b| &b.name == backing)
        .ok_or_else(|| bad(format!("{what}: no backing named '{backing}'")))?;
    // A slot may go on into the backings that follow this one.
    let mut run = 0u64;
    let mut cur = Some(b);
    let mut seen = 0;
    while let (Some(x), true) = (cur, seen <= plan.backings.len()) {
        run = run.saturating_add(x.pages);
        seen += 1;
        cur = plan
            .backings
            .iter()
            .find(|n| n.follows.as_deref() == Some(x.name.as_str()));
    }
    if pages == 0 || offset_pages.checked_add(pages).is_none_or(|e| e > run) {
        return Err(bad(format!(
            "{what}: pages {offset_pages}+{pages} outside backing '{}' ({run} pages with those \
             after it)",
            b.name
        )));
    }
    let end = gpa.saturating_add(pages.saturating_mul(PAGE));
    if !gpa.is_multiple_of(PAGE) || !usable(gpa, end) {
        return Err(bad(format!(
            "{what}: gpa {gpa:#x}..{end:#x} must be page aligned, below 2^48 and outside the \
             guest layout's own ranges {RESERVED:x?}"
        )));
    }
    Ok(end)
}

/// Checks a plan before anything is created.
pub(crate) fn plan(plan: &Plan) -> Result<(), ProbeError> {
    if plan.vcpus.is_empty() || plan.vcpus.len() > MAX_VCPUS {
        return Err(bad(format!(
            "{} vCPUs; need 1..={MAX_VCPUS}",
            plan.vcpus.len()
        )));
    }
    if plan.timeout_ms > MAX_TIMEOUT_MS {
        return Err(bad(format!(
            "timeout_ms {} exceeds {MAX_TIMEOUT_MS}",
            plan.timeout_ms
        )));
    }
    let mut names = HashSet::new();
    for b in &plan.backings {
        if b.name.is_empty() || !names.insert(b.name.as_str()) {
            return Err(bad(format!(
                "backing name '{}' is empty or repeated",
                b.name
            )));
        }
        if b.pages == 0 || b.pages > MAX_BACKING_PAGES {
            return Err(bad(format!(
                "backing '{}': {} pages; need 1..={MAX_BACKING_PAGES}",
                b.name, b.pages
            )));
        }
        if matches!(b.kind, BackingKind::Vvar | BackingKind::VvarVclock) && b.fill.is_some() {
            return Err(bad(format!(
                "backing '{}': a [vvar] backing cannot be filled (never written)",
                b.name
            )));
        }
    }
    let mut slots = HashSet::new();
    let mut ranges: Vec<(u64, u64, u32)> = Vec::new();
    for m in &plan.memslots {
        let what = format!("memslot {}", m.slot);
        if !slots.insert(m.slot) {
            return Err(bad(format!("{what}: slot id repeated")));
        }
        let end = check_slot(plan, m, &what)?;
        if let Some(&(_, _, other)) = ranges.iter().find(|&&(s, e, _)| m.gpa < e && s < end) {
            return Err(bad(format!("{what}: gpa range overlaps memslot {other}")));
        }
        ranges.push((m.gpa, end, m.slot));
    }
    for (v, cpu) in plan.vcpus.iter().enumerate() {
        for (i, op) in cpu.program.iter().enumerate() {
            check_op(op, &format!("vcpu {v} access {i}"))?;
        }
    }
    for (k, s) in plan.host.iter().enumerate() {
        let what = format!("host step {k}");
        if let Some((v, i, k)) = s.after {
            let n = plan.vcpus.get(v).map(|c| c.program.len());
            if n.is_none_or(|n| i >= n) {
                return Err(bad(format!(
                    "{what}: after (vcpu {v}, access {i}), which does not exist"
                )));
            }
            if k == 0 {
                return Err(bad(format!("{what}: exits are counted from 1")));
            }
            if s.race {
                return Err(bad(format!(
                    "{what}: a racing step runs on its own host thread from the start; it \
                     cannot also wait for a vCPU exit (`after`)"
                )));
            }
        }
        if s.race
            && matches!(
                s.action,
                HostAction::Munmap { .. } | HostAction::MmapFixedAnon { .. }
            )
        {
            return Err(bad(format!(
                "{what}: munmap and mmap(MAP_FIXED) cannot race with the vCPUs: the hole guard \
                 checks around every KVM_RUN that nothing else got mapped into a hole, and could \
                 not tell a hole the step is opening or refilling from a stray mapping"
            )));
        }
        check_action(plan, &s.action, &what)?;
    }
    Ok(())
}
