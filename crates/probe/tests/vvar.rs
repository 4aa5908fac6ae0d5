//! realkvm.md §3: memslots over this process's own [vvar] / [vvar_vclock].
//!
//! Runs whose outcome depends on a `[vvar]` page being absent go through a fresh process
//! (`isolated`): this test process has read the vDSO clock, and every guest access of a
//! `[vvar]` page leaves its PTE behind for the rest of the process.
mod common;
use common::*;
use probe::{BackingKind as K, Exit, Mode, ProbeError};

fn pages_of(name: &str) -> Option<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps
        .lines()
        .find(|l| l.split_whitespace().last() == Some(name))?;
    let (a, b) = line.split_whitespace().next()?.split_once('-')?;
    Some((u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?) / 4096)
}

/// vvar-slots.c: page 0 reads the host's value; a write is an MMIO write and changes nothing;
/// native reads of pages 1 and 3 (host cannot fault them) EFAULT, emulated ones are MMIO reads.
#[test]
fn vvar_page0_reads_host_value_write_is_mmio_page1_efaults() {
    let t = "vvar_page0_reads_host_value_write_is_mmio_page1_efaults";
    if skip(t) {
        return;
    }
    if pages_of("[vvar]") != Some(4) {
        println!("SKIP {t}: [vvar] is not 4 pages on this kernel");
        return;
    }
    for readonly in [false, true] {
        for mode in MODES {
            let prog = vec![
                r(D + 4),
                w(D + 4, 0x9999_9999),
                r(D + 4),
                r(D + 0x2004),
                r(D + 0x1004),
                r(D + 0x3004),
            ];
            let p = one(
                "vvar",
                backing("v", K::Vvar, 4, false, None),
                readonly,
                prog,
                vec![],
                mode,
            );
            let res = isolated(&p).unwrap();
            let host0 = hread(&res, "v", 4).expect("host reads vvar page 0");
            let host2 = hread(&res, "v", 0x2004).expect("host reads vvar page 2");
            assert_ne!(host0, 0x9999_9999);
            let unfaultable = |gpa| match mode {
                Mode::Native => vec![Exit::Efault],
                Mode::Emulated => vec![Exit::MmioRead { gpa, len: 4 }, Exit::Value(0)],
            };
            assert_eq!(
                exits(&res),
                vec![
                    v(host0),
                    vec![
                        Exit::MmioWrite {
                            gpa: D + 4,
                            len: 4,
                            data: 0x9999_9999
                        },
                        Exit::Done
                    ],
                    v(host0),
                    v(host2),
                    unfaultable(D + 0x1004),
                    unfaultable(D + 0x3004),
                ],
                "{mode:?} readonly={readonly}"
            );
            assert_eq!(
                hread(&res, "v", 0x1004),
                None,
                "host cannot read vvar page 1"
            );
        }
    }
}

/// [vvar_vclock]: page 0 reads the host's value, write is MMIO; page 1 EFAULTs natively.
#[test]
fn vvar_vclock_page1_efaults() {
    let t = "vvar_vclock_page1_efaults";
    if skip(t) {
        return;
    }
    if pages_of("[vvar_vclock]") != Some(2) {
        println!("SKIP {t}: no 2-page [vvar_vclock] on this kernel");
        return;
    }
    for mode in MODES {
        let p = one(
            "vclock",
            backing("v", K::VvarVclock, 2, false, None),
            false,
            vec![r(D), w(D, 0x9999_9999), r(D), r(D + 0x1000)],
            vec![],
            mode,
        );
        let res = isolated(&p).unwrap();
        let h = hread(&res, "v", 0).unwrap();
        let last = match mode {
            Mode::Native => vec![Exit::Efault],
            Mode::Emulated => vec![
                Exit::MmioRead {
                    gpa: D + 0x1000,
                    len: 4,
                },
                Exit::Value(0),
            ],
        };
        assert_eq!(
            exits(&res),
            vec![
                v(h),
                vec![
                    Exit::MmioWrite {
                        gpa: D,
                        len: 4,
                        data: 0x9999_9999
                    },
                    Exit::Done
                ],
                v(h),
                last
            ],
            "{mode:?}"
        );
    }
}

/// The seed's own path on real KVM: a guest *write* as the first access of an untouched
/// `[vvar]` page 0 finds no PTE, so `hva_to_pfn_remapped` calls `fixup_user_fault` with
/// `FAULT_FLAG_WRITE`, which the read-only vma refuses: EFAULT, nothing installed. A read then
/// faults the page in (host value), and the write becomes MMIO (present read-only PTE). In
/// emulated mode the emulator's `copy_to_user` fails and the write is an MMIO exit at once.
/// With the page already present (the process read the vDSO clock) the first write would be
/// MMIO: the probe refuses such a run (tests/resident.rs).
#[test]
fn vvar_untouched_page0_first_write_efaults_natively() {
    let t = "vvar_untouched_page0_first_write_efaults_natively";
    if skip(t) {
        return;
    }
    for mode in MODES {
        let p = one(
            "vvar-write-first",
            backing("v", K::Vvar, 1, false, None),
            false,
            vec![w(D + 4, 0x9999_9999), r(D + 4), w(D + 4, 0x9999_9999)],
            vec![],
            mode,
        );
        let res = isolated(&p).unwrap();
        let h = hread(&res, "v", 4).unwrap();
        let mmio = vec![
            Exit::MmioWrite {
                gpa: D + 4,
                len: 4,
                data: 0x9999_9999,
            },
            Exit::Done,
        ];
        let first = match mode {
            Mode::Native => vec![Exit::Efault],
            Mode::Emulated => mmio.clone(),
        };
        assert_eq!(exits(&res), vec![first, v(h), mmio], "{mode:?}");
    }
}

/// More pages than [vvar] has, a fill, or a host step on it: BadPlan, nothing run.
#[test]
fn vvar_misuse_is_a_bad_plan() {
    if skip("vvar_misuse_is_a_bad_plan") {
        return;
    }
    let p = one(
        "vvar-big",
        backing("v", K::Vvar, 64, false, None),
        false,
        vec![r(D)],
        vec![],
        Mode::Native,
    );
    assert!(matches!(probe::run(&p), Err(ProbeError::BadPlan(m)) if m.contains("[vvar]")));
    let p = one(
        "vvar-fill",
        backing("v", K::Vvar, 1, false, Some(1)),
        false,
        vec![r(D)],
        vec![],
        Mode::Native,
    );
    assert!(matches!(probe::run(&p), Err(ProbeError::BadPlan(_))));
    let p = one(
        "vvar-step",
        backing("v", K::Vvar, 1, false, None),
        false,
        vec![r(D)],
        vec![before(host_write("v", 0, 1))],
        Mode::Native,
    );
    assert!(matches!(probe::run(&p), Err(ProbeError::BadPlan(m)) if m.contains("never changes")));
}
