//! The cells `kvmmu run` (sampled schedules) must reproduce, each found by running the
//! built-in scenario under the era's policy — no per-scenario code anywhere.

mod common;

use check::Report;
use common::{headline, meets, sample, sc};
use model::harness::{run_once, ScheduleKind};
use model::kvm::PolicyId;
use scenario::BUILTIN;

fn detail<'a>(r: &'a Report, oracle: &str) -> &'a str {
    &r.found
        .iter()
        .find(|f| f.oracle == oracle)
        .unwrap_or_else(|| panic!("{oracle} not found: {:?}", r.oracles()))
        .detail
}

/// The distinct values one access showed (`vcpu0 read32 0x10000: 0x1`).
fn observed<'a>(r: &'a Report, prefix: &str) -> Vec<&'a str> {
    r.observed
        .iter()
        .find(|v| v.first().is_some_and(|x| x.starts_with(prefix)))
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn linux_4_7_bugs_on_the_vgpu_first_touch() {
    let r = sample("vgpu-first-touch", PolicyId::Linux4_7);
    assert!(r.oracles().contains(&"no-host-bug"), "{:?}", r.oracles());
    assert_eq!(headline(&r), "BUG");
    assert!(detail(&r, "no-host-bug").contains("BUG_ON(!kvm_is_reserved_pfn"));
}

#[test]
fn linux_4_7_maps_the_wrong_frame_on_a_vfio_bar() {
    let r = sample("vfio-bar", PolicyId::Linux4_7);
    assert!(r.oracles().contains(&"right-frame"), "{:?}", r.oracles());
}

#[test]
fn linux_4_8_escalates_a_write_to_vvar() {
    let r = sample("vvar-write", PolicyId::Linux4_8);
    assert_eq!(r.oracles(), vec!["no-write-escalation"]);
    // The guest's store landed in the system-wide time page.
    let w = observed(&r, "vcpu0 write32");
    assert!(w.iter().all(|x| x.ends_with("done")), "{w:?}");
    for p in [
        PolicyId::Linux5_12,
        PolicyId::Linux5_13,
        PolicyId::Linux6_13,
    ] {
        let r = sample("vvar-write", p);
        assert!(r.found.is_empty(), "{p}: {:?}", r.oracles());
        let w = observed(&r, "vcpu0 write32");
        assert!(
            w.iter().all(|x| x.contains("MMIO write 0x99999999")),
            "{p}: {w:?}"
        );
    }
}

#[test]
fn linux_4_16_maps_a_guest_read_of_vvar_writable_and_the_seed_does_not() {
    // a340b3e229b2 (v4.16): after follow_pfn, `*writable = true` whatever the PTE says. The
    // guest only reads; the seed maps the page read-only, the 2018 form writable, and from
    // v5.12 on `pte_write` decides again.
    for (p, violations) in [
        (PolicyId::Linux4_8, vec![]),
        (PolicyId::Linux4_16, vec!["no-write-escalation"]),
        (PolicyId::Linux5_12, vec![]),
    ] {
        let r = sample("vvar-read", p);
        assert_eq!(r.oracles(), violations, "{p}");
        assert_eq!(headline(&r), "ok", "{p}");
        let v = observed(&r, "vcpu0 read32 0x10004");
        assert!(v.iter().all(|x| x.ends_with(": 0x1")), "{p}: {v:?}");
    }
    assert!(detail(
        &sample("vvar-read", PolicyId::Linux4_16),
        "no-write-escalation"
    )
    .contains("the host PTE (pfn 0x1) is read-only and [vvar] lacks VM_WRITE"));
}

