//! Fault-safe host access to backing memory (kvmp.h `safe_read`).
//!
//! A plain load from a hole, a PROT_NONE page or a vvar page the host cannot fault would kill
//! the process with SIGSEGV/SIGBUS. Passing the address to `write()`/`read()` on a pipe makes
//! the kernel do the copy instead, which fails with EFAULT (realkvm.md note (a)).

use rustix::pipe::{pipe_with, PipeFlags};
use std::ffi::c_void;
use std::io;

/// Reads `buf.len()` bytes at address `addr`; EFAULT if the memory is unreadable.
pub(crate) fn read(addr: usize, buf: &mut [u8]) -> io::Result<()> {
    let (r, w) = pipe_with(PipeFlags::CLOEXEC)?;
    // SAFETY: write() only reads `buf.len()` bytes at `addr` inside the kernel; an unmapped or
    // unreadable address yields EFAULT, and no Rust reference to that memory is created.
    let n = unsafe {
        libc::write(
            rustix::fd::AsRawFd::as_raw_fd(&w),
            addr as *const c_void,
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != buf.len() {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    let got = rustix::io::read(&r, &mut *buf)?;
    if got != buf.len() {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(())
}

/// Writes `data` at address `addr`; EFAULT if the memory is not writable.
pub(crate) fn write(addr: usize, data: &[u8]) -> io::Result<()> {
    let (r, w) = pipe_with(PipeFlags::CLOEXEC)?;
    if rustix::io::write(&w, data)? != data.len() {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    // SAFETY: read() stores at most `data.len()` bytes at `addr` inside the kernel; an
    // unmapped or read-only address yields EFAULT. Callers pass only addresses inside the
    // probe's own mappings, which no Rust reference points into.
    let n = unsafe {
        libc::read(
            rustix::fd::AsRawFd::as_raw_fd(&r),
            addr as *mut c_void,
            data.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != data.len() {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(())
}

/// Reads a little-endian u32 at `addr`.
pub(crate) fn read_u32(addr: usize) -> io::Result<u32> {
    let mut b = [0u8; 4];
    read(addr, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::Region;

    #[test]
    fn unreadable_pages_give_efault_not_a_crash() {
        let mut r = Region::anon(2, false).unwrap();
        r.fill_u32(0..2, 0x1111_1111);
        assert_eq!(read_u32(r.base()).unwrap(), 0x1111_1111);
        write(r.base() + 4, &0xC0C0_C0C0u32.to_le_bytes()).unwrap();
        assert_eq!(read_u32(r.base() + 4).unwrap(), 0xC0C0_C0C0);
        r.protect(1..2, false, false).unwrap();
        let e = read_u32(r.base() + 4096).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EFAULT));
        r.protect(0..1, true, false).unwrap();
        let e = write(r.base(), &[1]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EFAULT));
        r.unmap(0..1).unwrap();
        assert!(!r.all_owned(0..1));
    }
}
