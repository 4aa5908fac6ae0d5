//! A `VM_MIXEDMAP` driver (no `VM_IO`): ordinary refcounted driver pages in a vma that GUP
//! accepts, so KVM never takes its remapped path for it.
//!
//! Two real patterns:
//!
//! * [`Mode::InsertPage`] — drivers that `vm_insert_page` every page of a kernel buffer from
//!   their `->mmap` (e.g. the `videobuf2-vmalloc`/`dma-sg` and xen `gntalloc` style): the
//!   first `vm_insert_page` sets `VM_MIXEDMAP` (it needs the mmap lock held for write, which
//!   `mmap_region` holds around `f_op->mmap`) and each page gets a **normal** PTE holding
//!   its own reference. There is no `->fault` (a zapped page is `VM_FAULT_SIGBUS`). GUP on
//!   it returns the page with a new reference.
//! * [`Mode::InsertMixed`] — drivers that set `VM_MIXEDMAP` at mmap time and fill pages
//!   from `->fault` with `vmf_insert_mixed` (v6.18 semantics): on x86
//!   (`CONFIG_ARCH_HAS_PTE_SPECIAL`) that is always a **special** PTE, even for a
//!   `pfn_valid` page, so GUP's `follow_page_pte` finds no page and returns -EEXIST.
//!
//! Vma: `VM_SHARED|VM_READ|VM_WRITE|VM_MAYREAD|VM_MAYWRITE` (+ `VM_MIXEDMAP`), `vm_pgoff` =
//! the mmap offset 0, `vm_file` = the device's `address_space`. The driver allocates its
//! pages (order 0, `Driver("mixedmap")`, refcount 1 held by the driver) at construction.
//!
//! Setup for `InsertPage`, three ways: [`MixedMap::mmap_populated`] at setup mirrors the
//! effect of the `vm_insert_page` loop (flags, normal PTEs, one reference per mapping via
//! `Frames::get_page_setup`) without running it; [`MixedMap::mmap_in`] runs the whole
//! `mmap_region` from an actor under the mmap write lock; [`MixedMap::mmap`] at setup
//! followed by [`MixedMap::populate`] from an actor (which takes the write lock itself) —
//! until populated that vma has no PTEs and no `VM_MIXEDMAP`.
//!
//! Simplifications: one mapping per driver object; no `->page_mkwrite`/dirty tracking.

use super::{check_range, mmap_locked};
use crate::mm::insert::{vm_insert_page, vmf_insert_mixed};
use crate::mm::zap::unmap_mapping_pages;
use crate::mm::{
    AddressSpace, Errno, FaultResult, Frames, Hva, LocalBoxFuture, Mm, MmapArgs, Owner, Pfn, Pte,
    VmFault, VmFaultArgs, VmFlags, VmOps, Vma, EINVAL, ENOMEM, PAGE_SIZE,
};
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use world::{Cx, World};

/// How the driver populates its vma.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `vm_insert_page` of every page at mmap time: normal refcounted PTEs.
    InsertPage,
    /// `vmf_insert_mixed` from `->fault`: special PTEs on x86.
    InsertMixed,
}

/// A `VM_MIXEDMAP` driver. See the module documentation.
pub struct MixedMap {
    pub mode: Mode,
    pub pages: u64,
    frames: Rc<Frames>,
    /// The mm this driver's vmas live in (weak: its vmas point back at the driver).
    mm: Weak<Mm>,
    pub mapping: Rc<AddressSpace>,
    /// The driver's pages (one reference each held by the driver) until released.
    buf: RefCell<Vec<Pfn>>,
}

impl MixedMap {
    fn mm(&self) -> Rc<Mm> {
        self.mm.upgrade().expect("the mm outlives its drivers")
    }

    /// Allocate `pages` driver pages, page `i` filled with `pattern + i`.
    pub fn new(
        world: &mut World,
        frames: &Rc<Frames>,
        mm: &Rc<Mm>,
        mode: Mode,
        pages: u64,
        pattern: u32,
    ) -> Result<Rc<Self>, Errno> {
        if pages == 0 {
            return Err(EINVAL);
        }
        let mut buf = Vec::new();
        for i in 0..pages {
            let p = frames
                .alloc(0, Owner::Driver("mixedmap".into()), false)
                .ok_or(ENOMEM)?;
            frames.fill(p, pattern.wrapping_add(i as u32));
            buf.push(p);
        }
        Ok(Rc::new(MixedMap {
            mode,
            pages,
            frames: frames.clone(),
            mm: Rc::downgrade(mm),
            mapping: AddressSpace::new(world, "mixedmap", pages),
            buf: RefCell::new(buf),
        }))
    }

    /// The driver page behind page `i`, while not released.
    pub fn pfn_of(&self, i: u64) -> Option<Pfn> {
        self.buf.borrow().get(i as usize).copied()
    }