#[test]
fn linux_4_8_and_5_12_free_the_usbfs_tail_page() {
    for p in [PolicyId::Linux4_8, PolicyId::Linux5_12] {
        let o = sample("usbfs-tail", p).oracles();
        assert!(
            o.contains(&"refcount-sane") && o.contains(&"no-freed-frame"),
            "{p}: {o:?}"
        );
    }
    let r = sample("usbfs-tail", PolicyId::Linux5_13);
    assert!(r.found.is_empty(), "{:?}", r.oracles());
    assert_eq!(headline(&r), "EFAULT");
}

#[test]
fn linux_5_13_refuses_ttm_tail_pages_and_6_13_maps_them_without_references() {
    let r = sample("ttm-evict", PolicyId::Linux5_13);
    assert!(r.found.is_empty(), "{:?}", r.oracles());
    assert_eq!(headline(&r), "EFAULT");
    let r = sample("ttm-evict", PolicyId::Linux6_13);
    assert!(r.found.is_empty(), "{:?}", r.oracles());
    assert_eq!(headline(&r), "ok");
    let s = sc("ttm-evict");
    let r = run_once(
        &s,
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
        &s,
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
    let r = sample("nested-pfnmap", PolicyId::Linux6_13);
    assert!(r.found.is_empty(), "{:?}", r.oracles());
    assert_eq!(headline(&r), "refused");
    let n = observed(&r, "nested0");
    assert!(n.iter().all(|x| x.contains("map refused")), "{n:?}");
    let r = sample("nested-pfnmap-unsafe", PolicyId::Linux6_13);
    let n = observed(&r, "nested0");
    assert!(n.iter().any(|x| x.contains("mapped")), "{n:?}");
    // With the safety net off, some schedule has the reset free the page under the map.
    assert_eq!(r.oracles(), vec!["no-freed-frame"]);
}

#[test]
fn the_open_gap_is_emulated_every_time_on_6_13() {
    let r = sample("ro-pfnmap-write", PolicyId::Linux6_13);
    assert_eq!(headline(&r), "emulated");
    let w = observed(&r, "vcpu0 write32 0x100000");
    assert!(w.iter().all(|x| x.ends_with("done (emulated)")), "{w:?}");
}

#[test]
fn every_built_in_cell_matches_its_declared_expectation() {
    for (name, _) in BUILTIN {
        for p in PolicyId::ALL {
            // Every cell declares its violations and its headline outcome (issue 10): a cell
            // that declares nothing, or never checks the outcome, proves nothing.
            let declared = sc(name).expect.get(p.name()).cloned();
            assert!(
                declared.as_ref().is_some_and(|e| e.outcome.is_some()),
                "{name} / {p}: [expect] declares no outcome"
            );
            let r = sample(name, p);
            // The `[[seen]]` values hold in every sampled execution.
            let broken = model::harness::seen_mismatches(&sc(name), p, &r.observed);
            assert!(broken.is_empty(), "{name} / {p}: {broken:?}");
            assert_eq!(
                meets(name, p, &r),
                Some(true),
                "{name} / {p}: got {:?}, {}",
                r.oracles(),
                headline(&r)
            );
        }
    }
}

#[test]
fn same_schedule_same_trace() {
    let s = sc("vgpu-reset-race");
    let a = run_once(
        &s,
        PolicyId::Linux4_8,
        ScheduleKind::Random(42),
        true,
        20_000,
    )
    .unwrap();
    let b = run_once(
        &s,
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
fn sampling_finds_linux_4_8_taking_a_reference_on_a_page_the_reset_freed() {
    // B1 (iii): kvm_get_pfn runs after follow_pfn dropped the PTL; a device reset that zaps
    // and frees the page in that one-step window makes it a get_page() on a free page.
    let r = sample("vgpu-reset-race", PolicyId::Linux4_8);
    assert!(
        detail(&r, "refcount-sane").contains("get_page on refcount 0 (free page)"),
        "{:?}",
        r.found
    );
    for p in [PolicyId::Linux5_12, PolicyId::Linux6_13] {
        assert!(sample("vgpu-reset-race", p).found.is_empty(), "{p}");
    }
}
