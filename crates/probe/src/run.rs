//! One probe run: backings → VM and slots → vCPUs → holes and early steps → vCPU threads (and
//! the racing host thread) → host view. Locals are declared so that they drop in the safe
//! order: vCPUs, then the VM, then the backings (the guest can never reach memory after it is
//! unmapped).

use crate::backing::{Backings, HostBacking};
use crate::guest::{self, GuestCode};
use crate::host::HostSteps;
use crate::hostio;
use crate::layout::{CODE_GPA, CODE_MAX_PAGES, PAGE};
use crate::outcome::{bad, sys, AccessResult, ProbeError, ProbeResult};
use crate::plan::{BackingKind, HostAction, Memslot, Plan};
use crate::vcpu_loop::{drive, VcpuJob};
use crate::vm::GuestVm;
use crate::watchdog::Watchdog;
use crate::{lock, mmu};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Default per-KVM_RUN timeout (the probes' 2 s SIGALRM).
pub(crate) const DEFAULT_TIMEOUT_MS: u64 = 2000;

/// Start gate: vCPU threads (and their watchdog threads) and the racing host thread exist
/// before holes are punched, so no thread stack can be mapped into a hole; then they all
/// start together.
struct Gate {
    open: Mutex<Option<bool>>,
    cv: Condvar,
    /// vCPU threads past the gate.
    vcpus_out: AtomicUsize,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            open: Mutex::new(None),
            cv: Condvar::new(),
            vcpus_out: AtomicUsize::new(0),
        }
    }

    /// A vCPU thread is past the gate (whether it opened or not) and about to run.
    fn vcpu_out(&self) {
        self.vcpus_out.fetch_add(1, Ordering::SeqCst);
    }

    /// Waits (yielding the CPU) until `n` vCPU threads are past the gate. The racing host
    /// thread starts its steps only then: otherwise, on this 2-CPU host, it often issued all
    /// of them in the microseconds before any vCPU thread got to its first KVM_RUN, and
    /// nothing raced.
    fn wait_vcpus(&self, n: usize) {
        while self.vcpus_out.load(Ordering::SeqCst) < n {
            std::thread::yield_now();
        }
    }

    fn set(&self, go: bool) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = Some(go);
        self.cv.notify_all();
    }

    fn wait(&self) -> bool {
        let mut g = self.open.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(go) = *g {
                return go;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Everything `run` would refuse before creating anything: the plan's limits and whether its
/// guest code fits. A scenario adapter calls it to say up front what the probe cannot run.
pub fn check(plan: &Plan) -> Result<(), ProbeError> {
    crate::validate::plan(plan)?;
    crate::layout::page_tables(&far_pages(plan)).map_err(ProbeError::BadPlan)?;
    assemble_all(plan).map(|_| ())
}

/// Assembles every vCPU's program at its own page-aligned address in the code area.
fn assemble_all(plan: &Plan) -> Result<(Vec<GuestCode>, Vec<u8>), ProbeError> {
    let mut codes = Vec::new();
    let mut bytes = Vec::new();
    for (v, cpu) in plan.vcpus.iter().enumerate() {
        let base = CODE_GPA + bytes.len() as u64;
        let code =
            guest::assemble(&cpu.program, base).map_err(|e| bad(format!("vcpu {v}: {e}")))?;
        bytes.extend_from_slice(&code.bytes);
        bytes.resize(
            (bytes.len() as u64).div_ceil(PAGE) as usize * PAGE as usize,
            0xCC,
        );
        codes.push(code);
    }
    if bytes.len() as u64 > CODE_MAX_PAGES * PAGE {
        return Err(bad(format!(
            "guest code needs {} pages; at most {CODE_MAX_PAGES} fit below the data range",
            bytes.len() as u64 / PAGE
        )));
    }
    Ok((codes, bytes))
}

/// Every memslot a run may have: the plan's, then those `SetMemslot` steps create or move,
/// in plan order (as [`Memslot`]s).
fn all_slots(plan: &Plan) -> impl Iterator<Item = &Memslot> {
    let steps = plan.host.iter().filter_map(|s| match &s.action {
        HostAction::SetMemslot(m) => Some(m),
        _ => None,
    });
    plan.memslots.iter().chain(steps)
}

/// The gpa pages above the identity-mapped 2 MiB the guest may touch: every page of a plan
/// memslot or of a slot a `SetMemslot` step creates or moves, and every accessed page (also
/// those in no slot: an MMIO exit needs a guest mapping too).
fn far_pages(plan: &Plan) -> Vec<u64> {
    let mut pages = std::collections::BTreeSet::new();
    for m in all_slots(plan) {
        pages.extend(m.gpa / PAGE..m.gpa / PAGE + m.pages);
    }
    for cpu in &plan.vcpus {
        for op in &cpu.program {
            pages.extend(op.gpa() / PAGE..(op.gpa() + u64::from(op.size())).div_ceil(PAGE));
        }
    }
    pages.into_iter().filter(|&p| p >= 512).collect()
}

/// Where each backing must start, for runs of backings laid out one after another
/// (`Backing::follows`); `None`: anywhere. A run with a `[vvar]` kind is anchored where the
/// kernel put it; any other run takes a free range the kernel picks for its total size.
fn placements(plan: &Plan) -> Result<Vec<Option<usize>>, ProbeError> {
    let mut at = vec![None; plan.backings.len()];
    let next = |i: usize| {
        plan.backings
            .iter()
            .position(|b| b.follows.as_deref() == Some(plan.backings[i].name.as_str()))
    };
    for head in (0..plan.backings.len()).filter(|&i| plan.backings[i].follows.is_none()) {
        // The run: (backing index, first page in the run).
        let mut run = vec![(head, 0u64)];
        while let Some(n) = next(run.last().expect("non-empty").0) {
            let (i, off) = *run.last().expect("non-empty");
            if run.iter().any(|&(j, _)| j == n) {
                return Err(bad("backings that follow each other in a circle"));
            }
            run.push((n, off + plan.backings[i].pages));
        }
        if run.len() == 1 {
            continue;
        }
        let vdso = |i: usize| match plan.backings[i].kind {
            BackingKind::Vvar => Some("vvar"),
            BackingKind::VvarVclock => Some("vvar_vclock"),
            _ => None,
        };
        let start = match run.iter().find_map(|&(i, off)| vdso(i).map(|n| (n, off))) {
            Some((name, off)) => {
                if off > 0 {
                    // The kernel packs mappings right below the vDSO: make room.
                    crate::vvar::make_room_below(off).map_err(ProbeError::Sys)?;
                }
                let (a, _) = crate::vvar::find(name)
                    .ok_or_else(|| bad(format!("[{name}] is not in /proc/self/maps")))?;
                (a as u64)
                    .checked_sub(off * PAGE)
                    .ok_or_else(|| bad(format!("no room below [{name}]")))?
            }
            None => {
                let total: u64 = run.iter().map(|&(i, _)| plan.backings[i].pages).sum();
                // A free range of the run's size: mapped, noted and unmapped again; the run's
                // backings then take it with MAP_FIXED_NOREPLACE (a clash is an error).
                let r = crate::region::Region::anon(total, false)
                    .map_err(|e| sys("reserve a range for adjacent backings", e))?;
                r.base() as u64
            }
        };
        for &(i, off) in &run {
            let want = start + off * PAGE;
            match vdso(i) {
                Some(name) => {
                    let (a, _) = crate::vvar::find(name)
                        .ok_or_else(|| bad(format!("[{name}] is not in /proc/self/maps")))?;
                    if a as u64 != want {
                        return Err(bad(format!(
                            "backing '{}' must start right after the one before it, but the \
                             kernel put [{name}] elsewhere",
                            plan.backings[i].name
                        )));
                    }
                }
                None => at[i] = Some(want as usize),
            }
        }
    }
    Ok(at)
}

/// Punches holes and runs the steps scheduled before the vCPUs start.
fn before_start(plan: &Plan, host: &HostSteps) -> Result<(), ProbeError> {
    {
        let mut b = host.backings.lock().unwrap_or_else(|e| e.into_inner());
        for hb in
            b.0.iter_mut()
                .filter(|hb| hb.spec.kind == BackingKind::Hole)
        {
            hb.make_hole()?;
            if plan.inject.squat_holes {
                hb.squat_holes()?;
            }
        }
    }
    for (k, _) in plan
        .host
        .iter()
        .enumerate()
        .filter(|(_, s)| s.after.is_none() && !s.race)
    {
        host.run(k)?;
    }
    Ok(())
}

/// Fault injection right before the first KVM_RUN (see [`crate::plan::Inject`]).
fn inject_before_run(plan: &Plan, backings: &Backings) {
    if plan.inject.read_vdso_clock {
        std::hint::black_box(std::time::Instant::now());
    }
    if plan.inject.touch_behind_back {
        for hb in &backings.0 {
            for p in 0..hb.spec.pages {
                if hb.readable_range(p * PAGE, 1) {
                    let _ = hostio::read(hb.base + (p * PAGE) as usize, &mut [0u8; 1]);
                }
            }
        }
    }
}

/// The plan's end-of-run host reads (after `host_reads`, which stopped the uffd handlers).
fn peeks(plan: &Plan, backings: &Backings) -> Vec<String> {
    plan.peeks
        .iter()
        .map(|p| {
            let Some(hb) = backings.get(&p.backing) else {
                return "EFAULT".to_string();
            };
            let len = usize::from(p.size);
            let v = if p.file {
                hb.pread(p.offset, len)
            } else if hb.readable_range(p.offset, u64::from(p.size)) {
                let mut b = [0u8; 8];
                hostio::read(hb.base + p.offset as usize, &mut b[..len])
                    .ok()
                    .map(|()| u64::from_le_bytes(b))
            } else {
                None
            };
            v.map_or("EFAULT".into(), |v| format!("{v:#x}"))
        })
        .collect()
}

/// The final host view of every distinct (backing, offset) the guest accessed in a slot: for
/// each slot that covers the gpa at some point of the run (a plan memslot, then the slots of
/// `SetMemslot` steps, in plan order), the backing offset it maps the gpa to.
fn host_reads(
    plan: &Plan,
    accesses: &[AccessResult],
    backings: &mut Backings,
) -> Vec<(String, u64, u64)> {
    // The handlers must stop first: a host read of a missing page would otherwise raise an
    // event of its own. With the fd closed the range is plain anon again.
    for hb in &mut backings.0 {
        hb.stop_uffd();
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for a in accesses {
        let gpa = a.op.gpa();
        for m in all_slots(plan).filter(|m| (m.gpa..m.gpa + m.pages * PAGE).contains(&gpa)) {
            // The backing under the slot's hva (a slot may span adjacent backings).
            let Some(first) = backings.get(&m.backing) else {
                continue;
            };
            let hva = first.base + (m.offset_pages * PAGE + (gpa - m.gpa)) as usize;
            let Some(hb) = backings
                .0
                .iter()
                .find(|b| (b.base..b.base + (b.spec.pages * PAGE) as usize).contains(&hva))
            else {
                continue;
            };
            let off = (hva - hb.base) as u64;
            if !seen.insert((hb.spec.name.clone(), off)) {
                continue;
            }
            if hb.readable_range(off, 4) {
                if let Ok(v) = hostio::read_u32(hb.base + off as usize) {
                    out.push((hb.spec.name.clone(), off, u64::from(v)));
                }
            }
        }
    }
    out
}

/// Runs a plan on the real /dev/kvm.
///
/// Right before the first `KVM_RUN`, every page of every backing the scenario did not make
/// present must be absent from this process's page tables ([`crate::resident`]), or the run
/// is `Invalid`. A `[vvar]` page is present for the rest of the process once anything read it
/// (a vDSO clock read, or a guest access of an earlier run), so a run that needs one absent
/// belongs in a fresh process: [`crate::isolated`].
pub fn run(plan: &Plan) -> Result<ProbeResult, ProbeError> {
    let _serial = lock();
    run_locked(plan, false)
}

/// [`run`] under the caller's serialization. `detector`: the presence detector's own run,
/// which neither checks presence nor reads the host's final view (a host read of a `[vvar]`
/// page would fault it in).
pub(crate) fn run_locked(plan: &Plan, detector: bool) -> Result<ProbeResult, ProbeError> {
    crate::validate::plan(plan)?;
    let (codes, code_bytes) = assemble_all(plan)?;
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut list = Vec::with_capacity(plan.backings.len());
    for (b, at) in plan.backings.iter().zip(placements(plan)?) {
        list.push(HostBacking::create(b, &events, at)?);
    }
    let backings = Mutex::new(Backings(list));
    let vm = GuestVm::new(&code_bytes, &far_pages(plan))?;
    {
        let b = backings.lock().unwrap_or_else(|e| e.into_inner());
        for m in &plan.memslots {
            let hb = b
                .get(&m.backing)
                .ok_or_else(|| bad(format!("no backing named '{}'", m.backing)))?;
            vm.set_slot(
                m.slot,
                m.gpa,
                m.pages,
                hb.base + (m.offset_pages * PAGE) as usize,
                m.readonly,
            )
            .map_err(ProbeError::Sys)?;
        }
    }
    let timeout = Duration::from_millis(if plan.timeout_ms == 0 {
        DEFAULT_TIMEOUT_MS
    } else {
        plan.timeout_ms
    });
    let mut jobs = Vec::new();
    for (i, (cpu, code)) in plan.vcpus.iter().zip(&codes).enumerate() {
        let mut steps: BTreeMap<(usize, u32), Vec<usize>> = BTreeMap::new();
        // Re-runs after EFAULT: as the plan says, else as often as steps wait on exits.
        let mut reruns = vec![0u32; cpu.program.len()];
        for (n, s) in plan.host.iter().enumerate() {
            if let Some((v, a, k)) = s.after {
                if v == i {
                    steps.entry((a, k)).or_default().push(n);
                    if let Some(r) = reruns.get_mut(a) {
                        *r = (*r).max(k);
                    }
                }
            }
        }
        for (r, &given) in reruns.iter_mut().zip(&cpu.reruns) {
            *r = given;
        }
        let vcpu = vm.vcpu(i as u64, plan.mode, code.base)?;
        jobs.push(VcpuJob {
            index: i,
            vcpu,
            program: &cpu.program,
            code,
            steps,
            reruns,
            mmio: cpu.mmio.clone(),
            timeout,
        });
    }

    let host = HostSteps::new(plan, &backings, &vm);
    let racing: Vec<usize> = (0..plan.host.len())
        .filter(|&k| plan.host[k].race)
        .collect();
    let gate = Gate::new();
    let (setup, results) = std::thread::scope(|s| {
        let mut handles = Vec::new();
        let mut spawn_err = None;
        for job in jobs {
            let (gate, host) = (&gate, &host);
            let h = std::thread::Builder::new()
                .name(format!("vcpu{}", job.index))
                .spawn_scoped(s, move || {
                    let dog = Watchdog::new();
                    let go = gate.wait();
                    gate.vcpu_out();
                    if !go {
                        return Ok(Vec::new());
                    }
                    drive(job, host, &dog?)
                });
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    spawn_err = Some(sys("spawn vCPU thread", e));
                    break;
                }
            }
        }
        let n_vcpus = handles.len();
        if spawn_err.is_none() && !racing.is_empty() {
            let (gate, host, racing) = (&gate, &host, &racing);
            let h = std::thread::Builder::new()
                .name("host-race".into())
                .spawn_scoped(s, move || {
                    // The first allocation of a thread sets up its malloc arena, which may
                    // map fresh memory: done here, before the holes exist. After the gate
                    // this thread only issues the steps' system calls (a memslot ioctl maps
                    // nothing into this process and touches no backing page).
                    std::hint::black_box(Box::new(0u64));
                    if !gate.wait() {
                        return Ok(Vec::new());
                    }
                    gate.wait_vcpus(n_vcpus);
                    for &k in racing {
                        host.run(k).map_err(|e| match e {
                            ProbeError::Sys(s) => ProbeError::Sys(format!("racing step {k}: {s}")),
                            other => other,
                        })?;
                    }
                    Ok(Vec::new())
                });
            match h {
                Ok(h) => handles.push(h),
                Err(e) => spawn_err = Some(sys("spawn the racing host thread", e)),
            }
        }
        let setup = match spawn_err {
            Some(e) => Err(e),
            None => before_start(plan, &host).and_then(|()| {
                if detector {
                    return Ok(());
                }
                let b = backings.lock().unwrap_or_else(|e| e.into_inner());
                inject_before_run(plan, &b);
                crate::resident::check(plan, &b)
            }),
        };
        gate.set(setup.is_ok());
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(ProbeError::Sys(
                        "vCPU or racing host thread panicked".into(),
                    ))
                })
            })
            .collect();
        (setup, results)
    });
    setup?;
    let mut accesses = Vec::new();
    for r in results {
        accesses.extend(r?);
    }
    let mut b = backings.lock().unwrap_or_else(|e| e.into_inner());
    let (host_reads, peeks) = if detector {
        (Vec::new(), Vec::new())
    } else {
        let h = host_reads(plan, &accesses, &mut b);
        (h, peeks(plan, &b))
    };
    drop(b);
    let host_steps = host.outcomes();
    drop(host);
    let uffd_events = std::mem::take(&mut *events.lock().unwrap_or_else(|e| e.into_inner()));
    drop(vm);
    Ok(ProbeResult {
        plan: plan.name.clone(),
        mode: plan.mode,
        mmu: mmu::describe(),
        accesses,
        uffd_events,
        host_reads,
        peeks,
        host_steps,
    })
}
