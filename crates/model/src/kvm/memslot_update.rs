//! `KVM_SET_USER_MEMORY_REGION` while vCPUs run (virt/kvm/kvm_main.c, v6.x:
//! `kvm_set_memory_region` → `kvm_set_memslot`), and what keeps a fault from mapping a gfn
//! through a slot that is going away:
//!
//! - **SRCU.** A vCPU looks memslots up inside an SRCU read section (`kvm->srcu`, held from
//!   the VM exit until the next guest entry); an update installs a new memslot array
//!   (`kvm_swap_active_memslots`: generation bump) and then `synchronize_srcu` waits for every
//!   section that began before it.
//! - **`KVM_MEMSLOT_INVALID`.** A delete or move first installs an invalid copy of the old slot
//!   (`kvm_invalidate_memslot`), waits for SRCU readers, then flushes the old slot's SPTEs
//!   (`kvm_arch_flush_shadow_memslot`) before installing the final array. A fault that finds
//!   the invalid slot returns `RET_PF_RETRY` (e0c378684b65, v5.13) and re-enters the guest;
//!   before v5.13 it treated the slot as absent and exited as MMIO
//!   ([`crate::kvm::PolicyId::invalid_slot_retries`]). Either way no SPTE is installed
//!   through it after the flush.
//! - **`mn_active_invalidate_count`.** A swap waits while an MMU-notifier invalidation is
//!   between `invalidate_range_start` and `_end` (52ac8b358b0c), so both callbacks see
//!   the same memslots and `mmu_invalidate_in_progress` stays balanced.
//!
//! Simplifications (docs/model.md): x86 flushes the old slot with "zap all" by default
//! (`KVM_X86_QUIRK_SLOT_ZAP_ALL`); the model zaps the old slot's gfn range, which differs only
//! in SPTEs of other slots being refaulted. `synchronize_srcu` waits for the sections that
//! saw an older memslot generation, i.e. that began before the swap and looked a slot up;
//! sections that began before it but had not looked anything up yet would read the new
//! array anyway. Every era uses this v6.x update protocol (`mn_active_invalidate_count`
//! included); nested `kvm_vcpu_map` lookups take no SRCU section. Flags other than `KVM_MEM_READONLY` (dirty logging, guest_memfd) are not modelled.

use super::{Kvm, Memslot, Mutant};
use crate::mm::{Errno, Hva, EEXIST, EINVAL};
use std::rc::Rc;
use world::{audit, Access, Cx, FpSet, LockMode};

/// The arguments of one `KVM_SET_USER_MEMORY_REGION` (`struct kvm_userspace_memory_region`):
/// `npages == 0` deletes the slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRequest {
    pub id: u32,
    pub base_gfn: u64,
    pub npages: u64,
    pub userspace_addr: Hva,
    pub readonly: bool,
}

/// `enum kvm_mr_change`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Change {
    Create,
    Delete,
    Move,
}

impl Kvm {
    /// The scenario changes memslots while actors run (see [`Kvm::lookup_slot`]).
    pub fn set_dynamic_slots(&self, on: bool) {
        self.dynamic_slots.set(on);
    }

    pub fn dynamic_slots(&self) -> bool {
        self.dynamic_slots.get()
    }

    /// `kvm_vcpu_srcu_read_lock()` on a VM exit: from here until the next guest entry the
    /// vCPU's memslot lookups are protected from `synchronize_srcu`.
    pub async fn srcu_read_lock(&self, cx: &Cx, vcpu: usize) {
        if !self.dynamic_slots.get() {
            return;
        }
        let mut fp = FpSet::one(self.srcu_class.obj(vcpu as u64), Access::Write);
        fp.push(self.slots_obj, Access::Read);
        cx.step_with(fp, "srcu_read_lock(&kvm->srcu)").await;
        audit::write(self.srcu_class.obj(vcpu as u64));
        audit::read(self.slots_obj);
        self.srcu_readers
            .borrow_mut()
            .insert(vcpu, self.generation.get());
    }

    /// `kvm_vcpu_srcu_read_unlock()` before re-entering the guest (or returning to the VMM).
    pub async fn srcu_read_unlock(&self, cx: &Cx, vcpu: usize) {
        if !self.dynamic_slots.get() {
            return;
        }
        cx.access(
            self.srcu_class.obj(vcpu as u64),
            Access::Write,
            "srcu_read_unlock(&kvm->srcu)",
        )
        .await;
        audit::write(self.srcu_class.obj(vcpu as u64));
        self.srcu_readers.borrow_mut().remove(&vcpu);
    }

