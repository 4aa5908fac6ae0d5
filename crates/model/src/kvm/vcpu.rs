//! vCPUs running a guest program of loads and stores to guest-physical addresses, with the
//! VMM run loop around them: every access either hits an SPTE or faults through
//! [`kvm_mmu_page_fault`]; error exits are handled as x86 KVM and a VMM handle them.

use super::fault::{kvm_mmu_page_fault, PfResult};
use super::Kvm;
use crate::mm::fault::user_access;
use crate::mm::{Hva, PAGE_SHIFT, PAGE_SIZE};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use world::{audit, Access, Cx, ObjId};

/// One guest instruction: a load or a store of `size` bytes to a guest-physical address.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum GuestOp {
    Read { gpa: u64, size: u8 },
    Write { gpa: u64, size: u8, value: u64 },
}

impl GuestOp {
    pub fn gpa(&self) -> u64 {
        match *self {
            GuestOp::Read { gpa, .. } | GuestOp::Write { gpa, .. } => gpa,
        }
    }

    pub fn is_write(&self) -> bool {
        matches!(self, GuestOp::Write { .. })
    }

    pub fn size(&self) -> u8 {
        match *self {
            GuestOp::Read { size, .. } | GuestOp::Write { size, .. } => size,
        }
    }
}

/// `read32 0x10000`, `write32 0x10004 = 0x99`: how outputs name an access.
impl fmt::Display for GuestOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GuestOp::Read { gpa, size } => write!(f, "read{} {gpa:#x}", size * 8),
            GuestOp::Write { gpa, size, value } => {
                write!(f, "write{} {gpa:#x} = {value:#x}", size * 8)
            }
        }
    }
}

/// What one attempt of a guest access ended in, as the VMM sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The load completed with this value.
    Value(u64),
    /// The load completed from kernel data whose contents the model does not know (the
    /// vDSO's `[vvar]` pages): the value is the model's placeholder, not a prediction.
    KernelData(u64),
    /// The store completed.
    Done,
    /// The store completed, emulated by KVM through the host mapping (`RET_PF_EMULATE`): the
    /// page was not mapped into the guest. The VMM sees no exit.
    Emulated,
    /// `KVM_EXIT_MMIO` for a load (the VMM supplies 0).
    MmioRead { gpa: u64, len: u8 },
    /// `KVM_EXIT_MMIO` for a store.
    MmioWrite { gpa: u64, len: u8, data: u64 },
    /// `KVM_RUN` = -1, errno `EFAULT`, `exit_reason` 0.
    Efault,
    /// `KVM_RUN` = -1, errno `EINTR` (`KVM_EXIT_INTR`).
    Intr,
    /// SIGBUS (hwpoison) to the vCPU thread.
    Sigbus,
    /// The host crashed during this access.
    HostBug,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Value(v) => write!(f, "{v:#x}"),
            Outcome::KernelData(_) => f.write_str("kernel data"),
            Outcome::Done => f.write_str("done"),
            Outcome::Emulated => f.write_str("done (emulated)"),
            Outcome::MmioRead { gpa, len } => write!(f, "MMIO read @{gpa:#x}/{len}"),
            Outcome::MmioWrite { gpa, len, data } => {
                write!(f, "MMIO write {data:#x} @{gpa:#x}/{len}")
            }
            Outcome::Efault => f.write_str("EFAULT"),
            Outcome::Intr => f.write_str("EINTR"),
            Outcome::Sigbus => f.write_str("SIGBUS"),
            Outcome::HostBug => f.write_str("BUG"),
        }
    }
}

/// The attempts of one guest access (a first try, then re-runs after host repairs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRecord {
    pub op: GuestOp,
    pub attempts: Vec<Outcome>,
}

/// The last load a guest did through an SPTE, for the `guest-coherent` oracle.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SpteRead {
    pub step: u64,
    pub hva: Hva,
    pub gpa: u64,
    pub size: u8,
    pub value: u64,
}

/// Orders host-side steps after guest accesses, as a VMM that waits for the guest to reach
/// a point before acting (and re-runs a vCPU after repairing a mapping). Its mutable state is
/// the `obj` footprint object: read by the waits, written by whoever advances it.
pub struct Sequencer {
    pub obj: ObjId,
    /// Per vCPU: the last point reached, as [`point_key`] (0: none), set at sequenced points.
    progress: RefCell<Vec<u64>>,
    /// Per host step: the point it waits for (fixed).
    after: Vec<Option<GuestPoint>>,
    /// Per host step: whether it has run.
    done: RefCell<Vec<bool>>,
}

