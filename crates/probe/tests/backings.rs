//! realkvm.md §1–2, §4, §7: anon/memfd coherence, READONLY slots, file mappings, MADV_DONTNEED.
mod common;
use common::*;
use probe::{BackingKind as K, Exit, HostAction, Mode};

/// backing-coherence.c: guest reads the host fill, sees a later host write, and its own
/// write is seen at once by the host mapping. Same values in both modes.
#[test]
fn anon_and_memfd_are_coherent_both_ways() {
    if skip("anon_and_memfd_are_coherent_both_ways") {
        return;
    }
    for mode in MODES {
        for kind in [K::AnonPrivate, K::AnonShared, K::Memfd] {
            for fill in [Some(0x1111_1111), None] {
                let prog = vec![r(D), r(D), w(D + 4, 0xC0C0_C0C0), r(D + 4)];
                let host = vec![
                    after(0, 0, host_write("d", 0, 0x2222_2222)),
                    after(0, 2, host_write("d", 4, 0xD0D0_D0D0)),
                ];
                let p = one(
                    "coherence",
                    backing("d", kind, 1, true, fill),
                    false,
                    prog,
                    host,
                    mode,
                );
                let res = probe::run(&p).unwrap();
                let first = u64::from(fill.unwrap_or(0));
                assert_eq!(
                    exits(&res),
                    vec![v(first), v(0x2222_2222), done(), v(0xD0D0_D0D0)],
                    "{kind:?} {mode:?} {fill:?}"
                );
                assert_eq!(hread(&res, "d", 0), Some(0x2222_2222));
                assert_eq!(hread(&res, "d", 4), Some(0xD0D0_D0D0));
            }
        }
    }
}

/// A guest write is visible to the host mapping right after the write's marker.
#[test]
fn guest_write_is_seen_by_the_host() {
    if skip("guest_write_is_seen_by_the_host") {
        return;
    }
    for kind in [K::AnonPrivate, K::AnonShared, K::Memfd] {
        let p = one(
            "w",
            backing("d", kind, 1, true, None),
            false,
            vec![w(D + 4, 0xC0C0_C0C0)],
            vec![],
            Mode::Native,
        );
        let res = probe::run(&p).unwrap();
        assert_eq!(exits(&res), vec![done()]);
        assert_eq!(hread(&res, "d", 4), Some(0xC0C0_C0C0), "{kind:?}");
    }
}

/// readonly-slot.c: writes to a KVM_MEM_READONLY slot become MMIO writes of the data gpa with
/// the data; the guest re-reads the original value and host memory is unchanged. Both modes.
#[test]
fn readonly_slot_writes_are_mmio() {
    if skip("readonly_slot_writes_are_mmio") {
        return;
    }
    for mode in MODES {
        let prog = vec![
            r(D),
            w(D, 0xDEAD_BEEF),
            r(D),
            probe::GuestOp::Write {
                gpa: D + 8,
                size: 1,
                value: 0x77,
            },
            r(D + 8),
        ];
        let host = vec![before(host_write("d", 8, 0x2222_2222))];
        let p = one(
            "ro",
            backing("d", K::AnonPrivate, 1, true, Some(0x1111_1111)),
            true,
            prog,
            host,
            mode,
        );
        let res = probe::run(&p).unwrap();
        assert_eq!(
            exits(&res),
            vec![
                v(0x1111_1111),
                vec![
                    Exit::MmioWrite {
                        gpa: D,
                        len: 4,
                        data: 0xDEAD_BEEF
                    },
                    Exit::Done
                ],
                v(0x1111_1111),
                vec![
                    Exit::MmioWrite {
                        gpa: D + 8,
                        len: 1,
                        data: 0x77
                    },
                    Exit::Done
                ],
                v(0x2222_2222),
            ],
            "{mode:?}"
        );
        assert_eq!(hread(&res, "d", 0), Some(0x1111_1111));
        assert_eq!(hread(&res, "d", 8), Some(0x2222_2222));
        // Same when the write is the first access.
        let p = one(
            "ro-wf",
            backing("d", K::AnonPrivate, 1, true, Some(0x1111_1111)),
            true,
            vec![w(D, 0xDEAD_BEEF), r(D)],
            vec![],
            mode,
        );
        let res = probe::run(&p).unwrap();
        assert_eq!(
            exits(&res),
            vec![
                vec![
                    Exit::MmioWrite {
                        gpa: D,
                        len: 4,
                        data: 0xDEAD_BEEF
                    },
                    Exit::Done
                ],
                v(0x1111_1111)
            ]
        );
    }
}

