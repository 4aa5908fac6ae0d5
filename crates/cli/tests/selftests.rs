//! Issue 11 §4: assertions of the kernel's KVM selftests, ported as scenarios
//! (`scenarios/selftests/`, each naming its source file, function and assertion, and the mode
//! it applies to here). Each assertion is the file's `[[seen]]` values: the model must meet
//! them under every interleaving (`kvmmu check`), and real KVM in native mode (`kvmmu diff`);
//! in emulated mode (CPL0, what the x86 selftests run here) where the file says it applies.

use serde_json::Value;
use std::process::{Command, Output};

fn kvmmu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvmmu"))
        .args(args)
        .output()
        .expect("run kvmmu")
}

/// (built-in name, whether the assertion holds in emulated mode on this host).
const PORTED: [(&str, bool); 7] = [
    ("selftest-mmu-stress-mprotect", false),
    ("selftest-demand-paging", true),
    ("selftest-aliased-slots", true),
    ("selftest-page-fault-data", true),
    ("selftest-set-memory-region-delete", true),
    ("selftest-set-memory-region-move", true),
    ("selftest-memslot-modification-stress", true),
];

#[test]
fn every_ported_file_names_its_source_and_mode() {
    let files: Vec<_> = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scenarios/selftests"
    ))
    .unwrap()
    .map(|e| e.unwrap().path())
    .collect();
    assert_eq!(files.len(), PORTED.len(), "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.contains("# Source: tools/testing/selftests/kvm/"),
            "{f:?}"
        );
        assert!(text.contains("# Mode:"), "{f:?}");
        assert!(
            text.contains("[[seen]]"),
            "{f:?}: the assertion is its [[seen]] values"
        );
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|n| n.strip_suffix('"'))
            .unwrap();
        assert!(
            PORTED.iter().any(|(n, _)| *n == name),
            "{name} is not listed here"
        );
    }
}

#[test]
fn the_model_meets_every_ported_assertion_under_every_interleaving() {
    let mut args = vec!["check", "-q", "--no-replay-files"];
    args.extend(PORTED.iter().map(|(n, _)| *n));
    let o = kvmmu(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn real_kvm_meets_them_in_the_modes_they_apply_to() {
    if probe::skip_without_kvm("real_kvm_meets_them_in_the_modes_they_apply_to") {
        return;
    }
    for (name, emulated) in PORTED {
        let o = kvmmu(&["diff", "--format", "json", name]);
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["agree"], true, "{name} native: {r}");
        // The emulated run against the native prediction and the file's [[seen]]: whether the
        // selftest's assertion holds in emulated mode.
        let o = kvmmu(&[
            "diff",
            "--mode",
            "emulated",
            "--predict",
            "native",
            "--format",
            "json",
            name,
        ]);
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            r["agree"], emulated,
            "{name} emulated vs native assertion: {r}"
        );
        // And the model's own emulated prediction matches real KVM in emulated mode.
        let o = kvmmu(&["diff", "--mode", "emulated", "--format", "json", name]);
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["agree"], true, "{name} emulated: {r}");
    }
}
