//! The campaign recipes in `deploy/`: the Kubernetes manifests validate against the API's
//! schemas (no cluster needed), and say what `kvmmu check` needs of them; the Slurm scripts
//! parse. (`.ci/slurm-test.sh` runs the Slurm ones on a real one-node cluster.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(p)
}

#[test]
fn kubernetes_manifests_validate_against_the_job_schema() {
    let files = [
        deploy("kubernetes/campaign.yaml"),
        deploy("kubernetes/merge.yaml"),
    ];
    // kubernetes-validate (PyPI) carries the Kubernetes API's JSON schemas.
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .args(&files)
        .output();
    let missing = match &out {
        Err(e) => Some(e.to_string()),
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named") => {
            Some("no module kubernetes_validate".to_string())
        }
        Ok(_) => None,
    };
    if let Some(why) = missing {
        assert!(
            std::env::var_os("KVMMU_REQUIRE_K8S_VALIDATE").is_none(),
            "kubernetes-validate is required here: {why}"
        );
        println!("SKIP kubernetes schema validation: {why} (pip install kubernetes-validate)");
        return;
    }
    let out = out.expect("ran");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("passed for resource job/kvmmu-check"),
        "{text}"
    );
    assert!(
        text.contains("passed for resource job/kvmmu-merge"),
        "{text}"
    );
}

#[test]
fn the_indexed_job_gives_kvmmu_its_shard() {
    let m = std::fs::read_to_string(deploy("kubernetes/campaign.yaml")).unwrap();
    assert!(m.contains("completionMode: Indexed"));
    let completions = m
        .lines()
        .find_map(|l| l.trim().strip_prefix("completions: "))
        .expect("completions");
    // --shards must be the Job's completions: kvmmu reads its index from the environment.
    let args: Vec<&str> = m.lines().map(str::trim).collect();
    let i = args
        .iter()
        .position(|l| *l == "- --shards")
        .expect("--shards");
    assert_eq!(args[i + 1], format!("- \"{completions}\""));
    assert!(m.contains("$(JOB_COMPLETION_INDEX).json"));
}

#[test]
fn slurm_scripts_parse() {
    for f in ["slurm/check-array.sbatch", "slurm/submit.sh"] {
        let o = Command::new("bash")
            .arg("-n")
            .arg(deploy(f))
            .output()
            .expect("bash");
        assert!(
            o.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