/// file-private.c: MAP_PRIVATE PROT_READ file. Native write: EFAULT (exit 0), skipped here;
/// emulated write: MMIO write. File and mapping unchanged either way.
#[test]
fn file_private_readonly_write_is_efault_native_mmio_emulated() {
    if skip("file_private_readonly_write_is_efault_native_mmio_emulated") {
        return;
    }
    for kind in [K::FilePrivate, K::FileShared] {
        for mode in MODES {
            let prog = vec![r(D), w(D, 0xC0C0_C0C0), r(D)];
            let p = one(
                "file",
                backing("d", kind, 1, false, Some(0x4646_4646)),
                false,
                prog,
                vec![],
                mode,
            );
            let res = probe::run(&p).unwrap();
            let wr = match mode {
                Mode::Native => vec![Exit::Efault],
                Mode::Emulated => vec![
                    Exit::MmioWrite {
                        gpa: D,
                        len: 4,
                        data: 0xC0C0_C0C0,
                    },
                    Exit::Done,
                ],
            };
            assert_eq!(
                exits(&res),
                vec![v(0x4646_4646), wr, v(0x4646_4646)],
                "{kind:?} {mode:?}"
            );
            assert_eq!(hread(&res, "d", 0), Some(0x4646_4646));
        }
    }
}

/// Native EFAULT persists on retry: a host step that changes nothing leaves the write faulting.
#[test]
fn file_private_readonly_efault_persists_on_retry() {
    if skip("file_private_readonly_efault_persists_on_retry") {
        return;
    }
    let host = vec![after(0, 0, host_write("x", 0, 1))];
    let mut p = one(
        "file",
        backing("d", K::FilePrivate, 1, false, Some(0x4646_4646)),
        false,
        vec![w(D, 0xC0C0_C0C0)],
        host,
        Mode::Native,
    );
    p.backings.push(backing("x", K::AnonPrivate, 1, true, None));
    let res = probe::run(&p).unwrap();
    assert_eq!(exits(&res), vec![vec![Exit::Efault, Exit::Efault]]);
}

/// file-private.c: READONLY slot over the same file: MMIO write in both modes.
#[test]
fn file_private_readonly_slot_write_is_mmio() {
    if skip("file_private_readonly_slot_write_is_mmio") {
        return;
    }
    for mode in MODES {
        let p = one(
            "file-ro",
            backing("d", K::FilePrivate, 1, false, Some(0x4646_4646)),
            true,
            vec![w(D, 0xC0C0_C0C0), r(D)],
            vec![],
            mode,
        );
        let res = probe::run(&p).unwrap();
        assert_eq!(
            exits(&res),
            vec![
                vec![
                    Exit::MmioWrite {
                        gpa: D,
                        len: 4,
                        data: 0xC0C0_C0C0
                    },
                    Exit::Done
                ],
                v(0x4646_4646)
            ]
        );
    }
}

