//! usbfs buffer mmap (`/dev/bus/usb/BBB/DDD`): the CVE-2021-22543 PoC's memory.
//!
//! Mirrors `usbdev_mmap` (drivers/usb/core/devio.c, v4.16+ through v6.x): the file must be
//! open for writing (-EPERM otherwise, so `VM_MAYWRITE` is always set); a coherent DMA
//! buffer the size of the vma is allocated (`usb_alloc_coherent` → `dma_direct_alloc` →
//! `alloc_pages(get_order(size))` **without `__GFP_COMP`**: the head has refcount 1, every
//! other page is a non-compound tail with refcount 0), zeroed, and mapped eagerly over the
//! whole vma with `remap_pfn_range` (or `dma_mmap_coherent`, which does the same on x86);
//! then `VM_IO|VM_DONTEXPAND|VM_DONTDUMP` are set. The vma is `VM_SHARED` (the PoC maps
//! `MAP_SHARED`; a private writable mapping would make `remap_pfn_range` rewrite
//! `vm_pgoff`), its `vm_pgoff` is the mmap offset (0), and the PTE permissions follow the
//! requested protection: the PoC maps `PROT_READ`, so its PTEs are read-only.
//!
//! `usbdev_vm_ops` has only `open`/`close` (no `->fault`), so a fault on a zapped page is
//! `VM_FAULT_SIGBUS`. The buffer is freed by `usbdev_vm_close` → `usb_free_coherent` when
//! the last vma reference goes ([`Usbfs::close`] = munmap + [`Usbfs::release`]).
//!
//! Simplifications: one buffer per `Usbfs` object; the usbfs memory accounting
//! (`usbfs_memory_mb`) and the URB side are not modelled; `release` frees the buffer
//! whether or not the vma is still mapped (call it after munmap, or use `close`).

use super::{check_range, mmap_locked};
use crate::mm::insert::remap_pfn_range;
use crate::mm::syscalls::sys_munmap;
use crate::mm::{
    Errno, FaultResult, Frames, Hva, LocalBoxFuture, Mm, MmapArgs, Owner, Pfn, Pte, VmFault,
    VmFaultArgs, VmFlags, VmOps, Vma, ENOMEM, PAGE_SIZE,
};
use std::cell::Cell;
use std::rc::{Rc, Weak};
use world::Cx;

/// The usbfs device file and its one coherent buffer.
pub struct Usbfs {
    frames: Rc<Frames>,
    /// The mm this driver's vmas live in (weak: its vmas point back at the driver).
    mm: Weak<Mm>,
    /// `(head pfn, order, pages mapped)` of the buffer while allocated.
    buffer: Cell<Option<(Pfn, u8, u64)>>,
    /// Start of the mapping, while mapped.
    start: Cell<Option<Hva>>,
}

/// `get_order(pages * PAGE_SIZE)`.
fn order_for(pages: u64) -> u8 {
    pages.next_power_of_two().trailing_zeros() as u8
}

impl Usbfs {
    fn mm(&self) -> Rc<Mm> {
        self.mm.upgrade().expect("the mm outlives its drivers")
    }

    pub fn new(frames: &Rc<Frames>, mm: &Rc<Mm>) -> Rc<Self> {
        Rc::new(Usbfs {
            frames: frames.clone(),
            mm: Rc::downgrade(mm),
            buffer: Cell::new(None),
            start: Cell::new(None),
        })
    }

    /// Flags of the vma after `usbdev_mmap` (shared, `PROT_READ` plus `PROT_WRITE` if
    /// `write`), including `VM_PFNMAP` from `remap_pfn_range`.
    pub fn vm_flags(write: bool) -> VmFlags {
        let mut f = VmFlags::VM_SHARED
            | VmFlags::VM_READ
            | VmFlags::VM_MAYREAD
            | VmFlags::VM_MAYWRITE
            | VmFlags::VM_IO
            | VmFlags::VM_PFNMAP
            | VmFlags::VM_DONTEXPAND
            | VmFlags::VM_DONTDUMP;
        if write {
            f |= VmFlags::VM_WRITE;
        }
        f
    }

    /// The coherent buffer's head pfn, if allocated.
    pub fn buffer(&self) -> Option<Pfn> {
        self.buffer.get().map(|(p, _, _)| p)
    }

    /// Allocation order of the buffer, if allocated.
    pub fn order(&self) -> Option<u8> {
        self.buffer.get().map(|(_, o, _)| o)
    }

