//! userfaultfd MISSING mode (fs/userfaultfd.c, mm/userfaultfd.c): a fault on a missing page
//! of a registered range queues a message for a userspace handler thread, drops the mmap
//! lock and sleeps until the handler fills the page (`UFFDIO_COPY`) and wakes the range.

use super::frame::Owner;
use super::types::*;
use super::vma::VmFaultArgs;
use super::{Mm, Pte};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use world::{audit, Access, Cx, ObjId, World};

/// A fault message as `read()` returns it (`struct uffd_msg`, `UFFD_EVENT_PAGEFAULT`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct UffdMsg {
    pub address: Hva,
    pub write: bool,
}

/// `struct userfaultfd_ctx`.
pub struct Userfaultfd {
    pub obj: ObjId,
    /// `UFFD_USER_MODE_ONLY`: faults from kernel mode (KVM's GUP) are not handled.
    pub user_mode_only: bool,
    /// Pending, unread messages (each is a sleeping faulter's wait-queue entry).
    pending: RefCell<Vec<(u64, UffdMsg)>>,
    /// Every message ever read, in order.
    pub delivered: RefCell<Vec<UffdMsg>>,
    /// Wake-ups so far: each covers `[start, end)`.
    wakes: RefCell<Vec<(Hva, Hva)>>,
    next_waiter: Cell<u64>,
}

impl Userfaultfd {
    pub fn new(world: &mut World, user_mode_only: bool) -> Rc<Self> {
        Rc::new(Userfaultfd {
            obj: world.object("userfaultfd"),
            user_mode_only,
            pending: RefCell::new(Vec::new()),
            delivered: RefCell::new(Vec::new()),
            wakes: RefCell::new(Vec::new()),
            next_waiter: Cell::new(0),
        })
    }

    /// `UFFDIO_REGISTER` with `UFFDIO_REGISTER_MODE_MISSING` on the vmas of `[start, end)`.
    pub fn register(self: &Rc<Self>, mm: &Mm, start: Hva, end: Hva) {
        for v in mm.vmas_in(start, end) {
            v.set_flags(v.flags() | VmFlags::VM_UFFD_MISSING);
            v.set_uffd(Some(self.clone()));
        }
    }

    /// Blocking `read()` of the next message (the handler thread's poll + read).
    pub async fn read_msg(self: &Rc<Self>, cx: &Cx) -> UffdMsg {
        let me = self.clone();
        cx.wait_until(self.obj, "userfaultfd message", move || me.has_pending())
            .await;
        // Dequeuing writes the queue (a step of its own: a wake may have emptied it since).
        cx.access(self.obj, Access::Write, "read(uffd)").await;
        if !self.has_pending() {
            return Box::pin(self.read_msg(cx)).await;
        }
        audit::write(self.obj);
        let (_, msg) = self.pending.borrow_mut().remove(0);
        self.delivered.borrow_mut().push(msg);
        world::emit!(
            cx,
            "read uffd_msg: {} fault at {:#x}",
            if msg.write { "write" } else { "read" },
            msg.address
        );
        msg
    }

    /// Non-blocking check for a pending message.
    pub fn has_pending(&self) -> bool {
        audit::read(self.obj);
        !self.pending.borrow().is_empty()
    }

    /// Wake every faulter sleeping on `[start, end)`: `UFFDIO_WAKE`, or the wake at the end
    /// of `UFFDIO_COPY`. Unread messages for the range vanish with their wait-queue entries.
    pub async fn wake(&self, cx: &Cx, start: Hva, end: Hva) {
        cx.access(self.obj, Access::Write, "wake_userfault").await;
        self.wake_now(start, end);
    }

    fn wake_now(&self, start: Hva, end: Hva) {
        audit::write(self.obj);
        self.wakes.borrow_mut().push((start, end));
        self.pending
            .borrow_mut()
            .retain(|(_, m)| !(start <= m.address && m.address < end));
    }

