//! What sets the eras apart outside `hva_to_pfn` proper: the x86 fault path's invalidation
//! protocol ([`RetryProtocol`]: count-only up to v5.11, ranged from v5.12, ranged with a
//! lockless pre-check from v6.8), and the 2018 change to the remapped path's writability
//! (a340b3e229b2, linux-4.16).

mod common;

use common::*;
use model::kvm::fault::{kvm_mmu_page_fault, PfResult};
use model::kvm::{Kvm, Memslot, PolicyId, RetryProtocol};
use model::mm::*;
use std::cell::{Cell, RefCell};
use std::ops::ControlFlow;
use std::rc::Rc;
use world::Status;

/// A second slot, over the next page (ANON + PAGE).
const GPA2: u64 = 0x20_0000;

/// A VM under `policy` with two one-page slots: GPA over a mapped anon page at ANON, GPA2
/// over ANON + PAGE. Nothing maps ANON + 2 * PAGE into the guest.
fn two_slot_vm(e: &mut Env, policy: PolicyId) -> Rc<Kvm> {
    anon(&e.mm, ANON, 3, RW);
    let page = e.frames.alloc(0, Owner::Anon, false).unwrap();
    e.mm.set_pte_setup(ANON, normal(page, true));
    let kvm = Kvm::new(&mut e.w, &e.mm, policy.build());
    for (id, gpa, hva) in [(1, GPA, ANON), (2, GPA2, ANON + PAGE)] {
        kvm.set_memslot(Memslot {
            id,
            base_gfn: gpa >> 12,
            npages: 1,
            userspace_addr: hva,
            readonly: false,
            ..Memslot::default()
        });
    }
    kvm
}

fn range(start: Hva, end: Hva) -> NotifierRange {
    NotifierRange {
        start,
        end,
        event: NotifyEvent::Clear,
    }
}

/// What one fault did while the host held an invalidation of `[start, end)` open.
struct HeldOpen {
    fault: PfResult,
    /// `(in_progress, range)` right after the host opened the invalidation.
    inv: (i64, Option<(u64, u64)>),
    refs_taken: u64,
    trace: String,
}

/// Actor 0 (the host) opens an invalidation of `[start, end)` and keeps it open until
/// actor 1 (the vCPU) has taken one stage-2 read fault on GPA.
fn fault_while_held_open(policy: PolicyId, start: Hva, end: Hva) -> HeldOpen {
    let mut e = env();
    let kvm = two_slot_vm(&mut e, policy);
    let open = Rc::new(Cell::new(true));
    let flag = e.w.object("test flag");
    let (mm, o, k) = (e.mm.clone(), open.clone(), kvm.clone());
    let inv = spawn_ret(&mut e.w, "host", move |cx| async move {
        let r = range(start, end);
        mm.notify_start(&cx, &r).await;
        let inv = k.invalidation();
        let o2 = o.clone();
        cx.wait_until(flag, "the vCPU has faulted", move || !o2.get())
            .await;
        mm.notify_end(&cx, &r).await;
        inv
    });
    let k = kvm.clone();
    let fault = spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
        let r = kvm_mmu_page_fault(&cx, &k, GPA, false).await;
        open.set(false);
        r
    });
    let res = run(&mut e.w);
    assert_eq!(res.status, Status::Completed, "{policy}");
    assert_eq!(kvm.invalidation().0, 0, "{policy}: the invalidation ended");
    let fault = fault.borrow().expect("the fault returned");
    let inv = inv.borrow().expect("the host ran");
    HeldOpen {
        fault,
        inv,
        refs_taken: kvm.refs_taken(),
        trace: res.trace.to_string(),
    }
}

#[test]
fn each_era_has_the_retry_protocol_of_its_kernel() {
    use RetryProtocol::*;
    let want = [
        ("linux-4.7", CountOnly),
        ("linux-4.8", CountOnly),
        ("linux-4.16", CountOnly),
        ("linux-5.12", RangeLocked),
        ("linux-5.13", RangeLocked),
        ("linux-6.13", RangePrecheck),
    ];
    let got: Vec<_> = PolicyId::ALL
        .iter()
        .map(|p| (p.name(), p.retry_protocol()))
        .collect();
    assert_eq!(got, want);
    for m in PolicyId::MUTANTS {
        assert_eq!(m.retry_protocol(), RangePrecheck, "{m} is linux-6.13");
        assert_eq!(m.build().retry_protocol(), RangePrecheck, "{m}");
    }
    assert!(RangePrecheck.has_precheck() && !RangeLocked.has_precheck());
    assert!(!CountOnly.has_precheck());
}

