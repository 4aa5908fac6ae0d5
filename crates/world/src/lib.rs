//! `world`: kvmmu's deterministic runtime.
//!
//! Kernel code paths run here as *actors*: ordinary `async fn`s polled by one single-threaded
//! executor. Every place where another CPU could interleave is an explicit scheduling point
//! (`cx.lock(..).await`, `cx.access(..).await`, `cx.wait_until(..).await`), and each point
//! declares its *footprint* (which model object, read or write) so that a checker can reason
//! about which steps commute. Between two scheduling points an actor runs atomically, exactly
//! as a kernel thread between two shared-memory accesses.
//!
//! Footprints are checked, not trusted: in audit mode ([`World::set_audit`]) model state
//! reports every access it serves ([`audit`]) and a step that touched an object neither its
//! footprint nor a lock it holds covers fails the run with [`Status::Audit`].
//!
//! A [`Scheduler`] picks which enabled actor takes the next step; the sequence of picks is the
//! *schedule*, recorded in every [`RunResult`] and replayable bit for bit with [`Replay`].
//! Blocking is real: an actor waiting for a lock held by another, or for a condition another
//! actor must establish, is not enabled; if nobody is enabled while some actor has not
//! finished, the run ends in [`Status::Deadlock`] naming who waits on what.
#![forbid(unsafe_code)]

pub mod audit;
mod core;
mod exec;
mod lock;
mod op;
mod prng;
mod program;
mod sched;
mod trace;

pub use crate::core::{Cx, FuncGuard};
pub use exec::{Blocked, RunResult, Status, StepRecord, World, MAX_ACTORS};
pub use lock::{LockId, LockKind, LockMode};
pub use op::{Access, Class, Footprint, FpSet, ObjId, OpKind, Provider, ProviderId, FP_CAP};
pub use prng::SplitMix64;
pub use program::{fnv64, Failure, FastHasher, Fnv64, Headline, Monitor, Observation, Program};
pub use sched::{Decision, FirstEnabled, Pct, Pending, Random, Replay, RoundRobin, Scheduler};
pub use trace::{Trace, TraceEntry};

/// Index of an actor in its world, in spawn order.
pub type ActorId = usize;

/// Append a formatted trace line for the current actor, formatting only when tracing is on
/// (scheduling points stay allocation-free in untraced runs).
#[macro_export]
macro_rules! emit {
    ($cx:expr, $($t:tt)*) => {{
        let cx = &$cx;
        if cx.tracing() {
            cx.emit(format!($($t)*));
        }
    }};
}
