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
        .contains("overlaps 0x0..0x10000, the probe's guest code"));
    assert!(err(&GOOD.replace("gpa = 0x10000", "gpa = 0x1ff000"))
        .message
        .contains("the probe's guest page tables"));
    assert!(err(&GOOD.replace("gpa = 0x10000", "gpa = 0x1000000000000"))
        .message
        .contains("2^48"));
    assert!(
        err(&GOOD.replace("{ read = 0x10000 }", "{ read = 0xd0000ff8 }"))
            .message
            .contains("report pages")
    );
    // Anywhere else in 48 bits: above 4 GiB, the last page below 2^48, just past a slot.
    let high = GOOD
        .replace("gpa = 0x10000", "gpa = 0xfffffffff000")
        .replace(
            "{ read = 0x10000 }",
            "{ read = 0xffffffffffff, size = 1 }, { read = 0x1_0000_0000 }",
        );
    scenario::parse("x.toml", &high).unwrap();
    // Any alignment, across a page too; but not past 2^48.
    scenario::parse(
        "x.toml",
        &GOOD.replace("{ read = 0x10000 }", "{ read = 0x10ffe }"),
    )
    .unwrap();
    assert!(
        err(&GOOD.replace("{ read = 0x10000 }", "{ read = 0xfffffffffffe }"))
            .message
            .contains("below 2^48")
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
    // scenarios/NAME.toml is built in as NAME, scenarios/selftests/NAME.toml as
    // selftest-NAME.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios");
    let mut files = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        let p = f.unwrap().path();
        if p.is_dir() {
            for g in std::fs::read_dir(&p).unwrap() {
                files.push((g.unwrap().path(), "selftest-"));
            }
        } else {
            files.push((p, ""));
        }
    }
    for (p, prefix) in files {
        let stem = p.file_stem().unwrap().to_str().unwrap();
        let name = format!("{prefix}{stem}");
        assert!(
            scenario::BUILTIN.iter().any(|(n, _)| *n == name),
            "{} is not in BUILTIN as {name}",
            p.display()
        );
    }
}

#[test]
fn unreadable_file_is_an_error_not_a_panic() {
    let e = scenario::load(std::path::Path::new("/nonexistent/x.toml")).unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
}

/// GOOD with a host step and more accesses, for the host-step cases below.
fn with_host(step: &str) -> String {
    GOOD.replace(
        "program = [ { read = 0x10000 } ]",
        "program = [ { read = 0x10000 }, { read = 0x10000 }, { read = 0x10000 } ]",
    ) + "[[host]]\n"
        + step
}

/// The error's line and column point at `needle` (its first occurrence in the host step).
fn at(text: &str, e: &scenario::ScenarioError, needle: &str) {
    let host = text.find("[[host]]").unwrap_or(0);
    let pos = host + text[host..].find(needle).expect("needle");
    let line = text[..pos].matches('\n').count() + 1;
    let col = pos - text[..pos].rfind('\n').map_or(0, |i| i + 1) + 1;
    assert_eq!((e.line, e.column), (line, col), "{e}");
}

#[test]
fn host_access_sizes_are_those_of_a_load() {
    for size in [0, 3, 9, 255] {
        let t = with_host(&format!(
            "action = \"read\"\nmapping = \"ram\"\nsize = {size}\n"
        ));
        let e = err(&t);
        assert!(e.message.contains("size must be 1, 2, 4 or 8"), "{e}");
        at(&t, &e, &format!("{size}\n"));
    }
}

#[test]
fn host_values_and_fills_must_fit() {
    let t = with_host("action = \"write\"\nmapping = \"ram\"\nsize = 2\nvalue = 0x12345\n");
    let e = err(&t);
    assert!(e.message.contains("does not fit in 2 bytes"), "{e}");
    at(&t, &e, "0x12345");
    let t = with_host("action = \"mmap-anon\"\nmapping = \"ram\"\nfill = 0x123456789\n");
    let e = err(&t);
    assert!(e.message.contains("fill is a 32-bit pattern"), "{e}");
    at(&t, &e, "0x123456789");
}

