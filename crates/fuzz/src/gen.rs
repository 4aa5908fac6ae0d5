//! Scenarios generated from the format's grammar: every table and field, values mostly in
//! range and sometimes just outside it.

use std::fmt::Write;
use std::sync::LazyLock;
use world::SplitMix64;

/// Backing names, from the format itself.
static BACKINGS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    scenario::Backing::ALL
        .iter()
        .map(|(b, _, _)| b.name())
        .collect()
});

fn pick<'a>(rng: &mut SplitMix64, xs: &[&'a str]) -> &'a str {
    xs[rng.below(xs.len())]
}

/// Mostly `lo..=hi`, sometimes one past either end.
fn around(rng: &mut SplitMix64, lo: u64, hi: u64) -> u64 {
    let hi = hi.max(lo);
    match rng.below(12) {
        0 => hi + 1,
        1 => lo.saturating_sub(1),
        _ => lo + rng.below((hi - lo + 1) as usize) as u64,
    }
}

pub fn scenario(rng: &mut SplitMix64) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "name = \"gen\"\ndescription = \"generated\"");
    if rng.below(6) == 0 {
        let _ = writeln!(t, "allow_unsafe_mappings = true");
    }
    let nmaps = 1 + rng.below(3);
    let mut pages = Vec::new();
    for m in 0..nmaps {
        let backing = pick(rng, &BACKINGS);
        let p = around(rng, 1, 6);
        pages.push(p);
        let _ = writeln!(
            t,
            "\n[[mapping]]\nname = \"m{m}\"\nbacking = \"{backing}\"\npages = {p}"
        );
        if rng.below(3) == 0 {
            let _ = writeln!(t, "fill = {:#x}", rng.below(1 << 16) as u64 * 0x10001);
        }
        if rng.below(4) == 0 {
            let _ = writeln!(t, "touch = [{}]", around(rng, 0, p.saturating_sub(1)));
        }
        if rng.below(5) == 0 {
            let _ = writeln!(t, "prot = \"{}\"", pick(rng, &["r", "rw", "none"]));
        }
        if rng.below(6) == 0 {
            let _ = writeln!(t, "fault_retry = true");
        }
        // Issue 10: adjacent mappings, a slow userfaultfd handler.
        if m > 0 && rng.below(4) == 0 {
            let _ = writeln!(t, "follows = \"m{}\"", rng.below(m));
        }
        if rng.below(8) == 0 {
            let _ = writeln!(t, "handler_delay_ms = {}", around(rng, 0, 1000));
        }
    }
    let mut bases = Vec::new();
    for (m, &p) in pages.iter().enumerate() {
        if rng.below(8) == 0 {
            bases.push(0x10000 + 0x10000 * m as u64);
            continue;
        }
        // Spanning into following mappings sometimes; far gpas sometimes.
        let n = around(rng, 1, p + 2);
        let base = match rng.below(6) {
            0 => 0x1_0000_0000 + 0x10_0000 * m as u64,
            1 => 0xffff_ffff_0000 - 0x10_0000 * m as u64,
            _ => 0x10000 + 0x10000 * m as u64,
        };
        bases.push(base);
        let _ = writeln!(
            t,
            "\n[[memslot]]\nslot = {}\ngpa = {base:#x}\nmapping = \"m{m}\"\npages = {n}",
            m + 1,
        );
        if rng.below(5) == 0 {
            let _ = writeln!(t, "readonly = true");
        }
    }
    let nv = 1 + rng.below(3);
    let mut accesses = Vec::new();
    for _ in 0..nv {
        let n = 1 + rng.below(5);
        accesses.push(n);
        let ops: Vec<String> = (0..n)
            .map(|_| {
                let m = rng.below(nmaps);
                // Page-crossing offsets (0xffe) and unaligned ones too.
                let gpa = bases.get(m).copied().unwrap_or(0x10000)
                    + 0x1000 * around(rng, 0, 5)
                    + [0, 4, 8, 0xffe, 0xffd][rng.below(5)];
                let size = [1, 2, 4, 8, 3][rng.below(5)];
                let extra = match rng.below(6) {
                    0 => format!(", reruns = {}", around(rng, 0, 100)),
                    1 => format!(", mmio = {:#x}", rng.below(1 << 16)),
                    _ => String::new(),
                };
                if rng.below(2) == 0 {
                    format!("{{ read = {gpa:#x}, size = {size}{extra} }}")
                } else if rng.below(4) == 0 {
                    format!("{{ write = {gpa:#x}, value = \"0xffff_ffff_ffff_ff{:02x}\", size = {size}{extra} }}", rng.below(256))
                } else {
                    format!(
                        "{{ write = {gpa:#x}, value = {:#x}, size = {size}{extra} }}",
                        rng.below(256)
                    )
                }
            })
            .collect();
        let _ = writeln!(t, "\n[[vcpu]]\nprogram = [ {} ]", ops.join(", "));
    }
    for h in 0..rng.below(4) {
        let action = pick(rng, &scenario::ACTIONS);
        let m = rng.below(nmaps);
        let _ = writeln!(
            t,
            "\n[[host]]\nthread = \"t{}\"\naction = \"{action}\"",
            h % 2
        );
        if action != "delete-memslot" {
            let _ = writeln!(t, "mapping = \"m{m}\"");
        }
        if rng.below(2) == 0 {
            let v = rng.below(nv);
            let exit = if rng.below(3) == 0 {
                format!("#{}", around(rng, 1, 4))
            } else {
                String::new()
            };
            let _ = writeln!(
                t,
                "after = \"vcpu{v}:{}{exit}\"",
                around(rng, 0, accesses[v] as u64 - 1)
            );
        }
        match action {
            "write" => {
                let _ = writeln!(
                    t,
                    "offset = {}\nvalue = {}",
                    4 * around(rng, 0, 8),
                    rng.below(1000)
                );
            }
            "read" => {
                let _ = writeln!(t, "offset = {}", 4 * around(rng, 0, 8));
            }
            "mprotect" => {
                let _ = writeln!(
                    t,
                    "pages = 1\nprot = \"{}\"",
                    pick(rng, &["r", "rw", "none"])
                );
            }
            // Issue 11: memslots changing under the vCPUs (create, move, re-create, delete,
            // refused toggles), some racing on real KVM.
            "set-memslot" => {
                let _ = writeln!(
                    t,
                    "slot = {}\ngpa = {:#x}\npages = 1\nreadonly = {}\nrace = {}",
                    around(rng, 0, 3),
                    0x10000 * around(rng, 1, 4),
                    rng.below(3) == 0,
                    rng.below(2) == 0
                );
            }
            "delete-memslot" => {
                let _ = writeln!(t, "slot = {}", around(rng, 0, 3));
            }
            "madvise-dontneed" | "munmap" | "mmap-anon" => {
                let _ = writeln!(
                    t,
                    "offset = {}\npages = {}",
                    around(rng, 0, 2),
                    around(rng, 1, 2)
                );
            }
            _ => {}
        }
    }
    // Issue 10: stated values, for an access, the uffd messages, or a host read at the end.
    for _ in 0..rng.below(3) {
        let what = match rng.below(5) {
            0 => "access = \"uffd\"".to_string(),
            4 => format!("access = \"host:{}\"", around(rng, 0, 3)),
            1 => format!(
                "host = {{ mapping = \"m{}\", offset = {} }}",
                rng.below(nmaps),
                4 * around(rng, 0, 8)
            ),
            2 => format!("file = {{ mapping = \"m{}\" }}", rng.below(nmaps)),
            _ => {
                let v = rng.below(nv);
                format!(
                    "access = \"vcpu{v}:{}\"",
                    around(rng, 0, accesses[v] as u64 - 1)
                )
            }
        };
        let is = pick(
            rng,
            &[
                "\"0x0\"",
                "\"EFAULT\"",
                "[\"0x1\", \"kernel data\"]",
                "\"MMIO read @0x10000/4\"",
                "\"EINVAL\"",
            ],
        );
        let _ = writeln!(t, "\n[[seen]]\n{what}\nis = {is}");
    }
    if rng.below(6) == 0 {
        let _ = writeln!(
            t,
            "\n[[nested_map]]\ngpa = {:#x}\nrounds = {}",
            0x10000 + 0x1000 * rng.below(3) as u64,
            around(rng, 1, 3)
        );
    }
    if rng.below(3) == 0 {
        let _ = writeln!(
            t,
            "\n[expect]\n\"{}\" = {{ violations = [\"{}\"], outcome = \"ok\" }}",
            pick(rng, &scenario::POLICIES),
            pick(rng, &scenario::ORACLES)
        );
    }
    if rng.below(8) == 0 {
        let _ = writeln!(
            t,
            "\n[check]\npreemptions = {}\nwhy = \"generated\"",
            around(rng, 0, 16)
        );
    }
    t
}
