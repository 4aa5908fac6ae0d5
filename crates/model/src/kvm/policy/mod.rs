//! `hva_to_pfn` as each kernel era wrote it. Every era is its own file, written to read like
//! the C it mirrors; what they share (the reference heuristics of `kvm_main.c` before v6.13)
//! lives in [`common`].

/// The `Policy` impl every pre-v6.13 era shares: `__gfn_to_pfn_memslot` (read-only slot
/// handling) around the era's own `hva_to_pfn`, and `kvm_release_pfn_clean` to release.
/// `$zero_refcounted`: whether the era has 7df003c85218 (see `common::kvm_is_reserved_pfn`).
/// `$hva_to_pfn [$remapped]`: an `hva_to_pfn` body several eras share, given the era's own
/// `hva_to_pfn_remapped`.
macro_rules! pre_6_13_policy {
    ($ty:ident, $id:expr, $hva_to_pfn:path $([$remapped:expr])?, $zero_refcounted:expr) => {
        pub struct $ty;

        impl super::Policy for $ty {
            fn id(&self) -> super::PolicyId {
                $id
            }

            fn faultin<'a>(
                &'a self,
                cx: &'a world::Cx,
                kvm: &'a std::rc::Rc<crate::kvm::Kvm>,
                l: &'a super::Lookup,
            ) -> crate::mm::LocalBoxFuture<'a, super::Faultin> {
                Box::pin(async move {
                    let _f = cx.func("__gfn_to_pfn_memslot");
                    let (addr, slot_writable) =
                        match super::common::slot_hva(&l.slot, l.gfn, l.write) {
                            Ok(x) => x,
                            Err(e) => return super::Faultin::err(e),
                        };
                    // A read-only slot, and kvm_vcpu_map, pass writable = NULL.
                    let writable = slot_writable && !l.pin;
                    $hva_to_pfn(cx, kvm, addr, l.nowait, l.write, writable $(, $remapped)?).await
                })
            }

            fn release<'a>(
                &'a self,
                cx: &'a world::Cx,
                kvm: &'a std::rc::Rc<crate::kvm::Kvm>,
                f: &'a super::Faultin,
            ) -> crate::mm::LocalBoxFuture<'a, ()> {
                Box::pin(super::common::kvm_release_pfn_clean(
                    cx,
                    kvm,
                    f.pfn,
                    $zero_refcounted,
                ))
            }
        }
    };
}

pub mod common;
mod v4_16;
mod v4_7;
mod v4_8;
mod v5_12;
mod v5_13;
mod v6_13;

use super::{Kvm, KvmPfn, Memslot};
use crate::mm::{LocalBoxFuture, Pfn};
use std::fmt;
use std::rc::Rc;
use world::Cx;

/// What the x86 fault path gets back from the host lookup (`struct kvm_page_fault`'s
/// `pfn`, `map_writable`, `refcounted_page`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Faultin {
    pub pfn: KvmPfn,
    /// `map_writable` / `*writable`: may the SPTE be writable.
    pub writable: bool,
    /// The reference KVM holds and must release (`refcounted_page`, or for pre-6.13 eras the
    /// pfn whose `kvm_release_pfn_clean` will `put_page` it, decided at release time).
    pub page: Option<Pfn>,
}

impl Faultin {
    pub fn err(pfn: KvmPfn) -> Self {
        Faultin {
            pfn,
            writable: false,
            page: None,
        }
    }
}

/// A lookup request (`struct kvm_follow_pfn`, or the argument list of older eras).
#[derive(Clone, Debug)]
pub struct Lookup {
    pub slot: Memslot,
    pub gfn: u64,
    pub write: bool,
    /// Pass 1 of the x86 fault (`async`/`FOLL_NOWAIT`): don't sleep for I/O.
    pub nowait: bool,
    /// `kvm_vcpu_map`-style caller that will access the page outside MMU-notifier protection.
    pub pin: bool,
}

/// One era's host page resolution.
pub trait Policy {
    fn id(&self) -> PolicyId;

