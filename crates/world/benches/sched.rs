//! Scheduling-point throughput of the `world` executor on one core: actors doing plain
//! accesses, and actors doing lock/unlock pairs on a shared spinlock, under `RoundRobin`
//! with tracing off (the configuration of exhaustive/random exploration runs).
//!
//! Run: `cargo bench -p world --bench sched -- --measurement-time 3`
//!
//! Every step appends to the run's schedule and step records; part of what is measured is
//! glibc faulting that memory in afresh each iteration (see `crates/model/benches/fault.rs`
//! for the `GLIBC_TUNABLES` setting that measures the executor alone).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::ops::ControlFlow;
use world::{Access, LockKind, LockMode, RoundRobin, Status, World};

/// Scheduling points per actor per run.
const N: u64 = 20_000;

/// `actors` actors, each doing `N` writes of its own object (no contention, every actor is
/// always enabled). Returns the world and the number of steps it will take.
fn access_world(actors: u64) -> (World, u64) {
    let mut w = World::new();
    w.set_tracing(false);
    w.set_max_steps(u64::MAX);
    for i in 0..actors {
        let obj = w.object(format!("x{i}"));
        w.spawn(format!("t{i}"), move |cx| async move {
            for _ in 0..N {
                cx.access(obj, Access::Write, "x").await;
            }
        });
    }
    // Each actor's start is a step too.
    (w, actors * (N + 1))
}

/// `actors` actors, each doing `N / 2` lock/unlock pairs of one shared spinlock, with an
/// access inside: `N / 2 * 3` points per actor. Round-robin makes the others block while one
/// holds the lock, so the enabled set keeps changing.
fn lock_world(actors: u64) -> (World, u64) {
    let mut w = World::new();
    w.set_tracing(false);
    w.set_max_steps(u64::MAX);
    let l = w.lock("ptl", LockKind::Spin);
    let obj = w.object("counter");
    for i in 0..actors {
        w.spawn(format!("t{i}"), move |cx| async move {
            for _ in 0..N / 2 {
                cx.lock(l, LockMode::Exclusive).await;
                cx.access(obj, Access::Write, "counter++").await;
                cx.unlock(l).await;
            }
        });
    }
    (w, actors * (N / 2 * 3 + 1))
}

fn run(w: &mut World) -> u64 {
    let r = w.run(&mut RoundRobin, &mut || ControlFlow::Continue(()));
    assert_eq!(r.status, Status::Completed);
    r.steps
}

fn sched(c: &mut Criterion) {
    let mut g = c.benchmark_group("sched");
    for actors in [2u64, 4] {
        let steps = access_world(actors).1;
        g.throughput(Throughput::Elements(steps));
        g.bench_function(format!("access/{actors}_actors"), |b| {
            b.iter_batched_ref(
                || access_world(actors).0,
                |w| assert_eq!(black_box(run(w)), steps),
                BatchSize::LargeInput,
            )
        });
        let steps = lock_world(actors).1;
        g.throughput(Throughput::Elements(steps));
        g.bench_function(format!("lock_unlock/{actors}_actors"), |b| {
            b.iter_batched_ref(
                || lock_world(actors).0,
                |w| assert_eq!(black_box(run(w)), steps),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = sched
}
criterion_main!(benches);
