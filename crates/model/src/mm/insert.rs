//! How drivers put pfns into a vma (mm/memory.c, v6.18 semantics).

use super::types::*;
use super::vma::Vma;
use super::Pte;
use std::rc::Rc;
use world::{Cx, LockMode};

fn mm_of(vma: &Vma) -> Rc<super::Mm> {
    vma.mm.upgrade().expect("vma outlives its mm")
}

/// `remap_pfn_range(vma, addr, pfn, size, prot)`: eagerly map `pages` consecutive pfns as
/// special PTEs and mark the vma `VM_IO|VM_PFNMAP|VM_DONTEXPAND|VM_DONTDUMP`.
/// `vm_flags_set` needs the mmap lock for *write* (a WARN otherwise, as old vfio drivers hit
/// when calling it from a fault handler); a COW mapping must be mapped whole and gets
/// `vm_pgoff = pfn`; hitting an already-populated PTE is a BUG (`remap_pte_range`).
pub async fn remap_pfn_range(
    cx: &Cx,
    vma: &Rc<Vma>,
    addr: Hva,
    pfn: Pfn,
    pages: u64,
) -> Result<(), Errno> {
    let _f = cx.func("remap_pfn_range");
    let mm = mm_of(vma);
    let end = addr + pages * PAGE_SIZE;
    if addr < vma.start || end > vma.end {
        return Err(EINVAL);
    }
    if vma.is_cow_mapping() {
        if addr != vma.start || end != vma.end {
            return Err(EINVAL);
        }
        vma.set_pgoff(pfn.0);
    }
    if cx.holds(mm.mmap_lock) != Some(LockMode::Exclusive) {
        cx.emit_str("WARNING: vm_flags_set() without mmap_lock held for write");
    }
    vma.set_flags(
        vma.flags()
            | VmFlags::VM_IO
            | VmFlags::VM_PFNMAP
            | VmFlags::VM_DONTEXPAND
            | VmFlags::VM_DONTDUMP,
    );
    mm.ptl_lock_range(cx, addr, end).await;
    for i in 0..pages {
        let a = addr + i * PAGE_SIZE;
        if mm.pte(a).is_some() {
            mm.ptl_unlock(cx).await;
            return cx
                .bug(format!("remap_pte_range: BUG_ON(!pte_none) at {a:#x}"))
                .await;
        }
        let pte = Pte {
            pfn: Pfn(pfn.0 + i),
            write: vma.page_prot_writable(),
            special: true,
            protnone: false,
        };
        mm.set_pte(cx, a, pte).await;
    }
    mm.ptl_unlock(cx).await;
    Ok(())
}

/// `vmf_insert_pfn(vma, addr, pfn)` (2018+ form): one special PTE. BUG unless exactly one of
/// `VM_PFNMAP`/`VM_MIXEDMAP` is set, for a PFNMAP COW mapping, or for a `pfn_valid` pfn in a
/// MIXEDMAP vma; SIGBUS outside the vma; an already-present PTE is left alone and counts as
/// success (`VM_FAULT_NOPAGE`), which is what makes concurrent faults safe.
pub async fn vmf_insert_pfn(cx: &Cx, vma: &Rc<Vma>, addr: Hva, pfn: Pfn) -> VmFault {
    let _f = cx.func("vmf_insert_pfn");
    let mm = mm_of(vma);
    let f = vma.flags();
    let pfnmap = f.contains(VmFlags::VM_PFNMAP);
    let mixed = f.contains(VmFlags::VM_MIXEDMAP);
    if pfnmap == mixed {
        return cx
            .bug("vmf_insert_pfn: BUG_ON(!(VM_PFNMAP ^ VM_MIXEDMAP))")
            .await;
    }
    if pfnmap && vma.is_cow_mapping() {
        return cx
            .bug("vmf_insert_pfn: BUG_ON(PFNMAP && is_cow_mapping)")
            .await;
    }
    if mixed && mm.frames.pfn_valid(pfn) {
        return cx
            .bug("vmf_insert_pfn: BUG_ON(MIXEDMAP && pfn_valid)")
            .await;
    }
    if !vma.contains(addr) {
        return VmFault::VM_FAULT_SIGBUS;
    }
    insert_pfn(cx, &mm, vma, page_align_down(addr), pfn).await
}

