//! One run per fresh process.
//!
//! A process keeps what it ever faulted into its page tables: once anything in it read the
//! vDSO clock, or a guest of an earlier run touched `[vvar]` page 0, that page is present for
//! good (`MADV_DONTNEED` refuses `VM_PFNMAP`; `fork` copies PFNMAP PTEs), and a test harness
//! reads the clock all the time. So `kvmmu probe`/`diff` run every scenario in a new process
//! that starts from `exec`: the parent sends the plan as JSON on the child's stdin, the child
//! ([`child_main`]) runs it and answers with the result as JSON on stdout.

use crate::outcome::{ProbeError, ProbeResult};
use crate::plan::Plan;
use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};

/// Runs `plan` in the process `child` starts, which must call [`child_main`] (e.g. `kvmmu
/// probe-child`).
pub fn run_isolated(plan: &Plan, child: &mut Command) -> Result<ProbeResult, ProbeError> {
    let text = serde_json::to_string(plan)
        .map_err(|e| ProbeError::Sys(format!("encode the plan: {e}")))?;
    let mut c = child
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| ProbeError::Sys(format!("start the probe process: {e}")))?;
    let mut stdin = c.stdin.take();
    let sent = stdin.as_mut().map(|s| s.write_all(text.as_bytes()));
    drop(stdin);
    let mut out = String::new();
    let got = c.stdout.take().map(|mut s| s.read_to_string(&mut out));
    let status = c
        .wait()
        .map_err(|e| ProbeError::Sys(format!("wait for the probe process: {e}")))?;
    if !status.success() {
        return Err(ProbeError::Sys(format!(
            "the probe process failed: {status}"
        )));
    }
    if let Some(Err(e)) = sent {
        return Err(ProbeError::Sys(format!("send the plan: {e}")));
    }
    if let Some(Err(e)) = got {
        return Err(ProbeError::Sys(format!("read the probe's answer: {e}")));
    }
    serde_json::from_str::<Result<ProbeResult, ProbeError>>(&out)
        .map_err(|e| ProbeError::Sys(format!("decode the probe's answer: {e}")))?
}

/// The child's side: reads one plan (JSON) from stdin, runs it, writes the result as JSON to
/// stdout. Nothing before the run may read the clock or touch memory a backing could reuse.
pub fn child_main() -> ExitCode {
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("probe-child: read the plan: {e}");
        return ExitCode::from(2);
    }
    let result = match serde_json::from_str::<Plan>(&text) {
        Ok(plan) => crate::run(&plan),
        Err(e) => Err(ProbeError::BadPlan(format!("decode the plan: {e}"))),
    };
    let answer = match serde_json::to_string(&result) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("probe-child: encode the result: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    if out
        .write_all(answer.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
