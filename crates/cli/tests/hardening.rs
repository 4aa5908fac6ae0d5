//! Bad input and hostile environments: an error that says where, never a panic.

use std::process::{Command, Output};

fn kvmmu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvmmu"))
        .args(args)
        .output()
        .expect("run kvmmu")
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tmp(name: &str, bytes: &[u8]) -> String {
    let p = std::env::temp_dir().join(format!("kvmmu-hard-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

fn no_panic(o: &Output) {
    assert!(!err(o).contains("panicked"), "{}", err(o));
    assert_ne!(o.status.code(), Some(101), "{}", err(o));
}

#[test]
fn a_scenario_name_past_the_formatter_limit_prints() {
    let anon = scenario::BUILTIN
        .iter()
        .find(|(n, _)| *n == "anon")
        .unwrap()
        .1;
    let long = "n".repeat(70_000);
    let text = anon.replacen("name = \"anon\"", &format!("name = \"{long}\""), 1);
    let f = tmp("long.toml", text.as_bytes());
    for args in [
        vec!["run", &f, "--schedules", "2"],
        vec!["check", &f, "--no-replay-files", "-q"],
        vec!["diff", &f],
    ] {
        let o = kvmmu(&args);
        no_panic(&o);
        if args[0] != "diff" {
            assert_eq!(o.status.code(), Some(0), "{args:?}: {}", err(&o));
            assert!(String::from_utf8_lossy(&o.stdout).contains(&long));
        }
    }
}

#[test]
fn output_that_cannot_be_written_fails() {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
    let Ok(full) = full else {
        println!("SKIP /dev/full test: no /dev/full");
        return;
    };
    let o = Command::new(env!("CARGO_BIN_EXE_kvmmu"))
        .arg("list")
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("cannot write the output"), "{}", err(&o));
}

#[test]
fn an_endless_file_is_refused_by_size() {
    let o = kvmmu(&["run", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("larger than 1048576 bytes"), "{}", err(&o));
}

#[test]
fn invalid_utf8_is_placed() {
    let f = tmp("bad.toml", b"name = \"x\"\ndescription = \"ab\xffc\"\n");
    let o = kvmmu(&["run", &f]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("not UTF-8"), "{}", err(&o));
    assert!(err(&o).contains("bad.toml:2:18"), "{}", err(&o));
}

/// A scenario over one anonymous page with `program` as vCPU 0's accesses.
fn one_page(name: &str, program: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\n[[mapping]]\nname = \"ram\"\nbacking = \"anon-private\"\npages = 1\n{extra}\
         [[memslot]]\nslot = 1\ngpa = 0x10000\nmapping = \"ram\"\npages = 1\n\
         [[vcpu]]\nprogram = [ {program} ]\n"
    )
}

#[test]
fn a_long_run_that_finishes_is_no_livelock() {
    let reads = vec!["{ read = 0x10000 }"; 20_000].join(", ");
    let f = tmp("long.toml", one_page("long", &reads, "").as_bytes());
    let o = kvmmu(&["run", &f, "--policy", "linux-6.13", "--schedules", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("ok") && !out.contains("DEADLOCK"), "{out}");
}

#[test]
fn the_vmm_may_touch_its_own_userfaultfd_pages_before_the_guest_runs() {
    let text = one_page("uffd-touch", "{ read = 0x10000 }", "")
        .replace("anon-private", "userfault")
        .replace(
            "pages = 1\n[[memslot]]",
            "pages = 1\ntouch = [0, 0]\n[[memslot]]",
        );
    let f = tmp("uffd-touch.toml", text.as_bytes());
    let o = kvmmu(&["run", &f, "--schedules", "5", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["outcome"], "ok", "{l}");
        assert_eq!(v["violations"], serde_json::json!([]), "{l}");
    }
}

#[test]
fn a_long_touch_list_is_one_vmm_thread() {
    // 10,000 touches once needed an actor each (and ran into the 64-actor limit).
    let touch = vec!["0"; 10_000].join(", ");
    let text = one_page(
        "touches",
        "{ read = 0x10000 }",
        &format!("touch = [ {touch} ]\n"),
    );
    let f = tmp("touches.toml", text.as_bytes());
    let o = kvmmu(&["run", &f, "--policy", "linux-6.13", "--schedules", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
}

#[test]
fn an_exit_2_shows_the_line_and_a_caret() {
    let f = tmp(
        "caret.toml",
        b"name = \"x\"\n[[mapping]]\nname = \"ram\"\nbacking = \"anon\"\npages = 1\n",
    );
    let o = kvmmu(&["run", &f]);
    assert_eq!(o.status.code(), Some(2));
    let e = err(&o);
    assert!(e.contains("caret.toml:4:11"), "{e}");
    assert!(e.contains("4 | backing = \"anon\""), "{e}");
    assert!(e.contains("^^^^^^"), "{e}");
    assert!(o.stdout.is_empty());
}

#[test]
fn what_the_model_accepts_and_the_probe_cannot_run_is_said_as_such() {
    // 20,000 accesses: fine for the model, more guest code than the probe's code area holds.
    let reads = vec!["{ read = 0x10000 }"; 20_000].join(", ");
    let f = tmp("big-code.toml", one_page("big-code", &reads, "").as_bytes());
    assert_eq!(
        kvmmu(&["run", &f, "--schedules", "1"]).status.code(),
        Some(0)
    );
    for cmd in ["probe", "diff"] {
        let o = kvmmu(&[cmd, &f]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{cmd}: {out}{}", err(&o));
        assert!(!out.contains("bad plan"), "{cmd}: {out}");
        if cmd == "probe" {
            assert!(
                out.contains("skip: valid for the model, but beyond the probe: guest code needs"),
                "{out}"
            );
        }
    }
}

#[test]
fn sigterm_prints_what_finished_and_fails() {
    for format in ["json", "text"] {
        let child = Command::new(env!("CARGO_BIN_EXE_kvmmu"))
            .args(["run", "vgpu-reset-race", "anon", "--schedules", "100000000"])
            .args(["--format", format])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(130), "{}", err(&o));
        assert!(
            err(&o).contains("interrupted after 1 of 12 cells"),
            "{}",
            err(&o)
        );
        let out = String::from_utf8_lossy(&o.stdout);
        match format {
            "json" => {
                let v: serde_json::Value =
                    serde_json::from_str(out.lines().next().unwrap()).unwrap();
                assert_eq!(v["scenario"], "vgpu-reset-race");
            }
            _ => assert!(
                out.contains("vgpu-reset-race") && out.contains(" - "),
                "{out}"
            ),
        }
    }
}
