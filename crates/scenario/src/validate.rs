//! Semantic checks: every reference resolves, every address lands somewhere sensible.

use crate::error::ScenarioError;
use crate::raw::*;
use crate::types::*;
use std::collections::BTreeMap;
use toml::Spanned;

/// Oracle names a scenario may expect (kept in sync with the model's oracles by a test).
pub const ORACLES: [&str; 9] = [
    "no-host-bug",
    "no-deadlock",
    "refcount-sane",
    "no-freed-frame",
    "no-write-escalation",
    "right-frame",
    "no-stale-spte",
    "guest-coherent",
    "first-access-trapped",
];

/// Policy names a scenario may set expectations for.
pub const POLICIES: [&str; 6] = [
    "linux-4.7",
    "linux-4.8",
    "linux-4.16",
    "linux-5.12",
    "linux-5.13",
    "linux-6.13",
];

/// Headline outcomes a cell can show.
pub const OUTCOMES: [&str; 7] = [
    "ok", "emulated", "MMIO", "refused", "EFAULT", "BUG", "DEADLOCK",
];

struct Cx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Cx<'_> {
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        msg: impl Into<String>,
    ) -> Result<T, ScenarioError> {
        Err(ScenarioError::at(self.file, self.text, span, msg))
    }

    fn key_span(&self, key: &str) -> std::ops::Range<usize> {
        let start = self.text.find("[expect]").unwrap_or(0);
        let at = self.text[start..].find(key).map_or(start, |i| start + i);
        at..at + key.len()
    }
}

fn prot(
    cx: &Cx,
    p: &Option<Spanned<String>>,
    default: (bool, bool),
) -> Result<(bool, bool), ScenarioError> {
    let Some(p) = p else { return Ok(default) };
    match p.get_ref().as_str() {
        "rw" => Ok((true, true)),
        "r" => Ok((true, false)),
        "none" => Ok((false, false)),
        other => cx.err(
            p.span(),
            format!("prot must be \"r\", \"rw\" or \"none\", not {other:?}"),
        ),
    }
}

/// Guest-physical addresses are below 2^48 (the MAXPHYADDR of this machine, which the
/// probe gives its guests).
pub const GPA_LIMIT: u64 = 1 << 48;

/// Guest-physical ranges the probe's guest layout owns, refused to slots and accesses so that
/// every scenario runs on the model and on real KVM alike: its code (below 0x10000), its page
/// tables (0x1C0000..0x200000) and the unbacked pages its reports exit through.
pub const RESERVED_GPA: [(u64, u64, &str); 3] = [
    (0, 0x1_0000, "the probe's guest code"),
    (0x1C_0000, 0x20_0000, "the probe's guest page tables"),
    (0xD000_0000, 0xD000_2000, "the probe's report pages"),
];

/// Mappings have at most this many pages.
pub const MAX_MAPPING_PAGES: u64 = 1024;

/// `access = "vcpu0:1"`, `"uffd"` or `"host:2"` (what memslot host step 2 returned).
fn seen_access(
    cx: &Cx,
    a: &Spanned<String>,
    mappings: &[Mapping],
    vcpus: &[Vcpu],
    host: &[HostStep],
) -> Result<SeenItem, ScenarioError> {
    let t = a.get_ref().trim();
    if let Some(k) = t.strip_prefix("host:") {
        let k = k
            .parse::<usize>()
            .ok()
            .filter(|_| k.bytes().all(|b| b.is_ascii_digit()));
        return match k.map(|k| (k, host.get(k))) {
            Some((k, Some(h))) if h.action.is_memslot() => Ok(SeenItem::HostStep(k)),
            Some((k, Some(_))) => cx.err(
                a.span(),
                format!("host step {k} is not a memslot step: only what KVM_SET_USER_MEMORY_REGION returns is observed"),
            ),
            Some((k, None)) => cx.err(
                a.span(),
                format!("there is no host step {k} ({} in the file)", host.len()),
            ),
            None => cx.err(
                a.span(),
                "a host step is named \"host:K\", K its position among the [[host]] steps from 0",
            ),
        };
    }
    if t == "uffd" {
        if !mappings.iter().any(|m| m.backing == Backing::Userfault) {
            return cx.err(
                a.span(),
                "no userfault mapping: the scenario has no userfaultfd messages",
            );
        }
        return Ok(SeenItem::Uffd);
    }
    let parsed = guest_point(t).filter(|_| !t.contains('#'));
    let Some((vcpu, index, _)) = parsed else {
        return cx.err(
            a.span(),
            "access must look like \"vcpu0:1\" (vCPU 0's access 1), \"host:2\" (memslot host step 2) or be \"uffd\"",
        );
    };
    if vcpus.get(vcpu).is_none_or(|c| index >= c.program.len()) {
        return cx.err(a.span(), format!("there is no vcpu{vcpu} access {index}"));
    }
    Ok(SeenItem::Access { vcpu, index })
}

