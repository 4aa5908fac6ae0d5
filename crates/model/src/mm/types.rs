//! Basic mm vocabulary: addresses, frame numbers, flags and errno values.

use std::fmt;

pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// A host physical frame number.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pfn(pub u64);

impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pfn {:#x}", self.0)
    }
}

/// A host virtual address in the VMM process (`unsigned long hva`).
pub type Hva = u64;

pub fn page_align_down(a: u64) -> u64 {
    a & !(PAGE_SIZE - 1)
}

/// A negative errno as the kernel returns it. Displayed as `-EFAULT`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

pub const EINTR: Errno = Errno(4);
pub const EAGAIN: Errno = Errno(11);
pub const ENOMEM: Errno = Errno(12);
pub const EFAULT: Errno = Errno(14);
pub const EBUSY: Errno = Errno(16);
pub const EEXIST: Errno = Errno(17);
pub const EINVAL: Errno = Errno(22);
pub const ENOENT: Errno = Errno(2);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = match self.0 {
            2 => "ENOENT",
            4 => "EINTR",
            11 => "EAGAIN",
            12 => "ENOMEM",
            14 => "EFAULT",
            16 => "EBUSY",
            17 => "EEXIST",
            22 => "EINVAL",
            _ => return write!(f, "-{}", self.0),
        };
        write!(f, "-{n}")
    }
}

macro_rules! bitflags_lite {
    ($(#[$m:meta])* $name:ident : $t:ty { $($(#[$fm:meta])* $flag:ident = $v:expr,)* }) => {
        $(#[$m])*
        #[derive(Copy, Clone, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub $t);
        #[allow(dead_code)]
        impl $name {
            $($(#[$fm])* pub const $flag: $name = $name($v);)*
            pub const fn empty() -> Self { $name(0) }
            pub const fn contains(self, o: $name) -> bool { self.0 & o.0 == o.0 }
            pub const fn intersects(self, o: $name) -> bool { self.0 & o.0 != 0 }
            pub const fn union(self, o: $name) -> Self { $name(self.0 | o.0) }
            pub const fn without(self, o: $name) -> Self { $name(self.0 & !o.0) }
            pub const fn is_empty(self) -> bool { self.0 == 0 }
        }
        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, o: $name) -> $name { $name(self.0 | o.0) }
        }
        impl std::ops::BitOrAssign for $name {
            fn bitor_assign(&mut self, o: $name) { self.0 |= o.0 }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut first = true;
                $(if $v != 0 && self.contains($name::$flag) {
                    if !first { f.write_str("|")?; }
                    f.write_str(stringify!($flag))?;
                    first = false;
                })*
                if first { f.write_str("0")?; }
                Ok(())
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { fmt::Debug::fmt(self, f) }
        }
    };
}

bitflags_lite! {
    /// `vma->vm_flags` (include/linux/mm.h).
    VmFlags: u32 {
        VM_READ = 0x1,
        VM_WRITE = 0x2,
        VM_EXEC = 0x4,
        VM_SHARED = 0x8,
        VM_MAYREAD = 0x10,
        VM_MAYWRITE = 0x20,
        VM_PFNMAP = 0x400,
        VM_UFFD_MISSING = 0x200,
        VM_IO = 0x4000,
        VM_DONTEXPAND = 0x40000,
        VM_DONTDUMP = 0x4000000,
        VM_MIXEDMAP = 0x10000000,
    }
}

bitflags_lite! {
    /// `enum fault_flag` (include/linux/mm_types.h).
    FaultFlags: u32 {
        FAULT_FLAG_WRITE = 0x1,
        FAULT_FLAG_ALLOW_RETRY = 0x4,
        FAULT_FLAG_RETRY_NOWAIT = 0x8,
        FAULT_FLAG_KILLABLE = 0x10,
        FAULT_FLAG_TRIED = 0x20,
        FAULT_FLAG_USER = 0x40,
        FAULT_FLAG_REMOTE = 0x80,
        FAULT_FLAG_INTERRUPTIBLE = 0x200,
    }
}

bitflags_lite! {
    /// `vm_fault_t` (include/linux/mm_types.h): what a fault handler returns.
    VmFault: u32 {
        VM_FAULT_OOM = 0x1,
        VM_FAULT_SIGBUS = 0x2,
        VM_FAULT_MAJOR = 0x4,
        VM_FAULT_HWPOISON = 0x10,
        VM_FAULT_SIGSEGV = 0x40,
        VM_FAULT_NOPAGE = 0x100,
        VM_FAULT_LOCKED = 0x200,
        VM_FAULT_RETRY = 0x400,
        VM_FAULT_COMPLETED = 0x4000,
    }
}

impl VmFault {
    /// `VM_FAULT_ERROR`.
    pub const ERROR: VmFault = VmFault(0x1 | 0x2 | 0x10 | 0x40);
}

bitflags_lite! {
    /// `FOLL_*` flags of get_user_pages (include/linux/mm_types.h).
    FollFlags: u32 {
        FOLL_WRITE = 0x1,
        FOLL_GET = 0x2,
        FOLL_NOWAIT = 0x20,
        FOLL_HWPOISON = 0x100,
        FOLL_PIN = 0x400,
        FOLL_INTERRUPTIBLE = 0x1000,
    }
}

/// `vm_fault_to_errno(vm_fault, foll_flags)` (mm/internal.h) with `foll_flags == 0`, as
/// `fixup_user_fault` calls it: OOM gives -ENOMEM, everything else -EFAULT (no
/// `FOLL_HWPOISON`, so HWPOISON is -EFAULT too).
pub fn vm_fault_to_errno(ret: VmFault, foll: FollFlags) -> Option<Errno> {
    if ret.contains(VmFault::VM_FAULT_OOM) {
        return Some(ENOMEM);
    }
    if ret.contains(VmFault::VM_FAULT_HWPOISON) && foll.contains(FollFlags::FOLL_HWPOISON) {
        return Some(Errno(133)); // -EHWPOISON
    }
    if ret.intersects(
        VmFault::VM_FAULT_SIGBUS | VmFault::VM_FAULT_SIGSEGV | VmFault::VM_FAULT_HWPOISON,
    ) {
        return Some(EFAULT);
    }
    None
}
