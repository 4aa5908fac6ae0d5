//! Plan builders shared by the integration tests.
#![allow(dead_code)]

use probe::{
    Backing, BackingKind, Exit, GuestOp, HostAction, Memslot, Mode, Plan, ProbeResult, Step, Vcpu,
};

/// Runs `p` in a fresh process (`kvmmu-probe-child`): for runs that need a `[vvar]` page
/// absent, which this test process (it reads the vDSO clock) cannot give them.
pub fn isolated(p: &Plan) -> Result<ProbeResult, probe::ProbeError> {
    probe::run_isolated(
        p,
        &mut std::process::Command::new(env!("CARGO_BIN_EXE_kvmmu-probe-child")),
    )
}

/// The data gpa of the single-slot plans (kvmp.h DATA_GPA).
pub const D: u64 = 0x10000;

/// True (after printing one SKIP line) when /dev/kvm cannot be used; a failure under
/// `KVMMU_REQUIRE_KVM`.
pub fn skip(test: &str) -> bool {
    probe::skip_without_kvm(test)
}

pub fn backing(
    name: &str,
    kind: BackingKind,
    pages: u64,
    prot_write: bool,
    fill: Option<u32>,
) -> Backing {
    Backing {
        name: name.into(),
        kind,
        pages,
        prot_write,
        fill,
        uffd_delay_ms: 0,
        follows: None,
    }
}

pub fn slot(slot: u32, gpa: u64, backing: &str, pages: u64, readonly: bool) -> Memslot {
    Memslot {
        slot,
        gpa,
        backing: backing.into(),
        offset_pages: 0,
        pages,
        readonly,
    }
}

pub fn r(gpa: u64) -> GuestOp {
    GuestOp::Read { gpa, size: 4 }
}

pub fn w(gpa: u64, value: u64) -> GuestOp {
    GuestOp::Write {
        gpa,
        size: 4,
        value,
    }
}

pub fn after(vcpu: usize, access: usize, action: HostAction) -> Step {
    Step {
        after: Some((vcpu, access, 1)),
        action,
        race: false,
    }
}

pub fn before(action: HostAction) -> Step {
    Step {
        after: None,
        action,
        race: false,
    }
}

/// A host read of a backing page (a scenario's `touch`).
pub fn touch(b: &str, page: u64) -> HostAction {
    HostAction::Read {
        backing: b.into(),
        offset: page * 0x1000,
        size: 4,
    }
}

pub fn mmap_fixed(b: &str, pages: u64, fill: Option<u32>) -> HostAction {
    HostAction::MmapFixedAnon {
        backing: b.into(),
        offset_pages: 0,
        pages,
        fill,
    }
}

pub fn mprotect(b: &str, pages: u64, read: bool, write: bool) -> HostAction {
    HostAction::Mprotect {
        backing: b.into(),
        offset_pages: 0,
        pages,
        read,
        write,
    }
}

pub fn host_write(b: &str, offset: u64, value: u64) -> HostAction {
    HostAction::Write {
        backing: b.into(),
        offset,
        size: 4,
        value,
    }
}

/// One backing "d" of `kind` (1 page unless given) in slot 1 at D, one vCPU.
pub fn one(
    name: &str,
    b: Backing,
    readonly: bool,
    program: Vec<GuestOp>,
    host: Vec<Step>,
    mode: Mode,
) -> Plan {
    let pages = b.pages;
    Plan {
        name: name.into(),
        memslots: vec![slot(1, D, &b.name, pages, readonly)],
        backings: vec![b],
        vcpus: vec![Vcpu {
            program,
            ..Vcpu::default()
        }],
        host,
        mode,
        timeout_ms: 0,
        inject: Default::default(),
        peeks: Vec::new(),
    }
}

/// The attempt lists, in access order.
pub fn exits(res: &ProbeResult) -> Vec<Vec<Exit>> {
    res.accesses.iter().map(|a| a.attempts.clone()).collect()
}

/// The host's final u32 at (backing, offset), if it was read.
pub fn hread(res: &ProbeResult, b: &str, off: u64) -> Option<u64> {
    res.host_reads
        .iter()
        .find(|(n, o, _)| n == b && *o == off)
        .map(|&(_, _, v)| v)
}

pub fn v(x: u64) -> Vec<Exit> {
    vec![Exit::Value(x)]
}

pub fn done() -> Vec<Exit> {
    vec![Exit::Done]
}

pub const MODES: [Mode; 2] = [Mode::Native, Mode::Emulated];
