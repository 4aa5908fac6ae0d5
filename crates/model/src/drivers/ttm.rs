//! A TTM buffer object in system memory, mmapped through the DRM device (amdgpu, radeon,
//! virtio-gpu host blobs on amdgpu): the "valid but non-refcounted pages" of
//! CVE-2021-22543 and of the v6.13 "kvm-no-struct-page" pull.
//!
//! Mirrors, as of v5.10–v6.x:
//!
//! * backing: `ttm_pool_alloc_page` allocating order-2 blocks **without `__GFP_COMP`**
//!   (`alloc_pages(gfp, order)`): each block's head has refcount 1, its three tails
//!   refcount 0; `ttm_pool_free_page` gives them back with `__free_pages(p, order)`.
//! * mmap: `drm_gem_mmap` / `drm_gem_mmap_obj` + `ttm_bo_mmap_obj`: `VM_IO|VM_PFNMAP|
//!   VM_DONTEXPAND|VM_DONTDUMP` on a shared mapping (a COW mapping is -EINVAL); `vm_pgoff` is
//!   the object's fake offset `drm_vma_node_start` (`DRM_FILE_PAGE_OFFSET_START` = 0x100000
//!   pages + the node's offset), not a pfn; the vma's file mapping is the DRM device's
//!   anon inode, which `drm_vma_node_unmap` zaps.
//! * fault: `ttm_bo_vm_fault` → `ttm_bo_vm_reserve`: `dma_resv_trylock`; if that fails and
//!   `FAULT_FLAG_ALLOW_RETRY` is set, drop the mmap lock, wait for the reservation (lock and
//!   unlock it) and return `VM_FAULT_RETRY` (without waiting under `RETRY_NOWAIT`); without
//!   ALLOW_RETRY, block on the lock. Then `ttm_bo_vm_fault_reserved`: SIGBUS beyond the
//!   object, repopulate a swapped-out object (`ttm_tt_populate`, OOM on failure), and insert
//!   up to `prefault` pages (`TTM_BO_VM_NUM_PREFAULT` = 16) from the faulting one with
//!   `vmf_insert_pfn_prot`, stopping at the vma end or at the first error after the first.
//! * [`Ttm::evict`]: with the reservation held, `ttm_bo_unmap_virtual` (→
//!   `unmap_mapping_range`, MMU notifiers fire), then the pages go back to the allocator
//!   (`ttm_tt_unpopulate` → `__free_pages(order 2)`); the object is now "swapped" and the next
//!   fault repopulates it with a **new** allocation, restoring the contents.
//!
//! Simplifications: only the system (TT) domain, no VRAM/iomem placement, no caching
//! attributes, no `drm_dev_enter` dummy-page path; the swap copy is a saved copy of each
//! page's contents, not shmem.

use super::{check_range, SleepLock};
use crate::mm::insert::vmf_insert_pfn;
use crate::mm::zap::unmap_mapping_pages;
use crate::mm::{
    AddressSpace, Content, Errno, FaultFlags, FaultResult, Frames, Hva, LocalBoxFuture, Mm,
    MmapArgs, Owner, Pfn, VmFault, VmFaultArgs, VmFlags, VmOps, Vma, EINVAL, ENOMEM, PAGE_SIZE,
};
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use world::{audit, Access, Cx, Footprint, FpSet, ObjId, World};

/// `DRM_FILE_PAGE_OFFSET_START` on 64-bit: `(0xFFFFFFFF >> PAGE_SHIFT) + 1`.
pub const DRM_FILE_PAGE_OFFSET_START: u64 = 0x10_0000;
/// `TTM_BO_VM_NUM_PREFAULT`.
pub const TTM_BO_VM_NUM_PREFAULT: u64 = 16;
/// Order of the pool's allocations in this model.
pub const TTM_ORDER: u8 = 2;

