//! `kvmmu diff` and `kvmmu probe` end to end, through the built binary.
//!
//! The acceptance test: on every built-in scenario that real KVM can run, what this
//! machine's `/dev/kvm` did (native CPL3 guest, the hva_to_pfn path; several runs, each in a
//! fresh process) is one of the whole observations the model (linux-6.13, every
//! interleaving) says can happen. A model change that makes any of them disallowed fails
//! here. Without a usable `/dev/kvm` the KVM tests print `SKIP <test>: <reason>` and
//! pass (they fail instead when `KVMMU_REQUIRE_KVM` is set).

use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Output};

fn kvmmu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvmmu"))
        .args(args)
        .output()
        .expect("run kvmmu")
}

fn json_lines(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn skip_without_kvm(test: &str) -> bool {
    probe::skip_without_kvm(test)
}

#[test]
fn builtin_realizable_scenarios_agree_with_real_kvm() {
    if skip_without_kvm("builtin_realizable_scenarios_agree_with_real_kvm") {
        return;
    }
    let out = kvmmu(&["diff", "--format", "json"]);
    let results = json_lines(&out);
    assert_eq!(
        results.len(),
        scenario::BUILTIN.len(),
        "one JSON object per built-in scenario"
    );
    let mut agreeing = Vec::new();
    let mut disagreeing = Vec::new();
    for r in &results {
        let name = r["scenario"].as_str().unwrap().to_string();
        assert_eq!(r["mode"], "native");
        if r["skipped"].is_string() {
            continue;
        }
        assert!(r["error"].is_null(), "{name}: {}", r["error"]);
        assert!(
            r["mmu"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: no mmu"
        );
        if r["agree"] == true {
            agreeing.push(name);
        } else {
            let bad: Vec<String> = r["accesses"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["agree"] == false)
                .map(|a| format!("{}: model {} / kvm {}", a["access"], a["model"], a["kvm"]))
                .collect();
            disagreeing.push(format!("{name}: {} (real: {})", bad.join("; "), r["real"]));
        }
    }
    assert!(
        disagreeing.is_empty(),
        "model and real KVM disagree:\n{}",
        disagreeing.join("\n")
    );
    assert!(out.status.success(), "exit status {:?}", out.status);
    assert!(
        agreeing.len() >= 12,
        "only {} scenarios compared: {agreeing:?}",
        agreeing.len()
    );
    // Every realizable backing is exercised by an agreeing scenario.
    let mut covered = BTreeSet::new();
    for n in &agreeing {
        let sc = scenario::builtin(n).unwrap().unwrap();
        covered.extend(sc.mappings.iter().map(|m| m.backing.name()));
    }
    for (b, name, _) in scenario::Backing::ALL {
        if b.realizable() {
            assert!(
                covered.contains(name),
                "no agreeing built-in scenario uses backing {name}"
            );
        }
    }
}

#[test]
fn userfault_traps_each_first_access_once_on_both_sides() {
    if skip_without_kvm("userfault_traps_each_first_access_once_on_both_sides") {
        return;
    }
    let out = kvmmu(&["diff", "--format", "json", "userfault"]);
    let r = &json_lines(&out)[0];
    let uffd = r["accesses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["access"] == "uffd")
        .unwrap_or_else(|| panic!("no uffd row: {r}"));
    let want = serde_json::json!(["ram:0:r ram:1:r ram:2:w ram:0:r"]);
    assert_eq!(uffd["model"], want);
    assert_eq!(uffd["kvm"], want);
    assert_eq!(r["agree"], true);
}

/// Two vCPUs on one missing page with a slow handler: the model allows one message or two
/// (the second fault may be queued before the handler reads the first); every real run must
/// be one of them, and the report says how many of the model's observations were seen.
#[test]
fn a_race_is_judged_against_the_models_set() {
    if skip_without_kvm("a_race_is_judged_against_the_models_set") {
        return;
    }
    let out = kvmmu(&[
        "diff",
        "--format",
        "json",
        "--repeat",
        "4",
        "uffd-two-vcpus",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r = &json_lines(&out)[0];
    assert_eq!(r["agree"], true, "{r}");
    assert_eq!(r["runs"], 4);
    assert_eq!(r["allowed_runs"], 4);
    assert_eq!(r["model"]["observations"], 2, "{r}");
    assert_eq!(r["model"]["complete"], true, "{r}");
    let seen = r["coverage"]["seen"].as_u64().unwrap();
    assert!((1..=2).contains(&seen), "{r}");
}

/// Compared with an era real KVM does not run, the model is refuted: exit 1, and the
/// access that differs is named.
#[test]
fn a_real_run_the_model_does_not_allow_fails() {
    if skip_without_kvm("a_real_run_the_model_does_not_allow_fails") {
        return;
    }
    let out = kvmmu(&["diff", "--policy", "linux-4.7", "vvar-read"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("NOT ALLOWED by the model"), "{text}");
    assert!(text.contains("vcpu0 read32 0x10004  0x0"), "{text}");
    let out = kvmmu(&["diff", "--policy", "linux-9.9", "vvar-read"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Issue 11 §2: in emulated mode the model predicts KVM's instruction emulator, and every
/// realizable built-in agrees; compared with the native prediction, real emulated runs are
/// refuted where the paths differ (EFAULT natively, MMIO in the emulator), exit 1.
#[test]
fn emulated_mode_is_predicted_and_a_wrong_prediction_fails() {
    if skip_without_kvm("emulated_mode_is_predicted_and_a_wrong_prediction_fails") {
        return;
    }
    let out = kvmmu(&["diff", "--mode", "emulated", "--format", "json"]);
    let results = json_lines(&out);
    let bad: Vec<&Value> = results
        .iter()
        .filter(|r| r["skipped"].is_null() && r["agree"] != true)
        .collect();
    assert!(bad.is_empty(), "emulated mode disagrees: {bad:?}");
    assert!(out.status.success());
    assert!(results.iter().all(|r| r["mode"] == "emulated"));
    assert!(results
        .iter()
        .filter(|r| r["skipped"].is_null())
        .all(|r| r["prediction"] == "emulated"));
    let out = kvmmu(&[
        "diff",
        "--mode",
        "emulated",
        "--predict",
        "native",
        "vvar-sigbus",
        "prot-none",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    // The emulator turns the unfaultable [vvar] page into an MMIO read, not EFAULT.
    assert!(text.contains("MMIO read @0x11000/4"), "{text}");
    assert!(text.contains("NOT ALLOWED by the model"), "{text}");
}

#[test]
fn probe_prints_mode_mmu_and_outcomes() {
    if skip_without_kvm("probe_prints_mode_mmu_and_outcomes") {
        return;
    }
    let out = kvmmu(&["probe", "vvar-write", "hole-refill"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("vvar-write  [native; mmu: "), "{text}");
    assert!(
        text.contains("write32 0x10004 = 0x99999999: MMIO write 0x99999999"),
        "{text}"
    );
    assert!(
        text.contains("read32 0x10000: EFAULT -> 0x55555555"),
        "{text}"
    );
}

#[test]
fn unknown_scenario_is_exit_2_with_one_line() {
    for cmd in ["probe", "diff"] {
        let out = kvmmu(&[cmd, "no-such-scenario"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{cmd}: {err}");
        assert!(err.contains("no-such-scenario"), "{cmd}: {err}");
        assert!(out.stdout.is_empty(), "{cmd}");
    }
}

#[test]
fn model_only_scenarios_are_skipped_with_a_reason() {
    // Needs no KVM: nothing realizable is asked for.
    let out = kvmmu(&["probe", "vgpu-first-touch", "ttm-evict", "nested-pfnmap"]);
    assert!(out.status.success(), "{:?}", out);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (l, n) in lines
        .iter()
        .zip(["vgpu-first-touch", "ttm-evict", "nested-pfnmap"])
    {
        let reason = l
            .strip_prefix(&format!("{n}: skip: "))
            .unwrap_or_else(|| panic!("{l}"));
        assert!(reason.contains("model-only"), "{l}");
    }
    let out = kvmmu(&["diff", "--format", "json", "usbfs-tail"]);
    assert!(out.status.success());
    let r = &json_lines(&out)[0];
    assert_eq!(r["scenario"], "usbfs-tail");
    assert!(
        r["skipped"]
            .as_str()
            .is_some_and(|s| s.contains("model-only")),
        "{r}"
    );
    assert_eq!(r["accesses"], serde_json::json!([]));
}

#[test]
fn a_scenario_file_with_a_model_only_action_is_skipped() {
    let dir = std::env::temp_dir().join(format!("kvmmu-diff-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("reset.toml");
    std::fs::write(
        &f,
        r#"
name = "reset"
[[mapping]]
name = "bar"
backing = "vfio-bar"
pages = 1
[[memslot]]
slot = 1
gpa = 0x10000
mapping = "bar"
pages = 1
[[vcpu]]
program = [{ read = 0x10000 }]
[[host]]
action = "device-reset"
mapping = "bar"
after = "vcpu0:0"
"#,
    )
    .unwrap();
    let out = kvmmu(&["probe", f.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("reset: skip: "), "{text}");
}
