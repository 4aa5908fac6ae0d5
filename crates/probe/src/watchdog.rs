//! Per-KVM_RUN watchdog: a timer thread that kicks the vCPU thread with a signal.
//!
//! The C probes use a 2 s SIGALRM per KVM_RUN (kvmp.h `run1`). SIGALRM is process-wide, so
//! here each vCPU thread gets its own timer thread that sends a real-time signal (handler
//! installed without SA_RESTART) to that thread only, making KVM_RUN return EINTR.
//! The kick is repeated every millisecond until the vCPU disarms: a signal that lands just
//! before the thread enters KVM_RUN is consumed in userspace, and the next one finds it inside.
//! So no cross-thread write into `kvm_run.immediate_exit` is needed.
//!
//! Deadlines use [`crate::clock`] and the timer sleeps on a futex with a relative timeout:
//! `Instant` and std's timed waits read the vDSO clock, which would fault `[vvar]` page 0
//! into this process behind the guest's back.

use crate::clock;
use crate::outcome::{sys, ProbeError};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The kick signal, with its no-op handler installed once per process.
fn kick_signal() -> Result<libc::c_int, ProbeError> {
    static SIG: OnceLock<Result<libc::c_int, String>> = OnceLock::new();
    SIG.get_or_init(|| {
        let sig = vmm_sys_util::signal::SIGRTMIN() + 2;
        vmm_sys_util::signal::register_signal_handler(sig, on_kick)
            .map(|()| sig)
            .map_err(|e| format!("sigaction(SIGRTMIN+2): {e}"))
    })
    .clone()
    .map_err(ProbeError::Sys)
}

#[derive(Default)]
struct State {
    /// Deadline and target thread while a KVM_RUN is in progress.
    armed: Option<(Duration, libc::pthread_t)>,
    fired: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped (and woken) on every change of `state`; the timer sleeps on it.
    changed: AtomicU32,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.fetch_add(1, Ordering::SeqCst);
        clock::futex_wake(&self.changed);
    }
}

/// One timer thread serving one vCPU thread.
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the timer thread.
    pub(crate) fn new() -> Result<Watchdog, ProbeError> {
        let sig = kick_signal()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: AtomicU32::new(0),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kvm-watchdog".into())
            .spawn(move || timer(&s, sig))
            .map_err(|e| sys("spawn watchdog", e))?;
        Ok(Watchdog {
            shared,
            thread: Some(thread),
        })
    }

    /// Arms the watchdog for the calling thread; the returned guard disarms on drop.
    pub(crate) fn arm(&self, timeout: Duration) -> Armed<'_> {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let mut st = self.shared.lock();
        st.armed = Some((clock::now() + timeout, me));
        st.fired = false;
        drop(st);
        self.shared.notify();
        Armed { dog: self }
    }
}

/// An armed watchdog; `disarm` (or drop) before the thread does anything else.
pub(crate) struct Armed<'a> {
    dog: &'a Watchdog,
}

impl Armed<'_> {
    /// Disarms; true if the deadline passed (the vCPU was kicked).
    pub(crate) fn disarm(self) -> bool {
        let mut st = self.dog.shared.lock();
        st.armed = None;
        let fired = st.fired;
        st.fired = false;
        fired
        // `self` drops here and disarms again, which is harmless.
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.dog.shared.lock().armed = None;
    }
}

fn timer(s: &Shared, sig: libc::c_int) {
    loop {
        // Read the change counter before the state: a change after this read makes the
        // futex wait return at once.
        let seen = s.changed.load(Ordering::SeqCst);
        let mut st = s.lock();
        if st.stop {
            return;
        }
        let wait = match st.armed {
            None => None,
            Some((deadline, tid)) => {
                let now = clock::now();
                if now >= deadline {
                    st.fired = true;
                    // SAFETY: `tid` is alive: it is armed, and a thread disarms (under this
                    // same lock, which we hold) before it can exit. The signal has a no-op
                    // handler, so delivery only interrupts a blocking call.
                    unsafe { libc::pthread_kill(tid, sig) };
                    Some(Duration::from_millis(1))
                } else {
                    Some(deadline - now)
                }
            }
        };
        drop(st);
        clock::futex_wait(&s.changed, seen, wait);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.notify();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocking_call_is_interrupted_after_the_deadline() {
        let dog = Watchdog::new().unwrap();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let t0 = clock::now();
        let armed = dog.arm(Duration::from_millis(50));
        let mut b = [0u8; 1];
        let e = rustix::io::read(&r, &mut b).unwrap_err();
        assert!(armed.disarm());
        assert_eq!(e, rustix::io::Errno::INTR);
        assert!(clock::now() - t0 >= Duration::from_millis(50));
        let armed = dog.arm(Duration::from_secs(5));
        assert!(!armed.disarm());
    }
}
