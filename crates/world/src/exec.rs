//! The executor: builds a world of actors and runs it under a scheduler.

use crate::audit;
use crate::core::{describe_lock, ActorFuture, Core, Cx};
use crate::lock::{LockId, LockKind, LockMode, LockState};
use crate::op::{Access, Class, Footprint, FpSet, ObjId, Op, OpKind, Provider, ProviderId};
use crate::sched::{Decision, Pending, Scheduler};
use crate::trace::Trace;
use crate::ActorId;
use std::fmt;
use std::future::Future;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Most actors a world may have (lock holders are kept as a 64-bit set).
pub const MAX_ACTORS: usize = 64;

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
    /// The scheduler refused to continue (a replayed schedule that does not fit, or an
    /// explorer cutting a redundant execution short).
    Diverged { step: u64 },
    /// Audit mode: a step touched model state its footprint does not declare and no lock it
    /// holds protects. A bug of the model, not of the kernel it models.
    Audit { actor: String, detail: String },
}

/// One step: who ran and what its scheduling point touched.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StepRecord {
    pub actor: ActorId,
    pub kind: OpKind,
    pub fp: FpSet,
    /// What the step was: `lock`, `unlock`, `start`, `wait`, or an access's description.
    pub what: &'static str,
    /// The kernel function the actor was in at the scheduling point (`""` outside any).
    pub func: &'static str,
}

/// Result of [`World::run`].
#[derive(Clone, Debug)]
pub struct RunResult {
    pub status: Status,
    pub steps: u64,
    /// The schedule: the actor chosen at each step. Replay with [`crate::Replay`].
    pub schedule: Vec<ActorId>,
    /// Per step, what it touched (empty when record keeping is off).
    pub records: Vec<StepRecord>,
    pub trace: Trace,
}

