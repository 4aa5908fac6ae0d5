//! Guest physical layout, as in probes/kvmp.h.
//!
//! The guest runs 64-bit paged code with an identity map of gpa 0..2 MiB (4 KiB pages, U|W|P),
//! because only paged CPL3 code reaches the shadow MMU on this host (realkvm.md §0). Every
//! other page a plan's memslots or accesses use is mapped at the virtual address that is its
//! gpa with bit 47 cleared: user (lower-half) addresses. On this PVM host a CPL3 access to
//! the start of the upper half (0xffff_8000_0000_0000) shuts the guest down, so upper-half
//! addresses are not used; a plan whose pages alias (gpa and gpa ^ 2^47) is refused.
//! CPL3 code cannot exit with `out`/`hlt`, so every report is an MMIO write to a gpa with no
//! slot: the last two virtual pages below 2 MiB map to the unbacked gpas below.

/// 4 KiB pages only (the identity map and all probes assume it).
pub(crate) const PAGE: u64 = 4096;
/// Guest code starts here (own slot, page 1 as in kvmp.h).
pub(crate) const CODE_GPA: u64 = 0x1000;
/// First gpa usable by plan memslots and accesses; also the guest's `rbx`.
pub(crate) const DATA_GPA: u64 = 0x10000;
/// Page tables: PML4, PDPT, PD, PT (4 pages) in their own slot.
pub(crate) const PT_GPA: u64 = 0x1C_0000;
/// Most pages the page-table slot may take (up to 2 MiB, where the identity map ends).
pub(crate) const PT_MAX_PAGES: u64 = (0x20_0000 - PT_GPA) / PAGE;
/// End (exclusive) of the low data range, reached `rbx`-relative; plans may use any other gpa
/// below [`GPA_LIMIT`] outside [`RESERVED`].
pub(crate) const DATA_END: u64 = PT_GPA;
/// Guest-physical addresses are below 2^48 (this machine's MAXPHYADDR, which the guest's
/// CPUID reports).
pub(crate) const GPA_LIMIT: u64 = 1 << 48;
/// Guest-physical ranges the layout owns: code, page tables, report pages.
pub(crate) const RESERVED: [(u64, u64); 3] = [
    (0, DATA_GPA),
    (PT_GPA, PT_GPA + PT_MAX_PAGES * PAGE),
    (REPORT_GPA, MARK_GPA + PAGE),
];

/// Whether `[a, b)` is usable by a plan: below 2^48 and outside the layout's own ranges.
pub(crate) fn usable(a: u64, b: u64) -> bool {
    b <= GPA_LIMIT && a < b && !RESERVED.iter().any(|&(s, e)| a < e && s < b)
}

/// The virtual address the guest reaches `gpa` at: `gpa` with bit 47 cleared (a user
/// address).
pub(crate) fn va_of(gpa: u64) -> u64 {
    gpa & !(1 << 47)
}
/// Max pages of guest code (code lives in 0x1000..0x10000).
pub(crate) const CODE_MAX_PAGES: u64 = (DATA_GPA - CODE_GPA) / PAGE;
/// Virtual address of the report page (guest `rdi`).
pub(crate) const REPORT_VA: u64 = 0x1F_F000;
/// Unbacked gpa behind the report page: a guest write here is a KVM_EXIT_MMIO.
pub(crate) const REPORT_GPA: u64 = 0xD000_0000;
/// Virtual address of the marker page (guest `rsi`).
pub(crate) const MARK_VA: u64 = 0x1F_E000;
/// Unbacked gpa behind the marker page.
pub(crate) const MARK_GPA: u64 = 0xD000_1000;
/// Offset in the marker page of the end-of-program marker.
pub(crate) const FINAL_MARK_OFF: u64 = 0xFF8;
/// Number of distinct 8-byte report/marker slots before the final one.
pub(crate) const MARK_SLOTS: u64 = FINAL_MARK_OFF / 8;
/// Internal slot ids (plan slots must avoid them).
pub(crate) const CODE_SLOT: u32 = 100;
/// Internal page-table slot id.
pub(crate) const PT_SLOT: u32 = 101;

/// Report/marker page offset for access `index`: lets the VMM check where the guest is.
pub(crate) fn mark_off(index: usize) -> u64 {
    (index as u64 % MARK_SLOTS) * 8
}

