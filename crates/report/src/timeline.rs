//! A counterexample as an SVG timeline. Time runs down, one row per step; one lane per
//! actor that takes a step (vCPU, host thread, the driver code it calls). Each box names the
//! kernel function the actor was in and the event; lock holds are bars at the lane's left
//! edge; a call of the mm's notifier chain (which KVM's invalidation callbacks hang on) is an
//! arrow to the vCPU lanes; the violating step is red and names the oracle it broke.
//!
//! Vertical time keeps every box readable however long the story is; the width only grows
//! with the number of actors.

use crate::escape::{cut, esc};
use crate::Timeline;
use std::fmt::Write;

/// Monospace glyph width and line height at the 11 px font, in px.
const CH: f64 = 6.7;
const LINE: f64 = 14.0;
const GUTTER: f64 = 46.0;
const HEADER: f64 = 46.0;
/// Lock bars live in this strip at the left of each lane.
const BARS: f64 = 18.0;
const PAD: f64 = 6.0;
const GAP: f64 = 4.0;
/// Lane text width bounds, in characters.
const MIN_CHARS: usize = 28;
const MAX_CHARS: usize = 72;
/// Trace lines shown per box.
const MAX_LINES: usize = 6;
/// The annotation column for the violating step.
const NOTE_CHARS: usize = 46;
const LOCK_COLOURS: [&str; 8] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
];

/// A lock one actor held from one step to another (indices into the timeline's steps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockHold {
    pub actor: usize,
    pub lock: String,
    pub from: usize,
    pub to: usize,
    /// Released within the timeline (else still held at its end).
    pub released: bool,
}

/// `(function, event)` of a trace line `function: event`.
fn split(line: &str) -> (&str, &str) {
    match line.split_once(": ") {
        Some((f, e)) if !f.is_empty() && !f.contains(' ') => (f, e),
        _ => ("", line),
    }
}

/// The lock a `lock NAME (mode)`, `trylock NAME` or `unlock NAME` event names, and whether
/// it is taken (`Some(true)`) or released.
fn lock_event(event: &str) -> Option<(String, bool)> {
    let base = |n: &str| n.split(" (").next().unwrap_or(n).to_string();
    if let Some(n) = event.strip_prefix("lock ") {
        Some((base(n), true))
    } else if let Some(n) = event.strip_prefix("trylock ") {
        (!n.ends_with(" failed")).then(|| (base(n), true))
    } else {
        event.strip_prefix("unlock ").map(|n| (base(n), false))
    }
}

/// The lock holds the steps' trace lines show, in order of acquisition.
pub fn lock_holds(t: &Timeline) -> Vec<LockHold> {
    let mut open: Vec<LockHold> = Vec::new();
    let mut done: Vec<LockHold> = Vec::new();
    for (k, s) in t.steps.iter().enumerate() {
        for l in &s.lines {
            let Some((lock, take)) = lock_event(split(l).1) else {
                continue;
            };
            if take {
                open.push(LockHold {
                    actor: s.actor,
                    lock,
                    from: k,
                    to: k,
                    released: false,
                });
            } else if let Some(i) = open
                .iter()
                .rposition(|h| h.actor == s.actor && h.lock == lock)
            {
                let mut h = open.remove(i);
                h.to = k;
                h.released = true;
                done.push(h);
            }
        }
    }
    let last = t.steps.len().saturating_sub(1);
    done.extend(open.into_iter().map(|mut h| {
        h.to = last;
        h
    }));
    done.sort_by_key(|h| (h.from, h.actor));
    done
}

/// Whether a step calls the mm's notifier chain (the mm side, not KVM's callback).
fn notifier_call(line: &str) -> Option<&'static str> {
    match split(line).0 {
        "mmu_notifier_invalidate_range_start" => Some("invalidate_range_start"),
        "mmu_notifier_invalidate_range_end" => Some("invalidate_range_end"),
        _ => None,
    }
}

