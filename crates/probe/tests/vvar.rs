//! realkvm.md §3: memslots over this process's own [vvar] / [vvar_vclock].
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
            let res = probe::run(&p).unwrap();
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
        let res = probe::run(&p).unwrap();
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
