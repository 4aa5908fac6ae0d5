//! Counterexamples: keep the most promising failing schedules per oracle, cut each to the
//! causal cone of its failing step, re-order the cone to switch actors as rarely as
//! possible, and confirm the result by replaying it.

use crate::explore::is_preemption;
use crate::hb::{Event, Hb};
use crate::{Counterexample, Error, StepView};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use world::{Decision, Program, Scheduler, Status, Trace};

/// Preemptions in a schedule: switches away from an actor that could have continued.
/// `enabled[k]` is the mask of runnable actors when step `k` was chosen.
pub(crate) fn preemptions(sched: &[u8], enabled: &[u64]) -> u32 {
    (1..sched.len())
        .filter(|&k| is_preemption(Some(sched[k - 1]), sched[k], enabled[k]))
        .count() as u32
}

/// How many candidates per oracle are kept for minimisation.
const KEEP: usize = 3;

struct Cand {
    schedule: Vec<u8>,
    events: Vec<Event>,
    failing: usize,
    preemptions: u32,
}

/// The most promising failing schedules seen so far, per oracle.
#[derive(Default)]
pub(crate) struct Candidates {
    per: BTreeMap<&'static str, Vec<Cand>>,
}

impl Candidates {
    /// A failing execution: `oracle` failed after step `failing` of `schedule`, with
    /// `preemptions` preemptions up to there.
    pub fn offer(
        &mut self,
        oracle: &'static str,
        schedule: &[u8],
        events: &[Event],
        failing: usize,
        preemptions: u32,
    ) {
        let v = self.per.entry(oracle).or_default();
        let key = (preemptions, failing);
        if v.len() >= KEEP && v.iter().all(|c| (c.preemptions, c.failing) <= key) {
            return;
        }
        if v.iter().any(|c| {
            (c.preemptions, c.failing) == key && c.schedule[..=c.failing] == schedule[..=failing]
        }) {
            return;
        }
        v.push(Cand {
            schedule: schedule[..=failing].to_vec(),
            events: events[..=failing].to_vec(),
            failing,
            preemptions,
        });
        v.sort_by_key(|c| (c.preemptions, c.failing));
        v.truncate(KEEP);
    }

    /// Take in another worker's candidates, as if its failing executions came after ours
    /// (the order a single thread meets them in, when parts are absorbed in task order).
    pub fn absorb(&mut self, other: Candidates) {
        for (oracle, cands) in other.per {
            for c in cands {
                self.offer(oracle, &c.schedule, &c.events, c.failing, c.preemptions);
            }
        }
    }

    /// The best confirmed counterexample for `oracle`.
    pub fn best(
        &mut self,
        program: &mut dyn Program,
        oracle: &'static str,
        minimize: bool,
    ) -> Result<Option<Counterexample>, Error> {
        let Some(cands) = self.per.remove(oracle) else {
            return Ok(None);
        };
        let mut best: Option<Confirmed> = None;
        let consider = |c: Option<Confirmed>, best: &mut Option<Confirmed>| {
            let Some(c) = c else { return };
            let better = best
                .as_ref()
                .is_none_or(|b| (c.preemptions, c.failing_step) < (b.preemptions, b.failing_step));
            if better {
                *best = Some(c);
            }
        };
        for c in &cands {
            if minimize {
                for s in relinearize(&c.events, c.failing) {
                    consider(confirm(program, &s, oracle)?, &mut best);
                }
            }
            let raw: Vec<usize> = c.schedule.iter().map(|&a| a as usize).collect();
            consider(confirm(program, &raw, oracle)?, &mut best);
        }
        if let Some(b) = best {
            return Ok(Some(b.into_counterexample(oracle, true)));
        }
        // Not reproducible by replay (it should always be): report the raw schedule.
        let c = &cands[0];
        Ok(Some(Counterexample {
            oracle,
            detail: String::new(),
            schedule: c.schedule.iter().map(|&a| a as usize).collect(),
            failing_step: c.failing,
            preemptions: c.preemptions,
            actors: Vec::new(),
            steps: Vec::new(),
            trace: Trace::default(),
            confirmed: false,
        }))
    }
}

/// Orders of the causal cone of step `v` that switch actors as rarely as the cone allows:
/// starting from each actor in it, keep running the current actor while its next step's
/// dependencies have run; otherwise switch to the actor whose next ready step came first.
pub(crate) fn relinearize(events: &[Event], v: usize) -> Vec<Vec<usize>> {
    let actors = events
        .iter()
        .map(|e| e.actor as usize + 1)
        .max()
        .unwrap_or(1);
    let mut hb = Hb::default();
    hb.analyze(&events[..=v], actors, usize::MAX, &mut Vec::new());
    let cone = hb.cone(v);
    // Per actor, its cone steps in order (a prefix of its steps: the cone is closed under
    // program order).
    let mut queues: Vec<Vec<usize>> = vec![Vec::new(); actors];
    for &i in &cone {
        queues[events[i].actor as usize].push(i);
    }
    let starts: Vec<usize> = (0..actors).filter(|&a| !queues[a].is_empty()).collect();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for &first in &starts {
        let mut pos = vec![0usize; actors];
        let mut order = Vec::with_capacity(cone.len());
        let mut cur = first;
        while order.len() < cone.len() {
            // A step is ready once every step of the other actors it depends on has run
            // (those are a prefix of each actor's cone steps).
            let ready = |a: usize, pos: &[usize]| -> Option<usize> {
                let &i = queues[a].get(pos[a])?;
                (0..actors)
                    .all(|b| b == a || pos[b] >= (hb.clock(i, b) as usize).min(queues[b].len()))
                    .then_some(i)
            };
            let next = match ready(cur, &pos) {
                Some(_) => cur,
                None => {
                    let Some(a) = (0..actors)
                        .filter_map(|a| ready(a, &pos).map(|i| (i, a)))
                        .min()
                        .map(|(_, a)| a)
                    else {
                        break;
                    };
                    a
                }
            };
            pos[next] += 1;
            order.push(next);
            cur = next;
        }
        if order.len() == cone.len() && !out.contains(&order) {
            out.push(order);
        }
    }
    out
}