    /// Flags at vma creation: `InsertMixed` drivers set `VM_MIXEDMAP` in `->mmap`;
    /// `InsertPage` gets it from the first `vm_insert_page`.
    pub fn initial_flags(&self) -> VmFlags {
        let f = VmFlags::VM_SHARED
            | VmFlags::VM_READ
            | VmFlags::VM_WRITE
            | VmFlags::VM_MAYREAD
            | VmFlags::VM_MAYWRITE;
        match self.mode {
            Mode::InsertPage => f,
            Mode::InsertMixed => f | VmFlags::VM_MIXEDMAP,
        }
    }

    fn args(self: &Rc<Self>, start: Hva) -> MmapArgs {
        MmapArgs {
            name: "mixedmap".into(),
            start,
            pages: self.pages,
            flags: self.initial_flags(),
            pgoff: 0,
            ops: Some(self.clone() as Rc<dyn VmOps>),
            file: Some(self.mapping.clone()),
        }
    }

    /// Create the vma at setup (no PTEs). `InsertPage` still needs [`Self::populate`].
    pub fn mmap(self: &Rc<Self>, start: Hva) -> Result<Rc<Vma>, Errno> {
        check_range(start, self.pages)?;
        self.mm().mmap(self.args(start))
    }

    /// `InsertPage` at setup, all at once: the effect of `->mmap`'s `vm_insert_page` loop
    /// without running it (nothing runs yet, so no lock): `VM_MIXEDMAP` set, every page
    /// mapped by a normal PTE holding its own reference (`Frames::get_page_setup`). For
    /// `InsertMixed` this is plain [`Self::mmap`].
    pub fn mmap_populated(self: &Rc<Self>, start: Hva) -> Result<Rc<Vma>, Errno> {
        let vma = self.mmap(start)?;
        if self.mode == Mode::InsertPage {
            vma.set_flags(vma.flags() | VmFlags::VM_MIXEDMAP);
            for (i, p) in self.buf.borrow().iter().enumerate() {
                self.frames.get_page_setup(*p);
                let pte = Pte {
                    pfn: *p,
                    write: vma.page_prot_writable(),
                    special: false,
                    protnone: false,
                };
                self.mm().set_pte_setup(start + i as u64 * PAGE_SIZE, pte);
            }
        }
        Ok(vma)
    }

    async fn insert_all(&self, cx: &Cx, vma: &Rc<Vma>) -> Result<(), Errno> {
        let _f = cx.func("mixedmap_mmap");
        let pages = self.buf.borrow().clone();
        for (i, p) in pages.into_iter().enumerate() {
            vm_insert_page(cx, vma, vma.start + i as u64 * PAGE_SIZE, p).await?;
        }
        Ok(())
    }

    /// `InsertPage`: what `->mmap` does, for a vma made by [`Self::mmap`]: take the mmap
    /// lock for write and `vm_insert_page` every page. No-op for `InsertMixed`.
    pub async fn populate(&self, cx: &Cx, vma: &Rc<Vma>) -> Result<(), Errno> {
        if self.mode != Mode::InsertPage {
            return Ok(());
        }
        self.mm().mmap_write_lock(cx).await;
        let r = self.insert_all(cx, vma).await;
        self.mm().mmap_unlock(cx).await;
        r
    }

    /// The whole `mmap` from an actor, under the mmap write lock.
    pub async fn mmap_in(self: &Rc<Self>, cx: &Cx, start: Hva) -> Result<Rc<Vma>, Errno> {
        check_range(start, self.pages)?;
        let me = self.clone();
        mmap_locked(cx, &self.mm(), self.args(start), move |vma| async move {
            if me.mode == Mode::InsertPage {
                me.insert_all(cx, &vma).await?;
            }
            Ok(())
        })
        .await
    }

    /// Tear down: zap every mapping of the object (normal PTEs drop their references after
    /// the notifier end), then drop the driver's references, freeing the pages unless
    /// someone else still holds one.
    pub async fn release(&self, cx: &Cx) {
        let _f = cx.func("mixedmap_release");
        unmap_mapping_pages(cx, &self.mapping, 0, self.pages).await;
        let buf = std::mem::take(&mut *self.buf.borrow_mut());
        for p in buf {
            self.frames.put_page(cx, p).await;
        }
    }

    async fn fault_impl(&self, cx: &Cx, vmf: &VmFaultArgs) -> FaultResult {
        let _f = cx.func("mixedmap_fault");
        if self.mode == Mode::InsertPage {
            cx.emit_str("no ->fault: VM_FAULT_SIGBUS");
            return FaultResult::ret(VmFault::VM_FAULT_SIGBUS);
        }
        let Some(pfn) = self.pfn_of(vmf.pgoff) else {
            return FaultResult::ret(VmFault::VM_FAULT_SIGBUS);
        };
        FaultResult::ret(vmf_insert_mixed(cx, &vmf.vma, vmf.address, pfn).await)
    }
}

impl VmOps for MixedMap {
    fn name(&self) -> &str {
        "mixedmap"
    }

    fn fault<'a>(&'a self, cx: &'a Cx, vmf: &'a VmFaultArgs) -> LocalBoxFuture<'a, FaultResult> {
        Box::pin(self.fault_impl(cx, vmf))
    }
}