    /// `synchronize_srcu_expedited(&kvm->srcu)` after a swap: wait until no read section
    /// that saw an older memslot array is still running.
    async fn synchronize_srcu(self: &Rc<Self>, cx: &Cx) {
        if self.policy.mutant() == Some(Mutant::NoSrcuSync) {
            cx.emit_str("MUTANT: no synchronize_srcu");
            return;
        }
        let gen = self.generation.get();
        let k = self.clone();
        let mut fp = FpSet::new();
        fp.add(self.srcu_class.range(0, 1 << 16, Access::Read));
        cx.wait_until_with(
            fp,
            "synchronize_srcu: readers of the old memslots",
            move || {
                audit::read_range(k.srcu_class, 0, 1 << 16);
                k.srcu_readers.borrow().values().all(|&g| g >= gen)
            },
        )
        .await;
    }

    /// `kvm_swap_active_memslots()`: wait until no MMU-notifier invalidation is running
    /// (`mn_active_invalidate_count == 0`, under `mn_invalidate_lock`), then publish the new
    /// array in the same step; the generation moves on. `ghost`: the gfn ranges whose SPTEs
    /// the oracles compare with the slots that change.
    async fn swap_active_memslots(
        self: &Rc<Self>,
        cx: &Cx,
        ghost: &[(u64, u64)],
        what: &'static str,
        change: impl FnOnce(&mut Vec<Memslot>),
    ) {
        let mut fp = FpSet::one(self.mn_obj, Access::Read);
        fp.push(self.slots_obj, Access::Write);
        for &(s, e) in ghost {
            fp.add(self.spte_class.range(s, e, Access::Read));
        }
        let k = self.clone();
        cx.wait_until_with(fp, what, move || {
            audit::read(k.mn_obj);
            k.mn_active.get() == 0
        })
        .await;
        audit::write(self.slots_obj);
        for &(s, e) in ghost {
            audit::read_range(self.spte_class, s, e);
        }
        change(&mut self.memslots.borrow_mut());
        self.generation.set(self.generation.get() + 1);
        world::emit!(cx, "memslots generation {}", self.generation.get());
    }

    /// `kvm_mmu_notifier_invalidate_range_start`: `mn_active_invalidate_count++` and the walk
    /// of the memslots that follows it (one step; only with memslot updates).
    pub(crate) async fn mn_invalidate_start(&self, cx: &Cx) {
        if !self.dynamic_slots.get() {
            return;
        }
        let mut fp = FpSet::one(self.mn_obj, Access::Write);
        fp.push(self.slots_obj, Access::Read);
        cx.step_with(fp, "mn_active_invalidate_count++").await;
        audit::write(self.mn_obj);
        self.mn_active.set(self.mn_active.get() + 1);
    }

    /// `kvm_mmu_notifier_invalidate_range_end`: the memslot walk (before the end of the
    /// invalidation) — one step reading the array.
    pub(crate) async fn mn_invalidate_end_walk(&self, cx: &Cx) {
        if self.dynamic_slots.get() {
            cx.access(self.slots_obj, Access::Read, "kvm_handle_hva_range")
                .await;
        }
    }

    /// `kvm_mmu_notifier_invalidate_range_end`: `--mn_active_invalidate_count`, waking a
    /// memslot update waiting for it.
    pub(crate) async fn mn_invalidate_done(&self, cx: &Cx) {
        if !self.dynamic_slots.get() {
            return;
        }
        cx.access(self.mn_obj, Access::Write, "mn_active_invalidate_count--")
            .await;
        audit::write(self.mn_obj);
        self.mn_active.set(self.mn_active.get() - 1);
    }
}

