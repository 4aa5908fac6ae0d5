//! realkvm.md §5–6: holes and mprotect under a live memslot; EFAULT, retry after repair.
//! (Runs with holes go through a fresh process, `isolated`: in this multi-threaded test
//! process another test's thread stack may land in a hole, which the probe then rightly
//! refuses as an invalid run.)
mod common;
use common::*;
use probe::{BackingKind as K, Exit, HostAction, Mode};

/// hole-munmap.c (a): slot set, then munmapped before any access. Native: EFAULT (exit 0);
/// after mmap(MAP_FIXED) of fresh anon the retried read gives 0. Emulated: MMIO read.
#[test]
fn hole_read_efaults_then_reads_zero_after_refill() {
    if skip("hole_read_efaults_then_reads_zero_after_refill") {
        return;
    }
    let host = vec![after(0, 0, mmap_fixed("d", 1, None))];
    let p = one(
        "hole",
        backing("d", K::Hole, 1, true, None),
        false,
        vec![r(D), r(D)],
        host.clone(),
        Mode::Native,
    );
    let res = isolated(&p).unwrap();
    assert_eq!(exits(&res), vec![vec![Exit::Efault, Exit::Value(0)], v(0)]);
    assert_eq!(hread(&res, "d", 0), Some(0));

    let p = one(
        "hole-emu",
        backing("d", K::Hole, 1, true, None),
        false,
        vec![r(D), r(D)],
        host,
        Mode::Emulated,
    );
    let res = isolated(&p).unwrap();
    assert_eq!(
        exits(&res),
        vec![
            vec![Exit::MmioRead { gpa: D, len: 4 }, Exit::Value(0)],
            v(0)
        ]
    );
}

/// The refill's fill is what the retried read sees; a write into the hole lands in the new page.
#[test]
fn hole_refill_fill_and_write() {
    if skip("hole_refill_fill_and_write") {
        return;
    }
    let host = vec![after(0, 0, mmap_fixed("d", 1, Some(0x5555_5555)))];
    let p = one(
        "hole-fill",
        backing("d", K::Hole, 1, true, None),
        false,
        vec![r(D)],
        host,
        Mode::Native,
    );
    let res = isolated(&p).unwrap();
    assert_eq!(
        exits(&res),
        vec![vec![Exit::Efault, Exit::Value(0x5555_5555)]]
    );

    let host = vec![after(0, 0, mmap_fixed("d", 1, None))];
    let p = one(
        "hole-w",
        backing("d", K::Hole, 1, true, None),
        false,
        vec![w(D, 0xC0C0_C0C0), r(D)],
        host,
        Mode::Native,
    );
    let res = isolated(&p).unwrap();
    assert_eq!(
        exits(&res),
        vec![vec![Exit::Efault, Exit::Done], v(0xC0C0_C0C0)]
    );
    assert_eq!(hread(&res, "d", 0), Some(0xC0C0_C0C0));
}

/// Without a repair step the faulting access is skipped and the program continues;
/// the host cannot read the hole, so it is left out of host_reads.
#[test]
fn hole_without_repair_is_skipped() {
    if skip("hole_without_repair_is_skipped") {
        return;
    }
    let mut p = one(
        "hole-skip",
        backing("d", K::Hole, 1, true, None),
        false,
        vec![r(D), w(D, 1), r(0x20000)],
        vec![],
        Mode::Native,
    );
    p.backings
        .push(backing("e", K::AnonPrivate, 1, true, Some(7)));
    p.memslots.push(slot(2, 0x20000, "e", 1, false));
    let res = isolated(&p).unwrap();
    assert_eq!(
        exits(&res),
        vec![vec![Exit::Efault], vec![Exit::Efault], v(7)]
    );
    assert_eq!(hread(&res, "d", 0), None);
    assert_eq!(hread(&res, "e", 0), Some(7));
}

/// hole-munmap.c (b): read 0x11111111, host munmaps, next read EFAULTs; no stale data: after
/// remapping fresh anon holding 0x55555555 the guest reads 0x55555555.
#[test]
fn munmap_after_touch_gives_no_stale_data() {
    if skip("munmap_after_touch_gives_no_stale_data") {
        return;
    }
    let host = vec![
        after(
            0,
            0,
            HostAction::Munmap {
                backing: "d".into(),
                offset_pages: 0,
                pages: 1,
            },
        ),
        after(0, 1, mmap_fixed("d", 1, Some(0x5555_5555))),
    ];
    let p = one(
        "unmap",
        backing("d", K::AnonPrivate, 1, true, Some(0x1111_1111)),
        false,
        vec![r(D), r(D)],
        host.clone(),
        Mode::Native,
    );
    let res = isolated(&p).unwrap();
    assert_eq!(
        exits(&res),
        vec![v(0x1111_1111), vec![Exit::Efault, Exit::Value(0x5555_5555)]]
    );

    let p = one(
        "unmap-emu",
        backing("d", K::AnonPrivate, 1, true, Some(0x1111_1111)),
        false,
        vec![r(D), r(D)],
        host,
        Mode::Emulated,
    );
    let res = isolated(&p).unwrap();
    assert_eq!(
        exits(&res),
        vec![
            v(0x1111_1111),
            vec![Exit::MmioRead { gpa: D, len: 4 }, Exit::Value(0)]
        ]
    );
}