/// (vCPU index, access index, exit from 1): the end of that attempt of that access.
pub type GuestPoint = (usize, usize, u32);

/// Points of one vCPU in program order: access, then exit.
fn point_key(access: usize, exit: u32) -> u64 {
    ((access as u64) << 32) | u64::from(exit)
}

impl Sequencer {
    pub fn new(obj: ObjId, vcpus: usize, after: Vec<Option<GuestPoint>>) -> Rc<Self> {
        Rc::new(Sequencer {
            obj,
            progress: RefCell::new(vec![0; vcpus]),
            done: RefCell::new(vec![false; after.len()]),
            after,
        })
    }

    /// Whether host step `j` may run.
    pub fn step_ready(&self, j: usize) -> bool {
        match self.after[j] {
            None => true,
            Some((v, i, k)) => {
                audit::read(self.obj);
                self.progress.borrow()[v] >= point_key(i, k)
            }
        }
    }

    /// Whether host step `j` waits for a guest access.
    pub fn is_sequenced(&self, j: usize) -> bool {
        self.after[j].is_some()
    }

    pub fn step_done(&self, j: usize) {
        audit::write(self.obj);
        self.done.borrow_mut()[j] = true;
    }

    /// Whether a host step waits for vCPU `v`'s access `i` at an exit in `exits`.
    fn has_steps_at(&self, v: usize, i: usize, exits: std::ops::RangeInclusive<u32>) -> bool {
        self.after
            .iter()
            .any(|a| matches!(*a, Some((w, j, k)) if w == v && j == i && exits.contains(&k)))
    }

    fn steps_at_done(&self, v: usize, i: usize, exits: std::ops::RangeInclusive<u32>) -> bool {
        audit::read(self.obj);
        let done = self.done.borrow();
        self.after
            .iter()
            .zip(done.iter())
            .filter(
                |(a, _)| matches!(**a, Some((w, j, k)) if w == v && j == i && exits.contains(&k)),
            )
            .all(|(_, d)| *d)
    }

    /// vCPU `v` ended attempt `exit` of its access `i` (`u32::MAX`: the access is over).
    fn reached(&self, v: usize, i: usize, exit: u32) {
        audit::write(self.obj);
        self.progress.borrow_mut()[v] = point_key(i, exit);
    }

    /// The default re-runs of vCPU `v`'s accesses: as many as host steps wait on exits of it.
    pub fn default_reruns(&self, v: usize, accesses: usize) -> Vec<u32> {
        let mut r = vec![0; accesses];
        for &(w, i, k) in self.after.iter().flatten() {
            if w == v && i < accesses {
                r[i] = r[i].max(k);
            }
        }
        r
    }
}

/// A vCPU and its VMM thread.
pub struct Vcpu {
    pub id: usize,
    pub kvm: Rc<Kvm>,
    pub program: Vec<GuestOp>,
    /// Per access: after an EFAULT the VMM re-runs it while fewer attempts than this + 1
    /// have been made (kvmmu's scenario `reruns`).
    pub reruns: Vec<u32>,
    pub records: RefCell<Vec<AccessRecord>>,
    pub last_spte_read: Cell<Option<SpteRead>>,
    /// The second page's part of a page-crossing load, checked like the first.
    pub last_spte_read2: Cell<Option<SpteRead>>,
    /// Guest code at CPL0 on this PVM host: KVM's instruction emulator executes every
    /// instruction and reaches memory with `kvm_vcpu_{read,write}_guest` (a user copy on the
    /// slot's hva, i.e. `handle_mm_fault`), never the stage-2 fault path; what the copy
    /// cannot reach becomes an MMIO exit (realkvm.md §0).
    pub emulated: Cell<bool>,
    pub seq: Rc<Sequencer>,
}

impl Vcpu {
    /// A vCPU whose VMM re-runs an access after EFAULT as often as host steps wait on it.
    pub fn new(id: usize, kvm: &Rc<Kvm>, program: Vec<GuestOp>, seq: &Rc<Sequencer>) -> Rc<Self> {
        let reruns = seq.default_reruns(id, program.len());
        Self::with_reruns(id, kvm, program, reruns, seq)
    }

    pub fn with_reruns(
        id: usize,
        kvm: &Rc<Kvm>,
        program: Vec<GuestOp>,
        reruns: Vec<u32>,
        seq: &Rc<Sequencer>,
    ) -> Rc<Self> {
        Rc::new(Vcpu {
            id,
            kvm: kvm.clone(),
            program,
            reruns,
            records: RefCell::new(Vec::new()),
            last_spte_read: Cell::new(None),
            last_spte_read2: Cell::new(None),
            emulated: Cell::new(false),
            seq: seq.clone(),
        })
    }

