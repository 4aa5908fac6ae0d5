//! Rendering a report the size of the built-in set's: 31 scenarios × 5 eras, 70
//! counterexample timelines of 40 steps over two actors, the comparison and cost plots.
//! (`kvmmu report` prints the time for the real data too: docs/report.md.)
//!
//! Run: `cargo bench -p report --bench render`.

use criterion::Criterion;
use report::*;

fn timeline(k: usize) -> Timeline {
    let mut steps = Vec::new();
    for s in 0..40 {
        let actor = usize::from((20..38).contains(&s));
        let (func, lines) = match s % 5 {
            0 => ("follow_pte", vec!["follow_pte: lock ptl".to_string()]),
            1 => (
                "follow_pte",
                vec![
                    "follow_pte: unlock ptl".to_string(),
                    format!("follow_pte: 0x7f0000000000 -> pfn {k:#x} rw"),
                ],
            ),
            2 => (
                "unmap_mapping_range",
                vec![
                    "mmu_notifier_invalidate_range_start: [0x7f0000000000, 0x7f0000001000) Clear"
                        .to_string(),
                ],
            ),
            3 => (
                "kvm_get_pfn",
                vec![format!(
                    "kvm_get_pfn: get_page(pfn {k:#x}): refcount 0 -> 1"
                )],
            ),
            _ => ("kvm_mmu_page_fault", vec![]),
        };
        steps.push(Step {
            step: s,
            actor,
            func: func.into(),
            what: "lock".into(),
            lines,
        });
    }
    Timeline {
        actors: vec!["vcpu0".into(), "reset".into()],
        steps,
        failing_step: 39,
        oracle: "refcount-sane".into(),
        detail: "get_page on refcount 0 (free page)".into(),
        preemptions: 1,
        confirmed: true,
        replay: None,
    }
}

fn built_in_sized() -> Report {
    let policies: Vec<String> = [
        "linux-4.7",
        "linux-4.8",
        "linux-5.12",
        "linux-5.13",
        "linux-6.13",
    ]
    .map(String::from)
    .to_vec();
    let mut left = 70;
    let scenarios = (0..31)
        .map(|i| Scenario {
            name: format!("scenario-{i}"),
            origin: "built-in".into(),
            description: "a device mapping racing a fault".into(),
            cells: policies
                .iter()
                .map(|p| {
                    let n = if left > 0 && i % 2 == 0 {
                        3.min(left)
                    } else {
                        0
                    };
                    left -= n;
                    Some(Cell {
                        policy: p.clone(),
                        text: if n > 0 {
                            "refcount-sane".into()
                        } else {
                            "ok".into()
                        },
                        headline: "ok".into(),
                        violations: (0..n)
                            .map(|k| Violation {
                                oracle: "refcount-sane".into(),
                                detail: "x".into(),
                                executions: 3,
                                timeline: Some(timeline(k)),
                            })
                            .collect(),
                        complete: true,
                        executions: 40_000,
                        elapsed_ms: 800.0,
                        ..Cell::default()
                    })
                })
                .collect(),
            comparison: Some(Comparison::Compared {
                mode: "native".into(),
                mmu: "shadow".into(),
                model_policy: "linux-6.13".into(),
                accesses: (0..4)
                    .map(|a| Access {
                        access: format!("vcpu0 read32 {:#x}", 0x10000 + a * 4096),
                        model: "0x1".into(),
                        kvm: "0x1".into(),
                        agree: true,
                    })
                    .collect(),
                notes: vec![],
                fails: true,
            }),
        })
        .collect();
    Report {
        command: "kvmmu report".into(),
        version: "0.1.0".into(),
        exploration: "every interleaving".into(),
        exhaustive: true,
        policies,
        scenarios,
        costs: Some(Costs {
            model_policy: "linux-6.13".into(),
            real: "shadow".into(),
            rows: (0..4)
                .map(|i| Cost {
                    backing: format!("backing {i}"),
                    model: Spread::of(&[1.0, 1.1, 1.3]),
                    real: Spread::of(&[4.0, 5.0, 7.0]),
                })
                .collect(),
            seconds: 3.0,
        }),
        notes: vec![],
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let r = built_in_sized();
    let site = render(&r);
    println!(
        "{} timelines, {} KB of HTML and SVG",
        site.svgs.len(),
        (site.index.len() + site.svgs.iter().map(|s| s.1.len()).sum::<usize>()) / 1024
    );
    c.bench_function("render/built_in_sized", |b| b.iter(|| render(&r)));
    c.final_summary();
}
