//! Page contents, small enough to copy per run but real enough that a guest read shows which
//! frame it reached.

use super::types::PAGE_SIZE;

/// The bytes of one page: a repeated 32-bit pattern until something writes, then a full copy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Content {
    pattern: u32,
    bytes: Option<Box<[u8]>>,
}

impl Content {
    /// A page whose every 32-bit word is `pattern` (0 for a zeroed page).
    pub fn filled(pattern: u32) -> Self {
        Content {
            pattern,
            bytes: None,
        }
    }

    fn byte(&self, off: usize) -> u8 {
        match &self.bytes {
            Some(b) => b[off],
            None => self.pattern.to_le_bytes()[off % 4],
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
        if self.bytes.is_none() {
            let b: Vec<u8> = (0..PAGE_SIZE as usize).map(|i| self.byte(i)).collect();
            self.bytes = Some(b.into_boxed_slice());
        }
        let b = self.bytes.as_mut().expect("materialised above");
        for i in 0..size as usize {
            b[(off as usize + i) % PAGE_SIZE as usize] = (value >> (8 * i)) as u8;
        }
    }
}
