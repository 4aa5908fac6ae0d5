//! The x86 stage-2 fault path: the `mmu_invalidate_seq` retry (lockless pre-check and locked
//! check), and the release of the faulted-in page on every path.

mod common;

use common::*;
use model::drivers::vgpu_bar::{VgpuBar, VgpuConfig};
use model::kvm::fault::{kvm_mmu_page_fault, PfResult};
use model::kvm::{Kvm, Memslot, PolicyId};
use model::mm::syscalls::sys_madvise_dontneed;
use model::mm::*;
use std::cell::Cell;
use std::ops::ControlFlow;
use std::rc::Rc;
use world::Status;

/// A one-page vGPU BAR mapped at DEV.
fn vgpu(e: &mut Env, retry_first_fault: bool) -> Rc<VgpuBar> {
    let bar = VgpuBar::new(
        &mut e.w,
        &e.frames,
        &e.mm,
        VgpuConfig {
            pages: 1,
            retry_first_fault,
            ..VgpuConfig::default()
        },
    );
    bar.mmap(DEV).unwrap();
    bar
}

/// An anon page already mapped by the host, in a memslot.
fn anon_vm(e: &mut Env, policy: PolicyId) -> (Rc<Kvm>, Pfn) {
    e.mm.mmap(MmapArgs::anon(
        "ram",
        ANON,
        1,
        VmFlags::VM_READ | VmFlags::VM_WRITE,
    ))
    .unwrap();
    let page = e.frames.alloc(0, Owner::Anon, false).unwrap();
    e.frames.fill(page, 0x1111_1111);
    e.mm.set_pte_setup(
        ANON,
        Pte {
            pfn: page,
            write: true,
            special: false,
            protnone: false,
        },
    );
    let kvm = Kvm::new(&mut e.w, &e.mm, policy.build());
    kvm.set_memslot(Memslot {
        id: 1,
        base_gfn: GPA >> 12,
        npages: 1,
        userspace_addr: ANON,
        readonly: false,
        ..Memslot::default()
    });
    (kvm, page)
}

#[test]
fn fixed_fault_installs_the_spte_and_releases_the_gup_reference() {
    let mut e = env();
    let (kvm, page) = anon_vm(&mut e, PolicyId::Linux6_13);
    let k = kvm.clone();
    let r = spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        kvm_mmu_page_fault(&cx, &k, GPA, false).await
    });
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(*r.borrow(), Some(PfResult::Fixed));
    let s = kvm.spte(GPA >> 12).expect("SPTE installed");
    assert_eq!(
        (s.pfn, s.write),
        (page, true),
        "map_writable: the host PTE is writable"
    );
    assert_eq!(kvm.refs_taken(), 1);
    assert!(kvm.outstanding_refs().is_empty());
    assert_eq!(
        e.frames.refcount(page),
        1,
        "only the host mapping's reference remains"
    );
}

#[test]
fn invalidation_between_lookup_and_mmu_lock_forces_a_retry_and_releases_the_page() {
    let mut e = env();
    let (kvm, page) = anon_vm(&mut e, PolicyId::Linux6_13);
    let k = kvm.clone();
    let r = spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        kvm_mmu_page_fault(&cx, &k, GPA, false).await
    });
    let mm = e.mm.clone();
    e.w.spawn("host", move |cx| async move {
        sys_madvise_dontneed(&cx, &mm, ANON, PAGE).await.unwrap();
    });
    let mut s = HostAt {
        trigger: kvm.mmu_lock.0,
        fired: false,
    };
    let res = e.w.run(&mut s, &mut || ControlFlow::Continue(()));
    assert_eq!(res.status, Status::Completed);
    assert_eq!(
        *r.borrow(),
        Some(PfResult::Retry),
        "mmu_invalidate_retry_gfn saw the new seq"
    );
    assert!(kvm.spte(GPA >> 12).is_none(), "no SPTE from a stale lookup");
    assert!(res
        .trace
        .to_string()
        .contains("mmu_invalidate_retry_gfn: mmu_invalidate_seq changed: RET_PF_RETRY"));
    assert!(
        kvm.outstanding_refs().is_empty(),
        "the unused page was released"
    );
    assert!(
        e.frames.is_free(page),
        "MADV_DONTNEED freed the page once KVM let go of it"
    );
}

#[test]
fn invalidation_in_progress_is_caught_by_the_lockless_precheck() {
    let mut e = env();
    let (kvm, _) = anon_vm(&mut e, PolicyId::Linux6_13);
    let open = Rc::new(Cell::new(true));
    let (mm, o) = (e.mm.clone(), open.clone());
    let flag = e.w.object("test flag");
    // Actor 0: the host opens an invalidation and holds it open.
    e.w.spawn("host", move |cx| async move {
        let range = NotifierRange {
            start: ANON,
            end: ANON + PAGE,
            event: NotifyEvent::Clear,
        };
        mm.notify_start(&cx, &range).await;
        let o2 = o.clone();
        cx.wait_until(flag, "test closes the invalidation", move || !o2.get())
            .await;
        mm.notify_end(&cx, &range).await;
    });
    let (k, o) = (kvm.clone(), open.clone());
    let r = spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        let r = kvm_mmu_page_fault(&cx, &k, GPA, false).await;
        o.set(false);
        r
    });
    assert_eq!(run(&mut e.w).status, Status::Completed);
    assert_eq!(*r.borrow(), Some(PfResult::Retry));
    assert_eq!(kvm.refs_taken(), 0, "retried before looking the page up");
}

