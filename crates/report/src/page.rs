//! The page: `index.html` with inline CSS and the SVGs it shows as images.

use crate::escape::{cut, esc};
use crate::matrix::{self, cell_id, scenario_id, Verdict};
use crate::{plot, timeline, Comparison, Report, Scenario, Site};
use std::fmt::Write;

/// No fetches but the report's own images: a stray remote URL is refused and shows up as a
/// console error, which the browser test catches.
const CSP: &str = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'";

const CSS: &str = "body{font:14px/1.4 'DejaVu Sans',Helvetica,Arial,sans-serif;margin:24px;color:#1b1b1b;max-width:1900px}\
h1{margin:0 0 4px}h2{margin-top:36px;border-bottom:1px solid #ccc}h3{margin:22px 0 6px}h4{margin:14px 0 4px}\
code,.mono{font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:12.5px}\
.meta{color:#555}.note{color:#8a5300}\
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #c9ced6;padding:4px 7px;vertical-align:top;text-align:left}\
thead th{background:#eef1f5;position:sticky;top:0}\
.matrix td{font-size:12.5px;min-width:120px;max-width:240px}.matrix td a{color:inherit;text-decoration:none;display:block}\
.matrix td small{display:block;color:#555;font-size:10.5px}.matrix th.row{white-space:nowrap;font-weight:600}\
.matrix td:hover{outline:2px solid #333}\
.v-clean{background:#c8ebc9}.v-expected{background:#ffd591}.v-unexpected{background:#ff8f85;font-weight:bold}\
.v-bounded{background:repeating-linear-gradient(45deg,#d9e6f5,#d9e6f5 6px,#c4d6ee 6px,#c4d6ee 12px)}\
.v-efault{background:#dccff3}.v-exit{background:#c9e2ff}.v-none{background:#f4f4f4;color:#999}\
.legend{margin:10px 0}.chip{display:inline-block;padding:3px 9px;margin:0 6px 6px 0;border:1px solid #aab;border-radius:3px;font-size:12.5px}\
.neq{color:#7a0000}.agree{background:#c8ebc9}.disagree{background:#ff8f85}\
.tl{overflow-x:auto;border:1px solid #ddd;padding:6px;background:#fff}\
.viol{margin-left:12px}.errors{color:#b00016;white-space:pre-wrap}nav a{margin-right:14px}";

/// Records script errors and images that failed to load into the DOM (`data-errors`,
/// `#page-errors`) and marks the page loaded, for the headless-browser test.
const SCRIPT: &str = "(function(){var errs=[];\
window.addEventListener('error',function(e){var t=e.target;errs.push(t&&t.tagName?('load failed: '+(t.src||t.tagName)):String(e.message));},true);\
window.addEventListener('load',function(){var im=document.images;for(var i=0;i<im.length;i++){if(!im[i].complete||im[i].naturalWidth===0){errs.push('image did not load: '+im[i].getAttribute('src'));}}\
var d=document.documentElement;d.setAttribute('data-errors',String(errs.length));\
if(errs.length){document.getElementById('page-errors').textContent=errs.join('\\n');}\
d.setAttribute('data-report-loaded','yes');});})();";

