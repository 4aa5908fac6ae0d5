//! An mdev vGPU BAR whose first access is trapped: the seed patch's motivating case.
//!
//! Mirrors what the seed commit `add6a0cd1c5b` (v4.8) describes: "vGPU vendors trap the
//! first access to a BAR by setting vm_ops on the VMAs produced by mmap-ing a VFIO device.
//! The fault handler then can use remap_pfn_range to place some non-reserved pages in the
//! VMA." The NVIDIA vendor driver is out of tree; the structure here follows the in-tree
//! handler of the same shape, `vfio_pci_mmap_fault` of v5.8–v5.11 (a driver mutex, then
//! `io_remap_pfn_range` called from `->fault`), and the mdev mmap path of the 4.8 era:
//!
//! * `mmap` (like `vfio_pci_mmap`): `VM_IO|VM_PFNMAP|VM_DONTEXPAND|VM_DONTDUMP` set at mmap
//!   time on a `VM_SHARED` read/write mapping, `vm_pgoff` left as the region cookie
//!   `VFIO_PCI_INDEX_TO_OFFSET(index) >> PAGE_SHIFT` = `index << 28`, `vm_ops` set, **no
//!   PTEs**. For BAR index 0 the cookie is 0, so the pre-4.8 KVM formula
//!   `pfn = page + vm_pgoff` names a low RAM pfn and `BUG_ON(!kvm_is_reserved_pfn)` fires.
//! * `->fault`: take the driver mutex, note the access, allocate the page's backing (an
//!   ordinary, refcounted, non-reserved RAM page owned by `Driver("vgpu")`, the driver
//!   holding the one reference) on first use, and `remap_pfn_range` that single page;
//!   return `VM_FAULT_NOPAGE`. `remap_pfn_range` does `vm_flags_set`, which wants the mmap
//!   lock for **write**, but a fault handler only holds it for read: the historical drivers
//!   did exactly this, so the trace shows the `WARNING: vm_flags_set() without mmap_lock
//!   held for write` line that the 2026 Intel xekmd backport thread reports.
//! * `reset`: `unmap_mapping_pages` over the whole BAR through the device inode's
//!   `address_space` (MMU notifiers fire), then drop the driver's reference on every backing
//!   page, which frees it: a stale secondary mapping would now reach a freed or reused frame.
//!
//! Simplifications: one BAR per driver object; BAR contents are RAM pages filled with
//! `pattern + page` when first allocated (no device emulation behind them); the driver keeps
//! a per-(vma, page) "mapped" set under its mutex so that two faults on the same page do not
//! both remap it (a driver without this check hits `remap_pte_range`'s `BUG_ON(!pte_none)`
//! exactly like vfio in v5.11: see [`VgpuConfig::racy_remap`]); `retry_first_fault` models a
//! handler that must sleep for the device and so drops the mmap lock.

