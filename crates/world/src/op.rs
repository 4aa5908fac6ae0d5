//! Scheduling-point operations and their footprints.

use crate::lock::{LockId, LockMode};

/// A model object that scheduling points touch (a lock, a refcount, `mmu_invalidate_seq`, ...).
/// Ids are handed out by [`crate::World::object`] and [`crate::World::lock`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjId(pub u32);

/// How a step touches its object.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
}

/// What one step touches: two steps commute unless they touch the same object and at least
/// one writes. Lock acquire and release are writes of the lock object.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Footprint {
    pub obj: ObjId,
    pub access: Access,
}

/// A predicate over model state that an actor waits for (`wait_event` in the kernel).
pub(crate) type Cond = Box<dyn Fn() -> bool>;

/// The operation an actor will perform when it is next scheduled.
///
/// `Copy` on purpose: every step publishes, inspects and clears one of these, and a plain
/// value with no destructor moves in registers. The condition of a `WaitUntil` lives beside
/// it, in `Core::conds`.
#[derive(Copy, Clone)]
pub(crate) enum Op {
    /// First step of a freshly spawned actor.
    Start,
    /// A read or write of lock-free shared state (`READ_ONCE`, an atomic); optionally a
    /// second object the same instruction touches (a guest load walks the stage-2 table
    /// *and* reads the frame).
    Access(Footprint, Option<Footprint>, &'static str),
    /// Acquire a lock; enabled only when it can be granted.
    Lock(LockId, LockMode),
    /// Release a lock held by this actor.
    Unlock(LockId),
    /// Sleep until the actor's condition (`Core::conds`) holds (reads `obj`).
    WaitUntil(ObjId, &'static str),
}