#[test]
fn fields_an_action_does_not_use_are_refused() {
    for (field, line) in [
        ("pages", "pages = 1"),
        ("prot", "prot = \"rw\""),
        ("fill", "fill = 1"),
    ] {
        let t = with_host(&format!("action = \"read\"\nmapping = \"ram\"\n{line}\n"));
        let e = err(&t);
        assert!(e.message.contains(&format!("{field} means nothing")), "{e}");
        at(&t, &e, line.split(" = ").nth(1).unwrap());
    }
}

#[test]
fn region_index_is_a_bar_of_a_device_mapping() {
    let e = err(&GOOD.replace(
        "pages = 1\n[[memslot]]",
        "pages = 1\nregion_index = 4294967296\n[[memslot]]",
    ));
    assert!(e.message.contains("only vgpu-bar and vfio-bar"), "{e}");
    let vfio = GOOD.replace("\"anon-private\"", "\"vfio-bar\"");
    let e = err(&vfio.replace(
        "pages = 1\n[[memslot]]",
        "pages = 1\nregion_index = 4294967296\n[[memslot]]",
    ));
    assert!(e.message.contains("0 to 5"), "{e}");
}

#[test]
fn handler_delay_is_the_userfault_handlers_and_bounded() {
    let e = err(&GOOD.replace(
        "pages = 1\n[[memslot]]",
        "pages = 1\nhandler_delay_ms = 20\n[[memslot]]",
    ));
    assert!(e.message.contains("only userfault mappings"), "{e}");
    let uffd = GOOD.replace("\"anon-private\"", "\"userfault\"");
    let t = uffd.replace(
        "pages = 1\n[[memslot]]",
        "pages = 1\nhandler_delay_ms = 1001\n[[memslot]]",
    );
    let e = err(&t);
    assert!(e.message.contains("at most 1000"), "{e}");
    at(&t, &e, "1001");
    let ok = uffd.replace(
        "pages = 1\n[[memslot]]",
        "pages = 1\nhandler_delay_ms = 20\n[[memslot]]",
    );
    let sc = scenario::parse("x.toml", &ok).unwrap();
    assert_eq!(sc.mappings[0].handler_delay_ms, 20);
}

#[test]
fn reruns_exits_and_mmio_data_are_checked() {
    let t = with_host("action = \"read\"\nmapping = \"ram\"\nafter = \"vcpu0:0#0\"\n");
    let e = err(&t);
    assert!(e.message.contains("counted from 1"), "{e}");
    at(&t, &e, "\"vcpu0:0#0\"");
    let t = with_host("action = \"read\"\nmapping = \"ram\"\nafter = \"vcpu0:0#x\"\n");
    assert!(err(&t).message.contains("vcpu0:2#3"));
    let e = err(&GOOD.replace("{ read = 0x10000 }", "{ read = 0x10000, reruns = 101 }"));
    assert!(e.message.contains("at most 100"), "{e}");
    let e = err(&GOOD.replace(
        "{ read = 0x10000 }",
        "{ write = 0x10000, value = 1, mmio = 2 }",
    ));
    assert!(e.message.contains("a write has none"), "{e}");
    let e = err(&GOOD.replace(
        "{ read = 0x10000 }",
        "{ read = 0x10000, size = 1, mmio = 0x100 }",
    ));
    assert!(e.message.contains("does not fit in 1 bytes"), "{e}");
    // By default an access re-runs as often as host steps wait on its exits.
    let t = with_host("action = \"read\"\nmapping = \"ram\"\nafter = \"vcpu0:0#2\"\n");
    let sc = scenario::parse("x.toml", &t).unwrap();
    assert_eq!(sc.vcpus[0].reruns, vec![2, 0, 0]);
    assert_eq!(sc.host[0].after, Some((0, 0, 2)));
    let t = t.replacen(
        "{ read = 0x10000 }",
        "{ read = 0x10000, reruns = 0, mmio = 7 }",
        1,
    );
    let sc = scenario::parse("x.toml", &t).unwrap();
    assert_eq!(sc.vcpus[0].reruns, vec![0, 0, 0]);
    assert_eq!(sc.vcpus[0].mmio, vec![7, 0, 0]);
}