#[test]
fn pfnmap_fault_on_6_13_takes_no_reference_and_4_8_takes_and_drops_one() {
    for (policy, refs) in [(PolicyId::Linux6_13, 0), (PolicyId::Linux4_8, 1)] {
        let mut e = env();
        let bar = vgpu(&mut e, false);
        let (kvm, r) = vm_with_fault(&mut e, policy, DEV, false, false);
        assert_eq!(run(&mut e.w).status, Status::Completed, "{policy}");
        assert_eq!(*r.borrow(), Some(PfResult::Fixed), "{policy}");
        assert_eq!(kvm.refs_taken(), refs, "{policy}");
        assert!(kvm.outstanding_refs().is_empty(), "{policy}");
        let page = bar.backing(0).unwrap();
        assert_eq!(
            e.frames.refcount(page),
            1,
            "{policy}: only the driver's reference"
        );
        assert!(
            bar.first_access(0).is_some(),
            "{policy}: the device saw the access"
        );
    }
}

#[test]
fn dropped_mmap_lock_makes_hva_to_pfn_look_the_vma_up_again() {
    for policy in [
        PolicyId::Linux4_8,
        PolicyId::Linux5_12,
        PolicyId::Linux5_13,
        PolicyId::Linux6_13,
    ] {
        let mut e = env();
        let _bar = vgpu(&mut e, true);
        let (_kvm, r) = vm_with_fault(&mut e, policy, DEV, false, false);
        let res = run(&mut e.w);
        assert_eq!(res.status, Status::Completed, "{policy}");
        assert_eq!(*r.borrow(), Some(PfResult::Fixed), "{policy}");
        let t = res.trace.to_string();
        assert!(t.contains("-EAGAIN"), "{policy}: {t}");
        assert_eq!(
            t.matches("lock mmap_lock (read)").count(),
            t.matches("unlock mmap_lock").count(),
            "{policy}: balanced mmap_lock"
        );
    }
}

#[test]
fn write_to_a_present_read_only_pfnmap_pte_is_ro_fault_from_5_12_on() {
    for (policy, expect) in [
        (PolicyId::Linux4_8, PfResult::Fixed),
        (PolicyId::Linux5_12, PfResult::Emulate),
        (PolicyId::Linux6_13, PfResult::Emulate),
    ] {
        let mut e = env();
        let vfio = vfio_bar(&mut e);
        // A present read-only PTE in a writable vma.
        e.mm.set_pte_setup(
            DEV,
            Pte {
                pfn: vfio.pfn_of(0),
                write: false,
                special: true,
                protnone: false,
            },
        );
        let kvm = Kvm::new(&mut e.w, &e.mm, policy.build());
        kvm.set_memslot(Memslot {
            id: 1,
            base_gfn: GPA >> 12,
            npages: 1,
            userspace_addr: DEV,
            readonly: false,
            ..Memslot::default()
        });
        let k = kvm.clone();
        let r = spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
            kvm_mmu_page_fault(&cx, &k, GPA, true).await
        });
        assert_eq!(run(&mut e.w).status, Status::Completed);
        assert_eq!(*r.borrow(), Some(expect), "{policy}");
        if expect == PfResult::Fixed {
            assert!(
                kvm.spte(GPA >> 12).unwrap().write,
                "linux-4.8: writable SPTE over a read-only PTE"
            );
        }
    }
}

#[test]
fn no_memslot_is_mmio_and_readonly_slot_write_is_emulated() {
    let mut e = env();
    let (kvm, _) = anon_vm(&mut e, PolicyId::Linux6_13);
    let k = kvm.clone();
    let r = spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        kvm_mmu_page_fault(&cx, &k, 0xd000_0000, true).await
    });
    run(&mut e.w);
    assert_eq!(*r.borrow(), Some(PfResult::Mmio));
    let mut e = env();
    e.mm.mmap(MmapArgs::anon(
        "ram",
        ANON,
        1,
        VmFlags::VM_READ | VmFlags::VM_WRITE,
    ))
    .unwrap();
    let kvm = Kvm::new(&mut e.w, &e.mm, PolicyId::Linux6_13.build());
    kvm.set_memslot(Memslot {
        id: 1,
        base_gfn: GPA >> 12,
        npages: 1,
        userspace_addr: ANON,
        readonly: true,
        ..Memslot::default()
    });
    let k = kvm.clone();
    let r = spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        kvm_mmu_page_fault(&cx, &k, GPA, true).await
    });
    run(&mut e.w);
    assert_eq!(
        *r.borrow(),
        Some(PfResult::Emulate),
        "KVM_HVA_ERR_RO_BAD gives RO_FAULT"
    );
}

#[test]
fn a_hole_is_a_bare_efault() {
    let mut e = env();
    let kvm = Kvm::new(&mut e.w, &e.mm, PolicyId::Linux6_13.build());
    kvm.set_memslot(Memslot {
        id: 1,
        base_gfn: GPA >> 12,
        npages: 1,
        userspace_addr: NOWHERE,
        readonly: false,
        ..Memslot::default()
    });
    let k = kvm.clone();
    let r = spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        kvm_mmu_page_fault(&cx, &k, GPA, false).await
    });
    run(&mut e.w);
    assert_eq!(*r.borrow(), Some(PfResult::Efault));
}
