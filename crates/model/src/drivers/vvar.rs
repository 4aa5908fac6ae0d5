//! The x86-64 vDSO data mappings `[vvar]` and `[vvar_vclock]`: private, read-only
//! `VM_IO|VM_PFNMAP` special mappings filled by `vmf_insert_pfn` from their fault handlers.
//!
//! Mirrors v6.18 `lib/vdso/datastore.c` `vvar_fault` and `arch/x86/entry/vdso/vma.c`
//! `vvar_vclock_fault`, installed by `_install_special_mapping(..., VM_READ|VM_MAYREAD|VM_IO|
//! VM_DONTDUMP|VM_PFNMAP|VM_SEALED_SYSMAP, ...)`, which adds `VM_DONTEXPAND` (the real
//! `/proc/self/smaps` shows `rd mr pf io de dd`):
//!
//! * `[vvar]`, 4 pages, `vm_pgoff` 0: page 0 is the kernel time page (`vdso_k_time_data`),
//!   page 1 (the time-namespace slot) is `VM_FAULT_SIGBUS` for a task in the root time
//!   namespace, page 2 is the getrandom data page (x86-64 selects `VDSO_GETRANDOM`), page 3
//!   (arch data; x86 has none) and beyond are `VM_FAULT_SIGBUS`.
//! * `[vvar_vclock]`, 2 pages: page 0 is the pvclock page (`pvclock_get_pvti_cpu0_va()`),
//!   inserted when the host is a KVM guest whose vDSO has used kvmclock
//!   (`vclock_was_used(VDSO_CLOCKMODE_PVCLOCK)`), as on this machine (realkvm.md: page 0
//!   reads the host's bytes); page 1, the Hyper-V TSC page, is `VM_FAULT_SIGBUS` (not a
//!   Hyper-V guest).
//!
//! The mapping is private but has no `VM_MAYWRITE`, so `is_cow_mapping()` is false and
//! `vmf_insert_pfn` does not BUG; `vm_page_prot` is read-only, so the PTEs are read-only
//! special PTEs; a write fault is refused by `vma_permits_fault` (`fixup_user_fault`
//! returns -EFAULT). The data pages are kernel RAM: `pfn_valid`, `PageReserved`, refcount
//! 1, owned by `Kernel("vdso time")` / `Kernel("vdso rng")`.
//!
//! Contents: the model knows only what does not change on a running host: `clock_mode` at
//! offset 4 of the time page (1, `VDSO_CLOCKMODE_TSC`, as on the real machine). Everything
//! else (`seq` and the clock bases, the getrandom state, the pvclock record) is kernel data
//! the model does not know; those bytes hold placeholders ([`TIME_PAGE_PATTERN`], `seq` 2,
//! [`RNG_PAGE_PATTERN`], [`PVCLOCK_PAGE_PATTERN`]) and a guest load of them is reported as
//! `KernelData`, never as a predicted value (`Frames::set_known`).
//!
//! Simplifications: no time namespaces (page 1 is always SIGBUS and page 0 always the real
//! time page); `VM_SEALED_SYSMAP` is not modelled (no mseal); the datastore is not
//! per-clock-base structured, only the two words above are meaningful.

use crate::mm::insert::vmf_insert_pfn;
use crate::mm::{
    Errno, FaultResult, Frames, Hva, LocalBoxFuture, Mm, MmapArgs, Owner, Pfn, VmFault,
    VmFaultArgs, VmFlags, VmOps, Vma, ENOMEM,
};
use std::rc::{Rc, Weak};
use world::{Access, Cx};