#[test]
fn an_invalidation_of_another_gfn_retries_the_fault_only_in_count_only_eras() {
    for p in PolicyId::ALL {
        let h = fault_while_held_open(p, ANON + PAGE, ANON + 2 * PAGE);
        assert_eq!(h.inv.0, 1, "{p}: slot 2 is invalidated");
        match p.retry_protocol() {
            RetryProtocol::CountOnly => {
                assert_eq!(h.fault, PfResult::Retry, "{p}");
                assert!(
                    h.trace.contains(
                        "mmu_notifier_retry: an invalidation is in progress (count != 0): RET_PF_RETRY"
                    ),
                    "{p}: {}",
                    h.trace
                );
            }
            _ => assert_eq!(h.fault, PfResult::Fixed, "{p}: {}", h.trace),
        }
    }
}

#[test]
fn an_invalidation_no_memslot_maps_is_counted_before_v5_15_and_retries_count_only_eras() {
    for p in PolicyId::ALL {
        let h = fault_while_held_open(p, ANON + 2 * PAGE, ANON + 3 * PAGE);
        let proto = p.retry_protocol();
        assert_eq!(
            h.inv,
            if proto.counts_every_invalidation() {
                (1, None)
            } else {
                (0, None)
            },
            "{p}: what the notifier counted"
        );
        let want = if proto.is_ranged() {
            PfResult::Fixed
        } else {
            PfResult::Retry
        };
        assert_eq!(h.fault, want, "{p}: {}", h.trace);
    }
}

#[test]
fn only_linux_6_13_pre_checks_before_the_lookup() {
    // An invalidation of the faulting page itself, held open: every era retries, but only
    // the lockless pre-check retries before looking the page up (no GUP reference).
    for p in PolicyId::ALL {
        let h = fault_while_held_open(p, ANON, ANON + PAGE);
        assert_eq!(h.fault, PfResult::Retry, "{p}");
        let proto = p.retry_protocol();
        let unsafe_check = h.trace.contains("mmu_invalidate_retry_gfn_unsafe");
        assert_eq!(unsafe_check, proto.has_precheck(), "{p}: {}", h.trace);
        if proto.has_precheck() {
            assert_eq!(h.refs_taken, 0, "{p}: retried before the lookup");
        } else {
            assert!(h.refs_taken > 0, "{p}: looked the page up first");
            let locked = format!("{}: ", proto.locked_check());
            assert!(
                h.trace.contains(&locked) && h.trace.contains("RET_PF_RETRY"),
                "{p}: {}",
                h.trace
            );
        }
    }
}

#[test]
fn an_invalidation_no_memslot_maps_ending_during_the_fault_bumps_the_sequence_before_v5_15() {
    for p in PolicyId::ALL {
        let mut e = env();
        let kvm = two_slot_vm(&mut e, p);
        let k = kvm.clone();
        let fault = spawn_ret(&mut e.w, "vcpu0", move |cx| async move {
            kvm_mmu_page_fault(&cx, &k, GPA, false).await
        });
        let mm = e.mm.clone();
        e.w.spawn("host", move |cx| async move {
            let r = range(ANON + 2 * PAGE, ANON + 3 * PAGE);
            mm.notify_start(&cx, &r).await;
            mm.notify_end(&cx, &r).await;
        });
        // The host's whole invalidation runs just before the vCPU takes mmu_lock.
        let mut s = HostAt {
            trigger: kvm.mmu_lock.0,
            fired: false,
        };
        let res = e.w.run(&mut s, &mut || ControlFlow::Continue(()));
        assert_eq!(res.status, Status::Completed, "{p}");
        let t = res.trace.to_string();
        let want = if p.retry_protocol().counts_every_invalidation() {
            assert!(
                t.contains("mmu_invalidate_seq changed: RET_PF_RETRY"),
                "{p}: {t}"
            );
            PfResult::Retry
        } else {
            PfResult::Fixed
        };
        assert_eq!(*fault.borrow(), Some(want), "{p}");
    }
}

