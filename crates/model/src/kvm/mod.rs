//! KVM: memslots, the era-specific `hva_to_pfn` policies, the x86 page-fault path with the
//! `mmu_invalidate_seq` protocol, KVM's MMU-notifier callbacks, vCPUs and pinned maps.
//!
//! Lock order: `mmap_lock` (taken inside `hva_to_pfn`, never held across `mmu_lock`) →
//! `mmu_lock`. The notifier callbacks take `mmu_lock` while the mm side holds whatever lock
//! its zap path holds (`mmap_lock` for munmap/mprotect/madvise, `i_mmap_rwsem` for
//! `unmap_mapping_range`).
//!
//! Stage 2 is modelled as one SPTE per gfn (4 KiB, no huge pages, no shadow-paging
//! structure). The MMU lock is taken for write, as on this machine's shadow MMU (the TDP
//! MMU takes it for read; the retry protocol is the same).
//!
//! Footprint objects: `spte <gfn>` per stage-2 entry (walked locklessly by the hardware, so
//! declared everywhere), `mmu_invalidate_seq` for the invalidation state (read locklessly,
//! written under `mmu_lock`). Steps that create or destroy a guest mapping also declare
//! *ghost reads* of the host PTE and the `struct page` it is about (and every host PTE write
//! declares a read of the invalidation state, see [`crate::mm::Mm::observe_ptes`]): the
//! oracles compare those objects whenever one of them changes, and the ghost reads keep the
//! explorer from reordering the changes they compare — an invariant is then judged the same
//! in every interleaving the explorer treats as equivalent.

pub mod fault;
pub mod memslot;
pub mod memslot_update;
pub mod notifier;
pub mod pfn;
pub mod pin;
pub mod policy;
pub mod vcpu;

pub use memslot::{GfnHva, Memslot};
pub use pfn::KvmPfn;
pub use policy::{Faultin, Mutant, Policy, PolicyId, RetryProtocol};

use crate::mm::{Frames, Hva, Mm, Owner, Pfn};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use world::{audit, Access, Class, Cx, FpSet, LockId, LockKind, ObjId, ProviderId, World};

/// A stage-2 leaf entry for one gfn, with what the oracles need to judge it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spte {
    pub pfn: Pfn,
    pub write: bool,
    /// The hva the fault resolved (memslot translation at fault time).
    pub hva: Hva,
    /// Frame identity at install time: a later change means the SPTE outlived its frame.
    pub generation: u32,
    pub owner: Option<Owner>,
    /// Step at which the fault snapshotted `mmu_invalidate_seq` (before the host lookup).
    pub fault_start: u64,
    pub installed_at: u64,
    /// The memslot the fault resolved the gfn through: (id, [`Memslot::serial`]).
    pub slot: (u32, u64),
}

/// What a hardware stage-2 walk finds for a gfn: the leaf SPTE's pfn and write permission,
/// and the hva it was resolved from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub pfn: Pfn,
    pub write: bool,
    pub hva: Hva,
}

/// A `kvm_vcpu_map()`-style kernel mapping of a guest page, outside MMU-notifier protection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedMap {
    pub id: u64,
    pub gfn: u64,
    pub hva: Hva,
    /// Step at which the lookup started (for the `right-frame` oracle).
    pub fault_start: u64,
    pub pfn: Pfn,
    pub generation: u32,
    pub owner: Option<Owner>,
}