/// A replayed failure.
#[derive(Clone, Debug)]
pub struct Confirmed {
    /// Index of the step after which the oracle failed (the run's length, for failures
    /// found at its end).
    pub failing_step: usize,
    pub detail: String,
    pub preemptions: u32,
    /// The schedule that was replayed, cut at the failure.
    pub schedule: Vec<usize>,
    pub actors: Vec<String>,
    pub steps: Vec<StepView>,
    pub trace: Trace,
    pub status: Status,
}

impl Confirmed {
    pub fn into_counterexample(self, oracle: &'static str, confirmed: bool) -> Counterexample {
        Counterexample {
            oracle,
            detail: self.detail,
            schedule: self.schedule,
            failing_step: self.failing_step,
            preemptions: self.preemptions,
            actors: self.actors,
            steps: self.steps,
            trace: self.trace,
            confirmed,
        }
    }
}

/// Follows a schedule and records what was runnable; stops when it runs out.
struct Follow<'a> {
    schedule: &'a [usize],
    enabled: Vec<u64>,
    chosen: Vec<u8>,
}

impl Scheduler for Follow<'_> {
    fn pick(&mut self, d: &Decision) -> Option<usize> {
        let &want = self.schedule.get(d.step as usize)?;
        if !d.enabled.contains(&want) {
            return None;
        }
        self.enabled
            .push(d.enabled.iter().fold(0u64, |m, &x| m | (1 << x)));
        self.chosen.push(want as u8);
        Some(want)
    }
}

/// What replaying a schedule did.
#[derive(Clone, Debug)]
pub enum Replayed {
    /// The oracle failed.
    Failed(Box<Confirmed>),
    /// The schedule chose an actor that could not run at `step`: the program is not the one
    /// the schedule was recorded on.
    Diverged { step: usize, status: Status },
    /// The schedule ran (to its end, or to the program's), and the oracle did not fail.
    Held { status: Status },
}

/// Replay `schedule` on a fresh instance of `program` with tracing on, and report whether
/// (and after which step) `oracle` fails. Stops right after the failing step; a failure
/// found only at the end of a run (a deadlock, a BUG, references left at teardown) needs the
/// schedule to run the program to its end.
pub fn confirm(
    program: &mut dyn Program,
    schedule: &[usize],
    oracle: &str,
) -> Result<Option<Confirmed>, Error> {
    Ok(match replay(program, schedule, oracle)? {
        Replayed::Failed(c) => Some(*c),
        _ => None,
    })
}

/// [`confirm`], saying what happened when the oracle did not fail.
pub fn replay(
    program: &mut dyn Program,
    schedule: &[usize],
    oracle: &str,
) -> Result<Replayed, Error> {
    let (mut w, mut mon) = program.instance().map_err(Error::Build)?;
    w.set_tracing(true);
    w.set_records(true);
    let mut follow = Follow {
        schedule,
        enabled: Vec::new(),
        chosen: Vec::new(),
    };
    let mut failures = Vec::new();
    let mut step = 0u64;
    let mut hit: Option<(usize, String)> = None;
    let r = w.run_observed(&mut follow, &mut |rec| {
        mon.step(rec, step, &mut failures);
        step += 1;
        if let Some(f) = failures.iter().find(|f| f.oracle == oracle) {
            hit = Some((f.step as usize, f.detail.clone()));
            return ControlFlow::Break(oracle.to_string());
        }
        ControlFlow::Continue(())
    });
    if let Status::Audit { actor, detail } = r.status {
        return Err(Error::Audit { actor, detail });
    }
    if hit.is_none() && !matches!(r.status, Status::Diverged { .. }) {
        mon.end(&r.status, r.steps, &mut failures);
        if let Some(f) = failures.iter().find(|f| f.oracle == oracle) {
            hit = Some((f.step as usize, f.detail.clone()));
        }
    }
    let Some((at, detail)) = hit else {
        return Ok(match r.status {
            Status::Diverged { step } if (step as usize) < schedule.len() => Replayed::Diverged {
                step: step as usize,
                status: r.status.clone(),
            },
            s => Replayed::Held { status: s },
        });
    };
    let n = follow.chosen.len();
    let failing_step = at.min(n.saturating_sub(1));
    let schedule: Vec<usize> = follow.chosen.iter().map(|&a| a as usize).collect();
    let steps = r
        .records
        .iter()
        .enumerate()
        .map(|(k, rec)| StepView {
            step: k,
            actor: rec.actor,
            what: rec.what.to_string(),
            func: rec.func.to_string(),
            lines: r
                .trace
                .entries
                .iter()
                .filter(|e| e.step == k as u64 && e.actor == rec.actor)
                .map(|e| {
                    if e.func.is_empty() {
                        e.text.clone()
                    } else {
                        format!("{}: {}", e.func, e.text)
                    }
                })
                .collect(),
        })
        .collect();
    Ok(Replayed::Failed(Box::new(Confirmed {
        failing_step,
        detail,
        preemptions: preemptions(&follow.chosen, &follow.enabled),
        schedule,
        actors: r.trace.actors.clone(),
        steps,
        trace: r.trace,
        status: r.status,
    })))
}
