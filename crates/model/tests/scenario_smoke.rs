use model::harness::{run_cell, RunOptions};
use model::kvm::PolicyId;

#[test]
fn smoke() {
    for f in ["vgpu-first-touch", "vvar-write", "anon"] {
        let text = std::fs::read_to_string(format!("../../scenarios/{f}.toml")).unwrap();
        let sc = scenario::parse(f, &text).unwrap();
        for p in PolicyId::ALL {
            let c = run_cell(&sc, p, &RunOptions { schedules: 4, tracing: true, ..Default::default() }).unwrap();
            println!("{f} {p}: {} {:?} {:?}", c.cell(), c.outcomes, c.violations.iter().map(|v| v.0.to_string()).collect::<Vec<_>>());
            if f == "vvar-write" && p == PolicyId::Linux4_8 { println!("{}", c.witness.trace); }
        }
    }
}
