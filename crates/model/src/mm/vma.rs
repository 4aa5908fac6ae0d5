//! `struct vm_area_struct`, `struct vm_operations_struct` and `struct address_space`.

use super::types::{FaultFlags, Hva, Pfn, VmFault, VmFlags, PAGE_SHIFT};
use super::userfaultfd::Userfaultfd;
use super::Mm;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use world::{Cx, LockId, ObjId};

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
pub struct AddressSpace {
    pub name: String,
    pub i_mmap_rwsem: LockId,
    pub obj: ObjId,
    pub i_mmap: RefCell<Vec<Weak<Vma>>>,
    /// Page cache: page index → frame (the cache holds one reference on each).
    pub pages: RefCell<BTreeMap<u64, Pfn>>,
    /// Initial content pattern of pages read in from "disk".
    pub disk_pattern: Cell<u32>,
    /// Pages that exist in the file (size in pages); faults beyond give SIGBUS.
    pub size_pages: Cell<u64>,
}

impl AddressSpace {
    pub fn new(world: &mut world::World, name: &str, size_pages: u64) -> Rc<Self> {
        Rc::new(AddressSpace {
            name: name.to_string(),
            i_mmap_rwsem: world.lock(format!("{name}.i_mmap_rwsem"), world::LockKind::RwSem),
            obj: world.object(format!("{name}.pages")),
            i_mmap: RefCell::new(Vec::new()),
            pages: RefCell::new(BTreeMap::new()),
            disk_pattern: Cell::new(0),
            size_pages: Cell::new(size_pages),
        })
    }

    /// Live vmas mapping this object.
    pub fn vmas(&self) -> Vec<Rc<Vma>> {
        self.i_mmap
            .borrow()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|v| !v.dead.get())
            .collect()
    }
}

/// `struct vm_area_struct`.
pub struct Vma {
    pub id: u32,
    /// What `/proc/pid/maps` would show (`[vvar]`, `vgpu-bar0`, `anon`).
    pub name: String,
    pub start: Hva,
    pub end: Hva,
    pub flags: Cell<VmFlags>,
    pub pgoff: Cell<u64>,
    pub ops: Option<Rc<dyn VmOps>>,
    pub file: Option<Rc<AddressSpace>>,
    pub uffd: RefCell<Option<Rc<Userfaultfd>>>,
    pub mm: Weak<Mm>,
    /// Set when the vma is unmapped and freed: any later use is a use-after-free.
    pub dead: Cell<bool>,
}

impl Vma {
    pub fn contains(&self, a: Hva) -> bool {
        self.start <= a && a < self.end
    }

    pub fn flags(&self) -> VmFlags {
        self.flags.get()
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
            self.flags()
        )
    }
}