/// mprotect-madvise.c: mprotect(PROT_READ) after a guest write. Reads still give the data;
/// native write: EFAULT, completes after mprotect(RW). Emulated: MMIO write, memory unchanged.
#[test]
fn mprotect_read_after_write_makes_next_write_efault() {
    if skip("mprotect_read_after_write_makes_next_write_efault") {
        return;
    }
    for mode in MODES {
        let prog = vec![
            r(D),
            w(D + 4, 0xC0C0_C0C0),
            r(D),
            r(D + 4),
            w(D + 4, 0xD0D0_D0D0),
            r(D + 4),
        ];
        let host = vec![
            after(0, 1, mprotect("d", 1, true, false)),
            after(0, 4, mprotect("d", 1, true, true)),
        ];
        let p = one(
            "mprotect-r",
            backing("d", K::AnonPrivate, 1, true, Some(0x1111_1111)),
            false,
            prog,
            host,
            mode,
        );
        let res = isolated(&p).unwrap();
        let (wr, last) = match mode {
            Mode::Native => (vec![Exit::Efault, Exit::Done], 0xD0D0_D0D0),
            Mode::Emulated => (
                vec![
                    Exit::MmioWrite {
                        gpa: D + 4,
                        len: 4,
                        data: 0xD0D0_D0D0,
                    },
                    Exit::Done,
                ],
                0xC0C0_C0C0,
            ),
        };
        assert_eq!(
            exits(&res),
            vec![
                v(0x1111_1111),
                done(),
                v(0x1111_1111),
                v(0xC0C0_C0C0),
                wr,
                v(last)
            ],
            "{mode:?}"
        );
        assert_eq!(hread(&res, "d", 4), Some(last));
    }
}

/// mprotect(PROT_NONE) after read+write: native read EFAULTs and persists; after mprotect(RW)
/// the retry reads the intact data. A ProtNone backing behaves the same from the start.
#[test]
fn prot_none_efaults_until_restored() {
    if skip("prot_none_efaults_until_restored") {
        return;
    }
    let prog = vec![r(D), w(D + 4, 0xC0C0_C0C0), r(D)];
    let host = vec![
        after(0, 1, mprotect("d", 1, false, false)),
        after(0, 2, mprotect("d", 1, true, true)),
    ];
    let p = one(
        "protnone",
        backing("d", K::AnonPrivate, 1, true, Some(0x1111_1111)),
        false,
        prog,
        host,
        Mode::Native,
    );
    let res = isolated(&p).unwrap();
    assert_eq!(
        exits(&res),
        vec![
            v(0x1111_1111),
            done(),
            vec![Exit::Efault, Exit::Value(0x1111_1111)]
        ]
    );

    let host = vec![after(0, 0, mprotect("d", 1, true, true))];
    let p = one(
        "protnone-kind",
        backing("d", K::ProtNone, 1, false, Some(0x1234_5678)),
        false,
        vec![r(D)],
        host,
        Mode::Native,
    );
    let res = isolated(&p).unwrap();
    assert_eq!(
        exits(&res),
        vec![vec![Exit::Efault, Exit::Value(0x1234_5678)]]
    );

    let p = one(
        "protnone-emu",
        backing("d", K::ProtNone, 1, false, Some(0x1234_5678)),
        false,
        vec![r(D), w(D, 1)],
        vec![],
        Mode::Emulated,
    );
    let res = isolated(&p).unwrap();
    assert_eq!(
        exits(&res),
        vec![
            vec![Exit::MmioRead { gpa: D, len: 4 }, Exit::Value(0)],
            vec![
                Exit::MmioWrite {
                    gpa: D,
                    len: 4,
                    data: 1
                },
                Exit::Done
            ]
        ]
    );
    assert_eq!(
        hread(&res, "d", 0),
        None,
        "PROT_NONE is unreadable by the host too"
    );
}

/// Issue 12: a guest write into a hole must never land in the probe's own memory. A 3-page
/// hole (where a vCPU thread's signal stack once landed) gives EFAULT on every page...
#[test]
fn a_three_page_hole_efaults_and_reaches_nothing_of_ours() {
    if skip("a_three_page_hole_efaults_and_reaches_nothing_of_ours") {
        return;
    }
    let p = one(
        "hole3",
        backing("d", K::Hole, 3, true, None),
        false,
        vec![w(D, 0x1122_3344), r(D), w(D + 0x1000, 1), w(D + 0x2000, 2)],
        vec![],
        Mode::Native,
    );
    let res = isolated(&p).unwrap();
    for e in exits(&res) {
        assert_eq!(e, vec![Exit::Efault], "{res:?}");
    }
    // ...and when something of ours is mapped there anyway, the run is refused as invalid
    // instead of reporting what the guest saw.
    let mut p = p;
    p.inject.squat_holes = true;
    match isolated(&p) {
        Err(probe::ProbeError::Invalid(why)) => {
            assert!(why.contains("backing 'd'"), "{why}")
        }
        other => panic!("a squatted hole must invalidate the run: {other:?}"),
    }
}
