//! Bad scenario files get an error naming the file, line, column and reason — never a panic.

fn err(text: &str) -> scenario::ScenarioError {
    scenario::parse("bad.toml", text).expect_err("must be rejected")
}

const GOOD: &str = r#"
name = "ok"
[[mapping]]
name = "ram"
backing = "anon-private"
pages = 1
[[memslot]]
slot = 1
gpa = 0x10000
mapping = "ram"
pages = 1
[[vcpu]]
program = [ { read = 0x10000 } ]
"#;

#[test]
fn a_good_file_parses() {
    let s = scenario::parse("good.toml", GOOD).unwrap();
    assert_eq!(s.mappings[0].backing, scenario::Backing::AnonPrivate);
    assert_eq!(
        s.vcpus[0].program,
        vec![scenario::GuestOp::Read {
            gpa: 0x10000,
            size: 4
        }]
    );
}

#[test]
fn unknown_backing_names_line_and_column() {
    let e = err(&GOOD.replace("\"anon-private\"", "\"anon-privat\""));
    assert_eq!((e.file.as_str(), e.line, e.column), ("bad.toml", 5, 11));
    assert!(e.message.contains("unknown backing \"anon-privat\""), "{e}");
    assert!(
        e.to_string().starts_with("bad.toml:5:11: unknown backing"),
        "{e}"
    );
}

#[test]
fn toml_syntax_error_is_located() {
    let e = err("name = \"x\"\n[[mapping]\n");
    assert_eq!(e.line, 2, "{e}");
}

#[test]
fn unknown_field_is_rejected() {
    let e = err(&GOOD.replace(
        "pages = 1\n[[memslot]]",
        "pages = 1\ncolour = 3\n[[memslot]]",
    ));
    assert_eq!(e.line, 7, "{e}");
    assert!(e.message.contains("colour"), "{e}");
}

#[test]
fn dangling_mapping_reference() {
    let e = err(&GOOD.replace("mapping = \"ram\"", "mapping = \"rom\""));
    assert_eq!(e.line, 10, "{e}");
    assert!(e.message.contains("no mapping named \"rom\""), "{e}");
}

#[test]
fn misaligned_and_out_of_range_addresses() {
    assert!(err(&GOOD.replace("gpa = 0x10000", "gpa = 0x10001"))
        .message
        .contains("page-aligned"));
    assert!(err(&GOOD.replace("gpa = 0x10000", "gpa = 0x1000"))
        .message
        .contains("0x10000..0x1C0000"));
    assert!(
        err(&GOOD.replace("{ read = 0x10000 }", "{ read = 0x10002 }"))
            .message
            .contains("aligned")
    );
    assert!(err(&GOOD.replace(
        "{ read = 0x10000 }",
        "{ write = 0x10000, value = 0x1ffffffff }"
    ))
    .message
    .contains("does not fit"));
    assert!(
        err(&GOOD.replace("{ read = 0x10000 }", "{ write = 0x10000 }"))
            .message
            .contains("needs a value")
    );
}

#[test]
fn bad_after_and_actions() {
    let host = "\n[[host]]\naction = \"munmap\"\nmapping = \"ram\"\nafter = \"vcpu3:0\"\n";
    let e = err(&format!("{GOOD}{host}"));
    assert!(e.message.contains("no vcpu3"), "{e}");
    let e = err(&format!("{GOOD}{}", host.replace("vcpu3:0", "cpu0")));
    assert!(e.message.contains("\"vcpu0:2\""), "{e}");
    let e = err(&format!(
        "{GOOD}{}",
        host.replace("munmap", "explode").replace("vcpu3", "vcpu0")
    ));
    assert!(e.message.contains("unknown action \"explode\""), "{e}");
    let e = err(&format!(
        "{GOOD}{}",
        host.replace("munmap", "device-reset")
            .replace("after = \"vcpu3:0\"\n", "")
    ));
    assert!(e.message.contains("does not fit"), "{e}");
}

#[test]
fn unknown_policy_or_oracle_in_expect() {
    let e = err(&format!(
        "{GOOD}\n[expect]\n\"linux-9.9\" = {{ violations = [] }}\n"
    ));
    assert!(e.message.contains("unknown policy \"linux-9.9\""), "{e}");
    assert_eq!(e.line, 16, "{e}");
    let e = err(&format!(
        "{GOOD}\n[expect]\n\"linux-4.8\" = {{ violations = [\"no-fun\"] }}\n"
    ));
    assert!(e.message.contains("unknown oracle \"no-fun\""), "{e}");
}

#[test]
fn vvar_cannot_be_writable() {
    let e = err(&GOOD.replace("\"anon-private\"", "\"vvar\"\nprot = \"rw\""));
    assert!(e.message.contains("read-only"), "{e}");
}

#[test]
fn every_built_in_scenario_parses_and_every_file_is_built_in() {
    for (n, t) in scenario::BUILTIN {
        scenario::parse(n, t).unwrap_or_else(|e| panic!("{e}"));
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios");
    for f in std::fs::read_dir(dir).unwrap() {
        let p = f.unwrap().path();
        let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
        assert!(
            scenario::BUILTIN.iter().any(|(n, _)| *n == stem),
            "{stem}.toml is not in BUILTIN"
        );
    }
}

#[test]
fn unreadable_file_is_an_error_not_a_panic() {
    let e = scenario::load(std::path::Path::new("/nonexistent/x.toml")).unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
}
