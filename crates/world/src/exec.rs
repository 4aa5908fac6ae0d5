//! The executor: builds a world of actors and runs it under a scheduler.

use crate::core::{describe_lock, ActorFuture, Core, Cx};
use crate::lock::{LockId, LockKind, LockMode, LockState};
use crate::op::{Access, Footprint, ObjId, Op};
use crate::sched::Scheduler;
use crate::trace::Trace;
use crate::ActorId;
use std::fmt;
use std::future::Future;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// An actor that could not proceed when the world deadlocked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub actor: String,
    /// What it waits on: `mmap_lock (write)` or a wait condition's description.
    pub waits_for: String,
    /// Who holds that lock, with mode (`host (read)`); empty for conditions.
    pub holders: Vec<String>,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} waits for {}", self.actor, self.waits_for)?;
        if !self.holders.is_empty() {
            write!(f, " held by {}", self.holders.join(", "))?;
        }
        Ok(())
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every actor finished.
    Completed,
    /// Nobody can run, and these actors have not finished.
    Deadlock(Vec<Blocked>),
    /// A host `BUG()` (or a runtime-detected kernel bug such as unlocking an unheld lock).
    Bug { actor: String, what: String },
    /// The observer stopped the run (an oracle violation).
    Stopped(String),
    /// The step bound was reached (a livelock, or a bound too small).
    StepLimit,
    /// The scheduler refused to continue (a replayed schedule that does not fit).
    Diverged { step: u64 },
}

/// One step: who ran and what its scheduling point touched.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StepRecord {
    pub actor: ActorId,
    pub footprint: Footprint,
    /// The second object of a two-object step ([`crate::Cx::access2`]).
    pub also: Option<Footprint>,
    /// What the step was: `lock`, `unlock`, `start`, `wait`, or an access's description.
    pub what: &'static str,
}

/// Result of [`World::run`].
#[derive(Clone, Debug)]
pub struct RunResult {
    pub status: Status,
    pub steps: u64,
    /// The schedule: the actor chosen at each step. Replay with [`crate::Replay`].
    pub schedule: Vec<ActorId>,
    pub records: Vec<StepRecord>,
    pub trace: Trace,
}

/// A set of actors over shared model state, run by one deterministic executor.
pub struct World {
    core: Rc<Core>,
    actors: Vec<Option<ActorFuture>>,
    max_steps: u64,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    pub fn new() -> Self {
        World {
            core: Rc::new(Core::new()),
            actors: Vec::new(),
            max_steps: 100_000,
        }
    }

    /// Record trace lines (default on). Off makes scheduling points allocation-free.
    pub fn set_tracing(&mut self, on: bool) {
        self.core.tracing.set(on);
    }

    /// Bound on the number of steps of a run (default 100 000).
    pub fn set_max_steps(&mut self, n: u64) {
        self.max_steps = n;
    }

    /// Register a model object that scheduling points name in their footprint.
    pub fn object(&mut self, name: impl Into<String>) -> ObjId {
        let mut objs = self.core.objects.borrow_mut();
        objs.push(name.into());
        self.core.locks.borrow_mut().push(None);
        ObjId(objs.len() as u32 - 1)
    }

    /// Register a lock.
    pub fn lock(&mut self, name: impl Into<String>, kind: LockKind) -> LockId {
        let name = name.into();
        let id = self.object(name.clone());
        self.core.locks.borrow_mut()[id.0 as usize] = Some(LockState {
            name,
            kind,
            writer: None,
            readers: Vec::new(),
        });
        LockId(id)
    }

    /// A handle for code that runs outside any actor (setup, oracles): it may trace and
    /// inspect locks but must not await scheduling points.
    pub fn observer_cx(&self) -> Cx {
        Cx {
            core: self.core.clone(),
            me: usize::MAX,
        }
    }

