//! Runs one probe plan in a fresh process (see `probe::isolated`): the plan as JSON on stdin,
//! the result as JSON on stdout. `kvmmu probe-child` is the same for the CLI.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    probe::child_main()
}
