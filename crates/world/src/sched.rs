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

/// Probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi, Nagarakatte, ASPLOS
/// 2010): actors get random distinct priorities and the highest-priority enabled actor
/// runs; at `depth - 1` random steps in `1..=steps` the actor about to run drops to a low
/// priority. A bug that needs `d` ordering constraints is hit with probability at least
/// `1 / (n · k^(d-1))` per run — far better than uniform random choice for the narrow
/// windows of this path (e.g. a zap landing between `follow_pfn` and `kvm_get_pfn`).
#[derive(Clone, Debug)]
pub struct Pct {
    rng: SplitMix64,
    prio: Vec<u64>,
    change_points: Vec<u64>,
    step: u64,
    /// Next low priority handed out at a change point (`depth - 1` down to 1).
    next_low: u64,
}

impl Pct {
    /// `steps`: an estimate of the run's length (e.g. the steps of a round-robin run).
    pub fn new(seed: u64, depth: u32, steps: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let change_points = (1..depth)
            .map(|_| 1 + rng.below(steps.max(1) as usize) as u64)
            .collect();
        Pct {
            rng,
            prio: Vec::new(),
            change_points,
            step: 0,
            next_low: u64::from(depth.max(1)) - 1,
        }
    }

    fn prio_of(&mut self, a: ActorId) -> u64 {
        while self.prio.len() <= a {
            // Fresh actors get a random high priority (above every change-point priority).
            let p = 1_000 + self.rng.next_u64() % 1_000_000;
            self.prio.push(p);
        }
        self.prio[a]
    }
}

impl Scheduler for Pct {
    fn pick(&mut self, enabled: &[ActorId], _: &[Footprint]) -> Option<ActorId> {
        self.step += 1;
        let mut best = *enabled.iter().max_by_key(|&&a| (self.prio_of(a), a))?;
        if self.change_points.contains(&self.step) && self.next_low > 0 {
            self.prio[best] = self.next_low;
            self.next_low -= 1;
            best = *enabled.iter().max_by_key(|&&a| (self.prio_of(a), a))?;
        }
        Some(best)
    }
}