/// `struct kvm`: one VM of the VMM process whose mm is [`Kvm::mm`].
pub struct Kvm {
    pub mm: Rc<Mm>,
    pub frames: Rc<Frames>,
    pub policy: Rc<dyn Policy>,
    /// `kvm->mmu_lock`.
    pub mmu_lock: LockId,
    /// Footprint of `mmu_invalidate_seq` / `_in_progress` / `_range_*`.
    pub inv_obj: ObjId,
    /// `spte <gfn>` objects (hardware walks read them; installs and zaps write them).
    spte_class: Class,
    /// Footprint of a guest access: the SPTE walk and the frame it reaches.
    access_fp: ProviderId,
    /// The active memslots (`kvm->memslots[0]`). Set up before the run; actors change them
    /// only through [`memslot_update`], and only when [`Kvm::dynamic_slots`] is set.
    pub memslots: RefCell<Vec<Memslot>>,
    /// Footprint of the active memslot array (read by lookups, written by a swap).
    slots_obj: ObjId,
    /// Whether actors may change the memslots (the scenario has memslot host steps). Only
    /// then do memslot lookups, SRCU read sections and the notifier's
    /// `mn_active_invalidate_count` take steps: scenarios without memslot changes explore
    /// exactly what they did before.
    dynamic_slots: Cell<bool>,
    /// `kvm->memslots[0]->generation` (bumped by every swap).
    generation: Cell<u64>,
    next_serial: Cell<u64>,
    /// `kvm->slots_lock`: serializes `KVM_SET_USER_MEMORY_REGION`.
    slots_lock: LockId,
    /// Per vCPU, `srcu_reader <vcpu>`: its SRCU read section (`kvm->srcu`).
    srcu_class: Class,
    /// vCPU → the memslot generation it saw when its read section began.
    srcu_readers: RefCell<BTreeMap<usize, u64>>,
    /// `kvm->mn_active_invalidate_count` (and its footprint object).
    mn_active: Cell<u32>,
    mn_obj: ObjId,
    /// `kvm.allow_unsafe_mappings` module parameter (v6.13+).
    pub allow_unsafe_mappings: Cell<bool>,
    seq: Cell<u64>,
    in_progress: Cell<i64>,
    range: Cell<Option<(u64, u64)>>,
    sptes: Rc<RefCell<BTreeMap<u64, Spte>>>,
    /// References KVM took on pages (kvm_get_pfn, GUP) and has not yet dropped.
    refs: RefCell<BTreeMap<Pfn, i64>>,
    refs_taken: Cell<u64>,
    pins: RefCell<Vec<PinnedMap>>,
    pin_log: RefCell<Vec<PinnedMap>>,
    next_pin: Cell<u64>,
    /// Every SPTE ever installed (for the `right-frame` oracle).
    installs: RefCell<Vec<(u64, Spte)>>,
}

impl Kvm {
    /// `KVM_CREATE_VM` + `mmu_notifier_register()` on the process mm.
    pub fn new(world: &mut World, mm: &Rc<Mm>, policy: Rc<dyn Policy>) -> Rc<Self> {
        let inv_obj = world.object("mmu_invalidate_seq");
        let spte_class = world.class("spte");
        let sptes: Rc<RefCell<BTreeMap<u64, Spte>>> = Rc::new(RefCell::new(BTreeMap::new()));
        let (s, m) = (sptes.clone(), Rc::downgrade(mm));
        // arg: gfn, bit 63 a store, bit 62 the access also covers gfn + 1 (page-crossing).
        let access_fp = world.provider(Box::new(move |arg, fp| {
            let gfn = arg & !(3 << 62);
            let pages = if arg & (1 << 62) != 0 { 2 } else { 1 };
            for gfn in gfn..gfn + pages {
                fp.push(spte_class.obj(gfn), Access::Read);
                let Some(spte) = s.borrow().get(&gfn).map(|x| (x.pfn, x.hva)) else {
                    continue;
                };
                let Some(mm) = m.upgrade() else { return };
                let data = if arg >> 63 == 1 {
                    Access::Write
                } else {
                    Access::Read
                };
                fp.push(mm.frames.data_obj(spte.0), data);
                // Ghost reads for `guest-coherent`: the host's translation and its frame.
                fp.push(mm.pte_obj(spte.1), Access::Read);
                if let Some(host) = audit::suspended(|| mm.pte(spte.1)) {
                    fp.push(mm.frames.data_obj(host.pfn), Access::Read);
                }
            }
        }));
        mm.observe_ptes(inv_obj);
        let slots_obj = world.object("memslots");
        let mn_obj = world.object("mn_active_invalidate_count");
        let slots_lock = world.lock("slots_lock", LockKind::Mutex);
        let srcu_class = world.class("srcu_reader");
        let kvm = Rc::new(Kvm {
            slots_obj,
            dynamic_slots: Cell::new(false),
            generation: Cell::new(0),
            next_serial: Cell::new(0),
            slots_lock,
            srcu_class,
            srcu_readers: RefCell::new(BTreeMap::new()),
            mn_active: Cell::new(0),
            mn_obj,
            mm: mm.clone(),
            frames: mm.frames.clone(),
            policy,
            mmu_lock: world.lock("mmu_lock", LockKind::RwSem),
            inv_obj,
            spte_class,
            access_fp,
            memslots: RefCell::new(Vec::new()),
            allow_unsafe_mappings: Cell::new(false),
            seq: Cell::new(0),
            in_progress: Cell::new(0),
            range: Cell::new(None),
            sptes,
            refs: RefCell::new(BTreeMap::new()),
            refs_taken: Cell::new(0),
            pins: RefCell::new(Vec::new()),
            pin_log: RefCell::new(Vec::new()),
            next_pin: Cell::new(0),
            installs: RefCell::new(Vec::new()),
        });
        mm.register_notifier(Rc::new(notifier::KvmNotifier(Rc::downgrade(&kvm))));
        kvm
    }

