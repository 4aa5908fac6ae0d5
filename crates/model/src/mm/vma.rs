//! `struct vm_area_struct`, `struct vm_operations_struct` and `struct address_space`.

use super::types::{FaultFlags, Hva, Pfn, VmFault, VmFlags, PAGE_SHIFT, PAGE_SIZE};
use super::userfaultfd::Userfaultfd;
use super::{Mm, MmapArgs};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use world::{audit, Access, Cx, Footprint, LockId, ObjId};

pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// `struct vm_fault`: what a fault handler is told.
#[derive(Clone)]
pub struct VmFaultArgs {
    pub vma: Rc<Vma>,
    pub mm: Rc<Mm>,
    /// Page-aligned faulting address.
    pub address: Hva,
    /// `vmf->pgoff`: `vm_pgoff + (address - vm_start) >> PAGE_SHIFT`.
    pub pgoff: u64,
    pub flags: FaultFlags,
}

/// What a `->fault` handler returns: the `vm_fault_t` and, for handlers that return a page
/// for the core to map (`finish_fault`), `vmf->page` with a reference held for the caller.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FaultResult {
    pub ret: VmFault,
    pub page: Option<Pfn>,
}

impl FaultResult {
    pub fn ret(ret: VmFault) -> Self {
        FaultResult { ret, page: None }
    }
    pub fn page(page: Pfn) -> Self {
        FaultResult {
            ret: VmFault::empty(),
            page: Some(page),
        }
    }
}

/// `struct vm_operations_struct`. Handlers are actor code: they may take locks, sleep, and
/// (when `FAULT_FLAG_ALLOW_RETRY` is set) drop the mmap lock and return `VM_FAULT_RETRY`.
pub trait VmOps {
    /// Driver name for traces.
    fn name(&self) -> &str;

    /// `->fault`.
    fn fault<'a>(&'a self, cx: &'a Cx, vmf: &'a VmFaultArgs) -> LocalBoxFuture<'a, FaultResult>;

    /// `->pfn_mkwrite`: a write to a present read-only special PTE in a shared mapping. The
    /// default (no handler) lets `wp_pfn_shared` make the PTE writable.
    fn pfn_mkwrite<'a>(
        &'a self,
        _cx: &'a Cx,
        _vmf: &'a VmFaultArgs,
    ) -> LocalBoxFuture<'a, VmFault> {
        Box::pin(async { VmFault::empty() })
    }
}

/// `struct address_space`: a file, memfd, shmem object or device inode, with its page cache
/// and the list of vmas mapping it (`i_mmap`) that `unmap_mapping_range` walks.
///
/// Footprint objects: `<name>.pages` (the page cache, declared by the steps that use it) and
/// `<name>.i_mmap` (protected by `i_mmap_rwsem`: walked under it held for read, linked and
/// unlinked under it held for write).
pub struct AddressSpace {
    pub name: Rc<str>,
    pub i_mmap_rwsem: LockId,
    pub obj: ObjId,
    i_mmap_obj: ObjId,
    i_mmap: RefCell<Vec<Weak<Vma>>>,
    /// Page cache: page index → frame (the cache holds one reference on each).
    pages: RefCell<BTreeMap<u64, Pfn>>,
    /// Initial content pattern of pages read in from "disk".
    pub disk_pattern: Cell<u32>,
    /// Pages that exist in the file (size in pages); faults beyond give SIGBUS.
    pub size_pages: Cell<u64>,
}

impl AddressSpace {
    pub fn new(world: &mut world::World, name: &str, size_pages: u64) -> Rc<Self> {
        let i_mmap_rwsem = world.lock(format!("{name}.i_mmap_rwsem"), world::LockKind::RwSem);
        let i_mmap_obj = world.object(format!("{name}.i_mmap"));
        world.protect(Footprint::new(i_mmap_obj, Access::Write), i_mmap_rwsem);
        Rc::new(AddressSpace {
            name: name.into(),
            i_mmap_rwsem,
            obj: world.object(format!("{name}.pages")),
            i_mmap_obj,
            i_mmap: RefCell::new(Vec::new()),
            pages: RefCell::new(BTreeMap::new()),
            disk_pattern: Cell::new(0),
            size_pages: Cell::new(size_pages),
        })
    }