    /// The vCPU thread: `KVM_RUN` until the program ends.
    pub async fn run(self: Rc<Self>, cx: Cx) {
        // One record per access: allocate them all at once rather than by doubling.
        self.records.borrow_mut().reserve(self.program.len());
        // By index: the program never changes, so there is no need to copy it.
        for i in 0..self.program.len() {
            let op = self.program[i];
            // Nearly every access completes on its first attempt: room for exactly one (a
            // bare `Vec::new()` would allocate room for four on the first push).
            self.records.borrow_mut().push(AccessRecord {
                op,
                attempts: Vec::with_capacity(1),
            });
            let reruns = self.reruns.get(i).copied().unwrap_or(0);
            let mut exit = 0u32;
            loop {
                let o = self.access(&cx, op).await;
                let efault = o == Outcome::Efault;
                self.records.borrow_mut()[i].attempts.push(o);
                exit += 1;
                // After EFAULT the VMM re-runs the vCPU (the faulting instruction is retried)
                // while the access has re-runs left; else the access is over.
                let retry = efault && exit <= reruns;
                // The guest exits to the VMM here (an MMIO marker, or the -EFAULT itself);
                // the VMM runs the host steps due at this exit (at the end of the access:
                // also those due at exits it will never have) before re-entering.
                let due = exit..=if retry { exit } else { u32::MAX };
                if self.seq.has_steps_at(self.id, i, due.clone()) {
                    cx.access(self.seq.obj, Access::Write, "guest reached point")
                        .await;
                    self.seq.reached(self.id, i, *due.end());
                    let (s, v) = (self.seq.clone(), self.id);
                    cx.wait_until(self.seq.obj, "VMM host steps", move || {
                        s.steps_at_done(v, i, due.clone())
                    })
                    .await;
                }
                if retry {
                    world::emit!(
                        cx,
                        "KVM_RUN: -EFAULT at access {i} (exit {exit}); the VMM re-runs the vCPU"
                    );
                    continue;
                }
                break;
            }
        }
    }

    /// Execute one access until it completes or exits to the VMM.
    async fn access(&self, cx: &Cx, op: GuestOp) -> Outcome {
        let first = PAGE_SIZE - op.gpa() % PAGE_SIZE;
        if self.emulated.get() {
            // Every instruction through the emulator (`x86_emulate_instruction` →
            // `emulator_read_write`): the same split as for a page-crossing access.
            let n1 = (u64::from(op.size())).min(first) as u8;
            self.kvm.srcu_read_lock(cx, self.id).await;
            let o = self.emulate_split(cx, op, n1).await;
            self.kvm.srcu_read_unlock(cx, self.id).await;
            return o;
        }
        if u64::from(op.size()) > first {
            return self.access_split(cx, op, first as u8).await;
        }
        let _f = cx.func("guest");
        let kvm = &self.kvm;
        let gpa = op.gpa();
        let gfn = gpa >> PAGE_SHIFT;
        let off = gpa % PAGE_SIZE;
        loop {
            if let Some(s) = kvm.walk(cx, gfn, op.is_write()).await {
                if !op.is_write() || s.write {
                    return match op {
                        GuestOp::Read { size, .. } => {
                            let v = kvm.frames.read(s.pfn, off, size).unwrap_or(!0);
                            world::emit!(cx, "{op} via SPTE ({}) = {v:#x}", s.pfn);
                            self.last_spte_read.set(Some(SpteRead {
                                step: cx.step(),
                                hva: s.hva + off,
                                gpa,
                                size,
                                value: v,
                            }));
                            if kvm.frames.known(s.pfn, off, size) {
                                Outcome::Value(v)
                            } else {
                                Outcome::KernelData(v)
                            }
                        }
                        GuestOp::Write { size, value, .. } => {
                            kvm.frames.write(s.pfn, off, size, value);
                            world::emit!(cx, "{op} via SPTE ({})", s.pfn);
                            Outcome::Done
                        }
                    };
                }
            }
            // The VM exit: KVM_RUN holds kvm->srcu until the next guest entry.
            kvm.srcu_read_lock(cx, self.id).await;
            let r = kvm_mmu_page_fault(cx, kvm, gpa, op.is_write()).await;
            if r == PfResult::Emulate {
                let o = self.emulate(cx, op).await;
                kvm.srcu_read_unlock(cx, self.id).await;
                return o;
            }
            kvm.srcu_read_unlock(cx, self.id).await;
            match r {
                PfResult::Fixed => continue,
                PfResult::Retry => {
                    kvm.wait_for_invalidation(cx, gfn).await;
                    continue;
                }
                PfResult::Emulate => unreachable!("emulated above"),
                PfResult::Mmio => return mmio_exit(op),
                PfResult::Efault => return Outcome::Efault,
                PfResult::Intr => return Outcome::Intr,
                PfResult::Hwpoison => return Outcome::Sigbus,
            }
        }
    }

