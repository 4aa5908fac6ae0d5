//! The host memory manager: frames, address spaces, page tables, GUP, the PTE walkers KVM
//! uses on `VM_PFNMAP` memory, `fixup_user_fault`, zap, and MMU notifiers.
//!
//! Lock order (outermost first), as in the kernel:
//! `mmap_lock` → driver locks taken in `->fault` → `i_mmap_rwsem` → page-table lock (PTL).
//! `unmap_mapping_range` takes `i_mmap_rwsem` and *not* `mmap_lock`, so a driver zap runs
//! concurrently with faults that hold `mmap_lock` for read: that is the race the KVM
//! notifier protocol exists for.
//!
//! Simplifications (see docs/model.md): one PTL per mm rather than one per page-table page;
//! 4 KiB PTEs only (no PMD/PUD leaves); no NUMA, swap, THP, or TLB model.
//!
//! Footprint objects: `pte <vpn>` per page-table entry (read locklessly by GUP-fast and the
//! MMU, so every access is declared even under the PTL), `vma <id>` per vma and `vma list`
//! for the tree (both protected by `mmap_lock`: read under it, written under it held for
//! write). Every PTE write also declares reads of the objects registered with
//! [`Mm::observe_ptes`] — KVM's invalidation state — so that an oracle comparing SPTEs with
//! PTEs sees the two in an order the explorer cannot reorder.

mod content;
pub mod fault;
pub mod follow;
pub mod frame;
pub mod gup;
pub mod insert;
pub mod notifier;
pub mod shmem;
pub mod syscalls;
pub mod types;
pub mod userfaultfd;
pub mod vma;
pub mod zap;

pub use content::Content;
pub use frame::{Frames, Owner, RefAnomaly, Shape, IO_BASE};
pub use notifier::{MmuNotifier, NotifierRange, NotifyEvent};
pub use types::*;
pub use vma::{AddressSpace, FaultResult, LocalBoxFuture, VmFaultArgs, VmOps, Vma};

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use world::{
    audit, Access, Class, Cx, FpSet, LockId, LockKind, LockMode, ObjId, ProviderId, World,
};

/// A page-table entry. Absent entries are `pte_none`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pte {
    pub pfn: Pfn,
    pub write: bool,
    /// `pte_special`: no `struct page` to refcount (remap_pfn_range, vmf_insert_pfn, zero page).
    pub special: bool,
    /// Left by `mprotect(PROT_NONE)`: present in the table but not accessible.
    pub protnone: bool,
}

/// `struct mm_struct` of the VMM process.
pub struct Mm {
    pub frames: Rc<Frames>,
    pub mmap_lock: LockId,
    /// Page-table lock (one per mm in the model; the kernel splits it per table page).
    pub ptl: LockId,
    /// `pte <vpn>` objects.
    pte_class: Class,
    /// `vma <id>` objects (protected by `mmap_lock`).
    vma_class: Class,
    /// The vma tree (protected by `mmap_lock`).
    vmas_obj: ObjId,
    /// Footprint of a hardware walk of the PTE of an address plus the frame it reaches.
    walk_fp: ProviderId,
    vmas: RefCell<Vec<Rc<Vma>>>,
    ptes: Rc<RefCell<BTreeMap<u64, Pte>>>,
    notifiers: RefCell<Vec<Rc<dyn MmuNotifier>>>,
    /// Objects every PTE write declares as read (see the module documentation).
    pte_observers: RefCell<FpSet>,
    next_vma: Cell<u32>,
    /// Every PTE change as (step, address, new pfn), for the `right-frame` oracle.
    history: RefCell<Vec<(u64, Hva, Option<Pfn>)>>,
    /// `fatal_signal_pending(current)` for the threads of this process.
    pub fatal_signal: Cell<bool>,
}

/// Arguments of [`Mm::mmap`].
pub struct MmapArgs {
    pub name: String,
    pub start: Hva,
    pub pages: u64,
    pub flags: VmFlags,
    pub pgoff: u64,
    pub ops: Option<Rc<dyn VmOps>>,
    pub file: Option<Rc<AddressSpace>>,
}

impl MmapArgs {
    /// Private anonymous memory with the given protections.
    pub fn anon(name: &str, start: Hva, pages: u64, flags: VmFlags) -> Self {
        MmapArgs {
            name: name.into(),
            start,
            pages,
            flags: flags | VmFlags::VM_MAYREAD | VmFlags::VM_MAYWRITE,
            pgoff: start >> PAGE_SHIFT,
            ops: None,
            file: None,
        }
    }
}

