//! The drivers' real behaviour, shown through the mm primitives KVM and the VMM use on
//! them: when PTEs appear, what pfn and permissions they carry, what `fixup_user_fault`,
//! GUP and `follow_pfnmap` make of them, and what the device actions tear down.

use model::drivers::*;
use model::mm::fault::{fixup_user_fault, user_access};
use model::mm::follow::{follow_pfnmap_end, follow_pfnmap_start, PfnmapArgs};
use model::mm::gup::{get_user_pages_unlocked, unpin_user_page};
use model::mm::syscalls::sys_madvise_dontneed;
use model::mm::*;
use std::cell::{Cell, RefCell};
use std::ops::ControlFlow;
use std::rc::Rc;
use world::*;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

const BASE: Hva = 0x7f00_0000_0000;

fn setup(nr_ram: u64) -> (World, Rc<Frames>, Rc<Mm>) {
    let mut w = World::new();
    let frames = Rc::new(Frames::new(&mut w, nr_ram));
    let mm = Mm::new(&mut w, frames.clone());
    (w, frames, mm)
}

fn run(w: &mut World, sched: &mut dyn Scheduler) -> RunResult {
    w.run(sched, &mut || ControlFlow::Continue(()))
}

fn run_ok(w: &mut World, sched: &mut dyn Scheduler) -> RunResult {
    let r = run(w, sched);
    assert_eq!(r.status, Status::Completed, "trace:\n{}", r.trace);
    r
}

fn traced(r: &RunResult, needle: &str) -> bool {
    r.trace.entries.iter().any(|e| e.text.contains(needle))
}

/// Records every notifier callback.
#[derive(Default)]
struct RecNotifier {
    events: RefCell<Vec<(&'static str, NotifierRange)>>,
}

impl MmuNotifier for RecNotifier {
    fn invalidate_range_start<'a>(
        &'a self,
        _cx: &'a Cx,
        range: &'a NotifierRange,
    ) -> LocalBoxFuture<'a, ()> {
        self.events.borrow_mut().push(("start", *range));
        Box::pin(async {})
    }
    fn invalidate_range_end<'a>(
        &'a self,
        _cx: &'a Cx,
        range: &'a NotifierRange,
    ) -> LocalBoxFuture<'a, ()> {
        self.events.borrow_mut().push(("end", *range));
        Box::pin(async {})
    }
}

fn notifier(mm: &Rc<Mm>) -> Rc<RecNotifier> {
    let n = Rc::new(RecNotifier::default());
    mm.register_notifier(n.clone());
    n
}

/// `fixup_user_fault` under the mmap read lock, as `hva_to_pfn_remapped` calls it:
/// returns its result and `*unlocked`.
async fn fixup(cx: &Cx, mm: &Rc<Mm>, addr: Hva, write: bool) -> (Result<(), Errno>, bool) {
    let flags = if write {
        FaultFlags::FAULT_FLAG_WRITE
    } else {
        FaultFlags::empty()
    };
    mm.mmap_read_lock(cx).await;
    let mut unlocked = false;
    let r = fixup_user_fault(cx, mm, addr, flags, &mut unlocked).await;
    mm.mmap_unlock(cx).await;
    (r, unlocked)
}

/// The v6.12+ `hva_to_pfn_remapped` shape (without the KVM parts): `follow_pfnmap_start`,
/// else `fixup_user_fault` (retrying the lookup if it dropped the lock) and follow again.
/// Returns the walk result and whether the mmap lock was ever dropped.
async fn remapped(
    cx: &Cx,
    mm: &Rc<Mm>,
    addr: Hva,
    write: bool,
) -> (Result<PfnmapArgs, Errno>, bool) {
    let flags = if write {
        FaultFlags::FAULT_FLAG_WRITE
    } else {
        FaultFlags::empty()
    };
    let mut dropped = false;
    mm.mmap_read_lock(cx).await;
    let r = loop {
        let Some(vma) = mm.vma_lookup(addr) else {
            break Err(EFAULT);
        };
        if let Ok(a) = follow_pfnmap_start(cx, &vma, addr).await {
            follow_pfnmap_end(cx, &vma).await;
            break Ok(a);
        }
        let mut unlocked = false;
        let r = fixup_user_fault(cx, mm, addr, flags, &mut unlocked).await;
        if unlocked {
            dropped = true;
            continue;
        }
        if let Err(e) = r {
            break Err(e);
        }
        match follow_pfnmap_start(cx, &vma, addr).await {
            Ok(a) => {
                follow_pfnmap_end(cx, &vma).await;
                break Ok(a);
            }
            Err(e) => break Err(e),
        }
    };
    mm.mmap_unlock(cx).await;
    (r, dropped)
}

type Slot<T> = Rc<RefCell<Option<T>>>;

fn slot<T>() -> Slot<T> {
    Rc::new(RefCell::new(None))
}

fn take<T>(s: &Slot<T>) -> T {
    s.borrow_mut().take().expect("actor stored a result")
}

// ---------------------------------------------------------------------------------------
// vgpu_bar
// ---------------------------------------------------------------------------------------

