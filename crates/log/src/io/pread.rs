//! Reads into memory that nothing has written yet: with [`super::mmap`],
//! [`super::fallocate`], [`super::arena`] and [`super::space`], one of the
//! five places in `strata-log` with `unsafe`.
//!
//! A read of the active segment (a fetch of bytes no longer in the tail
//! cache) used to zero a fresh buffer and then have `pread` overwrite it.
//! For a fetch of a megabyte the zeroing was more than half of the leader's
//! instructions for the request (docs/benchmarks.md, session 28). Safe Rust
//! offers no read into uninitialised memory yet (`Read::read_buf` is
//! unstable), so the one system call is made here by hand.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

use bytes::BytesMut;

/// Appends exactly `len` bytes of `file`, from `position` on, to `buf`,
/// read straight into its spare capacity. Fails with `UnexpectedEof` if
/// the file ends first; `buf` may then hold part of the bytes.
pub(crate) fn read_exact_appending(
    file: &std::fs::File,
    buf: &mut BytesMut,
    len: usize,
    position: u64,
) -> io::Result<()> {
    buf.reserve(len);
    let target = buf.len() + len;
    let mut at = position;
    while buf.len() < target {
        let want = target - buf.len();
        let offset = libc::off_t::try_from(at).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("read at {at}: past the largest file offset"))
        })?;
        let spare = buf.spare_capacity_mut();
        debug_assert!(spare.len() >= want, "reserved above, and the buffer grew only by what was read");
        // SAFETY: `spare` is valid for writes of `spare.len() >= want`
        // bytes; `pread` writes at most `want` bytes there and reads none.
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), want, offset) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("read at {at}: the file ends there")));
        }
        let n = n as usize;
        assert!(n <= want, "pread returned more than it was asked for");
        // SAFETY: the kernel initialised the first `n` bytes of the spare
        // capacity, and `n <= want <= spare.len()`.
        unsafe { buf.set_len(buf.len() + n) };
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::TempDir;

    #[test]
    fn reads_append_the_asked_bytes_and_stop_at_the_end_of_the_file() {
        let dir = TempDir::new("pread");
        let path = dir.path().join("f");
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        let mut buf = BytesMut::from(&b"kept"[..]);
        read_exact_appending(&file, &mut buf, 70_000, 12_345).expect("read");
        assert_eq!(&buf[..4], b"kept", "what the buffer held stays");
        assert_eq!(&buf[4..], &content[12_345..82_345]);
        let mut empty = BytesMut::new();
        read_exact_appending(&file, &mut empty, 0, 100_000).expect("an empty read at the end");
        assert!(empty.is_empty());
        let err = read_exact_appending(&file, &mut BytesMut::new(), 10, 99_995).expect_err("past the end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = read_exact_appending(&file, &mut BytesMut::new(), 1, u64::MAX).expect_err("no such offset");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
