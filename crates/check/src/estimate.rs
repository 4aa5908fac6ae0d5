//! How many executions plain `dfs` would run, without running them: Knuth's estimator of the
//! size of a backtrack tree (D. E. Knuth, "Estimating the efficiency of backtrack programs",
//! Math. Comp. 29, 1975). A probe follows one uniformly random path from the root, multiplying
//! the branching (runnable actors) at every choice point; the product's mean over probes is
//! an unbiased estimate of the number of leaves, i.e. of `dfs` executions. It is what puts a
//! number on the reduction where `dfs` itself cannot finish.

use crate::sample::run_one;
use crate::Error;
use world::{Decision, Program, Scheduler, SplitMix64};

/// An estimate of the number of `dfs` executions.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Estimate {
    pub probes: u64,
    /// Mean of the probes' branching products.
    pub mean: f64,
    /// Standard error of the mean (the estimator is unbiased but heavy-tailed on unbalanced
    /// trees: read it as an order of magnitude when this is close to `mean`).
    pub std_error: f64,
}

/// One probe: uniformly random choices, and the product of the branching along them.
struct Probe {
    rng: SplitMix64,
    product: f64,
}

impl Scheduler for Probe {
    fn pick(&mut self, d: &Decision) -> Option<usize> {
        self.product *= d.enabled.len() as f64;
        Some(d.enabled[self.rng.below(d.enabled.len())])
    }
}

/// Estimate the `dfs` tree size of `program` from `probes` random root-to-leaf paths.
pub fn estimate_dfs(program: &mut dyn Program, probes: u64, seed: u64) -> Result<Estimate, Error> {
    let mut rng = SplitMix64::new(seed);
    let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
    for _ in 0..probes {
        let mut probe = Probe {
            rng: SplitMix64::new(rng.next_u64()),
            product: 1.0,
        };
        run_one(program, &mut probe, false, false)?;
        sum += probe.product;
        sum_sq += probe.product * probe.product;
    }
    let n = probes.max(1) as f64;
    let mean = sum / n;
    let var = if probes > 1 {
        ((sum_sq - n * mean * mean) / (n - 1.0)).max(0.0)
    } else {
        0.0
    };
    Ok(Estimate {
        probes,
        mean,
        std_error: (var / n).sqrt(),
    })
}