/// `kvm_set_memory_region()` → `kvm_set_memslot()` (v6.x), issued by a VMM thread.
///
/// Errors as KVM returns them: deleting a slot that does not exist, or changing an existing
/// slot's userspace address, size or `KVM_MEM_READONLY` flag, is `-EINVAL` (the read-only
/// check is 75d61fbcf563 (2013, before every modelled era): a VMM toggles it by deleting and re-creating the slot); a
/// new or moved slot that overlaps another is `-EEXIST`; the same slot again changes nothing.
pub async fn kvm_set_memory_region(cx: &Cx, kvm: &Rc<Kvm>, req: &SlotRequest) -> Result<(), Errno> {
    let _f = cx.func("kvm_set_memory_region");
    // mutex_lock(&kvm->slots_lock); the checks below read the active array under it.
    cx.lock_with(
        kvm.slots_lock,
        LockMode::Exclusive,
        FpSet::one(kvm.slots_obj, Access::Read),
    )
    .await;
    let r = set_locked(cx, kvm, req).await;
    cx.unlock(kvm.slots_lock).await;
    r
}

async fn set_locked(cx: &Cx, kvm: &Rc<Kvm>, req: &SlotRequest) -> Result<(), Errno> {
    audit::read(kvm.slots_obj);
    let slots = kvm.memslots.borrow().clone();
    let old = slots.iter().find(|s| s.id == req.id).cloned();
    let overlaps = |base: u64, n: u64| {
        slots
            .iter()
            .any(|s| s.id != req.id && base < s.end_gfn() && s.base_gfn < base + n)
    };
    let change = match (&old, req.npages) {
        (None, 0) => {
            cx.emit_str("delete of a slot that does not exist: -EINVAL");
            return Err(EINVAL);
        }
        (Some(_), 0) => Change::Delete,
        (None, n) => {
            if overlaps(req.base_gfn, n) {
                cx.emit_str("overlaps another memslot: -EEXIST");
                return Err(EEXIST);
            }
            Change::Create
        }
        (Some(o), n) => {
            if o.userspace_addr != req.userspace_addr || o.npages != n {
                cx.emit_str("an existing slot's address or size cannot change: -EINVAL");
                return Err(EINVAL);
            }
            if o.readonly != req.readonly {
                cx.emit_str("KVM_MEM_READONLY cannot change on an existing slot: -EINVAL");
                return Err(EINVAL);
            }
            if o.base_gfn == req.base_gfn {
                cx.emit_str("nothing to change");
                return Ok(());
            }
            if overlaps(req.base_gfn, n) {
                cx.emit_str("moved slot overlaps another memslot: -EEXIST");
                return Err(EEXIST);
            }
            Change::Move
        }
    };
    world::emit!(cx, "slot {}: {change:?}", req.id);
    let new = Memslot {
        id: req.id,
        base_gfn: req.base_gfn,
        npages: req.npages,
        userspace_addr: req.userspace_addr,
        readonly: req.readonly,
        invalid: false,
        serial: kvm.new_serial(),
    };
    let mut ghost = vec![(new.base_gfn, new.end_gfn())];
    if let Some(o) = &old {
        // kvm_invalidate_memslot(): the invalid copy, readers drained, the old SPTEs gone.
        let _i = cx.func("kvm_invalidate_memslot");
        ghost.push((o.base_gfn, o.end_gfn()));
        let serial = o.serial;
        kvm.swap_active_memslots(
            cx,
            &ghost[1..],
            "kvm_swap_active_memslots (KVM_MEMSLOT_INVALID)",
            |s| {
                for x in s.iter_mut().filter(|x| x.serial == serial) {
                    x.invalid = true;
                }
            },
        )
        .await;
        kvm.synchronize_srcu(cx).await;
        if kvm.policy.mutant() == Some(Mutant::NoSlotFlush) {
            cx.emit_str("MUTANT: no kvm_arch_flush_shadow_memslot of the old slot");
        } else {
            let _z = cx.func("kvm_arch_flush_shadow_memslot");
            cx.lock(kvm.mmu_lock, LockMode::Exclusive).await;
            kvm.zap_gfn_range(cx, o.base_gfn, o.end_gfn()).await;
            cx.unlock(kvm.mmu_lock).await;
        }
    }
    let serial = old.as_ref().map(|o| o.serial);
    let what = match change {
        Change::Create => "kvm_swap_active_memslots (create)",
        Change::Delete => "kvm_swap_active_memslots (delete)",
        Change::Move => "kvm_swap_active_memslots (move)",
    };
    kvm.swap_active_memslots(cx, &ghost, what, |s| {
        s.retain(|x| Some(x.serial) != serial);
        if change != Change::Delete {
            s.push(new);
        }
    })
    .await;
    kvm.synchronize_srcu(cx).await;
    Ok(())
}