pub fn render(r: &Report) -> Site {
    let mut svgs = Vec::new();
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\
<title>kvmmu report</title><style>{CSS}</style><script>{SCRIPT}</script></head>\n<body>\n\
<h1>kvmmu report</h1>\n<p class=\"meta\">kvmmu {} · <code>{}</code> · {}</p>\n<div id=\"page-errors\" class=\"errors\"></div>\n",
        esc(&r.version),
        esc(&r.command),
        esc(&r.exploration)
    );
    for n in &r.notes {
        let _ = writeln!(o, "<p class=\"note\">{}</p>", esc(n));
    }
    o.push_str("<nav><a href=\"#matrix-h\">matrix</a>");
    if r.exhaustive && has_cells(r) {
        o.push_str("<a href=\"#checker\">checker statistics</a>");
    }
    o.push_str("<a href=\"#costs\">fault cost</a><a href=\"#kvm\">real KVM</a><a href=\"#scenarios\">scenarios</a></nav>\n");
    if has_cells(r) {
        o.push_str("<h2 id=\"matrix-h\">Scenario × policy</h2>\n<p class=\"meta\">Each cell lists the oracles its exploration violated, or else the most serious outcome of the guest's accesses; click a cell for its detail and counterexample timelines.</p>\n");
        matrix::render(&mut o, r);
        summary(&mut o, r);
    }
    if r.exhaustive && has_cells(r) {
        checker(&mut o, r, &mut svgs);
    }
    costs(&mut o, r, &mut svgs);
    kvm_summary(&mut o, r);
    o.push_str("<h2 id=\"scenarios\">Scenarios</h2>\n");
    for (i, s) in r.scenarios.iter().enumerate() {
        scenario(&mut o, r, i, s, &mut svgs);
    }
    o.push_str("</body></html>\n");
    Site { index: o, svgs }
}

fn has_cells(r: &Report) -> bool {
    r.scenarios
        .iter()
        .any(|s| s.cells.iter().any(Option::is_some))
}

fn summary(o: &mut String, r: &Report) {
    let mut counts = [0usize; Verdict::ALL.len()];
    for c in r.scenarios.iter().flat_map(|s| s.cells.iter().flatten()) {
        let v = Verdict::of(c, r.exhaustive);
        if let Some(k) = Verdict::ALL.iter().position(|&x| x == v) {
            counts[k] += 1;
        }
    }
    let parts: Vec<String> = Verdict::ALL
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(v, n)| format!("{n} {}", v.meaning(r.exhaustive)))
        .collect();
    let _ = writeln!(o, "<p id=\"summary\">{}</p>", esc(&parts.join(" · ")));
}

fn checker(o: &mut String, r: &Report, svgs: &mut Vec<(String, String)>) {
    let cells: Vec<&crate::Cell> = r
        .scenarios
        .iter()
        .flat_map(|s| s.cells.iter().flatten())
        .collect();
    let execs: u64 = cells.iter().map(|c| c.executions).sum();
    let ms: f64 = cells.iter().map(|c| c.elapsed_ms).sum();
    let est: Vec<(f64, u64)> = cells
        .iter()
        .filter_map(|c| c.dfs_estimate.map(|e| (e, c.executions)))
        .collect();
    let _ = write!(
        o,
        "<h2 id=\"checker\">Checker statistics</h2>\n<table><tr><th>cells</th><th>executions</th><th>exploration time (sum over cells)</th><th>executions/s</th><th>reduction (dfs estimate / dpor)</th></tr>\
<tr><td>{}</td><td>{execs}</td><td>{:.1} s</td><td>{:.0}</td><td>{}</td></tr></table>\n",
        cells.len(),
        ms / 1e3,
        execs as f64 / (ms / 1e3).max(1e-9),
        if est.is_empty() {
            "not estimated (<code>--estimate-dfs N</code>)".to_string()
        } else {
            let (d, p) = est
                .iter()
                .fold((0.0, 0u64), |(d, p), (e, x)| (d + e, p + x));
            format!("{:.1}× over {} cells", d / p.max(1) as f64, est.len())
        }
    );
    let rows: Vec<(String, u64, f64)> = r
        .scenarios
        .iter()
        .map(|s| {
            let c = s.cells.iter().flatten();
            (
                s.name.clone(),
                c.clone().map(|c| c.executions).sum(),
                c.map(|c| c.elapsed_ms).sum(),
            )
        })
        .collect();
    let name = "svg/checker.svg".to_string();
    svgs.push((name.clone(), plot::executions(&rows)));
    let _ = writeln!(
        o,
        "<img src=\"{name}\" alt=\"executions per scenario (log scale)\">"
    );
}

