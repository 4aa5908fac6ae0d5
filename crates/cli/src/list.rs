//! `kvmmu list`.

use model::harness::Oracle;
use model::kvm::PolicyId;

pub fn list() {
    let mut o = String::new();
    outln!(o, "scenarios:");
    let w = scenario::BUILTIN
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0);
    for (n, _) in scenario::BUILTIN {
        let d = match scenario::builtin(n).expect("listed") {
            Ok(s) => s.description,
            Err(e) => format!("(does not parse: {e})"),
        };
        outln!(o, "  {n:<w$}  {d}");
    }
    outln!(o, "\npolicies:");
    for p in PolicyId::ALL {
        outln!(o, "  {:<10}  {}", p.name(), p.summary());
    }
    outln!(
        o,
        "\nmutants (select with --policy NAME or --policy mutants; not in the default matrix):"
    );
    for p in PolicyId::MUTANTS {
        outln!(o, "  {:<25}  {}", p.name(), p.summary());
    }
    outln!(o, "\ncheck strategies:");
    for (s, d) in [
        (
            "dpor",
            "every interleaving up to reordering of independent steps (source sets + sleep sets)",
        ),
        ("dfs", "every interleaving, no reduction (the baseline)"),
        ("pct", "probabilistic concurrency testing, seeded"),
        ("random", "uniformly random schedules, seeded"),
    ] {
        outln!(o, "  {s:<8}  {d}");
    }
    outln!(o, "\noracles:");
    for x in Oracle::ALL {
        outln!(o, "  {:<20}  {}", x.name(), x.summary());
    }
    outln!(o, "\nbackings:");
    for (_, n, d) in scenario::Backing::ALL {
        outln!(o, "  {n:<16}  {d}");
    }
    crate::emit(&o);
}