impl Mm {
    pub fn new(world: &mut World, frames: Rc<Frames>) -> Rc<Self> {
        let mmap_lock = world.lock("mmap_lock", LockKind::RwSem);
        let pte_class = world.class("pte");
        let vma_class = world.class("vma");
        let vmas_obj = world.object("vma list");
        world.protect(
            vma_class.range(0, u64::from(u32::MAX), Access::Write),
            mmap_lock,
        );
        world.protect(world::Footprint::new(vmas_obj, Access::Write), mmap_lock);
        let ptes: Rc<RefCell<BTreeMap<u64, Pte>>> = Rc::new(RefCell::new(BTreeMap::new()));
        let (p, data) = (ptes.clone(), frames.data_class());
        let walk_fp = world.provider(Box::new(move |arg, fp| {
            let vpn = arg & !(1 << 63);
            fp.push(pte_class.obj(vpn), Access::Read);
            if let Some(pte) = p.borrow().get(&vpn) {
                let a = if arg >> 63 == 1 {
                    Access::Write
                } else {
                    Access::Read
                };
                fp.push(data.obj(pte.pfn.0), a);
            }
        }));
        Rc::new(Mm {
            frames,
            mmap_lock,
            ptl: world.lock("ptl", LockKind::Spin),
            pte_class,
            vma_class,
            vmas_obj,
            walk_fp,
            vmas: RefCell::new(Vec::new()),
            ptes,
            notifiers: RefCell::new(Vec::new()),
            pte_observers: RefCell::new(FpSet::new()),
            next_vma: Cell::new(1),
            history: RefCell::new(Vec::new()),
            fatal_signal: Cell::new(false),
        })
    }

    /// Footprint object of the PTE mapping `addr`.
    pub fn pte_obj(&self, addr: Hva) -> ObjId {
        self.pte_class.obj(addr >> PAGE_SHIFT)
    }

    /// The class of `pte <vpn>` objects.
    pub fn pte_class(&self) -> Class {
        self.pte_class
    }

    /// Footprint object of the vma tree.
    pub fn vmas_obj(&self) -> ObjId {
        self.vmas_obj
    }

    /// Every later PTE write also declares a read of `obj` (setup only).
    pub fn observe_ptes(&self, obj: ObjId) {
        self.pte_observers.borrow_mut().push(obj, Access::Read);
    }

    /// The footprint of a store to the PTEs `[start, end)`.
    fn pte_write_fp(&self, start: Hva, end: Hva) -> FpSet {
        let mut fp = *self.pte_observers.borrow();
        fp.add(
            self.pte_class
                .range(start >> PAGE_SHIFT, end.div_ceil(PAGE_SIZE), Access::Write),
        );
        fp
    }

    /// A footprint reading the PTEs of `[start, end)`.
    pub fn pte_read_fp(&self, start: Hva, end: Hva) -> FpSet {
        let mut fp = FpSet::new();
        fp.add(
            self.pte_class
                .range(start >> PAGE_SHIFT, end.div_ceil(PAGE_SIZE), Access::Read),
        );
        fp
    }

    /// One step of an MMU walk of `addr`'s PTE, loading (or storing, `write`) the frame it
    /// maps, whatever that is when the step runs.
    pub async fn walk_step(&self, cx: &Cx, addr: Hva, write: bool, what: &'static str) {
        let arg = (addr >> PAGE_SHIFT) | (u64::from(write) << 63);
        cx.step_dyn(FpSet::new(), self.walk_fp, arg, what).await
    }

    /// Create a vma (`mmap_region`). Setup code calls this directly; actors call
    /// [`syscalls::sys_mmap`], which takes the mmap lock for write around it. The range must
    /// be free (MAP_FIXED_NOREPLACE semantics); `sys_mmap` unmaps first for MAP_FIXED.
    pub fn mmap(self: &Rc<Self>, a: MmapArgs) -> Result<Rc<Vma>, Errno> {
        let end = a.start + a.pages * PAGE_SIZE;
        audit::read(self.vmas_obj);
        if a.pages == 0
            || !a.start.is_multiple_of(PAGE_SIZE)
            || self
                .vmas
                .borrow()
                .iter()
                .any(|v| v.start < end && a.start < v.end)
        {
            return Err(EINVAL);
        }
        let id = self.next_vma.get();
        self.next_vma.set(id + 1);
        let vma = Rc::new(Vma::new(
            self.vma_class.obj(u64::from(id)),
            id,
            a,
            Rc::downgrade(self),
        ));
        if let Some(f) = &vma.file {
            f.link(&vma);
        }
        self.insert_vma(vma.clone());
        Ok(vma)
    }

    fn insert_vma(&self, vma: Rc<Vma>) {
        audit::write(self.vmas_obj);
        let mut v = self.vmas.borrow_mut();
        let i = v.partition_point(|x| x.start < vma.start);
        v.insert(i, vma);
    }

