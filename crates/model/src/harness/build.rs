//! Scenario → world.

use super::host::run_host_thread;
use crate::drivers::mixedmap::{MixedMap, Mode as MixedMode};
use crate::drivers::ttm::{Ttm, TtmConfig};
use crate::drivers::usbfs::Usbfs;
use crate::drivers::userfault::Userfault;
use crate::drivers::vfio_bar::{VfioBar, VfioBarConfig};
use crate::drivers::vgpu_bar::{VgpuBar, VgpuConfig};
use crate::drivers::vvar::Vvar;
use crate::kvm::pin::{kvm_vcpu_map_access, PinOutcome};
use crate::kvm::vcpu::{GuestOp, Sequencer, Vcpu};
use crate::kvm::{Kvm, Memslot, PolicyId};
use crate::mm::fault::user_access;
use crate::mm::shmem::PageCacheOps;
use crate::mm::{AddressSpace, Frames, Hva, Mm, MmapArgs, Owner, Pte, VmFlags, PAGE_SIZE};
use scenario::{Backing, Scenario};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use world::World;

/// RAM frames of the modelled host for `sc`: room for every mapping's pages several times
/// over (page cache plus private copies, driver buffers with high-order alignment, pages
/// refilled after a zap), so that no scenario runs out of memory by accident.
pub fn nr_ram(sc: &Scenario) -> u64 {
    let pages: u64 = sc.mappings.iter().map(|m| m.pages).sum();
    160.max(64 + 4 * pages)
}

/// Where mapping `i` lives in the VMM's address space (a mapping that `follows` another
/// starts where it ends; runs of them stay within one 16 MiB stride, as validation ensures).
pub fn mapping_base(sc: &Scenario, i: usize) -> Hva {
    match &sc.mappings[i].follows {
        None => 0x7f00_0000_0000 + (i as u64) * 0x100_0000,
        Some(f) => {
            let j = sc
                .mappings
                .iter()
                .position(|m| &m.name == f)
                .expect("validated: follows an earlier mapping");
            mapping_base(sc, j) + sc.mappings[j].pages * PAGE_SIZE
        }
    }
}

/// The driver or kernel object behind a mapping.
#[derive(Clone)]
pub enum Backend {
    Plain,
    PageCache(Rc<PageCacheOps>),
    Vvar(Rc<Vvar>),
    Userfault(Rc<Userfault>),
    Vgpu(Rc<VgpuBar>),
    Vfio(Rc<VfioBar>),
    Usbfs(Rc<Usbfs>),
    Ttm(Rc<Ttm>),
    Mixed(Rc<MixedMap>),
}

/// A mapping of the scenario as built: its base hva and backend.
#[derive(Clone)]
pub struct MappingState {
    pub name: String,
    pub backing: Backing,
    pub base: Hva,
    pub pages: u64,
    pub backend: Backend,
}

/// Everything a built world consists of, for the runner and the oracles.
pub struct Sys {
    pub frames: Rc<Frames>,
    pub mm: Rc<Mm>,
    pub kvm: Rc<Kvm>,
    pub vcpus: Vec<Rc<Vcpu>>,
    pub nested: Vec<Rc<RefCell<Option<PinOutcome>>>>,
    pub mappings: Vec<MappingState>,
    pub seq: Rc<Sequencer>,
    /// Actors still to finish before the uffd handlers are told to stop.
    pub running: Rc<Running>,
    /// The vCPU and nested-map actors (the guest side), for schedules that order the host
    /// side first ([`super::ScheduleKind::VcpusLast`]).
    pub guest_actors: Vec<world::ActorId>,
    /// Host reads the scenario's `[[seen]]` asks for at the end of a run.
    pub peeks: Vec<scenario::Peek>,
    /// Per scenario host step: what it returned (`ok`, `EINVAL`, ...), once it ran.
    pub host_results: Rc<RefCell<Vec<Option<String>>>>,
    /// The memslot steps (index, `set-memslot 1`), whose results are observed items.
    pub memslot_steps: Vec<(usize, String)>,
}