fn costs(o: &mut String, r: &Report, svgs: &mut Vec<(String, String)>) {
    o.push_str("<h2 id=\"costs\">Fault cost: first touch per backing</h2>\n");
    let Some(c) = &r.costs else {
        o.push_str("<p class=\"meta\">Not measured: make the report with <code>--measure</code> (a few seconds).</p>\n");
        return;
    };
    let _ = writeln!(
        o,
        "<p class=\"meta\">Per access, µs: median, whiskers at the quartiles. Real KVM: {} (native CPL3 guest; cost = first-touch median − mapped median of each run). Model: the same shape under {}, the simulator's time per first touch minus per SPTE hit — the cost of simulating the path, not a kernel-time prediction. Measured in {:.1} s.</p>",
        esc(&c.real),
        esc(&c.model_policy),
        c.seconds
    );
    o.push_str("<table><tr><th>backing</th><th>model median (quartiles)</th><th>real KVM median (quartiles)</th><th>real / model</th></tr>\n");
    let f = |s: Option<crate::Spread>| {
        s.map_or("n/a".to_string(), |s| {
            format!("{:.3} ({:.3}–{:.3}, n={})", s.median, s.lo, s.hi, s.n)
        })
    };
    for row in &c.rows {
        let ratio = match (row.model, row.real) {
            (Some(m), Some(k)) if m.median > 0.0 => format!("{:.1}", k.median / m.median),
            _ => "n/a".into(),
        };
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{ratio}</td></tr>",
            esc(&row.backing),
            f(row.model),
            f(row.real)
        );
    }
    o.push_str("</table>\n");
    let name = "svg/costs.svg".to_string();
    svgs.push((name.clone(), plot::costs(c)));
    let _ = writeln!(
        o,
        "<img src=\"{name}\" alt=\"first-touch cost per backing, model vs real KVM\">"
    );
}

fn kvm_summary(o: &mut String, r: &Report) {
    o.push_str("<h2 id=\"kvm\">Model vs real KVM</h2>\n");
    let compared: Vec<(usize, &Scenario)> = r
        .scenarios
        .iter()
        .enumerate()
        .filter(|(_, s)| s.comparison.is_some())
        .collect();
    if compared.is_empty() {
        o.push_str("<p class=\"meta\">The probe did not run for this report.</p>\n");
        return;
    }
    o.push_str("<table><tr><th>scenario</th><th>model vs real KVM</th></tr>\n");
    for (i, s) in compared {
        let (cls, text) = match &s.comparison {
            Some(Comparison::Compared { accesses, .. }) => {
                let bad = accesses.iter().filter(|a| !a.agree).count();
                if bad == 0 {
                    ("agree", format!("agree on {} accesses", accesses.len()))
                } else {
                    (
                        "disagree",
                        format!("{bad} of {} rows differ", accesses.len()),
                    )
                }
            }
            Some(Comparison::Skipped(why)) => ("", format!("skipped: {why}")),
            Some(Comparison::Failed(e)) => ("disagree", format!("failed: {e}")),
            None => continue,
        };
        let _ = writeln!(
            o,
            "<tr><td><a href=\"#{}-kvm\">{}</a></td><td class=\"{cls}\">{}</td></tr>",
            scenario_id(i),
            esc(&s.name),
            esc(&cut(&text, 200))
        );
    }
    o.push_str("</table>\n");
}

