//! The exploration loop: stateless re-execution of a program under prefixes of choices.
//!
//! `nodes[i]` is the choice point before step `i` of the current execution: which actors
//! were runnable, which was chosen, which are still to be tried (`backtrack`), which were
//! tried (`done`), and which sleep (tried from an ancestor, and independent of everything
//! since). After each execution, source-DPOR adds, for every race, an initial of the
//! reversed race to the backtrack set of the choice point before it; DFS backtracks on every
//! runnable actor. Then the deepest choice point with something left to try is re-entered by
//! re-running the program from scratch along the prefix.

use crate::hb::{Event, Hb};
use crate::minimize::{preemptions, Candidates};
use crate::par::Part;
use crate::sample::{run_one, sample};
use crate::{Cut, Error, Options, Progress, Report, Strategy};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use world::{Decision, FpSet, Program, Scheduler, Status};

/// Bit of actor `a` in a mask.
fn bit(a: u8) -> u64 {
    1 << a
}

fn mask(actors: &[usize]) -> u64 {
    actors.iter().fold(0, |m, &a| m | (1 << a))
}

fn entries_mask(v: &[(u8, FpSet)]) -> u64 {
    v.iter().fold(0, |m, (a, _)| m | bit(*a))
}

/// Whether choosing `q` after `last` is a preemption: `last` could have continued.
pub(crate) fn is_preemption(last: Option<u8>, q: u8, enabled: u64) -> bool {
    matches!(last, Some(l) if l != q && enabled & bit(l) != 0)
}

/// The first actor tried at a new choice point: the one that ran last when it can go on
/// (the first schedule of every subtree is the least preemptive one), else the lowest.
fn first_choice(last: Option<u8>, avail: u64) -> u8 {
    match last {
        Some(l) if avail & bit(l) != 0 => l,
        _ => avail.trailing_zeros() as u8,
    }
}

/// Whether a node whose path has `branched` branching nodes and `deviations` non-first
/// choices above it belongs to the split region: the first `split` levels, and the paths
/// that deviate from the leftmost at most `DEVIATIONS` times down to `DEEP * split` (an
/// exploration's mass sits near the leftmost path: measured, splitting only the first
/// levels leaves 80% of `concurrent-invalidations` in one subtree).
fn in_region(split: u32, branched: u32, deviations: u32, bounded: bool) -> bool {
    let deep = branched < split.saturating_mul(DEEP);
    if bounded {
        // Without sleep sets (unsound under a bound) every extra full node costs whole
        // subtrees: split along the leftmost path only.
        return deviations == 0 && deep;
    }
    branched < split || (deviations <= DEVIATIONS && deep)
}

/// How much deeper than the split depth the near-leftmost paths are split.
pub const DEEP: u32 = 8;
/// How far from the leftmost path the deep split reaches.
pub const DEVIATIONS: u32 = 1;

/// The order a choice point's actors are tried in when all are: the first choice, then the
/// rest by id (what `next_branch` does).
fn sibling_order(first: u8, avail: u64) -> impl Iterator<Item = u8> {
    std::iter::once(first).chain((0..64u8).filter(move |&a| a != first && avail & bit(a) != 0))
}

/// A choice point.
#[derive(Default)]
struct Node {
    /// The chosen actor's step here (its footprint is unknown until the step is reached
    /// again after a backtrack: `fp_pending`).
    ev: Event,
    enabled: u64,
    last: Option<u8>,
    fp_pending: bool,
    backtrack: u64,
    /// Actors tried here, with their step's footprint here.
    done: Vec<(u8, FpSet)>,
    /// Actors asleep on arrival, with their pending footprint.
    sleep: Vec<(u8, FpSet)>,
    /// Actors the preemption bound kept from being tried here.
    skipped: u64,
    /// Preemptions on the path before this node's step.
    preempted: u32,
    /// Branching choice points (two or more actors to try) on the path up to and including
    /// this one.
    branched: u32,
    /// The actor a new node tries first.
    first: u8,
    /// Choices above this node that were not their node's first: 0 on the leftmost path,
    /// where an exploration's mass sits.
    deviations: u32,
}

