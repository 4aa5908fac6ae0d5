//! Campaigns through the binary: threads, shards from the schedulers' environments, merge.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Cells that split into tasks (a low split threshold) and find violations.
const CELLS: [&str; 3] = [
    "vgpu-reset-race",
    "nested-pfnmap",
    "invalidate-during-fault",
];

fn kvmmu(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kvmmu"));
    for v in [
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_COUNT",
        "JOB_COMPLETION_INDEX",
    ] {
        c.env_remove(v);
    }
    c.args(args).envs(env.iter().map(|(k, v)| (k, v)));
    c.output().expect("run kvmmu")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvmmu-campaign-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `kvmmu check` of the cells with `extra` arguments.
fn check(extra: &[&str], env: &[(&str, String)]) -> Output {
    let mut args = vec!["check", "--split-above", "4", "--no-replay-files", "-q"];
    args.extend_from_slice(&CELLS);
    args.extend_from_slice(extra);
    kvmmu(&args, env)
}

/// What one process and a merge must agree on, per cell.
fn verdicts(json: &str) -> Vec<String> {
    json.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            format!(
                "{} {} {} {} {} {} {}",
                v["scenario"],
                v["policy"],
                v["verdict"],
                v["violations"],
                v["executions"],
                v["complete"],
                v["outcomes"]
            )
        })
        .collect()
}

fn single() -> Vec<String> {
    let o = check(&["--format", "json", "--jobs", "1"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    verdicts(&String::from_utf8_lossy(&o.stdout))
}

fn merged(dir: &Path) -> Vec<String> {
    let o = kvmmu(
        &[
            "merge",
            dir.to_str().unwrap(),
            "--format",
            "json",
            "--no-replay-files",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    verdicts(&String::from_utf8_lossy(&o.stdout))
}

#[test]
fn two_threads_print_what_one_prints() {
    let one = check(&["--format", "json", "--jobs", "1"], &[]);
    let two = check(&["--format", "json", "--jobs", "2"], &[]);
    // Everything but the timings, counterexamples included.
    let strip = |o: &Output| -> Vec<Value> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v["elapsed_ms"] = Value::Null;
                v["executions_per_second"] = Value::Null;
                v
            })
            .collect()
    };
    assert_eq!(strip(&one), strip(&two));
}

#[test]
fn kubernetes_indexed_job_shards_merge_to_one_process() {
    let dir = tmpdir("k8s");
    for k in 0..3 {
        let out = dir.join(format!("shard-{k}.json"));
        let o = check(
            &["--shards", "3", "--out", out.to_str().unwrap()],
            &[("JOB_COMPLETION_INDEX", k.to_string())],
        );
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        let f: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(
            (f["shard"].as_u64(), f["shards"].as_u64()),
            (Some(k), Some(3))
        );
    }
    assert_eq!(merged(&dir), single());
    // The index without the count, and a count the index does not fit, are refused.
    let o = check(&[], &[("JOB_COMPLETION_INDEX", "1".into())]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("--shards"), "{}", err(&o));
    let o = check(&["--shards", "2"], &[("JOB_COMPLETION_INDEX", "2".into())]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn slurm_array_shards_count_from_the_array_minimum() {
    let dir = tmpdir("slurm");
    for id in 4..8 {
        let o = check(
            &[
                "--out",
                dir.join(format!("task-{id}.json")).to_str().unwrap(),
            ],
            &[
                ("SLURM_ARRAY_TASK_ID", id.to_string()),
                ("SLURM_ARRAY_TASK_MIN", "4".into()),
                ("SLURM_ARRAY_TASK_COUNT", "4".into()),
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    }
    let f: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("task-6.json")).unwrap()).unwrap();
    assert_eq!(
        (f["shard"].as_u64(), f["shards"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(merged(&dir), single());
}

#[test]
fn merge_names_a_missing_duplicate_or_foreign_shard() {
    let dir = tmpdir("bad");
    let shard = |k: usize| {
        let p = dir.join(format!("s{k}.json"));
        let o = check(
            &["--shard", &format!("{k}/3"), "--out", p.to_str().unwrap()],
            &[],
        );
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        p
    };
    let (s0, s1, s2) = (shard(0), shard(1), shard(2));
    let merge = |files: &[&Path]| {
        let mut args = vec!["merge", "--no-replay-files"];
        args.extend(files.iter().map(|p| p.to_str().unwrap()));
        kvmmu(&args, &[])
    };
    let o = merge(&[&s0, &s2]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("missing shard 1 of 3"), "{}", err(&o));
    let o = merge(&[&s0, &s1, &s1, &s2]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("shard 1 of 3 appears twice"),
        "{}",
        err(&o)
    );
    // Another version, and another scenario text.
    let edit = |p: &Path, f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        f(&mut v);
        let q = p.with_extension("edited.json");
        std::fs::write(&q, v.to_string()).unwrap();
        q
    };
    let old = edit(&s1, &|v| v["kvmmu"] = Value::String("0.0.1".into()));
    let o = merge(&[&s0, &old, &s2]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("kvmmu 0.0.1"), "{}", err(&o));
    let other = edit(&s1, &|v| {
        let c = v["cells"][0]["content"].as_str().unwrap().to_string() + "\n# edited\n";
        v["cells"][0]["hash"] = Value::String(format!("fnv64:{:016x}", world::fnv64(c.as_bytes())));
        v["cells"][0]["content"] = Value::String(c);
    });
    let o = merge(&[&s0, &other, &s2]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("differs between"), "{}", err(&o));
    let o = merge(&[&s0, &s1, &s2]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
}
