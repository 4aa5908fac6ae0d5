//! Exploration throughput on one core: executions per second of DPOR (and of plain DFS, the
//! baseline) over built-in cells, counterexample minimisation included where there is one.
//!
//! Run: `cargo bench -p check --bench explore -- --measurement-time 5`
//!
//! Each iteration is a whole exploration (or the first `CAP` executions of a large one);
//! criterion's "elements" are executions, so its thrpt column reads executions/s.

use check::{explore, Options, Strategy};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use model::harness::CellProgram;
use model::kvm::PolicyId;

const CAP: u64 = 20_000;

fn cell(name: &str, p: PolicyId) -> CellProgram {
    CellProgram::new(
        &scenario::builtin(name).expect("built-in").expect("parses"),
        p,
    )
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("explore");
    g.sample_size(10);
    for (name, p, strategy) in [
        ("vgpu-reset-race", PolicyId::Linux4_8, Strategy::Dpor),
        ("nested-pfnmap", PolicyId::Linux4_8, Strategy::Dpor),
        (
            "vgpu-retry-vma-replaced",
            PolicyId::Linux6_13,
            Strategy::Dpor,
        ),
        (
            "concurrent-invalidations",
            PolicyId::Linux6_13,
            Strategy::Dpor,
        ),
        ("two-vcpus-dontneed", PolicyId::Linux6_13, Strategy::Dpor),
        ("vgpu-reset-race", PolicyId::Linux6_13, Strategy::Dfs),
    ] {
        let opts = Options {
            strategy,
            max_executions: Some(CAP),
            ..Options::default()
        };
        let mut prog = cell(name, p);
        let n = explore(&mut prog, &opts, &mut |_| {})
            .expect("explores")
            .executions;
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("{strategy}/{name}/{p}"), |b| {
            b.iter(|| {
                let r = explore(&mut prog, &opts, &mut |_| {}).expect("explores");
                assert_eq!(r.executions, n);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
