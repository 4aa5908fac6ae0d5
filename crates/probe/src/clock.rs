//! The probe's clock: `clock_gettime(CLOCK_MONOTONIC)` as a real system call.
//!
//! glibc's `clock_gettime` (and so `std::time::Instant`, and every std timed wait, which
//! computes an absolute deadline with it) reads the vDSO, whose data is `[vvar]` page 0.
//! The first such read faults that page's PTE into this process, so a guest's later access to
//! a `[vvar]` page the scenario left untouched would find it present and never reach
//! `fixup_user_fault` (issue 10). The syscall reads the same clock without touching `[vvar]`.

use std::time::Duration;

/// Monotonic time since boot, read without the vDSO.
pub(crate) fn now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call; the syscall
    // writes only it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clock_gettime,
            libc::CLOCK_MONOTONIC,
            &mut ts as *mut libc::timespec,
        )
    };
    if r != 0 {
        // CLOCK_MONOTONIC cannot fail on Linux; a zero time only makes deadlines early.
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Blocks while `*word == expected`, at most `timeout` (`None`: until woken). A relative
/// `FUTEX_WAIT` timeout is measured by the kernel, so no clock is read here.
pub(crate) fn futex_wait(
    word: &std::sync::atomic::AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32 for the call; `tsp` is null or points at `ts`,
    // which outlives the call. FUTEX_WAIT only reads both. Spurious returns (EINTR, EAGAIN,
    // ETIMEDOUT) are fine: callers re-check their state.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            tsp,
        );
    }
}

/// Wakes every waiter of `word`.
pub(crate) fn futex_wake(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not access memory through it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_syscall_clock_is_monotonic_and_waits_time_out() {
        let w = std::sync::atomic::AtomicU32::new(0);
        let t0 = now();
        futex_wait(&w, 0, Some(Duration::from_millis(20)));
        assert!(now() - t0 >= Duration::from_millis(19));
        // A changed word returns at once.
        futex_wait(&w, 1, None);
    }
}
