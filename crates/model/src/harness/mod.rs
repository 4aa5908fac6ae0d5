//! Scenario harness: builds a world (host mm, drivers, KVM, vCPUs, host threads) from a
//! scenario file for one policy, runs it under a schedule, checks the oracles after every
//! step, and summarises the cell for `kvmmu run`.

mod build;
mod host;
mod monitor;
pub mod oracle;
mod peek;
mod run;

pub use build::{build, build_with, memslot_steps, Backend, BuildOptions, MappingState, Sys};
pub use monitor::{host_step_item, step_bound, uffd_item, CellMonitor, CellProgram, Headline};
pub use oracle::{Oracle, Violation};
pub use run::{
    expectation_met, run_once, run_once_with, seen_allows, seen_mismatches, ScheduleKind, SingleRun,
};
