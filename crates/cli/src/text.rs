//! Text columns without `format!` widths: a width from the input (a scenario name of 64 KiB)
//! must not hit the formatter's 65,535 limit, which panics.

use std::fmt;

/// `s` left-aligned in `width` columns (counted in characters).
pub struct Pad<'a>(pub &'a str, pub usize);

impl fmt::Display for Pad<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        for _ in self.0.chars().count()..self.1 {
            f.write_str(" ")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Pad;

    #[test]
    fn pads_past_the_formatter_limit() {
        let long = "x".repeat(70_000);
        assert_eq!(Pad("ab", 4).to_string(), "ab  ");
        assert_eq!(Pad(&long, 70_001).to_string().len(), 70_001);
        assert_eq!(Pad("é", 2).to_string(), "é ");
    }
}