#[test]
fn follows_names_one_earlier_mapping_and_slots_may_span_the_run() {
    let two = GOOD.replace(
        "[[memslot]]",
        "[[mapping]]\nname = \"b\"\nbacking = \"memfd\"\npages = 1\nfollows = \"ram\"\n[[memslot]]",
    );
    let sc = scenario::parse(
        "x.toml",
        &two.replace(
            "mapping = \"ram\"\npages = 1\n[[vcpu]]",
            "mapping = \"ram\"\npages = 2\n[[vcpu]]",
        ),
    )
    .unwrap();
    assert_eq!(sc.memslots[0].pages, 2);
    let names: Vec<&str> = sc
        .run_from("ram")
        .iter()
        .map(|(m, _)| m.name.as_str())
        .collect();
    assert_eq!(names, ["ram", "b"]);
    let e = err(&two.replace(
        "mapping = \"ram\"\npages = 1\n[[vcpu]]",
        "mapping = \"ram\"\npages = 3\n[[vcpu]]",
    ));
    assert!(
        e.message.contains("with the mappings that follow it"),
        "{e}"
    );
    let e = err(&two.replace("follows = \"ram\"", "follows = \"nope\""));
    assert!(e.message.contains("no earlier mapping"), "{e}");
    let three = two.replace(
        "[[memslot]]",
        "[[mapping]]\nname = \"c\"\nbacking = \"memfd\"\npages = 1\nfollows = \"ram\"\n[[memslot]]",
    );
    assert!(err(&three).message.contains("already follows"));
}

#[test]
fn after_takes_digits_only() {
    let t = with_host("action = \"read\"\nmapping = \"ram\"\nafter = \"vcpu+0:+0\"\n");
    let e = err(&t);
    assert!(e.message.contains("after must look like"), "{e}");
    at(&t, &e, "\"vcpu+0:+0\"");
}

#[test]
fn steps_that_wait_on_themselves_are_refused() {
    // One thread: the first step waits for access 2, the second for access 0; but vCPU 0
    // stops after access 0 until the second step ran, which the thread runs after the first.
    let t = with_host(
        "thread = \"t\"\naction = \"read\"\nmapping = \"ram\"\nafter = \"vcpu0:2\"\n\
         [[host]]\nthread = \"t\"\naction = \"read\"\nmapping = \"ram\"\nafter = \"vcpu0:0\"\n",
    );
    let e = err(&t);
    assert!(e.message.contains("can never run"), "{e}");
    // In the other order, or on two threads, it is fine.
    let fine = t
        .replacen("vcpu0:2", "vcpu0:X", 1)
        .replacen("vcpu0:0", "vcpu0:2", 1)
        .replacen("vcpu0:X", "vcpu0:0", 1);
    scenario::parse("ok.toml", &fine).expect("ordered steps");
    let two = t.replacen("thread = \"t\"", "thread = \"u\"", 1);
    scenario::parse("ok.toml", &two).expect("two threads");
}

#[test]
fn an_unknown_oracle_is_reported_where_it_stands() {
    // The same text earlier in the file (a comment) must not take the blame.
    let t = format!(
        "{GOOD}[expect]\n# no-such-oracle is mentioned here first\n\"linux-6.13\" = {{ violations = [\"no-such-oracle\"] }}\n"
    );
    let e = err(&t);
    assert!(e.message.contains("unknown oracle"), "{e}");
    assert_eq!(e.line, t.lines().count(), "{e}");
}

#[test]
fn errors_render_as_the_compiler_does() {
    let e = err(&GOOD.replace("\"anon-private\"", "\"anon-privat\""));
    let r = e.render();
    assert!(
        r.starts_with("error: unknown backing \"anon-privat\""),
        "{r}"
    );
    assert!(r.contains(" --> bad.toml:5:11"), "{r}");
    assert!(r.contains("5 | backing = \"anon-privat\""), "{r}");
    assert!(r.contains("  |           ^^^^^^^^^^^^^"), "{r}");
}

