//! Issue 11 §2: the emulated path (a CPL0 guest on this PVM host). Every access goes through
//! KVM's instruction emulator, which reaches memory with a user copy on the slot's hva, so a
//! host fault goes through `handle_mm_fault` and a failure is an MMIO exit, never EFAULT
//! (realkvm.md §0, §11); `hva_to_pfn` is never called, so the eras agree.

use model::harness::{run_once_with, step_bound, BuildOptions, ScheduleKind};
use model::kvm::vcpu::Outcome;
use model::kvm::PolicyId;

fn outcomes(name: &str, policy: PolicyId) -> Vec<Vec<Outcome>> {
    let sc = scenario::builtin(name).unwrap().unwrap();
    let r = run_once_with(
        &sc,
        policy,
        ScheduleKind::VcpusLast,
        false,
        step_bound(&sc),
        &BuildOptions {
            audit: true,
            emulated: true,
        },
    )
    .unwrap();
    r.raw_outcomes[0].clone()
}

#[test]
fn what_the_host_cannot_reach_is_mmio_and_the_eras_agree() {
    for p in PolicyId::ALL {
        // A hole: MMIO read (the refill after it is not reached: nothing faulted).
        let o = outcomes("hole-refill", p);
        assert_eq!(
            o[0],
            vec![Outcome::MmioRead {
                gpa: 0x10000,
                len: 4
            }],
            "{p}"
        );
        // [vvar] page 1 (SIGBUS in the host): MMIO read; page 0 reads through the copy.
        let o = outcomes("vvar-sigbus", p);
        assert_eq!(
            o[0],
            vec![Outcome::MmioRead {
                gpa: 0x11000,
                len: 4
            }],
            "{p}"
        );
        assert_eq!(o[2], vec![Outcome::Value(1)], "{p}");
        // A write to memory completes through the hva (no SPTE).
        let o = outcomes("anon", p);
        assert!(
            o.iter().flatten().all(|x| !matches!(x, Outcome::Efault)),
            "{p}"
        );
    }
}
