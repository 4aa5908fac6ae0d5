//! State shared by the executor and the actors, and [`Cx`], an actor's handle on it.

use crate::lock::{mode_name, LockId, LockMode, LockState};
use crate::op::{Access, Cond, Footprint, FpSet, ObjId, Op, OpKind, ProviderId};
use crate::trace::{Trace, TraceEntry};
use crate::ActorId;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

pub(crate) type ActorFuture = Pin<Box<dyn Future<Output = ()>>>;

/// Executor state reachable from inside actors. Single-threaded: `RefCell` borrows are never
/// held across an `.await`.
pub(crate) struct Core {
    pub step: Cell<u64>,
    pub tracing: Cell<bool>,
    /// Per actor: the op it will perform when next scheduled (`None` while running or done).
    pub pending: RefCell<Vec<Option<Op>>>,
    /// Per actor: the condition of its pending `Wait`, if that is its op.
    pub conds: RefCell<Vec<Option<Cond>>>,
    /// Per actor: whether its last `TryLock` got the lock.
    pub try_won: RefCell<Vec<bool>>,
    pub names: RefCell<Vec<String>>,
    /// Names of the registered objects (class 0), by index.
    pub objects: RefCell<Vec<String>>,
    /// Names of the object classes, by class number.
    pub classes: RefCell<Vec<&'static str>>,
    /// Indexed like `objects`; `Some` for objects that are locks.
    pub locks: RefCell<Vec<Option<LockState>>>,
    /// Per actor: the stack of kernel functions it is in, for readable traces.
    pub funcs: RefCell<Vec<Vec<&'static str>>>,
    pub trace: RefCell<Trace>,
    pub bug: RefCell<Option<(ActorId, String)>>,
    pub spawned: RefCell<Vec<(String, ActorFuture)>>,
}

impl Core {
    pub fn new() -> Self {
        Core {
            step: Cell::new(0),
            tracing: Cell::new(true),
            pending: RefCell::new(Vec::new()),
            conds: RefCell::new(Vec::new()),
            try_won: RefCell::new(Vec::new()),
            names: RefCell::new(Vec::new()),
            objects: RefCell::new(Vec::new()),
            classes: RefCell::new(vec!["object"]),
            locks: RefCell::new(Vec::new()),
            funcs: RefCell::new(Vec::new()),
            trace: RefCell::new(Trace::default()),
            bug: RefCell::new(None),
            spawned: RefCell::new(Vec::new()),
        }
    }

    pub fn emit(&self, actor: ActorId, text: String) {
        let funcs = self.funcs.borrow();
        let empty = Vec::new();
        let stack = funcs.get(actor).unwrap_or(&empty);
        let func = stack.last().copied().unwrap_or("");
        self.trace.borrow_mut().entries.push(TraceEntry {
            step: self.step.get(),
            actor,
            depth: stack.len().saturating_sub(1) as u16,
            func,
            text,
        });
    }

    pub fn lock_state<R>(&self, l: LockId, f: impl FnOnce(&LockState) -> R) -> R {
        f(self.locks.borrow()[l.0.index() as usize]
            .as_ref()
            .expect("lock id names a lock"))
    }

    pub fn lock_name(&self, l: LockId) -> String {
        self.objects.borrow()[l.0.index() as usize].clone()
    }

    /// `page 0x3`, `mmap_lock`: a readable name for an object.
    pub fn obj_name(&self, o: ObjId) -> String {
        if o.class() == crate::Class::NAMED {
            return self
                .objects
                .borrow()
                .get(o.index() as usize)
                .cloned()
                .unwrap_or_else(|| format!("object {}", o.index()));
        }
        let classes = self.classes.borrow();
        let c = classes.get(o.class().0 as usize).copied().unwrap_or("?");
        format!("{c} {:#x}", o.index())
    }

    pub fn fp_name(&self, f: &Footprint) -> String {
        let first = self.obj_name(f.obj());
        if f.len() == 1 {
            first
        } else {
            format!("{first} (+{} more)", f.len() - 1)
        }
    }
}

