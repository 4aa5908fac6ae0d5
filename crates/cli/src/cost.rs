//! `--measure`: first-touch fault cost per backing on the model and on real KVM, as
//! `crates/cli/benches/real_vs_model.rs` measures it (docs/benchmarks.md), cut down to a few
//! seconds. The scenario shape and the split of a model run at its first re-read are the
//! bench's; they are repeated here because a bench cannot import the binary's modules.

use model::harness::build;
use model::kvm::PolicyId;
use probe::{BackingKind, Mode};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};
use world::{FirstEnabled, Status};

/// Pages per pass, on both sides.
const PAGES: u64 = 16;
/// Model time per backing.
const MODEL_TIME: Duration = Duration::from_millis(300);
/// `measure_first_touch` calls per backing.
const REAL_CALLS: usize = 7;
const POLICY: PolicyId = PolicyId::Linux6_13;

/// (label, scenario backing, probe backing).
const KINDS: [(&str, &str, BackingKind); 4] = [
    (
        "anonymous (private)",
        "anon-private",
        BackingKind::AnonPrivate,
    ),
    ("memfd", "memfd", BackingKind::Memfd),
    (
        "userfaultfd (MISSING + UFFDIO_COPY)",
        "userfault",
        BackingKind::Userfault,
    ),
    ("[vvar] page 0", "vvar", BackingKind::Vvar),
];

/// `PAGES` pages of `backing` read once each, then again (for [vvar], one-page memslots
/// all over page 0, the only faultable one).
fn scenario(backing: &str) -> Result<scenario::Scenario, String> {
    let mut prog = String::new();
    for _ in 0..2 {
        for p in 0..PAGES {
            prog.push_str(&format!("{{ read = {:#x} }}, ", 0x10000 + p * 4096));
        }
    }
    let mut text = format!("name = \"cost\"\n[[mapping]]\nname = \"m\"\nbacking = \"{backing}\"\n");
    if backing == "vvar" {
        text.push_str("pages = 1\nprot = \"r\"\ntouch = [0]\n");
        for p in 0..PAGES {
            text.push_str(&format!(
                "[[memslot]]\nslot = {}\ngpa = {:#x}\nmapping = \"m\"\npages = 1\n",
                p + 1,
                0x10000 + p * 4096
            ));
        }
    } else {
        text.push_str(&format!("pages = {PAGES}\n[[memslot]]\nslot = 1\ngpa = 0x10000\nmapping = \"m\"\npages = {PAGES}\n"));
    }
    text.push_str(&format!("[[vcpu]]\nprogram = [{prog}]\n"));
    scenario::parse("cost.toml", &text).map_err(|e| e.to_string())
}

/// One model run split at the first re-read: fault cost per access in µs (first-pass time
/// per access minus re-read time per access).
fn model_sample(sc: &scenario::Scenario) -> Result<f64, String> {
    let (mut w, sys) = build(sc, POLICY)?;
    w.set_tracing(false);
    w.set_max_steps(u64::MAX);
    let vcpu = sys.vcpus.first().ok_or("no vCPU")?.clone();
    let n = PAGES as usize;
    let mut split = None;
    let t = Instant::now();
    let r = w.run(&mut FirstEnabled, &mut || {
        if split.is_none() && vcpu.records.borrow().len() > n {
            split = Some(t.elapsed());
        }
        ControlFlow::Continue(())
    });
    let total = t.elapsed();
    if !matches!(r.status, Status::Completed) {
        return Err(format!("model run: {:?}", r.status));
    }
    let split = split.ok_or("the re-read pass never started")?;
    let first = split.as_secs_f64() * 1e6 / n as f64;
    let reread = (total - split).as_secs_f64() * 1e6 / n as f64;
    Ok(first - reread)
}

/// Measure every backing; real KVM only where `/dev/kvm` is usable.
pub fn measure() -> report::Costs {
    let start = Instant::now();
    let kvm = probe::kvm_available();
    let mut rows = Vec::new();
    for (label, backing, kind) in KINDS {
        let model = scenario(backing).ok().and_then(|sc| {
            let t = Instant::now();
            let mut v = Vec::new();
            while t.elapsed() < MODEL_TIME {
                match model_sample(&sc) {
                    Ok(x) => v.push(x),
                    Err(_) => break,
                }
            }
            report::Spread::of(&v)
        });
        let real = kvm.as_ref().ok().and_then(|()| {
            let n = if kind == BackingKind::Vvar { 40 } else { PAGES };
            let v: Vec<f64> = (0..REAL_CALLS)
                .filter_map(|_| probe::measure_first_touch(kind, n, Mode::Native).ok())
                .map(|t| t.first_touch_cost_us)
                .collect();
            report::Spread::of(&v)
        });
        rows.push(report::Cost {
            backing: label.to_string(),
            model,
            real,
        });
    }
    report::Costs {
        model_policy: POLICY.name().to_string(),
        real: match kvm {
            Ok(()) => probe::mmu_description(),
            Err(e) => format!("not measured: {e}"),
        },
        rows,
        seconds: start.elapsed().as_secs_f64(),
    }
}
