//! Real first-touch fault cost on this machine's KVM next to the model's, in one run.
//!
//! Real side: [`probe::measure_first_touch`] (native CPL3 guest, shadow MMU) per backing, a
//! few times; each call times KVM_RUNs that touch one data page and exit through an MMIO
//! report, first on unmapped then on mapped pages, and gives the difference of medians as
//! the per-page first-touch cost. The cost of an access to an already-mapped page is the
//! mapped median minus the bare round-trip median. The table shows the median over calls.
//!
//! Model side (criterion): the world built from a scenario of the same shape — one memslot
//! over `N` = 16 pages of the backing (for [vvar], 16 one-page slots over page 0), one vCPU
//! reading each page once and then each page again — run to completion under linux-6.13,
//! tracing and oracles off; only `World::run` is timed, not the build. Each run is split at
//! the first re-read: first-touch time per access = first pass / N, mapped (SPTE hit) time
//! per access = re-read pass / N, fault cost = their difference; medians over all runs.
//! The model's numbers are the cost of *simulating* the path (executor steps, model
//! bookkeeping), not a prediction of kernel time: the ratio says how far apart they are.
//!
//! Run: `cargo bench -p kvmmu --bench real_vs_model` (about a minute). Without a usable
//! /dev/kvm the real column is `n/a`.

use criterion::Criterion;
use model::harness::build;
use model::kvm::PolicyId;
use probe::{BackingKind, Mode};
use std::cell::RefCell;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::{Duration, Instant};
use world::{FirstEnabled, Status};

/// Pages per pass (the probe and the model use the same number).
const PAGES: u64 = 16;
/// `measure_first_touch` calls per backing.
const REAL_CALLS: usize = 5;

/// A backing as both sides name it.
struct Kind {
    label: &'static str,
    scenario: &'static str,
    probe: BackingKind,
    /// Pages (model) per world; the probe touches [vvar] page 0 in 40 fresh VMs.
    pages: u64,
}

const KINDS: [Kind; 4] = [
    Kind {
        label: "anonymous (private)",
        scenario: "anon-private",
        probe: BackingKind::AnonPrivate,
        pages: PAGES,
    },
    Kind {
        label: "memfd",
        scenario: "memfd",
        probe: BackingKind::Memfd,
        pages: PAGES,
    },
    Kind {
        label: "userfaultfd (MISSING + UFFDIO_COPY)",
        scenario: "userfault",
        probe: BackingKind::Userfault,
        pages: PAGES,
    },
    Kind {
        label: "[vvar] page 0",
        scenario: "vvar",
        probe: BackingKind::Vvar,
        pages: PAGES,
    },
];

/// The scenario: `pages` pages of `backing` at gpa 0x10000, each read once (first touch),
/// then each read again (through the SPTE). For
/// [vvar] only page 0 can be faulted, so `pages` one-page memslots all cover page 0 (as the
/// probe's fresh VM per touch, every guest page is a first touch of a present host PTE).
fn scenario(backing: &str, pages: u64) -> scenario::Scenario {
    let vvar = backing == "vvar";
    let mut prog = String::new();
    for _ in 0..2 {
        for p in 0..pages {
            prog.push_str(&format!("{{ read = {:#x} }}, ", 0x10000 + p * 4096));
        }
    }
    let mut text =
        format!("name = \"bench\"\n[[mapping]]\nname = \"m\"\nbacking = \"{backing}\"\n");
    if vvar {
        text.push_str("pages = 1\nprot = \"r\"\ntouch = [0]\n");
        for p in 0..pages {
            text.push_str(&format!(
                "[[memslot]]\nslot = {}\ngpa = {:#x}\nmapping = \"m\"\npages = 1\n",
                p + 1,
                0x10000 + p * 4096
            ));
        }
    } else {
        text.push_str(&format!("pages = {pages}\n[[memslot]]\nslot = 1\ngpa = 0x10000\nmapping = \"m\"\npages = {pages}\n"));
    }
    text.push_str(&format!("[[vcpu]]\nprogram = [{prog}]\n"));
    scenario::parse("bench.toml", &text).expect("bench scenario parses")
}