/// An actor's handle on the world: scheduling points, tracing, spawning, BUG.
#[derive(Clone)]
pub struct Cx {
    pub(crate) core: Rc<Core>,
    pub(crate) me: ActorId,
}

/// The await half of a scheduling point: pending on the first poll (handing control back to
/// the executor), ready on the second, which the executor makes only once it has performed
/// the op. The op itself is published by [`Cx::point`] just before, in the same poll.
struct Yield(bool);

impl Future for Yield {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

impl Cx {
    /// This actor's id.
    pub fn me(&self) -> ActorId {
        self.me
    }

    /// This actor's name (`vcpu0`, `host`, ...).
    pub fn name(&self) -> String {
        self.core
            .names
            .borrow()
            .get(self.me)
            .cloned()
            .unwrap_or_else(|| "setup".to_string())
    }

    /// Number of steps taken so far in this run.
    pub fn step(&self) -> u64 {
        self.core.step.get()
    }

    /// One scheduling point: publish `op` as this actor's pending op and return the future
    /// that yields to the executor. Callers are `async fn`s that await the result at once,
    /// so the op is published when the caller is first polled, not when its future is
    /// created. Inlined so that the op is built in place.
    #[inline(always)]
    fn point(&self, kind: OpKind, fp: FpSet, what: &'static str) -> Yield {
        self.core.pending.borrow_mut()[self.me] = Some(Op {
            kind,
            fp,
            dynamic: None,
            what,
        });
        Yield(false)
    }

    /// Acquire `l` (`mmap_read_lock`, `spin_lock`, `mutex_lock`, ...). The actor is not
    /// runnable until the lock can be granted.
    pub async fn lock(&self, l: LockId, mode: LockMode) {
        self.lock_with(l, mode, FpSet::new()).await
    }

    /// Acquire `l` and, in the same step, touch `also` (`pte_offset_map_lock` followed by
    /// the load of the entry it locked).
    pub async fn lock_with(&self, l: LockId, mode: LockMode, also: FpSet) {
        let mut fp = also;
        fp.push(l.0, mode.access());
        self.point(OpKind::Lock(l, mode), fp, "lock").await
    }

    /// Try to take `l` exclusively without sleeping (`mutex_trylock`); true if taken.
    pub async fn try_lock(&self, l: LockId) -> bool {
        self.point(
            OpKind::TryLock(l),
            FpSet::one(l.0, Access::Write),
            "trylock",
        )
        .await;
        self.core.try_won.borrow()[self.me]
    }

    /// Release `l`. Releasing a lock this actor does not hold is a host BUG.
    pub async fn unlock(&self, l: LockId) {
        self.unlock_with(l, FpSet::new()).await
    }

    /// Release `l` and touch `also` in the same step.
    pub async fn unlock_with(&self, l: LockId, also: FpSet) {
        let access = self.holds(l).unwrap_or(LockMode::Exclusive).access();
        let mut fp = also;
        fp.push(l.0, access);
        self.point(OpKind::Unlock(l), fp, "unlock").await
    }

    /// A lock-free access of shared model state: `READ_ONCE(kvm->mmu_invalidate_seq)`,
    /// `atomic_inc(&page->_refcount)`. The code after the await runs in the same step.
    pub async fn access(&self, obj: ObjId, access: Access, what: &'static str) {
        self.point(OpKind::Access, FpSet::one(obj, access), what)
            .await
    }

    /// One step that touches two objects at once, e.g. a memory access that walks a page
    /// table (`walk`) and loads or stores the frame (`data`).
    pub async fn access2(&self, walk: (ObjId, Access), data: (ObjId, Access), what: &'static str) {
        let mut fp = FpSet::one(walk.0, walk.1);
        fp.push(data.0, data.1);
        self.point(OpKind::Access, fp, what).await
    }

    /// One step touching everything in `fp`.
    pub async fn step_with(&self, fp: FpSet, what: &'static str) {
        self.point(OpKind::Access, fp, what).await
    }

    /// One step touching `fp` plus whatever `provider(arg)` says when the step is about to
    /// be scheduled (for steps whose objects follow from state others may change first).
    pub async fn step_dyn(&self, fp: FpSet, provider: ProviderId, arg: u64, what: &'static str) {
        self.core.pending.borrow_mut()[self.me] = Some(Op {
            kind: OpKind::Access,
            fp,
            dynamic: Some((provider, arg)),
            what,
        });
        Yield(false).await
    }