    /// `__gfn_to_pfn_memslot()` / `kvm_follow_pfn()` → `hva_to_pfn()` for this era.
    fn faultin<'a>(
        &'a self,
        cx: &'a Cx,
        kvm: &'a Rc<Kvm>,
        l: &'a Lookup,
    ) -> LocalBoxFuture<'a, Faultin>;

    /// Drop what [`Policy::faultin`] took: `kvm_release_pfn_clean()` (≤ v6.12) or
    /// `kvm_release_faultin_page()` (v6.13), under `mmu_lock` on the SPTE path.
    fn release<'a>(
        &'a self,
        cx: &'a Cx,
        kvm: &'a Rc<Kvm>,
        f: &'a Faultin,
    ) -> LocalBoxFuture<'a, ()>;

    /// The deliberate defect of a mutant policy, if this is one.
    fn mutant(&self) -> Option<Mutant> {
        None
    }

    /// The x86 fault path's invalidation protocol in this era.
    fn retry_protocol(&self) -> RetryProtocol {
        self.id().retry_protocol()
    }
}

/// How the x86 stage-2 fault decides that its host lookup may be stale (`RET_PF_RETRY`), and
/// which invalidations the MMU notifier counts: the protocol each era had.
///
/// Every form snapshots the sequence count before the host lookup and re-checks under
/// `mmu_lock` before installing the SPTE; they differ in what an invalidation in progress
/// means to a fault and in whether there is a lockless pre-check.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum RetryProtocol {
    /// `mmu_notifier_retry(kvm, mmu_seq)` (v2.6.27–v5.11 on x86): under `mmu_lock`, retry if
    /// `mmu_notifier_count != 0` — *any* invalidation in progress, whatever it covers — or if
    /// `mmu_notifier_seq` moved. No lockless pre-check. The notifier counts every
    /// invalidation of the mm, memslot or not.
    CountOnly,
    /// `mmu_notifier_retry_hva(kvm, mmu_seq, hva)` (4a42d848db2a, v5.12; through v6.7 as
    /// `mmu_invalidate_retry_hva`): under `mmu_lock`, retry only if the faulting address is
    /// inside the union of the invalidations in progress, or if the sequence moved. No
    /// lockless pre-check. The notifier still counts every invalidation (until v5.15).
    RangeLocked,
    /// `mmu_invalidate_retry_gfn()` under `mmu_lock` plus the lockless
    /// `mmu_invalidate_retry_gfn_unsafe()` pre-checks before and after the lookup
    /// (d02c357e5bfa, v6.8). The notifier counts only invalidations that hit a memslot.
    RangePrecheck,
}

impl RetryProtocol {
    /// Whether the fault path pre-checks locklessly before taking `mmu_lock`.
    pub fn has_precheck(self) -> bool {
        self == RetryProtocol::RangePrecheck
    }

    /// Whether an invalidation in progress retries a fault only when it covers the faulting
    /// address (else: any invalidation in progress does).
    pub fn is_ranged(self) -> bool {
        self != RetryProtocol::CountOnly
    }

    /// Whether the MMU notifier bumps the count and sequence for every invalidation of the
    /// mm, including ranges no memslot maps (before v5.15), rather than only
    /// for those that hit a memslot.
    pub fn counts_every_invalidation(self) -> bool {
        self != RetryProtocol::RangePrecheck
    }

    /// The kernel function that makes the authoritative check under `mmu_lock`.
    pub fn locked_check(self) -> &'static str {
        match self {
            RetryProtocol::CountOnly => "mmu_notifier_retry",
            RetryProtocol::RangeLocked => "mmu_notifier_retry_hva",
            RetryProtocol::RangePrecheck => "mmu_invalidate_retry_gfn",
        }
    }
}

