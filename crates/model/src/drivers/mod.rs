//! The drivers whose mmaps end up behind KVM memslots: each creates its vmas the way its
//! kernel counterpart does (flags, `vm_pgoff`, eager or lazy population, which insert
//! primitive) and offers the "device actions" (reset, evict, release, ...) that tear those
//! mappings down again, as actor code.
//!
//! | module | kernel code mirrored | vma | population |
//! |---|---|---|---|
//! | [`vgpu_bar`] | out-of-tree mdev vGPU BAR trap (the seed patch's case), ~v4.8 | `VM_IO\|VM_PFNMAP`, cookie `vm_pgoff` | `remap_pfn_range` of one RAM page from `->fault` |
//! | [`vfio_bar`] | `vfio_pci_mmap_fault` (v5.12+/v6.10+); `eager_legacy`: `vfio_pci_mmap` < v5.8 | `VM_IO\|VM_PFNMAP` | `vmf_insert_pfn` of MMIO per fault; legacy: eager remap, `vm_pgoff` = BAR pfn |
//! | [`vvar`] | `vvar_fault` (lib/vdso/datastore.c, v6.18) | private RO `VM_IO\|VM_PFNMAP` | `vmf_insert_pfn` of kernel data pages, SIGBUS holes |
//! | [`usbfs`] | `usbdev_mmap` (drivers/usb/core/devio.c) | `VM_IO\|VM_PFNMAP` | eager `remap_pfn_range` of a non-compound order-1 buffer |
//! | [`ttm`] | `ttm_bo_vm_fault` + `drm_gem_mmap_obj` | `VM_IO\|VM_PFNMAP`, fake-offset `vm_pgoff` | `vmf_insert_pfn` of non-compound order-2 pool pages |
//! | [`mixedmap`] | drivers using `vm_insert_page` / `vmf_insert_mixed` | `VM_MIXEDMAP`, no `VM_IO` | normal refcounted PTEs, or special PTEs |
//! | [`userfault`] | a VMM's userfaultfd MISSING handler thread | private anon | `UFFDIO_COPY` |
//!
//! Conventions: a driver is an `Rc<Self>` built before the world runs from `&mut World`
//! (for its locks and objects), `&Rc<Frames>` and `&Rc<Mm>`. `mmap(start)` is the
//! synchronous setup path (nothing runs yet, so no lock is taken); drivers whose `->mmap`
//! installs PTEs also offer `mmap_in(cx, start)`, which does the same from an actor under
//! the mmap lock held for write, exactly as `mmap_region` calls `f_op->mmap`.

pub mod mixedmap;
pub mod ttm;
pub mod usbfs;
pub mod userfault;
pub mod vfio_bar;
pub mod vgpu_bar;
pub mod vvar;

pub use mixedmap::{MixedMap, Mode as MixedMapMode};
pub use ttm::{Ttm, TtmConfig};
pub use usbfs::Usbfs;
pub use userfault::Userfault;
pub use vfio_bar::{VfioBar, VfioBarConfig};
pub use vgpu_bar::{VgpuBar, VgpuConfig};
pub use vvar::Vvar;

use crate::mm::{Errno, Hva, Mm, MmapArgs, Vma, EINVAL};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use world::{audit, Cx, LockId, LockKind, LockMode, ObjId, World};

/// `VFIO_PCI_OFFSET_SHIFT`: a vfio region's mmap offset is `index << 40`
/// (`VFIO_PCI_INDEX_TO_OFFSET`), so its `vm_pgoff` cookie is `index << 28`. Intel's kvmgt
/// copies the same constant for its mdev regions.
pub const VFIO_PCI_OFFSET_SHIFT: u32 = 40;

/// `VFIO_PCI_INDEX_TO_OFFSET(index) >> PAGE_SHIFT`: the `vm_pgoff` a vfio/mdev region mmap
/// gets from the mmap syscall.
pub fn vfio_region_pgoff(index: u32) -> u64 {
    (u64::from(index) << VFIO_PCI_OFFSET_SHIFT) >> crate::mm::PAGE_SHIFT
}

/// One access a driver observed (a fault it was asked to resolve, a userfaultfd message).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AccessRecord {
    /// Page index within the driver's object (BAR page, offset in the registered range).
    pub page: u64,
    /// World step at which the driver saw it.
    pub step: u64,
    pub write: bool,
}

/// What a driver saw of the accesses to its pages: the first access per page and the full
/// log (a vGPU trapping "the first access to a BAR", a uffd handler's message stream).
#[derive(Default)]
pub struct AccessLog {
    first: RefCell<BTreeMap<u64, (u64, bool)>>,
    all: RefCell<Vec<AccessRecord>>,
}

impl AccessLog {
    /// Record an access seen at `cx`'s current step.
    pub fn record(&self, cx: &Cx, page: u64, write: bool) {
        let step = cx.step();
        self.first.borrow_mut().entry(page).or_insert((step, write));
        self.all
            .borrow_mut()
            .push(AccessRecord { page, step, write });
    }

