//! `kvmmu report` and `--report DIR`: the page opens from disk in headless Chromium with no
//! console errors and shows the matrix; every counterexample becomes a timeline; bad input is
//! exit status 2.
//!
//! Without a `chromium` binary the browser test prints `SKIP: ...` and passes, unless
//! `KVMMU_REQUIRE_CHROMIUM=1` (CI sets it, after installing Debian's `chromium`).

use std::path::{Path, PathBuf};
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

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvmmu-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Chromium's flags for a quiet, isolated, offline headless run.
fn chromium(profile: &Path, extra: &[&str], url: &str) -> Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium")
}

/// `Some(reason)` when the browser test cannot run here (and is allowed to skip).
fn no_chromium() -> Option<String> {
    let why = match Command::new("chromium").arg("--version").output() {
        Ok(o) if o.status.success() => return None,
        Ok(o) => format!("chromium --version failed: {}", err(&o).trim()),
        Err(e) => format!("no chromium binary: {e}"),
    };
    if std::env::var("KVMMU_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1") {
        panic!("KVMMU_REQUIRE_CHROMIUM=1 but {why}");
    }
    Some(why)
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(b: &[u8]) -> Option<(u32, u32)> {
    if b.len() < 24 || &b[..8] != b"\x89PNG\r\n\x1a\n" || &b[12..16] != b"IHDR" {
        return None;
    }
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Some((be(16), be(20)))
}

#[test]
fn the_built_in_report_loads_in_chromium_without_errors_and_shows_the_matrix() {
    if let Some(why) = no_chromium() {
        println!("SKIP: {why}");
        return;
    }
    let dir = tmpdir("browser");
    let out = dir.join("report");
    // Sampled cells keep the test fast; the page is the same as the checker's.
    let o = kvmmu(&["report", "--sampled", "-q", "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let index = out.join("index.html");
    assert!(String::from_utf8_lossy(&o.stdout).contains(s(&index)));
    let url = format!("file://{}", index.display());

    // The screenshot, with the browser's console on stderr.
    let png = dir.join("report.png");
    let shot = chromium(
        &dir.join("profile-shot"),
        &[
            &format!("--screenshot={}", png.display()),
            "--enable-logging=stderr",
            "--v=0",
        ],
        &url,
    );
    let log = err(&shot);
    assert!(shot.status.success(), "chromium failed: {log}");
    // The page logs nothing: any console line is a script error, a refused fetch (the
    // page's Content-Security-Policy allows only its own files) or a failed load.
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console output: {console:#?}");
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert_eq!(
        png_size(&bytes),
        Some((1400, 2000)),
        "not the PNG asked for"
    );
    // A blank 1400×2000 page compresses to a few KB; the matrix page to well over 100 KB.
    assert!(
        bytes.len() > 60_000,
        "screenshot looks blank: {} bytes",
        bytes.len()
    );

    // The DOM after load: the page's script marks it loaded and counts errors (script
    // errors, images that did not load).
    let dom = chromium(
        &dir.join("profile-dom"),
        &["--dump-dom", "--virtual-time-budget=5000"],
        &url,
    );
    assert!(dom.status.success(), "{}", err(&dom));
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("data-report-loaded=\"yes\""),
        "the page did not finish loading"
    );
    assert!(
        dom.contains("data-errors=\"0\""),
        "errors in the page: {}",
        &dom[..dom.len().min(2000)]
    );
    let matrix = dom
        .split("<table id=\"matrix\"")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .expect("the matrix is in the rendered DOM");
    for (name, _) in scenario::BUILTIN {
        assert!(
            matrix.contains(&format!(">{name}</a>")),
            "{name} not in the matrix"
        );
    }
    for policy in [
        "linux-4.7",
        "linux-4.8",
        "linux-4.16",
        "linux-5.12",
        "linux-5.13",
        "linux-6.13",
    ] {
        assert!(matrix.contains(&format!("<th>{policy}</th>")), "{policy}");
    }
    // Coloured by verdict: the eras' known bugs, clean cells and EFAULT outcomes are there.
    for class in ["v-expected", "v-clean", "v-efault", "v-exit"] {
        assert!(matrix.contains(&format!("class=\"{class}\"")), "{class}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_report_has_a_timeline_per_counterexample_naming_its_oracle() {
    let dir = tmpdir("check");
    let o = kvmmu(&[
        "check",
        "vgpu-reset-race",
        "--no-replay-files",
        "-q",
        "--report",
        s(&dir),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(err(&o).contains(s(&dir.join("index.html"))), "{}", err(&o));
    let index = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(index.contains("every interleaving") || index.contains("strategy dpor"));
    // linux-4.7 breaks four oracles, linux-4.8 and linux-4.16 one each: six timelines, each
    // marking its oracle.
    let mut svgs: Vec<String> = std::fs::read_dir(dir.join("svg"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("t-"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    svgs.sort();
    assert_eq!(svgs.len(), 6, "one timeline per violated oracle");
    for svg in &svgs {
        let oracle = svg
            .split("<title>")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .unwrap();
        assert!(svg.contains(&format!("✗ violates {oracle}")), "{oracle}");
        assert!(svg.contains(">vcpu0</text>"), "{oracle}: no vCPU lane");
    }
    // linux-4.8's race: both actors have lanes, and the reset's zap calls the notifier.
    let race = std::fs::read_to_string(dir.join("svg/t-0-1-0.svg")).unwrap();
    for actor in ["vcpu0", "reset"] {
        assert!(race.contains(&format!(">{actor}</text>")), "lane {actor}");
    }
    assert!(race.contains("mmu notifier → KVM"));
    // The linux-4.8 story: the reference taken after follow_pfn dropped the PTL.
    assert!(svgs
        .iter()
        .any(|s| s.contains(">kvm_get_pfn</tspan>") && s.contains(">follow_pfn</tspan>")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_and_diff_write_the_report_too() {
    let dir = tmpdir("run");
    let o = kvmmu(&[
        "run",
        "usbfs-tail",
        "--schedules",
        "20",
        "--report",
        s(&dir.join("run")),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let index = std::fs::read_to_string(dir.join("run/index.html")).unwrap();
    assert!(index.contains("id=\"matrix\"") && index.contains("refcount-sane"));
    assert!(
        index.contains("svg/t-0-"),
        "the run's violations have timelines"
    );
    let o = kvmmu(&["diff", "anon", "--report", s(&dir.join("diff"))]);
    // Exit 2 without a usable /dev/kvm; the report is written only when the probe ran.
    if o.status.code() == Some(0) {
        let index = std::fs::read_to_string(dir.join("diff/index.html")).unwrap();
        assert!(index.contains("agree on"), "{index}");
        assert!(err(&o).contains("report written to"));
    } else {
        assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_a_clear_error_and_exit_2() {
    let dir = tmpdir("bad");
    let o = kvmmu(&["report", "no-such-scenario", "--out", s(&dir)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("no-such-scenario: neither a built-in scenario"),
        "{}",
        err(&o)
    );
    // An --out below a regular file cannot be created.
    let file = dir.join("file");
    std::fs::write(&file, b"x").unwrap();
    let under = file.join("report");
    for args in [
        vec!["report", "anon", "--sampled", "--out", s(&under)],
        vec!["run", "anon", "--report", s(&under)],
        vec![
            "check",
            "anon",
            "-q",
            "--no-replay-files",
            "--report",
            s(&under),
        ],
    ] {
        let o = kvmmu(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
        assert!(
            err(&o).contains("cannot create the directory"),
            "{args:?}: {}",
            err(&o)
        );
        assert!(!err(&o).contains("panicked"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostile_scenario_names_are_escaped_in_the_page() {
    let anon = scenario::BUILTIN
        .iter()
        .find(|(n, _)| *n == "anon")
        .unwrap()
        .1;
    let evil = "<img src=x onerror=alert(1)>&\\\"";
    let text = anon.replacen("name = \"anon\"", &format!("name = \"{evil}\""), 1);
    let dir = tmpdir("evil");
    let f = dir.join("evil.toml");
    std::fs::write(&f, text).unwrap();
    let o = kvmmu(&[
        "report",
        s(&f),
        "--sampled",
        "--schedules",
        "2",
        "--no-probe",
        "--out",
        s(&dir.join("r")),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let index = std::fs::read_to_string(dir.join("r/index.html")).unwrap();
    assert!(!index.contains("<img src=x"));
    assert!(index.contains("&lt;img src=x onerror=alert(1)&gt;&amp;&quot;"));
    let _ = std::fs::remove_dir_all(&dir);
}
