//! `kvm_vcpu_map()` / `kvm_vcpu_unmap()` (virt/kvm/kvm_main.c): a kernel mapping of a guest
//! page kept across guest entries, as nested virtualization does for vmcs12, MSR bitmaps
//! and eVMCS. It is *not* covered by the MMU notifier, so it is only safe if the page is
//! pinned — which a `VM_PFNMAP` pfn cannot be (B6).

use super::policy::Lookup;
use super::vcpu::touch_frame;
use super::{Kvm, KvmPfn};
use crate::mm::{Pfn, PAGE_SHIFT, PAGE_SIZE};
use std::fmt;
use std::rc::Rc;
use world::Cx;

/// What a pinned-access actor observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinOutcome {
    /// The map failed (`KVM_PFN_ERR_*`): nested VM-entry fails, no access made.
    Refused(String),
    /// Mapped `pfn`; the values read through the mapping, in order.
    Mapped { pfn: Pfn, reads: Vec<u64> },
}

impl fmt::Display for PinOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinOutcome::Refused(e) => write!(f, "map refused ({e})"),
            PinOutcome::Mapped { pfn, .. } => write!(f, "mapped {pfn}"),
        }
    }
}

/// Map `gpa`'s page, perform `rounds` read-modify-writes of the word at `gpa` through the
/// kernel mapping (each a separate step, so host actors interleave), then unmap.
pub async fn kvm_vcpu_map_access(cx: &Cx, kvm: &Rc<Kvm>, gpa: u64, rounds: usize) -> PinOutcome {
    let _f = cx.func("kvm_vcpu_map");
    let gfn = gpa >> PAGE_SHIFT;
    let Some(slot) = kvm.lookup_slot(cx, gfn).await.filter(|s| !s.invalid) else {
        return PinOutcome::Refused("no memslot".into());
    };
    let fault_start = cx.step();
    let hva = slot.gfn_to_hva(gfn);
    let l = Lookup {
        slot,
        gfn,
        write: true,
        nowait: false,
        pin: true,
    };
    let f = kvm.policy.faultin(cx, kvm, &l).await;
    let KvmPfn::Pfn(pfn) = f.pfn else {
        world::emit!(cx, "map failed: {}", f.pfn);
        return PinOutcome::Refused(f.pfn.to_string());
    };
    let id = kvm.add_pin(cx, gfn, pfn, hva, fault_start).await;
    world::emit!(
        cx,
        "mapped gfn {gfn:#x} -> {pfn} outside MMU-notifier protection"
    );
    let off = gpa % PAGE_SIZE;
    let mut reads = Vec::new();
    for _ in 0..rounds {
        touch_frame(cx, kvm, pfn, true).await;
        let v = kvm.frames.read(pfn, off, 4).unwrap_or(!0);
        kvm.frames
            .write(pfn, off, 4, v.wrapping_add(1) & 0xffff_ffff);
        world::emit!(
            cx,
            "vmcs12 field at {pfn}: {v:#x} -> {:#x}",
            v.wrapping_add(1) & 0xffff_ffff
        );
        reads.push(v);
    }
    {
        let _u = cx.func("kvm_vcpu_unmap");
        kvm.remove_pin(cx, id).await;
        kvm.policy.release(cx, kvm, &f).await;
    }
    PinOutcome::Mapped { pfn, reads }
}
