//! What a probe run observed, and its errors.

use crate::plan::{BackingKind, GuestOp, Mode};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One vCPU exit (or KVM_RUN error) seen while performing an access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    /// The guest's read completed; the value it read (reported through the report page).
    Value(u64),
    /// The guest's write completed (the per-access marker was reached).
    Done,
    /// `KVM_EXIT_MMIO` read of a data gpa; the probe supplies 0.
    MmioRead { gpa: u64, len: u8 },
    /// `KVM_EXIT_MMIO` write to a data gpa (READONLY slot, vvar, or no slot).
    MmioWrite { gpa: u64, len: u8, data: u64 },
    /// `KVM_RUN` = -1/EFAULT with `exit_reason` 0: hva_to_pfn found no pfn (realkvm.md §11).
    Efault,
    /// `KVM_EXIT_INTERNAL_ERROR`; the vCPU is stopped.
    InternalError { suberror: u32 },
    /// `KVM_EXIT_SHUTDOWN` (e.g. triple fault); the vCPU is stopped.
    Shutdown,
    /// The per-KVM_RUN watchdog fired; the vCPU is stopped.
    Timeout,
    /// Anything else, described.
    Other(String),
}

/// One attempt at an access (kept for API compatibility; results store `Exit`s directly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// What happened.
    pub exit: Exit,
}

/// Everything seen while one guest access was performed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessResult {
    /// vCPU index in the plan.
    pub vcpu: usize,
    /// Access index in that vCPU's program.
    pub index: usize,
    /// The access.
    pub op: GuestOp,
    /// Exits in order: first attempt, then retries. Ends with `Value`/`Done` when the access
    /// completed, or with `Efault` when it was skipped.
    pub attempts: Vec<Exit>,
}

/// One userfaultfd page-fault message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UffdEvent {
    /// The Userfault backing.
    pub backing: String,
    /// Page index in the backing.
    pub page: u64,
    /// `UFFD_PAGEFAULT_FLAG_WRITE`.
    pub write: bool,
}

/// The result of [`crate::run`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Plan name.
    pub plan: String,
    /// Mode used.
    pub mode: Mode,
    /// The host's KVM MMU, e.g. "shadow (kvm_pvm, tdp_mmu=N)".
    pub mmu: String,
    /// Every access attempted, ordered by (vcpu, index).
    pub accesses: Vec<AccessResult>,
    /// userfaultfd events in the order the handlers saw them.
    pub uffd_events: Vec<UffdEvent>,
    /// Final host view: (backing, byte offset, u32 at that offset) for each distinct offset the
    /// guest accessed inside a memslot. Offsets the host cannot read (hole, PROT_NONE,
    /// unfaultable vvar page) are left out.
    pub host_reads: Vec<(String, u64, u64)>,
    /// Per [`crate::Plan::peeks`], in order: `0x..` or `EFAULT`.
    #[serde(default)]
    pub peeks: Vec<String>,
    /// Per plan host step (same index as [`crate::Plan::host`]): `None` if it never ran (its
    /// vCPU never got there, or the run stopped first), else `"ok"`, or for a memslot step the
    /// errno name KVM failed it with (e.g. `"EINVAL"`, `"EEXIST"`).
    #[serde(default)]
    pub host_steps: Vec<Option<String>>,
}

/// Why a probe run could not be done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeError {
    /// `/dev/kvm` is missing or unusable.
    NoKvm(String),
    /// The plan is invalid; names what is wrong.
    BadPlan(String),
    /// A system call failed.
    Sys(String),
    /// The run is not a measurement of KVM: something of the probe itself would have been
    /// reached by the guest (a hole of a backing mapped again).
    Invalid(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::NoKvm(s) => write!(f, "KVM unavailable: {s}"),
            ProbeError::BadPlan(s) => write!(f, "bad plan: {s}"),
            ProbeError::Sys(s) => write!(f, "system error: {s}"),
            ProbeError::Invalid(s) => write!(f, "invalid probe run: {s}"),
        }
    }
}

impl std::error::Error for ProbeError {}

/// Shorthand for a `Sys` error from a failed call.
pub(crate) fn sys(what: impl fmt::Display, err: impl fmt::Display) -> ProbeError {
    ProbeError::Sys(format!("{what}: {err}"))
}

/// Shorthand for a `BadPlan` error.
pub(crate) fn bad(msg: impl Into<String>) -> ProbeError {
    ProbeError::BadPlan(msg.into())
}

/// min / median / max of a set of KVM_RUN durations, in microseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Number of samples.
    pub n: usize,
    /// Smallest sample.
    pub min_us: f64,
    /// Median (upper median for even n, as timing.c).
    pub median_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

impl Stats {
    /// Summarises samples given in nanoseconds; `None` if empty.
    pub fn from_ns(samples: &mut [f64]) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        Some(Stats {
            n: samples.len(),
            min_us: samples[0] / 1e3,
            median_us: samples[samples.len() / 2] / 1e3,
            max_us: samples[samples.len() - 1] / 1e3,
        })
    }
}

/// Result of [`crate::measure_first_touch`].
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Backing measured.
    pub kind: BackingKind,
    /// Mode measured.
    pub mode: Mode,
    /// Pages touched per pass (vvar: number of fresh VMs).
    pub pages: u64,
    /// The host's KVM MMU.
    pub mmu: String,
    /// KVM_RUN = one first touch of a data page + one MMIO report exit.
    pub first_touch: Stats,
    /// KVM_RUN = one access to an already-mapped page + one MMIO report exit.
    pub mapped: Stats,
    /// KVM_RUN = MMIO report exit only.
    pub round_trip: Stats,
    /// `first_touch.median_us - mapped.median_us`: the per-page first-touch cost.
    pub first_touch_cost_us: f64,
}