/// Fill pattern of the time page (ASCII "rvvt" little-endian: `0x74767672`).
pub const TIME_PAGE_PATTERN: u32 = 0x7476_7672;
/// Fill pattern of the getrandom data page.
pub const RNG_PAGE_PATTERN: u32 = 0x6e67_7272;
/// Fill pattern of the pvclock page.
pub const PVCLOCK_PAGE_PATTERN: u32 = 0x6b6c_6370;
/// The bytes of the time page the model knows: `clock_mode`.
const TIME_PAGE_KNOWN: &[(u64, u64)] = &[(4, 8)];
/// `VDSO_CLOCKMODE_TSC`.
pub const VDSO_CLOCKMODE_TSC: u64 = 1;
/// Pages of `[vvar]` (`VDSO_NR_PAGES` with the generic datastore).
pub const VVAR_PAGES: u64 = 4;
/// Pages of `[vvar_vclock]`.
pub const VCLOCK_PAGES: u64 = 2;

/// The vDSO data pages and their special mappings.
pub struct Vvar {
    frames: Rc<Frames>,
    /// The mm this driver's vmas live in (weak: its vmas point back at the driver).
    mm: Weak<Mm>,
    time: Pfn,
    rng: Pfn,
    /// Allocated when `[vvar_vclock]` is mapped (so a `[vvar]`-only world's frames are
    /// numbered as before).
    pvclock: std::cell::Cell<Option<Pfn>>,
}

/// `vvar_vclock_mapping.fault`.
struct VclockOps {
    pvclock: Pfn,
}

impl VmOps for VclockOps {
    fn name(&self) -> &str {
        "vvar_vclock"
    }

    fn fault<'a>(&'a self, cx: &'a Cx, vmf: &'a VmFaultArgs) -> LocalBoxFuture<'a, FaultResult> {
        Box::pin(async move {
            let _f = cx.func("vvar_vclock_fault");
            if vmf.pgoff == 0 {
                // `vmf_insert_pfn_prot(.., pgprot_decrypted(vm_page_prot))`: the same
                // read-only special PTE as vmf_insert_pfn here (no memory encryption).
                cx.emit_str("pgoff 0: pvclock page (kvmclock used by the vDSO)");
                return FaultResult::ret(
                    vmf_insert_pfn(cx, &vmf.vma, vmf.address, self.pvclock).await,
                );
            }
            world::emit!(
                cx,
                "pgoff {}: no Hyper-V TSC page on this host: VM_FAULT_SIGBUS",
                vmf.pgoff
            );
            FaultResult::ret(VmFault::VM_FAULT_SIGBUS)
        })
    }
}

impl Vvar {
    fn mm(&self) -> Rc<Mm> {
        self.mm.upgrade().expect("the mm outlives its drivers")
    }

    /// Allocate the time and getrandom data pages (kernel data: reserved, refcount 1).
    /// Fails with -ENOMEM if RAM is exhausted.
    pub fn new(frames: &Rc<Frames>, mm: &Rc<Mm>) -> Result<Rc<Self>, Errno> {
        let time = frames
            .alloc(0, Owner::Kernel("vdso time".into()), false)
            .ok_or(ENOMEM)?;
        let rng = frames
            .alloc(0, Owner::Kernel("vdso rng".into()), false)
            .ok_or(ENOMEM)?;
        for p in [time, rng] {
            frames.set_reserved(p, true);
        }
        frames.fill(time, TIME_PAGE_PATTERN);
        frames.write(time, 0, 4, 2);
        frames.write(time, 4, 4, VDSO_CLOCKMODE_TSC);
        frames.set_known(time, TIME_PAGE_KNOWN);
        frames.fill(rng, RNG_PAGE_PATTERN);
        frames.set_known(rng, &[]);
        Ok(Rc::new(Vvar {
            frames: frames.clone(),
            mm: Rc::downgrade(mm),
            time,
            rng,
            pvclock: std::cell::Cell::new(None),
        }))
    }

    /// The kernel time page.
    pub fn time_pfn(&self) -> Pfn {
        self.time
    }

    /// The getrandom data page.
    pub fn rng_pfn(&self) -> Pfn {
        self.rng
    }

    /// The pvclock page (`[vvar_vclock]` page 0), once `[vvar_vclock]` is mapped.
    pub fn pvclock_pfn(&self) -> Option<Pfn> {
        self.pvclock.get()
    }