    /// Add an actor. It takes its first step when the scheduler first picks it.
    pub fn spawn<F, Fut>(&mut self, name: impl Into<String>, f: F) -> ActorId
    where
        F: FnOnce(Cx) -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        let id = self.actors.len();
        let fut = f(Cx {
            core: self.core.clone(),
            me: id,
        });
        self.add(name.into(), Box::pin(fut));
        id
    }

    fn add(&mut self, name: String, fut: ActorFuture) {
        self.core.names.borrow_mut().push(name);
        self.core.pending.borrow_mut().push(Some(Op::Start));
        self.core.conds.borrow_mut().push(None);
        self.core.funcs.borrow_mut().push(Vec::new());
        self.actors.push(Some(fut));
    }

    fn adopt_spawned(&mut self) {
        // Runs before every step and there is rarely anything to adopt: look first.
        if self.core.spawned.borrow().is_empty() {
            return;
        }
        let spawned = std::mem::take(&mut *self.core.spawned.borrow_mut());
        for (name, fut) in spawned {
            self.add(name, fut);
        }
    }

    fn footprint(&self, a: ActorId, op: &Op) -> Footprint {
        match op {
            // An actor's start touches only itself: give it a private object id.
            Op::Start => Footprint {
                obj: ObjId(u32::MAX - a as u32),
                access: Access::Write,
            },
            Op::Access(fp, _, _) => *fp,
            Op::Lock(l, _) | Op::Unlock(l) => Footprint {
                obj: l.0,
                access: Access::Write,
            },
            Op::WaitUntil(obj, _) => Footprint {
                obj: *obj,
                access: Access::Read,
            },
        }
    }

    fn enabled(&self, a: ActorId, op: &Op) -> bool {
        match op {
            Op::Lock(l, mode) => self.core.locks.borrow()[l.0 .0 as usize]
                .as_ref()
                .is_some_and(|s| s.can_grant(*mode)),
            Op::WaitUntil(..) => self.core.conds.borrow()[a]
                .as_ref()
                .is_some_and(|cond| cond()),
            _ => true,
        }
    }

    fn blocked(&self) -> Vec<Blocked> {
        let names = self.core.names.borrow();
        let pending = self.core.pending.borrow();
        let mut out = Vec::new();
        for (a, op) in pending.iter().enumerate() {
            let Some(op) = op else { continue };
            let (waits_for, holders) = match op {
                Op::Lock(l, mode) => {
                    let locks = self.core.locks.borrow();
                    let st = locks[l.0 .0 as usize].as_ref().expect("lock");
                    let mut h: Vec<String> = Vec::new();
                    if let Some(w) = st.writer {
                        h.push(format!(
                            "{} ({})",
                            names[w],
                            holder_mode(st.kind, LockMode::Exclusive)
                        ));
                    }
                    for &r in &st.readers {
                        h.push(format!(
                            "{} ({})",
                            names[r],
                            holder_mode(st.kind, LockMode::Shared)
                        ));
                    }
                    drop(locks);
                    (describe_lock(&self.core, *l, *mode), h)
                }
                Op::WaitUntil(_, what) => (what.to_string(), Vec::new()),
                _ => continue,
            };
            out.push(Blocked {
                actor: names[a].clone(),
                waits_for,
                holders,
            });
        }
        out
    }

    /// Perform `who`'s pending op; returns an error text for a runtime-detected kernel bug.
    fn perform(&self, who: ActorId, op: &Op) -> Result<(), String> {
        let tracing = self.core.tracing.get();
        match op {
            Op::Lock(l, mode) => {
                self.core.locks.borrow_mut()[l.0 .0 as usize]
                    .as_mut()
                    .expect("lock")
                    .grant(who, *mode);
                if tracing {
                    let d = describe_lock(&self.core, *l, *mode);
                    self.core.emit(who, format!("lock {d}"));
                }
            }
            Op::Unlock(l) => {
                let ok = self.core.locks.borrow_mut()[l.0 .0 as usize]
                    .as_mut()
                    .expect("lock")
                    .release(who);
                if !ok {
                    return Err(format!("unlock of {} not held", self.core.lock_name(*l)));
                }
                if tracing {
                    let n = self.core.lock_name(*l);
                    self.core.emit(who, format!("unlock {n}"));
                }
            }
            Op::WaitUntil(_, what) if tracing => {
                self.core.emit(who, format!("woken: {what}"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Run until every actor finishes, the world deadlocks, a BUG fires, the observer stops
    /// it, or the step bound is hit. `observer` runs after every step (oracles).
    pub fn run(
        &mut self,
        sched: &mut dyn Scheduler,
        observer: &mut dyn FnMut() -> ControlFlow<String>,
    ) -> RunResult {
        let mut records = Vec::new();
        let mut enabled: Vec<ActorId> = Vec::new();
        let mut fps: Vec<Footprint> = Vec::new();
        let mut cx = Context::from_waker(Waker::noop());
        let status = loop {
            self.adopt_spawned();
            if let Some((a, what)) = self.core.bug.borrow_mut().take() {
                break Status::Bug {
                    actor: self.core.names.borrow()[a].clone(),
                    what,
                };
            }
            enabled.clear();
            fps.clear();
            {
                let pending = self.core.pending.borrow();
                for (a, op) in pending.iter().enumerate() {
                    if let Some(op) = op {
                        if self.enabled(a, op) {
                            enabled.push(a);
                            fps.push(self.footprint(a, op));
                        }
                    }
                }
            }
            if enabled.is_empty() {
                if self.actors.iter().all(Option::is_none) {
                    break Status::Completed;
                }
                break Status::Deadlock(self.blocked());
            }
            let step = self.core.step.get();
            if step >= self.max_steps {
                break Status::StepLimit;
            }
            let Some(who) = sched.pick(&enabled, &fps) else {
                break Status::Diverged { step };
            };
            let i = enabled
                .iter()
                .position(|&a| a == who)
                .expect("scheduler picked an enabled actor");
            // Work on the op where it is and then mark it gone, rather than copying it out:
            // this runs at every step. `perform` touches lock and trace state, not `pending`.
            let (performed, waited) = {
                let mut pending = self.core.pending.borrow_mut();
                let op = pending[who].as_ref().expect("enabled actor has an op");
                records.push(StepRecord {
                    actor: who,
                    footprint: fps[i],
                    also: match op {
                        Op::Access(_, also, _) => *also,
                        _ => None,
                    },
                    what: op_name(op),
                });
                let r = self.perform(who, op);
                let waited = matches!(op, Op::WaitUntil(..));
                pending[who] = None;
                (r, waited)
            };
            if let Err(what) = performed {
                break Status::Bug {
                    actor: self.core.names.borrow()[who].clone(),
                    what,
                };
            }
            if waited {
                // The wait is over: drop its condition (and whatever it captured) now.
                self.core.conds.borrow_mut()[who] = None;
            }
            let fut = self.actors[who].as_mut().expect("pending actor is alive");
            let done = matches!(fut.as_mut().poll(&mut cx), Poll::Ready(()));
            self.core.step.set(step + 1);
            if done {
                self.actors[who] = None;
                if let Some(held) = self.held_by(who) {
                    break Status::Bug {
                        actor: self.core.names.borrow()[who].clone(),
                        what: format!("returned with {held} held"),
                    };
                }
            } else if self.core.pending.borrow()[who].is_none() && self.core.bug.borrow().is_none()
            {
                break Status::Bug {
                    actor: self.core.names.borrow()[who].clone(),
                    what: "actor awaited something that is not a scheduling point".into(),
                };
            }
            if let ControlFlow::Break(why) = observer() {
                break Status::Stopped(why);
            }
        };
        let trace = Trace {
            actors: self.core.names.borrow().clone(),
            entries: std::mem::take(&mut self.core.trace.borrow_mut().entries),
        };
        RunResult {
            status,
            steps: self.core.step.get(),
            // The schedule is the actor column of the step records.
            schedule: records.iter().map(|r| r.actor).collect(),
            records,
            trace,
        }
    }

    fn held_by(&self, who: ActorId) -> Option<String> {
        let locks = self.core.locks.borrow();
        locks
            .iter()
            .flatten()
            .find(|s| s.holds(who).is_some())
            .map(|s| s.name.clone())
    }
}

fn holder_mode(kind: LockKind, mode: LockMode) -> &'static str {
    match (kind, mode) {
        (LockKind::RwSem, LockMode::Shared) => "read",
        (LockKind::RwSem, LockMode::Exclusive) => "write",
        _ => "held",
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Start => "start",
        Op::Access(_, _, what) => what,
        Op::Lock(..) => "lock",
        Op::Unlock(_) => "unlock",
        Op::WaitUntil(..) => "wait",
    }
}
