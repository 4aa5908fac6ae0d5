//! Issue 10: slots anywhere in the 48-bit guest-physical space, on real KVM. The guest's
//! CPUID reports this machine's MAXPHYADDR (48) and its page tables map every far page at the
//! gpa sign-extended from bit 47.
mod common;
use common::*;
use probe::{BackingKind as K, Exit, GuestOp, Mode};

#[test]
fn slots_at_4_gib_and_below_2_pow_48_read_write_and_end_where_they_end() {
    if skip("slots_at_4_gib_and_below_2_pow_48_read_write_and_end_where_they_end") {
        return;
    }
    for mode in MODES {
        for base in [0x1_0000_0000u64, 0x9000_0000_0000, 0xffff_ffff_e000] {
            let mut p = one(
                "far",
                backing("d", K::AnonPrivate, 2, true, Some(0x1111_1111)),
                false,
                vec![
                    GuestOp::Read {
                        gpa: base + 0x1fff,
                        size: 1,
                    },
                    GuestOp::Write {
                        gpa: base + 0x1ff8,
                        size: 8,
                        value: u64::MAX,
                    },
                    GuestOp::Read {
                        gpa: base + 0x1ff8,
                        size: 8,
                    },
                ],
                vec![],
                mode,
            );
            p.memslots[0].gpa = base;
            // Just past the slot's end: no memslot, an MMIO exit (where the gpa is below 2^48).
            let past = base + 0x2000;
            if past < 1 << 48 {
                p.vcpus[0]
                    .program
                    .push(GuestOp::Read { gpa: past, size: 4 });
            }
            let res = probe::run(&p).unwrap_or_else(|e| panic!("{mode:?} {base:#x}: {e}"));
            let mut want = vec![v(0x11), done(), v(u64::MAX)];
            if past < 1 << 48 {
                want.push(vec![Exit::MmioRead { gpa: past, len: 4 }, Exit::Value(0)]);
            }
            assert_eq!(exits(&res), want, "{mode:?} {base:#x}");
        }
    }
    // 2^47 is guest-virtual page 0 in the probe's layout (bit 47 cleared): refused up front.
    let p = one(
        "alias",
        backing("d", K::AnonPrivate, 1, true, None),
        false,
        vec![GuestOp::Read {
            gpa: 1 << 47,
            size: 4,
        }],
        vec![],
        Mode::Native,
    );
    assert!(
        matches!(probe::check(&p), Err(probe::ProbeError::BadPlan(m)) if m.contains("identity map"))
    );
}

/// Issue 10: one memslot over adjacent backings (`follows`): private anon then memfd, and a
/// private anon page right below [vvar] (the vDSO is moved to make room).
#[test]
fn one_slot_spans_adjacent_backings() {
    if skip("one_slot_spans_adjacent_backings") {
        return;
    }
    let mut p = one(
        "adjacent",
        backing("a", K::AnonPrivate, 1, true, Some(0x1111_1111)),
        false,
        vec![r(D), r(D + 0x1000), r(D + 0x1004)],
        vec![],
        Mode::Native,
    );
    let mut m = backing("m", K::Memfd, 1, true, Some(0x2222_2222));
    m.follows = Some("a".into());
    p.backings.push(m);
    p.memslots[0].pages = 2;
    let res = probe::run(&p).unwrap();
    assert_eq!(
        exits(&res),
        vec![v(0x1111_1111), v(0x2222_2222), v(0x2222_2222)]
    );
    assert_eq!(
        hread(&res, "m", 0),
        Some(0x2222_2222),
        "host view names the backing"
    );

    let mut p = one(
        "below-vvar",
        backing("a", K::AnonPrivate, 1, true, Some(0x1111_1111)),
        false,
        vec![r(D), r(D + 0x1004)],
        vec![],
        Mode::Native,
    );
    let mut vv = backing("v", K::Vvar, 4, false, None);
    vv.follows = Some("a".into());
    p.backings.push(vv);
    p.memslots[0].pages = 5;
    let res = isolated(&p).unwrap();
    assert_eq!(exits(&res), vec![v(0x1111_1111), v(1)]);
}
