//! Host steps: each plan step applied to its backing or, for memslot steps, to the VM, and
//! what each did ([`crate::ProbeResult::host_steps`]).
//!
//! Steps run in three places (see [`crate::plan::Step`]): before the vCPUs start (main
//! thread), in a vCPU's thread while it is stopped at an exit, and on the racing host thread.
//! Recording a step allocates nothing, so the racing thread does nothing after the start gate
//! that could map memory into a hole (its allocator arena is set up before the gate).

use crate::backing::Backings;
use crate::layout::PAGE;
use crate::outcome::{bad, ProbeError};
use crate::plan::{HostAction, Plan};
use crate::vm::GuestVm;
use std::sync::Mutex;

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    Ok,
    /// A memslot ioctl failed with this errno.
    Errno(i32),
}

/// The run's host steps and the things they act on.
pub(crate) struct HostSteps<'a> {
    plan: &'a Plan,
    /// The backings, shared with the vCPU threads (and their hole guard).
    pub backings: &'a Mutex<Backings>,
    vm: &'a GuestVm,
    ran: Mutex<Vec<Option<Ran>>>,
}

impl<'a> HostSteps<'a> {
    pub(crate) fn new(
        plan: &'a Plan,
        backings: &'a Mutex<Backings>,
        vm: &'a GuestVm,
    ) -> HostSteps<'a> {
        HostSteps {
            plan,
            backings,
            vm,
            ran: Mutex::new(vec![None; plan.host.len()]),
        }
    }

    /// Runs plan step `k`. A memslot step's errno is its outcome; any other action's failure
    /// is an error, as before.
    pub(crate) fn run(&self, k: usize) -> Result<(), ProbeError> {
        let action = &self.plan.host[k].action;
        let ran = match *action {
            HostAction::SetMemslot(ref m) => {
                // The base of a backing never changes; the lock is not held over the ioctl,
                // which may wait for running vCPUs (SRCU), so their hole guard is not held up.
                let base = self
                    .backings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&m.backing)
                    .map(|hb| hb.base)
                    .ok_or_else(|| bad(format!("no backing named '{}'", m.backing)))?;
                let hva = base + (m.offset_pages * PAGE) as usize;
                errno(self.vm.set_region(m.slot, m.gpa, m.pages, hva, m.readonly))
            }
            HostAction::DeleteMemslot { slot } => errno(self.vm.set_region(slot, 0, 0, 0, false)),
            _ => {
                self.backings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .apply(action)?;
                Ran::Ok
            }
        };
        self.ran.lock().unwrap_or_else(|e| e.into_inner())[k] = Some(ran);
        Ok(())
    }

    /// Per plan step: `None` (never ran), `"ok"`, or the errno name.
    pub(crate) fn outcomes(&self) -> Vec<Option<String>> {
        self.ran
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|r| {
                r.map(|r| match r {
                    Ran::Ok => "ok".to_string(),
                    Ran::Errno(n) => errno_name(n),
                })
            })
            .collect()
    }
}

fn errno(r: Result<(), vmm_sys_util::errno::Error>) -> Ran {
    match r {
        Ok(()) => Ran::Ok,
        Err(e) => Ran::Errno(e.errno()),
    }
}

/// The symbolic name of an errno KVM_SET_USER_MEMORY_REGION can return (`errno N` otherwise).
pub(crate) fn errno_name(n: i32) -> String {
    let name = match n {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENOTTY => "ENOTTY",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return format!("errno {n}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn errno_names() {
        assert_eq!(super::errno_name(libc::EINVAL), "EINVAL");
        assert_eq!(super::errno_name(libc::EEXIST), "EEXIST");
        assert_eq!(super::errno_name(4095), "errno 4095");
    }
}
