//! The page-fault core: `handle_mm_fault` and `fixup_user_fault` (mm/memory.c, mm/gup.c),
//! plus the user-access fault path (`do_user_addr_fault`) that host threads and KVM's
//! instruction emulator (`__copy_to_user`) go through.

use super::frame::Owner;
use super::notifier::{NotifierRange, NotifyEvent};
use super::types::*;
use super::userfaultfd::handle_userfault;
use super::vma::{VmFaultArgs, Vma};
use super::{Mm, Pte};
use std::rc::Rc;
use world::{Access, Cx, FpSet};

/// `handle_mm_fault(vma, address, flags, regs)` (mm/memory.c, v6.18). Called with the mmap
/// lock held for read; returns with it dropped iff the result has `VM_FAULT_RETRY` or
/// `VM_FAULT_COMPLETED`.
pub async fn handle_mm_fault(
    cx: &Cx,
    mm: &Rc<Mm>,
    vma: &Rc<Vma>,
    address: Hva,
    flags: FaultFlags,
) -> VmFault {
    let _f = cx.func("handle_mm_fault");
    if vma.is_dead() {
        return cx
            .bug(format!(
                "use-after-free of vma {} in handle_mm_fault",
                vma.name
            ))
            .await;
    }
    let address = page_align_down(address);
    let vmf = VmFaultArgs {
        vma: vma.clone(),
        mm: mm.clone(),
        address,
        pgoff: vma.linear_pgoff(address),
        flags,
    };
    world::emit!(
        cx,
        "{address:#x} {} in {}",
        if flags.contains(FaultFlags::FAULT_FLAG_WRITE) {
            "write"
        } else {
            "read"
        },
        vma.name
    );
    // handle_pte_fault: a lockless look (`ptep_get`), then decide under the PTL.
    cx.access(
        mm.pte_obj(address),
        world::Access::Read,
        "handle_pte_fault: ptep_get",
    )
    .await;
    match mm.pte(address) {
        None if vma.is_anonymous() => do_anonymous_page(cx, &vmf).await,
        None => do_fault(cx, &vmf).await,
        Some(pte) if flags.contains(FaultFlags::FAULT_FLAG_WRITE) && !pte.write => {
            do_wp_page(cx, &vmf, pte).await
        }
        Some(_) => {
            cx.emit_str("pte present and sufficient: spurious fault");
            VmFault::empty()
        }
    }
}

/// `do_anonymous_page()`: the zero page for reads, a fresh page for writes; userfaultfd
/// MISSING registration hands the fault to the userspace handler.
async fn do_anonymous_page(cx: &Cx, vmf: &VmFaultArgs) -> VmFault {
    let _f = cx.func("do_anonymous_page");
    let mm = &vmf.mm;
    let write = vmf.flags.contains(FaultFlags::FAULT_FLAG_WRITE);
    if vmf.vma.flags().contains(VmFlags::VM_UFFD_MISSING) {
        return handle_userfault(cx, vmf).await;
    }
    if !write {
        mm.ptl_lock_at(cx, vmf.address).await;
        if mm.pte(vmf.address).is_none() {
            let pte = Pte {
                pfn: mm.frames.zero_pfn(),
                write: false,
                special: true,
                protnone: false,
            };
            mm.set_pte(cx, vmf.address, pte).await;
        }
        mm.ptl_unlock(cx).await;
        return VmFault::empty();
    }
    let Some(page) = mm.frames.alloc_pages(cx, 0, Owner::Anon, false).await else {
        return VmFault::VM_FAULT_OOM;
    };
    world::emit!(cx, "allocated {page}");
    mm.ptl_lock_at(cx, vmf.address).await;
    let ret = if mm.pte(vmf.address).is_some() {
        // Lost a race with another fault: release ours.
        mm.frames.put_page(cx, page).await;
        VmFault::empty()
    } else {
        let pte = Pte {
            pfn: page,
            write: vmf.vma.flags().contains(VmFlags::VM_WRITE),
            special: false,
            protnone: false,
        };
        mm.set_pte(cx, vmf.address, pte).await;
        VmFault::empty()
    };
    mm.ptl_unlock(cx).await;
    ret
}

