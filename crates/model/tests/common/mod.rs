//! Shared fixtures for the mm unit tests: a world with frames and an mm, vma builders, a
//! scripted driver (`VmOps`), and an MMU notifier that records what it sees.
#![allow(dead_code)]

use model::mm::*;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::ops::ControlFlow;
use std::rc::{Rc, Weak};
use world::{Cx, Decision, FirstEnabled, ObjId, RunResult, Scheduler, World};

/// Where tests put anonymous memory, a device mapping, and nothing at all.
pub const ANON: Hva = 0x10_0000;
pub const DEV: Hva = 0x20_0000;
pub const NOWHERE: Hva = 0x90_0000;
pub const PAGE: u64 = PAGE_SIZE;
/// The guest-physical page the KVM tests fault on.
pub const GPA: u64 = 0x10_0000;

/// First BAR pfn used by the device mappings (not `pfn_valid`).
pub fn bar(i: u64) -> Pfn {
    Pfn(IO_BASE + i)
}

pub struct Env {
    pub w: World,
    pub frames: Rc<Frames>,
    pub mm: Rc<Mm>,
}

pub fn env() -> Env {
    let mut w = World::new();
    let frames = Rc::new(Frames::new(&mut w, 64));
    frames.add_io(bar(0), 16, 0xb0b0_b0b0);
    let mm = Mm::new(&mut w, frames.clone());
    Env { w, frames, mm }
}

pub fn run(w: &mut World) -> RunResult {
    w.run(&mut FirstEnabled, &mut || ControlFlow::Continue(()))
}

/// Runs actor 0 (the vCPU) until its next step would touch `trigger`, then lets actor 1 (the
/// host) run to completion, then actor 0 again: a precise interleaving.
pub struct HostAt {
    pub trigger: ObjId,
    pub fired: bool,
}

impl Scheduler for HostAt {
    fn pick(&mut self, d: &Decision) -> Option<usize> {
        let en = d.enabled;
        if let Some(fp) = d.fp_of(0) {
            if fp.touches(self.trigger) {
                self.fired = true;
            }
            if !self.fired || !en.contains(&1) {
                return Some(0);
            }
        }
        en.iter().copied().find(|&a| a == 1).or(en.first().copied())
    }
}

/// Where an actor leaves its result.
pub type Slot<T> = Rc<RefCell<Option<T>>>;

/// Spawn an actor and keep what its body returns.
pub fn spawn_ret<T, F, Fut>(w: &mut World, name: &str, f: F) -> Slot<T>
where
    T: 'static,
    F: FnOnce(Cx) -> Fut,
    Fut: Future<Output = T> + 'static,
{
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    w.spawn(name, move |cx| {
        let fut = f(cx);
        async move {
            let v = fut.await;
            *o.borrow_mut() = Some(v);
        }
    });
    out
}

pub const RW: VmFlags = VmFlags(VmFlags::VM_READ.0 | VmFlags::VM_WRITE.0);

/// `VM_READ|VM_WRITE|VM_SHARED|VM_MAYREAD|VM_MAYWRITE|VM_IO|VM_PFNMAP|...`: a vfio BAR.
pub fn pfnmap_flags() -> VmFlags {
    shared_flags()
        | VmFlags::VM_IO
        | VmFlags::VM_PFNMAP
        | VmFlags::VM_DONTEXPAND
        | VmFlags::VM_DONTDUMP
}

/// A shared writable mapping with no special flags yet.
pub fn shared_flags() -> VmFlags {
    VmFlags::VM_READ
        | VmFlags::VM_WRITE
        | VmFlags::VM_SHARED
        | VmFlags::VM_MAYREAD
        | VmFlags::VM_MAYWRITE
}

/// `[vvar]` on x86-64: `VM_READ|VM_MAYREAD|VM_IO|VM_DONTDUMP|VM_PFNMAP`.
pub fn vvar_flags() -> VmFlags {
    VmFlags::VM_READ
        | VmFlags::VM_MAYREAD
        | VmFlags::VM_IO
        | VmFlags::VM_DONTDUMP
        | VmFlags::VM_PFNMAP
}

