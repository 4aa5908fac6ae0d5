//! Scheduling strategies: which enabled actor takes the next step.

use crate::op::{FpSet, OpKind};
use crate::prng::SplitMix64;
use crate::{ActorId, Status};

/// An actor's pending step as the scheduler sees it, enabled or blocked.
#[derive(Copy, Clone, Debug)]
pub struct Pending {
    pub actor: ActorId,
    pub kind: OpKind,
    /// What the step touches, computed in the current state.
    pub fp: FpSet,
    pub enabled: bool,
    pub what: &'static str,
}

/// Everything a scheduler may look at to choose the next step.
#[derive(Copy, Clone, Debug)]
pub struct Decision<'a> {
    /// Index of the step about to be taken in this run (0 for the first).
    pub step: u64,
    /// The actors that can take a step now, ascending.
    pub enabled: &'a [ActorId],
    /// Every unfinished actor's pending step, blocked ones included, ascending by actor.
    pub pending: &'a [Pending],
    /// Who took the previous step.
    pub last: Option<ActorId>,
}

impl Decision<'_> {
    /// The pending step of actor `a`, if it has one.
    pub fn pending_of(&self, a: ActorId) -> Option<&Pending> {
        self.pending.iter().find(|p| p.actor == a)
    }

    /// The footprint of enabled actor `a`'s step.
    pub fn fp_of(&self, a: ActorId) -> Option<&FpSet> {
        self.pending_of(a).filter(|p| p.enabled).map(|p| &p.fp)
    }

    /// Whether `a` can take a step now.
    pub fn is_enabled(&self, a: ActorId) -> bool {
        self.enabled.contains(&a)
    }
}

/// Picks the next actor among those enabled. Returning `None` (or an actor that is not
/// enabled) aborts the run ([`crate::Status::Diverged`]). `begin` and `end` bracket each run.
pub trait Scheduler {
    fn begin(&mut self) {}
    fn pick(&mut self, d: &Decision) -> Option<ActorId>;
    fn end(&mut self, _status: &Status) {}
}

/// Always the lowest-numbered enabled actor: each actor runs until it blocks or finishes.
/// This is the "no race" baseline schedule.
#[derive(Default, Clone, Debug)]
pub struct FirstEnabled;

impl Scheduler for FirstEnabled {
    fn pick(&mut self, d: &Decision) -> Option<ActorId> {
        d.enabled.first().copied()
    }
}

/// Rotates through the actors, switching at every scheduling point.
#[derive(Default, Clone, Debug)]
pub struct RoundRobin;

impl Scheduler for RoundRobin {
    fn pick(&mut self, d: &Decision) -> Option<ActorId> {
        Some(match d.last {
            Some(l) => d
                .enabled
                .iter()
                .copied()
                .find(|&a| a > l)
                .unwrap_or(d.enabled[0]),
            None => d.enabled[0],
        })
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
    fn pick(&mut self, d: &Decision) -> Option<ActorId> {
        Some(d.enabled[self.rng.below(d.enabled.len())])
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
    fn pick(&mut self, d: &Decision) -> Option<ActorId> {
        let Some(&want) = self.schedule.get(self.pos) else {
            return d.enabled.first().copied();
        };
        self.pos += 1;
        d.enabled.contains(&want).then_some(want)
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
    fn pick(&mut self, d: &Decision) -> Option<ActorId> {
        self.step += 1;
        let mut best = *d.enabled.iter().max_by_key(|&&a| (self.prio_of(a), a))?;
        if self.change_points.contains(&self.step) && self.next_low > 0 {
            self.prio[best] = self.next_low;
            self.next_low -= 1;
            best = *d.enabled.iter().max_by_key(|&&a| (self.prio_of(a), a))?;
        }
        Some(best)
    }
}