/// A deliberately broken variant of linux-6.13, to test that the checker finds what it must:
/// each removes one piece of the protocol that keeps a stale pfn out of the stage-2 tables.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mutant {
    /// Install the SPTE without the authoritative `mmu_invalidate_retry_gfn()` under
    /// `mmu_lock` (only the lockless pre-checks remain).
    NoLockedRecheck,
    /// Snapshot `mmu_invalidate_seq` after the host lookup instead of before it: an
    /// invalidation that starts and ends during the lookup goes unnoticed.
    LateSeqSnapshot,
    /// Ignore `unlocked` from `fixup_user_fault()`: keep using the vma looked up before the
    /// mmap lock was dropped instead of returning -EAGAIN to look it up again.
    IgnoreUnlocked,
    /// Delete or move a memslot without `kvm_arch_flush_shadow_memslot()`: the old slot's
    /// SPTEs outlive it.
    NoSlotFlush,
    /// Swap memslots without `synchronize_srcu()`: a fault that looked the old slot up can
    /// install its SPTE after the old slot's flush.
    NoSrcuSync,
}

impl Mutant {
    pub const ALL: [Mutant; 5] = [
        Mutant::NoLockedRecheck,
        Mutant::LateSeqSnapshot,
        Mutant::IgnoreUnlocked,
        Mutant::NoSlotFlush,
        Mutant::NoSrcuSync,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mutant::NoLockedRecheck => "mutant:no-locked-recheck",
            Mutant::LateSeqSnapshot => "mutant:late-seq-snapshot",
            Mutant::IgnoreUnlocked => "mutant:ignore-unlocked",
            Mutant::NoSlotFlush => "mutant:no-slot-flush",
            Mutant::NoSrcuSync => "mutant:no-srcu-sync",
        }
    }

    pub fn summary(self) -> &'static str {
        match self {
            Mutant::NoLockedRecheck => {
                "linux-6.13 without the locked mmu_invalidate_retry_gfn recheck under mmu_lock"
            }
            Mutant::LateSeqSnapshot => {
                "linux-6.13 snapshotting mmu_invalidate_seq after the host lookup, not before"
            }
            Mutant::IgnoreUnlocked => {
                "linux-6.13 ignoring fixup_user_fault's unlocked (no -EAGAIN re-lookup of the vma)"
            }
            Mutant::NoSlotFlush => {
                "linux-6.13 deleting or moving a memslot without flushing the old slot's SPTEs"
            }
            Mutant::NoSrcuSync => {
                "linux-6.13 swapping memslots without synchronize_srcu (in-flight faults not drained)"
            }
        }
    }
}

/// The eras kvmmu implements, and the mutants of the newest one.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyId {
    Linux4_7,
    Linux4_8,
    Linux4_16,
    Linux5_12,
    Linux5_13,
    Linux6_13,
    /// linux-6.13 with one defect (not in the default matrix).
    Mutant(Mutant),
}

impl PolicyId {
    pub const ALL: [PolicyId; 6] = [
        PolicyId::Linux4_7,
        PolicyId::Linux4_8,
        PolicyId::Linux4_16,
        PolicyId::Linux5_12,
        PolicyId::Linux5_13,
        PolicyId::Linux6_13,
    ];

    /// The mutants, selectable by name but absent from the default matrix.
    pub const MUTANTS: [PolicyId; 5] = [
        PolicyId::Mutant(Mutant::NoLockedRecheck),
        PolicyId::Mutant(Mutant::LateSeqSnapshot),
        PolicyId::Mutant(Mutant::IgnoreUnlocked),
        PolicyId::Mutant(Mutant::NoSlotFlush),
        PolicyId::Mutant(Mutant::NoSrcuSync),
    ];