    /// An access that crosses a page: the CPU needs both translations, so each missing one
    /// is faulted in (the lower page first; a fault that needs emulation or finds no memslot
    /// emulates the whole instruction, [`Vcpu::emulate_split`]) until both are there in one
    /// walk; then the bytes are loaded or stored in both frames.
    async fn access_split(&self, cx: &Cx, op: GuestOp, n1: u8) -> Outcome {
        let _f = cx.func("guest");
        let kvm = &self.kvm;
        let gpa = op.gpa();
        let gfn = gpa >> PAGE_SHIFT;
        let off = gpa % PAGE_SIZE;
        let n2 = op.size() - n1;
        loop {
            let leaves = kvm.walk_pair(cx, gfn, op.is_write()).await;
            let usable = |l: &Option<super::Leaf>| l.filter(|s| !op.is_write() || s.write);
            if let [Some(a), Some(b)] = [usable(&leaves[0]), usable(&leaves[1])] {
                return match op {
                    GuestOp::Read { .. } => {
                        let lo = kvm.frames.read(a.pfn, off, n1).unwrap_or(!0);
                        let hi = kvm.frames.read(b.pfn, 0, n2).unwrap_or(!0);
                        let v = lo | (hi << (8 * u32::from(n1)));
                        world::emit!(cx, "{op} via SPTEs ({}, {}) = {v:#x}", a.pfn, b.pfn);
                        let step = cx.step();
                        self.last_spte_read.set(Some(SpteRead {
                            step,
                            hva: a.hva + off,
                            gpa,
                            size: n1,
                            value: lo,
                        }));
                        self.last_spte_read2.set(Some(SpteRead {
                            step,
                            hva: b.hva,
                            gpa: (gfn + 1) << PAGE_SHIFT,
                            size: n2,
                            value: hi,
                        }));
                        if kvm.frames.known(a.pfn, off, n1) && kvm.frames.known(b.pfn, 0, n2) {
                            Outcome::Value(v)
                        } else {
                            Outcome::KernelData(v)
                        }
                    }
                    GuestOp::Write { value, .. } => {
                        kvm.frames.write(a.pfn, off, n1, value);
                        kvm.frames.write(b.pfn, 0, n2, value >> (8 * u32::from(n1)));
                        world::emit!(cx, "{op} via SPTEs ({}, {})", a.pfn, b.pfn);
                        Outcome::Done
                    }
                };
            }
            let missing = if usable(&leaves[0]).is_none() {
                gpa
            } else {
                (gfn + 1) << PAGE_SHIFT
            };
            kvm.srcu_read_lock(cx, self.id).await;
            let r = kvm_mmu_page_fault(cx, kvm, missing, op.is_write()).await;
            if matches!(r, PfResult::Emulate | PfResult::Mmio) {
                let o = self.emulate_split(cx, op, n1).await;
                kvm.srcu_read_unlock(cx, self.id).await;
                return o;
            }
            kvm.srcu_read_unlock(cx, self.id).await;
            match r {
                PfResult::Fixed => continue,
                PfResult::Retry => {
                    kvm.wait_for_invalidation(cx, missing >> PAGE_SHIFT).await;
                    continue;
                }
                PfResult::Emulate | PfResult::Mmio => unreachable!("emulated above"),
                PfResult::Efault => return Outcome::Efault,
                PfResult::Intr => return Outcome::Intr,
                PfResult::Hwpoison => return Outcome::Sigbus,
            }
        }
    }

