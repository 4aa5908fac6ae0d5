//! Page-cache backed mappings: shmem (`MAP_SHARED|MAP_ANONYMOUS`), memfd, and regular files
//! (`shmem_fault` / `filemap_fault`). The fault handler returns the cache page with a
//! reference for the mapping; the core maps it (`finish_fault`), copying it first for a
//! write to a private mapping (`do_cow_fault`).
//!
//! Simplification: no writeback, no `page_mkwrite`; shared mappings map writable on the first
//! fault when `VM_WRITE` (shmem does not need write notification).

use super::frame::{Frames, Owner};
use super::types::*;
use super::vma::{AddressSpace, FaultResult, LocalBoxFuture, VmFaultArgs, VmOps};
use std::rc::Rc;
use world::Cx;

pub struct PageCacheOps {
    pub mapping: Rc<AddressSpace>,
    pub frames: Rc<Frames>,
    /// Footprint of `find_lock_page`: a read of the cache when the page is there, else an
    /// insertion and an allocation.
    lookup_fp: world::ProviderId,
}

impl PageCacheOps {
    pub fn new(world: &mut world::World, mapping: Rc<AddressSpace>, frames: Rc<Frames>) -> Self {
        let (m, f) = (mapping.clone(), frames.clone());
        let lookup_fp = world.provider(Box::new(move |index, fp| {
            if world::audit::suspended(|| m.page(index)).is_some() {
                fp.push(m.obj, world::Access::Read);
            } else {
                fp.push(m.obj, world::Access::Write);
                f.alloc_footprint(0, fp);
            }
        }));
        PageCacheOps {
            mapping,
            frames,
            lookup_fp,
        }
    }

    /// Put a page in the cache with `pattern` (the file's contents on "disk"); the cache
    /// holds one reference.
    pub fn populate(&self, index: u64, pattern: u32) -> Option<Pfn> {
        if let Some(p) = self.mapping.page(index) {
            self.frames.fill(p, pattern);
            return Some(p);
        }
        let p = self
            .frames
            .alloc(0, Owner::PageCache(self.mapping.name.clone()), false)?;
        self.frames.fill(p, pattern);
        self.mapping.insert_page(index, p);
        Some(p)
    }
}

impl VmOps for PageCacheOps {
    fn name(&self) -> &str {
        &self.mapping.name
    }

    /// `shmem_fault()` / `filemap_fault()`: find or create the cache page and return it with
    /// a reference.
    fn fault<'a>(&'a self, cx: &'a Cx, vmf: &'a VmFaultArgs) -> LocalBoxFuture<'a, FaultResult> {
        Box::pin(async move {
            let index = vmf.pgoff;
            if index >= self.mapping.size_pages.get() {
                return FaultResult::ret(VmFault::VM_FAULT_SIGBUS);
            }
            // The lookup allocates if the page is not cached yet.
            cx.step_dyn(world::FpSet::new(), self.lookup_fp, index, "find_lock_page")
                .await;
            let existing = self.mapping.page(index);
            let page = match existing {
                Some(p) => p,
                None => match self.populate(index, self.mapping.disk_pattern.get()) {
                    Some(p) => {
                        world::emit!(cx, "page cache miss at index {index}: new {p}");
                        p
                    }
                    None => return FaultResult::ret(VmFault::VM_FAULT_OOM),
                },
            };
            self.frames.get_page(cx, page).await;
            FaultResult::page(page)
        })
    }
}
