//! Running one execution, recording it, and the sampling strategies (PCT, random, and the
//! round-robin + random + PCT mix `kvmmu run` uses).

use crate::explore::Acc;
use crate::hb::Event;
use crate::minimize::{preemptions, Candidates};
use crate::{Cut, Error, Options, Progress, Report, Strategy};
use std::ops::ControlFlow;
use std::time::Instant;
use world::{
    Decision, Failure, FpSet, Observation, OpKind, Pct, Program, Random, RoundRobin, Scheduler,
    Status,
};

/// What one execution produced.
pub(crate) struct RunData {
    pub status: Status,
    pub failures: Vec<Failure>,
    pub observation: Option<Observation>,
    /// Actors the world had at the end.
    pub actors: usize,
}

/// Run one execution of `program` under `sched`, with its monitor.
pub(crate) fn run_one(
    program: &mut dyn Program,
    sched: &mut dyn Scheduler,
    tracing: bool,
    detail: bool,
) -> Result<RunData, Error> {
    let (mut w, mut mon) = program.instance().map_err(Error::Build)?;
    if tracing {
        w.set_tracing(true);
    }
    let mut failures = Vec::new();
    let mut step = 0u64;
    let r = w.run_observed(sched, &mut |rec| {
        mon.step(rec, step, &mut failures);
        step += 1;
        ControlFlow::Continue(())
    });
    if let Status::Audit { actor, detail } = r.status {
        return Err(Error::Audit { actor, detail });
    }
    mon.end(&r.status, r.steps, &mut failures);
    let observation = Some(mon.observe(detail));
    Ok(RunData {
        status: r.status,
        failures,
        observation,
        actors: w.actor_count(),
    })
}

/// Records every decision of the scheduler it wraps.
pub(crate) struct Recorder<'a> {
    pub inner: &'a mut dyn Scheduler,
    pub schedule: Vec<u8>,
    pub events: Vec<Event>,
    pub enabled: Vec<u64>,
}

impl<'a> Recorder<'a> {
    pub fn new(inner: &'a mut dyn Scheduler) -> Self {
        Recorder {
            inner,
            schedule: Vec::new(),
            events: Vec::new(),
            enabled: Vec::new(),
        }
    }
}

impl Scheduler for Recorder<'_> {
    fn begin(&mut self) {
        self.inner.begin();
    }

    fn pick(&mut self, d: &Decision) -> Option<usize> {
        let a = self.inner.pick(d)?;
        let (kind, fp) = d
            .pending
            .iter()
            .find(|p| p.actor == a)
            .map_or((OpKind::Access, FpSet::new()), |p| (p.kind, p.fp));
        self.schedule.push(a as u8);
        self.events.push(Event {
            actor: a as u8,
            kind,
            fp,
        });
        self.enabled
            .push(d.enabled.iter().fold(0u64, |m, &x| m | (1 << x)));
        Some(a)
    }

    fn end(&mut self, status: &Status) {
        self.inner.end(status);
    }
}

/// `pct`, `random` and `sample`: seeded schedules, each run once.
pub(crate) fn sample(
    program: &mut dyn Program,
    opts: &Options,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, Error> {
    let start = Instant::now();
    let mut acc = Acc::new(opts.strategy, None);
    acc.cut(Cut::Sampled);
    let mut cands = Candidates::default();
    let mut last_progress = Instant::now();
    // A round-robin run first: the length PCT spreads its change points over.
    let mut steps_estimate = 100u64;
    let n = opts.samples;
    let total = match opts.strategy {
        Strategy::Sample => 1 + 2 * n,
        Strategy::Pct => 1 + n,
        _ => n,
    };
    for k in 0..total {
        if opts
            .max_executions
            .is_some_and(|m| acc.report.executions >= m)
        {
            acc.cut(Cut::Executions);
            break;
        }
        if opts.budget.is_some_and(|b| start.elapsed() >= b) {
            acc.cut(Cut::Budget);
            break;
        }
        if opts.interrupted() {
            acc.cut(Cut::Interrupted);
            break;
        }
        let mut sched: Box<dyn Scheduler> = match (opts.strategy, k) {
            (Strategy::Sample | Strategy::Pct, 0) => Box::new(RoundRobin),
            (Strategy::Random, _) => Box::new(Random::new(opts.seed.wrapping_add(k))),
            (Strategy::Pct, _) => {
                let i = k - 1;
                let seed = opts.seed.wrapping_mul(1_000_003).wrapping_add(i);
                Box::new(Pct::new(seed, 2 + (i % 2) as u32, steps_estimate))
            }
            (_, _) => {
                // `sample`: random and PCT alternate, as `kvmmu run` always did.
                let i = (k - 1) / 2;
                let seed = opts.seed.wrapping_mul(1_000_003).wrapping_add(i);
                if (k - 1) % 2 == 0 {
                    Box::new(Random::new(seed))
                } else {
                    Box::new(Pct::new(seed, 2 + (i % 2) as u32, steps_estimate))
                }
            }
        };
        let mut rec = Recorder::new(sched.as_mut());
        let detail = opts.observe || opts.strategy == Strategy::Sample;
        let run = run_one(program, &mut rec, false, detail)?;
        if k == 0 && matches!(opts.strategy, Strategy::Sample | Strategy::Pct) {
            steps_estimate = rec.schedule.len() as u64;
        }
        acc.report.executions += 1;
        acc.report.max_depth = acc.report.max_depth.max(rec.schedule.len());
        for f in &run.failures {
            let upto = (f.step as usize).min(rec.schedule.len().saturating_sub(1));
            if rec.schedule.is_empty() {
                continue;
            }
            let p = preemptions(&rec.schedule[..=upto], &rec.enabled);
            cands.offer(f.oracle, &rec.schedule, &rec.events, upto, p);
        }
        let schedule: Vec<usize> = rec.schedule.iter().map(|&a| a as usize).collect();
        acc.add(&run, true, || schedule);
        if last_progress.elapsed().as_millis() >= 100 {
            last_progress = Instant::now();
            progress(&acc.progress(start, rec.schedule.len()));
        }
        if opts.stop_on_failure && !acc.report.found.is_empty() {
            acc.cut(Cut::Failure);
            break;
        }
    }
    progress(&acc.progress(start, acc.report.max_depth));
    acc.report.elapsed = start.elapsed();
    acc.finish(program, &mut cands, opts)
}