#[test]
fn vgpu_vma_has_cookie_pgoff_real_flags_and_no_ptes() {
    let (mut w, frames, mm) = setup(64);
    let bar0 = VgpuBar::new(&mut w, &frames, &mm, VgpuConfig::default());
    let v0 = bar0.mmap(BASE).unwrap();
    assert_eq!(
        v0.pgoff(),
        0,
        "BAR0 cookie is 0: the pre-4.8 formula gives pfn = page index"
    );
    assert_eq!(v0.flags(), VgpuBar::vm_flags());
    assert!(v0.flags().contains(
        VmFlags::VM_IO | VmFlags::VM_PFNMAP | VmFlags::VM_SHARED | VmFlags::VM_DONTEXPAND
    ));
    assert!(v0.file.is_some());
    let bar2 = VgpuBar::new(
        &mut w,
        &frames,
        &mm,
        VgpuConfig {
            index: 2,
            ..Default::default()
        },
    );
    let v2 = bar2.mmap(BASE + 0x10_0000).unwrap();
    assert_eq!(v2.pgoff(), 2 << 28);
    assert_eq!(v2.pgoff(), (2u64 << 40) >> PAGE_SHIFT);
    assert!(
        mm.ptes_in(0, u64::MAX).is_empty(),
        "no PTE before first touch"
    );
    // B0's formula pfn = page + vm_pgoff: for BAR0 a low, ordinary RAM pfn
    // (kvm_is_reserved_pfn false: BUG_ON); for BAR2 a pfn with nothing behind it.
    let b0 = Pfn(1 + v0.pgoff());
    assert!(frames.pfn_valid(b0) && !frames.frame(b0).unwrap().reserved);
    let b2 = Pfn(1 + v2.pgoff());
    assert!(!frames.pfn_valid(b2) && !frames.is_io(b2));
}

#[test]
fn vgpu_fixup_maps_refcounted_nonreserved_page_and_records_first_access_once() {
    let (mut w, frames, mm) = setup(64);
    let bar = VgpuBar::new(&mut w, &frames, &mm, VgpuConfig::default());
    let vma = bar.mmap(BASE).unwrap();
    let addr = vma.start + PAGE_SIZE;
    let first = slot();
    let res = slot();
    let (m, f1, r1) = (mm.clone(), first.clone(), res.clone());
    w.spawn("vcpu0", move |cx| async move {
        // Nothing there yet: the walker fails, as KVM's first follow_pfn does.
        m.mmap_read_lock(&cx).await;
        let v = m.vma_lookup(addr).unwrap();
        *f1.borrow_mut() = Some(follow_pfnmap_start(&cx, &v, addr).await.err());
        m.mmap_unlock(&cx).await;
        *r1.borrow_mut() = Some(remapped(&cx, &m, addr, true).await);
        // The VMM touching the page again does not fault.
        user_access(&cx, &m, addr + 8, 4, None, true).await.unwrap();
    });
    let r = run_ok(&mut w, &mut FirstEnabled);
    assert_eq!(take(&first), Some(EINVAL));
    let (walk, dropped) = take(&res);
    let a = walk.unwrap();
    assert!(!dropped);
    assert!(a.special && a.writable);
    assert_eq!(Some(a.pfn), bar.backing(1));
    assert!(frames.pfn_valid(a.pfn));
    let f = frames.frame(a.pfn).unwrap();
    assert_eq!(f.owner, Some(Owner::Driver("vgpu".into())));
    assert_eq!(f.refcount, 1, "the driver's reference only");
    assert!(!f.reserved, "ordinary RAM: kvm_is_reserved_pfn() is false");
    assert_eq!(frames.read(a.pfn, 8, 4), Some(u64::from(0x7600_0001u32)));
    assert!(traced(
        &r,
        "WARNING: vm_flags_set() without mmap_lock held for write"
    ));
    let (step, write) = bar.first_access(1).unwrap();
    assert!(write && step > 0);
    assert_eq!(bar.accesses.count(1), 1, "first access trapped once");
    assert_eq!(bar.first_access(0), None);
    assert_eq!(
        mm.ptes_in(vma.start, vma.end).len(),
        1,
        "only the touched page is mapped"
    );
}

#[test]
fn vgpu_reset_zaps_through_notifiers_and_frees_the_pages() {
    let (mut w, frames, mm) = setup(64);
    let n = notifier(&mm);
    let bar = VgpuBar::new(&mut w, &frames, &mm, VgpuConfig::default());
    let vma = bar.mmap(BASE).unwrap();
    let (m, b) = (mm.clone(), bar.clone());
    let (start, end) = (vma.start, vma.end);
    w.spawn("host", move |cx| async move {
        assert_eq!(fixup(&cx, &m, start, false).await, (Ok(()), false));
        assert_eq!(
            fixup(&cx, &m, start + 2 * PAGE_SIZE, true).await,
            (Ok(()), false)
        );
        b.reset(&cx).await;
    });
    run_ok(&mut w, &mut FirstEnabled);
    let ev = n.events.borrow().clone();
    assert_eq!(ev.len(), 2);
    assert_eq!(
        ev[0],
        (
            "start",
            NotifierRange {
                start,
                end,
                event: NotifyEvent::Clear
            }
        )
    );
    assert_eq!(ev[1].0, "end");
    assert!(mm.ptes_in(start, end).is_empty());
    let freed = bar.freed();
    assert_eq!(freed.len(), 2);
    for p in &freed {
        assert!(frames.is_free(*p), "{p} freed by the reset");
    }
    assert_eq!(bar.backing(0), None);
    // LIFO allocator: the next allocation gets a freed BAR page back.
    let next = frames.alloc(0, Owner::Anon, false).unwrap();
    assert!(freed.contains(&next));
}

#[test]
fn vgpu_handler_that_drops_mmap_lock_sets_unlocked() {
    let (mut w, frames, mm) = setup(64);
    let cfg = VgpuConfig {
        retry_first_fault: true,
        ..Default::default()
    };
    let bar = VgpuBar::new(&mut w, &frames, &mm, cfg);
    let vma = bar.mmap(BASE).unwrap();
    let addr = vma.start + 3 * PAGE_SIZE;
    let res = slot();
    let walk = slot();
    let (m, r1, w1) = (mm.clone(), res.clone(), walk.clone());
    w.spawn("vcpu0", move |cx| async move {
        *r1.borrow_mut() = Some(fixup(&cx, &m, addr, false).await);
        *w1.borrow_mut() = Some(remapped(&cx, &m, addr, false).await);
    });
    let r = run_ok(&mut w, &mut FirstEnabled);
    assert_eq!(
        take(&res),
        (Ok(()), true),
        "VM_FAULT_RETRY: fixup relocked and reported *unlocked"
    );
    assert!(traced(&r, "drop mmap_lock"));
    let (a, dropped) = take(&walk);
    assert_eq!(a.unwrap().pfn, bar.backing(3).unwrap());
    assert!(!dropped, "already mapped: no second fault");
    assert_eq!(
        bar.accesses.count(3),
        1,
        "the retried attempt is the same access"
    );
}

