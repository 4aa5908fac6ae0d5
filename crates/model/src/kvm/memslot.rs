//! `struct kvm_memory_slot` and the gfn → hva translation (virt/kvm/kvm_main.c).

use crate::mm::{Hva, PAGE_SHIFT};

/// `KVM_MEM_READONLY` slots refuse guest writes (`__gfn_to_hva_many` → `KVM_HVA_ERR_RO_BAD`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memslot {
    pub id: u32,
    pub base_gfn: u64,
    pub npages: u64,
    pub userspace_addr: Hva,
    pub readonly: bool,
    /// `KVM_MEMSLOT_INVALID`: the slot is being deleted or moved (`kvm_invalidate_memslot`).
    pub invalid: bool,
    /// Which `struct kvm_memory_slot` this is: every slot KVM installs (a create, the new
    /// copy of a move) gets a new serial, so an SPTE can be traced to the slot it was
    /// installed through. Not a kernel field (the kernel compares pointers).
    pub serial: u64,
}

/// Result of `__gfn_to_hva_many(slot, gfn, NULL, write)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GfnHva {
    Hva(Hva),
    /// `KVM_HVA_ERR_RO_BAD`: a write to a read-only slot.
    RoBad,
}

impl Memslot {
    pub fn contains(&self, gfn: u64) -> bool {
        self.base_gfn <= gfn && gfn < self.base_gfn + self.npages
    }

    /// `__gfn_to_hva_memslot()`.
    pub fn gfn_to_hva(&self, gfn: u64) -> Hva {
        self.userspace_addr + ((gfn - self.base_gfn) << PAGE_SHIFT)
    }

    /// The gfns `[base_gfn, base_gfn + npages)`.
    pub fn end_gfn(&self) -> u64 {
        self.base_gfn + self.npages
    }

    /// `__gfn_to_hva_many(slot, gfn, NULL, write)`.
    pub fn gfn_to_hva_many(&self, gfn: u64, write: bool) -> GfnHva {
        if write && self.readonly {
            GfnHva::RoBad
        } else {
            GfnHva::Hva(self.gfn_to_hva(gfn))
        }
    }

    /// The gfn range `[start, end)` of this slot that overlaps hva range `[hs, he)`.
    pub fn hva_range_to_gfns(&self, hs: Hva, he: Hva) -> Option<(u64, u64)> {
        let s = self.userspace_addr;
        let e = s + (self.npages << PAGE_SHIFT);
        let lo = hs.max(s);
        let hi = he.min(e);
        (lo < hi).then(|| {
            (
                self.base_gfn + ((lo - s) >> PAGE_SHIFT),
                self.base_gfn + ((hi - s).div_ceil(1 << PAGE_SHIFT)),
            )
        })
    }
}
