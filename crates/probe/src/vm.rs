//! VM and vCPU setup, as kvmp.h `vm_new` / `vcpu_reset` do it.
//!
//! realkvm.md §0 "native guest setup": identity page tables in their own slot, CR0=0x80050033,
//! CR4=PAE, EFER=LME|LMA, CS type 11 L=1, data segments type 3 DB=1; DPL 3 for the native
//! (shadow-MMU) path, DPL 0 for the emulated path. No IDT, no irqchip, no PVM MSRs.

use crate::layout::{
    page_tables, CODE_GPA, CODE_SLOT, DATA_GPA, MARK_VA, PAGE, PT_GPA, PT_SLOT, REPORT_VA,
};
use crate::outcome::{sys, ProbeError};
use crate::plan::Mode;
use crate::region::Region;
use kvm_bindings::{
    kvm_regs, kvm_segment, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES,
    KVM_MEM_READONLY,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

/// A VM with its code and page-table slots. Field order matters: the VM fd is closed before
/// the code and page-table mappings are unmapped.
pub(crate) struct GuestVm {
    /// The VM.
    pub fd: VmFd,
    /// KVM's supported CPUID, given to every vCPU (as a VMM does): its MAXPHYADDR lets guest
    /// page tables reach the whole 48-bit guest-physical space (without CPUID, 36 bits).
    cpuid: CpuId,
    _code: Region,
    _pt: Region,
}

/// Opens /dev/kvm; `NoKvm` with one clear line when that is impossible.
pub(crate) fn open_kvm() -> Result<Kvm, ProbeError> {
    let kvm = Kvm::new().map_err(|e| ProbeError::NoKvm(format!("cannot open /dev/kvm: {e}")))?;
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(ProbeError::NoKvm(format!(
            "/dev/kvm API version {v}, expected 12"
        )));
    }
    Ok(kvm)
}