async fn insert_pfn(cx: &Cx, mm: &super::Mm, vma: &Vma, addr: Hva, pfn: Pfn) -> VmFault {
    mm.ptl_lock_at(cx, addr).await;
    if let Some(old) = mm.pte(addr) {
        world::emit!(
            cx,
            "{addr:#x} already maps {}: leave it (VM_FAULT_NOPAGE)",
            old.pfn
        );
    } else {
        let pte = Pte {
            pfn,
            write: vma.page_prot_writable(),
            special: true,
            protnone: false,
        };
        mm.set_pte(cx, addr, pte).await;
    }
    mm.ptl_unlock(cx).await;
    VmFault::VM_FAULT_NOPAGE
}

/// `vmf_insert_mixed(vma, addr, pfn)` on x86 (`CONFIG_ARCH_HAS_PTE_SPECIAL`): needs
/// `VM_MIXEDMAP` (SIGBUS otherwise, or outside the vma) and always installs a *special* PTE,
/// even for a `pfn_valid` page — so GUP will not find a page there.
pub async fn vmf_insert_mixed(cx: &Cx, vma: &Rc<Vma>, addr: Hva, pfn: Pfn) -> VmFault {
    let _f = cx.func("vmf_insert_mixed");
    let mm = mm_of(vma);
    if !vma.flags().contains(VmFlags::VM_MIXEDMAP) || !vma.contains(addr) {
        return VmFault::VM_FAULT_SIGBUS;
    }
    insert_pfn(cx, &mm, vma, page_align_down(addr), pfn).await
}

/// `vm_insert_page(vma, addr, page)`: a *normal*, refcounted PTE (the mapping holds a
/// reference). -EFAULT outside the vma; on a vma without `VM_MIXEDMAP` it must hold the
/// mmap lock for write (BUG otherwise), must not be `VM_PFNMAP` (BUG), and sets
/// `VM_MIXEDMAP`. `insert_page` refuses refcount-0 and anonymous pages (-EINVAL) and a
/// populated PTE (-EBUSY).
pub async fn vm_insert_page(cx: &Cx, vma: &Rc<Vma>, addr: Hva, page: Pfn) -> Result<(), Errno> {
    let _f = cx.func("vm_insert_page");
    let mm = mm_of(vma);
    if !vma.contains(addr) {
        return Err(EFAULT);
    }
    if !vma.flags().contains(VmFlags::VM_MIXEDMAP) {
        if cx.holds(mm.mmap_lock) != Some(LockMode::Exclusive) {
            return cx
                .bug("vm_insert_page: BUG_ON(mmap_read_trylock(vma->vm_mm))")
                .await;
        }
        if vma.flags().contains(VmFlags::VM_PFNMAP) {
            return cx
                .bug("vm_insert_page: BUG_ON(vma->vm_flags & VM_PFNMAP)")
                .await;
        }
        vma.set_flags(vma.flags() | VmFlags::VM_MIXEDMAP);
    }
    if !mm.frames.pfn_valid(page) {
        world::emit!(cx, "insert_page({page}): no struct page: -EINVAL");
        return Err(EINVAL);
    }
    let addr = page_align_down(addr);
    // validate_page_before_insert, then get_locked_pte: one step loads the page's refcount
    // and flags and the entry it locked.
    let mut fp = mm.pte_read_fp(addr, addr + 1);
    fp.push(mm.frames.obj(page), world::Access::Read);
    fp.push(mm.frames.ref_obj(page), world::Access::Read);
    cx.lock_with(mm.ptl, LockMode::Exclusive, fp).await;
    if mm.frames.refcount(page) == 0 || mm.frames.owner(page) == Some(super::Owner::Anon) {
        mm.ptl_unlock(cx).await;
        world::emit!(cx, "insert_page({page}): refcount 0 or anon: -EINVAL");
        return Err(EINVAL);
    }
    if mm.pte(addr).is_some() {
        mm.ptl_unlock(cx).await;
        return Err(EBUSY);
    }
    mm.frames.get_page(cx, page).await;
    let pte = Pte {
        pfn: page,
        write: vma.page_prot_writable(),
        special: false,
        protnone: false,
    };
    mm.set_pte(cx, addr, pte).await;
    mm.ptl_unlock(cx).await;
    Ok(())
}
