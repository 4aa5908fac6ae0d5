//! The VMM loop for one vCPU: run, classify each exit against the access the guest is on,
//! run host steps at their points, and retry or skip after EFAULT.
//!
//! realkvm.md rule: when hva_to_pfn gets no pfn, KVM_RUN returns -1/EFAULT and the
//! instruction is retried on the next KVM_RUN; after the host repairs the mapping the same
//! vCPU can simply be re-run. An access is re-run after EFAULT as often as the plan says
//! (`Vcpu::reruns`; by default as often as host steps wait on its exits), with the steps due
//! at each exit run in between; then it is skipped.

use crate::exits::{run_once, RawExit};
use crate::guest::GuestCode;
use crate::host::HostSteps;
use crate::layout::{mark_off, FINAL_MARK_OFF};
use crate::outcome::{sys, AccessResult, Exit, ProbeError};
use crate::plan::GuestOp;
use crate::watchdog::Watchdog;
use kvm_ioctls::VcpuFd;
use std::collections::BTreeMap;
use std::time::Duration;

/// A runaway guest (e.g. endless MMIO) is stopped after this many exits on one access.
const MAX_EXITS_PER_ACCESS: usize = 256;

/// Everything one vCPU thread needs.
pub(crate) struct VcpuJob<'a> {
    /// vCPU index in the plan.
    pub index: usize,
    /// The vCPU.
    pub vcpu: VcpuFd,
    /// Its program.
    pub program: &'a [GuestOp],
    /// Its assembled code.
    pub code: &'a GuestCode,
    /// Plan host step indices keyed by (access index, exit from 1), run once, in plan order.
    pub steps: BTreeMap<(usize, u32), Vec<usize>>,
    /// Per access: how many times it is re-run after EFAULT.
    pub reruns: Vec<u32>,
    /// Per access: the data an MMIO read is completed with.
    pub mmio: Vec<u64>,
    /// Per-KVM_RUN timeout.
    pub timeout: Duration,
}

/// What the loop does after an exit.
enum Next {
    Continue,
    Stop,
}

struct Driver<'a, 'b> {
    job: VcpuJob<'a>,
    host: &'b HostSteps<'b>,
    cur: usize,
    /// Attempts of the current access that ended (EFAULT or completion).
    exits: u32,
    attempts: Vec<Exit>,
    out: Vec<AccessResult>,
}

impl Driver<'_, '_> {
    fn finish(&mut self) {
        if let Some(op) = self.job.program.get(self.cur) {
            self.out.push(AccessResult {
                vcpu: self.job.index,
                index: self.cur,
                op: *op,
                attempts: std::mem::take(&mut self.attempts),
            });
        }
        self.cur += 1;
        self.exits = 0;
    }

    /// Runs the steps due at exits `exits` of the current access.
    fn run_steps(&mut self, exits: std::ops::RangeInclusive<u32>) -> Result<(), ProbeError> {
        let keys: Vec<(usize, u32)> = self
            .job
            .steps
            .range((self.cur, *exits.start())..=(self.cur, *exits.end()))
            .map(|(k, _)| *k)
            .collect();
        let steps: Vec<usize> = keys
            .iter()
            .flat_map(|k| self.job.steps.remove(k).unwrap_or_default())
            .collect();
        for k in steps {
            self.host.run(k).map_err(|e| match e {
                ProbeError::Sys(s) => ProbeError::Sys(format!(
                    "step after (vcpu {}, access {}): {s}",
                    self.job.index, self.cur
                )),
                other => other,
            })?;
        }
        Ok(())
    }

    /// The guest completed the current access with `exit`: the steps due at this exit and
    /// at any later one it will never have run.
    fn complete(&mut self, exit: Exit) -> Result<Next, ProbeError> {
        // A read completed after an MMIO exit must have read what the VMM supplied.
        // (An MMIO fragment of a page-crossing read supplies only its own bytes.)
        let exit = match (self.attempts.last(), exit) {
            (Some(&Exit::MmioRead { gpa, len }), Exit::Value(v)) => {
                let start = self.job.program.get(self.cur).map_or(gpa, GuestOp::gpa);
                let shift = 8 * gpa.saturating_sub(start).min(7) as u32;
                let mask = u64::MAX >> (64 - 8 * u32::from(len.clamp(1, 8)));
                let want = self.job.mmio.get(self.cur).copied().unwrap_or(0) & mask;
                if (v >> shift) & mask == want {
                    Exit::Value(v)
                } else {
                    Exit::Other(format!(
                        "the guest read {v:#x} after the VMM completed its MMIO read with {want:#x}"
                    ))
                }
            }
            (_, e) => e,
        };
        self.attempts.push(exit);
        self.exits += 1;
        self.run_steps(self.exits..=u32::MAX)?;
        self.finish();
        Ok(Next::Continue)
    }

    /// Records `exit` and stops this vCPU.
    fn stop(&mut self, exit: Exit) -> Next {
        self.attempts.push(exit);
        self.finish();
        Next::Stop
    }

