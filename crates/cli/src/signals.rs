//! SIGINT and SIGTERM stop a long `run` or `check` gracefully: the exploration under way is
//! cut short, what finished is printed, and the command exits 130.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A flag raised by SIGINT or SIGTERM (registered once per call; the default action is
/// replaced, so the process prints before it ends).
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registration fails only for forbidden signals; these two are allowed.
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}
