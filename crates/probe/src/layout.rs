//! Guest physical layout, as in probes/kvmp.h.
//!
//! The guest runs 64-bit paged code with an identity map of gpa 0..2 MiB (4 KiB pages, U|W|P),
//! because only paged CPL3 code reaches the shadow MMU on this host (realkvm.md §0).
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
/// Pages in the page-table slot.
pub(crate) const PT_PAGES: u64 = 4;
/// End (exclusive) of the range plan memslots and accesses may use.
pub(crate) const DATA_END: u64 = PT_GPA;
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

/// The four page-table pages (as u64 entries): identity map of 0..2 MiB with the report and
/// marker virtual pages redirected to their unbacked gpas (kvmp.h `vm_new`).
pub(crate) fn page_tables() -> Vec<u64> {
    const UWP: u64 = 7;
    let mut pt = vec![0u64; (PT_PAGES * PAGE / 8) as usize];
    pt[0] = (PT_GPA + PAGE) | UWP;
    pt[512] = (PT_GPA + 2 * PAGE) | UWP;
    pt[1024] = (PT_GPA + 3 * PAGE) | UWP;
    for i in 0..512u64 {
        pt[1536 + i as usize] = (i * PAGE) | UWP;
    }
    pt[1536 + (REPORT_VA / PAGE) as usize] = REPORT_GPA | UWP;
    pt[1536 + (MARK_VA / PAGE) as usize] = MARK_GPA | UWP;
    pt
}