#[test]
fn a_count_only_vcpu_waits_until_no_invalidation_at_all_is_in_progress() {
    for p in PolicyId::ALL {
        let mut e = env();
        let kvm = two_slot_vm(&mut e, p);
        let log: Rc<RefCell<Vec<String>>> = Rc::default();
        let faulted = Rc::new(Cell::new(false));
        let flag = e.w.object("test flag");
        let (mm, l, f) = (e.mm.clone(), log.clone(), faulted.clone());
        // The host invalidates slot 2 and ends only once the vCPU has faulted on slot 1.
        e.w.spawn("host", move |cx| async move {
            let r = range(ANON + PAGE, ANON + 2 * PAGE);
            mm.notify_start(&cx, &r).await;
            let f2 = f.clone();
            cx.wait_until(flag, "the vCPU has faulted", move || f2.get())
                .await;
            mm.notify_end(&cx, &r).await;
            l.borrow_mut().push("host: end".into());
        });
        let (k, l) = (kvm.clone(), log.clone());
        e.w.spawn("vcpu0", move |cx| async move {
            // What `Vcpu::access` does on a fault, bounded.
            for _ in 0..3 {
                let r = kvm_mmu_page_fault(&cx, &k, GPA, false).await;
                faulted.set(true);
                l.borrow_mut().push(format!("vcpu: {r:?}"));
                if r != PfResult::Retry {
                    return;
                }
                k.wait_for_invalidation(&cx, GPA >> 12).await;
                let inv = k.invalidation().0;
                l.borrow_mut()
                    .push(format!("vcpu: woke, in_progress {inv}"));
            }
        });
        let res = run(&mut e.w);
        assert_eq!(res.status, Status::Completed, "{p}");
        let want: &[&str] = match p.retry_protocol() {
            RetryProtocol::CountOnly => &[
                "vcpu: Retry",
                "host: end",
                "vcpu: woke, in_progress 0",
                "vcpu: Fixed",
            ],
            _ => &["vcpu: Fixed", "host: end"],
        };
        assert_eq!(*log.borrow(), want, "{p}");
        assert!(kvm.spte(GPA >> 12).is_some(), "{p}");
    }
}

#[test]
fn linux_4_16_maps_a_read_of_read_only_pfnmap_memory_writable() {
    // A present read-only PTE of a BAR (VM_IO|VM_PFNMAP) in a writable memslot, and a guest
    // that only reads.
    for (policy, spte_write) in [
        (PolicyId::Linux4_8, false),
        (PolicyId::Linux4_16, true),
        (PolicyId::Linux5_12, false),
        (PolicyId::Linux5_13, false),
        (PolicyId::Linux6_13, false),
    ] {
        let mut e = env();
        let vfio = vfio_bar(&mut e);
        e.mm.set_pte_setup(DEV, special(vfio.pfn_of(0), false));
        let (kvm, r) = vm_with_fault(&mut e, policy, DEV, false, false);
        let res = run(&mut e.w);
        assert_eq!(res.status, Status::Completed, "{policy}");
        assert_eq!(*r.borrow(), Some(PfResult::Fixed), "{policy}");
        let s = kvm.spte(GPA >> 12).expect("SPTE installed");
        assert_eq!(
            (s.pfn, s.write),
            (vfio.pfn_of(0), spte_write),
            "{policy}: a read fault, a read-only host PTE"
        );
        assert_eq!(
            res.trace.to_string().contains("*writable = true"),
            spte_write,
            "{policy}"
        );
    }
}

#[test]
fn linux_4_16_keeps_a_read_only_slot_read_only() {
    // writable = NULL for a KVM_MEM_READONLY slot: the 2018 change does not apply.
    for policy in [PolicyId::Linux4_8, PolicyId::Linux4_16] {
        let mut e = env();
        let _vfio = vfio_bar(&mut e);
        let (kvm, r) = vm_with_fault(&mut e, policy, DEV, false, true);
        assert_eq!(run(&mut e.w).status, Status::Completed, "{policy}");
        assert_eq!(*r.borrow(), Some(PfResult::Fixed), "{policy}");
        assert!(!kvm.spte(GPA >> 12).unwrap().write, "{policy}");
    }
}
