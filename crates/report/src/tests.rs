//! The report's own tests: escaping of everything from input, timelines that name every
//! actor and kernel function, verdict colours, links that resolve.

use crate::*;

fn step(step: usize, actor: usize, func: &str, what: &str, lines: &[&str]) -> Step {
    Step {
        step,
        actor,
        func: func.into(),
        what: what.into(),
        lines: lines.iter().map(|s| s.to_string()).collect(),
    }
}

/// The shape of vgpu-reset-race / linux-4.8's counterexample, shortened.
fn race() -> Timeline {
    Timeline {
        actors: vec!["vcpu0".into(), "reset".into()],
        steps: vec![
            step(0, 0, "", "start", &[]),
            step(
                1,
                0,
                "guest",
                "guest access",
                &["kvm_mmu_page_fault: gpa 0x100000 read"],
            ),
            step(
                2,
                0,
                "follow_pte",
                "lock",
                &[
                    "follow_pte: lock ptl",
                    "follow_pte: 0x7f0000000000 -> pfn 0x1 rw",
                ],
            ),
            step(3, 0, "follow_pfn", "unlock", &["follow_pfn: unlock ptl"]),
            step(4, 1, "", "start", &[]),
            step(5, 1, "vgpu_reset", "lock", &["vgpu_reset: lock vgpu->lock"]),
            step(
                6,
                1,
                "unmap_mapping_range",
                "lock",
                &[
                    "unmap_mapping_range: lock bar0.i_mmap_rwsem (read)",
                    "mmu_notifier_invalidate_range_start: [0x7f0000000000, 0x7f0000001000) Clear",
                ],
            ),
            step(
                7,
                1,
                "zap_page_range_single",
                "ptep_get_and_clear",
                &["zap_page_range_single: clear pte 0x7f0000000000 (was pfn 0x1)"],
            ),
            step(
                8,
                1,
                "vgpu_reset",
                "put_page_testzero",
                &["vgpu_reset: put_page(pfn 0x1): refcount 1 -> 0"],
            ),
            step(
                9,
                1,
                "vgpu_reset",
                "trylock",
                &["vgpu_reset: trylock other failed"],
            ),
            step(
                10,
                0,
                "kvm_get_pfn",
                "page_ref_inc",
                &["kvm_get_pfn: get_page(pfn 0x1): refcount 0 -> 1"],
            ),
        ],
        failing_step: 10,
        oracle: "refcount-sane".into(),
        detail: "get_page on refcount 0 (free page)".into(),
        preemptions: 1,
        confirmed: true,
        replay: Some("kvmmu replay x.json".into()),
    }
}

fn cell(policy: &str, text: &str, headline: &str, violations: Vec<Violation>) -> Cell {
    Cell {
        policy: policy.into(),
        text: text.into(),
        headline: headline.into(),
        violations,
        expected: None,
        complete: true,
        executions: 39,
        elapsed_ms: 2.0,
        ..Cell::default()
    }
}

fn report(name: &str) -> Report {
    Report {
        command: "kvmmu report".into(),
        version: "0.1.0".into(),
        exploration: "every interleaving (dpor)".into(),
        exhaustive: true,
        policies: vec!["linux-4.8".into(), "linux-6.13".into()],
        scenarios: vec![Scenario {
            name: name.into(),
            origin: "built-in".into(),
            description: "a reset racing a fault".into(),
            cells: vec![
                Some(cell(
                    "linux-4.8",
                    "refcount-sane",
                    "ok",
                    vec![Violation {
                        oracle: "refcount-sane".into(),
                        detail: "get_page on refcount 0".into(),
                        executions: 3,
                        timeline: Some(race()),
                    }],
                )),
                Some(cell("linux-6.13", "EFAULT", "EFAULT", vec![])),
            ],
            comparison: Some(Comparison::Skipped("model-only driver".into())),
        }],
        costs: None,
        notes: vec![],
    }
}

#[test]
fn every_box_names_its_kernel_function_and_every_actor_has_a_lane() {
    let t = race();
    let svg = timeline::render(&t);
    for s in t.steps.iter().filter(|s| !s.func.is_empty()) {
        assert!(svg.contains(&format!(">{}</tspan>", s.func)), "{}", s.func);
    }
    // A start box names the function its actor starts in.
    assert!(svg.contains("start</tspan> → guest"), "{svg}");
    assert!(svg.contains("start</tspan> → vgpu_reset"), "{svg}");
    assert_eq!(
        svg.matches("class=\"hd\"").count(),
        t.actors.len(),
        "one lane per actor"
    );
    for a in &t.actors {
        assert!(svg.contains(&format!(">{a}</text>")), "lane for {a}");
    }
    // The violating step is marked with the oracle, and is the only red box.
    assert!(svg.contains("✗ violates refcount-sane"));
    assert_eq!(svg.matches("class=\"fail\"").count(), 1);
    // A notifier call is an arrow to the vCPU's lane.
    assert_eq!(svg.matches("mmu notifier → KVM</text>").count(), 1);
    assert_eq!(svg.matches(">invalidate_range_start</text>").count(), 1);
}

#[test]
fn a_failure_at_the_end_of_the_run_is_marked_too() {
    let mut t = race();
    t.failing_step = t.steps.len();
    let svg = timeline::render(&t);
    assert!(svg.contains("end of run: ✗ violates refcount-sane"));
}

