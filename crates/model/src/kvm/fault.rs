//! The x86 stage-2 page fault (arch/x86/kvm/mmu/mmu.c): snapshot `mmu_invalidate_seq`
//! *before* the host lookup, look the page up, then under `mmu_lock` re-check
//! authoritatively before installing the SPTE, and release the faulted-in page.
//!
//! The re-check is the era's ([`RetryProtocol`](super::RetryProtocol)): up to v5.11 the
//! count-only `mmu_notifier_retry` (any invalidation in progress retries the fault), from
//! v5.12 the ranged `mmu_notifier_retry_hva` (only one covering the faulting address), and
//! from v6.8 the gfn-ranged `mmu_invalidate_retry_gfn` with lockless pre-checks
//! (`mmu_invalidate_retry_gfn_unsafe`) before and after the lookup.

use super::policy::{Faultin, Lookup, Mutant};
use super::{Kvm, KvmPfn};
use crate::mm::PAGE_SHIFT;
use std::rc::Rc;
use world::{Access, Cx, FpSet, LockMode};

/// `RET_PF_*` plus the error exits of `kvm_handle_error_pfn`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PfResult {
    /// SPTE installed (`RET_PF_FIXED`): re-enter the guest.
    Fixed,
    /// `RET_PF_RETRY`: re-enter the guest, which faults again.
    Retry,
    /// `RET_PF_EMULATE`: emulate the instruction (RO_FAULT).
    Emulate,
    /// No memslot: emulated as MMIO.
    Mmio,
    /// Bare -EFAULT from KVM_RUN, `exit_reason` left at `KVM_EXIT_UNKNOWN`.
    Efault,
    /// `KVM_EXIT_INTR` (SIGPENDING).
    Intr,
    /// HWPOISON: SIGBUS to the vCPU thread.
    Hwpoison,
}

/// `kvm_handle_error_pfn()` (v6.18).
fn handle_error_pfn(cx: &Cx, pfn: KvmPfn) -> PfResult {
    let r = match pfn {
        KvmPfn::ErrSigpending => PfResult::Intr,
        KvmPfn::ErrRoFault => PfResult::Emulate,
        KvmPfn::ErrHwpoison => PfResult::Hwpoison,
        KvmPfn::NoSlot => PfResult::Mmio,
        _ => PfResult::Efault,
    };
    world::emit!(cx, "kvm_handle_error_pfn({pfn}): {r:?}");
    r
}

/// `kvm_mmu_page_fault()` → `kvm_mmu_do_page_fault()` → `direct_page_fault()` for a guest
/// access to `gpa`.
pub async fn kvm_mmu_page_fault(cx: &Cx, kvm: &Rc<Kvm>, gpa: u64, write: bool) -> PfResult {
    let _f = cx.func("kvm_mmu_page_fault");
    let gfn = gpa >> PAGE_SHIFT;
    world::emit!(cx, "gpa {gpa:#x} {}", if write { "write" } else { "read" });
    let mutant = kvm.policy.mutant();
    // kvm_mmu_do_page_fault: fault->slot, under the vCPU's SRCU read section.
    let slot = kvm.lookup_slot(cx, gfn).await;
    // kvm_mmu_faultin_pfn: the snapshot precedes any primary-MMU lookup.
    let late = mutant == Some(Mutant::LateSeqSnapshot);
    let precheck = kvm.policy.retry_protocol().has_precheck();
    let mut mmu_seq = if late { 0 } else { kvm.read_seq(cx, gfn).await };
    let fault_start = cx.step();
    let Some(slot) = slot else {
        cx.emit_str("no memslot: MMIO");
        return PfResult::Mmio;
    };
    // "Retry the page fault if the gfn hit a memslot that is being deleted or moved." (v5.13;
    // before, the invalid slot was no slot: KVM_PFN_NOSLOT, an MMIO SPTE, MMIO emulation.)
    if slot.invalid {
        if kvm.policy.id().invalid_slot_retries() {
            cx.emit_str("KVM_MEMSLOT_INVALID (slot being deleted or moved): RET_PF_RETRY");
            return PfResult::Retry;
        }
        cx.emit_str("KVM_MEMSLOT_INVALID: __gfn_to_hva_many fails, KVM_PFN_NOSLOT: MMIO");
        return PfResult::Mmio;
    }
    if precheck && !late && kvm.retry_gfn_unsafe(cx, gfn, mmu_seq).await {
        return PfResult::Retry;
    }
    // __kvm_mmu_faultin_pfn: pass 1 with FOLL_NOWAIT; async #PF is not enabled by the guest,
    // so NEEDS_IO goes straight to the blocking pass 2.
    let mut l = Lookup {
        slot,
        gfn,
        write,
        nowait: true,
        pin: false,
    };
    let mut f: Faultin = kvm.policy.faultin(cx, kvm, &l).await;
    if f.pfn == KvmPfn::ErrNeedsIo {
        l.nowait = false;
        f = kvm.policy.faultin(cx, kvm, &l).await;
    }
    let KvmPfn::Pfn(pfn) = f.pfn else {
        return handle_error_pfn(cx, f.pfn);
    };
    if late {
        cx.emit_str("MUTANT: snapshot mmu_invalidate_seq after the host lookup");
        mmu_seq = kvm.read_seq(cx, gfn).await;
    }
    if precheck && kvm.retry_gfn_unsafe(cx, gfn, mmu_seq).await {
        kvm.policy.release(cx, kvm, &f).await;
        return PfResult::Retry;
    }
    // is_page_fault_stale() loads the invalidation state right after taking mmu_lock.
    let inv = FpSet::one(kvm.inv_obj, Access::Read);
    cx.lock_with(kvm.mmu_lock, LockMode::Exclusive, inv).await;
    let skip = mutant == Some(Mutant::NoLockedRecheck);
    if skip {
        cx.emit_str("MUTANT: no mmu_invalidate_retry_gfn under mmu_lock");
    }
    let r = if !skip && kvm.retry_gfn_locked(cx, gfn, mmu_seq) {
        PfResult::Retry
    } else {
        kvm.install_spte(cx, gfn, pfn, f.writable, &l.slot, fault_start)
            .await;
        PfResult::Fixed
    };
    kvm.policy.release(cx, kvm, &f).await;
    cx.unlock(kvm.mmu_lock).await;
    r
}