    /// Footprint object of the SPTE of `gfn`.
    pub fn spte_obj(&self, gfn: u64) -> ObjId {
        self.spte_class.obj(gfn)
    }

    /// The class of `spte <gfn>` objects.
    pub fn spte_class(&self) -> Class {
        self.spte_class
    }

    /// The hva `gfn` translates to through the memslots, if any slot covers it.
    pub fn gfn_to_hva(&self, gfn: u64) -> Option<Hva> {
        self.gfn_to_memslot(gfn).map(|s| s.gfn_to_hva(gfn))
    }

    /// Ghost footprint of a change of `gfn`'s guest mapping to `pfn` through `hva`: the host
    /// PTE and the `struct page` the oracles compare it with.
    fn mapping_ghosts(&self, fp: &mut FpSet, hva: Hva, pfn: Pfn) {
        fp.push(self.mm.pte_obj(hva), Access::Read);
        if self.frames.pfn_valid(pfn) {
            fp.push(self.frames.obj(pfn), Access::Read);
        }
    }

    /// `KVM_SET_USER_MEMORY_REGION` creating a slot during setup (no actor runs yet).
    pub fn set_memslot(&self, mut slot: Memslot) {
        slot.serial = self.new_serial();
        self.memslots.borrow_mut().push(slot);
    }

    fn new_serial(&self) -> u64 {
        let n = self.next_serial.get();
        self.next_serial.set(n + 1);
        n
    }

    /// `gfn_to_memslot()` (also a slot being deleted or moved: the caller checks
    /// [`Memslot::invalid`]). Actors that may race a memslot update use
    /// [`Kvm::lookup_slot`], which declares the read.
    pub fn gfn_to_memslot(&self, gfn: u64) -> Option<Memslot> {
        if self.dynamic_slots.get() {
            audit::read(self.slots_obj);
        }
        self.memslots
            .borrow()
            .iter()
            .find(|s| s.contains(gfn))
            .cloned()
    }

    /// `kvm_vcpu_gfn_to_memslot()` by an actor: with memslot updates in the scenario, a
    /// step that reads the active memslot array (under the caller's SRCU read section).
    pub async fn lookup_slot(&self, cx: &Cx, gfn: u64) -> Option<Memslot> {
        if self.dynamic_slots.get() {
            cx.access(self.slots_obj, Access::Read, "gfn_to_memslot")
                .await;
        }
        self.gfn_to_memslot(gfn)
    }

    /// A copy of the active memslot array (declared as a read with memslot updates).
    pub fn active_slots(&self) -> Vec<Memslot> {
        if self.dynamic_slots.get() {
            audit::read(self.slots_obj);
        }
        self.memslots.borrow().clone()
    }

    /// Whether the memslot [`Memslot::serial`] names is still installed.
    pub fn slot_installed(&self, serial: u64) -> bool {
        self.memslots.borrow().iter().any(|s| s.serial == serial)
    }

    /// Footprint object of the active memslot array.
    pub fn slots_obj(&self) -> ObjId {
        self.slots_obj
    }

    /// `READ_ONCE(kvm->mmu_invalidate_seq)` + `smp_rmb()` at the start of a fault on `gfn`
    /// (with a ghost read of the host PTE the fault will look up: `right-frame` asks what it
    /// held from this point on).
    pub async fn read_seq(&self, cx: &Cx, gfn: u64) -> u64 {
        let mut fp = FpSet::one(self.inv_obj, Access::Read);
        // Which PTE the ghost names is footprint bookkeeping, not a read of the memslots.
        if let Some(hva) = audit::suspended(|| self.gfn_to_hva(gfn)) {
            fp.push(self.mm.pte_obj(hva), Access::Read);
        }
        cx.step_with(fp, "READ_ONCE(mmu_invalidate_seq)").await;
        audit::read(self.inv_obj);
        self.seq.get()
    }