    /// Sleep until `cond` holds (`wait_event(wq, cond)`); `obj` is what the condition reads,
    /// and every write that can make it true must write `obj`.
    pub async fn wait_until(
        &self,
        obj: ObjId,
        what: &'static str,
        cond: impl Fn() -> bool + 'static,
    ) {
        self.core.conds.borrow_mut()[self.me] = Some(Box::new(cond));
        self.point(OpKind::Wait, FpSet::one(obj, Access::Read), what)
            .await
    }

    /// [`Cx::wait_until`] whose footprint is `fp` (every object `cond` reads, plus whatever
    /// the code right after the wait touches: it runs in the same step, atomically with the
    /// condition, as code under the wait queue's lock does). Every write that can make `cond`
    /// true must write an object of `fp`.
    pub async fn wait_until_with(
        &self,
        fp: FpSet,
        what: &'static str,
        cond: impl Fn() -> bool + 'static,
    ) {
        self.core.conds.borrow_mut()[self.me] = Some(Box::new(cond));
        self.point(OpKind::Wait, fp, what).await
    }

    /// Which mode this actor holds `l` in, if any (`lockdep_assert_held`).
    /// Setup code (no actor) holds nothing.
    pub fn holds(&self, l: LockId) -> Option<LockMode> {
        self.core.locks.borrow()[l.0.index() as usize]
            .as_ref()
            .and_then(|s| s.holds(self.me))
    }

    /// Whether trace events are being recorded; check before formatting an expensive event.
    pub fn tracing(&self) -> bool {
        self.core.tracing.get()
    }

    /// Append a line to the trace, attributed to this actor and its current kernel function.
    pub fn emit(&self, text: String) {
        if self.core.tracing.get() {
            self.core.emit(self.me, text);
        }
    }

    /// [`Cx::emit`] for a fixed text: allocates only when tracing.
    pub fn emit_str(&self, text: &str) {
        if self.core.tracing.get() {
            self.core.emit(self.me, text.to_string());
        }
    }

    /// Enter a kernel function: trace lines until the guard drops are attributed to `name`.
    pub fn func(&self, name: &'static str) -> FuncGuard {
        if let Some(stack) = self.core.funcs.borrow_mut().get_mut(self.me) {
            stack.push(name);
        }
        FuncGuard {
            core: self.core.clone(),
            me: self.me,
        }
    }

    /// A host `BUG()`: the run stops here with [`crate::Status::Bug`].
    pub async fn bug<T>(&self, what: impl Into<String>) -> T {
        let what = what.into();
        self.emit(format!("BUG: {what}"));
        *self.core.bug.borrow_mut() = Some((self.me, what));
        std::future::pending().await
    }

    /// Start another actor (a kworker, an async page-fault job); it is runnable from the next
    /// step on.
    pub fn spawn<F, Fut>(&self, name: impl Into<String>, f: F)
    where
        F: FnOnce(Cx) -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        let id = self.core.names.borrow().len() + self.core.spawned.borrow().len();
        let cx = Cx {
            core: self.core.clone(),
            me: id,
        };
        self.core
            .spawned
            .borrow_mut()
            .push((name.into(), Box::pin(f(cx))));
    }
}

/// Pops the kernel-function stack entry pushed by [`Cx::func`].
pub struct FuncGuard {
    core: Rc<Core>,
    me: ActorId,
}

impl Drop for FuncGuard {
    fn drop(&mut self) {
        if let Some(stack) = self.core.funcs.borrow_mut().get_mut(self.me) {
            stack.pop();
        }
    }
}

/// Describe a lock op for traces and deadlock reports: `mmap_lock (read)`.
pub(crate) fn describe_lock(core: &Core, l: LockId, mode: LockMode) -> String {
    core.lock_state(l, |st| match mode_name(st.kind, mode) {
        "" => st.name.clone(),
        m => format!("{} ({m})", st.name),
    })
}
