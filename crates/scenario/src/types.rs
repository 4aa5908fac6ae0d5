//! The validated scenario.

use std::collections::BTreeMap;

/// What backs a host mapping.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Backing {
    /// `MAP_PRIVATE|MAP_ANONYMOUS`.
    AnonPrivate,
    /// `MAP_SHARED|MAP_ANONYMOUS` (shmem).
    AnonShared,
    /// `memfd_create` + `MAP_SHARED`.
    Memfd,
    /// A regular file, `MAP_PRIVATE`.
    FilePrivate,
    /// A regular file, `MAP_SHARED`.
    FileShared,
    /// The process's `[vvar]` (`VM_IO|VM_PFNMAP`, filled by `vmf_insert_pfn`).
    Vvar,
    /// The process's `[vvar_vclock]` (`VM_IO|VM_PFNMAP`): the pvclock page, then the Hyper-V
    /// TSC page (SIGBUS on this host).
    VvarVclock,
    /// Private anonymous memory registered with userfaultfd (MISSING), with a handler
    /// thread that records each first access and fills the page.
    Userfault,
    /// A range that was munmapped after the memslot was created.
    Hole,
    /// `PROT_NONE` anonymous memory.
    ProtNone,
    /// Model only: mdev vGPU BAR, first access trapped, `remap_pfn_range` on fault.
    VgpuBar,
    /// Model only: vfio-pci BAR of MMIO frames, `vmf_insert_pfn` on fault.
    VfioBar,
    /// Model only: usbfs coherent buffer, eager `remap_pfn_range`, tail page refcount 0.
    Usbfs,
    /// Model only: TTM buffer object of non-compound high-order pages.
    Ttm,
    /// Model only: `VM_MIXEDMAP` driver inserting refcounted pages (`vm_insert_page`).
    Mixedmap,
}

impl Backing {
    pub const ALL: [(Backing, &'static str, &'static str); 15] = [
        (
            Backing::AnonPrivate,
            "anon-private",
            "MAP_PRIVATE|MAP_ANONYMOUS memory",
        ),
        (
            Backing::AnonShared,
            "anon-shared",
            "MAP_SHARED|MAP_ANONYMOUS memory (shmem)",
        ),
        (Backing::Memfd, "memfd", "memfd_create + MAP_SHARED"),
        (
            Backing::FilePrivate,
            "file-private",
            "a regular file mapped MAP_PRIVATE",
        ),
        (
            Backing::FileShared,
            "file-shared",
            "a regular file mapped MAP_SHARED",
        ),
        (
            Backing::Vvar,
            "vvar",
            "the process's [vvar] (VM_IO|VM_PFNMAP, vmf_insert_pfn, read-only)",
        ),
        (
            Backing::VvarVclock,
            "vvar-vclock",
            "the process's [vvar_vclock] (VM_IO|VM_PFNMAP: pvclock page, then a SIGBUS page)",
        ),
        (
            Backing::Userfault,
            "userfault",
            "private anon registered with userfaultfd MISSING + handler thread",
        ),
        (Backing::Hole, "hole", "munmapped after the memslot was set"),
        (Backing::ProtNone, "prot-none", "PROT_NONE anonymous memory"),
        (
            Backing::VgpuBar,
            "vgpu-bar",
            "model only: mdev vGPU BAR, first access trapped, remap_pfn_range on fault",
        ),
        (
            Backing::VfioBar,
            "vfio-bar",
            "model only: vfio-pci BAR of MMIO frames, vmf_insert_pfn on fault",
        ),
        (
            Backing::Usbfs,
            "usbfs",
            "model only: usbfs coherent buffer, tail page has refcount 0",
        ),
        (
            Backing::Ttm,
            "ttm",
            "model only: TTM buffer object of non-compound high-order pages",
        ),
        (
            Backing::Mixedmap,
            "mixedmap",
            "model only: VM_MIXEDMAP driver using vm_insert_page",
        ),
    ];