/// Time of one model run (build excluded), split at the start of access `n` (the first
/// re-read): (first pass, re-read pass), both in µs. The split is taken by the world's
/// observer, which runs after every step, so both phases of the same run are compared
/// (run-to-run variation on this noisy host would otherwise swamp the small difference).
fn model_run(sc: &scenario::Scenario, n: usize) -> (f64, f64) {
    let (mut w, sys) = build(sc, PolicyId::Linux6_13).expect("bench scenario builds");
    w.set_tracing(false);
    w.set_max_steps(u64::MAX);
    let vcpu = sys.vcpus[0].clone();
    let mut split = None;
    let t = Instant::now();
    let r = w.run(&mut FirstEnabled, &mut || {
        if split.is_none() && vcpu.records.borrow().len() > n {
            split = Some(t.elapsed());
        }
        ControlFlow::Continue(())
    });
    let total = t.elapsed();
    assert!(
        matches!(r.status, Status::Completed),
        "model run: {:?}",
        r.status
    );
    let split = split.expect("the re-read pass started");
    (
        split.as_secs_f64() * 1e6,
        (total - split).as_secs_f64() * 1e6,
    )
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Criterion bench of one model world (`n` first touches, then `n` re-reads); returns the
/// medians over every run of (first pass, re-read pass), in µs per access.
fn bench_model(
    c: &mut Criterion,
    id: &str,
    sc: &scenario::Scenario,
    n: usize,
) -> Option<(f64, f64)> {
    let samples = Rc::new(RefCell::new((Vec::new(), Vec::new())));
    let s2 = samples.clone();
    c.bench_function(id, move |b| {
        b.iter_custom(|iters| {
            let mut total = 0.0;
            for _ in 0..iters {
                let (first, reread) = model_run(sc, n);
                total += first + reread;
                let mut s = s2.borrow_mut();
                s.0.push(first / n as f64);
                s.1.push(reread / n as f64);
            }
            Duration::from_secs_f64(total / 1e6)
        })
    });
    let (mut first, mut reread) = samples.borrow().clone();
    Some((median(&mut first)?, median(&mut reread)?))
}

struct Row {
    label: String,
    real: Option<f64>,
    model: Option<f64>,
}

fn real_side(k: &Kind) -> Result<(f64, f64), String> {
    let mut cost = Vec::new();
    let mut mapped = Vec::new();
    for _ in 0..REAL_CALLS {
        let n = if k.probe == BackingKind::Vvar {
            40
        } else {
            PAGES
        };
        let t = probe::measure_first_touch(k.probe, n, Mode::Native).map_err(|e| e.to_string())?;
        cost.push(t.first_touch_cost_us);
        mapped.push(t.mapped.median_us - t.round_trip.median_us);
    }
    Ok((
        median(&mut cost).unwrap_or(f64::NAN),
        median(&mut mapped).unwrap_or(f64::NAN),
    ))
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let kvm = probe::kvm_available();
    if let Err(e) = &kvm {
        println!("SKIP real KVM side: {e}");
    }
    let mmu = probe::mmu_description();
    let mut rows = Vec::new();
    let mut mapped_row = None;
    for k in &KINDS {
        let id = format!("model/{}/first_touch_then_reread_x{}", k.scenario, k.pages);
        let m = bench_model(
            &mut c,
            &id,
            &scenario(k.scenario, k.pages),
            k.pages as usize,
        );
        let (model_cost, model_mapped) = match m {
            Some((first, mapped)) => (Some(first - mapped), Some(mapped)),
            None => (None, None),
        };
        let real = match &kvm {
            Ok(()) => match real_side(k) {
                Ok(r) => Some(r),
                Err(e) => {
                    println!("real KVM, {}: {e}", k.label);
                    None
                }
            },
            Err(_) => None,
        };
        rows.push(Row {
            label: format!("first touch, {}", k.label),
            real: real.map(|r| r.0),
            model: model_cost,
        });
        if k.probe == BackingKind::AnonPrivate {
            mapped_row = Some(Row {
                label: "access to a mapped page (SPTE hit), anonymous".into(),
                real: real.map(|r| r.1),
                model: model_mapped,
            });
        }
    }
    rows.extend(mapped_row);
    let f = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    let w = rows.iter().map(|r| r.label.len()).max().unwrap_or(0);
    println!("\nper-access cost in µs (medians); real KVM: native CPL3 guest, mmu {mmu}; model: linux-6.13");
    println!(
        "{:<w$}  {:>10}  {:>10}  {:>12}",
        "", "real KVM", "model", "real / model"
    );
    for r in &rows {
        let ratio = match (r.real, r.model) {
            // Below the probe's resolution (an already-mapped access costs nothing
            // measurable on real KVM, realkvm.md §10): no meaningful ratio.
            (Some(a), Some(_)) if a < 0.5 => "real ≈ 0".into(),
            (Some(a), Some(b)) if b > 0.0 => format!("{:.1}", a / b),
            _ => "n/a".into(),
        };
        println!(
            "{:<w$}  {:>10}  {:>10}  {:>12}",
            r.label,
            f(r.real),
            f(r.model),
            ratio
        );
    }
    c.final_summary();
}
