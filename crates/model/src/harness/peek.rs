//! What the host reads back at the end of a run (`[[seen]] host` / `file`), without
//! faulting anything in: the run is over, and an observation must not change the world.

use super::build::{Backend, Sys};
use crate::mm::{VmFlags, PAGE_SIZE};
use scenario::Peek;

/// The value a fault-safe host read (`host`) or a `pread` of the file (`file`) would return:
/// `0x..`, `kernel data` (vDSO pages) or `EFAULT`.
///
/// A host read takes the frame under a present PTE; else the page its fault would map: the
/// page cache's page of a file or shmem mapping (the file's content when nothing is cached),
/// the zero page of private anonymous memory, `[vvar]` page 0 or 2; anything else the host
/// cannot fault (no vma, no `VM_READ`, a `PROT_NONE` PTE, a SIGBUS page) is `EFAULT`. Device
/// mappings of the model-only drivers are not read (their fault handlers have effects):
/// `EFAULT` unless mapped. A `pread` reads the page cache (or the file's content), never a
/// private copy.
pub fn peek(sys: &Sys, p: &Peek) -> String {
    // Not a step of any actor: nothing here is a shared access.
    world::audit::suspended(|| peek_unrecorded(sys, p))
}

fn peek_unrecorded(sys: &Sys, p: &Peek) -> String {
    let m = sys.mapping(&p.mapping);
    let hva = m.base + p.offset;
    let off = p.offset % PAGE_SIZE;
    let frames = &sys.frames;
    let read = |pfn| {
        if !frames.known(pfn, off, p.size) {
            return "kernel data".to_string();
        }
        frames
            .read(pfn, off, p.size)
            .map_or("EFAULT".into(), |v| format!("{v:#x}"))
    };
    let Some(vma) = sys.mm.vma_lookup(hva) else {
        return "EFAULT".into();
    };
    let file = vma.file.clone();
    let disk = |index: u64| match &file {
        Some(f) => match f.page(index) {
            Some(pfn) => read(pfn),
            None if index < f.size_pages.get() => {
                let pat = u64::from(f.disk_pattern.get());
                let word = pat | (pat << 32);
                let v = word >> ((off % 4) * 8);
                let v = if p.size < 8 {
                    v & ((1u64 << (p.size * 8)) - 1)
                } else {
                    v
                };
                format!("{v:#x}")
            }
            None => "EFAULT".into(),
        },
        None => "EFAULT".into(),
    };
    let index = vma.pgoff() + (hva - vma.start) / PAGE_SIZE;
    if p.file {
        return disk(index);
    }
    if !vma.flags_unrecorded().contains(VmFlags::VM_READ) {
        return "EFAULT".into();
    }
    if let Some(pte) = sys.mm.pte(hva) {
        return if pte.protnone {
            "EFAULT".into()
        } else {
            read(pte.pfn)
        };
    }
    match &m.backend {
        Backend::PageCache(_) => disk(index),
        Backend::Vvar(v) => match (vma.name.as_ref(), index) {
            ("[vvar]", 0) => read(v.time_pfn()),
            ("[vvar]", 2) => read(v.rng_pfn()),
            ("[vvar_vclock]", 0) => v.pvclock_pfn().map_or("EFAULT".into(), read),
            _ => "EFAULT".into(),
        },
        Backend::Plain if file.is_none() => {
            // Private anonymous: a read fault maps the zero page.
            let z = 0u64;
            format!("{z:#x}")
        }
        _ => "EFAULT".into(),
    }
}