/// `host = { mapping, offset, size }` / `file = { ... }`.
fn peek(
    cx: &Cx,
    p: &Spanned<RawPeek>,
    file: bool,
    mappings: &[Mapping],
) -> Result<Peek, ScenarioError> {
    let r = p.get_ref();
    let Some(m) = mappings.iter().find(|m| &m.name == r.mapping.get_ref()) else {
        return cx.err(
            r.mapping.span(),
            format!("no mapping named {:?}", r.mapping.get_ref()),
        );
    };
    let size = r.size.unwrap_or(4);
    if ![1, 2, 4, 8].contains(&size) {
        return cx.err(p.span(), "size must be 1, 2, 4 or 8");
    }
    if r.offset.saturating_add(u64::from(size)) > m.pages.saturating_mul(4096)
        || r.offset % 4096 + u64::from(size) > 4096
    {
        return cx.err(
            p.span(),
            format!(
                "{}+{size} is not inside one page of mapping {:?}",
                r.offset, m.name
            ),
        );
    }
    if file
        && !matches!(
            m.backing,
            Backing::FilePrivate | Backing::FileShared | Backing::Memfd
        )
    {
        return cx.err(
            p.span(),
            format!(
                "mapping {:?} has no file to pread (file, file-private, memfd only)",
                m.name
            ),
        );
    }
    Ok(Peek {
        mapping: m.name.clone(),
        offset: r.offset,
        size,
        file,
    })
}

/// Pages of the contiguous run of mappings from `name` on (it and those that follow it).
fn run_pages(mappings: &[Mapping], name: &str) -> u64 {
    crate::types::mapping_run(mappings, name)
        .last()
        .map_or(0, |(m, at)| at.saturating_add(m.pages))
}

/// Most pages in one run of adjacent mappings.
pub const MAX_RUN_PAGES: u64 = 4096;

/// The reserved range `[a, b)` overlaps, if any.
fn reserved(a: u64, b: u64) -> Option<&'static (u64, u64, &'static str)> {
    RESERVED_GPA.iter().find(|r| a < r.1 && r.0 < b)
}

fn fill(cx: &Cx, f: &Option<Spanned<Num>>) -> Result<Option<u32>, ScenarioError> {
    match f {
        None => Ok(None),
        Some(f) if f.get_ref().0 > u64::from(u32::MAX) => {
            cx.err(f.span(), "fill is a 32-bit pattern")
        }
        Some(f) => Ok(Some(f.get_ref().0 as u32)),
    }
}

