//! Mapping immutable files: with [`super::fallocate`], [`super::arena`],
//! [`super::pread`] and [`super::space`], one of the five places in
//! `strata-log` with `unsafe`.
//!
//! # Safety
//!
//! A memory map is only sound while nobody writes to or shrinks the mapped
//! range. The engine maps only files that are immutable from then on: sealed
//! segments and their index files. Those are never written again; truncation
//! into a sealed segment and compaction write a new file and rename it over the
//! old one, so the old inode, and every `Bytes` slice of its map, stays valid
//! and unchanged until the last slice drops. Removal (retention) unlinks the
//! name only; the inode lives while it is mapped. Nothing outside Strata may
//! modify files in a partition directory while the broker runs (documented in
//! `docs/log-format.md`).
#![allow(unsafe_code)]

use std::io;

use bytes::Bytes;

/// Maps bytes `[0, len)` of `file` read-only and returns them as a `Bytes`
/// that owns the mapping: the map is unmapped when the last slice drops.
pub(super) fn map_read_only(file: &std::fs::File, len: u64) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let file_len = file.metadata()?.len();
    if file_len < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("map of {len} bytes asked of a file of {file_len} bytes"),
        ));
    }
    let len = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
    // SAFETY: see the module's Safety section: the file is immutable from now
    // on, and `len` is within its length (checked just above).
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
    Ok(Bytes::from_owner(map))
}