    /// Replace `old` by `parts` (a vma split by munmap/mprotect); `old` dies.
    /// The file's `i_mmap` is updated too: callers that are actors hold `i_mmap_rwsem` for
    /// write (see [`syscalls`]).
    pub(crate) fn replace_vma(&self, old: &Rc<Vma>, parts: Vec<Rc<Vma>>) {
        audit::write(self.vmas_obj);
        self.vmas.borrow_mut().retain(|v| !Rc::ptr_eq(v, old));
        old.set_dead();
        if let Some(f) = &old.file {
            f.unlink(old);
        }
        for p in parts {
            if let Some(f) = &p.file {
                f.link(&p);
            }
            self.insert_vma(p);
        }
    }

    /// A copy of `old` restricted to `[start, end)`, for splits.
    pub(crate) fn split_part(
        self: &Rc<Self>,
        old: &Vma,
        start: Hva,
        end: Hva,
        flags: VmFlags,
    ) -> Rc<Vma> {
        audit::write(self.vmas_obj);
        let id = self.next_vma.get();
        self.next_vma.set(id + 1);
        let args = MmapArgs {
            name: old.name.clone(),
            start,
            pages: (end - start) / PAGE_SIZE,
            flags,
            pgoff: old.linear_pgoff(start),
            ops: old.ops.clone(),
            file: old.file.clone(),
        };
        let v = Rc::new(Vma::new(
            self.vma_class.obj(u64::from(id)),
            id,
            args,
            Rc::downgrade(self),
        ));
        v.set_uffd(old.uffd());
        v
    }

    /// `vma_lookup()` / `find_vma_intersection(mm, addr, addr + 1)`: the vma containing
    /// `addr`. Callers must hold the mmap lock.
    pub fn vma_lookup(&self, addr: Hva) -> Option<Rc<Vma>> {
        audit::read(self.vmas_obj);
        self.vmas
            .borrow()
            .iter()
            .find(|v| v.contains(addr))
            .cloned()
    }

    /// All vmas, in address order (a `/proc/pid/maps` view).
    pub fn vmas(&self) -> Vec<Rc<Vma>> {
        audit::read(self.vmas_obj);
        self.vmas.borrow().clone()
    }

    /// vmas intersecting `[start, end)`.
    pub fn vmas_in(&self, start: Hva, end: Hva) -> Vec<Rc<Vma>> {
        audit::read(self.vmas_obj);
        self.vmas
            .borrow()
            .iter()
            .filter(|v| v.start < end && start < v.end)
            .cloned()
            .collect()
    }

    /// Read a PTE without a scheduling point (the caller holds the PTL, or is an oracle).
    pub fn pte(&self, addr: Hva) -> Option<Pte> {
        audit::read(self.pte_obj(addr));
        self.ptes.borrow().get(&(addr >> PAGE_SHIFT)).copied()
    }

    /// All present PTEs in `[start, end)`.
    pub fn ptes_in(&self, start: Hva, end: Hva) -> Vec<(Hva, Pte)> {
        audit::read_range(self.pte_class, start >> PAGE_SHIFT, end.div_ceil(PAGE_SIZE));
        self.ptes
            .borrow()
            .range(start >> PAGE_SHIFT..end.div_ceil(PAGE_SIZE))
            .map(|(&k, &p)| (k << PAGE_SHIFT, p))
            .collect()
    }

    /// `set_pte_at()`: a store that lockless walkers can see. Must hold the PTL.
    pub async fn set_pte(&self, cx: &Cx, addr: Hva, pte: Pte) {
        debug_assert!(cx.holds(self.ptl).is_some(), "set_pte_at without the PTL");
        let fp = self.pte_write_fp(addr, addr + 1);
        cx.step_with(fp, "set_pte_at").await;
        audit::write(self.pte_obj(addr));
        self.ptes.borrow_mut().insert(addr >> PAGE_SHIFT, pte);
        self.record(cx.step(), addr, Some(pte.pfn));
        world::emit!(
            cx,
            "set_pte_at({addr:#x}): {} {}{}",
            pte.pfn,
            if pte.write { "rw" } else { "ro" },
            if pte.special { " special" } else { "" }
        );
    }

    /// Install a PTE during setup (nothing runs yet: no PTL, no scheduling point).
    pub fn set_pte_setup(&self, addr: Hva, pte: Pte) {
        self.ptes.borrow_mut().insert(addr >> PAGE_SHIFT, pte);
        self.record(0, addr, Some(pte.pfn));
    }

    fn record(&self, step: u64, addr: Hva, pfn: Option<Pfn>) {
        self.history
            .borrow_mut()
            .push((step, page_align_down(addr), pfn));
    }