    /// `UFFDIO_COPY` of one page filled with `pattern` to `dst`: -EEXIST if a PTE is already
    /// there (the handler then just wakes).
    pub async fn copy(
        self: &Rc<Self>,
        cx: &Cx,
        mm: &Rc<Mm>,
        dst: Hva,
        pattern: u32,
    ) -> Result<(), Errno> {
        let _f = cx.func("UFFDIO_COPY");
        let dst = page_align_down(dst);
        mm.mmap_read_lock(cx).await;
        let Some(vma) = mm.vma_lookup(dst) else {
            mm.mmap_unlock(cx).await;
            return Err(ENOENT);
        };
        let Some(page) = mm.frames.alloc_pages(cx, 0, Owner::Anon, false).await else {
            mm.mmap_unlock(cx).await;
            return Err(ENOMEM);
        };
        mm.frames.fill(page, pattern);
        mm.ptl_lock_at(cx, dst).await;
        let r = if mm.pte(dst).is_some() {
            mm.frames.put_page(cx, page).await;
            world::emit!(cx, "{dst:#x} already mapped: -EEXIST");
            Err(EEXIST)
        } else {
            let pte = Pte {
                pfn: page,
                write: vma.flags().contains(VmFlags::VM_WRITE),
                special: false,
                protnone: false,
            };
            mm.set_pte(cx, dst, pte).await;
            Ok(())
        };
        mm.ptl_unlock(cx).await;
        mm.mmap_unlock(cx).await;
        if r.is_ok() {
            self.wake(cx, dst, dst + PAGE_SIZE).await;
        }
        r
    }
}

/// `handle_userfault(vmf, VM_UFFD_MISSING)`: SIGBUS when the fault may not drop the mmap
/// lock (no `FAULT_FLAG_ALLOW_RETRY`) or comes from kernel mode under
/// `UFFD_USER_MODE_ONLY`; `VM_FAULT_RETRY` without sleeping under `RETRY_NOWAIT`; otherwise
/// queue a message, drop the mmap lock, sleep until woken, and return `VM_FAULT_RETRY`.
pub async fn handle_userfault(cx: &Cx, vmf: &VmFaultArgs) -> VmFault {
    let _f = cx.func("handle_userfault");
    let Some(ctx) = vmf.vma.uffd() else {
        return VmFault::VM_FAULT_SIGBUS;
    };
    if ctx.user_mode_only && !vmf.flags.contains(FaultFlags::FAULT_FLAG_USER) {
        cx.emit_str("kernel-mode fault on a UFFD_USER_MODE_ONLY range: VM_FAULT_SIGBUS");
        return VmFault::VM_FAULT_SIGBUS;
    }
    if !vmf.flags.contains(FaultFlags::FAULT_FLAG_ALLOW_RETRY) {
        cx.emit_str("cannot drop mmap_lock (no ALLOW_RETRY): VM_FAULT_SIGBUS");
        return VmFault::VM_FAULT_SIGBUS;
    }
    if vmf.flags.contains(FaultFlags::FAULT_FLAG_RETRY_NOWAIT) {
        cx.emit_str("RETRY_NOWAIT: VM_FAULT_RETRY without waiting");
        return VmFault::VM_FAULT_RETRY;
    }
    let msg = UffdMsg {
        address: vmf.address,
        write: vmf.flags.contains(FaultFlags::FAULT_FLAG_WRITE),
    };
    cx.access(ctx.obj, Access::Write, "queue uffd_msg").await;
    audit::write(ctx.obj);
    let id = ctx.next_waiter.get();
    ctx.next_waiter.set(id + 1);
    ctx.pending.borrow_mut().push((id, msg));
    let seen = ctx.wakes.borrow().len();
    world::emit!(
        cx,
        "queued message for {:#x}; drop mmap_lock and sleep",
        vmf.address
    );
    vmf.mm.mmap_unlock(cx).await;
    let c = ctx.clone();
    let addr = vmf.address;
    cx.wait_until(ctx.obj, "userfaultfd wake-up", move || {
        audit::read(c.obj);
        c.wakes.borrow()[seen..]
            .iter()
            .any(|&(s, e)| s <= addr && addr < e)
    })
    .await;
    VmFault::VM_FAULT_RETRY
}
