//! Host backings: creating each kind, and applying host steps to them.
//!
//! Every resource (mapping, memfd, temp file, uffd + handler thread) is owned by a
//! `HostBacking`, so it is released on every path, including errors and timeouts.

use crate::hostio;
use crate::layout::PAGE;
use crate::outcome::{bad, sys, ProbeError, UffdEvent};
use crate::plan::{Backing, BackingKind, HostAction};
use crate::region::Region;
use crate::uffd::Uffd;
use crate::vvar;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self, MemfdFlags, Mode as FsMode, OFlags};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One backing as mapped in this process.
#[derive(Debug)]
pub(crate) struct HostBacking {
    /// The plan's description.
    pub spec: Backing,
    /// Start hva.
    pub base: usize,
    /// Our mapping; `None` for vvar (not ours: never written, unmapped or advised).
    region: Option<Region>,
    /// memfd or (already unlinked) temp file, kept open for the mapping's lifetime.
    _fd: Option<OwnedFd>,
    /// userfaultfd registration and handler; dropped before the region is unmapped.
    uffd: Option<Uffd>,
}

/// A temp file under `std::env::temp_dir()`, unlinked as soon as it is opened so that nothing
/// is left behind even if the process dies.
fn temp_file(pages: u64, fill: Option<u32>) -> Result<OwnedFd, ProbeError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "kvmmu-probe-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    let fd = fs::open(&path, flags, FsMode::from_bits_truncate(0o600))
        .map_err(|e| sys(format!("create {}", path.display()), e))?;
    let _ = fs::unlink(&path);
    match fill {
        Some(v) => {
            let page: Vec<u8> = v
                .to_le_bytes()
                .iter()
                .copied()
                .cycle()
                .take(PAGE as usize)
                .collect();
            for _ in 0..pages {
                let mut done = 0;
                while done < page.len() {
                    done += rustix::io::write(&fd, &page[done..])
                        .map_err(|e| sys("write temp file", e))?;
                }
            }
        }
        None => fs::ftruncate(&fd, pages * PAGE).map_err(|e| sys("ftruncate temp file", e))?,
    }
    Ok(fd)
}

fn anon(spec: &Backing, shared: bool, at: Option<usize>) -> Result<Region, ProbeError> {
    let r = Region::anon_at(spec.pages, shared, at)
        .map_err(|e| sys(format!("mmap backing '{}'", spec.name), e))?;
    Ok(r)
}

/// Fills (if asked) and then drops PROT_WRITE (if asked): the host writes before the run.
fn finish_rw(spec: &Backing, r: &Region, prot_write: bool) -> Result<(), ProbeError> {
    if let Some(v) = spec.fill {
        r.fill_u32(0..spec.pages, v);
    }
    if !prot_write {
        r.protect(0..spec.pages, true, false)
            .map_err(|e| sys(format!("mprotect backing '{}'", spec.name), e))?;
    }
    Ok(())
}

