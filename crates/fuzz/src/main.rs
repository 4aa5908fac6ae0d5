//! `kvmmu-fuzz`: a structure-aware fuzzer of the scenario format, its validation and the
//! model. Inputs are the built-in scenarios and `crates/fuzz/seeds/*.toml`, mutated at the
//! byte, token and table level, plus scenarios generated from the grammar; each goes through
//! `scenario::parse` (parse + validate) and, when valid, one round-robin run of the model
//! with its oracles under one era. A panic, an input slower than the time limit or a process
//! over the memory limit is a finding: the input is written to the crash directory and the
//! run fails. Deterministic for a seed and thread count.
#![forbid(unsafe_code)]

mod gen;
mod mutate;

use model::harness::{run_once, step_bound, ScheduleKind};
use model::kvm::PolicyId;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use world::SplitMix64;

struct Args {
    /// Inputs to run (default: 100,000, or unlimited with `--seconds`).
    iterations: Option<u64>,
    seconds: Option<u64>,
    seed: u64,
    jobs: usize,
    crashes: PathBuf,
    slow_ms: u64,
    max_rss_mb: u64,
    /// Write each input to `<crashes>/current-<thread>.toml` before running it, so an input
    /// that kills the process (the OOM killer, a limit) is left behind.
    keep_current: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        iterations: None,
        seconds: None,
        seed: 1,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        crashes: PathBuf::from("fuzz-crashes"),
        slow_ms: 1_000,
        max_rss_mb: 1_024,
        keep_current: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--iterations" => a.iterations = Some(num(val()?)?),
            "--seconds" => a.seconds = Some(num(val()?)?),
            "--seed" => a.seed = num(val()?)?,
            "--jobs" => a.jobs = num(val()?)?.max(1) as usize,
            "--crashes" => a.crashes = PathBuf::from(val()?),
            "--slow-ms" => a.slow_ms = num(val()?)?,
            "--max-rss-mb" => a.max_rss_mb = num(val()?)?,
            "--keep-current" => a.keep_current = true,
            "-h" | "--help" => {
                return Err("usage: kvmmu-fuzz [--iterations N] [--seconds S] [--seed X] \
                            [--jobs J] [--crashes DIR] [--slow-ms MS] [--max-rss-mb MB] [--keep-current]"
                    .into())
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(a)
}

/// The seed corpus: the built-ins and `seeds/*.toml` beside this crate.
fn corpus() -> Vec<String> {
    let mut out: Vec<String> = scenario::BUILTIN
        .iter()
        .map(|(_, t)| t.to_string())
        .collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    if let Ok(rd) = std::fs::read_dir(&dir) {
        let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            if let Ok(t) = std::fs::read_to_string(&f) {
                out.push(t);
            }
        }
    }
    out
}

/// Resident set size in MiB (Linux), for the memory limit.
fn rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096 / (1 << 20))
}

/// What one input did.
enum Verdict {
    Rejected,
    Ran,
    Panicked(String),
    Slow(Duration),
}

fn one(text: &str, policy: PolicyId) -> Verdict {
    let start = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| {
        match scenario::parse("fuzz.toml", text) {
            Err(e) => {
                // Rendering is part of what a user sees: it must not panic either.
                let _ = e.render();
                false
            }
            Ok(sc) => {
                let _ = run_once(
                    &sc,
                    policy,
                    ScheduleKind::RoundRobin,
                    false,
                    step_bound(&sc),
                );
                true
            }
        }
    }));
    let took = start.elapsed();
    match r {
        Err(p) => Verdict::Panicked(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into()),
        ),
        Ok(_) if took.as_millis() as u64 > SLOW_MS.load(Ordering::Relaxed) => Verdict::Slow(took),
        Ok(true) => Verdict::Ran,
        Ok(false) => Verdict::Rejected,
    }
}

static SLOW_MS: AtomicU64 = AtomicU64::new(1_000);

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kvmmu-fuzz: {e}");
            return ExitCode::from(2);
        }
    };
    SLOW_MS.store(a.slow_ms, Ordering::Relaxed);
    // Panics are findings, reported by the loop: keep the default hook quiet.
    if std::env::var_os("KVMMU_FUZZ_LOUD").is_none() {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let seeds = corpus();
    let done = AtomicU64::new(0);
    let (rejected, ran) = (AtomicU64::new(0), AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    let findings: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let start = Instant::now();
    let deadline = a.seconds.map(|s| start + Duration::from_secs(s));
    let total = a.iterations.unwrap_or(if a.seconds.is_some() {
        u64::MAX
    } else {
        100_000
    });
    let per = total.div_ceil(a.jobs as u64);
    std::thread::scope(|s| {
        for j in 0..a.jobs {
            let (seeds, done, rejected, ran, stop, findings) =
                (&seeds, &done, &rejected, &ran, &stop, &findings);
            let a = &a;
            s.spawn(move || {
                let mut rng =
                    SplitMix64::new(a.seed.wrapping_mul(0x9e37_79b9).wrapping_add(j as u64));
                for k in 0..per {
                    if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        break;
                    }
                    let text = if rng.below(8) == 0 {
                        gen::scenario(&mut rng)
                    } else {
                        let base = &seeds[rng.below(seeds.len())];
                        let other = &seeds[rng.below(seeds.len())];
                        mutate::mutate(base, other, &mut rng)
                    };
                    let policy = PolicyId::ALL[(k as usize + j) % PolicyId::ALL.len()];
                    if a.keep_current {
                        let _ = std::fs::create_dir_all(&a.crashes);
                        let _ = std::fs::write(a.crashes.join(format!("current-{j}.toml")), &text);
                    }
                    let finding = match one(&text, policy) {
                        Verdict::Rejected => {
                            rejected.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        Verdict::Ran => {
                            ran.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        Verdict::Panicked(m) => Some(format!("panic under {policy}: {m}")),
                        Verdict::Slow(t) => Some(format!("slow under {policy}: {t:?}")),
                    };
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    let finding = finding.or_else(|| {
                        (n % 1024 == 0 && rss_mb() > a.max_rss_mb)
                            .then(|| format!("resident memory over {} MiB", a.max_rss_mb))
                    });
                    if let Some(f) = finding {
                        findings
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((f, text));
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let findings = findings.into_inner().unwrap_or_else(|e| e.into_inner());
    let n = done.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "kvmmu-fuzz: {n} inputs in {secs:.1} s ({:.0}/s, {} threads): {} rejected by validation, {} ran the model, {} findings; peak RSS {} MiB",
        n as f64 / secs.max(1e-9),
        a.jobs,
        rejected.load(Ordering::Relaxed),
        ran.load(Ordering::Relaxed),
        findings.len(),
        rss_mb()
    );
    if findings.is_empty() {
        return ExitCode::SUCCESS;
    }
    let _ = std::fs::create_dir_all(&a.crashes);
    for (i, (what, text)) in findings.iter().enumerate() {
        let p = a.crashes.join(format!("finding-{i}.toml"));
        let _ = std::fs::write(&p, text);
        eprintln!("kvmmu-fuzz: {what} (input: {})", p.display());
    }
    ExitCode::from(1)
}