/// Options of a [`Ttm`] buffer object.
#[derive(Clone, Debug)]
pub struct TtmConfig {
    /// Object size in pages.
    pub pages: u64,
    /// Page `i` is filled with `pattern.wrapping_add(i)` at first population.
    pub pattern: u32,
    /// Pages inserted per fault (`TTM_BO_VM_NUM_PREFAULT`).
    pub prefault: u64,
    /// The object's offset in the DRM vma-offset manager, in pages (added to
    /// [`DRM_FILE_PAGE_OFFSET_START`]).
    pub node_offset: u64,
}

impl Default for TtmConfig {
    fn default() -> Self {
        TtmConfig {
            pages: 8,
            pattern: 0x7770_0000,
            prefault: TTM_BO_VM_NUM_PREFAULT,
            node_offset: 0,
        }
    }
}

/// A TTM buffer object and its mmap. See the module documentation.
pub struct Ttm {
    pub cfg: TtmConfig,
    frames: Rc<Frames>,
    /// The mm this driver's vmas live in (weak: its vmas point back at the driver).
    mm: Weak<Mm>,
    /// `bo->base.resv`.
    pub resv: Rc<SleepLock>,
    /// The DRM device's anon inode mapping.
    pub mapping: Rc<AddressSpace>,
    /// Footprint object of `blocks`, `swap`, `swapped`, `evictions` (protected by `resv`).
    state_obj: ObjId,
    /// Heads of the order-2 blocks while populated.
    blocks: RefCell<Vec<Pfn>>,
    /// Saved contents while swapped out.
    swap: RefCell<Vec<Content>>,
    swapped: Cell<bool>,
    evictions: Cell<u32>,
}

impl Ttm {
    fn mm(&self) -> Rc<Mm> {
        self.mm.upgrade().expect("the mm outlives its drivers")
    }

    /// Create and populate the object (-ENOMEM if RAM runs out).
    pub fn new(
        world: &mut World,
        frames: &Rc<Frames>,
        mm: &Rc<Mm>,
        cfg: TtmConfig,
    ) -> Result<Rc<Self>, Errno> {
        if cfg.pages == 0 {
            return Err(EINVAL);
        }
        let resv = Rc::new(SleepLock::new(world, "bo->resv"));
        let state_obj = world.object("ttm bo state");
        world.protect(Footprint::new(state_obj, Access::Write), resv.lock);
        let bo = Rc::new(Ttm {
            frames: frames.clone(),
            mm: Rc::downgrade(mm),
            resv,
            state_obj,
            mapping: AddressSpace::new(
                world,
                "drm",
                DRM_FILE_PAGE_OFFSET_START + cfg.node_offset + cfg.pages,
            ),
            blocks: RefCell::new(Vec::new()),
            swap: RefCell::new(Vec::new()),
            swapped: Cell::new(true),
            evictions: Cell::new(0),
            cfg,
        });
        bo.populate()?;
        Ok(bo)
    }

    /// `drm_vma_node_start(&bo->base.vma_node)`: the fake offset, in pages.
    pub fn fake_pgoff(&self) -> u64 {
        DRM_FILE_PAGE_OFFSET_START + self.cfg.node_offset
    }

    /// The pfn of page `i`, while populated.
    pub fn pfn_of(&self, i: u64) -> Option<Pfn> {
        audit::read(self.state_obj);
        let per = 1u64 << TTM_ORDER;
        self.blocks
            .borrow()
            .get((i / per) as usize)
            .map(|h| Pfn(h.0 + i % per))
    }

    /// Every pfn of the object, while populated.
    pub fn pfns(&self) -> Vec<Pfn> {
        (0..self.cfg.pages).filter_map(|i| self.pfn_of(i)).collect()
    }

    /// Whether the object is swapped out (no pages).
    pub fn swapped(&self) -> bool {
        audit::read(self.state_obj);
        self.swapped.get()
    }

    pub fn evictions(&self) -> u32 {
        audit::read(self.state_obj);
        self.evictions.get()
    }

