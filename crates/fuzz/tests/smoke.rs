//! The fuzzer runs, reads its seeds, and finds nothing in a short deterministic run.

use std::process::Command;

#[test]
fn a_short_campaign_finds_nothing() {
    let dir = std::env::temp_dir().join(format!("kvmmu-fuzz-smoke-{}", std::process::id()));
    let o = Command::new(env!("CARGO_BIN_EXE_kvmmu-fuzz"))
        .args([
            "--iterations",
            "3000",
            "--jobs",
            "2",
            "--seed",
            "7",
            "--crashes",
        ])
        .arg(&dir)
        .output()
        .expect("runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("3000 inputs"), "{out}");
    assert!(out.contains(" 0 findings"), "{out}");
    // Both halves are exercised: inputs the validation refuses, and inputs the model runs.
    let n = |what: &str| -> u64 {
        out.split(&format!(" {what}"))
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    };
    assert!(n("rejected by validation") > 100, "{out}");
    assert!(n("ran the model") > 100, "{out}");
}