    /// The emulator on a page-crossing access (`emulator_read_write`): each page's part goes
    /// to memory through the slot's hva (`kvm_vcpu_{read,write}_guest`, i.e. a user copy) when
    /// it can, else becomes an MMIO fragment; the VMM sees the first fragment's exit.
    /// Simplification: a second MMIO fragment (both parts MMIO) is not a second exit; the
    /// first fragment's exit stands for the access.
    async fn emulate_split(&self, cx: &Cx, op: GuestOp, n1: u8) -> Outcome {
        let _f = cx.func("x86_emulate_instruction");
        let gpa = op.gpa();
        let parts = [
            (gpa, n1, 0u32),
            ((gpa | (PAGE_SIZE - 1)) + 1, op.size() - n1, u32::from(n1)),
        ];
        let mut mmio = None;
        let mut value = 0u64;
        let mut unknown = false;
        for (pgpa, n, shift) in parts.into_iter().filter(|p| p.1 > 0) {
            let part_value = match op {
                GuestOp::Write { value, .. } => Some(value >> (8 * shift)),
                GuestOp::Read { .. } => None,
            };
            // __gfn_to_hva_many: no slot, a slot being deleted or moved, or a write to a
            // read-only slot is KVM_HVA_ERR_BAD.
            let hva = self
                .kvm
                .lookup_slot(cx, pgpa >> PAGE_SHIFT)
                .await
                .filter(|s| !(s.invalid || op.is_write() && s.readonly))
                .map(|s| s.gfn_to_hva(pgpa >> PAGE_SHIFT) + pgpa % PAGE_SIZE);
            let done = match hva {
                Some(h) => user_access(cx, &self.kvm.mm, h, n, part_value, false)
                    .await
                    .ok(),
                None => None,
            };
            if let (Some(_), Some(h), GuestOp::Read { .. }) = (done, hva, op) {
                // The copy read kernel data the model does not know (the vDSO pages)?
                let pte = world::audit::suspended(|| self.kvm.mm.pte(h));
                if pte.is_some_and(|p| !self.kvm.frames.known(p.pfn, h % PAGE_SIZE, n)) {
                    unknown = true;
                }
            }
            match done {
                Some(v) => value |= (v & (u64::MAX >> (64 - 8 * u32::from(n)))) << (8 * shift),
                None if mmio.is_none() => {
                    mmio = Some(match op {
                        GuestOp::Read { .. } => Outcome::MmioRead { gpa: pgpa, len: n },
                        GuestOp::Write { value, .. } => Outcome::MmioWrite {
                            gpa: pgpa,
                            len: n,
                            data: (value >> (8 * shift)) & (u64::MAX >> (64 - 8 * u32::from(n))),
                        },
                    })
                }
                None => {}
            }
        }
        mmio.unwrap_or(match op {
            GuestOp::Read { .. } if unknown => Outcome::KernelData(value),
            GuestOp::Read { .. } => Outcome::Value(value),
            GuestOp::Write { .. } => Outcome::Emulated,
        })
    }

    /// `RET_PF_EMULATE` for a store: `emulator_write_emulated` → `kvm_vcpu_write_guest`,
    /// i.e. `__copy_to_user` through the hva (a host write fault that may repair the PTE);
    /// if that fails — or the slot is read-only — the access becomes MMIO.
    async fn emulate(&self, cx: &Cx, op: GuestOp) -> Outcome {
        let _f = cx.func("x86_emulate_instruction");
        let GuestOp::Write { gpa, size, value } = op else {
            return mmio_exit(op);
        };
        let gfn = gpa >> PAGE_SHIFT;
        let Some(slot) = self.kvm.lookup_slot(cx, gfn).await.filter(|s| !s.invalid) else {
            return mmio_exit(op);
        };
        if slot.readonly {
            cx.emit_str("kvm_vcpu_write_guest: read-only slot: emulate as MMIO");
            return mmio_exit(op);
        }
        let hva = slot.gfn_to_hva(gfn) + gpa % PAGE_SIZE;
        match user_access(cx, &self.kvm.mm, hva, size, Some(value), false).await {
            Ok(_) => Outcome::Emulated,
            Err(_) => {
                cx.emit_str("__copy_to_user failed: emulate as MMIO");
                mmio_exit(op)
            }
        }
    }
}

fn mmio_exit(op: GuestOp) -> Outcome {
    match op {
        GuestOp::Read { gpa, size } => Outcome::MmioRead { gpa, len: size },
        GuestOp::Write { gpa, size, value } => Outcome::MmioWrite {
            gpa,
            len: size,
            data: value,
        },
    }
}

/// Footprint helper: a load or store through a kernel mapping of a pinned page.
pub(crate) async fn touch_frame(cx: &Cx, kvm: &Kvm, pfn: crate::mm::Pfn, write: bool) {
    let a = if write { Access::Write } else { Access::Read };
    cx.access(kvm.frames.data_obj(pfn), a, "access through kernel mapping")
        .await;
}
