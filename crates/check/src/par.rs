//! One exploration on several threads, or one shard of it.
//!
//! An exhaustive exploration is a list of independent tasks (`explore::frontier`): subtrees
//! below a split region whose nodes try every actor. Any partition of the tasks, each part
//! explored separately and the parts merged in task order, is exactly the exploration one
//! thread runs: the same executions, the same outcomes and, when the failing schedules are
//! merged before minimisation (threads), the same counterexamples. Threads take the next
//! task from a shared counter as they free up, so one large subtree never holds the others
//! back; shards take a fixed share (`Part`), so separate processes need not talk.

use crate::explore::{frontier, last_level, merge_parts, whole, Acc, Shared, Worker};
use crate::minimize::Candidates;
use crate::{Cut, Error, Options, Progress, Report};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use world::Program;

/// Builds a fresh program: one per thread (worlds are not `Send`; their recipe is).
pub type MakeProgram<'a> = dyn Fn() -> Box<dyn Program> + Sync + 'a;

/// Which share of the tasks to explore: task `k` (counted from `offset`) belongs to part
/// `(offset + k) % count`. `offset` spreads the first tasks of successive explorations (a
/// campaign's cells) over the parts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub index: usize,
    pub count: usize,
    pub offset: usize,
}

impl Part {
    /// Everything.
    pub const ALL: Part = Part {
        index: 0,
        count: 1,
        offset: 0,
    };

    /// Whether task `k` belongs to this part.
    pub fn owns(&self, k: usize) -> bool {
        (self.offset + k) % self.count.max(1) == self.index
    }

    fn whole(&self) -> bool {
        self.count <= 1
    }
}

/// One bound level of an exploration (or the only one): its report, for this part.
#[derive(Clone, Debug)]
pub struct Level {
    pub bound: Option<u32>,
    pub report: Report,
}

/// Explore the part `part` of the space of `make()`'s program with `jobs` threads. Returns
/// the report of each bound level explored: with a preemption bound and `iterative`, a part
/// of the space cannot know whether the other parts pruned anything, so a proper part runs
/// every level up to the bound, and [`combine`] stops where one process would have.
pub fn explore_part(
    make: &MakeProgram,
    opts: &Options,
    jobs: usize,
    part: Part,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<Level>, Error> {
    levels(make().as_mut(), Some(make), opts, jobs, part, progress)
}

/// [`explore_part`] with the calling thread's `program` (and, for more threads, `make`).
pub(crate) fn levels(
    program: &mut dyn Program,
    make: Option<&MakeProgram>,
    opts: &Options,
    jobs: usize,
    part: Part,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<Level>, Error> {
    let bounds: Vec<Option<u32>> = match opts.preemptions {
        Some(max) if opts.iterative => (0..=max).map(Some).collect(),
        b => vec![b],
    };
    let start = Instant::now();
    let mut levels = Vec::new();
    for bound in bounds {
        // Budget and execution cap are the whole exploration's, not each level's.
        let mut o = opts.clone();
        if let Some(b) = opts.budget {
            o.budget = Some(b.saturating_sub(start.elapsed()));
        }
        if let Some(cap) = opts.max_executions {
            let used: u64 = levels.iter().map(|l: &Level| l.report.executions).sum();
            o.max_executions = Some(cap.saturating_sub(used).max(1));
        }
        let report = level(&mut *program, make, &o, bound, jobs, part, progress)?;
        // A proper part cannot know whether the others pruned anything: it runs every level.
        let stop = part.whole() && last_level(&report);
        levels.push(Level { bound, report });
        if stop {
            break;
        }
    }
    Ok(levels)
}

/// Merge the levels of an exploration's parts into what one process reports: per level the
/// parts add up, then levels combine as iterative bounding does. `parts[i]` is part `i`'s
/// levels.
pub fn combine(parts: Vec<Vec<Level>>) -> Option<Report> {
    // levels[d]: level d, the parts added up in part order.
    let mut levels: Vec<Report> = Vec::new();
    for p in parts {
        for (d, l) in p.into_iter().enumerate() {
            if d < levels.len() {
                let so_far =
                    std::mem::replace(&mut levels[d], Report::empty(l.report.strategy, l.bound));
                levels[d] = merge_parts(so_far, l.report);
            } else {
                levels.push(l.report);
            }
        }
    }
    crate::explore::combine_levels(levels)
}

/// One bound level: the whole space if it is small, else the split tasks `part` owns, on
/// `jobs` threads (the calling one with `program`, the others with programs from `make`),
/// merged in task order.
pub(crate) fn level(
    program: &mut dyn Program,
    make: Option<&MakeProgram>,
    opts: &Options,
    bound: Option<u32>,
    jobs: usize,
    part: Part,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, Error> {
    let start = Instant::now();
    if let Some(r) = whole(program, opts, bound, progress)? {
        return Ok(if part.owns(0) {
            r
        } else {
            Acc::new(opts.strategy, bound).report
        });
    }
    let (tasks, region_cuts) = frontier(program, opts, bound)?;
    let mine: Vec<usize> = (0..tasks.len()).filter(|&k| part.owns(k)).collect();
    let shared = Shared::default();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<(Acc, Candidates)>>> =
        Mutex::new((0..mine.len()).map(|_| None).collect());
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    // Only the calling thread reports progress (with every thread's executions).
    let worker = |program: &mut dyn Program, tick: &mut dyn FnMut(&Acc, usize)| {
        let mut w = Worker::new(opts, bound);
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&k) = mine.get(i) else { break };
            let r = w.run_task(program, &tasks[k], start, &shared, tick);
            match r {
                Ok(stop) => {
                    lock(&results)[i] = Some(w.take());
                    if stop.is_some() {
                        break;
                    }
                }
                Err(e) => {
                    lock(&first_error).get_or_insert(e);
                    shared.stop(Cut::Failure);
                    break;
                }
            }
        }
    };
    let threads = match make {
        Some(_) => jobs.clamp(1, mine.len().max(1)),
        None => 1,
    };
    std::thread::scope(|s| {
        if let Some(make) = make {
            for _ in 1..threads {
                s.spawn(|| worker(make().as_mut(), &mut |_, _| {}));
            }
        }
        worker(&mut *program, &mut |acc: &Acc, d| {
            let mut p = acc.progress(start, d);
            p.executions = shared.executions.load(Ordering::Relaxed);
            progress(&p)
        });
    });
    if let Some(e) = lock(&first_error).take() {
        return Err(e);
    }
    // In task order: the order one thread explores them in.
    let mut acc = Acc::new(opts.strategy, bound);
    let mut cands = Candidates::default();
    for c in region_cuts {
        acc.cut(c);
    }
    let mut left = false;
    for r in lock(&results).drain(..) {
        match r {
            Some((a, c)) => {
                let so_far =
                    std::mem::replace(&mut acc.report, Acc::new(opts.strategy, bound).report);
                acc.report = merge_parts(so_far, a.report);
                cands.absorb(c);
            }
            None => left = true,
        }
    }
    if left {
        if let Some(c) = shared.stopped() {
            acc.cut(c);
        }
    }
    acc.report.elapsed = start.elapsed();
    let mut r = acc.finish(program, &mut cands, opts)?;
    r.cuts.sort_unstable();
    Ok(r)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
