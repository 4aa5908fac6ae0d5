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