pub(crate) fn validate(
    file: &str,
    text: &str,
    raw: RawScenario,
) -> Result<Scenario, ScenarioError> {
    let cx = Cx { file, text };
    if raw.name.get_ref().trim().is_empty() {
        return cx.err(raw.name.span(), "name must not be empty");
    }
    let mut mappings: Vec<Mapping> = Vec::new();
    for m in &raw.mappings {
        let span = m.span();
        let m = m.get_ref();
        let name = m.name.get_ref().clone();
        if mappings.iter().any(|x| x.name == name) {
            return cx.err(m.name.span(), format!("mapping {name:?} defined twice"));
        }
        let Some(backing) = Backing::from_name(m.backing.get_ref()) else {
            let names: Vec<&str> = Backing::ALL.iter().map(|b| b.1).collect();
            return cx.err(
                m.backing.span(),
                format!(
                    "unknown backing {:?}; expected one of {}",
                    m.backing.get_ref(),
                    names.join(", ")
                ),
            );
        };
        let pages = *m.pages.get_ref();
        if pages == 0 || pages > MAX_MAPPING_PAGES {
            return cx.err(
                m.pages.span(),
                format!("pages must be between 1 and {MAX_MAPPING_PAGES}"),
            );
        }
        let default = match backing {
            Backing::Vvar | Backing::VvarVclock => (true, false),
            Backing::ProtNone => (false, false),
            _ => (true, true),
        };
        let (read, write) = prot(&cx, &m.prot, default)?;
        let vdso = if backing == Backing::Vvar {
            "[vvar]"
        } else {
            "[vvar_vclock]"
        };
        if backing.is_vdso() && write {
            return cx.err(span, format!("{vdso} is read-only: prot must be \"r\""));
        }
        if let (true, Some(f)) = (backing.is_vdso(), &m.fill) {
            return cx.err(
                f.span(),
                format!("{vdso} holds the kernel's vDSO data: it cannot be filled"),
            );
        }
        if let Some(n) = backing.fixed_pages().filter(|&n| pages > n) {
            return cx.err(m.pages.span(), format!("{vdso} has {n} pages"));
        }
        if m.touch.len() > MAX_TOUCHES {
            return cx.err(
                m.touch[MAX_TOUCHES].span(),
                format!("at most {MAX_TOUCHES} touches per mapping"),
            );
        }
        for t in &m.touch {
            if *t.get_ref() >= pages {
                return cx.err(
                    t.span(),
                    format!(
                        "touch page {} is outside the {pages}-page mapping",
                        t.get_ref()
                    ),
                );
            }
        }
        mappings.push(Mapping {
            name,
            backing,
            pages,
            read,
            write,
            fill: fill(&cx, &m.fill)?,
            touch: m.touch.iter().map(|t| *t.get_ref()).collect(),
            region_index: match &m.region_index {
                None => 0,
                Some(r) if !matches!(backing, Backing::VgpuBar | Backing::VfioBar) => return cx
                    .err(
                    r.span(),
                    "region_index is a vfio region: only vgpu-bar and vfio-bar mappings have one",
                ),
                Some(r) if *r.get_ref() > 5 => {
                    return cx.err(r.span(), "region_index is a PCI BAR: 0 to 5")
                }
                Some(r) => *r.get_ref(),
            },
            fault_retry: m.fault_retry,
            insert_mixed: m.insert_mixed,
            user_mode_only: m.user_mode_only,
            follows: match &m.follows {
                None => None,
                Some(f) => {
                    let f_ = f.get_ref();
                    if !mappings.iter().any(|p| &p.name == f_) {
                        return cx.err(
                            f.span(),
                            format!("follows {f_:?}: no earlier mapping has that name"),
                        );
                    }
                    if mappings.iter().any(|p| p.follows.as_ref() == Some(f_)) {
                        return cx.err(
                            f.span(),
                            format!("another mapping already follows {f_:?}"),
                        );
                    }
                    Some(f_.clone())
                }
            },
            handler_delay_ms: match &m.handler_delay_ms {
                None => 0,
                Some(d) if backing != Backing::Userfault => {
                    return cx.err(
                        d.span(),
                        "handler_delay_ms is the userfaultfd handler's: only userfault mappings have one",
                    )
                }
                Some(d) if *d.get_ref() > 1000 => {
                    return cx.err(d.span(), "handler_delay_ms must be at most 1000")
                }
                Some(d) => *d.get_ref(),
            },
        });
    }
    for (m, raw_m) in mappings.iter().zip(&raw.mappings) {
        if m.follows.is_some() {
            continue;
        }
        if run_pages(&mappings, &m.name) > MAX_RUN_PAGES {
            return cx.err(
                raw_m.span(),
                format!(
                    "mappings laid out one after another: at most {MAX_RUN_PAGES} pages in all"
                ),
            );
        }
    }
    let find = |s: &Spanned<String>| -> Result<&Mapping, ScenarioError> {
        mappings
            .iter()
            .find(|m| &m.name == s.get_ref())
            .map_or_else(
                || cx.err(s.span(), format!("no mapping named {:?}", s.get_ref())),
                Ok,
            )
    };
    let mut memslots: Vec<Memslot> = Vec::new();
    for s in &raw.memslots {
        let s = s.get_ref();
        let m = find(&s.mapping)?;
        let gpa = *s.gpa.get_ref();
        let pages = *s.pages.get_ref();
        slot_geometry(
            &cx,
            &mappings,
            m,
            (gpa, s.gpa.span()),
            (pages, s.pages.span()),
            s.offset,
        )?;
        if let Some(o) = memslots
            .iter()
            .find(|o| gpa < o.gpa + o.pages * 4096 && o.gpa < gpa + pages * 4096)
        {
            return cx.err(s.gpa.span(), format!("overlaps memslot {}", o.slot));
        }
        if memslots.iter().any(|o| o.slot == s.slot) {
            return cx.err(s.gpa.span(), format!("slot id {} used twice", s.slot));
        }
        memslots.push(Memslot {
            slot: s.slot,
            gpa,
            mapping: m.name.clone(),
            offset: s.offset,
            pages,
            readonly: s.readonly,
        });
    }
    let accesses: usize = raw.vcpus.iter().map(|v| v.program.len()).sum();
    if accesses > MAX_ACCESSES {
        let last = raw.vcpus.iter().flat_map(|v| &v.program).nth(MAX_ACCESSES);
        return cx.err(
            last.map_or(0..0, |o| o.span()),
            format!("at most {MAX_ACCESSES} guest accesses in all"),
        );
    }
    let mut vcpus = Vec::new();
    let mut explicit_reruns: Vec<Vec<Option<u32>>> = Vec::new();
    for v in &raw.vcpus {
        let mut program = Vec::new();
        for op in &v.program {
            let span = op.span();
            let o = op.get_ref();
            let size = o.size.unwrap_or(4);
            if ![1, 2, 4, 8].contains(&size) {
                return cx.err(span, "size must be 1, 2, 4 or 8");
            }
            let op = match (
                o.read.map(|n| n.0),
                o.write.map(|n| n.0),
                o.value.map(|n| n.0),
            ) {
                (Some(gpa), None, None) => GuestOp::Read { gpa, size },
                (None, Some(gpa), Some(value)) => {
                    if size < 8 && value >> (size * 8) != 0 {
                        return cx.err(
                            span,
                            format!("value {value:#x} does not fit in {size} bytes"),
                        );
                    }
                    GuestOp::Write { gpa, size, value }
                }
                (None, Some(_), None) => return cx.err(span, "a write needs a value"),
                _ => {
                    return cx.err(
                        span,
                        "an access is { read = GPA } or { write = GPA, value = V }",
                    )
                }
            };
            let gpa = match op {
                GuestOp::Read { gpa, .. } | GuestOp::Write { gpa, .. } => gpa,
            };
            // Any alignment: an access may cross into the next page (the CPU needs both
            // translations; see the model's `access_split`).
            if gpa.saturating_add(u64::from(size)) > GPA_LIMIT {
                return cx.err(span, "guest accesses must lie below 2^48");
            }
            if let Some(r) = reserved(gpa, gpa + u64::from(size)) {
                return cx.err(span, format!("accesses {:#x}..{:#x}, {}", r.0, r.1, r.2));
            }
            program.push(op);
        }
        let reruns = v
            .program
            .iter()
            .map(|o| match &o.get_ref().reruns {
                Some(r) if *r.get_ref() > MAX_RERUNS => {
                    cx.err(r.span(), format!("reruns: at most {MAX_RERUNS}"))
                }
                r => Ok(r.as_ref().map(|r| *r.get_ref())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut mmio = Vec::new();
        for (o, op) in v.program.iter().zip(&program) {
            mmio.push(match (&o.get_ref().mmio, op) {
                (None, _) => 0,
                (Some(m), GuestOp::Read { size, .. }) => {
                    let m_ = m.get_ref().0;
                    if *size < 8 && m_ >> (u32::from(*size) * 8) != 0 {
                        return cx.err(
                            m.span(),
                            format!("mmio {m_:#x} does not fit in {size} bytes"),
                        );
                    }
                    m_
                }
                (Some(m), GuestOp::Write { .. }) => {
                    return cx.err(
                        m.span(),
                        "mmio is the data the VMM returns for an MMIO read: a write has none",
                    )
                }
            });
        }
        vcpus.push(Vcpu {
            program,
            reruns: reruns.iter().map(|r| r.unwrap_or(0)).collect(),
            mmio,
        });
        explicit_reruns.push(reruns);
    }
    let mut nested = Vec::new();
    for n in &raw.nested {
        let span = n.span();
        let n = n.get_ref();
        if !memslots
            .iter()
            .any(|s| s.gpa <= n.gpa && n.gpa < s.gpa + s.pages * 4096)
        {
            return cx.err(
                span,
                format!("nested_map gpa {:#x} is in no memslot", n.gpa),
            );
        }
        let rounds = match &n.rounds {
            None => 3,
            Some(r) if (1..=MAX_ROUNDS).contains(r.get_ref()) => *r.get_ref(),
            Some(r) => {
                return cx.err(
                    r.span(),
                    format!("rounds must be between 1 and {MAX_ROUNDS}"),
                )
            }
        };
        nested.push(NestedMap { gpa: n.gpa, rounds });
    }
    let mut host = Vec::new();
    for (j, h) in raw.host.iter().enumerate() {
        let span = h.span();
        let h = h.get_ref();
        let after = match &h.after {
            None => None,
            Some(a) => Some(parse_after(&cx, a, &vcpus)?),
        };
        // Fields an action does not use are refused where they stand, not ignored.
        let action_name = h.action.get_ref().as_str();
        let uses: &[&str] = match action_name {
            "write" => &["mapping", "offset", "size", "value"],
            "read" => &["mapping", "offset", "size"],
            "madvise-dontneed" | "munmap" => &["mapping", "offset", "pages"],
            "mprotect" => &["mapping", "offset", "pages", "prot"],
            "mmap-anon" => &["mapping", "offset", "pages", "fill"],
            "device-reset" | "evict" => &["mapping"],
            "set-memslot" => &["mapping", "offset", "pages", "slot", "gpa", "readonly"],
            "delete-memslot" => &["slot"],
            _ => &[],
        };
        let given = [
            ("mapping", h.mapping.as_ref().map(Spanned::span)),
            ("offset", h.offset.as_ref().map(Spanned::span)),
            ("pages", h.pages.as_ref().map(Spanned::span)),
            ("prot", h.prot.as_ref().map(Spanned::span)),
            ("value", h.value.as_ref().map(Spanned::span)),
            ("size", h.size.as_ref().map(Spanned::span)),
            ("fill", h.fill.as_ref().map(Spanned::span)),
            ("slot", h.slot.as_ref().map(Spanned::span)),
            ("gpa", h.gpa.as_ref().map(Spanned::span)),
            ("readonly", h.readonly.as_ref().map(Spanned::span)),
        ];
        if ACTIONS.contains(&action_name) {
            for (field, sp) in given {
                if let (Some(sp), false) = (sp, uses.contains(&field)) {
                    return cx.err(
                        sp,
                        format!("{field} means nothing to a {action_name:?} step: remove it"),
                    );
                }
            }
        }
        let needs = |field: &str| {
            cx.err(
                span.clone(),
                format!("a {action_name:?} step needs {field}"),
            )
        };
        let race = match (&h.race, after) {
            (Some(r), Some(_)) if *r.get_ref() => {
                return cx.err(
                    r.span(),
                    "race = true is for steps without after: a step after a guest access \
                     already runs while the vCPUs run",
                )
            }
            (r, _) => r.as_ref().is_some_and(|r| *r.get_ref()),
        };
        if action_name == "delete-memslot" {
            let Some(slot) = &h.slot else {
                return needs("slot");
            };
            host.push(HostStep {
                thread: h.thread.clone().unwrap_or_else(|| format!("host{j}")),
                after,
                action: HostAction::DeleteMemslot {
                    slot: *slot.get_ref(),
                },
                race,
            });
            continue;
        }
        if !ACTIONS.contains(&action_name) {
            return cx.err(
                h.action.span(),
                format!(
                    "unknown action {action_name:?}; expected {}",
                    ACTIONS.join(", ")
                ),
            );
        }
        let Some(mapping_name) = &h.mapping else {
            return needs("a mapping");
        };
        let m = find(mapping_name)?;
        let size = match &h.size {
            None => 4,
            Some(sz) if [1, 2, 4, 8].contains(sz.get_ref()) => *sz.get_ref() as u8,
            Some(sz) => return cx.err(sz.span(), "size must be 1, 2, 4 or 8"),
        };
        if let Some(v) = &h.value {
            let v_ = v.get_ref().0;
            if size < 8 && v_ >> (u32::from(size) * 8) != 0 {
                return cx.err(
                    v.span(),
                    format!("value {v_:#x} does not fit in {size} bytes"),
                );
            }
        }
        let offset = h.offset.as_ref().map_or(0, |o| *o.get_ref());
        // Page-granular actions default to the rest of the mapping from their page offset.
        let pages = h
            .pages
            .as_ref()
            .map_or(m.pages.saturating_sub(offset), |p| *p.get_ref());
        let mapping = m.name.clone();
        let action = match action_name {
            "write" => HostAction::Write {
                mapping,
                offset,
                size,
                value: h.value.as_ref().map_or_else(
                    || cx.err(span.clone(), "write needs a value"),
                    |v| Ok(v.get_ref().0),
                )?,
            },
            "read" => HostAction::Read {
                mapping,
                offset,
                size,
            },
            "madvise-dontneed" => HostAction::MadviseDontneed {
                mapping,
                offset,
                pages,
            },
            "mprotect" => {
                let (read, write) = prot(&cx, &h.prot, (true, true))?;
                HostAction::Mprotect {
                    mapping,
                    offset,
                    pages,
                    read,
                    write,
                }
            }
            "munmap" => HostAction::Munmap {
                mapping,
                offset,
                pages,
            },
            "mmap-anon" => HostAction::MmapAnon {
                mapping,
                offset,
                pages,
                fill: fill(&cx, &h.fill)?,
            },
            "device-reset" => HostAction::DeviceReset { mapping },
            "evict" => HostAction::Evict { mapping },
            "set-memslot" => {
                let (Some(slot), Some(gpa)) = (&h.slot, &h.gpa) else {
                    return needs("slot and gpa");
                };
                let pages_span = h.pages.as_ref().map_or(span.clone(), Spanned::span);
                slot_geometry(
                    &cx,
                    &mappings,
                    m,
                    (*gpa.get_ref(), gpa.span()),
                    (pages, pages_span),
                    offset,
                )?;
                HostAction::SetMemslot {
                    slot: *slot.get_ref(),
                    gpa: *gpa.get_ref(),
                    mapping,
                    offset,
                    pages,
                    readonly: h.readonly.as_ref().is_some_and(|r| *r.get_ref()),
                }
            }
            other => {
                return cx.err(
                    h.action.span(),
                    format!("unknown action {other:?}; expected {}", ACTIONS.join(", ")),
                )
            }
        };
        let in_pages = |off_pages: u64, n: u64| off_pages.saturating_add(n) <= m.pages;
        let ok = match &action {
            HostAction::Write { offset, size, .. } | HostAction::Read { offset, size, .. } => {
                offset.saturating_add(u64::from(*size)) <= m.pages * 4096
            }
            HostAction::MadviseDontneed { offset, pages, .. }
            | HostAction::Mprotect { offset, pages, .. }
            | HostAction::Munmap { offset, pages, .. }
            | HostAction::MmapAnon { offset, pages, .. } => *pages > 0 && in_pages(*offset, *pages),
            HostAction::DeviceReset { .. } => {
                matches!(m.backing, Backing::VgpuBar | Backing::VfioBar)
            }
            HostAction::Evict { .. } => m.backing == Backing::Ttm,
            HostAction::SetMemslot { .. } | HostAction::DeleteMemslot { .. } => true,
        };
        if !ok {
            return cx.err(span, format!("action {:?} does not fit mapping {:?} ({}, {} pages); offsets of madvise/mprotect/munmap/mmap-anon are in pages, of read/write in bytes", h.action.get_ref(), m.name, m.backing.name(), m.pages));
        }
        host.push(HostStep {
            thread: h.thread.clone().unwrap_or_else(|| format!("host{j}")),
            after,
            action,
            race,
        });
    }
    // Every vCPU, nested map, host thread, userfaultfd handler (and its exit path), touching
    // VMM thread and driver setup is an actor of the model's world.
    let threads: std::collections::BTreeSet<&str> =
        host.iter().map(|h| h.thread.as_str()).collect();
    let actors = vcpus.len()
        + nested.len()
        + threads.len()
        + mappings
            .iter()
            .map(|m| {
                2 * usize::from(m.backing == Backing::Userfault)
                    + usize::from(!m.touch.is_empty())
                    + usize::from(m.backing == Backing::Mixedmap)
            })
            .sum::<usize>();
    if actors > MAX_THREADS {
        return cx.err(
            raw.name.span(),
            format!(
                "{actors} threads (vCPUs, nested maps, host threads, userfaultfd handlers and the \
                 VMM's setup threads); the model runs at most {MAX_THREADS}"
            ),
        );
    }
    // An access re-runs after EFAULT as often as its `reruns` says; by default as often as
    // host steps wait on its exits (one repair after the first EFAULT: "vcpu0:2").
    for s in &host {
        if let Some((v, i, k)) = s.after {
            if explicit_reruns[v][i].is_none() {
                let r = &mut vcpus[v].reruns[i];
                *r = (*r).max(k);
            }
        }
    }
    if let Some(j) = waits_on_itself(&host) {
        let after = raw.host[j].get_ref().after.as_ref().expect("sequenced");
        return cx.err(
            after.span(),
            "this step can never run: it waits for a guest access that cannot finish before \
             the steps its thread runs after it (order each thread's steps by the accesses they follow)",
        );
    }
    let mut expect = BTreeMap::new();
    for (k, e) in raw.expect {
        if !POLICIES.contains(&k.as_str()) {
            return cx.err(
                cx.key_span(&k),
                format!(
                    "unknown policy {k:?} in [expect]; expected one of {}",
                    POLICIES.join(", ")
                ),
            );
        }
        for v in &e.violations {
            if !ORACLES.contains(&v.get_ref().as_str()) {
                let v_ = v.get_ref();
                return cx.err(
                    v.span(),
                    format!(
                        "unknown oracle {v_:?}; expected one of {}",
                        ORACLES.join(", ")
                    ),
                );
            }
        }
        if let Some(o) = &e.outcome {
            if !OUTCOMES.contains(&o.get_ref().as_str()) {
                let o_ = o.get_ref();
                return cx.err(
                    o.span(),
                    format!(
                        "unknown outcome {o_:?}; expected one of {}",
                        OUTCOMES.join(", ")
                    ),
                );
            }
        }
        expect.insert(
            k,
            Expect {
                violations: e.violations.into_iter().map(Spanned::into_inner).collect(),
                outcome: e.outcome.map(Spanned::into_inner),
            },
        );
    }
    let check = match raw.check {
        None => None,
        Some(c) => {
            let c = c.into_inner();
            if *c.preemptions.get_ref() > 16 {
                return cx.err(
                    c.preemptions.span(),
                    "preemptions: at most 16 (a bound that large explores about as much as none)",
                );
            }
            if c.why.get_ref().trim().is_empty() {
                return cx.err(
                    c.why.span(),
                    "why: say why the scenario cannot be checked completely",
                );
            }
            Some(CheckBound {
                preemptions: c.preemptions.into_inner(),
                why: c.why.into_inner(),
            })
        }
    };
    let mut seen = Vec::new();
    for sp in &raw.seen {
        let s = sp.get_ref();
        let item = match (&s.access, &s.host, &s.file) {
            (Some(a), None, None) => seen_access(&cx, a, &mappings, &vcpus, &host)?,
            (None, Some(p), None) => SeenItem::Peek(peek(&cx, p, false, &mappings)?),
            (None, None, Some(p)) => SeenItem::Peek(peek(&cx, p, true, &mappings)?),
            _ => {
                return cx.err(
                    sp.span(),
                    "a [[seen]] entry names one of access, host or file",
                )
            }
        };
        for p in &s.policies {
            if !POLICIES.contains(&p.get_ref().as_str()) {
                return cx.err(
                    p.span(),
                    format!(
                        "unknown policy {:?}; expected one of {}",
                        p.get_ref(),
                        POLICIES.join(", ")
                    ),
                );
            }
        }
        let values: Vec<String> = match s.is.get_ref() {
            crate::raw::OneOrMany::One(v) => vec![v.clone()],
            crate::raw::OneOrMany::Many(v) => v.clone(),
        };
        if values.is_empty() || values.iter().any(|v| v.trim().is_empty()) {
            return cx.err(s.is.span(), "is: give a value, or a list of allowed values");
        }
        seen.push(Seen {
            item,
            policies: s.policies.iter().map(|p| p.get_ref().clone()).collect(),
            values: values.iter().map(|v| canonical_value(v.trim())).collect(),
        });
    }
    Ok(Scenario {
        name: raw.name.into_inner(),
        description: raw.description,
        probe_skip: raw.probe_skip,
        allow_unsafe_mappings: raw.allow_unsafe_mappings,
        mappings,
        memslots,
        vcpus,
        nested,
        host,
        expect,
        check,
        seen,
    })
}

/// A host step that waits, through the guest accesses it follows and its thread's order, on
/// itself (the run could only deadlock). A step after vCPU v's access i runs once that
/// access finished, which needs every step after an earlier access of v done, and once the
/// steps before it in its thread ran.
fn waits_on_itself(host: &[HostStep]) -> Option<usize> {
    let deps = |s: usize| -> Vec<usize> {
        let mut d: Vec<usize> = (0..s)
            .filter(|&t| host[t].thread == host[s].thread)
            .collect();
        if let Some((v, i, e)) = host[s].after {
            d.extend((0..host.len()).filter(
                |&t| matches!(host[t].after, Some((w, k, f)) if w == v && (k, f) < (i, e)),
            ));
        }
        d
    };
    // The first sequenced step that reaches itself (a cycle needs a sequenced step: thread
    // order alone only points back).
    (0..host.len())
        .filter(|&s| host[s].after.is_some())
        .find(|&s| {
            let mut seen = vec![false; host.len()];
            let mut todo = deps(s);
            while let Some(t) = todo.pop() {
                if t == s {
                    return true;
                }
                if !std::mem::replace(&mut seen[t], true) {
                    todo.extend(deps(t));
                }
            }
            false
        })
}

/// Size limits: what a scenario may ask of the model (and of its step bound).
const MAX_ACCESSES: usize = 100_000;
const MAX_TOUCHES: usize = 10_000;
const MAX_ROUNDS: usize = 1_000;
const MAX_THREADS: usize = 64;

/// A memslot's gpa range and its place in the mapping (run) it covers, for `[[memslot]]`
/// and `set-memslot` steps alike.
fn slot_geometry(
    cx: &Cx,
    mappings: &[Mapping],
    m: &Mapping,
    (gpa, gpa_span): (u64, std::ops::Range<usize>),
    (pages, pages_span): (u64, std::ops::Range<usize>),
    offset: u64,
) -> Result<(), ScenarioError> {
    if gpa % 4096 != 0 {
        return cx.err(gpa_span.clone(), "gpa must be page-aligned");
    }
    let end = gpa.saturating_add(pages.saturating_mul(4096));
    if end > GPA_LIMIT {
        return cx.err(
            gpa_span.clone(),
            "memslots must end below 2^48 (guest-physical addresses are 48 bits)",
        );
    }
    if let Some(r) = reserved(gpa, end) {
        return cx.err(
            gpa_span.clone(),
            format!("overlaps {:#x}..{:#x}, {}", r.0, r.1, r.2),
        );
    }
    let run = run_pages(mappings, &m.name);
    if pages == 0 || offset.saturating_add(pages) > run {
        return cx.err(
            pages_span,
            format!(
                "slot covers pages {}..{} of a {}-page mapping{}",
                offset,
                offset.saturating_add(pages),
                run,
                if run > m.pages {
                    " (with the mappings that follow it)"
                } else {
                    ""
                }
            ),
        );
    }
    Ok(())
}

/// The host actions a scenario may name.
pub const ACTIONS: [&str; 10] = [
    "write",
    "read",
    "madvise-dontneed",
    "mprotect",
    "munmap",
    "mmap-anon",
    "device-reset",
    "evict",
    "set-memslot",
    "delete-memslot",
];

/// `"vcpu0:2"`: after vCPU 0's access 2 (0-based) ends its first attempt; `"vcpu0:2#3"`:
/// after its 3rd (the VMM re-ran it after two exits), or once it is over with fewer.
fn parse_after(
    cx: &Cx,
    a: &Spanned<String>,
    vcpus: &[Vcpu],
) -> Result<(usize, usize, u32), ScenarioError> {
    let s = a.get_ref();
    let bad = || {
        cx.err(
            a.span(),
            format!(
                "after must look like \"vcpu0:2\" (vCPU 0, access 2) or \"vcpu0:2#3\" (its 3rd \
                 exit), not {s:?}"
            ),
        )
    };
    let Some((v, i, k)) = guest_point(s) else {
        return bad();
    };
    if k == 0 || k > MAX_RERUNS + 1 {
        return cx.err(
            a.span(),
            format!(
                "exits are counted from 1; at most {} per access",
                MAX_RERUNS + 1
            ),
        );
    }
    match vcpus.get(v) {
        None => cx.err(a.span(), format!("there is no vcpu{v}")),
        Some(p) if i >= p.program.len() => cx.err(
            a.span(),
            format!("vcpu{v} has only {} accesses", p.program.len()),
        ),
        Some(_) => Ok((v, i, k)),
    }
}

/// `"vcpuV:I"` or `"vcpuV:I#K"` as (V, I, K) (K defaults to 1); digits only (`usize::from_str`
/// would take "+0").
fn guest_point(s: &str) -> Option<(usize, usize, u32)> {
    let (v, rest) = s.strip_prefix("vcpu")?.split_once(':')?;
    let (i, k) = rest.split_once('#').unwrap_or((rest, "1"));
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(v) || !digits(i) || !digits(k) {
        return None;
    }
    Some((v.parse().ok()?, i.parse().ok()?, k.parse().ok()?))
}

/// Most times the VMM re-runs one access after EFAULT.
const MAX_RERUNS: u32 = 100;