impl Sys {
    pub fn mapping(&self, name: &str) -> &MappingState {
        self.mappings
            .iter()
            .find(|m| m.name == name)
            .expect("validated mapping name")
    }
}

fn flags(read: bool, write: bool) -> VmFlags {
    let mut f = VmFlags::empty();
    if read {
        f |= VmFlags::VM_READ;
    }
    if write {
        f |= VmFlags::VM_WRITE;
    }
    f
}

/// A guest instruction of the file format, in the model's terms.
fn guest_op(op: scenario::GuestOp) -> GuestOp {
    match op {
        scenario::GuestOp::Read { gpa, size } => GuestOp::Read { gpa, size },
        scenario::GuestOp::Write { gpa, size, value } => GuestOp::Write { gpa, size, value },
    }
}

/// The content a userfault handler copies in: `0xa0 + page` in every byte (uffd.c).
pub fn uffd_fill(page: u64) -> u32 {
    let b = 0xa0u32.wrapping_add(page as u32) & 0xff;
    b * 0x0101_0101
}

fn map_one(
    w: &mut World,
    frames: &Rc<Frames>,
    mm: &Rc<Mm>,
    m: &scenario::Mapping,
    base: Hva,
) -> Result<Backend, String> {
    let e = |err: crate::mm::Errno| format!("mapping {}: {err}", m.name);
    let prefill_anon = |pages: u64, pattern: u32, write: bool, protnone: bool| {
        for i in 0..pages {
            if let Some(p) = frames.alloc(0, Owner::Anon, false) {
                frames.fill(p, pattern);
                mm.set_pte_setup(
                    base + i * PAGE_SIZE,
                    Pte {
                        pfn: p,
                        write,
                        special: false,
                        protnone,
                    },
                );
            }
        }
    };
    Ok(match m.backing {
        Backing::AnonPrivate | Backing::ProtNone => {
            mm.mmap(MmapArgs::anon(
                &m.name,
                base,
                m.pages,
                flags(m.read, m.write),
            ))
            .map_err(e)?;
            // The host stored `fill` while the mapping was still read-write, then dropped the
            // protection (as the probe does): mprotect leaves the pages mapped, read-only or,
            // for PROT_NONE, as protnone PTEs (x86 `_PAGE_PROTNONE`, still `pte_present`), so
            // a later mprotect back to read-write shows the data again.
            if let Some(f) = m.fill {
                prefill_anon(m.pages, f, m.write, !m.read && !m.write);
            }
            Backend::Plain
        }
        Backing::Hole => Backend::Plain,
        Backing::AnonShared | Backing::Memfd | Backing::FilePrivate | Backing::FileShared => {
            let shared = m.backing != Backing::FilePrivate;
            let file = AddressSpace::new(w, &m.name, m.pages);
            let ops = Rc::new(PageCacheOps::new(w, file.clone(), frames.clone()));
            let is_file = matches!(m.backing, Backing::FilePrivate | Backing::FileShared);
            if is_file {
                file.disk_pattern.set(m.fill.unwrap_or(0));
            }
            let mut f = flags(m.read, m.write) | VmFlags::VM_MAYREAD;
            if shared {
                f |= VmFlags::VM_SHARED;
            }
            if m.write || !is_file {
                f |= VmFlags::VM_MAYWRITE;
            }
            mm.mmap(MmapArgs {
                name: m.name.clone(),
                start: base,
                pages: m.pages,
                flags: f,
                pgoff: 0,
                ops: Some(ops.clone()),
                file: Some(file),
            })
            .map_err(e)?;
            if let (false, Some(pattern)) = (is_file, m.fill) {
                // The host wrote the pattern through its mapping: cache pages, mapped.
                for i in 0..m.pages {
                    if let Some(p) = ops.populate(i, pattern) {
                        frames.get_page_setup(p);
                        mm.set_pte_setup(
                            base + i * PAGE_SIZE,
                            Pte {
                                pfn: p,
                                write: m.write,
                                special: false,
                                protnone: false,
                            },
                        );
                    }
                }
            }
            Backend::PageCache(ops)
        }
        Backing::Vvar => {
            let v = Vvar::new(frames, mm).map_err(e)?;
            v.mmap(base).map_err(e)?;
            Backend::Vvar(v)
        }
        Backing::VvarVclock => {
            let v = Vvar::new(frames, mm).map_err(e)?;
            v.mmap_vclock(base).map_err(e)?;
            Backend::Vvar(v)
        }
        Backing::Userfault => {
            Backend::Userfault(Userfault::new(w, mm, base, m.pages, m.user_mode_only).map_err(e)?)
        }
        Backing::VgpuBar => {
            let d = VgpuBar::new(
                w,
                frames,
                mm,
                VgpuConfig {
                    index: m.region_index as u32,
                    pages: m.pages,
                    pattern: m.fill.unwrap_or(0x7600_0000),
                    retry_first_fault: m.fault_retry,
                    racy_remap: false,
                },
            );
            d.mmap(base).map_err(e)?;
            Backend::Vgpu(d)
        }
        Backing::VfioBar => {
            let d = VfioBar::new(
                w,
                frames,
                mm,
                VfioBarConfig {
                    index: m.region_index as u32,
                    pages: m.pages,
                    bar_pfn: VfioBarConfig::default_bar_pfn(m.region_index as u32),
                    pattern: m.fill.unwrap_or(0xba5e_0000),
                    eager_legacy: false,
                    whole_vma: false,
                },
            );
            d.mmap(base).map_err(e)?;
            Backend::Vfio(d)
        }
        Backing::Usbfs => {
            let d = Usbfs::new(frames, mm);
            d.mmap(base, m.pages, m.write).map_err(e)?;
            Backend::Usbfs(d)
        }
        Backing::Ttm => {
            let d = Ttm::new(
                w,
                frames,
                mm,
                TtmConfig {
                    pages: m.pages,
                    pattern: m.fill.unwrap_or(0x7770_0000),
                    ..TtmConfig::default()
                },
            )
            .map_err(e)?;
            d.mmap(base).map_err(e)?;
            Backend::Ttm(d)
        }
        Backing::Mixedmap => {
            let mode = if m.insert_mixed {
                MixedMode::InsertMixed
            } else {
                MixedMode::InsertPage
            };
            let d = MixedMap::new(w, frames, mm, mode, m.pages, m.fill.unwrap_or(0x3170_0000))
                .map_err(e)?;
            d.mmap(base).map_err(e)?;
            Backend::Mixed(d)
        }
    })
}

