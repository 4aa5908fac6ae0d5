//! `kvmmu diff` and `kvmmu probe` end to end, through the built binary.
//!
//! The acceptance test: every built-in scenario that real KVM can run gives the same
//! outcomes, access by access, on the model (linux-6.13) and on this machine's `/dev/kvm`
//! (native CPL3 guest, the hva_to_pfn path). A model change that makes any of them disagree
//! fails here. Without a usable `/dev/kvm` the KVM tests print `SKIP <test>: <reason>` and
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
                .map(|a| {
                    format!(
                        "vcpu{} {}: model {} / kvm {}",
                        a["vcpu"], a["op"], a["model"], a["kvm"]
                    )
                })
                .collect();
            disagreeing.push(format!("{name}: {} uffd {}", bad.join("; "), r["uffd"]));
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
    let ev = |side: &str| -> Vec<(u64, bool)> {
        r["uffd"][side]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["page"].as_u64().unwrap(), e["write"].as_bool().unwrap()))
            .collect()
    };
    let want = vec![(0, false), (1, false), (2, true), (0, false)];
    assert_eq!(ev("model"), want);
    assert_eq!(ev("kvm"), want);
    assert_eq!(r["agree"], true);
}

#[test]
fn emulated_mode_is_labelled_and_never_fails() {
    if skip_without_kvm("emulated_mode_is_labelled_and_never_fails") {
        return;
    }
    let out = kvmmu(&["diff", "--mode", "emulated", "vvar-sigbus", "prot-none"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("emulated: model predicts the native path"),
        "{text}"
    );
    // The emulator turns the unfaultable [vvar] page into an MMIO read, not EFAULT.
    assert!(text.contains("MMIO read"), "{text}");
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