/// `do_fault()` → `do_read_fault` / `do_cow_fault` / `do_shared_fault`.
async fn do_fault(cx: &Cx, vmf: &VmFaultArgs) -> VmFault {
    let _f = cx.func("do_fault");
    let Some(ops) = vmf.vma.ops.clone() else {
        return VmFault::VM_FAULT_SIGBUS;
    };
    let write = vmf.flags.contains(FaultFlags::FAULT_FLAG_WRITE);
    let shared = vmf.vma.flags().contains(VmFlags::VM_SHARED);
    let r = {
        let _f = cx.func("__do_fault");
        world::emit!(cx, "{}->fault(pgoff {:#x})", ops.name(), vmf.pgoff);
        ops.fault(cx, vmf).await
    };
    world::emit!(cx, "->fault returned {}", r.ret);
    if r.ret.intersects(
        VmFault::ERROR
            | VmFault::VM_FAULT_NOPAGE
            | VmFault::VM_FAULT_RETRY
            | VmFault::VM_FAULT_COMPLETED,
    ) {
        if let Some(p) = r.page {
            vmf.mm.frames.put_page(cx, p).await;
        }
        return r.ret;
    }
    let Some(page) = r.page else {
        return VmFault::VM_FAULT_SIGBUS;
    };
    if write && !shared {
        // do_cow_fault: copy the file page into a private anonymous page.
        let src = FpSet::one(vmf.mm.frames.data_obj(page), Access::Read);
        let Some(new) = vmf
            .mm
            .frames
            .alloc_pages_with(cx, src, 0, Owner::Anon)
            .await
        else {
            vmf.mm.frames.put_page(cx, page).await;
            return VmFault::VM_FAULT_OOM;
        };
        vmf.mm.frames.copy(page, new);
        world::emit!(cx, "COW: copied {page} to {new}");
        let ret = finish_fault(cx, vmf, new, true).await;
        vmf.mm.frames.put_page(cx, page).await;
        return ret;
    }
    finish_fault(
        cx,
        vmf,
        page,
        shared && vmf.vma.flags().contains(VmFlags::VM_WRITE),
    )
    .await
}

/// `finish_fault()`: map the page the handler returned (its reference becomes the mapping's).
async fn finish_fault(cx: &Cx, vmf: &VmFaultArgs, page: Pfn, writable: bool) -> VmFault {
    let mm = &vmf.mm;
    mm.ptl_lock_at(cx, vmf.address).await;
    if mm.pte(vmf.address).is_some() {
        mm.ptl_unlock(cx).await;
        mm.frames.put_page(cx, page).await;
        return VmFault::VM_FAULT_NOPAGE;
    }
    let pte = Pte {
        pfn: page,
        write: writable,
        special: false,
        protnone: false,
    };
    mm.set_pte(cx, vmf.address, pte).await;
    mm.ptl_unlock(cx).await;
    VmFault::empty()
}

/// `do_wp_page()`: a write to a present read-only PTE.
async fn do_wp_page(cx: &Cx, vmf: &VmFaultArgs, pte: Pte) -> VmFault {
    let _f = cx.func("do_wp_page");
    let mm = &vmf.mm;
    let vma = &vmf.vma;
    if !vma.flags().contains(VmFlags::VM_WRITE) {
        // Callers check permissions first; a write fault here would be SIGSEGV.
        return VmFault::VM_FAULT_SIGSEGV;
    }
    if vma.flags().contains(VmFlags::VM_SHARED) {
        if pte.special {
            // wp_pfn_shared: give the driver a say, then make the PTE writable.
            if let Some(ops) = vma.ops.clone() {
                world::emit!(cx, "wp_pfn_shared: {}->pfn_mkwrite", ops.name());
                let r = ops.pfn_mkwrite(cx, vmf).await;
                if r.intersects(VmFault::ERROR | VmFault::VM_FAULT_NOPAGE) {
                    return r;
                }
            }
        }
        return wp_page_reuse(cx, mm, vmf.address, pte.pfn).await;
    }
    // Private mapping: reuse an exclusive anonymous page, else copy.
    let exclusive_anon = !pte.special && {
        // wp_can_reuse_anon_folio: a load of the folio's flags and refcount.
        let mut fp = FpSet::one(mm.frames.obj(pte.pfn), Access::Read);
        fp.push(mm.frames.ref_obj(pte.pfn), Access::Read);
        cx.step_with(fp, "folio_ref_count").await;
        mm.frames.owner(pte.pfn) == Some(Owner::Anon) && mm.frames.refcount(pte.pfn) == 1
    };
    if exclusive_anon {
        return wp_page_reuse(cx, mm, vmf.address, pte.pfn).await;
    }
    let src = FpSet::one(mm.frames.data_obj(pte.pfn), Access::Read);
    let Some(new) = mm.frames.alloc_pages_with(cx, src, 0, Owner::Anon).await else {
        return VmFault::VM_FAULT_OOM;
    };
    mm.frames.copy(pte.pfn, new);
    world::emit!(cx, "wp_page_copy: {} -> {new}", pte.pfn);
    // wp_page_copy brackets the PTE switch with the notifier pair (MMU_NOTIFY_CLEAR).
    let range = NotifierRange {
        start: vmf.address,
        end: vmf.address + PAGE_SIZE,
        event: NotifyEvent::Clear,
    };
    mm.notify_start(cx, &range).await;
    mm.ptl_lock_at(cx, vmf.address).await;
    let ret = if mm.pte(vmf.address) != Some(pte) {
        mm.frames.put_page(cx, new).await;
        VmFault::empty()
    } else {
        // The notifier pair brackets the PTE switch (wp_page_copy does this).
        mm.set_pte(
            cx,
            vmf.address,
            Pte {
                pfn: new,
                write: true,
                special: false,
                protnone: false,
            },
        )
        .await;
        if !pte.special {
            mm.frames.put_page(cx, pte.pfn).await;
        }
        VmFault::empty()
    };
    mm.ptl_unlock(cx).await;
    mm.notify_end(cx, &range).await;
    ret
}

