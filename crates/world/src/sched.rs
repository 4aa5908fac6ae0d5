//! Scheduling strategies: which enabled actor takes the next step.

use crate::prng::SplitMix64;
use crate::{ActorId, Footprint};

/// Picks the next actor among those enabled (sorted by id). `footprints[i]` is what
/// `enabled[i]`'s pending step touches. Returning `None` aborts the run
/// ([`crate::Status::Diverged`]).
pub trait Scheduler {
    fn pick(&mut self, enabled: &[ActorId], footprints: &[Footprint]) -> Option<ActorId>;
}

/// Always the lowest-numbered enabled actor: each actor runs until it blocks or finishes.
/// This is the "no race" baseline schedule.
#[derive(Default, Clone, Debug)]
pub struct FirstEnabled;

impl Scheduler for FirstEnabled {
    fn pick(&mut self, enabled: &[ActorId], _: &[Footprint]) -> Option<ActorId> {
        enabled.first().copied()
    }
}

/// Rotates through the actors, switching at every scheduling point.
#[derive(Default, Clone, Debug)]
pub struct RoundRobin {
    last: Option<ActorId>,
}

impl Scheduler for RoundRobin {
    fn pick(&mut self, enabled: &[ActorId], _: &[Footprint]) -> Option<ActorId> {
        let next = match self.last {
            Some(l) => enabled
                .iter()
                .copied()
                .find(|&a| a > l)
                .unwrap_or(enabled[0]),
            None => enabled[0],
        };
        self.last = Some(next);
        Some(next)
    }
}

/// Uniformly random among the enabled actors, from a seed.
#[derive(Clone, Debug)]
pub struct Random {
    rng: SplitMix64,
}

impl Random {
    pub fn new(seed: u64) -> Self {
        Random {
            rng: SplitMix64::new(seed),
        }
    }
}

impl Scheduler for Random {
    fn pick(&mut self, enabled: &[ActorId], _: &[Footprint]) -> Option<ActorId> {
        Some(enabled[self.rng.below(enabled.len())])
    }
}

/// Replays a recorded schedule; once it is exhausted, continues as [`FirstEnabled`]. A
/// recorded choice that is not enabled means the world is not the one recorded: the run
/// stops as diverged.
#[derive(Clone, Debug)]
pub struct Replay {
    schedule: Vec<ActorId>,
    pos: usize,
}

impl Replay {
    pub fn new(schedule: Vec<ActorId>) -> Self {
        Replay { schedule, pos: 0 }
    }
}

impl Scheduler for Replay {
    fn pick(&mut self, enabled: &[ActorId], _: &[Footprint]) -> Option<ActorId> {
        let Some(&want) = self.schedule.get(self.pos) else {
            return enabled.first().copied();
        };
        self.pos += 1;
        enabled.contains(&want).then_some(want)
    }
}
