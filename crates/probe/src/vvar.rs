//! Locating this process's `[vvar]` / `[vvar_vclock]` special mappings.
//!
//! They are VM_IO|VM_PFNMAP read-only mappings (realkvm.md note (a)): the probe may point a
//! memslot at them but never writes, unmaps or advises them. To put a backing right below
//! `[vvar]` (one memslot over both), it moves the vDSO's three mappings together, as CRIU
//! does on restore ([`make_room_below`]).

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

/// Makes `pages` free pages right below `[vvar]` by moving `[vvar]`, `[vvar_vclock]` and
/// `[vdso]` together (`mremap` keeps their relative placement, so the vDSO still finds its
/// data, and the `[vdso]` hook updates the mm's record of it) into a fresh range with room
/// below; returns the new start of `[vvar]`. Their PTEs move with them.
pub(crate) fn make_room_below(pages: u64) -> Result<usize, String> {
    let page = crate::layout::PAGE as usize;
    let (v0, _) = find("vvar").ok_or("[vvar] is not in /proc/self/maps")?;
    let mut trio = vec![find("vvar").expect("found")];
    trio.extend(find("vvar_vclock"));
    trio.extend(find("vdso"));
    let end = trio.iter().map(|r| r.1).max().unwrap_or(v0);
    let below = pages as usize * page;
    // SAFETY: a new PROT_NONE anonymous reservation at a kernel-chosen address aliases
    // nothing; it only holds the range until the moves below replace parts of it.
    let base = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            below + (end - v0),
            rustix::mm::ProtFlags::empty(),
            rustix::mm::MapFlags::PRIVATE,
        )
    }
    .map_err(|e| format!("reserve room for the vDSO: {e}"))? as usize;
    for (a, b) in trio {
        let to = base + below + (a - v0);
        // SAFETY: moves a kernel-made mapping of this process onto part of our own
        // reservation (MREMAP_FIXED replaces it); no Rust reference points into either range,
        // and nothing in the probe reads the vDSO (crate::clock).
        let r = unsafe {
            libc::mremap(
                a as *mut libc::c_void,
                b - a,
                b - a,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                to as *mut libc::c_void,
            )
        };
        if r == libc::MAP_FAILED {
            return Err(format!(
                "mremap the vDSO mapping at {a:#x}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    // SAFETY: the part below the moved [vvar] is still our reservation; unmapping it frees
    // the room the caller maps its backings into (MAP_FIXED_NOREPLACE).
    unsafe { rustix::mm::munmap(base as *mut std::ffi::c_void, below) }
        .map_err(|e| format!("free the room below [vvar]: {e}"))?;
    Ok(base + below)
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
