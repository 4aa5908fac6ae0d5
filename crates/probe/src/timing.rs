//! First-touch vs already-mapped KVM_RUN timings (timing.c, realkvm.md §10).
//!
//! Each timed KVM_RUN reads one data page and then exits via the MMIO report, so the
//! difference of medians between the first and second pass is the per-page first-touch cost.
//! The host is noisy (nested, 2 CPUs): max is often 2–3× the median, so only medians are
//! compared.

use crate::backing::HostBacking;
use crate::exits::{run_once, RawExit};
use crate::guest;
use crate::layout::{CODE_GPA, DATA_END, DATA_GPA, PAGE};
use crate::outcome::{bad, ProbeError, Stats, Timing};
use crate::plan::{Backing, BackingKind, Mode};
use crate::vm::{reset, GuestVm};
use crate::watchdog::Watchdog;
use crate::{lock, mmu};
use kvm_ioctls::VcpuFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);
/// Round-trip samples at least (timing.c uses 200 on a dedicated VM).
const MIN_RT_SAMPLES: u64 = 64;

/// One timed KVM_RUN that must end in the report exit.
fn timed(vcpu: &mut VcpuFd, dog: &Watchdog) -> Result<f64, ProbeError> {
    // The syscall clock (not `Instant`): a vDSO read would map `[vvar]` page 0 and turn a
    // `[vvar]` first touch into a touch of a present page.
    let t = crate::clock::now();
    let raw = run_once(vcpu, dog, TIMEOUT, 0);
    let ns = (crate::clock::now() - t).as_nanos() as f64;
    match raw {
        RawExit::Report { .. } => Ok(ns),
        other => Err(ProbeError::Sys(format!(
            "timing run: expected the report exit, got {other:?}"
        ))),
    }
}

/// One pass: warm-up report (a round-trip sample), then `n` page touches.
fn pass(
    vcpu: &mut VcpuFd,
    dog: &Watchdog,
    mode: Mode,
    n: u64,
    rt: &mut Vec<f64>,
) -> Result<Vec<f64>, ProbeError> {
    reset(vcpu, mode, CODE_GPA, n)?;
    rt.push(timed(vcpu, dog)?);
    (0..n).map(|_| timed(vcpu, dog)).collect()
}

fn stats(mut v: Vec<f64>) -> Result<Stats, ProbeError> {
    Stats::from_ns(&mut v).ok_or_else(|| ProbeError::Sys("no timing samples".into()))
}

/// Times KVM_RUN for first-touch vs already-mapped accesses to `pages` pages of a `kind`
/// backing. For Vvar/VvarVclock only page 0 is host-faultable, so `pages` fresh VMs each
/// touch page 0 (as timing.c does). Hole and ProtNone have no successful first touch.
pub fn measure_first_touch(
    kind: BackingKind,
    pages: u64,
    mode: Mode,
) -> Result<Timing, ProbeError> {
    let max = (DATA_END - DATA_GPA) / PAGE;
    if pages == 0 || pages > max {
        return Err(bad(format!(
            "measure_first_touch: {pages} pages; need 1..={max}"
        )));
    }
    if matches!(kind, BackingKind::Hole | BackingKind::ProtNone) {
        return Err(bad(format!(
            "measure_first_touch: {kind:?} has no successful first touch"
        )));
    }
    let _serial = lock();
    let (code, rt_rip) = guest::timing_code(CODE_GPA).map_err(ProbeError::Sys)?;
    let dog = Watchdog::new()?;
    let events = Arc::new(Mutex::new(Vec::new()));
    let vvar = matches!(kind, BackingKind::Vvar | BackingKind::VvarVclock);
    let spec = Backing {
        name: "timing".into(),
        kind,
        pages: if vvar { 1 } else { pages },
        prot_write: true,
        fill: None,
        uffd_delay_ms: 0,
        follows: None,
    };
    let hb = HostBacking::create(&spec, &events, None)?;
    let (mut first, mut mapped, mut rt) = (Vec::new(), Vec::new(), Vec::new());
    if vvar {
        for _ in 0..pages {
            let vm = GuestVm::new(&code, &[])?;
            vm.set_slot(0, DATA_GPA, 1, hb.base, false)
                .map_err(ProbeError::Sys)?;
            let mut vcpu = vm.vcpu(0, mode, CODE_GPA)?;
            first.extend(pass(&mut vcpu, &dog, mode, 1, &mut rt)?);
            mapped.extend(pass(&mut vcpu, &dog, mode, 1, &mut rt)?);
        }
    } else {
        let vm = GuestVm::new(&code, &[])?;
        vm.set_slot(0, DATA_GPA, pages, hb.base, false)
            .map_err(ProbeError::Sys)?;
        let mut vcpu = vm.vcpu(0, mode, CODE_GPA)?;
        first = pass(&mut vcpu, &dog, mode, pages, &mut rt)?;
        mapped = pass(&mut vcpu, &dog, mode, pages, &mut rt)?;
        reset(&vcpu, mode, rt_rip, 0)?;
        for _ in 0..pages.max(MIN_RT_SAMPLES) {
            rt.push(timed(&mut vcpu, &dog)?);
        }
    }
    let first_touch = stats(first)?;
    let mapped = stats(mapped)?;
    Ok(Timing {
        kind,
        mode,
        pages,
        mmu: mmu::describe(),
        first_touch_cost_us: first_touch.median_us - mapped.median_us,
        first_touch,
        mapped,
        round_trip: stats(rt)?,
    })
}