impl Node {
    fn chosen(&self) -> u8 {
        self.ev.actor
    }

    /// Fill `out` with the sleep set of the child reached by the chosen step: everything
    /// asleep here or tried here before, whose step is independent of the chosen one.
    fn child_sleep(&self, out: &mut Vec<(u8, FpSet)>) {
        out.clear();
        out.extend(
            self.sleep
                .iter()
                .chain(self.done.iter())
                .filter(|(a, f)| *a != self.ev.actor && !f.conflicts(&self.ev.fp))
                .copied(),
        );
    }

    /// Preemptions on the path including this node's step.
    fn preempted_after(&self) -> u32 {
        self.preempted + u32::from(is_preemption(self.last, self.ev.actor, self.enabled))
    }
}

/// The choice points of the current execution, with storage kept across executions.
#[derive(Default)]
struct Path {
    nodes: Vec<Node>,
    len: usize,
}

impl Path {
    fn get(&self) -> &[Node] {
        &self.nodes[..self.len]
    }

    fn get_mut(&mut self) -> &mut [Node] {
        &mut self.nodes[..self.len]
    }

    fn pop(&mut self) {
        self.len -= 1;
    }
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum End {
    Normal,
    /// Every runnable actor asleep: the rest of this execution is redundant.
    Redundant,
    /// The preemption bound allows no choice here.
    Pruned,
    Nondeterministic(usize),
    /// Enumerating the split region: this execution reached the region's edge.
    Frontier,
}

/// The scheduler of one execution: replays `path[..replay]`, then extends the path.
struct Tree<'a> {
    path: &'a mut Path,
    replay: usize,
    dfs: bool,
    bound: Option<u32>,
    end: End,
    /// A subtree's task: the choices of the split region above it.
    forced: &'a [u8],
    /// Enumerating the split region: stop after this many branching choice points.
    split: Option<u32>,
}

impl Scheduler for Tree<'_> {
    fn pick(&mut self, d: &Decision) -> Option<usize> {
        let i = d.step as usize;
        let en = mask(d.enabled);
        if i < self.replay {
            let n = &mut self.path.get_mut()[i];
            if n.enabled != en {
                self.end = End::Nondeterministic(i);
                return None;
            }
            if n.fp_pending {
                let Some(p) = d.pending_of(n.chosen() as usize) else {
                    self.end = End::Nondeterministic(i);
                    return None;
                };
                n.ev.kind = p.kind;
                n.ev.fp = p.fp;
                n.done.push((n.ev.actor, p.fp));
                n.fp_pending = false;
            }
            return Some(n.chosen() as usize);
        }
        let last = d.last.map(|a| a as u8);
        let len = self.path.len;
        let sleep_sets = !self.dfs && self.bound.is_none();
        let preempted = self.path.get().last().map_or(0, Node::preempted_after);
        // The new node (reusing a dropped one's storage) takes its parent's child sleep set.
        if self.path.nodes.len() == len {
            self.path.nodes.push(Node::default());
        }
        let (before, after) = self.path.nodes.split_at_mut(len);
        let node = &mut after[0];
        match (before.last(), sleep_sets) {
            (Some(p), true) => p.child_sleep(&mut node.sleep),
            _ => node.sleep.clear(),
        }
        let asleep = entries_mask(&node.sleep);
        let avail = en & !asleep;
        if avail == 0 {
            self.end = End::Redundant;
            return None;
        }
        let branched_before = before.last().map_or(0, |p| p.branched);
        let deviations = before
            .last()
            .map_or(0, |p| p.deviations + u32::from(p.chosen() != p.first));
        if self
            .split
            .is_some_and(|s| !in_region(s, branched_before, deviations, self.bound.is_some()))
        {
            self.end = End::Frontier;
            return None;
        }
        let first = first_choice(last, avail);
        let forced = self.forced.get(len).copied();
        let choice = match forced {
            Some(f) if avail & bit(f) != 0 => f,
            Some(_) => {
                self.end = End::Nondeterministic(len);
                return None;
            }
            None => first,
        };
        if let Some(b) = self.bound {
            if preempted + u32::from(is_preemption(last, choice, en)) > b {
                self.end = End::Pruned;
                return None;
            }
        }
        let p = d.pending_of(choice as usize).expect("chosen among enabled");
        node.ev = Event {
            actor: choice,
            kind: p.kind,
            fp: p.fp,
        };
        node.enabled = en;
        node.last = last;
        node.fp_pending = false;
        // In the split region every runnable actor is tried; a task's region node is its
        // one forced choice, with the siblings tried before it as done (for sleep sets).
        node.backtrack = if self.dfs || self.split.is_some() {
            en
        } else {
            bit(choice)
        };
        node.done.clear();
        if forced.is_some() {
            for a in sibling_order(first, avail) {
                if a == choice {
                    break;
                }
                let f = d.pending_of(a as usize).expect("runnable").fp;
                node.done.push((a, f));
            }
        }
        node.done.push((choice, p.fp));
        node.skipped = 0;
        node.preempted = preempted;
        node.branched = branched_before + u32::from(avail.count_ones() >= 2);
        node.first = first;
        node.deviations = deviations;
        self.path.len += 1;
        Some(choice as usize)
    }
}

