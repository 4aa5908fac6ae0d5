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
    /// `struct mutex`.
    Mutex,
    /// `struct rw_semaphore` or `rwlock_t` (`mmap_lock`, `i_mmap_rwsem`, TDP `mmu_lock`).
    RwSem,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LockMode {
    Exclusive,
    Shared,
}

#[derive(Clone, Debug)]
pub(crate) struct LockState {
    pub name: String,
    pub kind: LockKind,
    pub writer: Option<ActorId>,
    pub readers: Vec<ActorId>,
}

impl LockState {
    pub fn can_grant(&self, mode: LockMode) -> bool {
        match mode {
            LockMode::Exclusive => self.writer.is_none() && self.readers.is_empty(),
            LockMode::Shared => self.writer.is_none(),
        }
    }

    pub fn grant(&mut self, who: ActorId, mode: LockMode) {
        match mode {
            LockMode::Exclusive => self.writer = Some(who),
            LockMode::Shared => self.readers.push(who),
        }
    }

    /// Release `who`'s hold; returns false if `who` held nothing.
    pub fn release(&mut self, who: ActorId) -> bool {
        if self.writer == Some(who) {
            self.writer = None;
            return true;
        }
        if let Some(i) = self.readers.iter().position(|&r| r == who) {
            self.readers.swap_remove(i);
            return true;
        }
        false
    }

    pub fn holds(&self, who: ActorId) -> Option<LockMode> {
        if self.writer == Some(who) {
            Some(LockMode::Exclusive)
        } else if self.readers.contains(&who) {
            Some(LockMode::Shared)
        } else {
            None
        }
    }
}

pub(crate) fn mode_name(kind: LockKind, mode: LockMode) -> &'static str {
    match (kind, mode) {
        (LockKind::RwSem, LockMode::Exclusive) => "write",
        (LockKind::RwSem, LockMode::Shared) => "read",
        _ => "",
    }
}
