//! A vfio-pci BAR mmap: device MMIO behind a `VM_IO|VM_PFNMAP` vma.
//!
//! Default mode mirrors `vfio_pci_mmap` + `vfio_pci_mmap_fault` as of v6.10–v6.11
//! (`aac6db75a9fc` "vfio/pci: Use unmap_mapping_range()", after `6a45ece4c9af` moved the
//! handler to `vmf_insert_pfn` in v5.12):
//!
//! * `mmap`: `VM_IO|VM_PFNMAP|VM_DONTEXPAND|VM_DONTDUMP` on a shared mapping; `vm_pgoff`
//!   stays the region cookie `VFIO_PCI_INDEX_TO_OFFSET(index) >> PAGE_SHIFT` = `index << 28`
//!   (**not** the BAR pfn, which broke RISC-V KVM's memslot-time ioremap in 2025); the vma's
//!   file is the per-device inode (`b7c5e64fecfa`), so `unmap_mapping_range` finds it; no
//!   PTEs until touched.
//! * `->fault`: `memory_lock` for read; if PCI memory decoding is disabled,
//!   `VM_FAULT_SIGBUS` (the CVE-2020-12888 behaviour, `abafbc551fdd`); else
//!   `vmf_insert_pfn` of the BAR pfn for the faulting page. An already-present PTE counts as
//!   success, so concurrent faults on one page are safe. `whole_vma` instead inserts the
//!   whole vma on the first fault (`d71a989cf5d9`, v6.10).
//! * `disable_memory` (a write clearing `PCI_COMMAND_MEMORY`) and `reset`:
//!   `vfio_pci_zap_and_down_write_memory_lock` — `memory_lock` for write, then
//!   `unmap_mapping_range` over the BAR (MMU notifiers fire). `enable_memory` re-allows
//!   faults.
//!
//! `eager_legacy` mirrors `vfio_pci_mmap` before v5.8: `vm_pgoff` is rewritten to the BAR
//! pfn and the whole BAR is `remap_pfn_range`d at mmap time, with no fault handler (a fault
//! after a zap is `VM_FAULT_SIGBUS`, as for the dummy `vm_ops`). That layout happens to
//! satisfy the pre-4.8 KVM formula `pfn = page + vm_pgoff`. Those kernels did **not** zap on
//! memory disable or reset (that was CVE-2020-12888), so in legacy mode `disable_memory` and
//! `reset` only change the device state and the user mapping stays live.
//!
//! Simplifications: one BAR; its frames are registered device memory at `bar_pfn`
//! (`Frames::add_io`, not `pfn_valid`) filled with `pattern`; no PMD/PUD `huge_fault`
//! (v6.12) since the mm model has 4 KiB PTEs only; a reset does not change BAR contents;
//! accesses to BAR memory while decoding is disabled are not modelled (they would be
//! Unsupported Requests on real hardware).

use super::{check_range, mmap_locked, vfio_region_pgoff};
use crate::mm::insert::{remap_pfn_range, vmf_insert_pfn};
use crate::mm::zap::unmap_mapping_pages;
use crate::mm::{
    AddressSpace, Errno, FaultResult, Frames, Hva, LocalBoxFuture, Mm, MmapArgs, Pfn, Pte, VmFault,
    VmFaultArgs, VmFlags, VmOps, Vma, IO_BASE, PAGE_SIZE,
};
use std::cell::Cell;
use std::rc::{Rc, Weak};
use world::{audit, Access, Cx, Footprint, LockId, LockKind, LockMode, ObjId, World};

/// Options of a [`VfioBar`].
#[derive(Clone, Debug)]
pub struct VfioBarConfig {
    /// vfio region index (`VFIO_PCI_BAR0_REGION_INDEX` = 0 ...).
    pub index: u32,
    /// BAR size in pages.
    pub pages: u64,
    /// First pfn of the BAR's MMIO (`pci_resource_start >> PAGE_SHIFT`).
    pub bar_pfn: Pfn,
    /// Content of every BAR page.
    pub pattern: u32,
    /// Pre-v5.8 vfio: `vm_pgoff` = BAR pfn, eager `remap_pfn_range`, no zap.
    pub eager_legacy: bool,
    /// v6.10 `d71a989cf5d9`: the first fault inserts the whole vma.
    pub whole_vma: bool,
}

impl VfioBarConfig {
    /// A BAR placed in device memory away from region cookies (`index << 28` is exactly
    /// [`IO_BASE`] for index 1, and the pre-4.8 formula must not hit a real BAR by luck).
    pub fn default_bar_pfn(index: u32) -> Pfn {
        Pfn(IO_BASE + 0x0100_0000 + u64::from(index) * 0x10_0000)
    }
}