impl HostBacking {
    /// Maps a backing as its kind requires, at `at` if given (a run of adjacent backings;
    /// ignored for `[vvar]` kinds, which the kernel placed).
    pub(crate) fn create(
        spec: &Backing,
        events: &Arc<Mutex<Vec<UffdEvent>>>,
        at: Option<usize>,
    ) -> Result<HostBacking, ProbeError> {
        let mut fd = None;
        let mut uffd = None;
        let region = match spec.kind {
            BackingKind::AnonPrivate | BackingKind::AnonShared | BackingKind::Hole => {
                let r = anon(spec, spec.kind == BackingKind::AnonShared, at)?;
                finish_rw(spec, &r, spec.prot_write || spec.kind == BackingKind::Hole)?;
                Some(r)
            }
            BackingKind::ProtNone => {
                let r = anon(spec, false, at)?;
                finish_rw(spec, &r, true)?;
                r.protect(0..spec.pages, false, false)
                    .map_err(|e| sys(format!("mprotect backing '{}'", spec.name), e))?;
                Some(r)
            }
            BackingKind::Memfd => {
                let m = fs::memfd_create("kvmmu-probe", MemfdFlags::CLOEXEC)
                    .map_err(|e| sys("memfd_create", e))?;
                fs::ftruncate(&m, spec.pages * PAGE).map_err(|e| sys("ftruncate memfd", e))?;
                let r = Region::file(m.as_fd(), spec.pages, true, true, at)
                    .map_err(|e| sys(format!("mmap memfd '{}'", spec.name), e))?;
                fd = Some(m);
                finish_rw(spec, &r, spec.prot_write)?;
                Some(r)
            }
            BackingKind::FilePrivate | BackingKind::FileShared => {
                let f = temp_file(spec.pages, spec.fill)?;
                let shared = spec.kind == BackingKind::FileShared;
                let r = Region::file(f.as_fd(), spec.pages, spec.prot_write, shared, at)
                    .map_err(|e| sys(format!("mmap file '{}'", spec.name), e))?;
                fd = Some(f);
                Some(r)
            }
            BackingKind::Userfault => {
                let r = anon(spec, false, at)?;
                if !spec.prot_write {
                    r.protect(0..spec.pages, true, false)
                        .map_err(|e| sys(format!("mprotect backing '{}'", spec.name), e))?;
                }
                uffd = Some(Uffd::register(
                    &spec.name,
                    r.base(),
                    spec.pages,
                    spec.fill,
                    std::time::Duration::from_millis(spec.uffd_delay_ms),
                    events.clone(),
                )?);
                Some(r)
            }
            BackingKind::Vvar | BackingKind::VvarVclock => None,
        };
        let base = match &region {
            Some(r) => r.base(),
            None => {
                let name = if spec.kind == BackingKind::Vvar {
                    "vvar"
                } else {
                    "vvar_vclock"
                };
                let (a, b) = vvar::find(name).ok_or_else(|| {
                    bad(format!(
                        "backing '{}': [{name}] is not in /proc/self/maps",
                        spec.name
                    ))
                })?;
                let have = ((b - a) as u64) / PAGE;
                if spec.pages > have {
                    return Err(bad(format!(
                        "backing '{}': {} pages requested but [{name}] has {have}",
                        spec.name, spec.pages
                    )));
                }
                a
            }
        };
        Ok(HostBacking {
            spec: spec.clone(),
            base,
            region,
            _fd: fd,
            uffd,
        })
    }

    /// Fault injection (tests): map pages of our own into this backing's holes.
    pub(crate) fn squat_holes(&mut self) -> Result<(), ProbeError> {
        let name = self.spec.name.clone();
        self.region_mut()?
            .squat_holes()
            .map_err(|e| sys(format!("squat holes of '{name}'"), e))
    }

    /// Punches the hole of a `Hole` backing (after its memslots are set).
    pub(crate) fn make_hole(&mut self) -> Result<(), ProbeError> {
        let pages = self.spec.pages;
        let name = self.spec.name.clone();
        self.region_mut()?
            .unmap(0..pages)
            .map_err(|e| sys(format!("munmap hole '{name}'"), e))
    }

    /// Stops the userfaultfd handler and closes the fd (the range becomes plain anon).
    pub(crate) fn stop_uffd(&mut self) {
        self.uffd = None;
    }

    fn region_mut(&mut self) -> Result<&mut Region, ProbeError> {
        let name = &self.spec.name;
        self.region
            .as_mut()
            .ok_or_else(|| bad(format!("backing '{name}' is not the probe's own memory")))
    }

    /// `pread` of `len` bytes at `off` of this backing's file (memfd or temp file).
    pub(crate) fn pread(&self, off: u64, len: usize) -> Option<u64> {
        let fd = self._fd.as_ref()?;
        let mut b = [0u8; 8];
        let n = rustix::io::pread(fd, &mut b[..len], off).ok()?;
        (n == len).then(|| u64::from_le_bytes(b))
    }

    /// True if byte offset `off..off+len` lies in pages this probe has mapped (or in vvar,
    /// where the fault-safe read decides).
    pub(crate) fn readable_range(&self, off: u64, len: u64) -> bool {
        if off + len > self.spec.pages * PAGE {
            return false;
        }
        match &self.region {
            Some(r) => r.all_owned(off / PAGE..(off + len).div_ceil(PAGE)),
            None => true,
        }
    }