    /// The flags `_install_special_mapping` gives both vmas.
    pub fn vm_flags() -> VmFlags {
        VmFlags::VM_READ
            | VmFlags::VM_MAYREAD
            | VmFlags::VM_IO
            | VmFlags::VM_DONTDUMP
            | VmFlags::VM_PFNMAP
            | VmFlags::VM_DONTEXPAND
    }

    /// Install `[vvar]` at `start` (at exec; setup, no PTEs).
    pub fn mmap(self: &Rc<Self>, start: Hva) -> Result<Rc<Vma>, Errno> {
        self.mm().mmap(MmapArgs {
            name: "[vvar]".into(),
            start,
            pages: VVAR_PAGES,
            flags: Self::vm_flags(),
            pgoff: 0,
            ops: Some(self.clone() as Rc<dyn VmOps>),
            file: None,
        })
    }

    /// Install `[vvar_vclock]` at `start` (2 pages: the pvclock page, then a SIGBUS hole).
    pub fn mmap_vclock(self: &Rc<Self>, start: Hva) -> Result<Rc<Vma>, Errno> {
        let pvclock = match self.pvclock.get() {
            Some(p) => p,
            None => {
                let p = self
                    .frames
                    .alloc(0, Owner::Kernel("pvclock".into()), false)
                    .ok_or(ENOMEM)?;
                self.frames.set_reserved(p, true);
                self.frames.fill(p, PVCLOCK_PAGE_PATTERN);
                self.frames.set_known(p, &[]);
                self.pvclock.set(Some(p));
                p
            }
        };
        self.mm().mmap(MmapArgs {
            name: "[vvar_vclock]".into(),
            start,
            pages: VCLOCK_PAGES,
            flags: Self::vm_flags(),
            pgoff: 0,
            ops: Some(Rc::new(VclockOps { pvclock }) as Rc<dyn VmOps>),
            file: None,
        })
    }

    /// The `seq` word of the time page.
    pub fn seq(&self) -> u64 {
        self.frames.read(self.time, 0, 4).unwrap_or(0)
    }

    /// A timekeeping update (`vdso_update_begin/end` around `update_vsyscall`), as one
    /// atomic step: `seq += 2` and a new `cycle_last` at offset 8.
    pub async fn tick(&self, cx: &Cx) {
        let _f = cx.func("update_vsyscall");
        cx.access(
            self.frames.obj(self.time),
            Access::Write,
            "vdso data update",
        )
        .await;
        let seq = self.seq() + 2;
        self.frames.write(self.time, 0, 4, seq);
        self.frames.write(self.time, 8, 8, seq * 1000);
        world::emit!(cx, "time page seq = {seq}");
    }

    /// Whether the two words a guest write would clobber still hold kernel values:
    /// `seq` even and `clock_mode` = TSC. An oracle for the RO-bypass (B2).
    pub fn time_page_intact(&self) -> bool {
        self.seq() & 1 == 0 && self.frames.read(self.time, 4, 4) == Some(VDSO_CLOCKMODE_TSC)
    }

    async fn fault_impl(&self, cx: &Cx, vmf: &VmFaultArgs) -> FaultResult {
        let _f = cx.func("vvar_fault");
        let pfn = match vmf.pgoff {
            0 => self.time,
            2 => self.rng,
            1 => {
                cx.emit_str("pgoff 1: not in a time namespace: VM_FAULT_SIGBUS");
                return FaultResult::ret(VmFault::VM_FAULT_SIGBUS);
            }
            n => {
                world::emit!(cx, "pgoff {n}: no such vDSO data page: VM_FAULT_SIGBUS");
                return FaultResult::ret(VmFault::VM_FAULT_SIGBUS);
            }
        };
        FaultResult::ret(vmf_insert_pfn(cx, &vmf.vma, vmf.address, pfn).await)
    }
}

impl VmOps for Vvar {
    fn name(&self) -> &str {
        "vvar"
    }

    fn fault<'a>(&'a self, cx: &'a Cx, vmf: &'a VmFaultArgs) -> LocalBoxFuture<'a, FaultResult> {
        Box::pin(self.fault_impl(cx, vmf))
    }
}