impl Default for VfioBarConfig {
    fn default() -> Self {
        VfioBarConfig {
            index: 0,
            pages: 4,
            bar_pfn: Self::default_bar_pfn(0),
            pattern: 0xba5e_0000,
            eager_legacy: false,
            whole_vma: false,
        }
    }
}

/// A vfio-pci BAR. See the module documentation.
pub struct VfioBar {
    pub cfg: VfioBarConfig,
    frames: Rc<Frames>,
    /// The mm this driver's vmas live in (weak: its vmas point back at the driver).
    mm: Weak<Mm>,
    /// `vdev->memory_lock` (rw_semaphore).
    pub memory_lock: LockId,
    /// The device inode's `address_space` (vma `vm_file`).
    pub mapping: Rc<AddressSpace>,
    /// `PCI_COMMAND_MEMORY` is set (the `state_obj` footprint object, protected by
    /// `memory_lock`).
    memory_enabled: Cell<bool>,
    state_obj: ObjId,
    resets: Cell<u32>,
}

impl VfioBar {
    fn mm(&self) -> Rc<Mm> {
        self.mm.upgrade().expect("the mm outlives its drivers")
    }

    /// Registers the BAR's device memory (`frames.add_io`).
    pub fn new(
        world: &mut World,
        frames: &Rc<Frames>,
        mm: &Rc<Mm>,
        cfg: VfioBarConfig,
    ) -> Rc<Self> {
        frames.add_io(cfg.bar_pfn, cfg.pages, cfg.pattern);
        let name = format!("vfio-pci-bar{}", cfg.index);
        let memory_lock = world.lock("vdev->memory_lock", LockKind::RwSem);
        let state_obj = world.object(format!("{name} command register"));
        world.protect(Footprint::new(state_obj, Access::Write), memory_lock);
        Rc::new(VfioBar {
            frames: frames.clone(),
            mm: Rc::downgrade(mm),
            memory_lock,
            state_obj,
            mapping: AddressSpace::new(world, &name, vfio_region_pgoff(cfg.index) + cfg.pages),
            memory_enabled: Cell::new(true),
            resets: Cell::new(0),
            cfg,
        })
    }

    /// The region cookie `index << 28`.
    pub fn region_pgoff(&self) -> u64 {
        vfio_region_pgoff(self.cfg.index)
    }

    /// The BAR pfn of page `page`.
    pub fn pfn_of(&self, page: u64) -> Pfn {
        Pfn(self.cfg.bar_pfn.0 + page)
    }

    pub fn memory_enabled(&self) -> bool {
        audit::read(self.state_obj);
        self.memory_enabled.get()
    }

    fn set_memory_enabled(&self, on: bool) {
        audit::write(self.state_obj);
        self.memory_enabled.set(on);
    }

    pub fn resets(&self) -> u32 {
        self.resets.get()
    }

    /// Flags after `vfio_pci_mmap` on a shared read/write mapping.
    pub fn vm_flags() -> VmFlags {
        super::shared_rw_pfnmap_flags()
    }

    /// The vma as `vfio_pci_mmap` leaves it (before any eager remap).
    pub fn mmap_args(self: &Rc<Self>, start: Hva) -> MmapArgs {
        MmapArgs {
            name: format!("vfio-pci-bar{}", self.cfg.index),
            start,
            pages: self.cfg.pages,
            flags: Self::vm_flags(),
            pgoff: if self.cfg.eager_legacy {
                self.cfg.bar_pfn.0
            } else {
                self.region_pgoff()
            },
            ops: Some(self.clone() as Rc<dyn VmOps>),
            file: Some(self.mapping.clone()),
        }
    }

    /// Map the whole BAR at `start` (setup). Legacy mode installs the PTEs at once, as
    /// `remap_pfn_range` would (special, writable since the mapping is shared RW).
    pub fn mmap(self: &Rc<Self>, start: Hva) -> Result<Rc<Vma>, Errno> {
        check_range(start, self.cfg.pages)?;
        let vma = self.mm().mmap(self.mmap_args(start))?;
        if self.cfg.eager_legacy {
            for i in 0..self.cfg.pages {
                let pte = Pte {
                    pfn: self.pfn_of(i),
                    write: vma.page_prot_writable(),
                    special: true,
                    protnone: false,
                };
                self.mm().set_pte_setup(start + i * PAGE_SIZE, pte);
            }
        }
        Ok(vma)
    }

    /// `mmap` from an actor (mmap lock held for write); legacy mode calls the real
    /// `remap_pfn_range`.
    pub async fn mmap_in(self: &Rc<Self>, cx: &Cx, start: Hva) -> Result<Rc<Vma>, Errno> {
        check_range(start, self.cfg.pages)?;
        let me = self.clone();
        mmap_locked(
            cx,
            &self.mm(),
            self.mmap_args(start),
            move |vma| async move {
                if me.cfg.eager_legacy {
                    let _f = cx.func("vfio_pci_mmap");
                    remap_pfn_range(cx, &vma, vma.start, me.cfg.bar_pfn, me.cfg.pages).await?;
                }
                Ok(())
            },
        )
        .await
    }