/// file-private.c: writable MAP_PRIVATE file: the write lands in the host mapping (COW copy),
/// and MAP_SHARED RW reaches the file (here: the host mapping).
#[test]
fn writable_file_mappings_take_guest_writes() {
    if skip("writable_file_mappings_take_guest_writes") {
        return;
    }
    for kind in [K::FilePrivate, K::FileShared] {
        for mode in MODES {
            let p = one(
                "file-rw",
                backing("d", kind, 1, true, Some(0x4646_4646)),
                false,
                vec![r(D), w(D, 0xC0C0_C0C0), r(D)],
                vec![],
                mode,
            );
            let res = probe::run(&p).unwrap();
            assert_eq!(
                exits(&res),
                vec![v(0x4646_4646), done(), v(0xC0C0_C0C0)],
                "{kind:?} {mode:?}"
            );
            assert_eq!(hread(&res, "d", 0), Some(0xC0C0_C0C0));
        }
    }
}

/// mprotect-madvise.c: MADV_DONTNEED after a read and a write. Private anon: guest and host
/// read 0, 0. Shared anon, memfd: values survive. Both modes.
#[test]
fn madv_dontneed_zeroes_private_anon_only() {
    if skip("madv_dontneed_zeroes_private_anon_only") {
        return;
    }
    for mode in MODES {
        for kind in [K::AnonPrivate, K::AnonShared, K::Memfd] {
            let prog = vec![r(D), w(D + 4, 0xC0C0_C0C0), r(D), r(D + 4)];
            let host = vec![after(
                0,
                1,
                HostAction::MadviseDontneed {
                    backing: "d".into(),
                    offset_pages: 0,
                    pages: 1,
                },
            )];
            let p = one(
                "dontneed",
                backing("d", kind, 1, true, Some(0x1111_1111)),
                false,
                prog,
                host,
                mode,
            );
            let res = probe::run(&p).unwrap();
            let (a, b) = if kind == K::AnonPrivate {
                (0, 0)
            } else {
                (0x1111_1111, 0xC0C0_C0C0)
            };
            assert_eq!(
                exits(&res),
                vec![v(0x1111_1111), done(), v(a), v(b)],
                "{kind:?} {mode:?}"
            );
            assert_eq!(hread(&res, "d", 0), Some(a));
            assert_eq!(hread(&res, "d", 4), Some(b));
        }
    }
}

/// Reads and writes of every size, and a read of a gpa with no slot (MMIO read, data 0).
#[test]
fn access_sizes_and_unbacked_gpa() {
    if skip("access_sizes_and_unbacked_gpa") {
        return;
    }
    use probe::GuestOp::{Read, Write};
    for mode in MODES {
        let prog = vec![
            Write {
                gpa: D + 0x10,
                size: 8,
                value: 0x1122_3344_5566_7788,
            },
            Read {
                gpa: D + 0x10,
                size: 8,
            },
            Read {
                gpa: D + 0x10,
                size: 1,
            },
            Read {
                gpa: D + 0x10,
                size: 2,
            },
            Write {
                gpa: D + 0x12,
                size: 2,
                value: 0xBEEF,
            },
            Read {
                gpa: D + 0x10,
                size: 4,
            },
            Read {
                gpa: 0x20000,
                size: 4,
            },
            Write {
                gpa: 0x20008,
                size: 8,
                value: 0xFFFF_FFFF_FFFF_FFFF,
            },
        ];
        let p = one(
            "sizes",
            backing("d", K::AnonPrivate, 1, true, None),
            false,
            prog,
            vec![],
            mode,
        );
        let res = probe::run(&p).unwrap();
        assert_eq!(
            exits(&res),
            vec![
                done(),
                v(0x1122_3344_5566_7788),
                v(0x88),
                v(0x7788),
                done(),
                v(0xBEEF_7788),
                vec![
                    Exit::MmioRead {
                        gpa: 0x20000,
                        len: 4
                    },
                    Exit::Value(0)
                ],
                vec![
                    Exit::MmioWrite {
                        gpa: 0x20008,
                        len: 8,
                        data: u64::MAX
                    },
                    Exit::Done
                ],
            ],
            "{mode:?}"
        );
        assert_eq!(hread(&res, "d", 0x10), Some(0xBEEF_7788));
        assert_eq!(res.host_reads.len(), 2, "{:?}", res.host_reads);
    }
}