/// A box's text lines: (bold function, rest).
fn box_lines(t: &Timeline, k: usize) -> Vec<(String, String)> {
    let s = &t.steps[k];
    let mut out = Vec::new();
    let head_func = if s.what == "start" {
        // The actor begins: name the function it starts in (its next step's).
        let entry = t.steps[k + 1..]
            .iter()
            .find(|x| x.actor == s.actor && !x.func.is_empty())
            .map(|x| x.func.clone())
            .or_else(|| s.lines.first().map(|l| split(l).0.to_string()))
            .unwrap_or_default();
        out.push((
            "start".to_string(),
            if entry.is_empty() {
                String::new()
            } else {
                format!(" → {entry}")
            },
        ));
        String::new()
    } else {
        let f = if s.func.is_empty() {
            s.lines
                .first()
                .map(|l| split(l).0.to_string())
                .unwrap_or_default()
        } else {
            s.func.clone()
        };
        let what = match s.what.as_str() {
            "lock" | "unlock" | "trylock" => String::new(),
            w => format!(" · {w}"),
        };
        out.push((f.clone(), what));
        f
    };
    let mut lines: Vec<(String, String)> = s
        .lines
        .iter()
        .map(|l| match split(l) {
            ("", e) => (String::new(), format!("  {e}")),
            (f, e) if f == head_func => (String::new(), format!("  {e}")),
            (f, e) => (format!("  {f}"), format!(": {e}")),
        })
        .collect();
    if lines.len() > MAX_LINES {
        let more = lines.len() - (MAX_LINES - 1);
        lines.truncate(MAX_LINES - 1);
        lines.push((String::new(), format!("  (+{more} more lines)")));
    }
    out.extend(lines);
    out
}

fn chars(l: &(String, String)) -> usize {
    l.0.chars().count() + l.1.chars().count()
}

/// The role shown under an actor's name.
fn role(name: &str) -> &'static str {
    if name.starts_with("vcpu") {
        "vCPU: KVM_RUN"
    } else if name.contains("uffd") || name.contains("userfault") {
        "host thread: uffd handler"
    } else if name.starts_with("vmm") {
        "host thread: the VMM"
    } else {
        "host thread → driver"
    }
}

