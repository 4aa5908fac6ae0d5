//! Scenario harness: builds a world (host mm, drivers, KVM, vCPUs, host threads) from a
//! scenario file for one policy, runs it under a schedule, checks the oracles after every
//! step, and summarises the cell for `kvmmu run`.

mod build;
mod host;
pub mod oracle;
mod run;

pub use build::{build, build_with, Backend, BuildOptions, MappingState, Sys};
pub use oracle::{Oracle, Violation};
pub use run::{run_cell, run_once, CellResult, RunOptions, ScheduleKind, SingleRun};
