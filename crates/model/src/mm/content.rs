//! Page contents, small enough to copy per run but real enough that a guest read shows which
//! frame it reached.

use super::types::PAGE_SIZE;

/// The bytes of one page: a repeated 32-bit pattern, plus the bytes that differ from it.
///
/// Canonical: `diff` holds exactly the offsets whose byte differs from the pattern, sorted,
/// so two pages with the same bytes are equal and hash alike however they were written.
/// Guests and hosts store a few words per page; a page is never materialised.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Content {
    pattern: u32,
    diff: Vec<(u16, u8)>,
}

impl Content {
    /// A zeroed page.
    pub const ZERO: Content = Content {
        pattern: 0,
        diff: Vec::new(),
    };

    /// A page whose every 32-bit word is `pattern` (0 for a zeroed page).
    pub fn filled(pattern: u32) -> Self {
        Content {
            pattern,
            diff: Vec::new(),
        }
    }

    fn pattern_byte(&self, off: usize) -> u8 {
        self.pattern.to_le_bytes()[off % 4]
    }

    fn byte(&self, off: usize) -> u8 {
        match self.diff.binary_search_by_key(&(off as u16), |d| d.0) {
            Ok(i) => self.diff[i].1,
            Err(_) => self.pattern_byte(off),
        }
    }

    fn set_byte(&mut self, off: usize, b: u8) {
        let same = b == self.pattern_byte(off);
        match self.diff.binary_search_by_key(&(off as u16), |d| d.0) {
            Ok(i) if same => {
                self.diff.remove(i);
            }
            Ok(i) => self.diff[i].1 = b,
            Err(_) if same => {}
            Err(i) => self.diff.insert(i, (off as u16, b)),
        }
    }

    /// Little-endian load of `size` (1..=8) bytes at `off`; a load may not cross the page.
    pub fn read(&self, off: u64, size: u8) -> u64 {
        let off = off as usize;
        let mut v = 0u64;
        for i in (0..size as usize).rev() {
            v = (v << 8) | u64::from(self.byte((off + i) % PAGE_SIZE as usize));
        }
        v
    }

    /// Little-endian store of `size` bytes of `value` at `off`.
    pub fn write(&mut self, off: u64, size: u8, value: u64) {
        for i in 0..size as usize {
            self.set_byte(
                (off as usize + i) % PAGE_SIZE as usize,
                (value >> (8 * i)) as u8,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Content;

    #[test]
    fn equal_bytes_are_equal_contents() {
        let mut a = Content::filled(0x1122_3344);
        assert_eq!(a.read(4, 4), 0x1122_3344);
        a.write(8, 4, 0xdead_beef);
        assert_eq!(a.read(8, 4), 0xdead_beef);
        assert_eq!(a.read(6, 4), 0xbeef_1122);
        assert_ne!(a, Content::filled(0x1122_3344));
        // Writing the pattern back leaves no trace.
        a.write(8, 4, 0x1122_3344);
        assert_eq!(a, Content::filled(0x1122_3344));
        let mut b = Content::filled(0);
        b.write(4095, 1, 0x7f);
        assert_eq!(b.read(4095, 1), 0x7f);
    }
}
