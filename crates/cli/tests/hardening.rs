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
    assert!(err(&o).contains("bad.toml:2:18: not UTF-8"), "{}", err(&o));
}