use super::{check_range, vfio_region_pgoff, AccessLog};
use crate::mm::insert::remap_pfn_range;
use crate::mm::zap::unmap_mapping_pages;
use crate::mm::{
    AddressSpace, Errno, FaultFlags, FaultResult, Frames, Hva, LocalBoxFuture, Mm, MmapArgs, Owner,
    Pfn, VmFault, VmFaultArgs, VmFlags, VmOps, Vma,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::{Rc, Weak};
use world::{audit, Access, Cx, Footprint, LockId, LockKind, LockMode, ObjId, World};

/// Options of a [`VgpuBar`].
#[derive(Clone, Debug)]
pub struct VgpuConfig {
    /// vfio region index of the BAR (0 for BAR0: `vm_pgoff` 0).
    pub index: u32,
    /// BAR size in pages.
    pub pages: u64,
    /// Backing page `i` is filled with `pattern.wrapping_add(i)` when allocated.
    pub pattern: u32,
    /// On a fault's first attempt (`FAULT_FLAG_ALLOW_RETRY` set, `FAULT_FLAG_TRIED` not),
    /// drop the mmap lock, wait for the device, and return `VM_FAULT_RETRY` ("a fault
    /// handler that drops the mmap lock"). Under `FAULT_FLAG_RETRY_NOWAIT` it returns
    /// `VM_FAULT_RETRY` with the lock still held, as the kernel convention requires.
    pub retry_first_fault: bool,
    /// Do not track which pages are already mapped: every fault calls `remap_pfn_range`, so
    /// two concurrent faults on one page BUG in `remap_pte_range` (the v5.11 vfio bug).
    pub racy_remap: bool,
}

impl Default for VgpuConfig {
    fn default() -> Self {
        VgpuConfig {
            index: 0,
            pages: 4,
            pattern: 0x7600_0000,
            retry_first_fault: false,
            racy_remap: false,
        }
    }
}

/// An mdev vGPU BAR. See the module documentation.
pub struct VgpuBar {
    pub cfg: VgpuConfig,
    frames: Rc<Frames>,
    /// The mm this driver's vmas live in (weak: its vmas point back at the driver).
    mm: Weak<Mm>,
    /// The driver's mutex (`vgpu->lock`), taken in `->fault` and in `reset`.
    pub lock: LockId,
    /// Footprint object of `backing` and `mapped` (protected by `lock`).
    state_obj: ObjId,
    /// The device, for "wait for the device" steps.
    pub dev_obj: ObjId,
    /// The vfio device file's `address_space`; the vma's `vm_file` points here.
    pub mapping: Rc<AddressSpace>,
    /// BAR page → backing frame (the driver holds one reference on each).
    backing: RefCell<BTreeMap<u64, Pfn>>,
    /// (vma id, BAR page) pairs this driver has remapped since the last reset.
    mapped: RefCell<BTreeSet<(u32, u64)>>,
    /// Every fault the handler saw.
    pub accesses: AccessLog,
    /// Backing frames freed by resets, in order.
    freed: RefCell<Vec<Pfn>>,
}

impl VgpuBar {
    fn mm(&self) -> Rc<Mm> {
        self.mm.upgrade().expect("the mm outlives its drivers")
    }

    pub fn new(world: &mut World, frames: &Rc<Frames>, mm: &Rc<Mm>, cfg: VgpuConfig) -> Rc<Self> {
        let name = format!("vgpu-bar{}", cfg.index);
        let lock = world.lock("vgpu->lock", LockKind::Mutex);
        let state_obj = world.object(format!("{name} driver state"));
        world.protect(Footprint::new(state_obj, Access::Write), lock);
        Rc::new(VgpuBar {
            frames: frames.clone(),
            mm: Rc::downgrade(mm),
            lock,
            state_obj,
            dev_obj: world.object(format!("{name} device")),
            mapping: AddressSpace::new(world, &name, vfio_region_pgoff(cfg.index) + cfg.pages),
            backing: RefCell::new(BTreeMap::new()),
            mapped: RefCell::new(BTreeSet::new()),
            accesses: AccessLog::default(),
            freed: RefCell::new(Vec::new()),
            cfg,
        })
    }

    /// The region cookie `VFIO_PCI_INDEX_TO_OFFSET(index) >> PAGE_SHIFT`.
    pub fn region_pgoff(&self) -> u64 {
        vfio_region_pgoff(self.cfg.index)
    }

    /// The flags vfio sets at mmap time on a shared read/write BAR mapping.
    pub fn vm_flags() -> VmFlags {
        super::shared_rw_pfnmap_flags()
    }

    /// The `mmap(fd, start, bar size, PROT_READ|PROT_WRITE, MAP_SHARED, index << 40)`
    /// arguments, for `sys_mmap` from an actor.
    pub fn mmap_args(self: &Rc<Self>, start: Hva) -> MmapArgs {
        MmapArgs {
            name: format!("vgpu-bar{}", self.cfg.index),
            start,
            pages: self.cfg.pages,
            flags: Self::vm_flags(),
            pgoff: self.region_pgoff(),
            ops: Some(self.clone() as Rc<dyn VmOps>),
            file: Some(self.mapping.clone()),
        }
    }

    /// Map the whole BAR at `start` (setup; no PTEs are installed).
    pub fn mmap(self: &Rc<Self>, start: Hva) -> Result<Rc<Vma>, Errno> {
        check_range(start, self.cfg.pages)?;
        self.mm().mmap(self.mmap_args(start))
    }

    /// The first access the handler saw on BAR page `page`: `(step, write)`.
    pub fn first_access(&self, page: u64) -> Option<(u64, bool)> {
        self.accesses.first_access(page)
    }

    /// The frame currently backing BAR page `page`, if the page has been populated.
    pub fn backing(&self, page: u64) -> Option<Pfn> {
        audit::read(self.state_obj);
        self.backing.borrow().get(&page).copied()
    }

    /// Frames freed by resets so far.
    pub fn freed(&self) -> Vec<Pfn> {
        self.freed.borrow().clone()
    }

    /// Device reset: zap every user mapping of the BAR (`unmap_mapping_pages`, MMU
    /// notifiers fire), then drop the driver's reference on each backing page — freeing it
    /// unless someone else (wrongly) holds a reference. Takes the driver mutex, so it
    /// serialises with faults.
    pub async fn reset(&self, cx: &Cx) {
        let _f = cx.func("vgpu_reset");
        cx.lock(self.lock, LockMode::Exclusive).await;
        unmap_mapping_pages(cx, &self.mapping, self.region_pgoff(), self.cfg.pages).await;
        audit::write(self.state_obj);
        self.mapped.borrow_mut().clear();
        let pages: Vec<(u64, Pfn)> = std::mem::take(&mut *self.backing.borrow_mut())
            .into_iter()
            .collect();
        for (page, pfn) in pages {
            world::emit!(cx, "release BAR page {page} ({pfn})");
            self.frames.put_page(cx, pfn).await;
            self.freed.borrow_mut().push(pfn);
        }
        cx.unlock(self.lock).await;
    }

    /// The device writes to BAR page `page` (e.g. the GPU updating a register block);
    /// false if the page has no backing yet.
    pub async fn device_store(&self, cx: &Cx, page: u64, off: u64, size: u8, value: u64) -> bool {
        // The device writes its own memory; the driver's lock keeps the backing in place.
        cx.lock(self.lock, LockMode::Exclusive).await;
        let pfn = self.backing(page);
        if let Some(pfn) = pfn {
            cx.access(self.frames.data_obj(pfn), Access::Write, "device store")
                .await;
            self.frames.write(pfn, off, size, value);
        }
        cx.unlock(self.lock).await;
        pfn.is_some()
    }

    async fn fault_impl(&self, cx: &Cx, vmf: &VmFaultArgs) -> FaultResult {
        let _f = cx.func("vgpu_mmap_fault");
        let base = self.region_pgoff();
        let write = vmf.flags.contains(FaultFlags::FAULT_FLAG_WRITE);
        if vmf.pgoff < base || vmf.pgoff - base >= self.cfg.pages {
            world::emit!(
                cx,
                "pgoff {:#x} outside the BAR: VM_FAULT_SIGBUS",
                vmf.pgoff
            );
            return FaultResult::ret(VmFault::VM_FAULT_SIGBUS);
        }
        let page = vmf.pgoff - base;
        if self.cfg.retry_first_fault
            && vmf.flags.contains(FaultFlags::FAULT_FLAG_ALLOW_RETRY)
            && !vmf.flags.contains(FaultFlags::FAULT_FLAG_TRIED)
        {
            self.accesses.record(cx, page, write);
            if vmf.flags.contains(FaultFlags::FAULT_FLAG_RETRY_NOWAIT) {
                cx.emit_str("device busy, RETRY_NOWAIT: VM_FAULT_RETRY with mmap_lock held");
                return FaultResult::ret(VmFault::VM_FAULT_RETRY);
            }
            cx.emit_str("device busy: drop mmap_lock and wait for it");
            vmf.mm.mmap_unlock(cx).await;
            cx.access(self.dev_obj, Access::Write, "wait for device")
                .await;
            return FaultResult::ret(VmFault::VM_FAULT_RETRY);
        }
        cx.lock(self.lock, LockMode::Exclusive).await;
        if !(self.cfg.retry_first_fault && vmf.flags.contains(FaultFlags::FAULT_FLAG_TRIED)) {
            self.accesses.record(cx, page, write);
        }
        let key = (vmf.vma.id, page);
        audit::read(self.state_obj);
        if !self.cfg.racy_remap && self.mapped.borrow().contains(&key) {
            world::emit!(cx, "BAR page {page} already mapped: VM_FAULT_NOPAGE");
            cx.unlock(self.lock).await;
            return FaultResult::ret(VmFault::VM_FAULT_NOPAGE);
        }
        let pfn = match self.backing(page) {
            Some(p) => p,
            None => {
                let Some(p) = self
                    .frames
                    .alloc_pages(cx, 0, Owner::Driver("vgpu".into()), false)
                    .await
                else {
                    cx.unlock(self.lock).await;
                    return FaultResult::ret(VmFault::VM_FAULT_OOM);
                };
                self.frames
                    .fill(p, self.cfg.pattern.wrapping_add(page as u32));
                world::emit!(
                    cx,
                    "BAR page {page}: allocated {p} (refcount 1, not reserved)"
                );
                audit::write(self.state_obj);
                self.backing.borrow_mut().insert(page, p);
                p
            }
        };
        let r = remap_pfn_range(cx, &vmf.vma, vmf.address, pfn, 1).await;
        let ret = match r {
            Ok(()) => {
                audit::write(self.state_obj);
                self.mapped.borrow_mut().insert(key);
                VmFault::VM_FAULT_NOPAGE
            }
            Err(e) => {
                world::emit!(cx, "remap_pfn_range: {e}: VM_FAULT_SIGBUS");
                VmFault::VM_FAULT_SIGBUS
            }
        };
        cx.unlock(self.lock).await;
        FaultResult::ret(ret)
    }
}

impl VmOps for VgpuBar {
    fn name(&self) -> &str {
        "vgpu"
    }

    fn fault<'a>(&'a self, cx: &'a Cx, vmf: &'a VmFaultArgs) -> LocalBoxFuture<'a, FaultResult> {
        Box::pin(self.fault_impl(cx, vmf))
    }
}