    /// The pfn backing page `i` of the buffer.
    pub fn pfn_of(&self, i: u64) -> Option<Pfn> {
        self.buffer.get().map(|(p, _, _)| Pfn(p.0 + i))
    }

    fn alloc_buffer(&self, pages: u64) -> Result<Pfn, Errno> {
        if self.buffer.get().is_some() {
            // One buffer per object in the model.
            return Err(crate::mm::EBUSY);
        }
        let order = order_for(pages);
        let head = self
            .frames
            .alloc(order, Owner::Driver("usbfs".into()), false)
            .ok_or(ENOMEM)?;
        self.buffer.set(Some((head, order, pages)));
        Ok(head)
    }

    fn args(self: &Rc<Self>, start: Hva, pages: u64, flags: VmFlags) -> MmapArgs {
        MmapArgs {
            name: "usbfs".into(),
            start,
            pages,
            flags,
            pgoff: 0,
            ops: Some(self.clone() as Rc<dyn VmOps>),
            file: None,
        }
    }

    /// `mmap(usbfs_fd, start, pages, PROT_READ[|PROT_WRITE], MAP_SHARED, 0)` at setup:
    /// allocate the buffer and install its PTEs at once (the effect of `remap_pfn_range`:
    /// special PTEs, writable iff `write`).
    pub fn mmap(self: &Rc<Self>, start: Hva, pages: u64, write: bool) -> Result<Rc<Vma>, Errno> {
        check_range(start, pages)?;
        let head = self.alloc_buffer(pages)?;
        let vma = self
            .mm()
            .mmap(self.args(start, pages, Self::vm_flags(write)))?;
        for i in 0..pages {
            self.mm().set_pte_setup(
                start + i * PAGE_SIZE,
                Pte {
                    pfn: Pfn(head.0 + i),
                    write: vma.page_prot_writable(),
                    special: true,
                    protnone: false,
                },
            );
        }
        self.start.set(Some(start));
        Ok(vma)
    }

    /// The same from an actor: `mmap_region` holds the mmap lock for write and
    /// `usbdev_mmap` calls the real `remap_pfn_range`.
    pub async fn mmap_in(
        self: &Rc<Self>,
        cx: &Cx,
        start: Hva,
        pages: u64,
        write: bool,
    ) -> Result<Rc<Vma>, Errno> {
        check_range(start, pages)?;
        let head = self.alloc_buffer(pages)?;
        // Before remap_pfn_range the vma has neither VM_IO nor VM_PFNMAP.
        let flags = Self::vm_flags(write).without(
            VmFlags::VM_IO | VmFlags::VM_PFNMAP | VmFlags::VM_DONTEXPAND | VmFlags::VM_DONTDUMP,
        );
        let r = mmap_locked(
            cx,
            &self.mm(),
            self.args(start, pages, flags),
            move |vma| async move {
                let _f = cx.func("usbdev_mmap");
                remap_pfn_range(cx, &vma, vma.start, head, pages).await?;
                vma.set_flags(
                    vma.flags() | VmFlags::VM_IO | VmFlags::VM_DONTEXPAND | VmFlags::VM_DONTDUMP,
                );
                Ok(())
            },
        )
        .await;
        if r.is_ok() {
            self.start.set(Some(start));
        }
        r
    }

    /// `usb_free_coherent`: `free_pages(head, order)`. Drops the head's reference and frees
    /// every page whose count is then zero — including a tail someone wrongly got and put
    /// back to zero earlier (that one is already free: the CVE).
    pub async fn release(&self, cx: &Cx) {
        let _f = cx.func("usb_free_coherent");
        if let Some((head, order, _)) = self.buffer.take() {
            self.frames.free_pages(cx, head, order).await;
        }
    }

    /// `munmap` of the buffer mapping followed by `usbdev_vm_close` freeing the buffer.
    pub async fn close(&self, cx: &Cx) -> Result<(), Errno> {
        if let (Some(start), Some((_, _, pages))) = (self.start.take(), self.buffer.get()) {
            sys_munmap(cx, &self.mm(), start, pages * PAGE_SIZE).await?;
        }
        self.release(cx).await;
        Ok(())
    }
}

impl VmOps for Usbfs {
    fn name(&self) -> &str {
        "usbfs"
    }

    /// `usbdev_vm_ops` has no `->fault`: the core's `do_fault` gives `VM_FAULT_SIGBUS`.
    fn fault<'a>(&'a self, _cx: &'a Cx, _vmf: &'a VmFaultArgs) -> LocalBoxFuture<'a, FaultResult> {
        Box::pin(async { FaultResult::ret(VmFault::VM_FAULT_SIGBUS) })
    }
}