fn scenario(o: &mut String, r: &Report, i: usize, s: &Scenario, svgs: &mut Vec<(String, String)>) {
    let _ = writeln!(
        o,
        "<section id=\"{}\"><h3>{}</h3>\n<p>{} <span class=\"meta\">({})</span></p>",
        scenario_id(i),
        esc(&s.name),
        esc(&s.description),
        esc(&s.origin)
    );
    if s.cells.iter().any(Option::is_some) {
        o.push_str("<table><tr><th>policy</th><th>verdict</th><th>executions</th><th>complete</th><th>time</th></tr>\n");
        for (j, c) in s.cells.iter().enumerate() {
            let Some(c) = c else { continue };
            let v = Verdict::of(c, r.exhaustive);
            let complete = if c.complete {
                "yes".to_string()
            } else {
                let mut t = format!("no: {}", c.cuts.join(", "));
                if let Some(w) = &c.bound_reason {
                    t.push_str(&format!(" — {w}"));
                }
                t
            };
            let _ = writeln!(
                o,
                "<tr id=\"{}\"><td>{}</td><td class=\"{}\">{}{}</td><td>{}</td><td>{}</td><td>{:.2} s</td></tr>",
                cell_id(i, j),
                esc(&c.policy),
                v.class(),
                esc(&c.text),
                if c.expected == Some(false) {
                    " <b class=\"neq\">(differs from [expect])</b>"
                } else {
                    ""
                },
                c.executions,
                esc(&complete),
                c.elapsed_ms / 1e3
            );
        }
        o.push_str("</table>\n");
    }
    for (j, c) in s.cells.iter().enumerate() {
        let Some(c) = c else { continue };
        for (k, v) in c.violations.iter().enumerate() {
            let _ = writeln!(
                o,
                "<div class=\"viol\"><h4>{} / {}: <span class=\"neq\">{}</span></h4><p>{} <span class=\"meta\">({} of {} executions fail it)</span></p>",
                esc(&s.name),
                esc(&c.policy),
                esc(&v.oracle),
                esc(&v.detail),
                v.executions,
                c.executions
            );
            if let Some(t) = &v.timeline {
                let replay = t.replay.as_ref().map_or(String::new(), |p| {
                    format!(" · replay: <code>{}</code>", esc(p))
                });
                let _ = writeln!(
                    o,
                    "<p class=\"meta\">Counterexample: {} preemption(s), {} steps, {}{replay}</p>",
                    t.preemptions,
                    t.steps.len(),
                    if t.confirmed {
                        "confirmed by replay"
                    } else {
                        "not confirmed"
                    }
                );
                let name = format!("svg/t-{i}-{j}-{k}.svg");
                svgs.push((name.clone(), timeline::render(t)));
                let _ = writeln!(
                    o,
                    "<div class=\"tl\"><img src=\"{name}\" alt=\"timeline of the counterexample for {}\"></div>",
                    esc(&v.oracle)
                );
            }
            o.push_str("</div>\n");
        }
    }
    if let Some(cmp) = &s.comparison {
        comparison(o, i, cmp);
    }
    o.push_str("</section>\n");
}

fn comparison(o: &mut String, i: usize, c: &Comparison) {
    let _ = write!(
        o,
        "<h4 id=\"{}-kvm\">Model vs real KVM</h4>",
        scenario_id(i)
    );
    match c {
        Comparison::Skipped(why) => {
            let _ = writeln!(o, "<p class=\"meta\">Not run on real KVM: {}</p>", esc(why));
        }
        Comparison::Failed(e) => {
            let _ = writeln!(o, "<p class=\"neq\">The comparison failed: {}</p>", esc(e));
        }
        Comparison::Compared {
            mode,
            mmu,
            model_policy,
            accesses,
            notes,
            fails,
        } => {
            let _ = writeln!(
                o,
                "<p class=\"meta\">{} mode · real MMU: {} · model: {}, host steps before the vCPUs{}</p>",
                esc(mode),
                esc(mmu),
                esc(model_policy),
                if *fails {
                    ""
                } else {
                    " · differences are not failures in this mode"
                }
            );
            for n in notes {
                let _ = writeln!(o, "<p class=\"note\">note: {}</p>", esc(n));
            }
            o.push_str("<table class=\"mono\"><tr><th>access</th><th>model</th><th>real KVM</th><th>agree</th></tr>\n");
            for a in accesses {
                let _ = writeln!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                    esc(&a.access),
                    esc(&a.model),
                    esc(&a.kvm),
                    if a.agree { "agree" } else { "disagree" },
                    if a.agree { "yes" } else { "NO" }
                );
            }
            o.push_str("</table>\n");
        }
    }
}
