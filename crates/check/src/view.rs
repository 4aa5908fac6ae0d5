//! The per-actor column view of a counterexample: one column per actor, one row per step
//! (and per trace line of the step), the failing step marked with the oracle it broke.

use crate::Counterexample;
use std::fmt::Write;

/// Widest a column gets; longer lines are cut with `...`.
const COL: usize = 52;
/// Trace lines shown per step.
const LINES: usize = 4;

fn cut(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_string();
    }
    let mut t: String = s.chars().take(w.saturating_sub(3)).collect();
    t.push_str("...");
    t
}

/// Render `ce` as columns. Actors that take no step in it get no column.
pub fn render_columns(ce: &Counterexample) -> String {
    let mut out = String::new();
    let mut cols: Vec<usize> = Vec::new();
    for s in &ce.steps {
        if !cols.contains(&s.actor) {
            cols.push(s.actor);
        }
    }
    cols.sort_unstable();
    let name = |a: usize| {
        ce.actors
            .get(a)
            .cloned()
            .unwrap_or_else(|| format!("actor{a}"))
    };
    // Rows: (step, column, text, first line of the step).
    let mut rows: Vec<(usize, usize, String, bool)> = Vec::new();
    for s in &ce.steps {
        let c = cols.iter().position(|&a| a == s.actor).unwrap_or(0);
        let mut lines: Vec<String> = if s.lines.is_empty() {
            vec![s.what.clone()]
        } else {
            s.lines.clone()
        };
        if lines.len() > LINES {
            let more = lines.len() - (LINES - 1);
            lines.truncate(LINES - 1);
            lines.push(format!("(+{more} more lines)"));
        }
        for (k, l) in lines.into_iter().enumerate() {
            rows.push((s.step, c, l, k == 0));
        }
    }
    let widths: Vec<usize> = (0..cols.len())
        .map(|c| {
            rows.iter()
                .filter(|r| r.1 == c)
                .map(|r| r.2.chars().count())
                .max()
                .unwrap_or(0)
                .max(name(cols[c]).len())
                .min(COL)
        })
        .collect();
    let _ = write!(out, " step ");
    for (c, &a) in cols.iter().enumerate() {
        let _ = write!(out, " | {:<w$}", name(a), w = widths[c]);
    }
    out.push('\n');
    let _ = write!(out, "------");
    for w in &widths {
        let _ = write!(out, "-+-{}", "-".repeat(*w));
    }
    out.push('\n');
    for (step, c, text, first) in &rows {
        if *first {
            let _ = write!(out, "{step:>5} ");
        } else {
            out.push_str("      ");
        }
        for (k, w) in widths.iter().enumerate() {
            let cell = if k == *c {
                cut(text, *w)
            } else {
                String::new()
            };
            let _ = write!(out, " | {cell:<w$}");
        }
        if *first && *step == ce.failing_step {
            let _ = write!(out, "  <== {}", ce.oracle);
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    }
    if ce.failing_step >= ce.steps.len() {
        let _ = writeln!(out, "  (end of run)  <== {}", ce.oracle);
    }
    let _ = writeln!(out, "  {}: {}", ce.oracle, ce.detail);
    out
}
