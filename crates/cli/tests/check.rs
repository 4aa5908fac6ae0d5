//! `kvmmu check` and `kvmmu replay` end to end, through the built binary.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn kvmmu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvmmu"))
        .args(args)
        .output()
        .expect("run kvmmu")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvmmu-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `kvmmu check vgpu-reset-race --policy linux-4.8` with its replay files in `dir`.
fn check_reset_race(dir: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "check",
        "vgpu-reset-race",
        "--policy",
        "linux-4.8",
        "--replay-dir",
        dir.to_str().unwrap(),
        "-q",
    ];
    args.extend_from_slice(extra);
    let o = kvmmu(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    o
}

#[test]
fn json_cell_carries_the_verdict_and_a_replayable_counterexample() {
    let dir = tmpdir("json");
    let o = check_reset_race(&dir, &["--format", "json"]);
    let v: Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(v["scenario"], "vgpu-reset-race");
    assert_eq!(v["policy"], "linux-4.8");
    assert_eq!(v["verdict"], "violation");
    assert_eq!(v["violations"], serde_json::json!(["refcount-sane"]));
    assert_eq!(v["strategy"], "dpor");
    assert_eq!(v["complete"], true);
    assert!(v["executions"].as_u64().unwrap() > 1);
    let ce = &v["counterexample"];
    assert_eq!(ce["oracle"], "refcount-sane");
    assert!(ce["preemptions"].as_u64().unwrap() <= 2);
    assert!(!ce["schedule"].as_array().unwrap().is_empty());
    assert!(!ce["trace"].as_array().unwrap().is_empty());
    let file = ce["replay"].as_str().expect("replay file").to_string();
    // The replay reproduces it bit for bit, in columns, the failing step marked.
    let r = kvmmu(&["replay", &file]);
    assert_eq!(r.status.code(), Some(0), "{}{}", stdout(&r), stderr(&r));
    let out = stdout(&r);
    assert!(out.contains("reproduced bit for bit"), "{out}");
    assert!(out.contains("<== refcount-sane"), "{out}");
    assert!(out.contains("kvm_get_pfn"), "{out}");
}

#[test]
fn replay_refuses_an_edited_scenario_and_says_why_a_schedule_does_not_reproduce() {
    let dir = tmpdir("edit");
    check_reset_race(&dir, &[]);
    let file = dir.join("vgpu-reset-race--linux-4.8--refcount-sane.json");
    let text = std::fs::read_to_string(&file).expect("replay file written");
    let mut v: Value = serde_json::from_str(&text).unwrap();

    // The scenario text edited after the fact: refused before anything runs.
    let mut edited = v.clone();
    edited["content"] = Value::String(format!("{}\n# edited\n", v["content"].as_str().unwrap()));
    let p = dir.join("edited.json");
    std::fs::write(&p, edited.to_string()).unwrap();
    let r = kvmmu(&["replay", p.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        stderr(&r).contains("does not match its hash"),
        "{}",
        stderr(&r)
    );

    // A schedule cut before the failing step: it runs, and the oracle holds.
    let sched = v["schedule"].as_array().unwrap().clone();
    v["schedule"] = Value::Array(sched[..sched.len() / 2].to_vec());
    let p = dir.join("short.json");
    std::fs::write(&p, v.to_string()).unwrap();
    let r = kvmmu(&["replay", p.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    assert!(stdout(&r).contains("NOT reproduced"), "{}", stdout(&r));

    // Not a replay file at all: the position of the problem.
    let p = dir.join("junk.json");
    std::fs::write(&p, "{\"format\": 3").unwrap();
    let r = kvmmu(&["replay", p.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2));
    assert!(stderr(&r).contains("junk.json:1:"), "{}", stderr(&r));
}

#[test]
fn clean_cells_are_proved_and_exit_status_follows_the_expectations() {
    let o = kvmmu(&[
        "check",
        "anon",
        "--policy",
        "linux-6.13",
        "--no-replay-files",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("1 proved clean"), "{}", stdout(&o));

    // A scenario file that expects the wrong thing: exit 1, and the cell says so.
    let dir = tmpdir("expect");
    let orig = scenario::BUILTIN
        .iter()
        .find(|(n, _)| *n == "vgpu-reset-race")
        .unwrap()
        .1;
    let text = orig.replace(
        "\"linux-4.8\" = { violations = [\"refcount-sane\"],",
        "\"linux-4.8\" = { violations = [],",
    );
    assert_ne!(text, orig, "the expectation to break is in the file");
    let f = dir.join("wrong.toml");
    std::fs::write(&f, text).unwrap();
    let o = kvmmu(&[
        "check",
        f.to_str().unwrap(),
        "--policy",
        "linux-4.8",
        "--no-replay-files",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("differs from the scenario's [expect]"));

    // Bad input is exit 2 with a message, never a panic.
    for args in [
        vec!["check", "--strategy", "bfs"],
        vec!["check", "--policy", "linux-9.9"],
        vec!["check", "--budget", "-1"],
        vec!["check", "no-such-scenario"],
    ] {
        let o = kvmmu(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}");
    }
}

#[test]
fn mutants_are_listed_selectable_and_caught() {
    let l = stdout(&kvmmu(&["list"]));
    for m in [
        "mutant:no-locked-recheck",
        "mutant:late-seq-snapshot",
        "mutant:ignore-unlocked",
        "mutant:no-slot-flush",
        "mutant:no-srcu-sync",
    ] {
        assert!(l.contains(m), "{m} not listed");
    }
    let o = kvmmu(&[
        "check",
        "vgpu-reset-race",
        "--policy",
        "mutant:no-locked-recheck",
        "--format",
        "json",
        "--no-replay-files",
        "-q",
    ]);
    let v: Value = serde_json::from_str(stdout(&o).trim()).expect("JSON");
    assert_eq!(v["verdict"], "violation", "{v}");
    assert!(v["counterexample"]["preemptions"].as_u64().unwrap() <= 2);
    // Absent from the default matrix.
    let o = kvmmu(&["run", "anon", "--format", "json"]);
    assert!(!stdout(&o).contains("mutant:"));
}

#[test]
fn estimate_dfs_puts_a_number_on_the_reduction() {
    let o = kvmmu(&[
        "check",
        "vfio-bar",
        "nested-pfnmap",
        "--policy",
        "linux-6.13",
        "--estimate-dfs",
        "2000",
        "--format",
        "json",
        "--no-replay-files",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let cells: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    // One schedule only: the estimate is exact.
    assert_eq!(cells[0]["dfs_estimate"]["mean"], 1.0);
    // About 100,000 dfs executions (dfs counts 100,947) against dpor's two.
    let e = cells[1]["dfs_estimate"]["mean"].as_f64().unwrap();
    assert!((50_000.0..200_000.0).contains(&e), "{e}");
    assert!(cells[1]["dfs_estimate"]["reduction"].as_f64().unwrap() > 10_000.0);
    let o = kvmmu(&["check", "anon", "--estimate-dfs", "0"]);
    assert_eq!(o.status.code(), Some(2));
}