    /// The pfns the host PTE for `addr` held at any time from step `since` until now.
    pub fn pfns_since(&self, addr: Hva, since: u64) -> Vec<Pfn> {
        let a = page_align_down(addr);
        let h = self.history.borrow();
        let mut out = Vec::new();
        let mut before: Option<Pfn> = None;
        for &(step, x, pfn) in h.iter().filter(|e| e.1 == a) {
            let _ = x;
            if step < since {
                before = pfn;
            } else if let Some(p) = pfn {
                out.push(p);
            }
        }
        out.extend(before);
        out
    }

    /// `ptep_get_and_clear()`: clear a PTE under the PTL, returning the old entry.
    pub async fn clear_pte(&self, cx: &Cx, addr: Hva) -> Option<Pte> {
        let fp = self.pte_write_fp(addr, addr + 1);
        cx.step_with(fp, "ptep_get_and_clear").await;
        audit::write(self.pte_obj(addr));
        let old = self.ptes.borrow_mut().remove(&(addr >> PAGE_SHIFT));
        self.record(cx.step(), addr, None);
        if let Some(p) = old {
            world::emit!(cx, "clear pte {addr:#x} (was {})", p.pfn);
        }
        old
    }

    /// Change a present PTE in place (permission change) under the PTL.
    pub(crate) async fn modify_pte(&self, cx: &Cx, addr: Hva, f: impl FnOnce(&mut Pte)) {
        let fp = self.pte_write_fp(addr, addr + 1);
        cx.step_with(fp, "modify pte").await;
        audit::write(self.pte_obj(addr));
        if let Some(p) = self.ptes.borrow_mut().get_mut(&(addr >> PAGE_SHIFT)) {
            f(p);
        }
    }

    /// `mmu_notifier_register()`.
    pub fn register_notifier(&self, n: Rc<dyn MmuNotifier>) {
        self.notifiers.borrow_mut().push(n);
    }

    /// `mmu_notifier_invalidate_range_start()`.
    pub async fn notify_start(&self, cx: &Cx, range: &NotifierRange) {
        self.notify(cx, range, true).await
    }

    /// `mmu_notifier_invalidate_range_end()`.
    pub async fn notify_end(&self, cx: &Cx, range: &NotifierRange) {
        self.notify(cx, range, false).await
    }

    async fn notify(&self, cx: &Cx, range: &NotifierRange, start: bool) {
        let _f = cx.func(if start {
            "mmu_notifier_invalidate_range_start"
        } else {
            "mmu_notifier_invalidate_range_end"
        });
        world::emit!(
            cx,
            "[{:#x}, {:#x}) {:?}",
            range.start,
            range.end,
            range.event
        );
        let ns = self.notifiers.borrow().clone();
        for n in ns {
            if start {
                n.invalidate_range_start(cx, range).await;
            } else {
                n.invalidate_range_end(cx, range).await;
            }
        }
    }

    /// `mmap_read_lock()`.
    pub async fn mmap_read_lock(&self, cx: &Cx) {
        cx.lock(self.mmap_lock, LockMode::Shared).await
    }

    /// `mmap_read_unlock()` / `mmap_write_unlock()`.
    pub async fn mmap_unlock(&self, cx: &Cx) {
        cx.unlock(self.mmap_lock).await
    }

    /// `mmap_write_lock()`.
    pub async fn mmap_write_lock(&self, cx: &Cx) {
        cx.lock(self.mmap_lock, LockMode::Exclusive).await
    }

    /// `pte_offset_map_lock()`'s lock half.
    pub async fn ptl_lock(&self, cx: &Cx) {
        cx.lock(self.ptl, LockMode::Exclusive).await
    }

    /// `pte_offset_map_lock()`: take the PTL and, in the same step, load the entry of `addr`.
    pub async fn ptl_lock_at(&self, cx: &Cx, addr: Hva) {
        self.ptl_lock_range(cx, addr, addr + 1).await
    }

    /// Take the PTL and load the entries of `[start, end)` in the same step.
    pub async fn ptl_lock_range(&self, cx: &Cx, start: Hva, end: Hva) {
        let fp = self.pte_read_fp(start, end);
        cx.lock_with(self.ptl, LockMode::Exclusive, fp).await
    }

    /// A digest of the vmas and PTEs (for comparing end states of executions).
    pub fn digest(&self, h: &mut impl std::hash::Hasher) {
        use std::hash::Hash;
        for v in self.vmas.borrow().iter() {
            (v.start, v.end, v.flags_unrecorded().0, &v.name).hash(h);
        }
        for (k, p) in self.ptes.borrow().iter() {
            (k, p.pfn.0, p.write, p.special, p.protnone).hash(h);
        }
    }

    pub async fn ptl_unlock(&self, cx: &Cx) {
        cx.unlock(self.ptl).await
    }
}