    /// The vmas mapping this object (`vma_interval_tree_foreach`).
    pub fn vmas(&self) -> Vec<Rc<Vma>> {
        audit::read(self.i_mmap_obj);
        self.i_mmap
            .borrow()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// `vma_interval_tree_insert` (`__vma_link_file`).
    pub(crate) fn link(&self, vma: &Rc<Vma>) {
        audit::write(self.i_mmap_obj);
        self.i_mmap.borrow_mut().push(Rc::downgrade(vma));
    }

    /// `vma_interval_tree_remove` (`unlink_file_vma`).
    pub(crate) fn unlink(&self, vma: &Rc<Vma>) {
        audit::write(self.i_mmap_obj);
        self.i_mmap
            .borrow_mut()
            .retain(|w| w.upgrade().is_some_and(|v| !Rc::ptr_eq(&v, vma)));
    }

    /// The cache page at `index`.
    pub fn page(&self, index: u64) -> Option<Pfn> {
        audit::read(self.obj);
        self.pages.borrow().get(&index).copied()
    }

    /// Put `pfn` in the cache at `index`.
    pub fn insert_page(&self, index: u64, pfn: Pfn) {
        audit::write(self.obj);
        self.pages.borrow_mut().insert(index, pfn);
    }

    /// Number of cached pages.
    pub fn cached(&self) -> usize {
        audit::read(self.obj);
        self.pages.borrow().len()
    }
}

/// `struct vm_area_struct`. The mutable fields are the `vma <id>` footprint object, protected
/// by the mmap lock.
pub struct Vma {
    pub id: u32,
    obj: ObjId,
    /// What `/proc/pid/maps` would show (`[vvar]`, `vgpu-bar0`, `anon`).
    pub name: String,
    pub start: Hva,
    pub end: Hva,
    flags: Cell<VmFlags>,
    /// Written only by `remap_pfn_range` on a COW mapping, inside the driver's `->mmap`,
    /// before anything else can reach the vma; not recorded.
    pgoff: Cell<u64>,
    pub ops: Option<Rc<dyn VmOps>>,
    pub file: Option<Rc<AddressSpace>>,
    uffd: RefCell<Option<Rc<Userfaultfd>>>,
    pub mm: Weak<Mm>,
    /// Set when the vma is unmapped and freed: any later use is a use-after-free.
    dead: Cell<bool>,
}

impl Vma {
    pub(crate) fn new(obj: ObjId, id: u32, a: MmapArgs, mm: Weak<Mm>) -> Self {
        Vma {
            id,
            obj,
            name: a.name,
            start: a.start,
            end: a.start + a.pages * PAGE_SIZE,
            flags: Cell::new(a.flags),
            pgoff: Cell::new(a.pgoff),
            ops: a.ops,
            file: a.file,
            uffd: RefCell::new(None),
            mm,
            dead: Cell::new(false),
        }
    }

    pub fn contains(&self, a: Hva) -> bool {
        self.start <= a && a < self.end
    }

    /// The footprint object of this vma's mutable fields.
    pub fn obj(&self) -> ObjId {
        self.obj
    }

    pub fn flags(&self) -> VmFlags {
        audit::read(self.obj);
        self.flags.get()
    }

    /// `vm_flags` without recording an access (digests, displays).
    pub fn flags_unrecorded(&self) -> VmFlags {
        self.flags.get()
    }

    /// `vm_flags_set()` / `vm_flags_reset()`. Setting flags that are already set changes
    /// nothing and is not a write (a fault handler calling `remap_pfn_range` on a vma its
    /// `->mmap` already flagged, under the mmap lock held only for read).
    pub fn set_flags(&self, f: VmFlags) {
        if f != self.flags() {
            audit::write(self.obj);
            self.flags.set(f);
        }
    }

    pub fn pgoff(&self) -> u64 {
        self.pgoff.get()
    }

    pub(crate) fn set_pgoff(&self, p: u64) {
        self.pgoff.set(p);
    }

    /// `vma->vm_userfaultfd_ctx.ctx`.
    pub fn uffd(&self) -> Option<Rc<Userfaultfd>> {
        audit::read(self.obj);
        self.uffd.borrow().clone()
    }

    pub(crate) fn set_uffd(&self, u: Option<Rc<Userfaultfd>>) {
        audit::write(self.obj);
        *self.uffd.borrow_mut() = u;
    }

    /// Whether the vma was unmapped (a pointer to it is dangling).
    pub fn is_dead(&self) -> bool {
        audit::read(self.obj);
        self.dead.get()
    }

    pub(crate) fn set_dead(&self) {
        audit::write(self.obj);
        self.dead.set(true);
    }

    /// `vma_is_anonymous()`: no `vm_ops`.
    pub fn is_anonymous(&self) -> bool {
        self.ops.is_none()
    }

    /// Whether `vm_page_prot` includes write: shared writable mappings map writable; private
    /// ones map read-only so that a write breaks COW.
    pub fn page_prot_writable(&self) -> bool {
        self.flags()
            .contains(VmFlags::VM_WRITE | VmFlags::VM_SHARED)
    }

    /// `is_cow_mapping()`: private and may become writable.
    pub fn is_cow_mapping(&self) -> bool {
        let f = self.flags();
        !f.contains(VmFlags::VM_SHARED) && f.contains(VmFlags::VM_MAYWRITE)
    }

    /// `linear_page_index()`.
    pub fn linear_pgoff(&self, a: Hva) -> u64 {
        self.pgoff.get() + ((a - self.start) >> PAGE_SHIFT)
    }
}

impl fmt::Display for Vma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{:#x}-{:#x}) {}",
            self.name,
            self.start,
            self.end,
            self.flags.get()
        )
    }
}
