//! Plots as SVG: first-touch cost per backing (model vs real KVM, medians with quartile
//! whiskers) and the checker's executions per scenario (log scale).

use crate::escape::{cut, esc};
use crate::{Costs, Spread};
use std::fmt::Write;

const FONT: &str = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\"";
const MODEL: &str = "#1f77b4";
const REAL: &str = "#d62728";

/// A round axis maximum at or above `x` (1, 2 or 5 × 10^k).
fn nice_max(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return 1.0;
    }
    let e = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * e)
        .find(|&v| v >= x)
        .unwrap_or(10.0 * e)
}

/// Microseconds, to three significant figures at most.
fn us(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// First-touch cost per backing, model and real KVM side by side.
pub fn costs(c: &Costs) -> String {
    let (label_w, plot_w, row_h) = (320.0, 560.0, 20.0);
    let max = c
        .rows
        .iter()
        .flat_map(|r| [r.model, r.real])
        .flatten()
        .map(|s| s.hi.max(s.median))
        .fold(0.0f64, f64::max);
    let xmax = nice_max(max * 1.05);
    let x = |v: f64| label_w + (v.max(0.0) / xmax).min(1.0) * plot_w;
    let top = 40.0;
    let height = top + c.rows.len() as f64 * (2.0 * row_h + 14.0) + 40.0;
    let width = label_w + plot_w + 170.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" {FONT}>\
<title>first-touch cost per backing, model vs real KVM</title><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\
<circle cx=\"{label_w}\" cy=\"14\" r=\"5\" fill=\"{MODEL}\"/><text x=\"{}\" y=\"18\">model ({}), simulated µs per access</text>\
<circle cx=\"{}\" cy=\"14\" r=\"5\" fill=\"{REAL}\"/><text x=\"{}\" y=\"18\">real KVM, µs per access</text>",
        label_w + 10.0,
        esc(&c.model_policy),
        label_w + 330.0,
        label_w + 340.0
    );
    // Grid and axis.
    let axis_y = height - 30.0;
    for i in 0..=5 {
        let v = xmax * i as f64 / 5.0;
        let _ = writeln!(
            o,
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{axis_y:.1}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{1:.1}\" text-anchor=\"middle\" fill=\"#555\">{2}</text>",
            x(v),
            axis_y + 16.0,
            us(v)
        );
    }
    let _ = writeln!(
        o,
        "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#555\">µs</text>",
        label_w + plot_w + 12.0,
        axis_y + 16.0
    );
    let mut y = top + 6.0;
    for r in &c.rows {
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-weight=\"bold\">{}</text>",
            label_w - 12.0,
            y + row_h,
            esc(&cut(&r.backing, 40))
        );
        for (s, colour, who) in [(r.model, MODEL, "model"), (r.real, REAL, "real KVM")] {
            let cy = y + row_h / 2.0 + 2.0;
            match s {
                Some(Spread { median, lo, hi, n }) => {
                    // Whisker from the lower to the upper quartile, ticks at both ends,
                    // the median as a dot.
                    let (xl, xh, xm) = (x(lo), x(hi), x(median));
                    let (t0, t1) = (cy - 4.0, cy + 4.0);
                    let _ = writeln!(
                        o,
                        "<g><title>{who}: median {} µs, quartiles {}–{} µs, {n} samples</title>\
<line x1=\"{xl:.1}\" y1=\"{cy:.1}\" x2=\"{xh:.1}\" y2=\"{cy:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/>\
<line x1=\"{xl:.1}\" y1=\"{t0:.1}\" x2=\"{xl:.1}\" y2=\"{t1:.1}\" stroke=\"{colour}\"/>\
<line x1=\"{xh:.1}\" y1=\"{t0:.1}\" x2=\"{xh:.1}\" y2=\"{t1:.1}\" stroke=\"{colour}\"/>\
<circle cx=\"{xm:.1}\" cy=\"{cy:.1}\" r=\"5\" fill=\"{colour}\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{} µs</text></g>",
                        us(median),
                        us(lo),
                        us(hi),
                        xh.max(xm) + 8.0,
                        cy + 4.0,
                        us(median),
                    );
                }
                None => {
                    let _ = writeln!(
                        o,
                        "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#777\">{who}: not measured</text>",
                        label_w + 4.0,
                        cy + 4.0
                    );
                }
            }
            y += row_h;
        }
        y += 14.0;
    }
    o.push_str("</svg>\n");
    o
}

/// Executions per scenario (summed over its cells), log scale, with the rate.
pub fn executions(rows: &[(String, u64, f64)]) -> String {
    let (label_w, plot_w, row_h) = (200.0, 520.0, 18.0);
    let max = rows.iter().map(|r| r.1).max().unwrap_or(1).max(10) as f64;
    let decades = max.log10().ceil().max(1.0);
    let x = |v: u64| label_w + ((v.max(1) as f64).log10() / decades).min(1.0) * plot_w;
    let top = 24.0;
    let height = top + rows.len() as f64 * row_h + 30.0;
    let width = label_w + plot_w + 220.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" {FONT}>\
<title>checker executions per scenario</title><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\
<text x=\"{label_w}\" y=\"14\" fill=\"#555\">executions per scenario, all its cells (log scale)</text>"
    );
    let axis_y = height - 24.0;
    for d in 0..=decades as u32 {
        let v = 10u64.saturating_pow(d);
        let _ = writeln!(
            o,
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{axis_y:.1}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{1:.1}\" text-anchor=\"middle\" fill=\"#555\">1e{d}</text>",
            x(v),
            axis_y + 14.0
        );
    }
    for (i, (name, n, ms)) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let rate = if *ms > 0.0 {
            format!(", {:.0}/s", *n as f64 / (ms / 1e3))
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
<rect x=\"{label_w}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#4c78a8\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#333\">{n}{rate}</text>",
            label_w - 8.0,
            y + 13.0,
            esc(&cut(name, 28)),
            y + 3.0,
            (x(*n) - label_w).max(1.0),
            row_h - 5.0,
            x(*n) + 6.0,
            y + 13.0
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(3.7), 5.0);
        assert_eq!(nice_max(36.0), 50.0);
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(f64::NAN), 1.0);
        assert_eq!(nice_max(10.0), 10.0);
    }
}