pub fn anon(mm: &Rc<Mm>, start: Hva, pages: u64, flags: VmFlags) -> Rc<Vma> {
    mm.mmap(MmapArgs::anon("anon", start, pages, flags))
        .unwrap()
}

pub fn device(
    mm: &Rc<Mm>,
    name: &str,
    start: Hva,
    pages: u64,
    flags: VmFlags,
    ops: Option<Rc<dyn VmOps>>,
) -> Rc<Vma> {
    mm.mmap(MmapArgs {
        name: name.into(),
        start,
        pages,
        flags,
        pgoff: 0,
        ops,
        file: None,
    })
    .unwrap()
}

pub fn special(pfn: Pfn, write: bool) -> Pte {
    Pte {
        pfn,
        write,
        special: true,
        protnone: false,
    }
}

pub fn normal(pfn: Pfn, write: bool) -> Pte {
    Pte {
        pfn,
        write,
        special: false,
        protnone: false,
    }
}

/// What the scripted driver's `->fault` does on its n-th call (the last step repeats).
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// `vmf_insert_pfn(vma, addr, base + page index)`, return its result.
    InsertPfn(Pfn),
    /// `vmf_insert_mixed(vma, addr, pfn)`.
    InsertMixed(Pfn),
    /// Return this `vm_fault_t` and do nothing.
    Ret(VmFault),
    /// Drop the mmap lock and return `VM_FAULT_RETRY` (whatever the flags say).
    DropLockRetry,
    /// Insert, drop the mmap lock, return `VM_FAULT_COMPLETED`.
    InsertDropLockCompleted(Pfn),
}

pub struct Driver {
    script: Vec<Step>,
    /// Flags of every `->fault` call.
    pub calls: RefCell<Vec<FaultFlags>>,
    pub mkwrites: Cell<u32>,
}

impl Driver {
    pub fn new(script: Vec<Step>) -> Rc<Self> {
        Rc::new(Driver {
            script,
            calls: RefCell::new(Vec::new()),
            mkwrites: Cell::new(0),
        })
    }

    pub fn ops(self: &Rc<Self>) -> Option<Rc<dyn VmOps>> {
        Some(self.clone() as Rc<dyn VmOps>)
    }

    pub fn ncalls(&self) -> usize {
        self.calls.borrow().len()
    }
}

fn page_index(vmf: &VmFaultArgs) -> u64 {
    (vmf.address - vmf.vma.start) / PAGE_SIZE
}

impl VmOps for Driver {
    fn name(&self) -> &str {
        "testdrv"
    }

    fn fault<'a>(&'a self, cx: &'a Cx, vmf: &'a VmFaultArgs) -> LocalBoxFuture<'a, FaultResult> {
        Box::pin(async move {
            let n = self.calls.borrow().len();
            self.calls.borrow_mut().push(vmf.flags);
            let step = self.script[n.min(self.script.len() - 1)];
            let ret = match step {
                Step::InsertPfn(base) => {
                    insert::vmf_insert_pfn(cx, &vmf.vma, vmf.address, Pfn(base.0 + page_index(vmf)))
                        .await
                }
                Step::InsertMixed(pfn) => {
                    insert::vmf_insert_mixed(cx, &vmf.vma, vmf.address, pfn).await
                }
                Step::Ret(r) => r,
                Step::DropLockRetry => {
                    vmf.mm.mmap_unlock(cx).await;
                    VmFault::VM_FAULT_RETRY
                }
                Step::InsertDropLockCompleted(base) => {
                    insert::vmf_insert_pfn(
                        cx,
                        &vmf.vma,
                        vmf.address,
                        Pfn(base.0 + page_index(vmf)),
                    )
                    .await;
                    vmf.mm.mmap_unlock(cx).await;
                    VmFault::VM_FAULT_COMPLETED
                }
            };
            FaultResult::ret(ret)
        })
    }

    fn pfn_mkwrite<'a>(
        &'a self,
        _cx: &'a Cx,
        _vmf: &'a VmFaultArgs,
    ) -> LocalBoxFuture<'a, VmFault> {
        self.mkwrites.set(self.mkwrites.get() + 1);
        Box::pin(async { VmFault::empty() })
    }
}