/// Build the world for `sc` under `policy`. Setup that a VMM does before starting vCPUs
/// (driver `->mmap` work that needs the mmap lock, host touches) runs in a first phase under
/// the sequential schedule; the returned world holds the actors of the run proper.
pub fn build(sc: &Scenario, policy: PolicyId) -> Result<(World, Sys), String> {
    build_with(sc, policy, &BuildOptions::default())
}

/// How to build a world.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildOptions {
    /// Audit every step's accesses against its footprint (setup included).
    pub audit: bool,
    /// The guest runs at CPL0, which this PVM host emulates: every access goes through KVM's
    /// instruction emulator ([`crate::kvm::vcpu::Vcpu::emulated`]), not the stage-2 fault
    /// path.
    pub emulated: bool,
}

/// [`build`] with options.
pub fn build_with(
    sc: &Scenario,
    policy: PolicyId,
    opts: &BuildOptions,
) -> Result<(World, Sys), String> {
    let mut w = World::new();
    w.set_audit(opts.audit || std::env::var_os("KVMMU_AUDIT").is_some());
    let frames = Rc::new(Frames::new(&mut w, nr_ram(sc)));
    let mm = Mm::new(&mut w, frames.clone());
    let kvm = Kvm::new(&mut w, &mm, policy.build());
    kvm.allow_unsafe_mappings.set(sc.allow_unsafe_mappings);
    let mut mappings = Vec::new();
    for (i, m) in sc.mappings.iter().enumerate() {
        let base = mapping_base(sc, i);
        let backend = map_one(&mut w, &frames, &mm, m, base)?;
        mappings.push(MappingState {
            name: m.name.clone(),
            backing: m.backing,
            base,
            pages: m.pages,
            backend,
        });
    }
    for s in &sc.memslots {
        let base = mappings
            .iter()
            .find(|m| m.name == s.mapping)
            .expect("validated")
            .base;
        kvm.set_memslot(Memslot {
            id: s.slot,
            base_gfn: s.gpa >> 12,
            npages: s.pages,
            userspace_addr: base + s.offset * PAGE_SIZE,
            readonly: s.readonly,
            ..Memslot::default()
        });
    }
    kvm.set_dynamic_slots(sc.host.iter().any(|h| h.action.is_memslot()));
    // Phase 1: driver populate and host touches, sequentially.
    {
        for (m, st) in sc.mappings.iter().zip(&mappings) {
            if let Backend::Mixed(d) = &st.backend {
                // The vma the VMM's mmap() returned (looked up before anything runs).
                if let Some(v) = mm.vma_lookup(st.base) {
                    let d = d.clone();
                    w.spawn(format!("setup {}", m.name), move |cx| async move {
                        let _ = d.populate(&cx, &v).await;
                    });
                }
            }
            // The VMM's userfaultfd handler runs from mmap() on, as the probe's does: the
            // host's own touches of a registered range fault into it like any access.
            if let (Backend::Userfault(u), false) = (&st.backend, m.touch.is_empty()) {
                let mut pages = m.touch.clone();
                pages.sort_unstable();
                pages.dedup();
                spawn_uffd_handler(&mut w, &m.name, u, m.fill, pages.len() as u64);
            }
            if !m.touch.is_empty() {
                // One VMM thread touches the pages, in the listed order.
                let (mm2, base, pages) = (mm.clone(), st.base, m.touch.clone());
                w.spawn(format!("touch {}", m.name), move |cx| async move {
                    for page in pages {
                        let _ =
                            user_access(&cx, &mm2, base + page * PAGE_SIZE, 4, None, true).await;
                    }
                });
            }
        }
        let r = w.run(&mut world::FirstEnabled, &mut || {
            std::ops::ControlFlow::Continue(())
        });
        match r.status {
            world::Status::Completed => {}
            world::Status::Deadlock(b) => {
                let who: Vec<String> = b.iter().map(|x| x.to_string()).collect();
                return Err(format!(
                    "the host's setup (driver populate, touch) cannot finish: {}",
                    who.join("; ")
                ));
            }
            world::Status::Bug { actor, what } => {
                return Err(format!("the host's setup hit BUG() in {actor}: {what}"))
            }
            world::Status::StepLimit => {
                return Err("the host's setup did not finish within the step bound".into())
            }
            world::Status::Audit { actor, detail } => {
                return Err(format!("the host's setup: audit: {actor}: {detail}"))
            }
            world::Status::Stopped(why) => return Err(format!("the host's setup stopped: {why}")),
            world::Status::Diverged { step } => {
                return Err(format!("the host's setup stopped at step {step}"))
            }
        }
    }
    let seq = Sequencer::new(
        w.object("vmm sequencing"),
        sc.vcpus.len(),
        sc.host.iter().map(|h| h.after).collect(),
    );
    // Only the VMM's exit path of a userfaultfd scenario waits for every thread to finish;
    // elsewhere nobody reads the count and threads exit without a step.
    let has_uffd = sc.mappings.iter().any(|m| m.backing == Backing::Userfault);
    let running = Rc::new(Running {
        obj: if has_uffd {
            Some(w.object("running VMM threads"))
        } else {
            None
        },
        count: Cell::new(0),
    });
    let mut vcpus = Vec::new();
    let mut guest_actors = Vec::new();
    for (i, v) in sc.vcpus.iter().enumerate() {
        let program = v.program.iter().map(|&op| guest_op(op)).collect();
        let vcpu = Vcpu::with_reruns(i, &kvm, program, v.reruns.clone(), &seq);
        vcpu.emulated.set(opts.emulated);
        vcpus.push(vcpu.clone());
        let running = running.clone();
        running.count.set(running.count.get() + 1);
        guest_actors.push(w.spawn(format!("vcpu{i}"), move |cx| async move {
            vcpu.run(cx.clone()).await;
            running.finished(&cx).await;
        }));
    }
    let mut nested = Vec::new();
    for (i, n) in sc.nested.iter().enumerate() {
        let out = Rc::new(RefCell::new(None));
        nested.push(out.clone());
        let (kvm2, gpa, rounds, running) = (kvm.clone(), n.gpa, n.rounds, running.clone());
        running.count.set(running.count.get() + 1);
        guest_actors.push(w.spawn(format!("nested{i}"), move |cx| async move {
            let o = kvm_vcpu_map_access(&cx, &kvm2, gpa, rounds).await;
            *out.borrow_mut() = Some(o);
            running.finished(&cx).await;
        }));
    }
    let mut threads: Vec<String> = Vec::new();
    for h in &sc.host {
        if !threads.contains(&h.thread) {
            threads.push(h.thread.clone());
        }
    }
    let sys = Sys {
        frames,
        mm,
        kvm,
        vcpus,
        nested,
        mappings,
        seq,
        running,
        guest_actors,
        peeks: sc.peeks().into_iter().cloned().collect(),
        host_results: Rc::new(RefCell::new(vec![None; sc.host.len()])),
        memslot_steps: memslot_steps(sc),
    };
    for t in threads {
        let steps: Vec<(usize, scenario::HostAction)> = sc
            .host
            .iter()
            .enumerate()
            .filter(|(_, h)| h.thread == t)
            .map(|(j, h)| (j, h.action.clone()))
            .collect();
        let ctx = super::host::HostCtx::new(&sys);
        sys.running.count.set(sys.running.count.get() + 1);
        w.spawn(t, move |cx| run_host_thread(cx, ctx, steps));
    }
    for st in &sys.mappings {
        if let Backend::Userfault(u) = &st.backend {
            spawn_uffd_handler(
                &mut w,
                &st.name,
                u,
                sc.mapping(&st.name).and_then(|m| m.fill),
                u64::MAX,
            );
            // The VMM's exit path stops the handler once every vCPU and host thread is done.
            let (u3, running) = (u.clone(), sys.running.clone());
            let obj = running.obj.expect("tracked in userfaultfd scenarios");
            w.spawn(format!("vmm-exit-{}", st.name), move |cx| async move {
                let r = running.clone();
                cx.wait_until(obj, "every vCPU and host thread done", move || {
                    world::audit::read(obj);
                    r.count.get() == 0
                })
                .await;
                u3.stop(&cx).await;
            });
        }
    }
    Ok((w, sys))
}