    /// EFAULT on the current access: repair-and-retry if steps are due, else skip it.
    fn fault(&mut self, exit: Exit) -> Result<Next, ProbeError> {
        self.attempts.push(exit);
        let site = self.job.code.sites[self.cur];
        let mut regs = self
            .job
            .vcpu
            .get_regs()
            .map_err(|e| sys("KVM_GET_REGS", e))?;
        if regs.rip != site.insn_rip {
            let msg = format!(
                "fault at rip {:#x}, but access {} is at {:#x}",
                regs.rip, self.cur, site.insn_rip
            );
            return Ok(self.stop(Exit::Other(msg)));
        }
        self.exits += 1;
        let reruns = self.job.reruns.get(self.cur).copied().unwrap_or(0);
        if self.exits <= reruns {
            self.run_steps(self.exits..=self.exits)?;
            return Ok(Next::Continue);
        }
        self.run_steps(self.exits..=u32::MAX)?;
        regs.rip = site.next_rip;
        self.job
            .vcpu
            .set_regs(&regs)
            .map_err(|e| sys("KVM_SET_REGS", e))?;
        self.finish();
        Ok(Next::Continue)
    }

    fn out_of_step(&mut self, what: &str) -> Next {
        let msg = format!(
            "{what} while on access {} (guest and VMM out of step)",
            self.cur
        );
        self.stop(Exit::Other(msg))
    }

    fn handle(&mut self, raw: RawExit) -> Result<Next, ProbeError> {
        let n = self.job.program.len();
        let op = self.job.program.get(self.cur).copied();
        match raw {
            RawExit::Mark { off, .. } if off == FINAL_MARK_OFF && self.cur == n => Ok(Next::Stop),
            _ if self.cur >= n => Err(sys(
                format!("vCPU {}", self.job.index),
                format!("exit after the program ended: {raw:?}"),
            )),
            RawExit::Report { off, data } => match op {
                Some(GuestOp::Read { .. }) if off == mark_off(self.cur) => {
                    self.complete(Exit::Value(data))
                }
                _ => Ok(self.out_of_step(&format!("report at offset {off:#x}"))),
            },
            RawExit::Mark { off, .. } => match op {
                Some(GuestOp::Write { .. }) if off == mark_off(self.cur) => {
                    self.complete(Exit::Done)
                }
                _ => Ok(self.out_of_step(&format!("marker at offset {off:#x}"))),
            },
            RawExit::MmioRead { gpa, len } => {
                self.attempts.push(Exit::MmioRead { gpa, len });
                Ok(Next::Continue)
            }
            RawExit::MmioWrite { gpa, len, data } => {
                self.attempts.push(Exit::MmioWrite { gpa, len, data });
                Ok(Next::Continue)
            }
            RawExit::Efault { exit_reason: 0 } => self.fault(Exit::Efault),
            RawExit::Efault { exit_reason } => self.fault(Exit::Other(format!(
                "EFAULT with exit_reason {exit_reason}"
            ))),
            RawExit::MemoryFault { flags, gpa, size } => self.fault(Exit::Other(format!(
                "KVM_EXIT_MEMORY_FAULT flags={flags:#x} gpa={gpa:#x} size={size:#x}"
            ))),
            RawExit::Timeout => Ok(self.stop(Exit::Timeout)),
            RawExit::Shutdown => Ok(self.stop(Exit::Shutdown)),
            RawExit::Internal { suberror } => Ok(self.stop(Exit::InternalError { suberror })),
            RawExit::Other(s) => Ok(self.stop(Exit::Other(s))),
        }
    }
}

/// Drives one vCPU through its program. Host-step failures are errors; guest outcomes
/// (including timeouts) are results.
pub(crate) fn drive(
    job: VcpuJob<'_>,
    host: &HostSteps<'_>,
    dog: &Watchdog,
) -> Result<Vec<AccessResult>, ProbeError> {
    let timeout = job.timeout;
    let mut d = Driver {
        job,
        host,
        cur: 0,
        exits: 0,
        attempts: Vec::new(),
        out: Vec::new(),
    };
    let mut exits_here = 0;
    let mut last = usize::MAX;
    loop {
        if d.cur != last {
            last = d.cur;
            exits_here = 0;
        }
        exits_here += 1;
        if exits_here > MAX_EXITS_PER_ACCESS {
            d.stop(Exit::Other(format!(
                "more than {MAX_EXITS_PER_ACCESS} exits on one access"
            )));
            break;
        }
        // Before and after every KVM_RUN: no hole of ours may have become mapped (the guest
        // would reach the probe's own memory through it).
        let holes = |h: &HostSteps| {
            h.backings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .check_holes()
        };
        holes(d.host)?;
        let mmio = d.job.mmio.get(d.cur).copied().unwrap_or(0);
        let raw = run_once(&mut d.job.vcpu, dog, timeout, mmio);
        holes(d.host)?;
        if let Next::Stop = d.handle(raw)? {
            break;
        }
    }
    Ok(d.out)
}
