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
}

impl PageCacheOps {
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
            // The lookup may allocate: one step on the cache and the allocator.
            let cache = world::FpSet::one(self.mapping.obj, world::Access::Write);
            self.frames.alloc_step(cx, cache, 0, "find_lock_page").await;
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
