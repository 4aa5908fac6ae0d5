//! Scheduling-point operations and their footprints.
//!
//! A footprint names *what a step touches*: model objects, each read or written. Two steps of
//! different actors commute unless their footprints conflict (the same object, at least one
//! write). Partial-order reduction is exactly as sound as footprints are complete and exactly
//! as strong as they are fine, so objects are small: one per page-table entry, per frame, per
//! SPTE, rather than one per table.

use crate::lock::{LockId, LockMode};
use std::fmt;

/// A class of model objects that are numbered rather than registered one by one (page-table
/// entries by virtual page, frames by pfn, SPTEs by gfn). Class 0 holds the objects
/// registered with [`crate::World::object`] and [`crate::World::lock`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Class(pub u8);

impl Class {
    /// Registered, named objects (locks included).
    pub const NAMED: Class = Class(0);

    /// Object `index` of this class.
    pub const fn obj(self, index: u64) -> ObjId {
        ObjId::new(self, index)
    }

    /// Objects `[lo, hi)` of this class.
    pub fn range(self, lo: u64, hi: u64, access: Access) -> Footprint {
        Footprint::range(self.obj(lo), hi.saturating_sub(lo), access)
    }
}

/// A model object that scheduling points touch: a lock, a refcount, `mmu_invalidate_seq`, a
/// PTE. The top byte is its [`Class`], the rest its index in the class. Ids are a pure
/// function of what the object is, so the same object has the same id in every execution.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjId(pub u64);

const INDEX_BITS: u32 = 56;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

impl ObjId {
    pub const fn new(class: Class, index: u64) -> Self {
        ObjId(((class.0 as u64) << INDEX_BITS) | (index & INDEX_MASK))
    }

    pub const fn class(self) -> Class {
        Class((self.0 >> INDEX_BITS) as u8)
    }

    pub const fn index(self) -> u64 {
        self.0 & INDEX_MASK
    }
}

/// How a step touches an object.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    Read = 0,
    Write = 1,
}

impl Access {
    pub fn verb(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }

    /// Whether a declaration of `self` covers an access of `other`.
    pub fn covers(self, other: Access) -> bool {
        self == Access::Write || other == Access::Read
    }

    /// The weakest access covering both.
    pub fn join(self, other: Access) -> Access {
        self.max(other)
    }

    /// Whether two accesses of one object may not commute: at least one writes. (Even a
    /// "commutative" update such as a refcount increment is a write here: what it does next
    /// — free the page at zero, flag a get on zero — reads the value, and in the other order
    /// it would read another one. Commutativity that depends on the state cannot be a
    /// property of a step's footprint.)
    pub fn conflicts(self, other: Access) -> bool {
        self == Access::Write || other == Access::Write
    }

    fn from_bits(b: u32) -> Access {
        if b & 1 == 1 {
            Access::Write
        } else {
            Access::Read
        }
    }
}

/// One entry of a footprint: `len` consecutive objects of one class from `obj`, read or
/// written. Lock acquire and release are entries on the lock object: shared (read-side)
/// acquisitions and releases are reads, so readers commute with each other and conflict with
/// writers. Packed into 12 bytes: footprints are copied at every step.
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct Footprint {
    obj_lo: u32,
    obj_hi: u32,
    /// `len << 1 | write`.
    meta: u32,
}

impl fmt::Debug for Footprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.obj())?;
        if self.len() > 1 {
            write!(f, "+{}", self.len())?;
        }
        write!(f, ":{}", self.access().verb())
    }
}

/// Longest range one entry can name.
const MAX_LEN: u64 = (u32::MAX >> 1) as u64;

impl Footprint {
    pub const fn new(obj: ObjId, access: Access) -> Self {
        Footprint {
            obj_lo: obj.0 as u32,
            obj_hi: (obj.0 >> 32) as u32,
            meta: (1 << 1) | (access as u32),
        }
    }

    pub fn range(obj: ObjId, len: u64, access: Access) -> Self {
        let len = len.clamp(1, MAX_LEN) as u32;
        Footprint {
            obj_lo: obj.0 as u32,
            obj_hi: (obj.0 >> 32) as u32,
            meta: (len << 1) | (access as u32),
        }
    }

    /// The first object named.
    pub const fn obj(&self) -> ObjId {
        ObjId(((self.obj_hi as u64) << 32) | self.obj_lo as u64)
    }

    /// How many consecutive objects are named (at least one).
    #[allow(clippy::len_without_is_empty)]
    pub const fn len(&self) -> u32 {
        self.meta >> 1
    }

    pub fn access(&self) -> Access {
        Access::from_bits(self.meta)
    }

    fn end(&self) -> u64 {
        self.obj().index() + u64::from(self.len())
    }

    /// Whether this entry names `obj`.
    pub fn contains(&self, obj: ObjId) -> bool {
        let o = self.obj();
        obj.class() == o.class() && o.index() <= obj.index() && obj.index() < self.end()
    }

    /// Whether this entry names every object `o` names.
    pub fn covers_range(&self, o: &Footprint) -> bool {
        let (a, b) = (self.obj(), o.obj());
        a.class() == b.class() && a.index() <= b.index() && o.end() <= self.end()
    }

    /// Same class and overlapping ranges.
    pub fn overlaps(&self, o: &Footprint) -> bool {
        let (a, b) = (self.obj(), o.obj());
        a.class() == b.class() && a.index() < o.end() && b.index() < self.end()
    }

    /// Same objects, at least one write.
    pub fn conflicts(&self, o: &Footprint) -> bool {
        self.access().conflicts(o.access()) && self.overlaps(o)
    }
}

