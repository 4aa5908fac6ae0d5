//! Escaping for HTML and SVG (XML) text and attribute values. Every string that came from
//! input — scenario names and files, lock and mapping names, trace text — passes through
//! [`esc`] before it reaches the page.

/// `s` safe inside HTML/XML text and quoted attribute values. Characters XML 1.0 forbids
/// (C0 controls other than tab and newline) become U+FFFD: one of them would make a whole
/// SVG image fail to load.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            '\t' | '\n' => o.push(c),
            '\r' => o.push('\n'),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{fffe}' || c == '\u{ffff}' => {
                o.push('\u{fffd}')
            }
            c => o.push(c),
        }
    }
    o
}

/// At most `n` characters of `s`, ending in `…` when cut.
pub fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_controls_are_neutralised() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("a\u{0}b\u{1b}c\u{7f}"), "a\u{fffd}b\u{fffd}c\u{fffd}");
        assert_eq!(esc("tab\there\r\n"), "tab\there\n\n");
        assert_eq!(esc("é ✓"), "é ✓");
    }

    #[test]
    fn cut_counts_characters() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("éé", 2), "éé");
        assert_eq!(cut("", 0), "");
    }
}
