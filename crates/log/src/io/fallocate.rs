//! Reserving a file's blocks before they are written: `fallocate(2)`. With
//! [`super::mmap`], [`super::arena`], [`super::pread`] and [`super::space`], one of the five places in
//! `strata-log` with `unsafe`: a
//! system call on a descriptor borrowed for its duration, passing no
//! pointers, so nothing in memory is shared with the kernel.
#![allow(unsafe_code)]

use std::io;

/// Grows `file` from `from` (its length) to `to` bytes of zeroes, with the
/// file system's blocks for them allocated now.
#[cfg(target_os = "linux")]
pub(crate) fn allocate(file: &std::fs::File, from: u64, to: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "allocation beyond the largest file offset");
    let offset = libc::off_t::try_from(from).map_err(|_| too_large())?;
    let len = libc::off_t::try_from(to.saturating_sub(from)).map_err(|_| too_large())?;
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the descriptor is valid while `file` is borrowed; mode 0 with
    // an offset and a length is a plain request that reads no memory of ours.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Elsewhere: not supported (the caller falls back to growing the file by
/// writing to it).
#[cfg(not(target_os = "linux"))]
pub(crate) fn allocate(_file: &std::fs::File, _from: u64, _to: u64) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "fallocate is Linux only"))
}
