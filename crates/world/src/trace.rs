//! Human-readable step traces.

use crate::ActorId;
use std::fmt;

/// One line of a trace: which actor, in which kernel function, did what, at which step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    pub step: u64,
    pub actor: ActorId,
    /// Depth of the kernel-function stack, for indentation.
    pub depth: u16,
    pub func: &'static str,
    pub text: String,
}

/// The trace of one run, with the actor names needed to print it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    pub actors: Vec<String>,
    pub entries: Vec<TraceEntry>,
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.actors.iter().map(|a| a.len()).max().unwrap_or(0);
        for e in &self.entries {
            let who = self.actors.get(e.actor).map(String::as_str).unwrap_or("?");
            let indent = "  ".repeat(e.depth as usize);
            if e.func.is_empty() {
                writeln!(f, "{:>5}  {who:<w$}  {indent}{}", e.step, e.text)?;
            } else {
                writeln!(
                    f,
                    "{:>5}  {who:<w$}  {indent}{}: {}",
                    e.step, e.func, e.text
                )?;
            }
        }
        Ok(())
    }
}
