//! Placeholder bench so `cargo bench -p probe` builds; the lead calls
//! `probe::measure_first_touch` from the combined benchmark.
use criterion::{criterion_group, criterion_main, Criterion};

fn first_touch(c: &mut Criterion) {
    if let Err(e) = probe::kvm_available() {
        println!("SKIP realfault: {e}");
        return;
    }
    c.bench_function("probe_anon_private_first_touch_16_pages", |b| {
        b.iter(|| {
            probe::measure_first_touch(probe::BackingKind::AnonPrivate, 16, probe::Mode::Native)
        })
    });
}

criterion_group!(benches, first_touch);
criterion_main!(benches);