#[test]
fn lock_holds_pair_acquisitions_with_releases_per_actor() {
    let h = lock_holds(&race());
    let names: Vec<(&str, usize, usize, bool)> = h
        .iter()
        .map(|h| (h.lock.as_str(), h.from, h.to, h.released))
        .collect();
    assert_eq!(
        names,
        vec![
            ("ptl", 2, 3, true),
            ("vgpu->lock", 5, 10, false),
            ("bar0.i_mmap_rwsem", 6, 10, false),
        ]
    );
}

#[test]
fn strings_from_input_are_escaped_everywhere() {
    let evil = "<script>alert(1)</script>\"'&\u{1}";
    let mut r = report(evil);
    r.command = format!("kvmmu report {evil}");
    r.notes.push(evil.into());
    r.scenarios[0].description = evil.into();
    r.scenarios[0].origin = evil.into();
    let t = r.scenarios[0].cells[0].as_mut().unwrap().violations[0]
        .timeline
        .as_mut()
        .unwrap();
    t.actors[1] = evil.into();
    t.steps[5].lines[0] = format!("vgpu_reset: lock {evil}");
    t.detail = evil.into();
    r.scenarios[0].comparison = Some(Comparison::Compared {
        mode: evil.into(),
        mmu: evil.into(),
        model_policy: evil.into(),
        accesses: vec![Access {
            access: evil.into(),
            model: evil.into(),
            kvm: evil.into(),
            agree: false,
        }],
        notes: vec![evil.into()],
        fails: true,
    });
    let site = render(&r);
    for (name, text) in std::iter::once(("index.html", &site.index))
        .chain(site.svgs.iter().map(|(n, t)| (n.as_str(), t)))
    {
        assert!(!text.contains("<script>alert"), "{name}");
        assert!(!text.contains('\u{1}'), "{name}");
        assert!(!text.contains("\"'&"), "{name}");
    }
    assert!(site
        .index
        .contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
    // Exactly the page's own script.
    assert_eq!(site.index.matches("<script>").count(), 1);
}

#[test]
fn the_page_fetches_nothing() {
    let site = render(&report("x"));
    assert!(!site.index.contains("http://") && !site.index.contains("https://"));
    assert!(!site.index.contains("//fonts") && !site.index.contains("src=\"//"));
    for (n, s) in &site.svgs {
        let stripped = s.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!stripped.contains("http"), "{n}");
        assert!(!stripped.contains("href=\"http"), "{n}");
    }
    assert!(site.index.contains("Content-Security-Policy"));
}

#[test]
fn matrix_cells_are_coloured_by_verdict_and_link_to_their_detail() {
    let r = report("vgpu-reset-race");
    let site = render(&r);
    assert!(site
        .index
        .contains("<td class=\"v-expected\"><a href=\"#c-0-0\""));
    assert!(site
        .index
        .contains("<td class=\"v-efault\"><a href=\"#c-0-1\""));
    for id in ["c-0-0", "c-0-1", "s-0"] {
        assert!(site.index.contains(&format!("id=\"{id}\"")), "{id}");
    }
    // Every image the page shows is a file the site has.
    for part in site.index.split("<img src=\"").skip(1) {
        let src = &part[..part.find('"').unwrap()];
        assert!(site.svgs.iter().any(|(n, _)| n == src), "{src}");
    }
    assert!(site.svgs.iter().any(|(n, _)| n == "svg/t-0-0-0.svg"));
}

#[test]
fn verdicts_follow_expectation_then_violation_then_completeness() {
    let mut c = cell("p", "ok", "ok", vec![]);
    assert_eq!(Verdict::of(&c, true), Verdict::Clean);
    c.complete = false;
    assert_eq!(Verdict::of(&c, true), Verdict::Bounded);
    assert_eq!(Verdict::of(&c, false), Verdict::Clean);
    c.headline = "MMIO".into();
    assert_eq!(Verdict::of(&c, false), Verdict::Exit);
    c.headline = "EFAULT".into();
    assert_eq!(Verdict::of(&c, false), Verdict::Efault);
    c.violations.push(Violation::default());
    assert_eq!(Verdict::of(&c, true), Verdict::Expected);
    c.expected = Some(false);
    assert_eq!(Verdict::of(&c, true), Verdict::Unexpected);
    c.violations.clear();
    assert_eq!(Verdict::of(&c, true), Verdict::Unexpected);
}

#[test]
fn spreads_are_medians_and_quartiles() {
    let s = Spread::of(&[5.0, 1.0, 3.0, 2.0, 4.0, f64::NAN]).unwrap();
    assert_eq!((s.median, s.lo, s.hi, s.n), (3.0, 2.0, 4.0, 5));
    assert!(Spread::of(&[]).is_none());
}

#[test]
fn costs_plot_shows_both_sides_or_says_what_is_missing() {
    let mut r = report("x");
    r.costs = Some(Costs {
        model_policy: "linux-6.13".into(),
        real: "shadow".into(),
        rows: vec![Cost {
            backing: "memfd".into(),
            model: Spread::of(&[1.0, 1.2, 1.4]),
            real: None,
        }],
        seconds: 1.0,
    });
    let site = render(&r);
    let (_, svg) = site
        .svgs
        .iter()
        .find(|(n, _)| n == "svg/costs.svg")
        .unwrap();
    assert!(svg.contains("1.20 µs"));
    // Every line (grid, whiskers, ticks) is drawn in the plot area, right of the labels.
    for part in svg.split("<line x1=\"").skip(1) {
        let x: f64 = part[..part.find('"').unwrap()].parse().unwrap();
        assert!(x >= 320.0, "a line at x = {x}");
    }
    assert!(svg.contains("real KVM: not measured"));
}
