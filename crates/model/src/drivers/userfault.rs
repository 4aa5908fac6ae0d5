//! Guest memory served by a userfaultfd MISSING handler (post-copy live migration, lazy
//! snapshot restore: QEMU `postcopy_ram_fault_thread`, Firecracker's page-fault handler).
//!
//! Not a kernel driver: the "driver" is the VMM's handler thread, and the kernel side is
//! `fs/userfaultfd.c` (`handle_userfault`, `UFFDIO_COPY`, `UFFDIO_WAKE`, modelled in
//! [`crate::mm::userfaultfd`]). The region is private anonymous read/write memory
//! (`mmap(MAP_PRIVATE|MAP_ANONYMOUS)`, `vm_pgoff` = `start >> PAGE_SHIFT`) registered with
//! `UFFDIO_REGISTER_MODE_MISSING` (`Userfaultfd::register`). The handler loop
//! ([`Userfault::run_handler`]) mirrors the probes' `uffd.c` handler: poll, `read` one
//! `uffd_msg`, `UFFDIO_COPY` a page of content for it, and on -EEXIST (another thread's
//! fault was already resolved) `UFFDIO_WAKE` the range.
//!
//! Ending a world: a handler blocked in `read()` would be reported as a deadlock once the
//! vCPUs finish. The handler therefore waits for "a message is pending **or** the stop flag
//! is set" (the real handlers poll the uffd together with an eventfd), and stops after
//! `max_msgs` messages or once [`Userfault::stop`] has been called and no message is
//! pending. Whoever finishes last (a harness actor, the last vCPU) calls `stop`.
//!
//! Simplifications: one handler; MISSING mode only (no WP/MINOR); no `UFFD_FEATURE_*`
//! negotiation; the copied content is `fill_of(page)` repeated over the page.

use super::{check_range, AccessLog};
use crate::mm::userfaultfd::Userfaultfd;
use crate::mm::{Errno, Hva, Mm, MmapArgs, Vma, EEXIST, PAGE_SHIFT, PAGE_SIZE};
use std::cell::Cell;
use std::rc::Rc;
use world::{Access, Cx, World};

/// A userfaultfd-registered anonymous region and its handler's state.
pub struct Userfault {
    pub mm: Rc<Mm>,
    pub uffd: Rc<Userfaultfd>,
    pub vma: Rc<Vma>,
    pub start: Hva,
    pub pages: u64,
    /// Every message the handler read: page index and write flag.
    pub accesses: AccessLog,
    stop: Cell<bool>,
    handled: Cell<u64>,
    copies: Cell<u64>,
    eexist: Cell<u64>,
}

impl Userfault {
    /// `mmap(start, pages, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS)` plus
    /// `userfaultfd(O_NONBLOCK[|UFFD_USER_MODE_ONLY])` and `UFFDIO_REGISTER` (MISSING) on it
    /// (setup).
    pub fn new(
        world: &mut World,
        mm: &Rc<Mm>,
        start: Hva,
        pages: u64,
        user_mode_only: bool,
    ) -> Result<Rc<Self>, Errno> {
        check_range(start, pages)?;
        let vma = mm.mmap(MmapArgs::anon(
            "uffd-anon",
            start,
            pages,
            crate::mm::VmFlags::VM_READ | crate::mm::VmFlags::VM_WRITE,
        ))?;
        let uffd = Userfaultfd::new(world, user_mode_only);
        uffd.register(mm, start, start + pages * PAGE_SIZE);
        Ok(Rc::new(Userfault {
            mm: mm.clone(),
            uffd,
            vma,
            start,
            pages,
            accesses: AccessLog::default(),
            stop: Cell::new(false),
            handled: Cell::new(0),
            copies: Cell::new(0),
            eexist: Cell::new(0),
        }))
    }

    /// Page index of `addr` in the region.
    pub fn page_of(&self, addr: Hva) -> u64 {
        (addr - self.start) >> PAGE_SHIFT
    }

    /// Address of page `page`.
    pub fn addr_of(&self, page: u64) -> Hva {
        self.start + page * PAGE_SIZE
    }

    /// `(step, write)` of the first message for page `page`.
    pub fn first_access(&self, page: u64) -> Option<(u64, bool)> {
        self.accesses.first_access(page)
    }

    /// Messages handled so far.
    pub fn handled(&self) -> u64 {
        self.handled.get()
    }

    /// Successful `UFFDIO_COPY`s so far.
    pub fn copies(&self) -> u64 {
        self.copies.get()
    }

    /// `UFFDIO_COPY`s that returned -EEXIST (resolved with `UFFDIO_WAKE`).
    pub fn eexist(&self) -> u64 {
        self.eexist.get()
    }

    /// Whether [`Self::stop`] was called.
    pub fn stopping(&self) -> bool {
        self.stop.get()
    }

    /// Tell the handler to exit once no message is pending (a write to the eventfd it polls
    /// together with the uffd; the footprint is the uffd object the handler waits on).
    pub async fn stop(&self, cx: &Cx) {
        cx.access(self.uffd.obj, Access::Write, "signal uffd handler to stop")
            .await;
        world::audit::write(self.uffd.obj);
        self.stop.set(true);
        cx.emit_str("uffd handler: stop requested");
    }

    /// The handler thread's body. Reads up to `max_msgs` messages; for each, records the
    /// access, `UFFDIO_COPY`s a page filled with `fill_of(page)`, and on -EEXIST
    /// `UFFDIO_WAKE`s the page. Returns when `max_msgs` have been handled, or when stopped
    /// with nothing pending.
    pub async fn run_handler(self: Rc<Self>, cx: Cx, fill_of: impl Fn(u64) -> u32, max_msgs: u64) {
        let _f = cx.func("uffd handler");
        let mut n = 0;
        while n < max_msgs {
            let me = self.clone();
            cx.wait_until(self.uffd.obj, "poll(uffd, stop eventfd)", move || {
                world::audit::read(me.uffd.obj);
                me.uffd.has_pending() || me.stop.get()
            })
            .await;
            if !self.uffd.has_pending() {
                world::emit!(cx, "stopping after {n} messages");
                return;
            }
            let msg = self.uffd.read_msg(&cx).await;
            n += 1;
            self.handled.set(n);
            let page = self.page_of(msg.address);
            self.accesses.record(&cx, page, msg.write);
            match self
                .uffd
                .copy(&cx, &self.mm, msg.address, fill_of(page))
                .await
            {
                Ok(()) => self.copies.set(self.copies.get() + 1),
                Err(e) if e == EEXIST => {
                    self.eexist.set(self.eexist.get() + 1);
                    let a = crate::mm::page_align_down(msg.address);
                    self.uffd.wake(&cx, a, a + PAGE_SIZE).await;
                }
                Err(e) => {
                    // -ENOENT (range unmapped meanwhile) or -ENOMEM: wake so the faulter
                    // retries and sees the new state instead of sleeping forever.
                    world::emit!(cx, "UFFDIO_COPY: {e}; UFFDIO_WAKE");
                    let a = crate::mm::page_align_down(msg.address);
                    self.uffd.wake(&cx, a, a + PAGE_SIZE).await;
                }
            }
        }
        world::emit!(cx, "handled {max_msgs} messages: exiting");
    }
}