#[test]
fn values_with_the_top_bit_set_are_written_as_strings() {
    let t = GOOD.replace(
        "{ read = 0x10000 }",
        "{ write = 0x10000, size = 8, value = \"0xffff_ffff_ffff_ffff\" }",
    );
    let sc = scenario::parse("x.toml", &t).unwrap();
    assert_eq!(
        sc.vcpus[0].program[0],
        scenario::GuestOp::Write {
            gpa: 0x10000,
            size: 8,
            value: u64::MAX
        }
    );
    for bad in ["\"0xg\"", "-1", "\"\"", "\"0x1_0000_0000_0000_0000\""] {
        let t = GOOD.replace(
            "{ read = 0x10000 }",
            &format!("{{ write = 0x10000, size = 8, value = {bad} }}"),
        );
        let e = err(&t);
        assert!(
            e.message.contains("64-bit number") || e.message.contains("negative"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn huge_numbers_are_refused_not_wrapped() {
    // pages * 4096 and offset + pages overflowed (a panic in debug builds, a wrong answer in
    // release ones); found by kvmmu-fuzz.
    let e = err(&GOOD.replace(
        "mapping = \"ram\"\npages = 1",
        "mapping = \"ram\"\npages = 4611686018427387904",
    ));
    assert!(e.message.contains("memslots must end below 2^48"), "{e}");
    let t = with_host("action = \"read\"\nmapping = \"ram\"\noffset = 9223372036854775807\n");
    let e = err(&t);
    assert!(e.message.contains("does not fit mapping"), "{e}");
    let t = with_host(
        "action = \"munmap\"\nmapping = \"ram\"\noffset = 9223372036854775807\npages = 2\n",
    );
    assert!(err(&t).message.contains("does not fit mapping"));
}

#[test]
fn memslot_steps_and_their_results_are_checked_where_they_stand() {
    let with = |host: &str, seen: &str| format!("{GOOD}{host}\n[[seen]]\n{seen}\n");
    let delete = "[[host]]\naction = \"delete-memslot\"\nslot = 1";
    // A deletion names no mapping.
    let e = err(&format!("{GOOD}{delete}\nmapping = \"ram\"\n"));
    assert!(e.message.contains("mapping means nothing"), "{e}");
    // set-memslot needs a slot and a gpa, and a slot that fits the mapping.
    let e = err(&format!(
        "{GOOD}[[host]]\naction = \"set-memslot\"\nmapping = \"ram\"\ngpa = 0x20000\n"
    ));
    assert!(e.message.contains("needs slot and gpa"), "{e}");
    let e = err(&format!("{GOOD}[[host]]\naction = \"set-memslot\"\nmapping = \"ram\"\nslot = 2\ngpa = 0x20000\npages = 2\n"));
    assert!(
        e.message
            .contains("slot covers pages 0..2 of a 1-page mapping"),
        "{e}"
    );
    let e = err(&format!(
        "{GOOD}[[host]]\naction = \"set-memslot\"\nmapping = \"ram\"\nslot = 2\ngpa = 0x1C0000\n"
    ));
    assert!(e.message.contains("page tables"), "{e}");
    // race only without after.
    let e = err(&format!(
        "{GOOD}{delete}\nafter = \"vcpu0:0\"\nrace = true\n"
    ));
    assert!(
        e.message.contains("race = true is for steps without after"),
        "{e}"
    );
    // [[seen]] of a host step: only memslot steps, only existing ones.
    let ok = scenario::parse("ok.toml", &with(delete, "access = \"host:0\"\nis = \"ok\"")).unwrap();
    assert_eq!(ok.seen[0].item, scenario::SeenItem::HostStep(0));
    let e = err(&with(delete, "access = \"host:1\"\nis = \"ok\""));
    assert!(e.message.contains("there is no host step 1"), "{e}");
    let e = err(&with(
        "[[host]]\naction = \"read\"\nmapping = \"ram\"",
        "access = \"host:0\"\nis = \"ok\"",
    ));
    assert!(e.message.contains("not a memslot step"), "{e}");
    let e = err(&with(delete, "access = \"host:+0\"\nis = \"ok\""));
    assert!(e.message.contains("host:K"), "{e}");
}