/// Explore `program` as `opts` says, reporting progress every few hundred executions.
pub fn explore(
    program: &mut dyn Program,
    opts: &Options,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, Error> {
    match opts.strategy {
        Strategy::Dpor | Strategy::Dfs => {
            let start = Instant::now();
            let levels = crate::par::levels(program, None, opts, 1, Part::ALL, progress)?;
            let mut t = combine_levels(levels.into_iter().map(|l| l.report).collect())
                .expect("at least one level");
            t.elapsed = start.elapsed();
            Ok(t)
        }
        Strategy::Pct | Strategy::Random | Strategy::Sample => sample(program, opts, progress),
    }
}

/// Combine the report of a higher bound into the lower bounds': counterexamples from the
/// lower bound win (fewer preemptions), counts add up, the higher bound's cuts stand.
fn merge_levels(mut lo: Report, hi: Report) -> Report {
    let (bound, cuts) = (hi.preemption_bound, hi.cuts.clone());
    lo = merge_parts(lo, hi);
    lo.preemption_bound = bound;
    lo.cuts = cuts;
    lo
}

/// Iterative bounding's rule for stopping after a level: it pruned nothing, or something
/// other than the bound cut it.
pub(crate) fn last_level(r: &Report) -> bool {
    !r.cuts.contains(&Cut::Bound) || r.cuts.iter().any(|c| *c != Cut::Bound)
}

/// Combine the reports of consecutive bound levels (0, 1, ...) as iterative bounding does:
/// up to the first level after which it stops.
pub fn combine_levels(levels: Vec<Report>) -> Option<Report> {
    let mut total: Option<Report> = None;
    for r in levels {
        let stop = last_level(&r);
        total = Some(match total {
            None => r,
            Some(t) => merge_levels(t, r),
        });
        if stop {
            break;
        }
    }
    total
}

/// Add up two reports of disjoint parts of one exploration (`hi` explored after `lo`):
/// counts add, the first-found details and first-seen values of `lo` come first, cuts join.
pub fn merge_parts(mut lo: Report, hi: Report) -> Report {
    lo.executions += hi.executions;
    lo.finished += hi.finished;
    lo.redundant += hi.redundant;
    lo.diverged += hi.diverged;
    lo.max_depth = lo.max_depth.max(hi.max_depth);
    lo.elapsed += hi.elapsed;
    for c in hi.cuts {
        if !lo.cuts.contains(&c) {
            lo.cuts.push(c);
        }
    }
    lo.cuts.sort_unstable();
    for f in hi.found {
        match lo.found.iter_mut().find(|x| x.oracle == f.oracle) {
            Some(x) => {
                x.executions += f.executions;
                if better(&f.counterexample, &x.counterexample) {
                    x.counterexample = f.counterexample;
                }
            }
            None => lo.found.push(f),
        }
    }
    for (k, v) in hi.outcomes {
        *lo.outcomes.entry(k).or_insert(0) += v;
    }
    for (i, vals) in hi.observed.into_iter().enumerate() {
        if lo.observed.len() <= i {
            lo.observed.push(Vec::new());
        }
        for v in vals {
            if !lo.observed[i].contains(&v) {
                lo.observed[i].push(v);
            }
        }
    }
    lo.joint_truncated |= hi.joint_truncated;
    for j in hi.joint {
        crate::add_joint(&mut lo, &j);
    }
    lo.divergence = lo.divergence.or(hi.divergence);
    lo
}

/// Whether counterexample `a` tells a shorter story than `b`: fewer preemptions, then fewer
/// steps (confirmed ones first).
fn better(a: &Option<crate::Counterexample>, b: &Option<crate::Counterexample>) -> bool {
    let key = |c: &crate::Counterexample| (!c.confirmed, c.preemptions, c.schedule.len());
    match (a, b) {
        (Some(a), Some(b)) => key(a) < key(b),
        (Some(_), None) => true,
        _ => false,
    }
}

/// How many branching choice points from the root are explored in full by default (see
/// [`crate::Options::split_depth`]).
pub const SPLIT_DEPTH: u32 = 8;

/// Explorations that plain DPOR finishes within this many executions are not split.
pub const SPLIT_ABOVE: u64 = 1_000;

/// A small space is explored whole: plain DPOR, capped at `split_above` executions. `None`
/// when it did not finish there: the space is split instead (and this run discarded, so
/// every way of running the exploration runs the same executions).
pub(crate) fn whole(
    program: &mut dyn Program,
    opts: &Options,
    bound: Option<u32>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Option<Report>, Error> {
    if opts.split_depth == 0 {
        return one_task(program, opts, bound, progress).map(Some);
    }
    let mut o = opts.clone();
    o.split_depth = 0;
    let user_cap = opts.max_executions.is_some_and(|m| m <= opts.split_above);
    if !user_cap {
        o.max_executions = Some(opts.split_above);
    }
    let r = one_task(program, &o, bound, progress)?;
    let capped = !user_cap && r.cuts.contains(&Cut::Executions);
    Ok((!capped).then_some(r))
}

/// The unsplit exploration: one task, the whole tree.
fn one_task(
    program: &mut dyn Program,
    opts: &Options,
    bound: Option<u32>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, Error> {
    let start = Instant::now();
    let mut w = Worker::new(opts, bound);
    w.run_task(
        program,
        &[],
        start,
        &Shared::default(),
        &mut |acc: &Acc, depth| progress(&acc.progress(start, depth)),
    )?;
    w.acc.report.elapsed = start.elapsed();
    w.finish(program)
}

/// The tasks of one exploration, in the order a single thread explores them: for each, the
/// choices that lead from the root through the split region to its subtree (or to the end
/// of an execution that ends inside the region). Also the cuts the region itself made.
///
/// A region node tries every runnable actor (as plain DFS does), so a race found below it
/// never needs to add a backtrack point there: the subtrees do not talk to each other, and
/// exploring them one by one, on several threads or on several machines, runs exactly the
/// same executions.
pub(crate) fn frontier(
    program: &mut dyn Program,
    opts: &Options,
    bound: Option<u32>,
) -> Result<(Vec<Vec<u8>>, Vec<Cut>), Error> {
    let mut acc = Acc::new(opts.strategy, bound);
    let mut path = Path::default();
    let mut tasks = Vec::new();
    let mut replay = 0usize;
    loop {
        path.len = replay;
        let mut tree = Tree {
            path: &mut path,
            replay,
            dfs: opts.strategy == Strategy::Dfs,
            bound,
            end: End::Normal,
            forced: &[],
            split: Some(opts.split_depth),
        };
        run_one(program, &mut tree, false, false)?;
        if let End::Nondeterministic(step) = tree.end {
            return Err(Error::Nondeterministic { step });
        }
        tasks.push(path.get().iter().map(Node::chosen).collect());
        match next_branch(&mut path, bound, &mut acc, 0) {
            Some(r) => replay = r,
            None => break,
        }
    }
    Ok((tasks, acc.report.cuts))
}

/// What the workers of one exploration share: the execution count (for the cap) and a stop
/// flag (a worker stopped at a failure, or the cap or budget ran out).
#[derive(Default)]
pub(crate) struct Shared {
    pub executions: AtomicU64,
    stop: Mutex<Option<Cut>>,
    stopping: AtomicBool,
}

impl Shared {
    pub fn stop(&self, c: Cut) {
        let mut s = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        s.get_or_insert(c);
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub fn stopped(&self) -> Option<Cut> {
        if !self.stopping.load(Ordering::Relaxed) {
            return None;
        }
        *self.stop.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One thread's exploration state, reused across its tasks.
pub(crate) struct Worker<'o> {
    opts: &'o Options,
    bound: Option<u32>,
    pub acc: Acc,
    pub cands: Candidates,
    path: Path,
    hb: Hb,
    races: Vec<(u32, u32)>,
    last_progress: Instant,
}

impl<'o> Worker<'o> {
    pub fn new(opts: &'o Options, bound: Option<u32>) -> Self {
        Worker {
            opts,
            bound,
            acc: Acc::new(opts.strategy, bound),
            cands: Candidates::default(),
            path: Path::default(),
            hb: Hb::default(),
            races: Vec::new(),
            last_progress: Instant::now(),
        }
    }

    /// Explore one task's subtree. `Some(cut)` when exploration as a whole must stop (a
    /// failure with `stop_on_failure`, the cap or the budget, here or in another worker).
    pub fn run_task(
        &mut self,
        program: &mut dyn Program,
        task: &[u8],
        start: Instant,
        shared: &Shared,
        progress: &mut dyn FnMut(&Acc, usize),
    ) -> Result<Option<Cut>, Error> {
        let opts = self.opts;
        let bound = self.bound;
        let dfs = opts.strategy == Strategy::Dfs;
        let floor = task.len();
        let mut replay = 0usize;
        loop {
            if let Some(c) = shared.stopped() {
                // Another worker stopped the exploration: this subtree is left unexplored.
                self.acc.cut(c);
                return Ok(Some(c));
            }
            let branch = replay.saturating_sub(1);
            self.path.len = replay;
            let mut tree = Tree {
                path: &mut self.path,
                replay,
                dfs,
                bound,
                end: End::Normal,
                forced: task,
                split: None,
            };
            let run = run_one(program, &mut tree, false, opts.observe)?;
            let end = tree.end;
            if let End::Nondeterministic(step) = end {
                return Err(Error::Nondeterministic { step });
            }
            let acc = &mut self.acc;
            acc.report.executions += 1;
            let executions = shared.executions.fetch_add(1, Ordering::Relaxed) + 1;
            match end {
                End::Redundant => acc.report.redundant += 1,
                End::Pruned => acc.cut(Cut::Bound),
                _ => {}
            }
            let nodes = self.path.get();
            let steps = nodes.len();
            acc.report.max_depth = acc.report.max_depth.max(steps);
            let finished = end == End::Normal;
            if !run.failures.is_empty() && steps > 0 {
                let enabled: Vec<u64> = nodes.iter().map(|n| n.enabled).collect();
                let sched: Vec<u8> = nodes.iter().map(Node::chosen).collect();
                let events: Vec<Event> = nodes.iter().map(|n| n.ev).collect();
                for f in &run.failures {
                    let upto = (f.step as usize).min(steps - 1);
                    let p = preemptions(&sched[..=upto], &enabled);
                    self.cands.offer(f.oracle, &sched, &events, upto, p);
                }
            }
            acc.add(&run, finished, || {
                nodes.iter().map(|n| n.chosen() as usize).collect()
            });
            if !dfs {
                self.races.clear();
                let actors = run.actors.max(1);
                // Steps before the branch point are the previous execution's: only the rest
                // is new.
                self.hb
                    .analyze_from(nodes, |n| &n.ev, actors, branch, branch, &mut self.races);
                let nodes = self.path.get_mut();
                for &(i, j) in &self.races {
                    // The region above the task already tries every actor.
                    if i as usize >= floor {
                        add_backtrack(nodes, &self.hb, i as usize, j as usize, bound, floor);
                    }
                }
            }
            if self.last_progress.elapsed().as_millis() >= 100 {
                self.last_progress = Instant::now();
                progress(&self.acc, steps);
            }
            if opts.stop_on_failure && !self.acc.report.found.is_empty() {
                self.acc.cut(Cut::Failure);
                shared.stop(Cut::Failure);
                return Ok(Some(Cut::Failure));
            }
            let cut = if opts.max_executions.is_some_and(|m| executions >= m) {
                Some(Cut::Executions)
            } else if opts.budget.is_some_and(|b| start.elapsed() >= b) {
                Some(Cut::Budget)
            } else if opts.interrupted() {
                Some(Cut::Interrupted)
            } else {
                None
            };
            let more = next_branch(&mut self.path, bound, &mut self.acc, floor);
            if let Some(c) = cut {
                if more.is_some() {
                    self.acc.cut(c);
                }
                shared.stop(c);
                return Ok(Some(c));
            }
            match more {
                Some(r) => replay = r,
                None => return Ok(None),
            }
        }
    }

    /// Hand out what the tasks so far found, and start afresh (keeping the allocations).
    pub fn take(&mut self) -> (Acc, Candidates) {
        (
            std::mem::replace(&mut self.acc, Acc::new(self.opts.strategy, self.bound)),
            std::mem::take(&mut self.cands),
        )
    }

    /// Minimise the counterexamples and hand the report out.
    pub fn finish(self, program: &mut dyn Program) -> Result<Report, Error> {
        let Worker {
            acc,
            mut cands,
            opts,
            ..
        } = self;
        let mut r = acc.finish(program, &mut cands, opts)?;
        r.cuts.sort_unstable();
        Ok(r)
    }
}

/// Source-DPOR: for the race between steps `i` and `j`, make sure some initial of the
/// reversed sequence is tried at choice point `i`.
fn add_backtrack(
    nodes: &mut [Node],
    hb: &Hb,
    i: usize,
    j: usize,
    bound: Option<u32>,
    floor: usize,
) {
    let n = &nodes[i];
    let init = hb.initials(i, j);
    if init & n.backtrack != 0 {
        return;
    }
    let aj = hb.actor(j);
    // The racing step's actor, if it is an initial: reversible only if it could run here.
    let q = if init & bit(aj) != 0 {
        if n.enabled & bit(aj) == 0 {
            return;
        }
        aj
    } else {
        let runnable = init & n.enabled;
        if runnable == 0 {
            return;
        }
        runnable.trailing_zeros() as u8
    };
    nodes[i].backtrack |= bit(q);
    // Bounded DPOR: if taking `q` here costs a preemption, also try it at the latest
    // earlier point where it would not (Coons et al.'s conservative branch).
    if let Some(b) = bound {
        let n = &nodes[i];
        if n.preempted + u32::from(is_preemption(n.last, q, n.enabled)) > b {
            // Above `floor` (the split region) every actor is tried already.
            for k in (floor..i).rev() {
                let m = &nodes[k];
                if m.enabled & bit(q) != 0 && !is_preemption(m.last, q, m.enabled) {
                    nodes[k].backtrack |= bit(q);
                    break;
                }
            }
        }
    }
}

/// Pop to the deepest choice point below `floor` with an untried actor, choose it, and
/// return how many choice points the next execution replays (`None`: nothing left).
fn next_branch(path: &mut Path, bound: Option<u32>, acc: &mut Acc, floor: usize) -> Option<usize> {
    while path.len > floor {
        let n = path.get_mut().last_mut().expect("len > floor");
        let tried = entries_mask(&n.done) | entries_mask(&n.sleep) | n.skipped;
        let mut cand = n.backtrack & n.enabled & !tried;
        while cand != 0 {
            let q = cand.trailing_zeros() as u8;
            cand &= !bit(q);
            if let Some(b) = bound {
                if n.preempted + u32::from(is_preemption(n.last, q, n.enabled)) > b {
                    n.skipped |= bit(q);
                    acc.cut(Cut::Bound);
                    continue;
                }
            }
            n.ev.actor = q;
            n.fp_pending = true;
            return Some(path.len);
        }
        path.pop();
    }
    None
}

/// Accumulates a report from executions.
pub(crate) struct Acc {
    pub report: Report,
}

impl Acc {
    pub fn new(strategy: Strategy, bound: Option<u32>) -> Self {
        Acc {
            report: Report::empty(strategy, bound),
        }
    }

    pub fn cut(&mut self, c: Cut) {
        if !self.report.cuts.contains(&c) {
            self.report.cuts.push(c);
        }
    }

    pub fn progress(&self, start: Instant, depth: usize) -> Progress {
        Progress {
            executions: self.report.executions,
            depth,
            failures: self.report.found.len(),
            elapsed: start.elapsed(),
        }
    }

    /// Account one execution. `finished`: it ran to its end (not cut short as redundant).
    pub fn add(
        &mut self,
        run: &crate::sample::RunData,
        finished: bool,
        schedule: impl FnOnce() -> Vec<usize>,
    ) {
        for f in &run.failures {
            match self.report.found.iter_mut().find(|x| x.oracle == f.oracle) {
                Some(x) => x.executions += 1,
                None => self.report.found.push(crate::Found {
                    oracle: f.oracle,
                    detail: f.detail.clone(),
                    executions: 1,
                    counterexample: None,
                }),
            }
        }
        // One count per oracle per execution, however often it fired.
        let mut oracles: Vec<&'static str> = run.failures.iter().map(|f| f.oracle).collect();
        oracles.sort_unstable();
        oracles.dedup();
        let dup = run.failures.len() - oracles.len();
        if dup > 0 {
            for o in &oracles {
                let n = run.failures.iter().filter(|f| f.oracle == *o).count() as u64;
                if let Some(x) = self.report.found.iter_mut().find(|x| x.oracle == *o) {
                    x.executions -= n - 1;
                }
            }
        }
        if run.status == Status::StepLimit {
            self.report.diverged += 1;
            self.cut(Cut::Diverged);
            if self.report.divergence.is_none() {
                self.report.divergence = Some(schedule());
            }
        }
        if !finished {
            return;
        }
        self.report.finished += 1;
        let Some(obs) = &run.observation else { return };
        let key = crate::Outcome {
            headline: if run.status == Status::StepLimit {
                world::Headline::DIVERGED
            } else {
                obs.headline
            },
            oracles,
            fingerprint: obs.fingerprint,
        };
        *self.report.outcomes.entry(key).or_insert(0) += 1;
        for (i, v) in obs.outcomes.iter().enumerate() {
            if self.report.observed.len() <= i {
                self.report.observed.push(Vec::new());
            }
            if !self.report.observed[i].contains(v) {
                self.report.observed[i].push(v.clone());
            }
        }
        if !obs.outcomes.is_empty() {
            crate::add_joint(&mut self.report, &obs.outcomes);
        }
    }

    /// Minimise the counterexamples and hand the report out.
    pub fn finish(
        mut self,
        program: &mut dyn Program,
        cands: &mut Candidates,
        opts: &Options,
    ) -> Result<Report, Error> {
        if opts.counterexamples {
            for f in self.report.found.iter_mut() {
                f.counterexample = cands.best(program, f.oracle, opts.minimize)?;
            }
        }
        Ok(self.report)
    }
}