/// Entries a footprint holds inline. A step that names more objects than this merges them
/// into covering ranges: coarser, never unsound.
pub const FP_CAP: usize = 6;

/// Everything one step touches: a small set of [`Footprint`] entries, kept inline (a step
/// publishes one at every scheduling point, so it must not allocate).
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct FpSet {
    n: u8,
    e: [Footprint; FP_CAP],
}

const NONE: Footprint = Footprint {
    obj_lo: 0,
    obj_hi: 0,
    meta: 0,
};

impl Default for FpSet {
    fn default() -> Self {
        Self::new()
    }
}

impl FpSet {
    pub const fn new() -> Self {
        FpSet {
            n: 0,
            e: [NONE; FP_CAP],
        }
    }

    pub fn one(obj: ObjId, access: Access) -> Self {
        let mut s = Self::new();
        s.add(Footprint::new(obj, access));
        s
    }

    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &Footprint> {
        self.e[..self.n as usize].iter()
    }

    /// The entries, in the order they were added.
    pub fn as_slice(&self) -> &[Footprint] {
        &self.e[..self.n as usize]
    }

    /// Add one object.
    pub fn push(&mut self, obj: ObjId, access: Access) -> &mut Self {
        self.add(Footprint::new(obj, access));
        self
    }

    /// Add an entry: merged into an entry it overlaps or adjoins (same class), appended when
    /// there is room, else merged into the nearest entry of its class (or, failing that, the
    /// whole set widened to that class): a superset, so reduction stays sound.
    pub fn add(&mut self, f: Footprint) {
        for x in self.e[..self.n as usize].iter_mut() {
            if x.obj().class() == f.obj().class()
                && x.obj().index() <= f.end()
                && f.obj().index() <= x.end()
                && (x.access() == f.access() || (x.obj() == f.obj() && x.len() == f.len()))
            {
                let lo = x.obj().index().min(f.obj().index());
                let hi = x.end().max(f.end());
                *x = Footprint::range(
                    ObjId::new(f.obj().class(), lo),
                    hi - lo,
                    x.access().max(f.access()),
                );
                return;
            }
        }
        if (self.n as usize) < FP_CAP {
            self.e[self.n as usize] = f;
            self.n += 1;
            return;
        }
        // Full: widen the first entry of the same class to cover `f`, or the last entry.
        let i = self
            .e
            .iter()
            .position(|x| x.obj().class() == f.obj().class());
        let x = &mut self.e[i.unwrap_or(FP_CAP - 1)];
        if x.obj().class() == f.obj().class() {
            let lo = x.obj().index().min(f.obj().index());
            let hi = x.end().max(f.end());
            *x = Footprint::range(
                ObjId::new(f.obj().class(), lo),
                hi - lo,
                x.access().max(f.access()),
            );
        } else {
            // Different classes everywhere: give up precision on the class of `f` entirely.
            *x = Footprint::range(
                ObjId::new(f.obj().class(), 0),
                u64::from(u32::MAX),
                Access::Write,
            );
        }
    }

    pub fn extend(&mut self, o: &FpSet) {
        for f in o.iter() {
            self.add(*f);
        }
    }

    /// Whether some entry names `obj` with an access that covers `access`.
    pub fn covers(&self, obj: ObjId, access: Access) -> bool {
        self.iter()
            .any(|f| f.contains(obj) && f.access().covers(access))
    }

    /// Whether any entry names `obj`.
    pub fn touches(&self, obj: ObjId) -> bool {
        self.iter().any(|f| f.contains(obj))
    }

    /// Whether some entry writes an object of `class`.
    pub fn writes_class(&self, class: Class) -> bool {
        self.iter()
            .any(|f| f.access() != Access::Read && f.obj().class() == class)
    }

    /// Whether two steps with these footprints may not commute.
    pub fn conflicts(&self, o: &FpSet) -> bool {
        self.iter().any(|a| o.iter().any(|b| a.conflicts(b)))
    }
}

impl fmt::Debug for FpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Computes the footprint of a pending step from the current state, for steps whose objects
/// depend on state another actor may change before the step runs (a guest access loads the
/// frame whatever its SPTE maps *when it runs*). Registered with
/// [`crate::World::provider`]; `arg` is the step's own parameter.
pub type Provider = Box<dyn Fn(u64, &mut FpSet)>;

/// Index of a [`Provider`] in its world.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ProviderId(pub u32);

/// A predicate over model state that an actor waits for (`wait_event` in the kernel).
pub(crate) type Cond = Box<dyn Fn() -> bool>;

/// What kind of scheduling point a pending step is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// First step of a freshly spawned actor.
    Start,
    /// A read or write of lock-free shared state (`READ_ONCE`, an atomic, a page walk).
    Access,
    /// Acquire a lock; enabled only when it can be granted.
    Lock(LockId, LockMode),
    /// Try to acquire a lock exclusively (`mutex_trylock`, `dma_resv_trylock`): always
    /// enabled; the actor learns whether it got it.
    TryLock(LockId),
    /// Release a lock held by this actor.
    Unlock(LockId),
    /// Sleep until the actor's condition holds.
    Wait,
}

/// The operation an actor will perform when it is next scheduled, with everything the step
/// touches. `Copy` on purpose: every step publishes, inspects and clears one of these.
#[derive(Copy, Clone, Debug)]
pub struct Op {
    pub kind: OpKind,
    pub fp: FpSet,
    /// Recomputes part of `fp` from the current state before each scheduling decision.
    pub dynamic: Option<(ProviderId, u64)>,
    pub what: &'static str,
}
