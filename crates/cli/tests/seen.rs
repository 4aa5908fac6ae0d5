//! `[[seen]]`: values a scenario states per access (and for the userfaultfd messages), checked
//! by `run` and `check` under every explored schedule and by `diff` against real KVM.

use std::process::{Command, Output};

fn kvmmu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvmmu"))
        .args(args)
        .output()
        .expect("run kvmmu")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const RACE: &str = r#"
name = "race"
[[mapping]]
name = "ram"
backing = "anon-private"
pages = 1
fill = 0x11111111
[[memslot]]
slot = 1
gpa = 0x10000
mapping = "ram"
pages = 1
[[vcpu]]
program = [{ read = 0x10000 }]
[[host]]
action = "write"
mapping = "ram"
value = 0x22222222
"#;

fn file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kvmmu-seen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    f
}

/// The host's store races the read: both values happen, so a set that names both holds
/// under every schedule; naming one of them is broken by the other's schedules, and the
/// mismatch names the access and the value.
#[test]
fn run_and_check_hold_every_schedule_to_the_stated_values() {
    let both = file(
        "both.toml",
        &format!("{RACE}[[seen]]\naccess = \"vcpu0:0\"\nis = [\"0x11111111\", \"0x022222222\"]\n"),
    );
    let one = file(
        "one.toml",
        &format!("{RACE}[[seen]]\naccess = \"vcpu0:0\"\npolicies = [\"linux-6.13\"]\nis = \"0x11111111\"\n"),
    );
    for cmd in ["run", "check"] {
        let o = kvmmu(&[cmd, both.to_str().unwrap(), "--policy", "linux-6.13"]);
        assert_eq!(o.status.code(), Some(0), "{cmd}: {}", stdout(&o));
        let o = kvmmu(&[cmd, one.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{cmd}: {}", stdout(&o));
        let text = stdout(&o);
        assert!(
            text.contains(
                "vcpu0 access 0 (read32 0x10000): saw 0x22222222; [[seen]] allows 0x11111111"
            ),
            "{cmd}: {text}"
        );
        // Only linux-6.13 states it: no other cell is named.
        assert!(!text.contains("race / linux-5.13: got"), "{cmd}: {text}");
    }
}

/// `diff` holds real KVM to the same values: the probe runs host steps without `after`
/// before the vCPUs, so real KVM reads the host's store, which this file says it must not.
#[test]
fn diff_holds_real_kvm_to_the_stated_values() {
    if probe::skip_without_kvm("diff_holds_real_kvm_to_the_stated_values") {
        return;
    }
    let one = file(
        "diff-one.toml",
        &format!("{RACE}[[seen]]\naccess = \"vcpu0:0\"\nis = \"0x11111111\"\n"),
    );
    let o = kvmmu(&["diff", one.to_str().unwrap()]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "[[seen]] broken by real KVM: vcpu0 access 0 (read32 0x10000): saw 0x22222222"
        ),
        "{text}"
    );
    assert!(
        text.contains("allowed by the model, but NOT the scenario's [[seen]] values"),
        "{text}"
    );
}

/// What the host reads back at the end is a value too: the race leaves either value in the
/// page, so the model allows both, and a single value is broken.
#[test]
fn host_reads_at_the_end_are_stated_values() {
    let both = file(
        "host-both.toml",
        &format!("{RACE}[[seen]]\nhost = {{ mapping = \"ram\" }}\nis = \"0x22222222\"\n"),
    );
    let o = kvmmu(&["check", both.to_str().unwrap(), "--policy", "linux-6.13"]);
    // The host's store lands last in every schedule: the page holds it at the end.
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let wrong = file(
        "host-wrong.toml",
        &format!(
            "{RACE}[[seen]]\nhost = {{ mapping = \"ram\", offset = 8, size = 8 }}\nis = \"0x1\"\n"
        ),
    );
    let o = kvmmu(&["check", wrong.to_str().unwrap(), "--policy", "linux-6.13"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("host ram+0x8/8: saw 0x1111111111111111; [[seen]] allows 0x1"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn bad_seen_entries_are_refused_at_their_place() {
    for (entry, msg) in [
        (
            "access = \"vcpu1:0\"\nis = \"0x1\"",
            "there is no vcpu1 access 0",
        ),
        ("access = \"cpu0\"\nis = \"0x1\"", "access must look like"),
        ("access = \"uffd\"\nis = \"none\"", "no userfault mapping"),
        ("access = \"vcpu0:0\"\nis = []", "give a value"),
        (
            "access = \"vcpu0:0\"\npolicies = [\"linux-9\"]\nis = \"0x1\"",
            "unknown policy",
        ),
    ] {
        let f = file("bad.toml", &format!("{RACE}[[seen]]\n{entry}\n"));
        let o = kvmmu(&["run", f.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{entry}: {err}");
        assert!(err.contains(msg), "{entry}: {err}");
        assert!(err.contains("bad.toml:"), "{entry}: {err}");
    }
}