    /// `ttm_tt_populate` → `ttm_pool_alloc` at object creation (setup): order-2
    /// non-compound blocks filled with the initial pattern.
    fn populate(&self) -> Result<(), Errno> {
        let per = 1u64 << TTM_ORDER;
        let n = self.cfg.pages.div_ceil(per);
        let mut blocks = Vec::new();
        for _ in 0..n {
            // The model cannot free without a Cx; a failed populate keeps what it got (a leak
            // only under OOM).
            let h = self
                .frames
                .alloc(TTM_ORDER, Owner::Driver("ttm".into()), false)
                .ok_or(ENOMEM)?;
            blocks.push(h);
        }
        for (b, h) in blocks.iter().enumerate() {
            self.fill_block(b as u64, *h, &[]);
        }
        *self.blocks.borrow_mut() = blocks;
        self.swapped.set(false);
        Ok(())
    }

    /// Contents of block `b` at `head`: the swap copy where there is one, else the initial
    /// pattern.
    fn fill_block(&self, b: u64, head: Pfn, saved: &[Content]) {
        let per = 1u64 << TTM_ORDER;
        for j in 0..per {
            let i = b * per + j;
            if i >= self.cfg.pages {
                break;
            }
            let pfn = Pfn(head.0 + j);
            let fill = self.cfg.pattern.wrapping_add(i as u32);
            self.frames.fill(pfn, fill);
            if let Some(c) = saved.get(i as usize) {
                if *c != Content::filled(fill) {
                    for off in (0..PAGE_SIZE).step_by(8) {
                        self.frames.write(pfn, off, 8, c.read(off, 8));
                    }
                }
            }
        }
    }

    /// `ttm_tt_populate` from the fault path (the reservation held): one allocation step per
    /// order-2 block, each filled from the swap copy as it arrives.
    async fn populate_in(&self, cx: &Cx) -> Result<(), Errno> {
        let per = 1u64 << TTM_ORDER;
        let n = self.cfg.pages.div_ceil(per);
        audit::write(self.state_obj);
        let saved = std::mem::take(&mut *self.swap.borrow_mut());
        let mut blocks = Vec::new();
        for b in 0..n {
            let Some(h) = self
                .frames
                .alloc_pages(cx, TTM_ORDER, Owner::Driver("ttm".into()), false)
                .await
            else {
                return Err(ENOMEM);
            };
            self.fill_block(b, h, &saved);
            blocks.push(h);
        }
        audit::write(self.state_obj);
        *self.blocks.borrow_mut() = blocks;
        self.swapped.set(false);
        Ok(())
    }

    /// The flags of the vma after `drm_gem_mmap_obj` on a shared read/write mapping.
    pub fn vm_flags() -> VmFlags {
        super::shared_rw_pfnmap_flags()
    }

    /// `mmap(drm_fd, start, size, PROT_READ|PROT_WRITE, MAP_SHARED, fake offset)` args.
    pub fn mmap_args(self: &Rc<Self>, start: Hva) -> MmapArgs {
        MmapArgs {
            name: "ttm-bo".into(),
            start,
            pages: self.cfg.pages,
            flags: Self::vm_flags(),
            pgoff: self.fake_pgoff(),
            ops: Some(self.clone() as Rc<dyn VmOps>),
            file: Some(self.mapping.clone()),
        }
    }

    /// Map the whole object at `start` (setup; no PTEs).
    pub fn mmap(self: &Rc<Self>, start: Hva) -> Result<Rc<Vma>, Errno> {
        check_range(start, self.cfg.pages)?;
        self.mm().mmap(self.mmap_args(start))
    }