async fn wp_page_reuse(cx: &Cx, mm: &Mm, address: Hva, pfn: Pfn) -> VmFault {
    mm.ptl_lock_at(cx, address).await;
    if mm.pte(address).is_some_and(|p| p.pfn == pfn) {
        mm.modify_pte(cx, address, |p| p.write = true).await;
        world::emit!(cx, "wp_page_reuse: {address:#x} now writable");
    }
    mm.ptl_unlock(cx).await;
    VmFault::empty()
}

/// `vma_permits_fault()` (mm/gup.c).
pub fn vma_permits_fault(vma: &Vma, flags: FaultFlags) -> bool {
    let need = if flags.contains(FaultFlags::FAULT_FLAG_WRITE) {
        VmFlags::VM_WRITE
    } else {
        VmFlags::VM_READ
    };
    vma.flags().intersects(need)
}

/// The vma `fixup_user_fault` may fault in: -EFAULT if there is none at `address`
/// (`gup_vma_lookup`) or it does not permit the access (`vma_permits_fault`).
fn lookup_permitted(cx: &Cx, mm: &Mm, address: Hva, flags: FaultFlags) -> Result<Rc<Vma>, Errno> {
    let Some(vma) = mm.vma_lookup(address) else {
        world::emit!(cx, "no vma at {address:#x}: -EFAULT");
        return Err(EFAULT);
    };
    if !vma_permits_fault(&vma, flags) {
        let need = if flags.contains(FaultFlags::FAULT_FLAG_WRITE) {
            "VM_WRITE"
        } else {
            "VM_READ"
        };
        world::emit!(cx, "vma_permits_fault: {} lacks {need}: -EFAULT", vma.name);
        return Err(EFAULT);
    }
    Ok(vma)
}

/// `fixup_user_fault(mm, address, fault_flags, unlocked)` (mm/gup.c, v5.8+ incl. the v6.0
/// `VM_FAULT_COMPLETED` handling). Called and returns with the mmap lock held for read —
/// it **never** returns with the lock dropped; `*unlocked` says it was dropped meanwhile,
/// so any vma pointer the caller holds may be stale.
pub async fn fixup_user_fault(
    cx: &Cx,
    mm: &Rc<Mm>,
    address: Hva,
    mut flags: FaultFlags,
    unlocked: &mut bool,
) -> Result<(), Errno> {
    let _f = cx.func("fixup_user_fault");
    flags |= FaultFlags::FAULT_FLAG_ALLOW_RETRY | FaultFlags::FAULT_FLAG_KILLABLE;
    loop {
        let vma = lookup_permitted(cx, mm, address, flags)?;
        if flags.contains(FaultFlags::FAULT_FLAG_KILLABLE) && mm.fatal_signal.get() {
            cx.emit_str("fatal signal pending: -EINTR");
            return Err(EINTR);
        }
        let ret = handle_mm_fault(cx, mm, &vma, address, flags).await;
        if ret.contains(VmFault::VM_FAULT_COMPLETED) {
            mm.mmap_read_lock(cx).await;
            *unlocked = true;
            cx.emit_str("VM_FAULT_COMPLETED: relocked, *unlocked = true");
            return Ok(());
        }
        if ret.intersects(VmFault::ERROR) {
            let e = vm_fault_to_errno(ret, FollFlags::empty()).unwrap_or(EFAULT);
            world::emit!(cx, "{ret}: {e}");
            return Err(e);
        }
        if ret.contains(VmFault::VM_FAULT_RETRY) {
            mm.mmap_read_lock(cx).await;
            *unlocked = true;
            flags |= FaultFlags::FAULT_FLAG_TRIED;
            cx.emit_str("VM_FAULT_RETRY: relocked, *unlocked = true, retry");
            continue;
        }
        return Ok(());
    }
}

