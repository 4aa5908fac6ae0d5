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
use world::{Access, Cx, LockId, LockKind, LockMode, ObjId, World};

/// A page-table entry. Absent entries are `pte_none`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
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
    /// Footprint object for lockless page-table reads (GUP-fast) and PTE writes.
    pub pt_obj: ObjId,
    vmas: RefCell<Vec<Rc<Vma>>>,
    ptes: RefCell<BTreeMap<u64, Pte>>,
    notifiers: RefCell<Vec<Rc<dyn MmuNotifier>>>,
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
        Rc::new(Mm {
            frames,
            mmap_lock: world.lock("mmap_lock", LockKind::RwSem),
            ptl: world.lock("ptl", LockKind::Spin),
            pt_obj: world.object("page table"),
            vmas: RefCell::new(Vec::new()),
            ptes: RefCell::new(BTreeMap::new()),
            notifiers: RefCell::new(Vec::new()),
            next_vma: Cell::new(1),
            history: RefCell::new(Vec::new()),
            fatal_signal: Cell::new(false),
        })
    }

    /// Create a vma (`mmap_region`). Setup code calls this directly; actors call
    /// [`syscalls::sys_mmap`], which takes the mmap lock for write around it. The range must
    /// be free (MAP_FIXED_NOREPLACE semantics); `sys_mmap` unmaps first for MAP_FIXED.
    pub fn mmap(self: &Rc<Self>, a: MmapArgs) -> Result<Rc<Vma>, Errno> {
        let end = a.start + a.pages * PAGE_SIZE;
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
        let vma = Rc::new(Vma {
            id,
            name: a.name,
            start: a.start,
            end,
            flags: Cell::new(a.flags),
            pgoff: Cell::new(a.pgoff),
            ops: a.ops,
            file: a.file,
            uffd: RefCell::new(None),
            mm: Rc::downgrade(self),
            dead: Cell::new(false),
        });
        if let Some(f) = &vma.file {
            f.i_mmap.borrow_mut().push(Rc::downgrade(&vma));
        }
        self.insert_vma(vma.clone());
        Ok(vma)
    }

    fn insert_vma(&self, vma: Rc<Vma>) {
        let mut v = self.vmas.borrow_mut();
        let i = v.partition_point(|x| x.start < vma.start);
        v.insert(i, vma);
    }

    /// Replace `old` by `parts` (a vma split by munmap/mprotect); `old` dies.
    pub(crate) fn replace_vma(&self, old: &Rc<Vma>, parts: Vec<Rc<Vma>>) {
        self.vmas.borrow_mut().retain(|v| !Rc::ptr_eq(v, old));
        old.dead.set(true);
        for p in parts {
            if let Some(f) = &p.file {
                f.i_mmap.borrow_mut().push(Rc::downgrade(&p));
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
        let id = self.next_vma.get();
        self.next_vma.set(id + 1);
        let v = Rc::new(Vma {
            id,
            name: old.name.clone(),
            start,
            end,
            flags: Cell::new(flags),
            pgoff: Cell::new(old.linear_pgoff(start)),
            ops: old.ops.clone(),
            file: old.file.clone(),
            uffd: RefCell::new(old.uffd.borrow().clone()),
            mm: Rc::downgrade(self),
            dead: Cell::new(false),
        });
        v
    }

    /// `vma_lookup()` / `find_vma_intersection(mm, addr, addr + 1)`: the vma containing
    /// `addr`. Callers must hold the mmap lock.
    pub fn vma_lookup(&self, addr: Hva) -> Option<Rc<Vma>> {
        self.vmas
            .borrow()
            .iter()
            .find(|v| v.contains(addr))
            .cloned()
    }

    /// All vmas, in address order (a `/proc/pid/maps` view).
    pub fn vmas(&self) -> Vec<Rc<Vma>> {
        self.vmas.borrow().clone()
    }

    /// vmas intersecting `[start, end)`.
    pub fn vmas_in(&self, start: Hva, end: Hva) -> Vec<Rc<Vma>> {
        self.vmas
            .borrow()
            .iter()
            .filter(|v| v.start < end && start < v.end)
            .cloned()
            .collect()
    }

    /// Read a PTE without a scheduling point (the caller holds the PTL, or is an oracle).
    pub fn pte(&self, addr: Hva) -> Option<Pte> {
        self.ptes.borrow().get(&(addr >> PAGE_SHIFT)).copied()
    }

    /// All present PTEs in `[start, end)`.
    pub fn ptes_in(&self, start: Hva, end: Hva) -> Vec<(Hva, Pte)> {
        self.ptes
            .borrow()
            .range(start >> PAGE_SHIFT..end.div_ceil(PAGE_SIZE))
            .map(|(&k, &p)| (k << PAGE_SHIFT, p))
            .collect()
    }

    /// `set_pte_at()`: a store that lockless walkers can see. Must hold the PTL.
    pub async fn set_pte(&self, cx: &Cx, addr: Hva, pte: Pte) {
        debug_assert!(cx.holds(self.ptl).is_some(), "set_pte_at without the PTL");
        cx.access(self.pt_obj, Access::Write, "set_pte_at").await;
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
        cx.access(self.pt_obj, Access::Write, "ptep_get_and_clear")
            .await;
        let old = self.ptes.borrow_mut().remove(&(addr >> PAGE_SHIFT));
        self.record(cx.step(), addr, None);
        if let Some(p) = old {
            world::emit!(cx, "clear pte {addr:#x} (was {})", p.pfn);
        }
        old
    }

    /// Change a present PTE in place (permission change) under the PTL.
    pub(crate) async fn modify_pte(&self, cx: &Cx, addr: Hva, f: impl FnOnce(&mut Pte)) {
        cx.access(self.pt_obj, Access::Write, "modify pte").await;
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

    pub async fn ptl_unlock(&self, cx: &Cx) {
        cx.unlock(self.ptl).await
    }
}
