//! KVM's MMU-notifier callbacks (virt/kvm/kvm_main.c, v6.x `kvm_mmu_notifier_invalidate_range_start/end`).
//!
//! Before v5.15 the callbacks took `mmu_lock` and bumped the count (and at the end the
//! sequence) for *every* invalidation of the mm, whether or not a memslot maps the range
//! (v4.19, v5.12 and v5.14-rc kvm_main.c); the eras whose
//! [`RetryProtocol::counts_every_invalidation`](super::RetryProtocol::counts_every_invalidation)
//! say so do that here too.

use super::Kvm;
use crate::mm::{LocalBoxFuture, MmuNotifier, NotifierRange};
use std::rc::Weak;
use world::{Cx, LockMode};

pub(crate) struct KvmNotifier(pub Weak<Kvm>);

impl MmuNotifier for KvmNotifier {
    /// `mn_active_invalidate_count++` (with memslot updates in the scenario), then for every
    /// memslot overlapping the hva range: on the first overlap take `mmu_lock` and
    /// `kvm_mmu_invalidate_begin`; add the gfn range to the union; zap those SPTEs. Ranges
    /// that overlap no memslot do not touch `in_progress` or `seq` (before v5.15 they do:
    /// `mmu_lock` and `begin` come first, for every range). The event is ignored.
    fn invalidate_range_start<'a>(
        &'a self,
        cx: &'a Cx,
        r: &'a NotifierRange,
    ) -> LocalBoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(kvm) = self.0.upgrade() else { return };
            let _f = cx.func("kvm_mmu_notifier_invalidate_range_start");
            kvm.mn_invalidate_start(cx).await;
            let slots = kvm.active_slots();
            let mut locked = false;
            if kvm.policy.retry_protocol().counts_every_invalidation() {
                cx.lock(kvm.mmu_lock, LockMode::Exclusive).await;
                kvm.invalidate_begin(cx).await;
                locked = true;
            }
            for s in slots {
                let Some((gs, ge)) = s.hva_range_to_gfns(r.start, r.end) else {
                    continue;
                };
                if !locked {
                    cx.lock(kvm.mmu_lock, LockMode::Exclusive).await;
                    kvm.invalidate_begin(cx).await;
                    locked = true;
                }
                kvm.invalidate_range_add(cx, gs, ge).await;
                kvm.zap_gfn_range(cx, gs, ge).await;
            }
            if locked {
                cx.unlock(kvm.mmu_lock).await;
            }
        })
    }

    /// On overlap (before v5.15: always): `mmu_lock`, `kvm_mmu_invalidate_end` (`seq++`
    /// before `in_progress--`); then `mn_active_invalidate_count--`.
    fn invalidate_range_end<'a>(
        &'a self,
        cx: &'a Cx,
        r: &'a NotifierRange,
    ) -> LocalBoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(kvm) = self.0.upgrade() else { return };
            let _f = cx.func("kvm_mmu_notifier_invalidate_range_end");
            kvm.mn_invalidate_end_walk(cx).await;
            let overlaps = kvm.policy.retry_protocol().counts_every_invalidation()
                || kvm
                    .active_slots()
                    .iter()
                    .any(|s| s.hva_range_to_gfns(r.start, r.end).is_some());
            if overlaps {
                cx.lock(kvm.mmu_lock, LockMode::Exclusive).await;
                kvm.invalidate_end(cx).await;
                cx.unlock(kvm.mmu_lock).await;
            }
            kvm.mn_invalidate_done(cx).await;
        })
    }
}