    /// Applies one host step.
    pub(crate) fn apply(&mut self, action: &HostAction) -> Result<(), ProbeError> {
        let name = self.spec.name.clone();
        let base = self.base;
        let what = |s: &str| format!("host {s} on '{name}'");
        match *action {
            HostAction::Write {
                offset,
                size,
                value,
                ..
            } => {
                let region = self.region_mut()?;
                if !region.all_owned(offset / PAGE..(offset + u64::from(size)).div_ceil(PAGE)) {
                    return Err(sys(
                        what("write"),
                        format!("offset {offset:#x} is not mapped"),
                    ));
                }
                let bytes = value.to_le_bytes();
                hostio::write(base + offset as usize, &bytes[..usize::from(size)])
                    .map_err(|e| sys(what("write"), e))
            }
            HostAction::Read { offset, size, .. } => {
                // Only pages this probe still maps (or [vvar], where the fault-safe read
                // decides): a hole may hold another thread's mapping by now.
                if self.readable_range(offset, u64::from(size)) {
                    let mut buf = [0u8; 8];
                    // A faulting read (hole, PROT_NONE, a [vvar] page the host cannot
                    // fault) is what the host would see too: not an error.
                    let _ = hostio::read(base + offset as usize, &mut buf[..usize::from(size)]);
                }
                Ok(())
            }
            HostAction::MadviseDontneed {
                offset_pages,
                pages,
                ..
            } => self
                .region_mut()?
                .dontneed(offset_pages..offset_pages + pages)
                .map_err(|e| sys(what("madvise(MADV_DONTNEED)"), e)),
            HostAction::Mprotect {
                offset_pages,
                pages,
                read,
                write,
                ..
            } => self
                .region_mut()?
                .protect(offset_pages..offset_pages + pages, read, write)
                .map_err(|e| sys(what("mprotect"), e)),
            HostAction::Munmap {
                offset_pages,
                pages,
                ..
            } => self
                .region_mut()?
                .unmap(offset_pages..offset_pages + pages)
                .map_err(|e| sys(what("munmap"), e)),
            HostAction::MmapFixedAnon {
                offset_pages,
                pages,
                fill,
                ..
            } => {
                let r = self.region_mut()?;
                let range = offset_pages..offset_pages + pages;
                r.map_fixed_anon(range.clone())
                    .map_err(|e| sys(what("mmap(MAP_FIXED)"), e))?;
                if let Some(v) = fill {
                    r.fill_u32(range, v);
                }
                Ok(())
            }
            HostAction::SetMemslot { .. } | HostAction::DeleteMemslot { .. } => Err(bad(
                "a memslot step acts on the VM, not on a backing (crate::host runs it)",
            )),
        }
    }
}

impl Drop for HostBacking {
    fn drop(&mut self) {
        // Stop the handler (and unregister) before the region is unmapped.
        self.uffd = None;
    }
}

/// All backings of a run, by plan order.
#[derive(Debug, Default)]
pub(crate) struct Backings(pub Vec<HostBacking>);

impl Backings {
    /// Refuses to go on when a hole of ours has become mapped: a guest access there would
    /// reach the probe's own memory, and what it saw would not be the kernel's answer.
    pub(crate) fn check_holes(&self) -> Result<(), ProbeError> {
        for b in &self.0 {
            if let Some(r) = &b.region {
                let taken = r.taken_holes();
                if let Some(&p) = taken.first() {
                    return Err(ProbeError::Invalid(format!(
                        "page {p} of backing '{}' ({:#x}) was unmapped for the scenario but is \
                         mapped again by something else in this process: the run is invalid",
                        b.spec.name,
                        b.base + (p * PAGE) as usize
                    )));
                }
            }
        }
        Ok(())
    }

    /// Looks a backing up by name.
    pub(crate) fn get_mut(&mut self, name: &str) -> Result<&mut HostBacking, ProbeError> {
        self.0
            .iter_mut()
            .find(|b| b.spec.name == name)
            .ok_or_else(|| bad(format!("no backing named '{name}'")))
    }

    /// Looks a backing up by name.
    pub(crate) fn get(&self, name: &str) -> Option<&HostBacking> {
        self.0.iter().find(|b| b.spec.name == name)
    }

    /// Applies a host action to its backing.
    pub(crate) fn apply(&mut self, action: &HostAction) -> Result<(), ProbeError> {
        let name = action
            .backing()
            .ok_or_else(|| bad("a memslot step acts on the VM, not on a backing"))?;
        self.get_mut(name)?.apply(action)
    }
}
