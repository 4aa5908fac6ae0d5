//! `kvmmu`: run scenarios on the model (`run`), list what is built in (`list`), run them on
//! the real `/dev/kvm` (`probe`) and compare the two (`diff`).
#![forbid(unsafe_code)]

/// `print!` into a `String` (output is written in one go, so a closed pipe is not a panic).
macro_rules! out {
    ($o:expr, $($t:tt)*) => {{ use std::fmt::Write as _; let _ = write!($o, $($t)*); }};
}
/// `println!` into a `String`.
macro_rules! outln {
    ($o:expr, $($t:tt)*) => {{ use std::fmt::Write as _; let _ = writeln!($o, $($t)*); }};
}

mod input;
mod list;
mod run;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "kvmmu", version, about = "KVM's guest page fault to host pfn path, for device mappings: model, checker, probe")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios under each policy on the model and print the matrix.
    Run {
        /// Built-in scenario names or scenario files (default: every built-in scenario).
        scenarios: Vec<String>,
        /// Policies to run (default: all). Repeatable.
        #[arg(long = "policy", value_name = "P")]
        policies: Vec<String>,
        /// Seed of the random schedules.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Seeded random schedules per cell, in addition to round-robin.
        #[arg(long, default_value_t = 24)]
        schedules: usize,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Print the step trace of each cell (its counterexample if it has one).
        #[arg(long)]
        trace: bool,
    },
    /// List the built-in scenarios, the policies and the oracles.
    List,
}

/// Write program output; a reader that went away (`| head`) is not an error.
pub fn emit(s: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run {
            scenarios,
            policies,
            seed,
            schedules,
            format,
            trace,
        } => run::run(&scenarios, &policies, seed, schedules, format, trace),
        Cmd::List => {
            list::list();
            ExitCode::SUCCESS
        }
    }
}