    /// Why an invalidation in progress makes a fault on `gfn` retry under this era's
    /// [`RetryProtocol`], if it does.
    fn invalidation_hits(&self, gfn: u64) -> Option<&'static str> {
        if self.in_progress.get() == 0 {
            return None;
        }
        match (self.policy.retry_protocol(), self.range.get()) {
            (RetryProtocol::CountOnly, _) => Some("an invalidation is in progress (count != 0)"),
            // v5.12-v6.7 set the (hva) range with the count, under the same lock: a range
            // not set here is one no memslot maps.
            (RetryProtocol::RangeLocked, None) => None,
            (RetryProtocol::RangePrecheck, None) => {
                Some("invalidation in progress, range not yet set")
            }
            (_, Some((s, e))) if s <= gfn && gfn < e => {
                Some("gfn inside an invalidation in progress")
            }
            _ => None,
        }
    }

    fn retry_check(&self, gfn: u64, mmu_seq: u64) -> Option<&'static str> {
        audit::read(self.inv_obj);
        if let Some(why) = self.invalidation_hits(gfn) {
            return Some(why);
        }
        (self.seq.get() != mmu_seq).then_some("mmu_invalidate_seq changed")
    }

    /// `mmu_invalidate_retry_gfn_unsafe()` (v6.8+): the lockless pre-check.
    pub async fn retry_gfn_unsafe(&self, cx: &Cx, gfn: u64, mmu_seq: u64) -> bool {
        cx.access(
            self.inv_obj,
            Access::Read,
            "READ_ONCE(mmu_invalidate_in_progress)",
        )
        .await;
        let r = self.retry_check(gfn, mmu_seq);
        if let Some(why) = r {
            world::emit!(cx, "mmu_invalidate_retry_gfn_unsafe: {why}: retry");
        }
        r.is_some()
    }

    /// `mmu_invalidate_retry_gfn()` (or the era's `mmu_notifier_retry[_hva]()`, see
    /// [`RetryProtocol`]): the authoritative check, under `mmu_lock`.
    pub fn retry_gfn_locked(&self, cx: &Cx, gfn: u64, mmu_seq: u64) -> bool {
        debug_assert!(cx.holds(self.mmu_lock).is_some());
        let r = self.retry_check(gfn, mmu_seq);
        if let Some(why) = r {
            let f = self.policy.retry_protocol().locked_check();
            world::emit!(cx, "{f}: {why}: RET_PF_RETRY");
        }
        r.is_some()
    }

    /// After `RET_PF_RETRY` a vCPU re-enters the guest and faults again at once; while an
    /// invalidation that retries a fault on `gfn` is in progress (one covering `gfn`, or under
    /// [`RetryProtocol::CountOnly`] any at all) every such retry fails the same way. The
    /// model lets the vCPU sleep until that invalidation ends instead of spinning: the same
    /// outcomes, without a busy loop that an unfair schedule could run forever.
    ///
    /// With memslot updates, the same for a retry on a slot being deleted or moved: the vCPU
    /// sleeps until no slot covering `gfn` is `KVM_MEMSLOT_INVALID`.
    pub async fn wait_for_invalidation(self: &Rc<Self>, cx: &Cx, gfn: u64) {
        let k = self.clone();
        let mut fp = FpSet::one(self.inv_obj, Access::Read);
        if self.dynamic_slots.get() {
            fp.push(self.slots_obj, Access::Read);
        }
        cx.wait_until_with(fp, "invalidation of the faulting gfn ends", move || {
            audit::read(k.inv_obj);
            let slot_ok =
                !k.dynamic_slots.get() || k.gfn_to_memslot(gfn).is_none_or(|s| !s.invalid);
            slot_ok && k.invalidation_hits(gfn).is_none()
        })
        .await;
    }

    /// Current SPTE of `gfn` (oracles, tests).
    pub fn spte(&self, gfn: u64) -> Option<Spte> {
        self.sptes.borrow().get(&gfn).cloned()
    }

    pub fn sptes(&self) -> Vec<(u64, Spte)> {
        self.sptes
            .borrow()
            .iter()
            .map(|(g, s)| (*g, s.clone()))
            .collect()
    }

    /// Look at the stage-2 table in place (oracles run this after every step: no copies).
    pub fn with_sptes<R>(&self, f: impl FnOnce(&BTreeMap<u64, Spte>) -> R) -> R {
        audit::read_range(self.spte_class, 0, 1 << 40);
        f(&self.sptes.borrow())
    }

    pub fn installs(&self) -> Vec<(u64, Spte)> {
        self.installs.borrow().clone()
    }

    /// How many SPTEs have been installed so far.
    pub fn install_count(&self) -> usize {
        self.installs.borrow().len()
    }

    /// How many pinned maps exist now.
    pub fn pin_count(&self) -> usize {
        self.pins.borrow().len()
    }

    /// How many pinned maps were ever made.
    pub fn pin_log_len(&self) -> usize {
        self.pin_log.borrow().len()
    }

    /// The installs from the `from`-th on (oracles check each install once).
    pub fn installs_from(&self, from: usize) -> Vec<(u64, Spte)> {
        self.installs
            .borrow()
            .get(from..)
            .map_or_else(Vec::new, <[_]>::to_vec)
    }

    /// Hardware walk of the stage-2 tables on a guest access. Returns only what the walk
    /// yields rather than a clone of the whole [`Spte`]: this runs on every guest access.
    pub async fn walk(&self, cx: &Cx, gfn: u64, write: bool) -> Option<Leaf> {
        // One step walks the table and (on a hit) loads or stores the frame.
        let arg = gfn | (u64::from(write) << 63);
        cx.step_dyn(FpSet::new(), self.access_fp, arg, "guest access")
            .await;
        audit::read(self.spte_obj(gfn));
        self.sptes.borrow().get(&gfn).map(|s| Leaf {
            pfn: s.pfn,
            write: s.write,
            hva: s.hva,
        })
    }

    /// The walk of an access that crosses from `gfn` into `gfn + 1`: both translations in
    /// one step, as the CPU needs both for the instruction to complete.
    pub async fn walk_pair(&self, cx: &Cx, gfn: u64, write: bool) -> [Option<Leaf>; 2] {
        let arg = gfn | (1 << 62) | (u64::from(write) << 63);
        cx.step_dyn(
            FpSet::new(),
            self.access_fp,
            arg,
            "guest access (two pages)",
        )
        .await;
        audit::read(self.spte_obj(gfn));
        audit::read(self.spte_obj(gfn + 1));
        let s = self.sptes.borrow();
        [gfn, gfn + 1].map(|g| {
            s.get(&g).map(|s| Leaf {
                pfn: s.pfn,
                write: s.write,
                hva: s.hva,
            })
        })
    }

    /// Install a leaf SPTE (`make_spte` + `mmu_spte_set`), under `mmu_lock`.
    pub async fn install_spte(
        &self,
        cx: &Cx,
        gfn: u64,
        pfn: Pfn,
        write: bool,
        slot: &Memslot,
        fault_start: u64,
    ) {
        let hva = slot.gfn_to_hva(gfn);
        let mut fp = FpSet::one(self.spte_obj(gfn), Access::Write);
        self.mapping_ghosts(&mut fp, hva, pfn);
        if self.dynamic_slots.get() {
            // Ghost read for `no-stale-spte`: the slot the SPTE is installed through.
            fp.push(self.slots_obj, Access::Read);
        }
        cx.step_with(fp, "mmu_spte_set").await;
        audit::write(self.spte_obj(gfn));
        let spte = Spte {
            pfn,
            write,
            hva,
            generation: self.frames.generation(pfn),
            owner: self.frames.owner(pfn),
            fault_start,
            installed_at: cx.step(),
            slot: (slot.id, slot.serial),
        };
        world::emit!(
            cx,
            "SPTE gfn {gfn:#x} -> {pfn} {}",
            if write { "rw" } else { "ro" }
        );
        self.installs.borrow_mut().push((gfn, spte.clone()));
        self.sptes.borrow_mut().insert(gfn, spte);
    }

    /// Zap the SPTEs of gfns `[start, end)` (`kvm_unmap_gfn_range`), under `mmu_lock`.
    pub async fn zap_gfn_range(&self, cx: &Cx, start: u64, end: u64) {
        let mut fp = FpSet::new();
        fp.add(self.spte_class.range(start, end, Access::Write));
        for s in self.sptes.borrow().range(start..end).map(|(_, s)| s) {
            self.mapping_ghosts(&mut fp, s.hva, s.pfn);
        }
        cx.step_with(fp, "kvm_unmap_gfn_range").await;
        audit::read_range(self.spte_class, start, end);
        let gone: Vec<u64> = self
            .sptes
            .borrow()
            .range(start..end)
            .map(|(g, _)| *g)
            .collect();
        for g in &gone {
            audit::write(self.spte_obj(*g));
            self.sptes.borrow_mut().remove(g);
        }
        if !gone.is_empty() {
            world::emit!(cx, "zapped SPTEs for gfns {:#x?}", gone);
        }
    }

    /// `kvm_mmu_invalidate_begin()` + `kvm_mmu_invalidate_range_add()`.
    pub(crate) async fn invalidate_begin(&self, cx: &Cx) {
        cx.access(self.inv_obj, Access::Write, "mmu_invalidate_in_progress++")
            .await;
        audit::write(self.inv_obj);
        self.in_progress.set(self.in_progress.get() + 1);
        if self.in_progress.get() == 1 {
            self.range.set(None);
        }
        world::emit!(
            cx,
            "mmu_invalidate_in_progress = {}",
            self.in_progress.get()
        );
    }

    pub(crate) async fn invalidate_range_add(&self, cx: &Cx, start: u64, end: u64) {
        cx.access(self.inv_obj, Access::Write, "mmu_invalidate_range_add")
            .await;
        audit::write(self.inv_obj);
        self.range.set(Some(match self.range.get() {
            None => (start, end),
            Some((s, e)) => (s.min(start), e.max(end)),
        }));
    }

    /// `kvm_mmu_invalidate_end()`: `seq++`, then `in_progress--`.
    pub(crate) async fn invalidate_end(&self, cx: &Cx) {
        cx.access(
            self.inv_obj,
            Access::Write,
            "mmu_invalidate_seq++; in_progress--",
        )
        .await;
        audit::write(self.inv_obj);
        self.seq.set(self.seq.get() + 1);
        self.in_progress.set(self.in_progress.get() - 1);
        world::emit!(
            cx,
            "mmu_invalidate_seq = {}, in_progress = {}",
            self.seq.get(),
            self.in_progress.get()
        );
    }

    /// Invalidation state for oracles: `(in_progress, union range)`.
    pub fn invalidation(&self) -> (i64, Option<(u64, u64)>) {
        (self.in_progress.get(), self.range.get())
    }

    /// Account a page reference KVM took (`kvm_get_pfn`, GUP).
    pub(crate) fn note_ref(&self, pfn: Pfn, delta: i64) {
        *self.refs.borrow_mut().entry(pfn).or_insert(0) += delta;
        if delta > 0 {
            self.refs_taken.set(self.refs_taken.get() + delta as u64);
        }
    }

    /// How many page references KVM has taken in total (0 for a reference-free mapping).
    pub fn refs_taken(&self) -> u64 {
        self.refs_taken.get()
    }

    /// Page references KVM still holds (should be none once every vCPU is done).
    pub fn outstanding_refs(&self) -> Vec<(Pfn, i64)> {
        self.refs
            .borrow()
            .iter()
            .filter(|(_, &n)| n != 0)
            .map(|(p, n)| (*p, *n))
            .collect()
    }

    /// `kmap`/`memremap` of `pfn` for a `kvm_vcpu_map` of `gfn` (a step, with the same ghost
    /// reads as an SPTE install).
    pub(crate) async fn add_pin(
        &self,
        cx: &Cx,
        gfn: u64,
        pfn: Pfn,
        hva: Hva,
        fault_start: u64,
    ) -> u64 {
        let mut fp = FpSet::new();
        self.mapping_ghosts(&mut fp, hva, pfn);
        cx.step_with(fp, "kmap").await;
        let id = self.next_pin.get();
        self.next_pin.set(id + 1);
        let m = PinnedMap {
            id,
            gfn,
            hva,
            fault_start,
            pfn,
            generation: self.frames.generation(pfn),
            owner: self.frames.owner(pfn),
        };
        self.pin_log.borrow_mut().push(m.clone());
        self.pins.borrow_mut().push(m);
        id
    }

    /// Every pinned map ever made.
    pub fn pin_log(&self) -> Vec<PinnedMap> {
        self.pin_log.borrow().clone()
    }

    /// The pinned maps from the `from`-th on.
    pub fn pin_log_from(&self, from: usize) -> Vec<PinnedMap> {
        self.pin_log
            .borrow()
            .get(from..)
            .map_or_else(Vec::new, <[_]>::to_vec)
    }

    /// `kunmap`/`memunmap` of a pinned map (a step, ghost reads as for a zap).
    pub(crate) async fn remove_pin(&self, cx: &Cx, id: u64) {
        let Some(m) = self.pins.borrow().iter().find(|p| p.id == id).cloned() else {
            return;
        };
        let mut fp = FpSet::new();
        self.mapping_ghosts(&mut fp, m.hva, m.pfn);
        cx.step_with(fp, "kunmap").await;
        self.pins.borrow_mut().retain(|p| p.id != id);
    }

    pub fn pins(&self) -> Vec<PinnedMap> {
        self.pins.borrow().clone()
    }
}
