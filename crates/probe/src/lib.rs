//! Runs kvmmu scenarios on the real `/dev/kvm` and reports what the guest and host saw.
//!
//! This is the ground truth the model is compared against. What to expect on this machine is in
//! `shared/reference/realkvm.md`; the C probes in `reference/probes/` do the same by hand.
//! The key fact (realkvm.md §0): on this PVM host only 64-bit CPL3 guest code takes shadow-MMU
//! faults through `hva_to_pfn` ([`Mode::Native`]); CPL0 code is run by KVM's instruction
//! emulator ([`Mode::Emulated`]), which turns inaccessible memory into MMIO exits instead.
//!
//! Linux x86-64 only. This is the only crate in the workspace with `unsafe`; every block says
//! why it is sound. Runs are serialized by a global lock (signals, userfaultfd and test threads
//! would otherwise interfere).
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("the probe crate drives /dev/kvm and supports Linux x86-64 only");

mod backing;
mod clock;
mod exits;
mod guest;
mod host;
mod hostio;
mod isolated;
mod layout;
mod mmu;
mod outcome;
mod plan;
mod region;
mod resident;
mod run;
mod timing;
mod uffd;
mod validate;
mod vcpu_loop;
mod vm;
mod vvar;
mod watchdog;

pub use isolated::{child_main, run_isolated};
pub use outcome::{AccessResult, Attempt, Exit, ProbeError, ProbeResult, Stats, Timing, UffdEvent};
pub use plan::{
    Backing, BackingKind, GuestOp, HostAction, Inject, Memslot, Mode, Peek, Plan, Step, Vcpu,
};
pub use run::{check, run};
pub use timing::measure_first_touch;

use std::sync::{Mutex, MutexGuard};

/// Serializes runs within the process.
fn lock() -> MutexGuard<'static, ()> {
    static RUN_LOCK: Mutex<()> = Mutex::new(());
    RUN_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks that `/dev/kvm` can be opened and a VM created; `Err` is one line saying why not.
pub fn kvm_available() -> Result<(), String> {
    let kvm = vm::open_kvm().map_err(|e| e.to_string())?;
    kvm.create_vm()
        .map(drop)
        .map_err(|e| format!("KVM_CREATE_VM failed: {e}"))
}

/// For tests that need `/dev/kvm`: `true` (after printing one `SKIP <test>: <reason>`
/// line) when KVM cannot be used here. With `KVMMU_REQUIRE_KVM` set in the environment
/// (CI sets it whenever `/dev/kvm` exists) an unusable KVM is a test failure instead.
pub fn skip_without_kvm(test: &str) -> bool {
    match kvm_available() {
        Ok(()) => false,
        Err(e) if std::env::var_os("KVMMU_REQUIRE_KVM").is_some() => {
            panic!("{test}: /dev/kvm is required (KVMMU_REQUIRE_KVM) but unusable: {e}")
        }
        Err(e) => {
            println!("SKIP {test}: {e}");
            true
        }
    }
}

/// A description of the host's KVM MMU, e.g. "shadow (kvm_pvm, tdp_mmu=N)".
pub fn mmu_description() -> String {
    mmu::describe()
}

/// Hooks for this crate's own tests; not part of the API.
#[doc(hidden)]
pub mod testing {
    use crate::outcome::{Exit, ProbeError};
    use crate::plan::Mode;
    use crate::{exits, guest, layout, lock, vm, watchdog};
    use std::time::Duration;

    /// Runs a guest that spins forever (`jmp $`) and returns how its KVM_RUN ended
    /// (`Timeout` when the watchdog works).
    pub fn spin(mode: Mode, timeout_ms: u64) -> Result<Exit, ProbeError> {
        let _serial = lock();
        let code = guest::spin_code(layout::CODE_GPA).map_err(ProbeError::Sys)?;
        let dog = watchdog::Watchdog::new()?;
        let vm = vm::GuestVm::new(&code, &[])?;
        let mut vcpu = vm.vcpu(0, mode, layout::CODE_GPA)?;
        Ok(
            match exits::run_once(&mut vcpu, &dog, Duration::from_millis(timeout_ms), 0) {
                exits::RawExit::Timeout => Exit::Timeout,
                other => Exit::Other(format!("{other:?}")),
            },
        )
    }
}