/// A set of actors over shared model state, run by one deterministic executor.
pub struct World {
    core: Rc<Core>,
    actors: Vec<Option<ActorFuture>>,
    max_steps: u64,
    audit: bool,
    records: bool,
    /// Objects only accessible under a lock: (objects, lock).
    protected: Vec<(Footprint, LockId)>,
    providers: Vec<Provider>,
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
            audit: false,
            records: true,
            protected: Vec::new(),
            providers: Vec::new(),
        }
    }

    /// Record trace lines (default on). Off makes scheduling points allocation-free.
    pub fn set_tracing(&mut self, on: bool) {
        self.core.tracing.set(on);
    }

    /// Keep per-step records in the [`RunResult`] (default on).
    pub fn set_records(&mut self, on: bool) {
        self.records = on;
    }

    /// Check every step's accesses against its footprint (see [`crate::audit`]).
    pub fn set_audit(&mut self, on: bool) {
        self.audit = on;
    }

    pub fn auditing(&self) -> bool {
        self.audit
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
        ObjId::new(Class::NAMED, objs.len() as u64 - 1)
    }

    /// Register a class of numbered objects (`pte`, `page`, `spte`), named in reports as
    /// `<name> <index>`.
    pub fn class(&mut self, name: &'static str) -> Class {
        let mut c = self.core.classes.borrow_mut();
        assert!(c.len() < 255, "at most 255 object classes");
        c.push(name);
        Class(c.len() as u8 - 1)
    }

    /// Register a lock.
    pub fn lock(&mut self, name: impl Into<String>, kind: LockKind) -> LockId {
        let name = name.into();
        let id = self.object(name.clone());
        self.core.locks.borrow_mut()[id.index() as usize] = Some(LockState {
            name,
            kind,
            writer: None,
            readers: 0,
        });
        LockId(id)
    }

    /// Declare that `objs` may only be touched while holding `lock` (any mode to read,
    /// exclusively to write). Audit mode enforces it; steps need not declare them.
    pub fn protect(&mut self, objs: Footprint, lock: LockId) {
        self.protected.push((objs, lock));
    }

    /// Register a footprint provider for [`Cx::step_dyn`]. A provider must name every object
    /// it reads to compute the footprint: then only a conflicting step can change what it
    /// says, which is what lets an explorer keep a pending step's footprint until such a step.
    pub fn provider(&mut self, p: Provider) -> ProviderId {
        self.providers.push(p);
        ProviderId(self.providers.len() as u32 - 1)
    }

    /// A readable name for an object (`pte 0x7f0000000`, `mmap_lock`).
    pub fn obj_name(&self, o: ObjId) -> String {
        self.core.obj_name(o)
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

    /// Actors spawned so far.
    pub fn actor_count(&self) -> usize {
        self.actors.len()
    }

    /// Actor names, by id.
    pub fn actor_names(&self) -> Vec<String> {
        self.core.names.borrow().clone()
    }

    fn add(&mut self, name: String, fut: ActorFuture) {
        self.core.names.borrow_mut().push(name);
        self.core.pending.borrow_mut().push(Some(Op {
            kind: OpKind::Start,
            fp: FpSet::new(),
            dynamic: None,
            what: "start",
        }));
        self.core.conds.borrow_mut().push(None);
        self.core.try_won.borrow_mut().push(false);
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

    /// The footprint `op` has in the current state.
    fn full_fp(&self, op: &Op) -> FpSet {
        let mut fp = op.fp;
        if let Some((p, arg)) = op.dynamic {
            (self.providers[p.0 as usize])(arg, &mut fp);
        }
        fp
    }

    /// Whether `a`'s pending op can be performed now; `Err` for an audit failure of its wait
    /// condition.
    fn enabled(&self, a: ActorId, op: &Op) -> Result<bool, String> {
        Ok(match op.kind {
            OpKind::Lock(l, mode) => self.core.lock_state(l, |s| s.can_grant(mode)),
            OpKind::Wait => {
                let conds = self.core.conds.borrow();
                let Some(cond) = conds[a].as_ref() else {
                    return Ok(false);
                };
                if !self.audit {
                    return Ok(cond());
                }
                audit::start();
                let r = cond();
                let mut log = Vec::new();
                audit::stop(&mut log);
                drop(conds);
                self.check_accesses(a, &op.fp, &log)
                    .map_err(|e| format!("wait condition \"{}\": {e}", op.what))?;
                r
            }
            _ => true,
        })
    }

    fn blocked(&self) -> Vec<Blocked> {
        let names = self.core.names.borrow();
        let pending = self.core.pending.borrow();
        let mut out = Vec::new();
        for (a, op) in pending.iter().enumerate() {
            let Some(op) = op else { continue };
            let (waits_for, holders) = match op.kind {
                OpKind::Lock(l, mode) => {
                    let h = self.core.lock_state(l, |st| {
                        let mut h: Vec<String> = Vec::new();
                        if let Some(w) = st.writer {
                            h.push(format!(
                                "{} ({})",
                                names[w],
                                holder_mode(st.kind, LockMode::Exclusive)
                            ));
                        }
                        for r in st.reader_ids() {
                            h.push(format!(
                                "{} ({})",
                                names[r],
                                holder_mode(st.kind, LockMode::Shared)
                            ));
                        }
                        h
                    });
                    (describe_lock(&self.core, l, mode), h)
                }
                OpKind::Wait => (op.what.to_string(), Vec::new()),
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
        match op.kind {
            OpKind::Lock(l, mode) => {
                self.core.locks.borrow_mut()[l.0.index() as usize]
                    .as_mut()
                    .expect("lock")
                    .grant(who, mode);
                if tracing {
                    let d = describe_lock(&self.core, l, mode);
                    self.core.emit(who, format!("lock {d}"));
                }
            }
            OpKind::TryLock(l) => {
                let won = {
                    let mut locks = self.core.locks.borrow_mut();
                    let st = locks[l.0.index() as usize].as_mut().expect("lock");
                    let ok = st.can_grant(LockMode::Exclusive);
                    if ok {
                        st.grant(who, LockMode::Exclusive);
                    }
                    ok
                };
                self.core.try_won.borrow_mut()[who] = won;
                if tracing {
                    let n = self.core.lock_name(l);
                    let t = if won { "" } else { " failed" };
                    self.core.emit(who, format!("trylock {n}{t}"));
                }
            }
            OpKind::Unlock(l) => {
                let held = self.core.locks.borrow_mut()[l.0.index() as usize]
                    .as_mut()
                    .expect("lock")
                    .release(who);
                if held.is_none() {
                    return Err(format!("unlock of {} not held", self.core.lock_name(l)));
                }
                if tracing {
                    let n = self.core.lock_name(l);
                    self.core.emit(who, format!("unlock {n}"));
                }
            }
            OpKind::Wait if tracing => {
                self.core.emit(who, format!("woken: {}", op.what));
            }
            _ => {}
        }
        Ok(())
    }

    /// The audit rule (see [`crate::audit`]) for the accesses `log` of one step by `who`.
    fn check_accesses(&self, who: ActorId, fp: &FpSet, log: &[Footprint]) -> Result<(), String> {
        for e in log {
            let guard = self.protected.iter().find(|(r, _)| {
                r.obj().class() == e.obj().class()
                    && r.obj().index() <= e.obj().index()
                    && e.obj().index() + u64::from(e.len()) <= r.obj().index() + u64::from(r.len())
            });
            if let Some((_, l)) = guard {
                let held =
                    self.core
                        .lock_state(*l, |s| if who < MAX_ACTORS { s.holds(who) } else { None });
                let ok = match (e.access(), held) {
                    (_, None) => false,
                    (Access::Read, Some(_)) => true,
                    (Access::Write, Some(m)) => m == LockMode::Exclusive,
                };
                if !ok {
                    return Err(format!(
                        "{} of {} (protected by {}) while holding it {}",
                        e.access().verb(),
                        self.core.fp_name(e),
                        self.core.lock_name(*l),
                        match held {
                            None => "not at all",
                            Some(LockMode::Shared) => "shared only",
                            Some(LockMode::Exclusive) => "exclusively",
                        }
                    ));
                }
                continue;
            }
            let covered = fp.iter().any(|d| {
                d.obj().class() == e.obj().class()
                    && d.obj().index() <= e.obj().index()
                    && e.obj().index() + u64::from(e.len()) <= d.obj().index() + u64::from(d.len())
                    && d.access().covers(e.access())
            });
            if !covered {
                let decl: Vec<String> = fp
                    .iter()
                    .map(|d| format!("{} {}", d.access().verb(), self.core.fp_name(d)))
                    .collect();
                return Err(format!(
                    "{} of {} not declared (the step declares: {})",
                    e.access().verb(),
                    self.core.fp_name(e),
                    if decl.is_empty() {
                        "nothing".to_string()
                    } else {
                        decl.join(", ")
                    }
                ));
            }
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
        self.run_observed(sched, &mut |_| observer())
    }

    /// [`World::run`] with an observer that is told which step was just taken.
    pub fn run_observed(
        &mut self,
        sched: &mut dyn Scheduler,
        observer: &mut dyn FnMut(&StepRecord) -> ControlFlow<String>,
    ) -> RunResult {
        let mut records = Vec::new();
        let mut schedule = Vec::new();
        let mut enabled: Vec<ActorId> = Vec::new();
        let mut pendings: Vec<Pending> = Vec::new();
        let mut actors_seen = usize::MAX;
        let mut log: Vec<Footprint> = Vec::new();
        let mut last: Option<ActorId> = None;
        let mut cx = Context::from_waker(Waker::noop());
        // Steps of earlier runs of this world (a setup phase) do not count in this one.
        let base = self.core.step.get();
        sched.begin();
        let status = loop {
            self.adopt_spawned();
            if self.actors.len() > MAX_ACTORS {
                break Status::Bug {
                    actor: "world".into(),
                    what: format!("more than {MAX_ACTORS} actors"),
                };
            }
            if let Some((a, what)) = self.core.bug.borrow_mut().take() {
                break Status::Bug {
                    actor: self.core.names.borrow()[a].clone(),
                    what,
                };
            }
            enabled.clear();
            let mut audit_fail = None;
            {
                // Each unfinished actor's view: rebuilt for actors whose op changed (the one
                // that ran, new ones), refreshed for the rest (enabledness, and footprints
                // that depend on the state).
                let pending = self.core.pending.borrow();
                let n = pending.len();
                let ran_done = last.is_none_or(|r| pending[r].is_none());
                if ran_done || n != actors_seen {
                    actors_seen = n;
                    pendings.clear();
                    for (a, op) in pending.iter().enumerate() {
                        if let Some(op) = op {
                            pendings.push(Pending {
                                actor: a,
                                kind: op.kind,
                                fp: op.fp,
                                enabled: false,
                                what: op.what,
                            });
                            if op.dynamic.is_some() {
                                let p = pendings.last_mut().expect("pushed");
                                p.fp = self.full_fp(op);
                            }
                        }
                    }
                } else if let Some(ran) = last {
                    if let Some(p) = pendings.iter_mut().find(|p| p.actor == ran) {
                        let op = pending[ran].as_ref().expect("counted");
                        p.kind = op.kind;
                        p.fp = op.fp;
                        p.what = op.what;
                    }
                }
                debug_assert!(pendings.iter().all(|p| p.actor < n));
                for p in pendings.iter_mut() {
                    let op = pending[p.actor].as_ref().expect("pending actor has an op");
                    if op.dynamic.is_some() {
                        p.fp = self.full_fp(op);
                    }
                    p.enabled = match self.enabled(p.actor, op) {
                        Ok(e) => e,
                        Err(e) => {
                            audit_fail = Some((p.actor, e));
                            false
                        }
                    };
                    if p.enabled {
                        enabled.push(p.actor);
                    }
                }
            }
            if let Some((a, detail)) = audit_fail {
                break Status::Audit {
                    actor: self.core.names.borrow()[a].clone(),
                    detail,
                };
            }
            if enabled.is_empty() {
                if self.actors.iter().all(Option::is_none) {
                    break Status::Completed;
                }
                break Status::Deadlock(self.blocked());
            }
            let step = self.core.step.get();
            if step - base >= self.max_steps {
                break Status::StepLimit;
            }
            let decision = Decision {
                step: step - base,
                enabled: &enabled,
                pending: &pendings,
                last,
            };
            let Some(who) = sched.pick(&decision) else {
                break Status::Diverged { step: step - base };
            };
            let Some(p) = pendings.iter().find(|p| p.actor == who && p.enabled) else {
                break Status::Diverged { step: step - base };
            };
            let (performed, rec) = {
                let mut pending = self.core.pending.borrow_mut();
                let op = pending[who].take().expect("enabled actor has an op");
                let func = self
                    .core
                    .funcs
                    .borrow()
                    .get(who)
                    .and_then(|s| s.last())
                    .copied();
                let rec = StepRecord {
                    actor: who,
                    kind: op.kind,
                    fp: p.fp,
                    what: op.what,
                    func: func.unwrap_or(""),
                };
                drop(pending);
                (self.perform(who, &op), rec)
            };
            if self.records {
                records.push(rec);
            }
            schedule.push(who);
            last = Some(who);
            if let Err(what) = performed {
                break Status::Bug {
                    actor: self.core.names.borrow()[who].clone(),
                    what,
                };
            }
            if rec.kind == OpKind::Wait {
                // The wait is over: drop its condition (and whatever it captured) now.
                self.core.conds.borrow_mut()[who] = None;
            }
            let fut = self.actors[who].as_mut().expect("pending actor is alive");
            if self.audit {
                audit::start();
            }
            let done = matches!(fut.as_mut().poll(&mut cx), Poll::Ready(()));
            if self.audit {
                audit::stop(&mut log);
                if let Err(detail) = self.check_accesses(who, &rec.fp, &log) {
                    self.core.step.set(step + 1);
                    break Status::Audit {
                        actor: self.core.names.borrow()[who].clone(),
                        detail: format!("step {step} ({}): {detail}", rec.what),
                    };
                }
            }
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
            if let ControlFlow::Break(why) = observer(&rec) {
                break Status::Stopped(why);
            }
        };
        sched.end(&status);
        let trace = Trace {
            actors: self.core.names.borrow().clone(),
            entries: std::mem::take(&mut self.core.trace.borrow_mut().entries),
        };
        RunResult {
            status,
            steps: self.core.step.get() - base,
            schedule,
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

impl Drop for World {
    /// Actors hold the executor core (through their `Cx`), and the core may hold wait
    /// conditions and not-yet-adopted actors that capture model state: drop all of those
    /// explicitly so that nothing of a finished world stays alive.
    fn drop(&mut self) {
        self.actors.clear();
        self.core.conds.borrow_mut().clear();
        self.core.spawned.borrow_mut().clear();
        self.core.pending.borrow_mut().clear();
    }
}

fn holder_mode(kind: LockKind, mode: LockMode) -> &'static str {
    match (kind, mode) {
        (LockKind::RwSem, LockMode::Shared) => "read",
        (LockKind::RwSem, LockMode::Exclusive) => "write",
        _ => "held",
    }
}