/// `fixup_user_fault(tsk, mm, address, fault_flags, unlocked)` as of v4.6–v5.6
/// (4a9e1cda2748): `ALLOW_RETRY` only (not `KILLABLE`), and after one `VM_FAULT_RETRY` it
/// retries *once* with `ALLOW_RETRY` cleared; a second retry falls through and returns 0.
pub async fn fixup_user_fault_v4_6(
    cx: &Cx,
    mm: &Rc<Mm>,
    address: Hva,
    mut flags: FaultFlags,
    unlocked: &mut bool,
) -> Result<(), Errno> {
    let _f = cx.func("fixup_user_fault");
    flags |= FaultFlags::FAULT_FLAG_ALLOW_RETRY;
    loop {
        // find_extend_vma() and the VM_READ/VM_WRITE check, as in the current form.
        let vma = lookup_permitted(cx, mm, address, flags)?;
        let ret = handle_mm_fault(cx, mm, &vma, address, flags).await;
        if ret.intersects(VmFault::ERROR) {
            let e = if ret.contains(VmFault::VM_FAULT_OOM) {
                ENOMEM
            } else if ret.contains(VmFault::VM_FAULT_HWPOISON) {
                Errno(133)
            } else {
                EFAULT
            };
            world::emit!(cx, "{ret}: {e}");
            return Err(e);
        }
        if ret.intersects(VmFault::VM_FAULT_RETRY | VmFault::VM_FAULT_COMPLETED) {
            mm.mmap_read_lock(cx).await;
            if !flags.contains(FaultFlags::FAULT_FLAG_TRIED) {
                *unlocked = true;
                flags = flags.without(FaultFlags::FAULT_FLAG_ALLOW_RETRY)
                    | FaultFlags::FAULT_FLAG_TRIED;
                cx.emit_str("VM_FAULT_RETRY: relocked, *unlocked = true, retry once");
                continue;
            }
        }
        return Ok(());
    }
}

/// A user-mode (host thread) or kernel-mode (`__copy_to_user` from KVM's emulator) access
/// to a user address, with the arch fault path (`do_user_addr_fault`) behind it. Returns the
/// value read (0 for writes), or `Err(EFAULT)` where the CPU access would SIGSEGV/SIGBUS (or
/// `copy_to_user` would return non-zero).
pub async fn user_access(
    cx: &Cx,
    mm: &Rc<Mm>,
    addr: Hva,
    size: u8,
    write: Option<u64>,
    user: bool,
) -> Result<u64, Errno> {
    let _f = cx.func(if user { "user access" } else { "copy_user" });
    let mut flags = FaultFlags::FAULT_FLAG_ALLOW_RETRY | FaultFlags::FAULT_FLAG_KILLABLE;
    if user {
        flags |= FaultFlags::FAULT_FLAG_USER;
    }
    if write.is_some() {
        flags |= FaultFlags::FAULT_FLAG_WRITE;
    }
    for _ in 0..64 {
        // The access itself: a TLB walk of the present PTE, atomic with the load/store.
        mm.walk_step(cx, addr, write.is_some(), "hardware page walk")
            .await;
        if let Some(pte) = mm.pte(addr) {
            if !pte.protnone && (write.is_none() || pte.write) {
                let off = addr % PAGE_SIZE;
                return match write {
                    Some(v) => {
                        mm.frames.write(pte.pfn, off, size, v);
                        world::emit!(cx, "store {v:#x} to {addr:#x} ({})", pte.pfn);
                        Ok(0)
                    }
                    None => {
                        let v = mm.frames.read(pte.pfn, off, size).unwrap_or(!0);
                        world::emit!(cx, "load {addr:#x} = {v:#x} ({})", pte.pfn);
                        Ok(v)
                    }
                };
            }
        }
        mm.mmap_read_lock(cx).await;
        let Some(vma) = mm.vma_lookup(addr) else {
            mm.mmap_unlock(cx).await;
            world::emit!(cx, "no vma at {addr:#x}: SIGSEGV");
            return Err(EFAULT);
        };
        if !vma_permits_fault(&vma, flags) {
            mm.mmap_unlock(cx).await;
            world::emit!(cx, "access_error in {}: SIGSEGV", vma.name);
            return Err(EFAULT);
        }
        let ret = handle_mm_fault(cx, mm, &vma, addr, flags).await;
        if ret.intersects(VmFault::VM_FAULT_RETRY | VmFault::VM_FAULT_COMPLETED) {
            flags |= FaultFlags::FAULT_FLAG_TRIED;
            continue;
        }
        mm.mmap_unlock(cx).await;
        if ret.intersects(VmFault::ERROR) {
            world::emit!(cx, "{ret}: SIGBUS/SIGSEGV");
            return Err(EFAULT);
        }
    }
    Err(EFAULT)
}
