//! Host threads of the VMM process and the device side: the syscalls and device operations a
//! scenario's `[[host]]` steps name.

use super::build::{Backend, Sys};
use crate::kvm::memslot_update::{kvm_set_memory_region, SlotRequest};
use crate::kvm::vcpu::Sequencer;
use crate::kvm::Kvm;
use crate::mm::fault::user_access;
use crate::mm::syscalls::{sys_madvise_dontneed, sys_mmap, sys_mprotect, sys_munmap};
use crate::mm::{Errno, Frames, Mm, MmapArgs, VmFlags, PAGE_SIZE};
use scenario::HostAction;
use std::rc::Rc;
use world::{Access, Cx};

/// What host threads need of the built system.
#[derive(Clone)]
pub(crate) struct HostCtx {
    mm: Rc<Mm>,
    frames: Rc<Frames>,
    kvm: Rc<Kvm>,
    mappings: Vec<super::build::MappingState>,
    seq: Rc<Sequencer>,
    running: Rc<super::build::Running>,
    results: Rc<std::cell::RefCell<Vec<Option<String>>>>,
}

impl HostCtx {
    pub(crate) fn new(sys: &Sys) -> Self {
        HostCtx {
            mm: sys.mm.clone(),
            frames: sys.frames.clone(),
            kvm: sys.kvm.clone(),
            mappings: sys.mappings.clone(),
            seq: sys.seq.clone(),
            running: sys.running.clone(),
            results: sys.host_results.clone(),
        }
    }
}

async fn act(cx: &Cx, h: &HostCtx, a: &HostAction) -> Result<String, Errno> {
    let Some(name) = a.mapping() else {
        let HostAction::DeleteMemslot { slot } = a else {
            unreachable!("only a deletion names no mapping")
        };
        let req = SlotRequest {
            id: *slot,
            base_gfn: 0,
            npages: 0,
            userspace_addr: 0,
            readonly: false,
        };
        kvm_set_memory_region(cx, &h.kvm, &req).await?;
        return Ok(format!("KVM_SET_USER_MEMORY_REGION: slot {slot} deleted"));
    };
    let m = h
        .mappings
        .iter()
        .find(|m| m.name == name)
        .expect("validated mapping");
    let page = |off: u64| m.base + off * PAGE_SIZE;
    Ok(match a {
        HostAction::Write {
            offset,
            size,
            value,
            ..
        } => {
            user_access(cx, &h.mm, m.base + offset, *size, Some(*value), true).await?;
            format!("store {value:#x} at {}+{offset:#x}", m.name)
        }
        HostAction::Read { offset, size, .. } => {
            let v = user_access(cx, &h.mm, m.base + offset, *size, None, true).await?;
            format!("load {}+{offset:#x} = {v:#x}", m.name)
        }
        HostAction::MadviseDontneed { offset, pages, .. } => {
            sys_madvise_dontneed(cx, &h.mm, page(*offset), pages * PAGE_SIZE).await?;
            "madvise(MADV_DONTNEED) done".into()
        }
        HostAction::Mprotect {
            offset,
            pages,
            read,
            write,
            ..
        } => {
            sys_mprotect(cx, &h.mm, page(*offset), pages * PAGE_SIZE, *read, *write).await?;
            "mprotect done".into()
        }
        HostAction::Munmap { offset, pages, .. } => {
            sys_munmap(cx, &h.mm, page(*offset), pages * PAGE_SIZE).await?;
            "munmap done".into()
        }
        HostAction::MmapAnon {
            offset,
            pages,
            fill,
            ..
        } => {
            let args = MmapArgs::anon(
                &format!("{} (new anon)", m.name),
                page(*offset),
                *pages,
                VmFlags::VM_READ | VmFlags::VM_WRITE,
            );
            sys_mmap(cx, &h.mm, args).await?;
            if let Some(f) = fill {
                for i in 0..*pages {
                    let a = page(offset + i);
                    user_access(cx, &h.mm, a, 4, Some(u64::from(*f)), true).await?;
                    h.mm.walk_step(cx, a, true, "memset").await;
                    if let Some(pte) = h.mm.pte(a) {
                        h.frames.fill(pte.pfn, *f);
                    }
                }
            }
            "mmap(MAP_FIXED) of fresh anon done".into()
        }
        HostAction::DeviceReset { .. } => {
            match &m.backend {
                Backend::Vgpu(d) => d.reset(cx).await,
                Backend::Vfio(d) => d.reset(cx).await,
                _ => unreachable!("validated: reset needs a device"),
            }
            "device reset done".into()
        }
        HostAction::Evict { .. } => {
            let Backend::Ttm(d) = &m.backend else {
                unreachable!("validated: evict needs ttm")
            };
            d.evict(cx).await;
            "buffer object evicted".into()
        }
        HostAction::SetMemslot {
            slot,
            gpa,
            offset,
            pages,
            readonly,
            ..
        } => {
            let req = SlotRequest {
                id: *slot,
                base_gfn: gpa >> crate::mm::PAGE_SHIFT,
                npages: *pages,
                userspace_addr: page(*offset),
                readonly: *readonly,
            };
            kvm_set_memory_region(cx, &h.kvm, &req).await?;
            format!("KVM_SET_USER_MEMORY_REGION: slot {slot} at {gpa:#x} done")
        }
        HostAction::DeleteMemslot { .. } => unreachable!("handled above"),
    })
}

/// One host thread: its steps in order, each waiting for the guest point it is sequenced
/// after.
pub(crate) async fn run_host_thread(cx: Cx, h: HostCtx, steps: Vec<(usize, HostAction)>) {
    for (j, a) in steps {
        // A step sequenced after a guest access waits for the guest to reach it.
        if h.seq.is_sequenced(j) {
            let s = h.seq.clone();
            cx.wait_until(h.seq.obj, "guest reaches the step's point", move || {
                s.step_ready(j)
            })
            .await;
        }
        let r = act(&cx, &h, &a).await;
        h.results.borrow_mut()[j] = Some(match &r {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string().trim_start_matches('-').to_string(),
        });
        match r {
            Ok(t) => cx.emit(t),
            Err(e) => world::emit!(cx, "{a:?} failed: {e}"),
        }
        // Only a vCPU waiting for this step cares that it is done.
        if h.seq.is_sequenced(j) {
            cx.access(h.seq.obj, Access::Write, "step done").await;
            h.seq.step_done(j);
        }
    }
    h.running.finished(&cx).await;
}