/// Wrap `s` into lines of at most `w` characters (at spaces where possible).
fn wrap(s: &str, w: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for word in s.split(' ') {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > w {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
        while cur.chars().count() > w {
            let head: String = cur.chars().take(w).collect();
            let tail: String = cur.chars().skip(w).collect();
            out.push(head);
            cur = tail;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Render `t` as a standalone SVG document.
pub fn render(t: &Timeline) -> String {
    let mut lanes: Vec<usize> = t.steps.iter().map(|s| s.actor).collect();
    lanes.sort_unstable();
    lanes.dedup();
    let lane_of = |a: usize| lanes.iter().position(|&x| x == a).unwrap_or(0);
    let name = |a: usize| {
        t.actors
            .get(a)
            .cloned()
            .unwrap_or_else(|| format!("actor{a}"))
    };
    let boxes: Vec<Vec<(String, String)>> = (0..t.steps.len()).map(|k| box_lines(t, k)).collect();
    // Lane widths from their longest line, bounded.
    let mut lane_chars = vec![MIN_CHARS; lanes.len()];
    for (k, s) in t.steps.iter().enumerate() {
        let c = boxes[k].iter().map(chars).max().unwrap_or(0);
        let l = lane_of(s.actor);
        lane_chars[l] = lane_chars[l].max(c.min(MAX_CHARS));
    }
    for (l, &a) in lanes.iter().enumerate() {
        lane_chars[l] = lane_chars[l].max(name(a).chars().count().min(MAX_CHARS));
    }
    let lane_w: Vec<f64> = lane_chars
        .iter()
        .map(|&c| BARS + 2.0 * PAD + c as f64 * CH)
        .collect();
    let lane_x: Vec<f64> = lane_w
        .iter()
        .scan(GUTTER, |x, w| {
            let here = *x;
            *x += w + 10.0;
            Some(here)
        })
        .collect();
    let lanes_end = lane_x
        .last()
        .zip(lane_w.last())
        .map_or(GUTTER, |(x, w)| x + w);
    let note_x = lanes_end + 16.0;
    let width = note_x + NOTE_CHARS as f64 * CH + 20.0;
    // Rows.
    let mut top = Vec::with_capacity(t.steps.len());
    let mut y = HEADER;
    for b in &boxes {
        top.push(y);
        y += b.len() as f64 * LINE + PAD + GAP + 2.0;
    }
    let bottom = |k: usize| top[k] + boxes[k].len() as f64 * LINE + PAD + 2.0;
    let end_fail = t.failing_step >= t.steps.len();
    let note = wrap(&t.detail, NOTE_CHARS);
    let mut height = y + 10.0;
    if end_fail {
        height += 30.0 + note.len() as f64 * LINE;
    }
    let holds = lock_holds(t);
    let mut lock_names: Vec<&str> = holds.iter().map(|h| h.lock.as_str()).collect();
    lock_names.dedup();
    let mut seen = Vec::new();
    lock_names.retain(|n| {
        let new = !seen.contains(n);
        seen.push(*n);
        new
    });
    let legend_y = height;
    height += 24.0 + 16.0 * (lock_names.len().div_ceil(4)) as f64;
    let colour = |lock: &str| {
        let i = lock_names.iter().position(|n| *n == lock).unwrap_or(0);
        LOCK_COLOURS[i % LOCK_COLOURS.len()]
    };

    let mut o = String::new();
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" font-size=\"11\">\n\
<title>{} counterexample: {} actors, {} steps</title>\n\
<style>.f{{font-weight:bold}} .w{{fill:#555}} .box{{fill:#f7f9fc;stroke:#8a99ad}} .fail{{fill:#ffe1dc;stroke:#d0021b;stroke-width:2.5}} .lane{{fill:#eef2f7}} .hd{{font-weight:bold;font-size:12px}} .role{{fill:#555;font-size:10px}} .num{{fill:#777;text-anchor:end}} .bad{{fill:#b00016;font-weight:bold}} .ntf{{stroke:#7b3fb3;stroke-width:1.6;stroke-dasharray:5 3;fill:none}} .ntft{{fill:#7b3fb3;font-size:10px}}</style>\n\
<defs><marker id=\"ah\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#7b3fb3\"/></marker></defs>\n\
<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n",
        esc(&t.oracle),
        lanes.len(),
        t.steps.len()
    );
    // Lanes and their headers.
    for (l, &a) in lanes.iter().enumerate() {
        let _ = writeln!(
            o,
            "<rect class=\"lane\" x=\"{:.1}\" y=\"4\" width=\"{:.1}\" height=\"{:.1}\" rx=\"4\"/>\
<text class=\"hd\" x=\"{:.1}\" y=\"20\">{}</text><text class=\"role\" x=\"{:.1}\" y=\"35\">{}</text>",
            lane_x[l],
            lane_w[l],
            y - 4.0,
            lane_x[l] + BARS + PAD,
            esc(&cut(&name(a), MAX_CHARS)),
            lane_x[l] + BARS + PAD,
            role(&name(a))
        );
    }
    let _ = writeln!(
        o,
        "<text class=\"num\" x=\"{:.1}\" y=\"20\">step</text>",
        GUTTER - 8.0
    );
    // Lock bars, each in the lowest free slot of its lane's strip.
    let mut slots: Vec<(usize, usize, usize)> = Vec::new(); // (actor, slot, to)
    for h in &holds {
        let slot = (0..)
            .find(|s| {
                !slots
                    .iter()
                    .any(|&(a, x, to)| a == h.actor && x == *s && to >= h.from)
            })
            .unwrap_or(0);
        slots.push((h.actor, slot, h.to));
        let x = lane_x[lane_of(h.actor)] + 3.0 + (slot % 3) as f64 * 5.0;
        let (y0, y1) = (top[h.from], bottom(h.to));
        let dash = if h.released {
            ""
        } else {
            " stroke-dasharray=\"4 3\""
        };
        let _ = writeln!(
            o,
            "<line x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{y1:.1}\" stroke=\"{}\" stroke-width=\"4\" stroke-linecap=\"round\"{dash}><title>{} held by {} (steps {}–{}{})</title></line>",
            colour(&h.lock),
            esc(&h.lock),
            esc(&name(h.actor)),
            t.steps[h.from].step,
            t.steps[h.to].step,
            if h.released { "" } else { ", still held" }
        );
    }
    // Boxes.
    for (k, s) in t.steps.iter().enumerate() {
        let l = lane_of(s.actor);
        let bx = lane_x[l] + BARS;
        let bw = lane_w[l] - BARS - 2.0;
        let fail = k == t.failing_step;
        let _ = writeln!(
            o,
            "<text class=\"num\" x=\"{:.1}\" y=\"{:.1}\">{}</text>\
<rect class=\"{}\" x=\"{bx:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" rx=\"3\"/>",
            GUTTER - 8.0,
            top[k] + LINE,
            s.step,
            if fail { "fail" } else { "box" },
            top[k],
            bottom(k) - top[k]
        );
        for (i, (f, rest)) in boxes[k].iter().enumerate() {
            let full = format!("{f}{rest}");
            let shown = cut(&full, lane_chars[l]);
            // Keep the bold function part when it fits whole.
            let fcount = f.chars().count();
            let (fb, rb) = if shown.chars().count() > fcount {
                (f.clone(), shown.chars().skip(fcount).collect::<String>())
            } else {
                (shown.clone(), String::new())
            };
            let cls = if i == 0 { "" } else { " class=\"w\"" };
            let title = if shown != full {
                format!("<title>{}</title>", esc(&full))
            } else {
                String::new()
            };
            let _ = writeln!(
                o,
                "<text x=\"{:.1}\" y=\"{:.1}\" xml:space=\"preserve\"{cls}>{title}<tspan class=\"f\">{}</tspan>{}</text>",
                bx + PAD,
                top[k] + LINE * (i as f64 + 1.0) - 1.0,
                esc(&fb),
                esc(&rb)
            );
        }
        if fail {
            let ym = top[k] + LINE - 4.0;
            let _ = writeln!(
                o,
                "<line x1=\"{:.1}\" y1=\"{ym:.1}\" x2=\"{:.1}\" y2=\"{ym:.1}\" stroke=\"#d0021b\" stroke-width=\"1.5\"/>\
<text class=\"bad\" x=\"{:.1}\" y=\"{:.1}\">✗ violates {}</text>",
                bx + bw,
                note_x - 4.0,
                note_x,
                top[k] + LINE,
                esc(&t.oracle)
            );
            for (i, n) in note.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "<text class=\"w\" x=\"{note_x:.1}\" y=\"{:.1}\">{}</text>",
                    top[k] + LINE * (i as f64 + 2.0),
                    esc(n)
                );
            }
        }
        // Notifier calls: arrows into the vCPUs' KVM.
        for call in s.lines.iter().filter_map(|l| notifier_call(l)) {
            let ym = top[k] + LINE * 0.5 + 3.0;
            for (m, &a) in lanes.iter().enumerate() {
                if a == s.actor || !name(a).starts_with("vcpu") {
                    continue;
                }
                // The arrow ends inside the vCPU's lane, which is empty on this row (one
                // step per row); the label sits beside its head.
                let (x0, x1, tx, anchor) = if m > l {
                    let x1 = lane_x[m] + lane_w[m] * 0.65;
                    (bx + bw, x1, x1 - 6.0, "end")
                } else {
                    let x1 = lane_x[m] + lane_w[m] * 0.35;
                    (bx, x1, x1 + 6.0, "start")
                };
                let _ = writeln!(
                    o,
                    "<line class=\"ntf\" x1=\"{x0:.1}\" y1=\"{ym:.1}\" x2=\"{x1:.1}\" y2=\"{ym:.1}\" marker-end=\"url(#ah)\"/>\
<text class=\"ntft\" text-anchor=\"{anchor}\" x=\"{tx:.1}\" y=\"{:.1}\">mmu notifier → KVM</text>\
<text class=\"ntft\" text-anchor=\"{anchor}\" x=\"{tx:.1}\" y=\"{:.1}\">{call}</text>",
                    ym - 4.0,
                    ym + 11.0
                );
            }
        }
    }
    if end_fail {
        let yy = y + 4.0;
        let _ = writeln!(
            o,
            "<rect class=\"fail\" x=\"{GUTTER:.1}\" y=\"{yy:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"3\"/>\
<text class=\"bad\" x=\"{:.1}\" y=\"{:.1}\">end of run: ✗ violates {}</text>",
            lanes_end - GUTTER,
            20.0 + note.len() as f64 * LINE,
            GUTTER + PAD,
            yy + LINE,
            esc(&t.oracle)
        );
        for (i, n) in note.iter().enumerate() {
            let _ = writeln!(
                o,
                "<text class=\"w\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                GUTTER + PAD,
                yy + LINE * (i as f64 + 2.0),
                esc(n)
            );
        }
    }
    // Legend: lock colours, the arrow, the red box.
    let mut lx = GUTTER;
    let ly = legend_y + 14.0;
    let _ = writeln!(
        o,
        "<text class=\"w\" x=\"{lx:.1}\" y=\"{ly:.1}\">locks held:</text>"
    );
    lx += 90.0;
    for (i, n) in lock_names.iter().enumerate() {
        let (cx, cy) = (lx + (i % 4) as f64 * 230.0, ly + (i / 4) as f64 * 16.0);
        let _ = writeln!(
            o,
            "<rect x=\"{cx:.1}\" y=\"{:.1}\" width=\"14\" height=\"5\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{cy:.1}\">{}</text>",
            cy - 5.0,
            colour(n),
            cx + 18.0,
            esc(&cut(n, 28))
        );
    }
    if lock_names.is_empty() {
        let _ = writeln!(o, "<text x=\"{lx:.1}\" y=\"{ly:.1}\">none</text>");
    }
    o.push_str("</svg>\n");
    o
}
