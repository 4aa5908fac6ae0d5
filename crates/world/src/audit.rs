//! Footprint audit: model state records every read and write it serves, and the executor
//! checks, after each step, that every object the step touched is covered — by the step's
//! declared footprint, or by a lock the actor holds that protects the object.
//!
//! The rules make partial-order reduction sound, not merely tidy:
//!
//! * An object *protected* by a lock (registered with [`crate::World::protect`]) may only be
//!   read while holding that lock, and only written while holding it exclusively — declared
//!   or not. Two such accesses are then ordered by the lock's own operations, which conflict.
//!   An object that is also touched without the lock (a PTE that GUP-fast reads locklessly)
//!   must therefore not be registered as protected.
//! * Every other access must be covered by the step's footprint: a declared write covers
//!   reads and writes, a declared read covers reads.
//!
//! Recording is a thread-local switch that the executor turns on only while it polls an
//! actor of a world with auditing enabled (and while it evaluates a waiting actor's
//! condition), so oracles, setup code and un-audited runs pay one flag test per access.

use crate::op::{Access, Class, Footprint, ObjId};
use std::cell::{Cell, RefCell};

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static LOG: RefCell<Vec<Footprint>> = const { RefCell::new(Vec::new()) };
}

#[inline]
fn record(f: Footprint) {
    if ON.with(Cell::get) {
        LOG.with(|l| l.borrow_mut().push(f));
    }
}

/// Model state served a read of `obj`.
#[inline]
pub fn read(obj: ObjId) {
    record(Footprint::new(obj, Access::Read));
}

/// Model state served a write of `obj`.
#[inline]
pub fn write(obj: ObjId) {
    record(Footprint::new(obj, Access::Write));
}

/// An access of `obj`.
#[inline]
pub fn touch(obj: ObjId, access: Access) {
    record(Footprint::new(obj, access));
}

/// A read of objects `[lo, hi)` of `class` (a range lookup: which PTEs are present).
#[inline]
pub fn read_range(class: Class, lo: u64, hi: u64) {
    if hi > lo {
        record(class.range(lo, hi, Access::Read));
    }
}

/// Whether accesses are being recorded right now (for model code that would otherwise do
/// extra work only to report them).
#[inline]
pub fn recording() -> bool {
    ON.with(Cell::get)
}

pub(crate) fn start() {
    LOG.with(|l| l.borrow_mut().clear());
    ON.with(|o| o.set(true));
}

/// Stop recording and hand over what was recorded (into `out`, reusing its storage).
pub(crate) fn stop(out: &mut Vec<Footprint>) {
    ON.with(|o| o.set(false));
    LOG.with(|l| std::mem::swap(&mut *l.borrow_mut(), out));
}

/// Run `f` with recording suspended (code that is not part of any step).
pub fn suspended<R>(f: impl FnOnce() -> R) -> R {
    let was = ON.with(|o| o.replace(false));
    let r = f();
    ON.with(|o| o.set(was));
    r
}