/// One notifier callback as the recorder saw it.
#[derive(Clone, Debug)]
pub struct Call {
    pub start: bool,
    pub range: NotifierRange,
    /// The PTEs present in the range at the time of the call.
    pub ptes: Vec<(Hva, Pte)>,
    /// `is_free` of each watched pfn at the time of the call.
    pub free: Vec<bool>,
}

/// A test `MmuNotifier`: records every start/end with a snapshot of the PTEs in the range.
pub struct Recorder {
    mm: Weak<Mm>,
    pub watch: RefCell<Vec<Pfn>>,
    pub calls: RefCell<Vec<Call>>,
}

impl Recorder {
    pub fn attach(mm: &Rc<Mm>) -> Rc<Self> {
        let r = Rc::new(Recorder {
            mm: Rc::downgrade(mm),
            watch: RefCell::new(Vec::new()),
            calls: RefCell::new(Vec::new()),
        });
        mm.register_notifier(r.clone());
        r
    }

    fn record(&self, start: bool, range: &NotifierRange) {
        let mm = self.mm.upgrade().expect("mm alive");
        let free = self
            .watch
            .borrow()
            .iter()
            .map(|&p| mm.frames.is_free(p))
            .collect();
        self.calls.borrow_mut().push(Call {
            start,
            range: *range,
            ptes: mm.ptes_in(range.start, range.end),
            free,
        });
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// Exactly one start/end pair over `[start, end)` with `event`; returns it.
    pub fn one_pair(&self, start: Hva, end: Hva, event: NotifyEvent) -> (Call, Call) {
        let calls = self.calls();
        assert_eq!(calls.len(), 2, "expected one start/end pair, got {calls:?}");
        let want = NotifierRange { start, end, event };
        assert!(
            calls[0].start && !calls[1].start,
            "start must precede end: {calls:?}"
        );
        assert_eq!(calls[0].range, want);
        assert_eq!(calls[1].range, want);
        (calls[0].clone(), calls[1].clone())
    }
}

impl MmuNotifier for Recorder {
    fn invalidate_range_start<'a>(
        &'a self,
        _cx: &'a Cx,
        range: &'a NotifierRange,
    ) -> LocalBoxFuture<'a, ()> {
        self.record(true, range);
        Box::pin(async {})
    }

    fn invalidate_range_end<'a>(
        &'a self,
        _cx: &'a Cx,
        range: &'a NotifierRange,
    ) -> LocalBoxFuture<'a, ()> {
        self.record(false, range);
        Box::pin(async {})
    }
}

pub fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// A one-page vfio-pci BAR mapped at [`DEV`].
pub fn vfio_bar(e: &mut Env) -> Rc<model::drivers::VfioBar> {
    let vfio = model::drivers::VfioBar::new(
        &mut e.w,
        &e.frames,
        &e.mm,
        model::drivers::VfioBarConfig {
            pages: 1,
            ..model::drivers::VfioBarConfig::default()
        },
    );
    vfio.mmap(DEV).unwrap();
    vfio
}

/// A VM under `policy` with a one-page memslot at [`GPA`] over `hva` (`KVM_MEM_READONLY` if
/// `readonly`), and a vCPU actor that takes one stage-2 fault on GPA; returns the VM and
/// where the fault's result lands.
pub fn vm_with_fault(
    e: &mut Env,
    policy: model::kvm::PolicyId,
    hva: Hva,
    write: bool,
    readonly: bool,
) -> (Rc<model::kvm::Kvm>, Slot<model::kvm::fault::PfResult>) {
    let kvm = model::kvm::Kvm::new(&mut e.w, &e.mm, policy.build());
    kvm.set_memslot(model::kvm::Memslot {
        id: 1,
        base_gfn: GPA >> 12,
        npages: 1,
        userspace_addr: hva,
        readonly,
        ..model::kvm::Memslot::default()
    });
    let k = kvm.clone();
    let r = spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        model::kvm::fault::kvm_mmu_page_fault(&cx, &k, GPA, write).await
    });
    (kvm, r)
}
