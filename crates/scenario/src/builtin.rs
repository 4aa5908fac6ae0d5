//! The built-in scenarios shipped in `scenarios/`, embedded in the binary.

/// (name, file text) of every built-in scenario, in display order.
pub const BUILTIN: &[(&str, &str)] = &[
    ("anon", include_str!("../../../scenarios/anon.toml")),
    ("userfault", include_str!("../../../scenarios/userfault.toml")),
    ("vgpu-first-touch", include_str!("../../../scenarios/vgpu-first-touch.toml")),
    ("vfio-bar", include_str!("../../../scenarios/vfio-bar.toml")),
    ("vvar-write", include_str!("../../../scenarios/vvar-write.toml")),
    ("usbfs-tail", include_str!("../../../scenarios/usbfs-tail.toml")),
    ("ttm-evict", include_str!("../../../scenarios/ttm-evict.toml")),
    ("mixedmap", include_str!("../../../scenarios/mixedmap.toml")),
    ("mixedmap-special", include_str!("../../../scenarios/mixedmap-special.toml")),
    ("vgpu-reset-race", include_str!("../../../scenarios/vgpu-reset-race.toml")),
    ("vgpu-retry-vma-replaced", include_str!("../../../scenarios/vgpu-retry-vma-replaced.toml")),
    ("nested-pfnmap", include_str!("../../../scenarios/nested-pfnmap.toml")),
    ("nested-pfnmap-unsafe", include_str!("../../../scenarios/nested-pfnmap-unsafe.toml")),
    ("ro-pfnmap-write", include_str!("../../../scenarios/ro-pfnmap-write.toml")),
];

/// Parse a built-in scenario by name.
pub fn builtin(name: &str) -> Option<Result<crate::Scenario, crate::ScenarioError>> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, t)| crate::parse(&format!("scenarios/{n}.toml"), t))
}
