//! PTE walkers that hand out a pfn without a `struct page` reference: the three generations
//! KVM's `hva_to_pfn_remapped` used.

use super::types::*;
use super::vma::Vma;
use super::{Mm, Pte};
use std::rc::Rc;
use world::Cx;

fn lockdep_assert_mmap_held(cx: &Cx, mm: &Mm, who: &str) {
    if cx.holds(mm.mmap_lock).is_none() {
        world::emit!(cx, "lockdep: {who} without mmap_lock held");
    }
}

/// The walk both generations of PTE walker end in: take the PTL and return the entry with
/// the PTL still held, or drop it and fail with -EINVAL when nothing is present. x86
/// `pte_present()` includes `_PAGE_PROTNONE`, so a `PROT_NONE` entry is still followed.
async fn present_pte_locked(cx: &Cx, mm: &Mm, address: Hva, who: &str) -> Result<Pte, Errno> {
    lockdep_assert_mmap_held(cx, mm, who);
    mm.ptl_lock_at(cx, address).await;
    match mm.pte(address) {
        Some(p) => {
            world::emit!(
                cx,
                "{address:#x} -> {} {}",
                p.pfn,
                if p.write { "rw" } else { "ro" }
            );
            Ok(p)
        }
        None => {
            mm.ptl_unlock(cx).await;
            world::emit!(cx, "{address:#x}: no present pte: -EINVAL");
            Err(EINVAL)
        }
    }
}

/// `follow_pte(mm, address, &ptep, &ptl)` (mm/memory.c, v5.12–v6.9): walk to the PTE and
/// return it **with the PTL held** (the caller unlocks with [`pte_unmap_unlock`]); -EINVAL
/// if there is no present PTE.
pub async fn follow_pte(cx: &Cx, mm: &Mm, address: Hva) -> Result<Pte, Errno> {
    let _f = cx.func("follow_pte");
    present_pte_locked(cx, mm, address, "follow_pte").await
}

/// `pte_unmap_unlock()`.
pub async fn pte_unmap_unlock(cx: &Cx, mm: &Mm) {
    mm.ptl_unlock(cx).await
}

/// `follow_pfn(vma, address, &pfn)` (mm/memory.c, v4.8–v6.9): the pfn of a present PTE in a
/// `VM_IO|VM_PFNMAP` vma. The PTL is dropped before returning, and no permission is
/// reported: both are what later kernels had to fix.
pub async fn follow_pfn(cx: &Cx, vma: &Rc<Vma>, address: Hva) -> Result<Pfn, Errno> {
    let _f = cx.func("follow_pfn");
    if vma.is_dead() {
        return cx
            .bug(format!("use-after-free of vma {} in follow_pfn", vma.name))
            .await;
    }
    if !vma.flags().intersects(VmFlags::VM_IO | VmFlags::VM_PFNMAP) {
        world::emit!(cx, "{} is not VM_IO|VM_PFNMAP: -EINVAL", vma.name);
        return Err(EINVAL);
    }
    let mm = vma.mm.upgrade().expect("vma outlives its mm");
    let pte = follow_pte(cx, &mm, address).await?;
    pte_unmap_unlock(cx, &mm).await;
    Ok(pte.pfn)
}

/// `struct follow_pfnmap_args` outputs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PfnmapArgs {
    pub pfn: Pfn,
    pub writable: bool,
    pub special: bool,
}

/// `follow_pfnmap_start(args)` (mm/memory.c, v6.12+): -EINVAL outside the vma, for a vma that
/// is not `VM_IO|VM_PFNMAP`, or without a present entry; on success the PTL stays held
/// until [`follow_pfnmap_end`], so the pfn and its write bit are stable meanwhile.
pub async fn follow_pfnmap_start(
    cx: &Cx,
    vma: &Rc<Vma>,
    address: Hva,
) -> Result<PfnmapArgs, Errno> {
    let _f = cx.func("follow_pfnmap_start");
    if vma.is_dead() {
        return cx
            .bug(format!(
                "use-after-free of vma {} in follow_pfnmap_start",
                vma.name
            ))
            .await;
    }
    if !vma.contains(address) || !vma.flags().intersects(VmFlags::VM_IO | VmFlags::VM_PFNMAP) {
        world::emit!(cx, "{address:#x} not in a VM_IO|VM_PFNMAP vma: -EINVAL");
        return Err(EINVAL);
    }
    let mm = vma.mm.upgrade().expect("vma outlives its mm");
    let p = present_pte_locked(cx, &mm, address, "follow_pfnmap_start").await?;
    Ok(PfnmapArgs {
        pfn: p.pfn,
        writable: p.write,
        special: p.special,
    })
}

/// `follow_pfnmap_end(args)`: drop the PTL taken by a successful [`follow_pfnmap_start`].
pub async fn follow_pfnmap_end(cx: &Cx, vma: &Vma) {
    let mm = vma.mm.upgrade().expect("vma outlives its mm");
    mm.ptl_unlock(cx).await
}