/// The scenario's memslot steps, as observed items name them: (index, `set-memslot 1`).
pub fn memslot_steps(sc: &Scenario) -> Vec<(usize, String)> {
    sc.host
        .iter()
        .enumerate()
        .filter_map(|(k, h)| match h.action {
            scenario::HostAction::SetMemslot { slot, .. } => {
                Some((k, format!("set-memslot {slot}")))
            }
            scenario::HostAction::DeleteMemslot { slot } => {
                Some((k, format!("delete-memslot {slot}")))
            }
            _ => None,
        })
        .collect()
}

/// The VMM's userfaultfd handler thread for `u`, handling at most `max_msgs` faults.
fn spawn_uffd_handler(
    w: &mut World,
    name: &str,
    u: &Rc<Userfault>,
    fill: Option<u32>,
    max_msgs: u64,
) {
    let handler = u.clone();
    w.spawn(format!("uffd-{name}"), move |cx| async move {
        let fill_of = move |page: u64| fill.unwrap_or_else(|| uffd_fill(page));
        handler.run_handler(cx, fill_of, max_msgs).await;
    });
}

/// How many VMM threads (vCPUs, nested maps, host threads) are still running.
pub struct Running {
    /// The count's footprint object, when someone waits for it.
    pub obj: Option<world::ObjId>,
    pub count: Cell<usize>,
}

impl Running {
    /// A VMM thread is done: the count the exit path waits on drops (a write of `obj`).
    pub(crate) async fn finished(&self, cx: &world::Cx) {
        if let Some(obj) = self.obj {
            cx.access(obj, world::Access::Write, "thread exits").await;
            world::audit::write(obj);
        }
        self.count.set(self.count.get() - 1);
    }
}
