//! Kernel locks as model objects: mutexes, spinlocks and reader/writer semaphores.
//!
//! Simplification: a rwsem grants a reader whenever no writer holds it (no writer-waiting
//! handoff as in `rwsem_down_read_slowpath`); no code path modelled here takes a rwsem
//! recursively, which is the only case where the handoff changes the outcome.

use crate::{ActorId, ObjId};

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockId(pub ObjId);

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// `spinlock_t` (the page-table lock, KVM's `mmu_lock` on a non-TDP MMU).
    Spin,
    /// `struct mutex` (and sleeping locks with a trylock, such as `dma_resv`).
    Mutex,
    /// `struct rw_semaphore` or `rwlock_t` (`mmap_lock`, `i_mmap_rwsem`, TDP `mmu_lock`).
    RwSem,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockMode {
    Shared,
    Exclusive,
}

impl LockMode {
    /// The access a lock operation in this mode makes on the lock object: read-side
    /// acquisitions and releases commute with each other.
    pub fn access(self) -> crate::Access {
        match self {
            LockMode::Shared => crate::Access::Read,
            LockMode::Exclusive => crate::Access::Write,
        }
    }
}

/// Holders as a set (a bitmask of actor ids), so that two read-side operations in either
/// order leave the same state.
#[derive(Clone, Debug)]
pub(crate) struct LockState {
    pub name: String,
    pub kind: LockKind,
    pub writer: Option<ActorId>,
    pub readers: u64,
}

impl LockState {
    pub fn can_grant(&self, mode: LockMode) -> bool {
        match mode {
            LockMode::Exclusive => self.writer.is_none() && self.readers == 0,
            LockMode::Shared => self.writer.is_none(),
        }
    }

    pub fn grant(&mut self, who: ActorId, mode: LockMode) {
        match mode {
            LockMode::Exclusive => self.writer = Some(who),
            LockMode::Shared => self.readers |= 1 << who,
        }
    }

    /// Release `who`'s hold; returns the mode it held, or `None` if it held nothing.
    pub fn release(&mut self, who: ActorId) -> Option<LockMode> {
        if self.writer == Some(who) {
            self.writer = None;
            return Some(LockMode::Exclusive);
        }
        if self.readers & (1 << who) != 0 {
            self.readers &= !(1 << who);
            return Some(LockMode::Shared);
        }
        None
    }

    pub fn holds(&self, who: ActorId) -> Option<LockMode> {
        if self.writer == Some(who) {
            Some(LockMode::Exclusive)
        } else if who < 64 && self.readers & (1 << who) != 0 {
            Some(LockMode::Shared)
        } else {
            None
        }
    }

    pub fn reader_ids(&self) -> impl Iterator<Item = ActorId> + '_ {
        (0..64).filter(|a| self.readers & (1 << a) != 0)
    }
}

pub(crate) fn mode_name(kind: LockKind, mode: LockMode) -> &'static str {
    match (kind, mode) {
        (LockKind::RwSem, LockMode::Exclusive) => "write",
        (LockKind::RwSem, LockMode::Shared) => "read",
        _ => "",
    }
}