    pub fn name(self) -> &'static str {
        match self {
            PolicyId::Linux4_7 => "linux-4.7",
            PolicyId::Linux4_8 => "linux-4.8",
            PolicyId::Linux4_16 => "linux-4.16",
            PolicyId::Linux5_12 => "linux-5.12",
            PolicyId::Linux5_13 => "linux-5.13",
            PolicyId::Linux6_13 => "linux-6.13",
            PolicyId::Mutant(m) => m.name(),
        }
    }

    /// One line for `kvmmu list`.
    pub fn summary(self) -> &'static str {
        match self {
            PolicyId::Linux4_7 => "before the patch: pfn = (hva - vm_start) >> PAGE_SHIFT + vm_pgoff, BUG_ON(!reserved)",
            PolicyId::Linux4_8 => "the patch (add6a0cd1c5b), v4.8-v4.15: follow_pfn, fixup_user_fault, -EAGAIN retry, kvm_get_pfn; writable = write_fault",
            PolicyId::Linux4_16 => "a340b3e229b2, v4.16-v5.11: as linux-4.8, but *writable = true: read faults map PFNMAP memory writable, whatever the PTE",
            PolicyId::Linux5_12 => "bd2fae8da794: follow_pte under the PTL, RO_FAULT on a write to a read-only PTE",
            PolicyId::Linux5_13 => "f8be156be163 (CVE-2021-22543): kvm_try_get_pfn, refcount 0 gives -EFAULT",
            PolicyId::Linux6_13 => "kvm_follow_pfn: follow_pfnmap_start/end, no references on PFNMAP pfns, allow_unsafe_mappings gates pins",
            PolicyId::Mutant(m) => m.summary(),
        }
    }

    /// An era or a mutant, by name.
    pub fn from_name(s: &str) -> Option<PolicyId> {
        PolicyId::ALL
            .into_iter()
            .chain(PolicyId::MUTANTS)
            .find(|p| p.name() == s)
    }

    /// The x86 fault path's invalidation protocol in this era (see [`RetryProtocol`]).
    pub fn retry_protocol(self) -> RetryProtocol {
        match self {
            PolicyId::Linux4_7 | PolicyId::Linux4_8 | PolicyId::Linux4_16 => {
                RetryProtocol::CountOnly
            }
            PolicyId::Linux5_12 | PolicyId::Linux5_13 => RetryProtocol::RangeLocked,
            PolicyId::Linux6_13 | PolicyId::Mutant(_) => RetryProtocol::RangePrecheck,
        }
    }

    /// Whether a stage-2 fault that finds its memslot `KVM_MEMSLOT_INVALID` (being deleted or
    /// moved) retries (`RET_PF_RETRY`), as since e0c378684b65 "KVM: x86/mmu: Retry page
    /// faults that hit an invalid memslot" (v5.13; 5.12.4 stable). Before it,
    /// `__gfn_to_hva_many` refused the invalid slot, `__gfn_to_pfn_memslot` returned
    /// `KVM_PFN_NOSLOT`, and the fault installed an MMIO SPTE and emulated the access as
    /// MMIO: an exit to the VMM in the window, even at a gfn the slot covers before and after
    /// a move (set_memory_region_test: "the guest _might_ see an invalid memslot and trigger
    /// MMIO"). linux-5.12 models v5.12.0.
    pub fn invalid_slot_retries(self) -> bool {
        matches!(
            self,
            PolicyId::Linux5_13 | PolicyId::Linux6_13 | PolicyId::Mutant(_)
        )
    }

    /// Whether this is a mutant (selectable by name, never in the default matrix).
    pub fn is_mutant(self) -> bool {
        matches!(self, PolicyId::Mutant(_))
    }

    pub fn build(self) -> Rc<dyn Policy> {
        match self {
            PolicyId::Linux4_7 => Rc::new(v4_7::Linux4_7),
            PolicyId::Linux4_8 => Rc::new(v4_8::Linux4_8),
            PolicyId::Linux4_16 => Rc::new(v4_16::Linux4_16),
            PolicyId::Linux5_12 => Rc::new(v5_12::Linux5_12),
            PolicyId::Linux5_13 => Rc::new(v5_13::Linux5_13),
            PolicyId::Linux6_13 => Rc::new(v6_13::Linux6_13 { mutant: None }),
            PolicyId::Mutant(m) => Rc::new(v6_13::Linux6_13 { mutant: Some(m) }),
        }
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
