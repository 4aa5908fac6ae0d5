//! The scenario × policy matrix: one row per scenario, one column per policy, each cell
//! coloured by its verdict and linking to its detail.

use crate::escape::{cut, esc};
use crate::{Cell, Report};
use std::fmt::Write;

/// What a cell's colour says.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No violation, and (for the checker) every interleaving explored.
    Clean,
    /// Violations the scenario's `[expect]` declares: the era's known bug.
    Expected,
    /// Not what the scenario's `[expect]` says (a violation, or a missing one).
    Unexpected,
    /// Clean, but a preemption bound, cap or budget cut the exploration: not a proof.
    Bounded,
    /// Clean, and the guest got `EFAULT` (`KVM_RUN` failed).
    Efault,
    /// Clean, and the access left the fast path: an MMIO exit, an emulated store, a refused
    /// nested map.
    Exit,
}

impl Verdict {
    /// A cell's verdict; `exhaustive`: the exploration claims completeness when nothing cut it.
    pub fn of(c: &Cell, exhaustive: bool) -> Verdict {
        if c.expected == Some(false) {
            Verdict::Unexpected
        } else if !c.violations.is_empty() {
            Verdict::Expected
        } else if exhaustive && !c.complete {
            Verdict::Bounded
        } else {
            match c.headline.as_str() {
                "ok" | "" => Verdict::Clean,
                "EFAULT" => Verdict::Efault,
                _ => Verdict::Exit,
            }
        }
    }

    /// The CSS class.
    pub fn class(self) -> &'static str {
        match self {
            Verdict::Clean => "v-clean",
            Verdict::Expected => "v-expected",
            Verdict::Unexpected => "v-unexpected",
            Verdict::Bounded => "v-bounded",
            Verdict::Efault => "v-efault",
            Verdict::Exit => "v-exit",
        }
    }

    pub const ALL: [Verdict; 6] = [
        Verdict::Clean,
        Verdict::Exit,
        Verdict::Efault,
        Verdict::Expected,
        Verdict::Unexpected,
        Verdict::Bounded,
    ];

    /// The legend's words.
    pub fn meaning(self, exhaustive: bool) -> &'static str {
        match (self, exhaustive) {
            (Verdict::Clean, true) => "clean: proved for every interleaving",
            (Verdict::Clean, false) => "clean: no violation in the sampled schedules",
            (Verdict::Exit, _) => "clean, the access exits: MMIO, emulated store, refused map",
            (Verdict::Efault, _) => "clean, KVM_RUN fails with EFAULT",
            (Verdict::Expected, _) => "violation the scenario expects (the era's bug)",
            (Verdict::Unexpected, _) => "differs from the scenario's [expect]",
            (Verdict::Bounded, _) => "clean under a bound only (not a proof)",
        }
    }
}

/// The anchor of a cell's detail.
pub fn cell_id(scenario: usize, policy: usize) -> String {
    format!("c-{scenario}-{policy}")
}

/// The anchor of a scenario's section.
pub fn scenario_id(scenario: usize) -> String {
    format!("s-{scenario}")
}

/// The legend and the matrix table.
pub fn render(o: &mut String, r: &Report) {
    o.push_str("<div class=\"legend\">");
    for v in Verdict::ALL {
        if v == Verdict::Bounded && !r.exhaustive {
            continue;
        }
        let _ = write!(
            o,
            "<span class=\"chip {}\">{}</span>",
            v.class(),
            esc(v.meaning(r.exhaustive))
        );
    }
    o.push_str("</div>\n<table id=\"matrix\" class=\"matrix\">\n<thead><tr><th>scenario</th>");
    for p in &r.policies {
        let _ = write!(o, "<th>{}</th>", esc(p));
    }
    o.push_str("</tr></thead>\n<tbody>\n");
    for (i, s) in r.scenarios.iter().enumerate() {
        let _ = write!(
            o,
            "<tr><th class=\"row\"><a href=\"#{}\" title=\"{}\">{}</a></th>",
            scenario_id(i),
            esc(&s.description),
            esc(&s.name)
        );
        for (j, c) in s.cells.iter().enumerate() {
            match c {
                None => o.push_str("<td class=\"v-none\">–</td>"),
                Some(c) => {
                    let v = Verdict::of(c, r.exhaustive);
                    let mark = if v == Verdict::Unexpected {
                        "<b class=\"neq\">≠ expect</b> "
                    } else {
                        ""
                    };
                    let sub = if c.executions > 0 {
                        format!("<small>{} exec</small>", c.executions)
                    } else {
                        String::new()
                    };
                    let _ = write!(
                        o,
                        "<td class=\"{}\"><a href=\"#{}\" title=\"{}\">{mark}{}</a>{sub}</td>",
                        v.class(),
                        cell_id(i, j),
                        esc(v.meaning(r.exhaustive)),
                        esc(&cut(&c.text, 120)),
                    );
                }
            }
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table>\n");
}
