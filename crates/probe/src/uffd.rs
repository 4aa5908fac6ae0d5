//! userfaultfd by hand (the `userfaultfd` crate needs libclang): open, UFFDIO_API,
//! UFFDIO_REGISTER (MISSING), and a handler thread that resolves faults with UFFDIO_COPY.
//!
//! As in uffd.c (realkvm.md §8): the fd is O_NONBLOCK (a poll-then-read handler blocked in
//! `read()` without it), and UFFD_USER_MODE_ONLY is not used because KVM's GUP faults are
//! kernel-mode faults and would never be delivered.

use crate::layout::PAGE;
use crate::outcome::{sys, ProbeError, UffdEvent};
use crate::region::Region;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_val};
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iowr_nr};

const UFFDIO: u32 = 0xAA;
const UFFD_API: u64 = 0xAA;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const UFFD_PAGEFAULT_FLAG_WRITE: u64 = 1;

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Default)]
struct UffdioRange {
    start: u64,
    len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

/// `struct uffdio_copy`.
#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

ioctl_iowr_nr!(UFFDIO_API, UFFDIO, 0x3F, UffdioApi);
ioctl_iowr_nr!(UFFDIO_REGISTER, UFFDIO, 0x00, UffdioRegister);
ioctl_ior_nr!(UFFDIO_WAKE, UFFDIO, 0x02, UffdioRange);
ioctl_iowr_nr!(UFFDIO_COPY, UFFDIO, 0x03, UffdioCopy);
ioctl_io_nr!(USERFAULTFD_IOC_NEW, UFFDIO, 0x00);

/// Opens a userfaultfd: the syscall first, then `/dev/userfaultfd` (root-only here).
fn open() -> Result<OwnedFd, ProbeError> {
    use rustix::mm::UserfaultfdFlags as F;
    // SAFETY: creating the fd is harmless; it only affects ranges we register later, which
    // are our own mappings.
    match unsafe { rustix::mm::userfaultfd(F::CLOEXEC | F::NONBLOCK) } {
        Ok(fd) => Ok(fd),
        Err(e1) => {
            let dev = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/userfaultfd")
                .map_err(|e2| {
                    sys(
                        "userfaultfd",
                        format!("syscall: {e1}; /dev/userfaultfd: {e2}"),
                    )
                })?;
            let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as libc::c_ulong;
            // SAFETY: USERFAULTFD_IOC_NEW takes an int flags argument and returns a new fd.
            let fd = unsafe { ioctl_with_val(&dev, USERFAULTFD_IOC_NEW(), flags) };
            if fd < 0 {
                return Err(sys("USERFAULTFD_IOC_NEW", std::io::Error::last_os_error()));
            }
            // SAFETY: the ioctl returned a fresh fd that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
    }
}

/// A registered range plus its resolving handler thread. Dropping it stops the thread and
/// closes the fd (which unregisters the range).
#[derive(Debug)]
pub(crate) struct Uffd {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the handler needs to know about its range.
struct Target {
    name: String,
    base: usize,
    pages: u64,
    fill: Option<u32>,
    /// Between reading a message and resolving it.
    delay: Duration,
}

impl Uffd {
    /// Registers `[base, base + pages*4096)` in MISSING mode and starts the handler.
    pub(crate) fn register(
        name: &str,
        base: usize,
        pages: u64,
        fill: Option<u32>,
        delay: Duration,
        events: Arc<Mutex<Vec<UffdEvent>>>,
    ) -> Result<Uffd, ProbeError> {
        let fd = open()?;
        let mut api = UffdioApi {
            api: UFFD_API,
            ..Default::default()
        };
        // SAFETY: UFFDIO_API reads and writes a `struct uffdio_api`, which `api` is.
        if unsafe { ioctl_with_mut_ref(&fd, UFFDIO_API(), &mut api) } < 0 {
            return Err(sys("UFFDIO_API", std::io::Error::last_os_error()));
        }
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: base as u64,
                len: pages * PAGE,
            },
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes a `struct uffdio_register`; the range is
        // the caller's own private anon mapping.
        if unsafe { ioctl_with_mut_ref(&fd, UFFDIO_REGISTER(), &mut reg) } < 0 {
            return Err(sys("UFFDIO_REGISTER", std::io::Error::last_os_error()));
        }
        // The UFFDIO_COPY source page is mapped now, before any hole is punched.
        let src = Region::anon(1, false).map_err(|e| sys("mmap uffd source page", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let target = Target {
            name: name.to_string(),
            base,
            pages,
            fill,
            delay,
        };
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("uffd-{name}"))
            .spawn(move || handler(fd, src, target, events, st))
            .map_err(|e| sys("spawn uffd handler", e))?;
        Ok(Uffd {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Uffd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one `struct uffd_msg`; returns (event, flags, address).
fn read_msg(fd: &OwnedFd) -> Option<(u8, u64, u64)> {
    let mut m = [0u8; 32];
    match rustix::io::read(fd, &mut m) {
        Ok(32) => {
            let flags = u64::from_le_bytes(m[8..16].try_into().ok()?);
            let addr = u64::from_le_bytes(m[16..24].try_into().ok()?);
            Some((m[0], flags, addr))
        }
        _ => None,
    }
}

/// Polls every 20 ms so `stop` is noticed; resolves each fault with one UFFDIO_COPY.
fn handler(
    fd: OwnedFd,
    src: Region,
    t: Target,
    events: Arc<Mutex<Vec<UffdEvent>>>,
    stop: Arc<AtomicBool>,
) {
    let tick = Timespec {
        tv_sec: 0,
        tv_nsec: 20_000_000,
    };
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = [PollFd::new(&fd, PollFlags::IN)];
        if !matches!(poll(&mut pfd, Some(&tick)), Ok(n) if n > 0) {
            continue;
        }
        let Some((event, flags, addr)) = read_msg(&fd) else {
            continue;
        };
        if event != UFFD_EVENT_PAGEFAULT {
            continue;
        }
        let page_addr = addr & !(PAGE - 1);
        let page = page_addr.wrapping_sub(t.base as u64) / PAGE;
        if page < t.pages {
            events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(UffdEvent {
                    backing: t.name.clone(),
                    page,
                    write: flags & UFFD_PAGEFAULT_FLAG_WRITE != 0,
                });
        }
        match t.fill {
            Some(v) => src.fill_u32(0..1, v),
            None => {
                let b = 0xA0u8.wrapping_add(page as u8);
                src.fill_u32(0..1, u32::from_ne_bytes([b; 4]));
            }
        }
        if !t.delay.is_zero() {
            // nanosleep: no clock read (see crate::clock).
            std::thread::sleep(t.delay);
        }
        resolve(&fd, page_addr, src.base() as u64);
    }
}

/// UFFDIO_COPY one page; EEXIST means another fault already filled it. On any other
/// failure wake the waiters so the fault is retried (and re-reported) instead of hanging.
fn resolve(fd: &OwnedFd, dst: u64, src: u64) {
    for _ in 0..100 {
        let mut c = UffdioCopy {
            dst,
            src,
            len: PAGE,
            mode: 0,
            copy: 0,
        };
        // SAFETY: UFFDIO_COPY reads and writes a `struct uffdio_copy`; src is our own
        // readable page and dst lies in the range registered on this fd.
        if unsafe { ioctl_with_mut_ref(fd, UFFDIO_COPY(), &mut c) } == 0 {
            return;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EEXIST) => return,
            Some(libc::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
            _ => break,
        }
    }
    let mut r = UffdioRange {
        start: dst,
        len: PAGE,
    };
    // SAFETY: UFFDIO_WAKE reads a `struct uffdio_range` inside the registered range.
    let _ = unsafe { ioctl_with_mut_ref(fd, UFFDIO_WAKE(), &mut r) };
}
