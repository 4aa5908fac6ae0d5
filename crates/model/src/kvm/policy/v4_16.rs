//! linux-4.16: a340b3e229b2 "kvm: Map PFN-type memory regions as writable (if possible)"
//! (KarimAllah Ahmed; virt/kvm/kvm_main.c, v4.16–v5.11).
//!
//! The seed's walk (see [`super::v4_8`]) with one change: `hva_to_pfn_remapped` gains a
//! `bool *writable` argument and, once `follow_pfn` has found the pfn, sets
//! `if (writable) *writable = true;` — so that a read fault on PFNMAP memory gets a writable
//! SPTE and the following write does not exit again. Nothing looks at the PTE's write bit:
//! a read fault on a read-only PFNMAP mapping (a read-only mmap of a BAR, `[vvar]`) maps it
//! writable into the guest, the read-only bypass that bd2fae8da794 (v5.12) closed. The
//! caller passes `writable = NULL` for a read-only memslot and for `kvm_vcpu_map`, and then
//! `*writable` stays `write_fault` as `hva_to_pfn_slow` set it.

use super::common::kvm_get_pfn;
use super::v4_8::{follow_pfn_or_fixup, hva_to_pfn_era, Remapped};
use super::PolicyId;
use crate::kvm::Kvm;
use crate::mm::{Errno, Pfn, Vma};
use std::rc::Rc;
use world::Cx;

// `hva_to_pfn(addr, atomic=false, async, write_fault, writable)`, v4.16: v4.8's, with this
// era's `hva_to_pfn_remapped`.
pre_6_13_policy!(
    Linux4_16,
    PolicyId::Linux4_16,
    hva_to_pfn_era[Remapped::V4_16],
    false
);

/// `hva_to_pfn_remapped(vma, addr, async, write_fault, writable, p_pfn)`, v4.16–v5.11.
pub(super) async fn hva_to_pfn_remapped(
    cx: &Cx,
    kvm: &Kvm,
    vma: &Rc<Vma>,
    addr: u64,
    write_fault: bool,
    writable: Option<&mut bool>,
) -> Result<Pfn, Errno> {
    let _f = cx.func("hva_to_pfn_remapped");
    let pfn = follow_pfn_or_fixup(cx, kvm, vma, addr, write_fault).await?;
    // "if (writable) *writable = true;" — whatever the PTE says.
    if let Some(w) = writable {
        if !*w {
            cx.emit_str("*writable = true (the PTE's write bit is not looked at)");
        }
        *w = true;
    }
    kvm_get_pfn(cx, kvm, pfn, false).await;
    Ok(pfn)
}
