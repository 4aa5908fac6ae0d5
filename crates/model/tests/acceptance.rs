//! The cells issue 4 asks `kvmmu run` to reproduce, each found by running the built-in
//! scenario under the era's policy — no per-scenario code anywhere.

use model::harness::{run_cell, run_once, CellResult, RunOptions, ScheduleKind};
use model::kvm::PolicyId;
use scenario::{builtin, BUILTIN};

fn cell(name: &str, p: PolicyId) -> CellResult {
    let sc = builtin(name).expect("built-in").expect("parses");
    run_cell(&sc, p, &RunOptions::default()).expect("runs")
}

fn oracles(c: &CellResult) -> Vec<&'static str> {
    c.oracle_names()
}

#[test]
fn linux_4_7_bugs_on_the_vgpu_first_touch() {
    let c = cell("vgpu-first-touch", PolicyId::Linux4_7);
    assert!(oracles(&c).contains(&"no-host-bug"), "{:?}", c.violations);
    assert_eq!(c.outcome, "BUG");
    let bug = &c
        .violations
        .iter()
        .find(|(v, _)| v.oracle.name() == "no-host-bug")
        .unwrap()
        .0;
    assert!(bug.detail.contains("BUG_ON(!kvm_is_reserved_pfn"), "{bug}");
}

#[test]
fn linux_4_7_maps_the_wrong_frame_on_a_vfio_bar() {
    let c = cell("vfio-bar", PolicyId::Linux4_7);
    assert!(oracles(&c).contains(&"right-frame"), "{:?}", c.violations);
}

#[test]
fn linux_4_8_escalates_a_write_to_vvar() {
    let c = cell("vvar-write", PolicyId::Linux4_8);
    assert_eq!(oracles(&c), vec!["no-write-escalation"]);
    // The guest's store landed in the system-wide time page.
    assert!(c.outcomes[0][1].ends_with("done"), "{:?}", c.outcomes);
    for p in [
        PolicyId::Linux5_12,
        PolicyId::Linux5_13,
        PolicyId::Linux6_13,
    ] {
        let c = cell("vvar-write", p);
        assert!(c.violations.is_empty(), "{p}: {:?}", c.violations);
        assert!(
            c.outcomes[0][1].contains("MMIO write 0x99999999"),
            "{p}: {:?}",
            c.outcomes
        );
    }
}

#[test]
fn linux_4_8_and_5_12_free_the_usbfs_tail_page() {
    for p in [PolicyId::Linux4_8, PolicyId::Linux5_12] {
        let o = oracles(&cell("usbfs-tail", p));
        assert!(
            o.contains(&"refcount-sane") && o.contains(&"no-freed-frame"),
            "{p}: {o:?}"
        );
    }
    let c = cell("usbfs-tail", PolicyId::Linux5_13);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    assert_eq!(c.outcome, "EFAULT");
}

#[test]
fn linux_5_13_refuses_ttm_tail_pages_and_6_13_maps_them_without_references() {
    let c = cell("ttm-evict", PolicyId::Linux5_13);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    assert_eq!(c.outcome, "EFAULT");
    let c = cell("ttm-evict", PolicyId::Linux6_13);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    assert_eq!(c.outcome, "ok");
    let sc = builtin("ttm-evict").unwrap().unwrap();
    let r = run_once(
        &sc,
        PolicyId::Linux6_13,
        ScheduleKind::Sequential,
        false,
        20_000,
    )
    .unwrap();
    assert_eq!(
        r.refs_taken, 0,
        "linux-6.13 takes no page reference on PFNMAP memory"
    );
    let r = run_once(
        &sc,
        PolicyId::Linux5_13,
        ScheduleKind::Sequential,
        false,
        20_000,
    )
    .unwrap();
    assert!(
        r.refs_taken > 0,
        "linux-5.13 takes references (on the head page)"
    );
}

#[test]
fn linux_6_13_refuses_the_unpinned_nested_map_unless_allowed() {
    let c = cell("nested-pfnmap", PolicyId::Linux6_13);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    assert_eq!(c.outcome, "refused");
    assert!(c.nested[0].starts_with("map refused"), "{:?}", c.nested);
    let c = cell("nested-pfnmap-unsafe", PolicyId::Linux6_13);
    assert!(c.nested[0].contains("mapped"), "{:?}", c.nested);
    // With the safety net off, some schedule has the reset free the page under the map.
    assert_eq!(oracles(&c), vec!["no-freed-frame"]);
}

#[test]
fn linux_6_13_is_clean_on_every_built_in_scenario() {
    for (name, _) in BUILTIN {
        if *name == "nested-pfnmap-unsafe" {
            continue; // allow_unsafe_mappings: the administrator opted out of safety.
        }
        let c = cell(name, PolicyId::Linux6_13);
        assert!(c.violations.is_empty(), "{name}: {:?}", c.violations);
    }
}

#[test]
fn the_open_gap_is_emulated_every_time_on_6_13() {
    let c = cell("ro-pfnmap-write", PolicyId::Linux6_13);
    assert_eq!(c.outcome, "emulated");
    assert!(
        c.outcomes[0][1].ends_with("done (emulated)"),
        "{:?}",
        c.outcomes
    );
}

#[test]
fn every_built_in_cell_matches_its_declared_expectation() {
    for (name, _) in BUILTIN {
        for p in PolicyId::ALL {
            let c = cell(name, p);
            assert_ne!(
                c.matches,
                Some(false),
                "{name} / {p}: got {} ({:?})",
                c.cell(),
                c.violations
            );
        }
    }
}

#[test]
fn same_schedule_same_trace() {
    let sc = builtin("vgpu-reset-race").unwrap().unwrap();
    let a = run_once(
        &sc,
        PolicyId::Linux4_8,
        ScheduleKind::Random(42),
        true,
        20_000,
    )
    .unwrap();
    let b = run_once(
        &sc,
        PolicyId::Linux4_8,
        ScheduleKind::Replay(a.choices.clone()),
        true,
        20_000,
    )
    .unwrap();
    assert_eq!(a.trace.to_string(), b.trace.to_string());
    assert_eq!(a.outcomes, b.outcomes);
}

#[test]
fn pct_finds_linux_4_8_taking_a_reference_on_a_page_the_reset_freed() {
    // B1 (iii): kvm_get_pfn runs after follow_pfn dropped the PTL; a device reset that zaps
    // and frees the page in that one-step window makes it a get_page() on a free page.
    let c = cell("vgpu-reset-race", PolicyId::Linux4_8);
    let (v, kind) = c
        .violations
        .iter()
        .find(|(v, _)| v.oracle.name() == "refcount-sane")
        .expect("found");
    assert!(
        v.detail.contains("get_page on refcount 0 (free page)"),
        "{v}"
    );
    assert!(matches!(kind, ScheduleKind::Pct { .. }), "found by {kind}");
    // The counterexample replays.
    let sc = builtin("vgpu-reset-race").unwrap().unwrap();
    let r = run_once(&sc, PolicyId::Linux4_8, kind.clone(), true, 20_000).unwrap();
    assert!(r
        .violations
        .iter()
        .any(|x| x.oracle.name() == "refcount-sane"));
    for p in [PolicyId::Linux5_12, PolicyId::Linux6_13] {
        assert!(cell("vgpu-reset-race", p).violations.is_empty(), "{p}");
    }
}