    /// Eviction to system/swap: under the reservation, zap every CPU mapping
    /// (`ttm_bo_unmap_virtual`), save the contents, and free the order-2 blocks. A no-op
    /// for an object already swapped out.
    pub async fn evict(&self, cx: &Cx) {
        let _f = cx.func("ttm_bo_evict");
        self.resv.lock(cx).await;
        if !self.swapped() {
            unmap_mapping_pages(cx, &self.mapping, self.fake_pgoff(), self.cfg.pages).await;
            // ttm_tt_swapout: copy the pages out (one step loading all of them).
            let mut fp = FpSet::new();
            for h in self.blocks.borrow().iter() {
                fp.add(
                    self.frames
                        .data_class()
                        .range(h.0, h.0 + (1 << TTM_ORDER), Access::Read),
                );
            }
            cx.step_with(fp, "ttm_tt_swapout").await;
            let saved: Vec<Content> = (0..self.cfg.pages)
                .map(|i| self.frames.content(self.pfn_of(i).expect("populated")))
                .collect();
            audit::write(self.state_obj);
            *self.swap.borrow_mut() = saved;
            let blocks = std::mem::take(&mut *self.blocks.borrow_mut());
            for h in blocks {
                let _g = cx.func("ttm_pool_free_page");
                self.frames.free_pages(cx, h, TTM_ORDER).await;
            }
            audit::write(self.state_obj);
            self.swapped.set(true);
            self.evictions.set(self.evictions.get() + 1);
            cx.emit_str("object swapped out");
        }
        self.resv.unlock(cx).await;
    }

    async fn fault_impl(&self, cx: &Cx, vmf: &VmFaultArgs) -> FaultResult {
        let _f = cx.func("ttm_bo_vm_fault");
        // ttm_bo_vm_reserve
        if !self.resv.try_lock(cx).await {
            if vmf.flags.contains(FaultFlags::FAULT_FLAG_ALLOW_RETRY) {
                if !vmf.flags.contains(FaultFlags::FAULT_FLAG_RETRY_NOWAIT) {
                    cx.emit_str("reservation busy: drop mmap_lock, wait for it, VM_FAULT_RETRY");
                    vmf.mm.mmap_unlock(cx).await;
                    self.resv.lock(cx).await;
                    self.resv.unlock(cx).await;
                }
                return FaultResult::ret(VmFault::VM_FAULT_RETRY);
            }
            self.resv.lock(cx).await;
        }
        let ret = self.fault_reserved(cx, vmf).await;
        self.resv.unlock(cx).await;
        FaultResult::ret(ret)
    }

    /// `ttm_bo_vm_fault_reserved(vmf, prot, num_prefault)`.
    async fn fault_reserved(&self, cx: &Cx, vmf: &VmFaultArgs) -> VmFault {
        let vma = &vmf.vma;
        let start = self.fake_pgoff();
        if vmf.pgoff < start || vmf.pgoff - start >= self.cfg.pages {
            world::emit!(
                cx,
                "pgoff {:#x} beyond the object: VM_FAULT_SIGBUS",
                vmf.pgoff
            );
            return VmFault::VM_FAULT_SIGBUS;
        }
        let mut page = vmf.pgoff - start;
        let page_last =
            (vma.pgoff() + (vma.end - vma.start) / PAGE_SIZE - start).min(self.cfg.pages);
        if self.swapped() {
            let _g = cx.func("ttm_tt_populate");
            if self.populate_in(cx).await.is_err() {
                return VmFault::VM_FAULT_OOM;
            }
            world::emit!(
                cx,
                "repopulated: pages now at {}",
                self.pfn_of(0).expect("populated")
            );
        }
        let mut addr = vmf.address;
        let mut ret = VmFault::VM_FAULT_NOPAGE;
        for i in 0..self.cfg.prefault.max(1) {
            let pfn = self.pfn_of(page).expect("populated");
            ret = vmf_insert_pfn(cx, vma, addr, pfn).await;
            if ret.intersects(VmFault::ERROR) {
                if i == 0 {
                    return VmFault::VM_FAULT_NOPAGE;
                }
                break;
            }
            addr += PAGE_SIZE;
            page += 1;
            if page >= page_last {
                break;
            }
        }
        ret
    }
}

impl VmOps for Ttm {
    fn name(&self) -> &str {
        "ttm"
    }

    fn fault<'a>(&'a self, cx: &'a Cx, vmf: &'a VmFaultArgs) -> LocalBoxFuture<'a, FaultResult> {
        Box::pin(self.fault_impl(cx, vmf))
    }
}