fn vgpu_two_vcpus_same_page(racy: bool) -> (RunResult, Rc<Mm>, Rc<VgpuBar>) {
    vgpu_two_vcpus_same_page_with(racy, &mut RoundRobin)
}

fn vgpu_two_vcpus_same_page_with(
    racy: bool,
    sched: &mut dyn Scheduler,
) -> (RunResult, Rc<Mm>, Rc<VgpuBar>) {
    let (mut w, frames, mm) = setup(64);
    let bar = VgpuBar::new(
        &mut w,
        &frames,
        &mm,
        VgpuConfig {
            racy_remap: racy,
            ..Default::default()
        },
    );
    let vma = bar.mmap(BASE).unwrap();
    for i in 0..2 {
        let m = mm.clone();
        let addr = vma.start;
        w.spawn(format!("vcpu{i}"), move |cx| async move {
            let (r, _) = fixup(&cx, &m, addr, false).await;
            r.unwrap();
        });
    }
    let r = run(&mut w, sched);
    (r, mm, bar)
}

#[test]
fn vgpu_concurrent_faults_on_one_page() {
    let (r, mm, bar) = vgpu_two_vcpus_same_page(false);
    assert_eq!(r.status, Status::Completed, "{}", r.trace);
    assert_eq!(bar.accesses.count(0), 2, "both vCPUs reached the handler");
    assert!(traced(&r, "already mapped"));
    assert_eq!(mm.pte(BASE).unwrap().pfn, bar.backing(0).unwrap());
    // Without the driver's own bookkeeping, the second remap_pfn_range hits a populated
    // PTE: the v5.11 vfio BUG.
    let (r, _, _) = vgpu_two_vcpus_same_page(true);
    match r.status {
        Status::Bug { what, .. } => assert!(what.contains("remap_pte_range"), "{what}"),
        s => panic!("expected BUG, got {s:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// vfio_bar
// ---------------------------------------------------------------------------------------

#[test]
fn vfio_lazy_bar_maps_mmio_that_is_not_pfn_valid() {
    let (mut w, frames, mm) = setup(64);
    let cfg = VfioBarConfig {
        index: 1,
        bar_pfn: VfioBarConfig::default_bar_pfn(1),
        ..Default::default()
    };
    let bar = VfioBar::new(&mut w, &frames, &mm, cfg);
    let vma = bar.mmap(BASE).unwrap();
    assert_eq!(vma.pgoff(), 1 << 28, "region cookie, not the BAR pfn");
    assert_ne!(vma.pgoff(), bar.cfg.bar_pfn.0);
    assert!(mm.ptes_in(vma.start, vma.end).is_empty());
    let res = slot();
    let (m, r1) = (mm.clone(), res.clone());
    let addr = vma.start + 2 * PAGE_SIZE;
    w.spawn("vcpu0", move |cx| async move {
        *r1.borrow_mut() = Some(remapped(&cx, &m, addr, true).await);
    });
    run_ok(&mut w, &mut FirstEnabled);
    let a = take(&res).0.unwrap();
    assert_eq!(a.pfn, bar.pfn_of(2));
    assert!(!frames.pfn_valid(a.pfn) && frames.is_io(a.pfn));
    assert!(a.special && a.writable);
    assert_eq!(frames.read(a.pfn, 0, 4), Some(u64::from(0xba5e_0000u32)));
    assert_eq!(
        mm.ptes_in(vma.start, vma.end).len(),
        1,
        "one page per fault"
    );
}

#[test]
fn vfio_concurrent_faults_both_succeed() {
    let (mut w, frames, mm) = setup(64);
    let bar = VfioBar::new(&mut w, &frames, &mm, VfioBarConfig::default());
    let vma = bar.mmap(BASE).unwrap();
    let results = Rc::new(RefCell::new(Vec::new()));
    for i in 0..2 {
        let (m, res) = (mm.clone(), results.clone());
        let addr = vma.start + PAGE_SIZE;
        w.spawn(format!("vcpu{i}"), move |cx| async move {
            let r = remapped(&cx, &m, addr, false).await;
            res.borrow_mut().push(r);
        });
    }
    let r = run_ok(&mut w, &mut RoundRobin);
    let results = results.borrow();
    assert_eq!(results.len(), 2);
    for (a, _) in results.iter() {
        assert_eq!(a.unwrap().pfn, bar.pfn_of(1));
    }
    assert!(
        traced(&r, "already maps"),
        "the loser found the PTE present: VM_FAULT_NOPAGE\n{}",
        r.trace
    );
}

#[test]
fn vfio_disabled_memory_zaps_and_sigbuses_until_enabled() {
    let (mut w, frames, mm) = setup(64);
    let n = notifier(&mm);
    let bar = VfioBar::new(&mut w, &frames, &mm, VfioBarConfig::default());
    let vma = bar.mmap(BASE).unwrap();
    let out = Rc::new(RefCell::new(Vec::new()));
    let (m, b, o) = (mm.clone(), bar.clone(), out.clone());
    let addr = vma.start;
    w.spawn("vmm", move |cx| async move {
        let r = fixup(&cx, &m, addr, false).await.0;
        o.borrow_mut().push(r);
        b.disable_memory(&cx).await;
        o.borrow_mut().push(Ok(()).and(if m.pte(addr).is_none() {
            Ok(())
        } else {
            Err(EBUSY)
        }));
        let r = fixup(&cx, &m, addr, false).await.0;
        o.borrow_mut().push(r);
        b.enable_memory(&cx).await;
        let r = fixup(&cx, &m, addr, false).await.0;
        o.borrow_mut().push(r);
        b.reset(&cx).await;
    });
    run_ok(&mut w, &mut FirstEnabled);
    assert_eq!(*out.borrow(), vec![Ok(()), Ok(()), Err(EFAULT), Ok(())]);
    let ev = n.events.borrow();
    assert_eq!(ev.len(), 4, "disable and reset each bracket a zap");
    assert!(ev
        .iter()
        .all(|(_, r)| r.event == NotifyEvent::Clear && r.start == vma.start && r.end == vma.end));
    assert!(mm.ptes_in(vma.start, vma.end).is_empty(), "reset zapped");
    assert_eq!(bar.resets(), 1);
    assert!(bar.memory_enabled());
}

#[test]
fn vfio_eager_legacy_layout_satisfies_the_pre_4_8_formula() {
    let (mut w, frames, mm) = setup(64);
    let cfg = VfioBarConfig {
        eager_legacy: true,
        ..Default::default()
    };
    let bar = VfioBar::new(&mut w, &frames, &mm, cfg.clone());
    let vma = bar.mmap(BASE).unwrap();
    assert_eq!(vma.pgoff(), cfg.bar_pfn.0);
    for i in 0..cfg.pages {
        let a = vma.start + i * PAGE_SIZE;
        let pte = mm.pte(a).expect("eagerly mapped");
        // B0: pfn = ((addr - vm_start) >> PAGE_SHIFT) + vm_pgoff.
        assert_eq!(pte.pfn.0, ((a - vma.start) >> PAGE_SHIFT) + vma.pgoff());
        assert!(pte.special && pte.write);
    }
    // The same from an actor: remap_pfn_range under the write lock, no warning; a legacy
    // disable does not zap (CVE-2020-12888).
    let bar2 = VfioBar::new(
        &mut w,
        &frames,
        &mm,
        VfioBarConfig {
            index: 1,
            bar_pfn: VfioBarConfig::default_bar_pfn(1),
            eager_legacy: true,
            ..Default::default()
        },
    );
    let (b2, start2) = (bar2.clone(), BASE + 0x100_0000);
    w.spawn("qemu", move |cx| async move {
        let v = b2.mmap_in(&cx, start2).await.unwrap();
        assert_eq!(v.pgoff(), b2.cfg.bar_pfn.0);
        b2.disable_memory(&cx).await;
    });
    let r = run_ok(&mut w, &mut FirstEnabled);
    assert!(!traced(&r, "WARNING"));
    assert_eq!(
        mm.ptes_in(start2, start2 + 4 * PAGE_SIZE).len(),
        4,
        "still mapped after disable"
    );
    assert!(!bar2.memory_enabled());
}

#[test]
fn vfio_whole_vma_insert_maps_everything_on_first_fault() {
    let (mut w, frames, mm) = setup(64);
    let bar = VfioBar::new(
        &mut w,
        &frames,
        &mm,
        VfioBarConfig {
            whole_vma: true,
            ..Default::default()
        },
    );
    let vma = bar.mmap(BASE).unwrap();
    let m = mm.clone();
    let addr = vma.start + 3 * PAGE_SIZE;
    w.spawn("vcpu0", move |cx| async move {
        assert_eq!(fixup(&cx, &m, addr, false).await, (Ok(()), false));
    });
    run_ok(&mut w, &mut FirstEnabled);
    let ptes = mm.ptes_in(vma.start, vma.end);
    assert_eq!(ptes.len(), 4);
    for (i, (_, p)) in ptes.iter().enumerate() {
        assert_eq!(p.pfn, bar.pfn_of(i as u64));
    }
}

// ---------------------------------------------------------------------------------------
// vvar
// ---------------------------------------------------------------------------------------

#[test]
fn vvar_vma_is_private_readonly_pfnmap_but_not_cow() {
    let (_w, frames, mm) = setup(64);
    let vvar = Vvar::new(&frames, &mm).unwrap();
    let vma = vvar.mmap(BASE).unwrap();
    let f = vma.flags();
    assert_eq!(
        f,
        VmFlags::VM_READ
            | VmFlags::VM_MAYREAD
            | VmFlags::VM_IO
            | VmFlags::VM_DONTDUMP
            | VmFlags::VM_PFNMAP
            | VmFlags::VM_DONTEXPAND
    );
    assert!(!f.contains(VmFlags::VM_SHARED) && !f.contains(VmFlags::VM_MAYWRITE));
    assert!(
        !vma.is_cow_mapping(),
        "no VM_MAYWRITE: vmf_insert_pfn must not BUG"
    );
    assert_eq!(vma.end - vma.start, 4 * PAGE_SIZE);
    assert!(mm.ptes_in(vma.start, vma.end).is_empty());
    let t = frames.frame(vvar.time_pfn()).unwrap();
    assert_eq!(t.owner, Some(Owner::Kernel("vdso time".into())));
    assert!(t.reserved);
    assert_eq!(t.refcount, 1);
    assert_eq!(
        frames.read(vvar.time_pfn(), 4, 4),
        Some(1),
        "clock_mode word, as on the real host"
    );
    assert!(vvar.time_page_intact());
}

#[test]
fn vvar_faults_readonly_special_ptes_and_sigbus_holes() {
    let (mut w, frames, mm) = setup(64);
    let vvar = Vvar::new(&frames, &mm).unwrap();
    let vma = vvar.mmap(BASE).unwrap();
    let vclock = vvar.mmap_vclock(BASE + 4 * PAGE_SIZE).unwrap();
    let out = Rc::new(RefCell::new(Vec::new()));
    let (m, o, v) = (mm.clone(), out.clone(), vvar.clone());
    let (s, cs) = (vma.start, vclock.start);
    w.spawn("vcpu0", move |cx| async move {
        let push = |x| o.borrow_mut().push(x);
        push(remapped(&cx, &m, s, false).await.0); // page 0: time page
        push(remapped(&cx, &m, s + PAGE_SIZE, false).await.0); // page 1: SIGBUS
        push(remapped(&cx, &m, s + 2 * PAGE_SIZE, false).await.0); // page 2: getrandom
        push(remapped(&cx, &m, s + 3 * PAGE_SIZE, false).await.0); // page 3: SIGBUS
                                                                   // A write: with page 0 present the walker reports it read-only (KVM: RO_FAULT) …
        push(remapped(&cx, &m, s, true).await.0);
        push(remapped(&cx, &m, cs, false).await.0); // vclock page 0: pvclock
        push(remapped(&cx, &m, cs + PAGE_SIZE, false).await.0); // vclock page 1
                                                                // … and a write fixup is refused by vma_permits_fault.
        let (r, _) = fixup(&cx, &m, s, true).await;
        push(r.map(|_| PfnmapArgs {
            pfn: Pfn(0),
            writable: true,
            special: true,
        }));
        v.tick(&cx).await;
    });
    let r = run_ok(&mut w, &mut FirstEnabled);
    let out = out.borrow();
    let p0 = out[0].unwrap();
    assert_eq!(
        (p0.pfn, p0.writable, p0.special),
        (vvar.time_pfn(), false, true)
    );
    assert_eq!(out[1], Err(EFAULT));
    assert_eq!(out[2].unwrap().pfn, vvar.rng_pfn());
    assert_eq!(out[3], Err(EFAULT));
    assert!(
        !out[4].unwrap().writable,
        "present RO PTE: KVM returns RO_FAULT"
    );
    assert_eq!(Some(out[5].unwrap().pfn), vvar.pvclock_pfn());
    assert_eq!(out[6], Err(EFAULT));
    assert_eq!(out[7], Err(EFAULT));
    assert!(traced(&r, "vma_permits_fault"));
    assert!(traced(&r, "not in a time namespace"));
    assert_eq!(mm.ptes_in(vma.start, vma.end).len(), 2);
    assert!(vvar.time_page_intact());
    assert_eq!(vvar.seq(), 4);
}

// ---------------------------------------------------------------------------------------
// usbfs
// ---------------------------------------------------------------------------------------

#[test]
fn usbfs_buffer_tail_has_refcount_zero_and_is_mapped() {
    let (mut w, frames, mm) = setup(64);
    let usb = Usbfs::new(&frames, &mm);
    let vma = usb.mmap(BASE, 2, false).unwrap();
    assert_eq!(usb.order(), Some(1));
    let head = usb.pfn_of(0).unwrap();
    let tail = usb.pfn_of(1).unwrap();
    assert_eq!(frames.refcount(head), 1);
    assert_eq!(frames.refcount(tail), 0);
    assert_eq!(
        frames.frame(tail).unwrap().shape,
        Shape::HighOrderTail { head }
    );
    assert!(!frames.frame(tail).unwrap().reserved && frames.pfn_valid(tail));
    assert!(vma
        .flags()
        .contains(VmFlags::VM_IO | VmFlags::VM_PFNMAP | VmFlags::VM_SHARED));
    assert!(!vma.flags().contains(VmFlags::VM_WRITE) && vma.flags().contains(VmFlags::VM_MAYWRITE));
    assert_eq!(vma.pgoff(), 0);
    for (i, p) in [head, tail].iter().enumerate() {
        let pte = mm.pte(vma.start + i as u64 * PAGE_SIZE).unwrap();
        assert_eq!(
            (pte.pfn, pte.special, pte.write),
            (*p, true, false),
            "PROT_READ: read-only PTEs"
        );
    }
    let out = Rc::new(RefCell::new(Vec::new()));
    let (m, o) = (mm.clone(), out.clone());
    let a1 = vma.start + PAGE_SIZE;
    w.spawn("vcpu0", move |cx| async move {
        // GUP refuses VM_IO; the remapped walk finds the tail.
        let g = get_user_pages_unlocked(&cx, &m, a1, FollFlags::FOLL_WRITE).await;
        o.borrow_mut().push(g.map(|_| ()));
        let (r, _) = remapped(&cx, &m, a1, false).await;
        o.borrow_mut().push(r.map(|a| assert_eq!(a.pfn, tail)));
    });
    run_ok(&mut w, &mut FirstEnabled);
    assert_eq!(*out.borrow(), vec![Err(EFAULT), Ok(())]);
}

#[test]
fn usbfs_close_frees_the_whole_buffer() {
    let (mut w, frames, mm) = setup(64);
    let usb = Usbfs::new(&frames, &mm);
    let u = usb.clone();
    let done = Rc::new(Cell::new(None));
    let d = done.clone();
    w.spawn("qemu", move |cx| async move {
        let v = u.mmap_in(&cx, BASE, 2, true).await.unwrap();
        let pfns = (u.pfn_of(0).unwrap(), u.pfn_of(1).unwrap());
        assert!(v
            .flags()
            .contains(VmFlags::VM_IO | VmFlags::VM_PFNMAP | VmFlags::VM_WRITE));
        d.set(Some(pfns));
        u.close(&cx).await.unwrap();
    });
    let r = run_ok(&mut w, &mut FirstEnabled);
    assert!(!traced(&r, "WARNING"), "mmap_region holds the write lock");
    let (h, t) = done.get().unwrap();
    assert!(frames.is_free(h) && frames.is_free(t));
    assert!(mm.vmas().is_empty());
    assert!(frames.anomalies().is_empty());
}

#[test]
fn usbfs_tail_get_put_frees_a_page_still_mapped() {
    // The CVE-2021-22543 sequence on this layout: a get (0 → 1) and put (1 → 0) on the tail
    // frees it while usbfs still maps it.
    let (mut w, frames, mm) = setup(64);
    let usb = Usbfs::new(&frames, &mm);
    let vma = usb.mmap(BASE, 2, false).unwrap();
    let tail = usb.pfn_of(1).unwrap();
    let f = frames.clone();
    w.spawn("kvm", move |cx| async move {
        f.get_page(&cx, tail).await;
        f.put_page(&cx, tail).await;
    });
    run_ok(&mut w, &mut FirstEnabled);
    assert!(frames.is_free(tail));
    assert_eq!(
        mm.pte(vma.start + PAGE_SIZE).unwrap().pfn,
        tail,
        "still mapped by usbfs"
    );
    assert_eq!(
        frames.anomalies().len(),
        1,
        "get_page on refcount 0 recorded"
    );
}

// ---------------------------------------------------------------------------------------
// ttm
// ---------------------------------------------------------------------------------------

#[test]
fn ttm_bo_is_noncompound_order2_behind_fake_offset() {
    let (mut w, frames, mm) = setup(64);
    let bo = Ttm::new(&mut w, &frames, &mm, TtmConfig::default()).unwrap();
    let vma = bo.mmap(BASE).unwrap();
    assert_eq!(vma.pgoff(), model::drivers::ttm::DRM_FILE_PAGE_OFFSET_START);
    assert_eq!(vma.flags(), Ttm::vm_flags());
    assert!(mm.ptes_in(vma.start, vma.end).is_empty());
    let pfns = bo.pfns();
    assert_eq!(pfns.len(), 8);
    for (i, p) in pfns.iter().enumerate() {
        let f = frames.frame(*p).unwrap();
        assert_eq!(f.owner, Some(Owner::Driver("ttm".into())));
        assert_eq!(
            f.refcount,
            i64::from(i % 4 == 0),
            "tails of a non-compound block have refcount 0"
        );
        assert!(!f.reserved);
    }
}

#[test]
fn ttm_fault_prefaults_and_evict_frees_pages_that_get_reused() {
    let (mut w, frames, mm) = setup(64);
    let n = notifier(&mm);
    let cfg = TtmConfig {
        pages: 8,
        prefault: 3,
        ..Default::default()
    };
    let bo = Ttm::new(&mut w, &frames, &mm, cfg).unwrap();
    let vma = bo.mmap(BASE).unwrap();
    let old = bo.pfns();
    let gens: Vec<u32> = old.iter().map(|p| frames.generation(*p)).collect();
    let (m, b, f, o) = (mm.clone(), bo.clone(), frames.clone(), old.clone());
    let reused = slot();
    let r1 = reused.clone();
    let (start, end) = (vma.start, vma.end);
    w.spawn("host", move |cx| async move {
        assert_eq!(
            fixup(&cx, &m, start + PAGE_SIZE, true).await,
            (Ok(()), false)
        );
        assert_eq!(m.ptes_in(start, end).len(), 3, "prefault: pages 1..=3");
        user_access(&cx, &m, start + PAGE_SIZE, 4, Some(0xc0ffee), true)
            .await
            .unwrap();
        b.evict(&cx).await;
        assert!(m.ptes_in(start, end).is_empty());
        assert!(o.iter().all(|p| f.is_free(*p)), "evict freed every page");
        // The next allocation reuses a freed BO page.
        *r1.borrow_mut() = Some(f.alloc(0, Owner::Anon, false).unwrap());
        // The next fault repopulates with a new allocation, contents restored.
        let v = user_access(&cx, &m, start + PAGE_SIZE, 4, None, true)
            .await
            .unwrap();
        assert_eq!(v, 0xc0ffee);
    });
    run_ok(&mut w, &mut FirstEnabled);
    let reused = take(&reused);
    assert!(old.contains(&reused));
    assert_eq!(frames.owner(reused), Some(Owner::Anon));
    assert!(!bo.swapped());
    assert_eq!(bo.evictions(), 1);
    let new = bo.pfns();
    assert!(!new.contains(&reused));
    for p in &new {
        assert_eq!(frames.owner(*p), Some(Owner::Driver("ttm".into())));
        if let Some(i) = old.iter().position(|q| q == p) {
            assert!(frames.generation(*p) > gens[i], "{p} is a fresh allocation");
        }
    }
    let ev = n.events.borrow();
    assert_eq!(
        ev[0],
        (
            "start",
            NotifierRange {
                start,
                end,
                event: NotifyEvent::Clear
            }
        )
    );
}

#[test]
fn ttm_fault_on_a_reserved_bo_drops_mmap_lock_and_retries() {
    let (mut w, frames, mm) = setup(64);
    let cfg = TtmConfig {
        prefault: 1,
        ..Default::default()
    };
    let bo = Ttm::new(&mut w, &frames, &mm, cfg).unwrap();
    let vma = bo.mmap(BASE).unwrap();
    let b = bo.clone();
    w.spawn("gpu job", move |cx| async move {
        // Hold the reservation until a CPU fault has bounced off it.
        b.resv.lock(&cx).await;
        let b2 = b.clone();
        cx.wait_until(b.resv.obj, "a fault found the BO reserved", move || {
            b2.resv.failed_trylocks() > 0
        })
        .await;
        b.resv.unlock(&cx).await;
    });
    let res = slot();
    let (m, r1) = (mm.clone(), res.clone());
    let addr = vma.start;
    w.spawn("vcpu0", move |cx| async move {
        *r1.borrow_mut() = Some(remapped(&cx, &m, addr, false).await);
    });
    let r = run_ok(&mut w, &mut FirstEnabled);
    let (a, dropped) = take(&res);
    assert_eq!(a.unwrap().pfn, bo.pfn_of(0).unwrap());
    assert!(
        dropped,
        "ttm_bo_vm_reserve returned VM_FAULT_RETRY: *unlocked"
    );
    assert!(traced(&r, "trylock bo->resv failed"));
    assert!(traced(&r, "drop mmap_lock"));
    assert_eq!(bo.resv.failed_trylocks(), 1);
    assert_eq!(mm.ptes_in(vma.start, vma.end).len(), 1);
}

#[test]
fn mixedmap_vm_insert_page_gives_gup_the_page() {
    let (mut w, frames, mm) = setup(64);
    let drv = MixedMap::new(
        &mut w,
        &frames,
        &mm,
        MixedMapMode::InsertPage,
        2,
        0x4d49_0000,
    )
    .unwrap();
    let p0 = drv.pfn_of(0).unwrap();
    let got = slot();
    let (d, m, g, f) = (drv.clone(), mm.clone(), got.clone(), frames.clone());
    w.spawn("qemu", move |cx| async move {
        let v = d.mmap_in(&cx, BASE).await.unwrap();
        assert!(
            v.flags().contains(VmFlags::VM_MIXEDMAP)
                && !v.flags().intersects(VmFlags::VM_IO | VmFlags::VM_PFNMAP)
        );
        let r = get_user_pages_unlocked(&cx, &m, BASE, FollFlags::FOLL_WRITE).await;
        *g.borrow_mut() = Some((r, f.refcount(p0)));
        if let Ok(Some(p)) = r {
            unpin_user_page(&cx, &m, p).await;
        }
    });
    run_ok(&mut w, &mut FirstEnabled);
    let (r, rc_during) = take(&got);
    assert_eq!(r, Ok(Some(p0)));
    assert_eq!(rc_during, 3, "driver + mapping + GUP");
    let pte = mm.pte(BASE).unwrap();
    assert!(!pte.special && pte.write);
    assert_eq!(frames.refcount(p0), 2, "driver + mapping");
}

#[test]
fn mixedmap_setup_path_matches_vm_insert_page() {
    let (mut w, frames, mm) = setup(64);
    let drv = MixedMap::new(&mut w, &frames, &mm, MixedMapMode::InsertPage, 2, 7).unwrap();
    let vma = drv.mmap_populated(BASE).unwrap();
    assert!(vma.flags().contains(VmFlags::VM_MIXEDMAP));
    let p1 = drv.pfn_of(1).unwrap();
    let pte = mm.pte(BASE + PAGE_SIZE).unwrap();
    assert_eq!((pte.pfn, pte.special, pte.write), (p1, false, true));
    assert_eq!(frames.refcount(p1), 2, "driver + mapping");
    let d = drv.clone();
    w.spawn("qemu", move |cx| async move { d.release(&cx).await });
    run_ok(&mut w, &mut FirstEnabled);
    assert!(frames.is_free(p1));
    assert!(frames.anomalies().is_empty());
}

#[test]
fn mixedmap_vmf_insert_mixed_is_special_and_gup_gets_eexist() {
    let (mut w, frames, mm) = setup(64);
    let drv = MixedMap::new(
        &mut w,
        &frames,
        &mm,
        MixedMapMode::InsertMixed,
        2,
        0x4d49_0000,
    )
    .unwrap();
    let vma = drv.mmap(BASE).unwrap();
    assert!(vma.flags().contains(VmFlags::VM_MIXEDMAP));
    let p1 = drv.pfn_of(1).unwrap();
    let got = slot();
    let (m, g) = (mm.clone(), got.clone());
    w.spawn("vcpu0", move |cx| async move {
        *g.borrow_mut() =
            Some(get_user_pages_unlocked(&cx, &m, BASE + PAGE_SIZE, FollFlags::empty()).await);
    });
    run_ok(&mut w, &mut FirstEnabled);
    assert_eq!(take(&got), Err(EEXIST));
    let pte = mm.pte(BASE + PAGE_SIZE).unwrap();
    assert_eq!(
        (pte.pfn, pte.special),
        (p1, true),
        "special even though pfn_valid (x86)"
    );
    assert_eq!(frames.refcount(p1), 1, "no mapping reference");
}

#[test]
fn mixedmap_populate_then_release_frees_pages() {
    let (mut w, frames, mm) = setup(64);
    let drv = MixedMap::new(&mut w, &frames, &mm, MixedMapMode::InsertPage, 2, 1).unwrap();
    let vma = drv.mmap(BASE).unwrap();
    assert!(!vma.flags().contains(VmFlags::VM_MIXEDMAP));
    let pfns = [drv.pfn_of(0).unwrap(), drv.pfn_of(1).unwrap()];
    let n = notifier(&mm);
    let d = drv.clone();
    w.spawn("qemu", move |cx| async move {
        d.populate(&cx, &vma).await.unwrap();
        assert!(vma.flags().contains(VmFlags::VM_MIXEDMAP));
        d.release(&cx).await;
    });
    run_ok(&mut w, &mut FirstEnabled);
    assert!(pfns.iter().all(|p| frames.is_free(*p)));
    assert_eq!(n.events.borrow().len(), 2);
    assert!(mm.ptes_in(0, u64::MAX).is_empty());
}

// ---------------------------------------------------------------------------------------
// userfault
// ---------------------------------------------------------------------------------------

fn fill(page: u64) -> u32 {
    0xa0a0_a0a0 + page as u32 * 0x0101_0101
}

#[test]
fn userfault_one_message_per_page_and_again_after_dontneed() {
    let (mut w, _frames, mm) = setup(64);
    let uf = Userfault::new(&mut w, &mm, BASE, 5, false).unwrap();
    assert!(uf.vma.flags().contains(VmFlags::VM_UFFD_MISSING));
    assert!(!uf
        .vma
        .flags()
        .intersects(VmFlags::VM_SHARED | VmFlags::VM_IO));
    let h = uf.clone();
    w.spawn("uffd", move |cx| h.run_handler(cx, fill, 100));
    let (u, m) = (uf.clone(), mm.clone());
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    w.spawn("vcpu0", move |cx| async move {
        for _pass in 0..2 {
            for p in 0..4 {
                let v = user_access(&cx, &m, u.addr_of(p), 4, None, false)
                    .await
                    .unwrap();
                s.borrow_mut().push(v);
            }
        }
        assert_eq!(u.handled(), 4, "second pass: no messages");
        sys_madvise_dontneed(&cx, &m, u.addr_of(0), 4 * PAGE_SIZE)
            .await
            .unwrap();
        for p in 0..4 {
            user_access(&cx, &m, u.addr_of(p), 4, None, false)
                .await
                .unwrap();
        }
        user_access(&cx, &m, u.addr_of(4), 4, Some(0xc0c0_c0c0), false)
            .await
            .unwrap();
        u.stop(&cx).await;
    });
    run_ok(&mut w, &mut FirstEnabled);
    assert_eq!(uf.handled(), 9);
    assert_eq!(uf.copies(), 9);
    for p in 0..4 {
        assert_eq!(
            uf.accesses.count(p),
            2,
            "page {p}: once, then again after MADV_DONTNEED"
        );
        assert_eq!(uf.first_access(p).map(|(_, w)| w), Some(false));
    }
    assert_eq!(
        uf.first_access(4).map(|(_, w)| w),
        Some(true),
        "UFFD_PAGEFAULT_FLAG_WRITE"
    );
    let seen = seen.borrow();
    assert_eq!(
        seen[..4],
        [0xa0a0_a0a0, 0xa1a1_a1a1, 0xa2a2_a2a2, 0xa3a3_a3a3]
    );
    assert_eq!(seen[..4], seen[4..]);
}

fn uffd_two_faulters(sched: &mut dyn Scheduler) -> (RunResult, Rc<Userfault>) {
    let (mut w, _frames, mm) = setup(64);
    let uf = Userfault::new(&mut w, &mm, BASE, 2, false).unwrap();
    let h = uf.clone();
    w.spawn("uffd", move |cx| h.run_handler(cx, fill, 100));
    let done = Rc::new(Cell::new(0));
    for i in 0..2 {
        let (u, m, d) = (uf.clone(), mm.clone(), done.clone());
        w.spawn(format!("vcpu{i}"), move |cx| async move {
            // KVM's GUP path: the fault goes to the handler, GUP retries after the wake.
            let p = get_user_pages_unlocked(&cx, &m, u.addr_of(1), FollFlags::empty())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(m.frames.read(p, 0, 4), Some(u64::from(fill(1))));
            unpin_user_page(&cx, &m, p).await;
            d.set(d.get() + 1);
            if d.get() == 2 {
                u.stop(&cx).await;
            }
        });
    }
    (run(&mut w, sched), uf)
}

#[test]
fn userfault_gup_and_two_faulters_on_one_page() {
    let (r, uf) = uffd_two_faulters(&mut RoundRobin);
    assert_eq!(r.status, Status::Completed, "{}", r.trace);
    assert_eq!(uf.copies(), 1);
    assert!(uf.handled() >= 1 && uf.handled() == uf.copies() + uf.eexist());
    assert_eq!(uf.pages, 2);
}

#[test]
fn concurrent_worlds_complete_under_random_schedules() {
    let mut lost_to_zap = 0;
    for seed in 0..200 {
        let (r, uf) = uffd_two_faulters(&mut Random::new(seed));
        assert_eq!(
            r.status,
            Status::Completed,
            "uffd seed {seed}:\n{}",
            r.trace
        );
        assert_eq!(uf.copies(), 1, "seed {seed}");
        assert_eq!(uf.handled(), uf.copies() + uf.eexist(), "seed {seed}");

        // vfio: two vCPU lookups race a reset. A zap that lands between fixup_user_fault
        // and the second walk makes the lookup fail with -EINVAL (KVM: KVM_PFN_ERR_FAULT,
        // c4 "no retry on -EINVAL after a successful fixup"); otherwise it succeeds.
        let (mut w, frames, mm) = setup(64);
        let bar = VfioBar::new(&mut w, &frames, &mm, VfioBarConfig::default());
        bar.mmap(BASE).unwrap();
        let outs = Rc::new(RefCell::new(Vec::new()));
        for i in 0..2 {
            let (m, o) = (mm.clone(), outs.clone());
            w.spawn(format!("vcpu{i}"), move |cx| async move {
                let r = remapped(&cx, &m, BASE, false).await.0;
                o.borrow_mut().push(r.map(|a| a.pfn));
            });
        }
        let b = bar.clone();
        w.spawn("reset", move |cx| async move { b.reset(&cx).await });
        let r = run(&mut w, &mut Random::new(seed));
        assert_eq!(
            r.status,
            Status::Completed,
            "vfio seed {seed}:\n{}",
            r.trace
        );
        for o in outs.borrow().iter() {
            match o {
                Ok(p) => assert_eq!(*p, bar.pfn_of(0)),
                Err(e) => {
                    assert_eq!(*e, EINVAL, "seed {seed}");
                    lost_to_zap += 1;
                }
            }
        }

        let (r, _, bar) = vgpu_two_vcpus_same_page_with(false, &mut Random::new(seed));
        assert_eq!(
            r.status,
            Status::Completed,
            "vgpu seed {seed}:\n{}",
            r.trace
        );
        assert_eq!(bar.accesses.pages(), vec![0]);
    }
    assert!(
        lost_to_zap > 0,
        "some schedule puts the zap between fixup and the re-walk"
    );
}

#[test]
fn userfault_handler_exits_after_max_msgs() {
    let (mut w, _frames, mm) = setup(64);
    let uf = Userfault::new(&mut w, &mm, BASE, 2, false).unwrap();
    let h = uf.clone();
    w.spawn("uffd", move |cx| h.run_handler(cx, fill, 1));
    let (u, m) = (uf.clone(), mm.clone());
    w.spawn("vcpu0", move |cx| async move {
        user_access(&cx, &m, u.addr_of(0), 4, None, true)
            .await
            .unwrap();
    });
    run_ok(&mut w, &mut FirstEnabled);
    assert_eq!(uf.handled(), 1);
    assert!(!uf.stopping());
}
