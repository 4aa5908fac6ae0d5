//! What an explorer needs from a system under test: fresh executions, each with a monitor
//! that judges it step by step. The system (kvmmu's scenario harness) implements these; an
//! explorer (the `check` crate) drives them, so neither knows the other.

use crate::{Status, StepRecord, World};

/// An oracle's finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The oracle's name (`no-freed-frame`).
    pub oracle: &'static str,
    /// The step after which it was found.
    pub step: u64,
    pub detail: String,
}

/// What an execution ended in, for people: a name and a severity, so an explorer can rank
/// and group outcomes without knowing what they mean. Ordered by `rank` (0 = most serious).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Headline {
    pub rank: u8,
    pub name: &'static str,
}

impl Headline {
    /// An execution stopped at the step bound (a livelock, or a bound too small): ranked
    /// with the most serious, since nothing after it was seen.
    pub const DIVERGED: Headline = Headline {
        rank: 0,
        name: "diverged",
    };
}

impl Default for Headline {
    fn default() -> Self {
        Headline {
            rank: u8::MAX,
            name: "",
        }
    }
}

/// What an execution showed, beyond its failures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// A digest of the final state and of everything the actors observed, identical for
    /// executions that differ only in the order of independent steps.
    pub fingerprint: u64,
    /// The headline of what happened (`ok`, `EFAULT`, `MMIO`, ...).
    pub headline: Headline,
    /// What each observable thing ended in, one line each (`vcpu0 read32 0x10000: 0x1`).
    pub outcomes: Vec<String>,
}

/// FNV-1a, 64 bits: a hash whose value is fixed by its definition (fingerprints and content
/// hashes are compared across runs and written to files).
#[derive(Clone, Debug)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A fast hasher for in-memory digests (fingerprints of end states, computed once per
/// execution): eight bytes at a time, multiply-mix. Not stable across kvmmu versions; use
/// [`fnv64`] for anything written to a file.
#[derive(Clone, Debug, Default)]
pub struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn mix(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        z ^ (z >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(b) ^ (rest.len() as u64) << 56);
        }
    }

    fn write_u8(&mut self, v: u8) {
        self.mix(u64::from(v));
    }

    fn write_u32(&mut self, v: u32) {
        self.mix(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }

    fn write_usize(&mut self, v: usize) {
        self.mix(v as u64);
    }

    fn write_i64(&mut self, v: i64) {
        self.mix(v as u64);
    }
}

/// The FNV-1a hash of `bytes`.
pub fn fnv64(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = Fnv64::default();
    h.write(bytes);
    h.finish()
}

/// Judges one execution.
pub trait Monitor {
    /// After each step. Findings go to `out`.
    fn step(&mut self, rec: &StepRecord, step: u64, out: &mut Vec<Failure>);
    /// After the run ended, however it ended.
    fn end(&mut self, status: &Status, steps: u64, out: &mut Vec<Failure>);
    /// What the execution showed (called after [`Monitor::end`]); `outcomes` is filled
    /// only when `detail` is asked for (it costs formatting on every execution).
    fn observe(&self, detail: bool) -> Observation;
}

/// A system that can be run again and again from its initial state.
pub trait Program {
    /// A fresh world, ready to run, with the monitor of this execution.
    fn instance(&mut self) -> Result<(World, Box<dyn Monitor>), String>;
}
