//! `kvmmu`: run scenarios on the model (`run`), explore every interleaving (`check`, and
//! `replay` a counterexample), list what is built in (`list`), run them on the real
//! `/dev/kvm` (`probe`), compare the two (`diff`), and show it all as HTML (`report`).
#![forbid(unsafe_code)]

/// `print!` into a `String` (output is written in one go, so a closed pipe is not a panic).
macro_rules! out {
    ($o:expr, $($t:tt)*) => {{ use std::fmt::Write as _; let _ = write!($o, $($t)*); }};
}
/// `println!` into a `String`.
macro_rules! outln {
    ($o:expr, $($t:tt)*) => {{ use std::fmt::Write as _; let _ = writeln!($o, $($t)*); }};
}

mod cell;
mod checkcmd;
mod cost;
mod diff;
mod input;
mod list;
mod merge;
mod plan;
mod probe;
mod replay;
mod reportcmd;
mod reportdata;
mod run;
mod shard;
mod signals;
mod text;

use check::Strategy;
use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    match Strategy::from_name(s) {
        Some(Strategy::Sample) | None => Err(format!(
            "unknown strategy {s:?}; expected dpor, dfs, pct or random"
        )),
        Some(x) => Ok(x),
    }
}

fn parse_secs(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x < 1e9 => Ok(std::time::Duration::from_secs_f64(x)),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

#[derive(Parser)]
#[command(
    name = "kvmmu",
    version,
    about = "KVM's guest page fault to host pfn path, for device mappings: model, checker, probe"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// How the guest runs on real KVM (realkvm.md §0).
#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// 64-bit CPL3 code: shadow-MMU faults through hva_to_pfn (what the model predicts).
    Native,
    /// CPL0 code: KVM's instruction emulator reaches memory with copy_{from,to}_user.
    Emulated,
}

impl ModeArg {
    pub fn probe(self) -> ::probe::Mode {
        match self {
            ModeArg::Native => ::probe::Mode::Native,
            ModeArg::Emulated => ::probe::Mode::Emulated,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios under each policy on the model and print the matrix.
    Run(run::RunArgs),
    /// Explore every interleaving of each cell: prove clean cells, minimise counterexamples.
    ///
    /// Exit status 0 when every cell matches its scenario's [expect] (cells without one,
    /// such as mutants, always match), 1 otherwise, 2 on bad input. Counterexamples are
    /// written as replay files (see `kvmmu replay`).
    Check(checkcmd::CheckArgs),
    /// Combine the shard results of a campaign (`kvmmu check --shard K/N`) into one verdict
    /// per cell, as one process would have printed it.
    ///
    /// Refuses files of another kvmmu version, other options or other scenario texts, and
    /// names a missing or duplicate shard. Exit status as `kvmmu check`.
    Merge(merge::MergeArgs),
    /// Reproduce a counterexample from its replay file, step by step.
    ///
    /// Exit status 0 when it reproduces bit for bit, 1 when it does not (saying why), 2 on
    /// bad input.
    Replay {
        file: String,
        /// Print the full step trace too.
        #[arg(long)]
        trace: bool,
    },
    /// Write the HTML report: the scenario × policy matrix, every counterexample as a
    /// timeline, the real-KVM comparison and (with --measure) fault-cost plots.
    ///
    /// Explores every interleaving (as `kvmmu check`) unless --sampled. Exit status 0 when
    /// every cell matches its scenario's [expect], 1 otherwise (the report is written
    /// either way), 2 on bad input or an unwritable --out.
    Report(reportcmd::ReportArgs),
    /// List the built-in scenarios, the policies and the oracles.
    List,
    /// Run scenarios on this machine's real /dev/kvm and print what happened per access.
    ///
    /// Scenarios with model-only drivers or actions print one `skip:` line. Exit status 2
    /// when /dev/kvm is missing or unusable, or on bad input.
    Probe {
        /// Built-in scenario names or scenario files (default: every built-in scenario).
        scenarios: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[arg(long, value_enum, default_value_t = ModeArg::Native)]
        mode: ModeArg,
    },
    /// Check that what real KVM did is one of the things the model (linux-6.13, every
    /// interleaving) says can happen, per access and as a whole.
    ///
    /// Exit status 1 when a real run is not allowed by the model, 2 on bad input or unusable
    /// KVM. In emulated mode the model predicts the emulated path.
    Diff {
        /// Built-in scenario names or scenario files (default: every built-in scenario).
        scenarios: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[arg(long, value_enum, default_value_t = ModeArg::Native)]
        mode: ModeArg,
        /// Run each scenario this many times on real KVM (each in a fresh process): races
        /// show their orders, and every run must be one the model allows.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=1000))]
        repeat: u16,
        /// The path the model predicts (default: the mode's own). The other mode's prediction
        /// is refuted wherever the paths differ.
        #[arg(long, value_enum)]
        predict: Option<ModeArg>,
        /// The era whose model real KVM is compared with (this host runs linux-6.13's code).
        #[arg(long, value_name = "P", default_value_t = diff::POLICY.name().to_string())]
        policy: String,
        /// Also write the HTML report of the comparison to DIR.
        #[arg(long, value_name = "DIR")]
        report: Option<std::path::PathBuf>,
    },
    /// Run one probe plan in this fresh process (JSON on stdin, result as JSON on stdout):
    /// how `probe` and `diff` isolate every real-KVM run.
    #[command(hide = true)]
    ProbeChild,
}

/// The first error writing standard output, other than a reader that went away.
static WRITE_ERROR: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Write program output; a reader that went away (`| head`) is not an error, any other
/// failure (`> /dev/full`) makes the command fail when it ends.
pub fn emit(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let mut w = WRITE_ERROR.lock().unwrap_or_else(|p| p.into_inner());
            w.get_or_insert_with(|| e.to_string());
        }
    }
}

fn main() -> ExitCode {
    let code = run_command(Cli::parse());
    if let Some(e) = WRITE_ERROR.lock().unwrap_or_else(|p| p.into_inner()).take() {
        eprintln!("kvmmu: cannot write the output: {e}");
        return ExitCode::from(2);
    }
    code
}

fn run_command(cli: Cli) -> ExitCode {
    match cli.cmd {
        Cmd::Run(a) => run::run(&a),
        Cmd::Report(a) => reportcmd::report(&a),
        Cmd::Check(a) => checkcmd::check(&a),
        Cmd::Merge(m) => merge::merge(&m),
        Cmd::Replay { file, trace } => replay::replay(&file, trace),
        Cmd::List => {
            list::list();
            ExitCode::SUCCESS
        }
        Cmd::Probe {
            scenarios,
            format,
            mode,
        } => probe::probe(&scenarios, format, mode),
        Cmd::Diff {
            scenarios,
            format,
            mode,
            repeat,
            policy,
            predict,
            report,
        } => diff::diff(
            &scenarios,
            format,
            mode,
            predict,
            &policy,
            usize::from(repeat),
            report.as_deref(),
        ),
        Cmd::ProbeChild => ::probe::child_main(),
    }
}
