//! `Region`: a page-tracked mapping owned by the probe.
//!
//! Host steps munmap and refill parts of a live backing. The region remembers which of its
//! pages are mapped by us, so `Drop` and later steps only ever unmap or replace our own pages,
//! never whatever another thread may have mapped into a hole meanwhile.

use crate::layout::PAGE;
use rustix::fd::BorrowedFd;
use rustix::mm::{self, MapFlags, MprotectFlags, ProtFlags};
use std::ffi::c_void;
use std::io;
use std::ops::Range;

/// Our mapping of `owned.len()` pages at `base`.
#[derive(Debug)]
pub(crate) struct Region {
    base: usize,
    owned: Vec<bool>,
    /// Pages of our holes that a fault-injection test mapped (unmapped on drop).
    squatters: Vec<u64>,
}

fn prot(read: bool, write: bool) -> ProtFlags {
    let mut p = ProtFlags::empty();
    if read {
        p |= ProtFlags::READ;
    }
    if write {
        p |= ProtFlags::WRITE;
    }
    p
}

fn mprot(read: bool, write: bool) -> MprotectFlags {
    let mut p = MprotectFlags::empty();
    if read {
        p |= MprotectFlags::READ;
    }
    if write {
        p |= MprotectFlags::WRITE;
    }
    p
}

fn fixed(at: Option<usize>) -> MapFlags {
    if at.is_some() {
        MapFlags::FIXED_NOREPLACE
    } else {
        MapFlags::empty()
    }
}

fn hint(at: Option<usize>) -> *mut c_void {
    at.map_or(std::ptr::null_mut(), |a| a as *mut c_void)
}

