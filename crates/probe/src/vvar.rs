//! Locating this process's `[vvar]` / `[vvar_vclock]` special mappings.
//!
//! They are VM_IO|VM_PFNMAP read-only mappings (realkvm.md note (a)): the probe may point a
//! memslot at them but never writes, unmaps or advises them.

use std::fs;

/// (start, end) of the `/proc/self/maps` entry named exactly `[name]`, if present.
pub(crate) fn find(name: &str) -> Option<(usize, usize)> {
    let maps = fs::read_to_string("/proc/self/maps").ok()?;
    let tag = format!("[{name}]");
    maps.lines().find_map(|line| {
        if line.split_whitespace().last() != Some(tag.as_str()) {
            return None;
        }
        let range = line.split_whitespace().next()?;
        let (a, b) = range.split_once('-')?;
        Some((
            usize::from_str_radix(a, 16).ok()?,
            usize::from_str_radix(b, 16).ok()?,
        ))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn vvar_is_found_and_page_aligned() {
        if let Some((a, b)) = super::find("vvar") {
            assert!(b > a && a % 4096 == 0 && b % 4096 == 0);
        }
        assert_eq!(super::find("no_such_mapping"), None);
    }
}
