//! realkvm.md §8–9: userfaultfd MISSING mode with a resolving handler.
mod common;
use common::*;
use probe::{BackingKind as K, HostAction, Mode, Plan, UffdEvent, Vcpu};

fn ev(page: u64, write: bool) -> UffdEvent {
    UffdEvent {
        backing: "u".into(),
        page,
        write,
    }
}

/// uffd.c: pass 1 reads pages 0–3 → 4 events, the copied fill 0xA0+page; pass 2 → none;
/// after MADV_DONTNEED pass 3 → 4 again; a first-access write → 1 event with the write flag,
/// and the write lands. Same in both modes.
#[test]
fn uffd_events_once_per_page_again_after_dontneed() {
    if skip("uffd_events_once_per_page_again_after_dontneed") {
        return;
    }
    for mode in MODES {
        let pass: Vec<_> = (0..4).map(|p| r(D + p * 0x1000)).collect();
        let mut prog = pass.clone();
        prog.extend(pass.clone());
        prog.extend(pass);
        prog.push(w(D + 0x4000, 0xC0C0_C0C0));
        let host = vec![after(
            0,
            7,
            HostAction::MadviseDontneed {
                backing: "u".into(),
                offset_pages: 0,
                pages: 4,
            },
        )];
        let p = one(
            "uffd",
            backing("u", K::Userfault, 5, true, None),
            false,
            prog,
            host,
            mode,
        );
        let res = probe::run(&p).unwrap();
        let fills: Vec<_> = (0..4u64).map(|p| v((0xA0 + p) * 0x0101_0101)).collect();
        let mut want = fills.clone();
        want.extend(fills.clone());
        want.extend(fills);
        want.push(done());
        assert_eq!(exits(&res), want, "{mode:?}");
        let mut events: Vec<_> = (0..4).map(|p| ev(p, false)).collect();
        events.extend((0..4).map(|p| ev(p, false)));
        events.push(ev(4, true));
        assert_eq!(res.uffd_events, events, "{mode:?}");
        assert_eq!(hread(&res, "u", 0x4000), Some(0xC0C0_C0C0));
    }
}

/// A fill given in the plan is what UFFDIO_COPY installs.
#[test]
fn uffd_copies_the_plan_fill() {
    if skip("uffd_copies_the_plan_fill") {
        return;
    }
    let p = one(
        "uffd-fill",
        backing("u", K::Userfault, 2, true, Some(0x1234_5678)),
        false,
        vec![r(D + 0x1008)],
        vec![],
        Mode::Native,
    );
    let res = probe::run(&p).unwrap();
    assert_eq!(exits(&res), vec![v(0x1234_5678)]);
    assert_eq!(res.uffd_events, vec![ev(1, false)]);
}

/// uffd-2vcpu.c: two vCPUs read the same missing page; both read the same copied value and the
/// handler sees one event (two would need the second fault to be queued before the copy).
#[test]
fn uffd_two_vcpus_same_page() {
    if skip("uffd_two_vcpus_same_page") {
        return;
    }
    for mode in MODES {
        let mut p: Plan = one(
            "uffd-2",
            backing("u", K::Userfault, 1, true, None),
            false,
            vec![r(D)],
            vec![],
            mode,
        );
        p.vcpus.push(Vcpu {
            program: vec![r(D)],
            ..Vcpu::default()
        });
        let res = probe::run(&p).unwrap();
        assert_eq!(
            exits(&res),
            vec![v(0xA0A0_A0A0), v(0xA0A0_A0A0)],
            "{mode:?}"
        );
        assert_eq!(res.accesses[1].vcpu, 1);
        assert!(
            matches!(res.uffd_events.len(), 1 | 2),
            "{:?}",
            res.uffd_events
        );
        assert!(res.uffd_events.iter().all(|e| *e == ev(0, false)));
    }
}