    pub fn name(self) -> &'static str {
        Backing::ALL
            .iter()
            .find(|b| b.0 == self)
            .map_or("?", |b| b.1)
    }

    pub fn from_name(s: &str) -> Option<Backing> {
        Backing::ALL.iter().find(|b| b.1 == s).map(|b| b.0)
    }

    /// The vDSO's own data mappings: read-only kernel data, never written by the host.
    pub fn is_vdso(self) -> bool {
        matches!(self, Backing::Vvar | Backing::VvarVclock)
    }

    /// Pages the kernel gives the mapping, if fixed (`[vvar]` 4, `[vvar_vclock]` 2).
    pub fn fixed_pages(self) -> Option<u64> {
        match self {
            Backing::Vvar => Some(4),
            Backing::VvarVclock => Some(2),
            _ => None,
        }
    }

    /// Whether real KVM can run it (the model-only drivers cannot).
    pub fn realizable(self) -> bool {
        !matches!(
            self,
            Backing::VgpuBar | Backing::VfioBar | Backing::Usbfs | Backing::Ttm | Backing::Mixedmap
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub name: String,
    pub backing: Backing,
    pub pages: u64,
    pub read: bool,
    pub write: bool,
    /// Initial content, the same on the model and on real KVM: every 32-bit word of every
    /// page (default 0). Anonymous and shmem backings: the host stores it through its mapping
    /// before the run (prot-none and prot "r": before the protection is dropped). Files: the
    /// file's content on disk. userfault: what the handler `UFFDIO_COPY`s in for every page
    /// (default: byte `0xa0 + page index`). Not allowed for `[vvar]` (kernel data); a hole
    /// has no content.
    pub fill: Option<u32>,
    /// Pages the host touches (reads) before the guest runs (e.g. vvar page 0 after
    /// `clock_gettime`).
    pub touch: Vec<u64>,
    /// Driver options.
    pub region_index: u64,
    /// vGPU: the fault handler must sleep (drops the mmap lock, `VM_FAULT_RETRY`).
    pub fault_retry: bool,
    /// mixedmap: fault with `vmf_insert_mixed` (special PTEs) instead of `vm_insert_page`.
    pub insert_mixed: bool,
    /// userfault: `UFFD_USER_MODE_ONLY`.
    pub user_mode_only: bool,
    /// userfault: the handler thread waits this long between reading a message and
    /// `UFFDIO_COPY`, so that on real KVM other vCPUs fault the page meanwhile. The model has
    /// no time: it explores every order anyway, so it ignores the delay.
    pub handler_delay_ms: u64,
    /// Placed right after this (earlier) mapping in the VMM's address space, so that one
    /// memslot can span both vmas.
    pub follows: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Memslot {
    pub slot: u32,
    pub gpa: u64,
    pub mapping: String,
    pub offset: u64,
    pub pages: u64,
    pub readonly: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GuestOp {
    Read { gpa: u64, size: u8 },
    Write { gpa: u64, size: u8, value: u64 },
}

impl GuestOp {
    pub fn gpa(&self) -> u64 {
        match *self {
            GuestOp::Read { gpa, .. } | GuestOp::Write { gpa, .. } => gpa,
        }
    }

    pub fn size(&self) -> u8 {
        match *self {
            GuestOp::Read { size, .. } | GuestOp::Write { size, .. } => size,
        }
    }

    pub fn is_write(&self) -> bool {
        matches!(self, GuestOp::Write { .. })
    }
}

/// `read32 0x10000`, `write32 0x10004 = 0x99`: how outputs name an access.
impl std::fmt::Display for GuestOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            GuestOp::Read { gpa, size } => write!(f, "read{} {gpa:#x}", size * 8),
            GuestOp::Write { gpa, size, value } => {
                write!(f, "write{} {gpa:#x} = {value:#x}", size * 8)
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Vcpu {
    pub program: Vec<GuestOp>,
    /// Per access: after an EFAULT, the VMM re-runs it while it has re-run it fewer times than
    /// this (the `reruns` field; by default the last exit a host step waits for, so that
    /// `after = "vcpu0:2"` is one repair after the first EFAULT), then moves on.
    pub reruns: Vec<u32>,
    /// Per access: the data the VMM returns if the read exits as MMIO (default 0).
    pub mmio: Vec<u64>,
}

/// A `kvm_vcpu_map`-style pinned access (nested virtualization).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NestedMap {
    pub gpa: u64,
    pub rounds: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostAction {
    /// A host thread's store through its own mapping.
    Write {
        mapping: String,
        offset: u64,
        size: u8,
        value: u64,
    },
    /// A host thread's load (populates the host PTE).
    Read {
        mapping: String,
        offset: u64,
        size: u8,
    },
    MadviseDontneed {
        mapping: String,
        offset: u64,
        pages: u64,
    },
    Mprotect {
        mapping: String,
        offset: u64,
        pages: u64,
        read: bool,
        write: bool,
    },
    Munmap {
        mapping: String,
        offset: u64,
        pages: u64,
    },
    /// `mmap(MAP_FIXED)` of fresh private anonymous memory over the range.
    MmapAnon {
        mapping: String,
        offset: u64,
        pages: u64,
        fill: Option<u32>,
    },
    /// Device reset / memory disable: the driver zaps its mappings and frees its pages.
    DeviceReset { mapping: String },
    /// TTM eviction of the buffer object.
    Evict { mapping: String },
    /// `KVM_SET_USER_MEMORY_REGION`: slot `slot` at `gpa` over `pages` pages of `mapping` from
    /// page `offset`. On an existing slot KVM decides what it is: a move if only the gpa
    /// differs, -EINVAL if the address, size or `KVM_MEM_READONLY` differ.
    SetMemslot {
        slot: u32,
        gpa: u64,
        mapping: String,
        offset: u64,
        pages: u64,
        readonly: bool,
    },
    /// `KVM_SET_USER_MEMORY_REGION` with `memory_size = 0`: delete slot `slot`.
    DeleteMemslot { slot: u32 },
}

impl HostAction {
    /// The mapping the action is about (a memslot deletion is about none).
    pub fn mapping(&self) -> Option<&str> {
        match self {
            HostAction::Write { mapping, .. }
            | HostAction::Read { mapping, .. }
            | HostAction::MadviseDontneed { mapping, .. }
            | HostAction::Mprotect { mapping, .. }
            | HostAction::Munmap { mapping, .. }
            | HostAction::MmapAnon { mapping, .. }
            | HostAction::DeviceReset { mapping }
            | HostAction::Evict { mapping }
            | HostAction::SetMemslot { mapping, .. } => Some(mapping),
            HostAction::DeleteMemslot { .. } => None,
        }
    }

    /// A `KVM_SET_USER_MEMORY_REGION` step.
    pub fn is_memslot(&self) -> bool {
        matches!(
            self,
            HostAction::SetMemslot { .. } | HostAction::DeleteMemslot { .. }
        )
    }

    /// Whether a VMM process can do this on real KVM.
    pub fn realizable(&self) -> bool {
        !matches!(
            self,
            HostAction::DeviceReset { .. } | HostAction::Evict { .. }
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostStep {
    /// Host thread name; steps of one thread run in file order.
    pub thread: String,
    /// Run after this vCPU access's `exit`-th attempt, or once the access is over with fewer
    /// (vcpu index, access index, exit from 1); `None` races.
    pub after: Option<(usize, usize, u32)>,
    pub action: HostAction,
    /// `race = true`: real KVM runs the step on a host thread while the vCPUs run, instead of
    /// before they start (the model explores every order either way).
    pub race: bool,
}

/// What a (scenario, policy) cell is expected to show.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Expect {
    /// Exactly these oracles are violated (empty: none).
    pub violations: Vec<String>,
    /// Optional headline outcome (`EFAULT`, `refused`, `ok`, ...).
    pub outcome: Option<String>,
}

/// What a `[[seen]]` entry is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeenItem {
    /// vCPU `vcpu`'s access `index` (0-based, as `after`).
    Access { vcpu: usize, index: usize },
    /// The userfaultfd messages the handlers read.
    Uffd,
    /// What memslot host step `k` (file order, from 0) returned: `ok`, `EINVAL`, `EEXIST`,
    /// or `not run`.
    HostStep(usize),
    /// What the host reads back at the end, through its mapping (`file`: false) or with
    /// `pread` of the mapping's file (`file`: true): `size` bytes at byte `offset`, a value
    /// or `EFAULT`.
    Peek(Peek),
}

/// A host read at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peek {
    pub mapping: String,
    pub offset: u64,
    pub size: u8,
    pub file: bool,
}

impl std::fmt::Display for Peek {
    /// `host ram+0x4/4`, `file f+0x0/4`: the observed item's name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.file { "file" } else { "host" };
        write!(f, "{how} {}+{:#x}/{}", self.mapping, self.offset, self.size)
    }
}

/// `[[seen]]`: the values an item must show under every explored schedule, for some
/// policies. A value is said as `kvmmu run --trace` and `diff` say it: `0x1`, `done`,
/// `EFAULT -> 0x55555555`, `MMIO write 0x99999999`, `kernel data`; userfaultfd messages as
/// `ram:0:r ram:2:w` (mapping:page:r|w, in order for one vCPU, sorted for several) or
/// `none`. Hex numbers are compared by value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub item: SeenItem,
    /// Policy names it holds for; empty: every policy.
    pub policies: Vec<String>,
    /// The allowed values (canonical form, [`canonical_value`]); an execution must show one.
    pub values: Vec<String>,
}

impl Seen {
    pub fn applies(&self, policy: &str) -> bool {
        self.policies.is_empty() || self.policies.iter().any(|p| p == policy)
    }
}

/// A value with every hex number written as the tools write it (`0x0001` → `0x1`, also in
/// an MMIO exit's `@0x0010004/4`), and single spaces.
pub fn canonical_value(s: &str) -> String {
    let hex = |w: &str| {
        w.strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .map_or_else(|| w.to_string(), |v| format!("{v:#x}"))
    };
    s.split_whitespace()
        .map(|w| match w.strip_prefix('@') {
            Some(at) => match at.split_once('/') {
                Some((a, len)) => format!("@{}/{len}", hex(a)),
                None => format!("@{}", hex(at)),
            },
            None => hex(w),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`Scenario::run_from`] over a list of mappings (`follows` names an earlier mapping and
/// each mapping has at most one follower, so the run ends).
pub fn mapping_run<'a>(mappings: &'a [Mapping], name: &str) -> Vec<(&'a Mapping, u64)> {
    let mut out = Vec::new();
    let mut at = 0u64;
    let mut cur = mappings.iter().find(|m| m.name == name);
    while let Some(m) = cur {
        out.push((m, at));
        at = at.saturating_add(m.pages);
        cur = mappings
            .iter()
            .find(|n| n.follows.as_deref() == Some(m.name.as_str()));
    }
    out
}

/// A bound `kvmmu check` explores the scenario under by default, for a scenario whose whole
/// interleaving space is too large to cover, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckBound {
    /// At most this many preemptions per schedule.
    pub preemptions: u32,
    /// Why the scenario cannot be checked completely.
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Why real KVM cannot run it, if it cannot.
    pub probe_skip: Option<String>,
    pub allow_unsafe_mappings: bool,
    pub mappings: Vec<Mapping>,
    pub memslots: Vec<Memslot>,
    pub vcpus: Vec<Vcpu>,
    pub nested: Vec<NestedMap>,
    pub host: Vec<HostStep>,
    /// Keyed by policy name (`linux-4.8`).
    pub expect: BTreeMap<String, Expect>,
    /// `[check]`: the bound exhaustive checking uses by default.
    pub check: Option<CheckBound>,
    /// `[[seen]]`: values the accesses must show.
    pub seen: Vec<Seen>,
}

impl Scenario {
    /// The host reads `[[seen]]` asks for, in file order: observed after every other item.
    pub fn peeks(&self) -> Vec<&Peek> {
        self.seen
            .iter()
            .filter_map(|s| match &s.item {
                SeenItem::Peek(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    pub fn mapping(&self, name: &str) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.name == name)
    }

    /// The mappings laid out contiguously from `name` on (it, the one that follows it, ...),
    /// with their first page in the run.
    pub fn run_from(&self, name: &str) -> Vec<(&Mapping, u64)> {
        mapping_run(&self.mappings, name)
    }
}
