//! `kvm_pfn_t` and its error values (include/linux/kvm_host.h).

use crate::mm::Pfn;
use std::fmt;

/// What `hva_to_pfn` hands back: a pfn, or one of the error encodings.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KvmPfn {
    Pfn(Pfn),
    /// `KVM_PFN_ERR_FAULT`: nothing could be mapped; x86 returns a bare -EFAULT from KVM_RUN.
    ErrFault,
    /// `KVM_PFN_ERR_HWPOISON`.
    ErrHwpoison,
    /// `KVM_PFN_ERR_RO_FAULT`: a write to memory the host maps read-only (or to a
    /// `KVM_MEM_READONLY` slot); x86 emulates the access.
    ErrRoFault,
    /// `KVM_PFN_ERR_SIGPENDING` (v6.2+): x86 exits with `KVM_EXIT_INTR`.
    ErrSigpending,
    /// `KVM_PFN_ERR_NEEDS_IO` (v6.13+): a `FOLL_NOWAIT` lookup that would have to sleep.
    ErrNeedsIo,
    /// `KVM_PFN_NOSLOT`: no memslot; x86 treats the access as MMIO.
    NoSlot,
}

impl KvmPfn {
    /// `is_error_noslot_pfn()`.
    pub fn is_error_or_noslot(self) -> bool {
        !matches!(self, KvmPfn::Pfn(_))
    }

    pub fn pfn(self) -> Option<Pfn> {
        match self {
            KvmPfn::Pfn(p) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for KvmPfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvmPfn::Pfn(p) => write!(f, "{p}"),
            KvmPfn::ErrFault => f.write_str("KVM_PFN_ERR_FAULT"),
            KvmPfn::ErrHwpoison => f.write_str("KVM_PFN_ERR_HWPOISON"),
            KvmPfn::ErrRoFault => f.write_str("KVM_PFN_ERR_RO_FAULT"),
            KvmPfn::ErrSigpending => f.write_str("KVM_PFN_ERR_SIGPENDING"),
            KvmPfn::ErrNeedsIo => f.write_str("KVM_PFN_ERR_NEEDS_IO"),
            KvmPfn::NoSlot => f.write_str("KVM_PFN_NOSLOT"),
        }
    }
}
