//! What a probe run is asked to do: backings, memslots, guest programs and host steps.

use serde::{Deserialize, Serialize};
/// How the guest code runs.
///
/// realkvm.md §0: on this PVM host only 64-bit CPL3 code runs natively and takes shadow-MMU
/// faults through `kvm_faultin_pfn` → `hva_to_pfn`; CPL0 (and real mode) is executed by KVM's
/// instruction emulator, which reaches the slot's hva with `copy_{from,to}_user` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// 64-bit paged, CS/SS DPL 3: the MMU path (hva_to_pfn).
    Native,
    /// 64-bit paged, CS/SS DPL 0: every instruction goes through KVM's emulator.
    Emulated,
}

/// The host memory behind a backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackingKind {
    /// `MAP_PRIVATE | MAP_ANONYMOUS`.
    AnonPrivate,
    /// `MAP_SHARED | MAP_ANONYMOUS`.
    AnonShared,
    /// `memfd_create` + `ftruncate` + `MAP_SHARED`.
    Memfd,
    /// A temp file (filled with `fill`) mapped `MAP_PRIVATE`.
    FilePrivate,
    /// A temp file (filled with `fill`) mapped `MAP_SHARED`.
    FileShared,
    /// This process's own `[vvar]` (VM_IO|VM_PFNMAP, never written).
    Vvar,
    /// This process's own `[vvar_vclock]` (VM_IO|VM_PFNMAP, never written).
    VvarVclock,
    /// Private anon registered with userfaultfd (MISSING mode) and a resolving handler thread.
    Userfault,
    /// Private anon that is munmapped right after the memslots are set.
    Hole,
    /// Anon mapped and then `mprotect(PROT_NONE)`.
    ProtNone,
}

/// One host mapping that memslots can point into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backing {
    /// Name used by memslots and host steps.
    pub name: String,
    /// What kind of memory.
    pub kind: BackingKind,
    /// Size in 4 KiB pages.
    pub pages: u64,
    /// PROT_WRITE in addition to PROT_READ; ignored for Vvar/VvarVclock/ProtNone.
    pub prot_write: bool,
    /// The host writes this 32-bit value repeated over every page before the run
    /// (for Userfault: the handler's UFFDIO_COPY source; None = byte 0xA0+page index).
    pub fill: Option<u32>,
    /// Userfault: the handler sleeps this long after reading a message, before its
    /// `UFFDIO_COPY`, so other vCPUs can fault the same page meanwhile (realkvm.md §9).
    #[serde(default)]
    pub uffd_delay_ms: u64,
    /// Placed right after this backing, so that one memslot can span both (for `[vvar]`
    /// kinds, which the kernel placed: the backing before them is mapped right below).
    #[serde(default)]
    pub follows: Option<String>,
}

/// One KVM memslot from the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memslot {
    /// KVM slot id, used as-is (100 and 101 are reserved for the probe's code/page-table slots).
    pub slot: u32,
    /// Guest physical address (page aligned, inside 0x10000..0x1C0000).
    pub gpa: u64,
    /// Name of the backing.
    pub backing: String,
    /// First backing page covered by the slot.
    pub offset_pages: u64,
    /// Slot size in pages.
    pub pages: u64,
    /// `KVM_MEM_READONLY`.
    pub readonly: bool,
}

/// One guest access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GuestOp {
    /// Load `size` (1, 2, 4, 8) bytes from `gpa`.
    Read { gpa: u64, size: u8 },
    /// Store the low `size` bytes of `value` at `gpa`.
    Write { gpa: u64, size: u8, value: u64 },
}

impl GuestOp {
    /// The guest physical address accessed.
    pub fn gpa(&self) -> u64 {
        match *self {
            GuestOp::Read { gpa, .. } | GuestOp::Write { gpa, .. } => gpa,
        }
    }

    /// The access size in bytes.
    pub fn size(&self) -> u8 {
        match *self {
            GuestOp::Read { size, .. } | GuestOp::Write { size, .. } => size,
        }
    }
}

