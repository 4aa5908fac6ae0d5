//! One KVM_RUN under the watchdog, decoded into an owned `RawExit`.
//!
//! realkvm.md §11 lists what a tool must handle: KVM_EXIT_MMIO (reads are completed with data
//! supplied here: 0), KVM_RUN=-1/EFAULT with exit_reason left at 0, INTERNAL_ERROR, SHUTDOWN,
//! and EINTR from the watchdog's signal.

use crate::layout::{MARK_GPA, PAGE, REPORT_GPA};
use crate::watchdog::Watchdog;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::time::Duration;

/// Poison written to `exit_reason` before each KVM_RUN (as kvmp.h does), to tell
/// "KVM set exit_reason 0" from "unchanged".
const POISON: u32 = 0xdead;

/// A decoded vCPU exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawExit {
    /// MMIO write to the report page at `off`.
    Report { off: u64, data: u64 },
    /// MMIO write to the marker page at `off`.
    Mark { off: u64, data: u64 },
    /// Other MMIO read (completed with 0).
    MmioRead { gpa: u64, len: u8 },
    /// Other MMIO write.
    MmioWrite { gpa: u64, len: u8, data: u64 },
    /// KVM_RUN = -1, EFAULT; `exit_reason` as found afterwards.
    Efault { exit_reason: u32 },
    /// KVM_RUN = -1, EFAULT with KVM_EXIT_MEMORY_FAULT (never seen on this host).
    MemoryFault { flags: u64, gpa: u64, size: u64 },
    /// Watchdog fired.
    Timeout,
    /// KVM_EXIT_SHUTDOWN.
    Shutdown,
    /// KVM_EXIT_INTERNAL_ERROR.
    Internal { suberror: u32 },
    /// Anything else.
    Other(String),
}

fn le(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

/// `mmio`: the data an MMIO read is completed with.
fn decode(
    res: Result<VcpuExit<'_>, vmm_sys_util::errno::Error>,
    mmio: u64,
) -> Result<RawExit, i32> {
    match res {
        Ok(VcpuExit::MmioWrite(gpa, data)) => {
            Ok(if (REPORT_GPA..REPORT_GPA + PAGE).contains(&gpa) {
                RawExit::Report {
                    off: gpa - REPORT_GPA,
                    data: le(data),
                }
            } else if (MARK_GPA..MARK_GPA + PAGE).contains(&gpa) {
                RawExit::Mark {
                    off: gpa - MARK_GPA,
                    data: le(data),
                }
            } else {
                RawExit::MmioWrite {
                    gpa,
                    len: data.len() as u8,
                    data: le(data),
                }
            })
        }
        Ok(VcpuExit::MmioRead(gpa, data)) => {
            let n = data.len().min(8);
            data.fill(0);
            data[..n].copy_from_slice(&mmio.to_le_bytes()[..n]);
            Ok(RawExit::MmioRead {
                gpa,
                len: data.len() as u8,
            })
        }
        Ok(VcpuExit::Shutdown) => Ok(RawExit::Shutdown),
        Ok(VcpuExit::InternalError) => Ok(RawExit::Internal { suberror: u32::MAX }),
        Ok(VcpuExit::MemoryFault { flags, gpa, size }) => {
            Ok(RawExit::MemoryFault { flags, gpa, size })
        }
        Ok(other) => Ok(RawExit::Other(format!("{other:?}"))),
        Err(e) => Err(e.errno()),
    }
}

/// Runs the vCPU once; an MMIO read is completed with `mmio`. Spurious EINTRs (a late kick
/// from an earlier run) are retried.
pub(crate) fn run_once(vcpu: &mut VcpuFd, dog: &Watchdog, timeout: Duration, mmio: u64) -> RawExit {
    for _ in 0..1000 {
        vcpu.get_kvm_run().exit_reason = POISON;
        let armed = dog.arm(timeout);
        let res = decode(vcpu.run(), mmio);
        let fired = armed.disarm();
        let run = vcpu.get_kvm_run();
        return match res {
            Ok(RawExit::Internal { .. }) => {
                // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so the kernel filled the
                // `internal` member of the union.
                let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
                RawExit::Internal { suberror }
            }
            Ok(x) => x,
            Err(libc::EINTR) if fired => RawExit::Timeout,
            Err(libc::EINTR) => continue,
            Err(libc::EFAULT) => RawExit::Efault {
                exit_reason: run.exit_reason,
            },
            Err(e) => RawExit::Other(format!(
                "KVM_RUN errno {e} ({}), exit_reason {}",
                std::io::Error::from_raw_os_error(e),
                run.exit_reason
            )),
        };
    }
    RawExit::Other("KVM_RUN kept returning EINTR".into())
}
