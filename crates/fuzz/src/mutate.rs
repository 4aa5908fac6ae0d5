//! Mutations of a scenario text at the character, token and table level.

use std::sync::LazyLock;
use world::SplitMix64;

/// Numbers at and around the format's limits.
const NUMBERS: [&str; 28] = [
    "0",
    "1",
    "2",
    "3",
    "7",
    "8",
    "9",
    "16",
    "17",
    "64",
    "65",
    "255",
    "256",
    "4095",
    "4096",
    "4097",
    "0x10000",
    "0x1BF000",
    "0x1C0000",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "-1",
    "9223372036854775807",
    "0xffffffffffffffff",
    "1.5",
    "1e3",
    "0x",
];

/// Strings the format should refuse, or that mean something in a context other than where
/// a mutation puts them.
const ODD: [&str; 13] = [
    "",
    "x",
    "ram",
    "vcpu0:0",
    "vcpu0:1",
    "vcpu+0:+0",
    "vcpu0:999",
    "vcpu9:0",
    "vcpu0:",
    ":0",
    "r",
    "rw",
    "é\u{0}\u{202e}",
];

/// Every name the format knows (backings, actions, eras, oracles, outcomes) and [`ODD`].
static KNOWN: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut v: Vec<&'static str> = ODD.to_vec();
    v.extend(scenario::Backing::ALL.iter().map(|(b, _, _)| b.name()));
    v.extend(scenario::ACTIONS);
    v.extend(scenario::POLICIES);
    v.extend(scenario::ORACLES);
    v.extend(scenario::OUTCOMES);
    v
});

/// Apply one to four mutations to `base` (`other` supplies spliced lines).
pub fn mutate(base: &str, other: &str, rng: &mut SplitMix64) -> String {
    let mut t = base.to_string();
    for _ in 0..1 + rng.below(4) {
        t = match rng.below(9) {
            0 => replace_char(&t, rng),
            1 | 2 => replace_number(&t, rng),
            3 | 4 => replace_string(&t, rng),
            5 => edit_lines(&t, rng),
            6 => splice(&t, other, rng),
            7 => duplicate_table(&t, rng),
            _ => long_string(&t, rng),
        };
    }
    t
}

fn replace_char(t: &str, rng: &mut SplitMix64) -> String {
    let chars: Vec<char> = t.chars().collect();
    if chars.is_empty() {
        return "[".into();
    }
    let i = rng.below(chars.len());
    let c = [
        '[', ']', '{', '}', '=', '"', ',', '\n', '#', '0', 'x', '\'', '\\', '.', '-', 'é',
    ][rng.below(16)];
    let mut out: String = chars[..i].iter().collect();
    if rng.below(3) != 0 {
        out.push(c);
    }
    out.extend(&chars[i + 1..]);
    out
}

/// Byte ranges of numeric tokens (decimal or 0x-hex), found by scanning.
fn numbers(t: &str) -> Vec<(usize, usize)> {
    let b = t.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let s = i;
            while i < b.len() && (b[i].is_ascii_hexdigit() || b[i] == b'x' || b[i] == b'_') {
                i += 1;
            }
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

fn replace_number(t: &str, rng: &mut SplitMix64) -> String {
    let ns = numbers(t);
    if ns.is_empty() {
        return t.to_string();
    }
    let (s, e) = ns[rng.below(ns.len())];
    format!(
        "{}{}{}",
        &t[..s],
        NUMBERS[rng.below(NUMBERS.len())],
        &t[e..]
    )
}

/// Byte ranges of the insides of `"..."` strings on one line.
fn strings(t: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    for (i, c) in t.char_indices() {
        match (c, open) {
            ('"', None) => open = Some(i + 1),
            ('"', Some(s)) => {
                out.push((s, i));
                open = None;
            }
            ('\n', _) => open = None,
            _ => {}
        }
    }
    out
}

fn replace_string(t: &str, rng: &mut SplitMix64) -> String {
    let ss = strings(t);
    if ss.is_empty() {
        return t.to_string();
    }
    let (s, e) = ss[rng.below(ss.len())];
    format!("{}{}{}", &t[..s], KNOWN[rng.below(KNOWN.len())], &t[e..])
}

fn long_string(t: &str, rng: &mut SplitMix64) -> String {
    let ss = strings(t);
    if ss.is_empty() || rng.below(4) != 0 {
        return replace_string(t, rng);
    }
    let (s, e) = ss[rng.below(ss.len())];
    let n = [256, 4096, 70_000][rng.below(3)];
    format!("{}{}{}", &t[..s], "é".repeat(n), &t[e..])
}

fn edit_lines(t: &str, rng: &mut SplitMix64) -> String {
    let mut lines: Vec<&str> = t.lines().collect();
    if lines.is_empty() {
        return t.to_string();
    }
    let i = rng.below(lines.len());
    match rng.below(3) {
        0 => {
            lines.remove(i);
        }
        1 => lines.insert(i, lines[i]),
        _ => {
            let j = rng.below(lines.len());
            lines.swap(i, j);
        }
    }
    lines.join("\n") + "\n"
}

fn splice(t: &str, other: &str, rng: &mut SplitMix64) -> String {
    let theirs: Vec<&str> = other.lines().collect();
    let mut lines: Vec<&str> = t.lines().collect();
    if theirs.is_empty() {
        return t.to_string();
    }
    let at = rng.below(lines.len() + 1);
    let from = rng.below(theirs.len());
    let n = 1 + rng.below(6);
    for (k, l) in theirs[from..(from + n).min(theirs.len())]
        .iter()
        .enumerate()
    {
        lines.insert(at + k, l);
    }
    lines.join("\n") + "\n"
}

fn duplicate_table(t: &str, rng: &mut SplitMix64) -> String {
    let starts: Vec<usize> = t.match_indices("\n[[").map(|(i, _)| i + 1).collect();
    if starts.is_empty() {
        return t.to_string();
    }
    let k = rng.below(starts.len());
    let s = starts[k];
    let e = t[s + 2..].find("\n[").map_or(t.len(), |i| s + 2 + i + 1);
    format!("{}{}{}", &t[..e], &t[s..e], &t[e..])
}
