//! The oracles catch a fault path that breaks the invalidation protocol: a rogue "vCPU"
//! looks a page up, lets an invalidation complete, and installs the SPTE anyway — what KVM
//! would do without the `mmu_invalidate_seq` re-check.

use model::harness::{build, oracle::Checker, Oracle};
use model::kvm::PolicyId;
use std::ops::ControlFlow;
use world::{RoundRobin, Status};

const SC: &str = r#"
name = "rogue"
[[mapping]]
name = "ram"
backing = "anon-private"
pages = 1
fill = 0x11111111
[[memslot]]
slot = 1
gpa = 0x10000
mapping = "ram"
pages = 1
[[host]]
thread = "host"
action = "madvise-dontneed"
mapping = "ram"
"#;

fn run(rogue_rechecks: bool) -> Vec<Oracle> {
    let sc = scenario::parse("rogue.toml", SC).unwrap();
    let (mut w, sys) = build(&sc, PolicyId::Linux6_13).unwrap();
    let (kvm, mm) = (sys.kvm.clone(), sys.mm.clone());
    let hva = sys.mapping("ram").base;
    let slot = sys.kvm.gfn_to_memslot(0x10).expect("the scenario's slot");
    let done = w.object("rogue");
    w.spawn("rogue", move |cx| async move {
        let seq = kvm.read_seq(&cx, 0x10).await;
        let start = cx.step();
        let pfn = mm.pte(hva).expect("prefilled").pfn;
        // Wait until the host's MADV_DONTNEED has cleared the PTE and finished.
        let m = mm.clone();
        cx.wait_until(done, "host zapped", move || m.pte(hva).is_none())
            .await;
        let k = kvm.clone();
        cx.wait_until(done, "invalidation ended", move || k.invalidation().0 == 0)
            .await;
        cx.lock(kvm.mmu_lock, world::LockMode::Exclusive).await;
        if !(rogue_rechecks && kvm.retry_gfn_locked(&cx, 0x10, seq)) {
            kvm.install_spte(&cx, 0x10, pfn, true, &slot, start).await;
        }
        cx.unlock(kvm.mmu_lock).await;
    });
    let mut checker = Checker::default();
    let mut step = 0;
    let r = w.run(&mut RoundRobin, &mut || {
        checker.check_step(&sys, step);
        step += 1;
        ControlFlow::Continue(())
    });
    assert_eq!(r.status, Status::Completed);
    let mut o: Vec<Oracle> = checker.violations.iter().map(|v| v.oracle).collect();
    o.sort();
    o.dedup();
    o
}

#[test]
fn installing_after_an_invalidation_is_a_stale_spte_to_a_freed_frame() {
    assert_eq!(
        run(false),
        vec![
            Oracle::NoFreedFrame,
            Oracle::NoWriteEscalation,
            Oracle::NoStaleSpte
        ]
    );
}

#[test]
fn the_seq_recheck_prevents_it() {
    assert_eq!(run(true), vec![]);
}