impl GuestVm {
    /// Creates a VM whose code slot at CODE_GPA holds `code` and whose page-table slot holds
    /// the identity map of 0..2 MiB and the `extra` gpa pages ([`page_tables`]).
    pub(crate) fn new(code: &[u8], extra: &[u64]) -> Result<GuestVm, ProbeError> {
        let kvm = open_kvm()?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| sys("KVM_GET_SUPPORTED_CPUID", e))?;
        let tables = page_tables(extra).map_err(ProbeError::BadPlan)?;
        let pt_pages = (tables.len() as u64 * 8).div_ceil(PAGE);
        let fd = kvm
            .create_vm()
            .map_err(|e| ProbeError::NoKvm(format!("KVM_CREATE_VM: {e}")))?;
        let code_pages = (code.len() as u64).div_ceil(PAGE).max(1);
        // MAP_SHARED|MAP_ANONYMOUS as in kvmp.h.
        let code_r = Region::anon(code_pages, true).map_err(|e| sys("mmap code", e))?;
        code_r.copy_in(0, code);
        let pt_r = Region::anon(pt_pages, true).map_err(|e| sys("mmap page tables", e))?;
        let pt: Vec<u8> = tables.iter().flat_map(|e| e.to_le_bytes()).collect();
        pt_r.copy_in(0, &pt);
        let vm = GuestVm {
            fd,
            cpuid,
            _code: code_r,
            _pt: pt_r,
        };
        vm.set_slot(CODE_SLOT, CODE_GPA, code_pages, vm._code.base(), false)
            .map_err(|e| sys("code slot", e))?;
        vm.set_slot(PT_SLOT, PT_GPA, pt_pages, vm._pt.base(), false)
            .map_err(|e| sys("page-table slot", e))?;
        Ok(vm)
    }

    /// KVM_SET_USER_MEMORY_REGION: slot `slot` maps `pages` pages at `gpa` to `hva`.
    pub(crate) fn set_slot(
        &self,
        slot: u32,
        gpa: u64,
        pages: u64,
        hva: usize,
        readonly: bool,
    ) -> Result<(), String> {
        self.set_region(slot, gpa, pages, hva, readonly)
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION slot {slot} gpa {gpa:#x}: {e}"))
    }

    /// KVM_SET_USER_MEMORY_REGION, with KVM's errno (a memslot host step's outcome).
    /// `pages` 0 deletes the slot.
    ///
    /// Callers pass an `hva` range inside a backing of this run (the plan's memslots and
    /// `SetMemslot` steps are validated to lie within their backing, or within a run of
    /// backings placed one after another), inside the code or page-table region of this VM,
    /// or nothing (a delete).
    pub(crate) fn set_region(
        &self,
        slot: u32,
        gpa: u64,
        pages: u64,
        hva: usize,
        readonly: bool,
    ) -> Result<(), vmm_sys_util::errno::Error> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: if readonly { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: gpa,
            memory_size: pages * PAGE,
            userspace_addr: if pages == 0 { 0 } else { hva as u64 },
        };
        // SAFETY: the guest may reach the hva range for as long as the slot exists, so it must
        // be memory nothing else in this process relies on, and stay ours while the VM lives.
        // It is a backing of this run (plan memslots and `SetMemslot` steps are validated to
        // lie within their backing's pages, or a run of backings placed one after another),
        // this VM's own code or page-table region, or this process's [vvar] (read-only to the
        // guest: KVM emulates writes). Backings and regions are only ever accessed through raw
        // pointers (hostio, volatile copies), so guest writes cannot break Rust aliasing rules.
        // Every run drops its vCPUs and then this VM before the backings, and `GuestVm` closes
        // its fd before unmapping its own regions, so no slot outlives the memory it points
        // into. Parts a scenario unmaps on purpose (holes) are what the probe tests: KVM gives
        // EFAULT or MMIO for them, and the hole guard refuses a run in which anything else got
        // mapped there. A delete (`pages` 0) maps nothing.
        unsafe { self.fd.set_user_memory_region(region) }
    }

    /// Creates vCPU `id` starting at `rip` in `mode`.
    pub(crate) fn vcpu(&self, id: u64, mode: Mode, rip: u64) -> Result<VcpuFd, ProbeError> {
        let v = self
            .fd
            .create_vcpu(id)
            .map_err(|e| sys(format!("KVM_CREATE_VCPU {id}"), e))?;
        v.set_cpuid2(&self.cpuid)
            .map_err(|e| sys("KVM_SET_CPUID2", e))?;
        reset(&v, mode, rip, 0)?;
        Ok(v)
    }
}

/// Sets segment, control and general registers (kvmp.h `vcpu_reset`); `rcx` is for loops.
pub(crate) fn reset(v: &VcpuFd, mode: Mode, rip: u64, rcx: u64) -> Result<(), ProbeError> {
    let mut s = v.get_sregs().map_err(|e| sys("KVM_GET_SREGS", e))?;
    let dpl: u8 = match mode {
        Mode::Native => 3,
        Mode::Emulated => 0,
    };
    let seg = |selector: u16, type_: u8, l: u8, db: u8| kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: selector | u16::from(dpl),
        type_,
        present: 1,
        dpl,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    s.cs = seg(0x08, 11, 1, 0);
    let ds = seg(0x10, 3, 0, 1);
    s.ds = ds;
    s.es = ds;
    s.ss = ds;
    s.fs = ds;
    s.gs = ds;
    s.cr3 = PT_GPA;
    s.cr4 = 0x20;
    s.cr0 = 0x8005_0033;
    s.efer = 0x500;
    v.set_sregs(&s).map_err(|e| sys("KVM_SET_SREGS", e))?;
    let regs = kvm_regs {
        rip,
        rflags: 2,
        rsp: 0x8000,
        rbx: DATA_GPA,
        rdi: REPORT_VA,
        rsi: MARK_VA,
        rcx,
        ..Default::default()
    };
    v.set_regs(&regs).map_err(|e| sys("KVM_SET_REGS", e))
}