/// The page-table pages (as u64 entries, page 0 the PML4 at [`PT_GPA`]): the identity map of
/// 0..2 MiB with the report and marker virtual pages redirected to their unbacked gpas
/// (kvmp.h `vm_new`), plus `extra` (gpa page numbers above 2 MiB) each at [`va_of`].
/// `Err` when they need more than [`PT_MAX_PAGES`] pages.
pub(crate) fn page_tables(extra: &[u64]) -> Result<Vec<u64>, String> {
    const UWP: u64 = 7;
    const ENTRIES: usize = (PAGE / 8) as usize;
    let mut pt = vec![0u64; ENTRIES];
    // The table an entry of `table` points to, allocated on first use.
    fn next(pt: &mut Vec<u64>, table: usize, idx: usize) -> Result<usize, String> {
        let e = pt[table * ENTRIES + idx];
        if e != 0 {
            return Ok(((e & !0xfff) - PT_GPA) as usize / PAGE as usize);
        }
        let n = pt.len() / ENTRIES;
        if n as u64 >= PT_MAX_PAGES {
            return Err(format!(
                "the guest page tables for these gpas need more than {PT_MAX_PAGES} pages"
            ));
        }
        pt.resize(pt.len() + ENTRIES, 0);
        pt[table * ENTRIES + idx] = (PT_GPA + n as u64 * PAGE) | UWP;
        Ok(n)
    }
    fn map(pt: &mut Vec<u64>, va: u64, gpa: u64) -> Result<(), String> {
        let idx = |shift: u32| ((va >> shift) & 511) as usize;
        let pdpt = next(pt, 0, idx(39))?;
        let pd = next(pt, pdpt, idx(30))?;
        let t = next(pt, pd, idx(21))?;
        pt[t * ENTRIES + idx(12)] = gpa | UWP;
        Ok(())
    }
    for i in 0..512u64 {
        map(&mut pt, i * PAGE, i * PAGE)?;
    }
    map(&mut pt, REPORT_VA, REPORT_GPA)?;
    map(&mut pt, MARK_VA, MARK_GPA)?;
    let mut at = std::collections::BTreeMap::new();
    for &p in extra.iter().filter(|&&p| p >= 512) {
        let va = va_of(p * PAGE);
        if let Some(q) = at.insert(va, p).filter(|&q| q != p) {
            return Err(format!(
                "gpas {:#x} and {:#x} would share the guest virtual page {va:#x} (they differ \
                 only in bit 47)",
                q * PAGE,
                p * PAGE
            ));
        }
        if va < 512 * PAGE {
            return Err(format!(
                "gpa {:#x} would share the guest's low identity map at {va:#x}",
                p * PAGE
            ));
        }
        map(&mut pt, va, p * PAGE)?;
    }
    Ok(pt)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables as the MMU would.
    fn walk(pt: &[u64], va: u64) -> Option<u64> {
        let mut table = 0usize;
        for shift in [39, 30, 21] {
            let e = pt[table * 512 + ((va >> shift) & 511) as usize];
            if e & 1 == 0 {
                return None;
            }
            table = ((e & !0xfff) - PT_GPA) as usize / PAGE as usize;
        }
        let e = pt[table * 512 + ((va >> 12) & 511) as usize];
        (e & 1 != 0).then_some(e & !0xfff)
    }

    #[test]
    fn low_memory_is_identity_and_far_pages_are_at_their_gpa_in_the_lower_half() {
        let far = [0x1_0000_0000 / PAGE, 0xffff_ffff_f000 / PAGE];
        let pt = page_tables(&far).unwrap();
        assert_eq!(walk(&pt, 0x1_0000), Some(0x1_0000));
        assert_eq!(walk(&pt, REPORT_VA), Some(REPORT_GPA));
        assert_eq!(walk(&pt, 0x1_0000_0000), Some(0x1_0000_0000));
        assert_eq!(walk(&pt, va_of(0xffff_ffff_f000)), Some(0xffff_ffff_f000));
        assert_eq!(va_of(0xffff_ffff_f000), 0x7fff_ffff_f000);
        assert_eq!(walk(&pt, 0x2_0000_0000), None);
        // PML4; PDPT, PD, PT of low memory; a PD and PT more for 4 GiB; PDPT, PD, PT for the
        // page below 2^48 (at the top of the lower half).
        assert_eq!(pt.len() / 512, 1 + 3 + 2 + 3);
        // 2^47 would be virtual page 0, in the identity map; gpas differing in bit 47 alias.
        assert!(page_tables(&[0x8000_0000_0000 / PAGE]).is_err());
        assert!(page_tables(&[0x1_0000_0000 / PAGE, 0x8001_0000_0000 / PAGE]).is_err());
        let many: Vec<u64> = (0..100).map(|i| (i << 30) / PAGE + 1024).collect();
        assert!(page_tables(&many).is_err());
    }
}