    /// `vfio_pci_zap_and_down_write_memory_lock` (modern) or just `down_write` (legacy).
    async fn zap_and_down_write(&self, cx: &Cx) {
        cx.lock(self.memory_lock, LockMode::Exclusive).await;
        if !self.cfg.eager_legacy {
            unmap_mapping_pages(cx, &self.mapping, self.region_pgoff(), self.cfg.pages).await;
        }
    }

    /// A config write clearing `PCI_COMMAND_MEMORY`: zap the BAR mappings; later faults get
    /// `VM_FAULT_SIGBUS` until [`Self::enable_memory`].
    pub async fn disable_memory(&self, cx: &Cx) {
        let _f = cx.func("vfio_pci_disable_memory");
        self.zap_and_down_write(cx).await;
        self.set_memory_enabled(false);
        cx.emit_str("PCI_COMMAND_MEMORY cleared");
        cx.unlock(self.memory_lock).await;
    }

    /// A config write setting `PCI_COMMAND_MEMORY` again.
    pub async fn enable_memory(&self, cx: &Cx) {
        let _f = cx.func("vfio_pci_enable_memory");
        cx.lock(self.memory_lock, LockMode::Exclusive).await;
        self.set_memory_enabled(true);
        cx.emit_str("PCI_COMMAND_MEMORY set");
        cx.unlock(self.memory_lock).await;
    }

    /// `VFIO_DEVICE_RESET`: zap the BAR mappings around the function reset; memory decoding
    /// is enabled again afterwards (the command register is restored).
    pub async fn reset(&self, cx: &Cx) {
        let _f = cx.func("vfio_pci_core_ioctl_reset");
        self.zap_and_down_write(cx).await;
        self.resets.set(self.resets.get() + 1);
        cx.emit_str("function reset");
        cx.unlock(self.memory_lock).await;
    }

    /// The device updates a BAR register.
    pub async fn device_store(&self, cx: &Cx, page: u64, off: u64, size: u8, value: u64) -> bool {
        let pfn = self.pfn_of(page);
        cx.access(self.frames.data_obj(pfn), Access::Write, "device store")
            .await;
        self.frames.write(pfn, off, size, value)
    }

    async fn fault_impl(&self, cx: &Cx, vmf: &VmFaultArgs) -> FaultResult {
        let _f = cx.func("vfio_pci_mmap_fault");
        if self.cfg.eager_legacy {
            cx.emit_str("no ->fault before v5.8: VM_FAULT_SIGBUS");
            return FaultResult::ret(VmFault::VM_FAULT_SIGBUS);
        }
        let base = self.region_pgoff();
        if vmf.pgoff < base || vmf.pgoff - base >= self.cfg.pages {
            return FaultResult::ret(VmFault::VM_FAULT_SIGBUS);
        }
        cx.lock(self.memory_lock, LockMode::Shared).await;
        let ret = if !self.memory_enabled() {
            cx.emit_str("memory decoding disabled: VM_FAULT_SIGBUS");
            VmFault::VM_FAULT_SIGBUS
        } else if self.cfg.whole_vma {
            let vma = &vmf.vma;
            let mut ret = VmFault::VM_FAULT_NOPAGE;
            let mut addr = vma.start;
            while addr < vma.end {
                let lp = vma.linear_pgoff(addr);
                if lp < base || lp - base >= self.cfg.pages {
                    break;
                }
                ret = vmf_insert_pfn(cx, vma, addr, self.pfn_of(lp - base)).await;
                if ret != VmFault::VM_FAULT_NOPAGE {
                    break;
                }
                addr += PAGE_SIZE;
            }
            if ret != VmFault::VM_FAULT_NOPAGE {
                ret = vmf_insert_pfn(cx, vma, vmf.address, self.pfn_of(vmf.pgoff - base)).await;
            }
            ret
        } else {
            vmf_insert_pfn(cx, &vmf.vma, vmf.address, self.pfn_of(vmf.pgoff - base)).await
        };
        cx.unlock(self.memory_lock).await;
        FaultResult::ret(ret)
    }
}

impl VmOps for VfioBar {
    fn name(&self) -> &str {
        "vfio-pci"
    }

    fn fault<'a>(&'a self, cx: &'a Cx, vmf: &'a VmFaultArgs) -> LocalBoxFuture<'a, FaultResult> {
        Box::pin(self.fault_impl(cx, vmf))
    }
}
