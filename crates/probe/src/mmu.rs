//! Which MMU the host's KVM uses, read from /sys/module.
//!
//! realkvm.md: this host is PVM (`kvm_pvm`), which always runs guests on shadow paging with
//! `tdp_mmu=N`; every real-fault result must say so.

use std::fs;
use std::path::Path;

fn param(module: &str, name: &str) -> Option<String> {
    fs::read_to_string(format!("/sys/module/{module}/parameters/{name}"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn yes(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("Y" | "y" | "1"))
}

/// E.g. "shadow (kvm_pvm, tdp_mmu=N)" or "tdp (kvm_intel, tdp_mmu=Y)".
pub(crate) fn describe() -> String {
    let tdp_mmu = param("kvm", "tdp_mmu").unwrap_or_else(|| "?".into());
    let has = |m: &str| Path::new("/sys/module").join(m).exists();
    let (vendor, paging) = if has("kvm_pvm") {
        ("kvm_pvm", "shadow")
    } else if has("kvm_intel") {
        (
            "kvm_intel",
            if yes(&param("kvm_intel", "ept")) {
                "tdp"
            } else {
                "shadow"
            },
        )
    } else if has("kvm_amd") {
        (
            "kvm_amd",
            if yes(&param("kvm_amd", "npt")) {
                "tdp"
            } else {
                "shadow"
            },
        )
    } else {
        ("unknown vendor module", "unknown")
    };
    format!("{paging} ({vendor}, tdp_mmu={tdp_mmu})")
}