fn bytes(pages: u64) -> io::Result<usize> {
    usize::try_from(pages * PAGE).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl Region {
    /// Fresh read-write anonymous mapping (`MAP_SHARED` or `MAP_PRIVATE`).
    pub(crate) fn anon(pages: u64, shared: bool) -> io::Result<Region> {
        Self::anon_at(pages, shared, None)
    }

    /// [`Region::anon`] at `at` exactly (`MAP_FIXED_NOREPLACE`: `EEXIST` if anything is
    /// mapped there), or anywhere.
    pub(crate) fn anon_at(pages: u64, shared: bool, at: Option<usize>) -> io::Result<Region> {
        let flags = if shared {
            MapFlags::SHARED
        } else {
            MapFlags::PRIVATE
        } | fixed(at);
        // SAFETY: a new anonymous mapping at a kernel-chosen address, or at a fixed one that
        // MAP_FIXED_NOREPLACE guarantees is free, aliases nothing.
        let p = unsafe { mm::mmap_anonymous(hint(at), bytes(pages)?, prot(true, true), flags) }?;
        Ok(Region {
            base: p as usize,
            owned: vec![true; pages as usize],
            squatters: Vec::new(),
        })
    }

    /// Fresh mapping of `fd` from offset 0 (a memfd or temp file the probe created), at
    /// `at` exactly (`MAP_FIXED_NOREPLACE`) or anywhere.
    pub(crate) fn file(
        fd: BorrowedFd<'_>,
        pages: u64,
        write: bool,
        shared: bool,
        at: Option<usize>,
    ) -> io::Result<Region> {
        let flags = if shared {
            MapFlags::SHARED
        } else {
            MapFlags::PRIVATE
        } | fixed(at);
        // SAFETY: a new file mapping at a kernel-chosen address aliases nothing; the file is
        // private to this probe, so nobody else changes it underneath Rust references
        // (and the probe never forms references into it anyway, only raw pointers).
        let p = unsafe { mm::mmap(hint(at), bytes(pages)?, prot(true, write), flags, fd, 0) }?;
        Ok(Region {
            base: p as usize,
            owned: vec![true; pages as usize],
            squatters: Vec::new(),
        })
    }

    /// Start address (hva).
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// Size in pages.
    pub(crate) fn pages(&self) -> u64 {
        self.owned.len() as u64
    }

    /// True if every page in `r` is currently mapped by us.
    pub(crate) fn all_owned(&self, r: Range<u64>) -> bool {
        r.start < r.end
            && r.end <= self.pages()
            && self.owned[r.start as usize..r.end as usize]
                .iter()
                .all(|&o| o)
    }

    fn addr(&self, page: u64) -> *mut c_void {
        (self.base + (page * PAGE) as usize) as *mut c_void
    }

    /// Maximal runs of pages in `r` whose ownership equals `want`.
    fn runs(&self, r: Range<u64>, want: bool) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for p in r {
            if self.owned[p as usize] == want {
                match out.last_mut() {
                    Some(last) if last.end == p => last.end = p + 1,
                    _ => out.push(p..p + 1),
                }
            }
        }
        out
    }

    fn check(&self, r: &Range<u64>) -> io::Result<()> {
        if r.start < r.end && r.end <= self.pages() {
            Ok(())
        } else {
            Err(io::Error::from(io::ErrorKind::InvalidInput))
        }
    }

    /// Writes `value` repeated over pages `r`. The pages must be ours and currently writable
    /// (only used right after mapping them read-write).
    pub(crate) fn fill_u32(&self, r: Range<u64>, value: u32) {
        debug_assert!(self.all_owned(r.clone()));
        let words = ((r.end - r.start) * PAGE / 4) as usize;
        let start = self.addr(r.start) as *mut u32;
        for k in 0..words {
            // SAFETY: the pages are our own read-write mapping (callers fill only freshly
            // mapped RW pages) and k stays inside the range; volatile because the guest may
            // share the memory.
            unsafe { start.add(k).write_volatile(value) };
        }
    }

    /// Copies `data` to byte offset `off` (our own freshly mapped RW pages: code, page tables).
    pub(crate) fn copy_in(&self, off: usize, data: &[u8]) {
        assert!(
            off + data.len() <= self.owned.len() * PAGE as usize && self.owned.iter().all(|&o| o)
        );
        // SAFETY: bounds checked above; the region is ours, mapped read-write, and nothing
        // else holds a reference into it.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), (self.base + off) as *mut u8, data.len())
        };
    }

    /// `mprotect` pages `r` (all must be ours).
    pub(crate) fn protect(&self, r: Range<u64>, read: bool, write: bool) -> io::Result<()> {
        self.check(&r)?;
        if !self.all_owned(r.clone()) {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        // SAFETY: the range is our own mapping; the probe holds no Rust references into it.
        unsafe {
            mm::mprotect(
                self.addr(r.start),
                bytes(r.end - r.start)?,
                mprot(read, write),
            )
        }?;
        Ok(())
    }

    /// `madvise(MADV_DONTNEED)` pages `r` (all must be ours).
    pub(crate) fn dontneed(&self, r: Range<u64>) -> io::Result<()> {
        self.check(&r)?;
        if !self.all_owned(r.clone()) {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        // SAFETY: the range is our own mapping; zapping it invalidates no Rust references
        // because the probe only accesses it through raw pointers.
        unsafe {
            mm::madvise(
                self.addr(r.start),
                bytes(r.end - r.start)?,
                mm::Advice::LinuxDontNeed,
            )
        }?;
        Ok(())
    }

    /// `munmap` the pages of `r` that are ours; pages already unmapped are left alone.
    pub(crate) fn unmap(&mut self, r: Range<u64>) -> io::Result<()> {
        self.check(&r)?;
        for run in self.runs(r, true) {
            // SAFETY: only pages this region mapped and still owns are unmapped; nothing
            // holds Rust references into them.
            unsafe { mm::munmap(self.addr(run.start), bytes(run.end - run.start)?) }?;
            self.owned[run.start as usize..run.end as usize].fill(false);
        }
        Ok(())
    }

    /// Fresh private read-write anonymous pages at the same addresses. Our own pages are
    /// replaced with MAP_FIXED; holes are refilled with MAP_FIXED_NOREPLACE so that a
    /// mapping someone else placed there meanwhile is never clobbered (that is an error).
    pub(crate) fn map_fixed_anon(&mut self, r: Range<u64>) -> io::Result<()> {
        self.check(&r)?;
        for want in [true, false] {
            for run in self.runs(r.clone(), want) {
                let fixed = if want {
                    MapFlags::FIXED
                } else {
                    MapFlags::FIXED_NOREPLACE
                };
                let at = self.addr(run.start);
                // SAFETY: MAP_FIXED only replaces pages this region owns; MAP_FIXED_NOREPLACE
                // fails rather than replace anything else. No Rust references point there.
                let p = unsafe {
                    mm::mmap_anonymous(
                        at,
                        bytes(run.end - run.start)?,
                        prot(true, true),
                        MapFlags::PRIVATE | fixed,
                    )
                }?;
                if p != at {
                    // Pre-4.17 kernels ignore NOREPLACE and treat the address as a hint.
                    // SAFETY: p is the mapping just created by this call; nobody else knows it.
                    let _ = unsafe { mm::munmap(p, bytes(run.end - run.start)?) };
                    return Err(io::Error::from_raw_os_error(libc::EEXIST));
                }
                self.owned[run.start as usize..run.end as usize].fill(true);
            }
        }
        Ok(())
    }
}

impl Region {
    /// Pages of our holes (pages we unmapped) where something is mapped now: another
    /// mapping of this process took the address, and a guest access there would reach it.
    pub(crate) fn taken_holes(&self) -> Vec<u64> {
        (0..self.pages())
            .filter(|&p| !self.owned[p as usize] && is_mapped(self.addr(p)))
            .collect()
    }

    /// Fault injection (tests): map a page into each hole, as a thread stack or an
    /// allocation of the probe landing there would.
    pub(crate) fn squat_holes(&mut self) -> io::Result<()> {
        for p in (0..self.pages()).filter(|&p| !self.owned[p as usize]) {
            let at = self.addr(p);
            // SAFETY: MAP_FIXED_NOREPLACE maps only where nothing is mapped (our hole) and
            // fails otherwise; no Rust reference points there.
            let got = unsafe {
                mm::mmap_anonymous(
                    at,
                    PAGE as usize,
                    prot(true, true),
                    MapFlags::PRIVATE | MapFlags::FIXED_NOREPLACE,
                )
            }?;
            if got != at {
                // SAFETY: `got` is the mapping this call just made; nobody else knows it.
                let _ = unsafe { mm::munmap(got, PAGE as usize) };
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            self.squatters.push(p);
        }
        Ok(())
    }
}

/// Whether anything is mapped at the page at `addr` (`mincore` fails with ENOMEM on an
/// unmapped range).
fn is_mapped(addr: *mut c_void) -> bool {
    let mut vec = 0u8;
    // SAFETY: mincore reads this process's page tables for one page-aligned page and writes
    // one byte into `vec`; it touches no memory at `addr`.
    unsafe { libc::mincore(addr, PAGE as usize, &mut vec) == 0 }
}

impl Drop for Region {
    fn drop(&mut self) {
        for &p in &self.squatters {
            // SAFETY: a page `squat_holes` mapped for a test; nothing else uses it.
            let _ = unsafe { mm::munmap(self.addr(p), PAGE as usize) };
        }
        let all = 0..self.pages();
        for run in self.runs(all, true) {
            if let Ok(len) = bytes(run.end - run.start) {
                // SAFETY: only pages this region mapped and still owns are unmapped; the VM
                // using them is dropped before the backings (see run.rs drop order).
                let _ = unsafe { mm::munmap(self.addr(run.start), len) };
            }
        }
    }
}