    /// `(step, write)` of the first access to `page`, if any.
    pub fn first_access(&self, page: u64) -> Option<(u64, bool)> {
        self.first.borrow().get(&page).copied()
    }

    /// Pages accessed at least once, ascending.
    pub fn pages(&self) -> Vec<u64> {
        self.first.borrow().keys().copied().collect()
    }

    /// Every access recorded, in order.
    pub fn log(&self) -> Vec<AccessRecord> {
        self.all.borrow().clone()
    }

    /// How many accesses to `page` were recorded.
    pub fn count(&self, page: u64) -> usize {
        self.all.borrow().iter().filter(|r| r.page == page).count()
    }
}

/// A sleeping lock with `trylock`: `dma_resv_lock` / `dma_resv_trylock` of a TTM buffer
/// object, as a world mutex (so audit mode can check what it protects). `obj` is the lock
/// object itself: a wait on "a trylock failed" reads it, and every trylock writes it.
pub struct SleepLock {
    pub name: String,
    pub lock: LockId,
    pub obj: ObjId,
    failed_trylocks: Cell<u64>,
}

impl SleepLock {
    pub fn new(world: &mut World, name: &str) -> Self {
        let lock = world.lock(name.to_string(), LockKind::Mutex);
        SleepLock {
            name: name.to_string(),
            lock,
            obj: lock.0,
            failed_trylocks: Cell::new(0),
        }
    }

    /// Blocking acquire (`dma_resv_lock`).
    pub async fn lock(&self, cx: &Cx) {
        cx.lock(self.lock, LockMode::Exclusive).await;
    }

    /// `dma_resv_trylock`: take it if free, else return false at once.
    pub async fn try_lock(&self, cx: &Cx) -> bool {
        let ok = cx.try_lock(self.lock).await;
        if !ok {
            audit::write(self.obj);
            self.failed_trylocks.set(self.failed_trylocks.get() + 1);
        }
        ok
    }

    /// Release; releasing a lock this actor does not hold is a BUG.
    pub async fn unlock(&self, cx: &Cx) {
        cx.unlock(self.lock).await;
    }

    /// How many `try_lock`s have failed so far (reads `obj`: wait on it with that object).
    pub fn failed_trylocks(&self) -> u64 {
        audit::read(self.obj);
        self.failed_trylocks.get()
    }
}

/// `mmap_region` from an actor: take the mmap lock for write, create the vma, run the
/// driver's `->mmap` hook on it (which may install PTEs and set flags), drop the lock. If
/// the hook fails the vma is left in place (the model has no `do_munmap` for this path);
/// callers treat that as fatal. The range must be free.
pub(crate) async fn mmap_locked<'a, F, Fut>(
    cx: &'a Cx,
    mm: &'a Rc<Mm>,
    args: MmapArgs,
    hook: F,
) -> Result<Rc<Vma>, Errno>
where
    F: FnOnce(Rc<Vma>) -> Fut,
    Fut: std::future::Future<Output = Result<(), Errno>> + 'a,
{
    let _f = cx.func("mmap_region");
    mm.mmap_write_lock(cx).await;
    let name = args.name.clone();
    let file = args.file.clone();
    let r = match crate::mm::syscalls::with_i_mmap(cx, file.as_ref(), || mm.mmap(args)).await {
        Ok(vma) => {
            world::emit!(cx, "new vma {name} [{:#x}, {:#x})", vma.start, vma.end);
            match hook(vma.clone()).await {
                Ok(()) => Ok(vma),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    mm.mmap_unlock(cx).await;
    r
}

/// Page-aligned and non-empty, as every driver's mmap checks.
pub(crate) fn check_range(start: Hva, pages: u64) -> Result<(), Errno> {
    if pages == 0 || start & (crate::mm::PAGE_SIZE - 1) != 0 {
        return Err(EINVAL);
    }
    Ok(())
}

/// The flags a driver's `->mmap` leaves on a shared read/write device mapping
/// (`VM_IO|VM_PFNMAP|VM_DONTEXPAND|VM_DONTDUMP` as `remap_pfn_range`/`vm_flags_set` set them,
/// plus the protections of a `PROT_READ|PROT_WRITE, MAP_SHARED` mmap).
pub fn shared_rw_pfnmap_flags() -> crate::mm::VmFlags {
    use crate::mm::VmFlags;
    VmFlags::VM_IO
        | VmFlags::VM_PFNMAP
        | VmFlags::VM_SHARED
        | VmFlags::VM_READ
        | VmFlags::VM_WRITE
        | VmFlags::VM_MAYREAD
        | VmFlags::VM_MAYWRITE
        | VmFlags::VM_DONTEXPAND
        | VmFlags::VM_DONTDUMP
}
