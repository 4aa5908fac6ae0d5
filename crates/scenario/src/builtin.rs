//! The built-in scenarios shipped in `scenarios/`, embedded in the binary.

/// (name, file text) of every built-in scenario, in display order.
pub const BUILTIN: &[(&str, &str)] = &[
    ("anon", include_str!("../../../scenarios/anon.toml")),
    (
        "userfault",
        include_str!("../../../scenarios/userfault.toml"),
    ),
    (
        "vgpu-first-touch",
        include_str!("../../../scenarios/vgpu-first-touch.toml"),
    ),
    ("vfio-bar", include_str!("../../../scenarios/vfio-bar.toml")),
    (
        "vvar-write",
        include_str!("../../../scenarios/vvar-write.toml"),
    ),
    (
        "usbfs-tail",
        include_str!("../../../scenarios/usbfs-tail.toml"),
    ),
    (
        "ttm-evict",
        include_str!("../../../scenarios/ttm-evict.toml"),
    ),
    ("mixedmap", include_str!("../../../scenarios/mixedmap.toml")),
    (
        "mixedmap-special",
        include_str!("../../../scenarios/mixedmap-special.toml"),
    ),
    (
        "vgpu-reset-race",
        include_str!("../../../scenarios/vgpu-reset-race.toml"),
    ),
    (
        "vgpu-retry-vma-replaced",
        include_str!("../../../scenarios/vgpu-retry-vma-replaced.toml"),
    ),
    (
        "concurrent-invalidations",
        include_str!("../../../scenarios/concurrent-invalidations.toml"),
    ),
    (
        "invalidate-during-fault",
        include_str!("../../../scenarios/invalidate-during-fault.toml"),
    ),
    (
        "two-vcpus-dontneed",
        include_str!("../../../scenarios/two-vcpus-dontneed.toml"),
    ),
    (
        "nested-pfnmap",
        include_str!("../../../scenarios/nested-pfnmap.toml"),
    ),
    (
        "nested-pfnmap-unsafe",
        include_str!("../../../scenarios/nested-pfnmap-unsafe.toml"),
    ),
    (
        "ro-pfnmap-write",
        include_str!("../../../scenarios/ro-pfnmap-write.toml"),
    ),
    (
        "vvar-read",
        include_str!("../../../scenarios/vvar-read.toml"),
    ),
    (
        "vvar-sigbus",
        include_str!("../../../scenarios/vvar-sigbus.toml"),
    ),
    (
        "readonly-slot",
        include_str!("../../../scenarios/readonly-slot.toml"),
    ),
    (
        "file-private-ro",
        include_str!("../../../scenarios/file-private-ro.toml"),
    ),
    (
        "file-private-cow",
        include_str!("../../../scenarios/file-private-cow.toml"),
    ),
    (
        "file-shared-write",
        include_str!("../../../scenarios/file-shared-write.toml"),
    ),
    (
        "mprotect-ro",
        include_str!("../../../scenarios/mprotect-ro.toml"),
    ),
    (
        "mprotect-none",
        include_str!("../../../scenarios/mprotect-none.toml"),
    ),
    (
        "prot-none",
        include_str!("../../../scenarios/prot-none.toml"),
    ),
    (
        "hole-refill",
        include_str!("../../../scenarios/hole-refill.toml"),
    ),
    (
        "munmap-remap",
        include_str!("../../../scenarios/munmap-remap.toml"),
    ),
    (
        "anon-private-dontneed",
        include_str!("../../../scenarios/anon-private-dontneed.toml"),
    ),
    (
        "anon-shared-dontneed",
        include_str!("../../../scenarios/anon-shared-dontneed.toml"),
    ),
    (
        "memfd-dontneed",
        include_str!("../../../scenarios/memfd-dontneed.toml"),
    ),
];

/// Parse a built-in scenario by name.
pub fn builtin(name: &str) -> Option<Result<crate::Scenario, crate::ScenarioError>> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, t)| crate::parse(&format!("scenarios/{n}.toml"), t))
}
