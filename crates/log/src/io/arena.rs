//! Staging memory for [`super::direct`] files, and the vectored write that
//! hands it to the device where it lies: with [`super::mmap`],
//! [`super::fallocate`], [`super::pread`] and [`super::space`], one of the
//! five places in `strata-log` with `unsafe`.
//!
//! An [`Arena`] is one allocation that mirrors a segment file from an
//! aligned position on: the appends are filled into it one after another,
//! each part frozen into a `Bytes` as it is appended, so that the bytes lie
//! in memory as they will lie in the file, at aligned addresses. A write-out
//! then passes that memory to `pwritev` as it is. Two `Bytes` of one arena
//! that follow each other in memory are one slice of it ([`runs`]): that is
//! the one step the borrow checker cannot see, and why this module exists.
#![allow(unsafe_code)]

use std::io;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// One allocation handed out a part at a time (see the module's overview).
pub(crate) struct Arena {
    /// Tells this arena's pieces from others' (unique within a file).
    pub number: u64,
    /// The allocation's addresses. A buffer within them is part of it: the
    /// allocation is alive (`_keep` holds it), so no other can be there.
    range: Range<usize>,
    _keep: Bytes,
}

impl Arena {
    /// An arena of at least `len` bytes, and all of it as an empty buffer
    /// whose first byte is aligned to `align` (a power of two).
    pub fn new(number: u64, len: usize, align: usize) -> (Arena, BytesMut) {
        let mut whole = BytesMut::with_capacity(len + align);
        let range = whole.as_ptr() as usize..whole.as_ptr() as usize + whole.capacity();
        let skip = whole.as_ptr().align_offset(align);
        assert!(skip < align, "a byte pointer can always be aligned");
        // Both halves share the allocation; the empty first one keeps it.
        let spare = whole.split_off(skip);
        (Arena { number, range, _keep: whole.freeze() }, spare)
    }

    /// Whether all of `buf`'s memory, its spare capacity included, lies in
    /// this arena.
    pub fn holds_buffer(&self, buf: &BytesMut) -> bool {
        let first = buf.as_ptr() as usize;
        buf.capacity() > 0 && self.range.contains(&first) && self.range.contains(&(first + buf.capacity() - 1))
    }

    /// Whether all of `bytes` lies in this arena (an empty buffer never does).
    pub fn holds(&self, bytes: &[u8]) -> bool {
        let first = bytes.as_ptr() as usize;
        !bytes.is_empty() && self.range.contains(&first) && self.range.contains(&(first + bytes.len() - 1))
    }
}

/// The pieces, in order, merged where two of one arena (same nonzero
/// number, from [`Arena::holds`] while it was alive) follow each other in
/// memory; `None` if any piece is of no arena.
pub(crate) fn runs<'a>(pieces: impl IntoIterator<Item = (&'a Bytes, u64)>) -> Option<Vec<&'a [u8]>> {
    let mut runs: Vec<&'a [u8]> = Vec::new();
    let mut last_arena = 0;
    for (bytes, arena) in pieces {
        if arena == 0 {
            return None;
        }
        match runs.last_mut() {
            Some(run) if arena == last_arena && run.as_ptr_range().end == bytes.as_ptr() => {
                // SAFETY: `run` and `bytes` lie in one allocation (the same
                // arena's: a piece of an arena keeps it alive, so addresses
                // in its range were not reused), `bytes` starting where `run`
                // ends; every byte of both is initialized, and immutable
                // while borrowed: frozen `Bytes`, borrowed for `'a`, and the
                // arena hands each address out once.
                *run = unsafe { std::slice::from_raw_parts(run.as_ptr(), run.len() + bytes.len()) };
            }
            _ => runs.push(&bytes[..]),
        }
        last_arena = arena;
    }
    Some(runs)
}

/// Writes all of `bufs`, one after another, at `position`, with `pwritev`
/// (again for what a short write left). `check` sees each call's count and
/// may refuse it (a direct write must write whole blocks).
pub(crate) fn write_all_vectored_at(
    file: &std::fs::File,
    bufs: &[&[u8]],
    position: u64,
    check: impl Fn(usize) -> io::Result<()>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut iovecs: Vec<libc::iovec> =
        bufs.iter().map(|b| libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() }).collect();
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let (mut done, mut first) = (0usize, 0usize);
    while done < total {
        let offset = libc::off_t::try_from(position + done as u64)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "write beyond the largest file offset"))?;
        let count = libc::c_int::try_from(iovecs.len() - first)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many buffers for one write"))?;
        // SAFETY: the descriptor is valid while `file` is borrowed; each
        // iovec from `first` on points into one of `bufs`, borrowed for the
        // call, within its length; the kernel only reads them.
        let n = unsafe { libc::pwritev(file.as_raw_fd(), iovecs[first..].as_ptr(), count, offset) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let n = n as usize;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "vectored write wrote nothing"));
        }
        check(n)?;
        done += n;
        // Step over what was written: whole iovecs, then part of one.
        let mut left = n;
        while left > 0 {
            let v = &mut iovecs[first];
            if v.iov_len <= left {
                left -= v.iov_len;
                first += 1;
            } else {
                v.iov_base = (v.iov_base as *mut u8).wrapping_add(left) as *mut libc::c_void;
                v.iov_len -= left;
                left = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arenas_pieces_that_follow_each_other_are_one_run_and_others_are_not() {
        let (arena, mut spare) = Arena::new(7, 1 << 16, 4096);
        assert_eq!(spare.as_ptr() as usize % 4096, 0, "aligned");
        assert!(spare.capacity() >= 1 << 16);
        spare.extend_from_slice(&[1; 5000]);
        let a = spare.split().freeze();
        spare.extend_from_slice(&[2; 3000]);
        let b = spare.split().freeze();
        assert!(arena.holds(&a) && arena.holds(&b));
        let foreign = Bytes::from(vec![3u8; 100]);
        assert!(!arena.holds(&foreign) && !arena.holds(&[]));
        let merged = runs([(&a, 7), (&b, 7)]).expect("all in arenas");
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].as_ptr(), a.as_ptr());
        assert_eq!(merged[0].len(), 8000);
        assert!(merged[0][..5000].iter().all(|&x| x == 1) && merged[0][5000..].iter().all(|&x| x == 2));
        // Not in order in memory, or numbered apart: separate runs.
        assert_eq!(runs([(&b, 7), (&a, 7)]).expect("all in arenas").len(), 2);
        assert_eq!(runs([(&a, 7), (&b, 8)]).expect("all in arenas").len(), 2);
        assert!(runs([(&a, 7), (&foreign, 0)]).is_none());
    }

    #[test]
    fn a_vectored_write_writes_every_buffer_in_order() {
        let dir = super::super::TempDir::new("vectored");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .expect("create");
        let parts: Vec<Vec<u8>> = (1..=5u8).map(|k| vec![k; 1000 * k as usize]).collect();
        let bufs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        write_all_vectored_at(&file, &bufs, 10, |_| Ok(())).expect("write");
        let on_disk = std::fs::read(dir.path().join("f")).expect("read");
        assert_eq!(&on_disk[..10], &[0; 10]);
        assert_eq!(on_disk[10..], parts.concat()[..]);
        let err = write_all_vectored_at(&file, &bufs, 0, |n| Err(io::Error::other(format!("refused {n}"))))
            .expect_err("refused");
        assert!(err.to_string().contains("refused"));
    }
}