/// Something the host does to a backing while the guest is stopped at a known point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostAction {
    /// Host store through its own mapping (fault-safe: an unwritable page is an error, not a
    /// crash). On a Userfault backing a store to a missing page raises a uffd event itself.
    Write {
        backing: String,
        offset: u64,
        size: u8,
        value: u64,
    },
    /// Host load of `size` bytes through its own mapping, fault-safe (the kernel does the
    /// copy, so an unreadable page gives EFAULT instead of SIGSEGV/SIGBUS). It populates the
    /// host PTE, as a VMM reading the page would (e.g. `[vvar]` page 0 after
    /// `clock_gettime`). Allowed on `[vvar]` too: it never changes the mapping. A read that
    /// faults is not an error; the value is not reported.
    Read {
        backing: String,
        offset: u64,
        size: u8,
    },
    /// `madvise(MADV_DONTNEED)`.
    MadviseDontneed {
        backing: String,
        offset_pages: u64,
        pages: u64,
    },
    /// `mprotect` to PROT_READ / PROT_WRITE as given (both false = PROT_NONE).
    Mprotect {
        backing: String,
        offset_pages: u64,
        pages: u64,
        read: bool,
        write: bool,
    },
    /// `munmap` (the memslot stays; its hva becomes a hole).
    Munmap {
        backing: String,
        offset_pages: u64,
        pages: u64,
    },
    /// Fresh private anon at the same hva (the "hole" refill), optionally filled.
    MmapFixedAnon {
        backing: String,
        offset_pages: u64,
        pages: u64,
        fill: Option<u32>,
    },
    /// `KVM_SET_USER_MEMORY_REGION` on the VM fd: slot `slot` at `gpa`, `pages` pages of
    /// `backing` from its page `offset_pages` (a slot may go on into the backings that
    /// follow it, as a plan memslot may), `KVM_MEM_READONLY` if `readonly`. On an existing
    /// slot KVM decides what it is: a move if only `gpa` differs; `EINVAL` if the userspace
    /// address, the size or `KVM_MEM_READONLY` differ; `EEXIST` when the range overlaps
    /// another slot. The errno is an outcome, in [`crate::ProbeResult::host_steps`].
    SetMemslot(Memslot),
    /// `KVM_SET_USER_MEMORY_REGION` with `memory_size` 0: deletes slot `slot` (`EINVAL` in
    /// [`crate::ProbeResult::host_steps`] if there is none).
    DeleteMemslot { slot: u32 },
}

impl HostAction {
    /// The backing this action targets (`None` for [`HostAction::DeleteMemslot`]).
    pub fn backing(&self) -> Option<&str> {
        match self {
            HostAction::Write { backing, .. }
            | HostAction::Read { backing, .. }
            | HostAction::MadviseDontneed { backing, .. }
            | HostAction::Mprotect { backing, .. }
            | HostAction::Munmap { backing, .. }
            | HostAction::MmapFixedAnon { backing, .. }
            | HostAction::SetMemslot(Memslot { backing, .. }) => Some(backing),
            HostAction::DeleteMemslot { .. } => None,
        }
    }

    /// A memslot ioctl (its errno is an outcome, not an error).
    pub fn is_memslot(&self) -> bool {
        matches!(
            self,
            HostAction::SetMemslot(_) | HostAction::DeleteMemslot { .. }
        )
    }
}

/// One vCPU and the accesses it performs, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Vcpu {
    /// The guest program.
    pub program: Vec<GuestOp>,
    /// Per access: after EFAULT, re-run it while it has been re-run fewer times than this;
    /// missing entries default to the last exit a host step waits for.
    #[serde(default)]
    pub reruns: Vec<u32>,
    /// Per access: the data the VMM supplies for an MMIO read (missing: 0).
    #[serde(default)]
    pub mmio: Vec<u64>,
}

/// A host action and when it happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// `Some((vcpu, access, exit))`: after that access's `exit`-th attempt (from 1: an
    /// EFAULT, or its completion), or once the access is over with fewer, in that vCPU's
    /// thread while the vCPU is stopped. `None`: before the vCPUs start (unless `race`).
    pub after: Option<(usize, usize, u32)>,
    /// What to do.
    pub action: HostAction,
    /// With `after: None`: run on a host thread that starts together with the vCPUs (behind
    /// the same start gate, issuing its first step once every vCPU thread is past the gate)
    /// instead of before them; racing steps run in plan order on that one thread, back to
    /// back. Not allowed with `after: Some(..)`, nor for `Munmap`/`MmapFixedAnon` (the hole
    /// guard could not tell their holes from a stray mapping while the vCPUs run).
    #[serde(default)]
    pub race: bool,
}

/// A complete probe scenario: one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Scenario name, copied into the result.
    pub name: String,
    /// Host mappings.
    pub backings: Vec<Backing>,
    /// Memslots over the backings.
    pub memslots: Vec<Memslot>,
    /// vCPUs (one thread each).
    pub vcpus: Vec<Vcpu>,
    /// Host steps.
    pub host: Vec<Step>,
    /// Native (CPL3) or Emulated (CPL0).
    pub mode: Mode,
    /// Watchdog per KVM_RUN in ms; 0 means the default 2000 ms.
    pub timeout_ms: u64,
    /// Fault injection, for tests of the probe's own guards.
    pub inject: Inject,
    /// Host reads at the end of the run, reported in [`crate::ProbeResult::peeks`].
    #[serde(default)]
    pub peeks: Vec<Peek>,
}

/// A host read at the end of a run: `size` bytes at byte `offset` of a backing, through the
/// probe's mapping (fault-safe), or with `pread` of its file (`file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peek {
    pub backing: String,
    pub offset: u64,
    pub size: u8,
    pub file: bool,
}

/// Faults the probe's guards must catch: each makes the run `ProbeError::Invalid`, never a
/// guest outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inject {
    /// Once the holes are punched, map a page of the probe's own into each, as a thread
    /// stack landing there would.
    pub squat_holes: bool,
    /// Right before the first KVM_RUN, read every page of every backing the probe maps, as
    /// an allocator or a stray read behind the guest's back would.
    pub touch_behind_back: bool,
    /// Right before the first KVM_RUN, read the clock through the vDSO
    /// (`std::time::Instant::now()`), which maps `[vvar]` page 0.
    pub read_vdso_clock: bool,
}
