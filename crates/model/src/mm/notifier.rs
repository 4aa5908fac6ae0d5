//! MMU notifiers (`include/linux/mmu_notifier.h`): secondary MMUs such as KVM's register on
//! an mm and are told before (`invalidate_range_start`) and after (`invalidate_range_end`)
//! every change that clears a primary PTE or downgrades its permissions.

use super::types::Hva;
use super::vma::LocalBoxFuture;
use world::Cx;

/// `enum mmu_notifier_event`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NotifyEvent {
    /// `MMU_NOTIFY_UNMAP`: munmap.
    Unmap,
    /// `MMU_NOTIFY_CLEAR`: zap (`unmap_mapping_range`, `MADV_DONTNEED`, `zap_vma_ptes`).
    Clear,
    /// `MMU_NOTIFY_PROTECTION_VMA`: mprotect.
    ProtectionVma,
}

/// `struct mmu_notifier_range`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NotifierRange {
    pub start: Hva,
    pub end: Hva,
    pub event: NotifyEvent,
}

/// `struct mmu_notifier_ops`, the two callbacks this path depends on.
pub trait MmuNotifier {
    fn invalidate_range_start<'a>(
        &'a self,
        cx: &'a Cx,
        range: &'a NotifierRange,
    ) -> LocalBoxFuture<'a, ()>;
    fn invalidate_range_end<'a>(
        &'a self,
        cx: &'a Cx,
        range: &'a NotifierRange,
    ) -> LocalBoxFuture<'a, ()>;
}
