//! The I/O seam: every byte the engine reads or writes goes through [`Dir`]
//! and [`File`], so tests can run the engine on a simulated disk that, at a
//! crash, keeps only what was synced.
//!
//! Two implementations: [`fs`] (real files, `pread`/`pwrite`/`fdatasync`, and
//! `mmap` for immutable files; segment data files optionally with `O_DIRECT`,
//! see [`direct`]) and [`sim`] (in memory, crashable). A test
//! mode of [`fs`], [`journaled`], also records what was synced, so that a
//! real process's directory can be made to lose its unsynced writes
//! ([`journaled::lose_unsynced`]) after the process is killed.
//!
//! **Architecture Invariant:** the engine never calls `std::fs` directly; the
//! seam is narrow (read_at, write_at, set_len, allocate, sync_data, sync_dir, map) so a
//! simulated disk can model exactly what a crash keeps.

mod arena;
pub mod direct;
mod fallocate;
pub mod fs;
pub mod journaled;
mod mmap;
mod pread;
pub mod sim;
mod space;

use std::io;
use std::sync::Arc;

pub use space::{Space, space};

use bytes::{Bytes, BytesMut};

/// One open file. Positions are absolute; there is no cursor.
#[allow(clippy::len_without_is_empty)]
pub trait File: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `position`.
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()>;
    /// Reads exactly `len` bytes at `position` into a new buffer. A file on
    /// a real disk reads straight into fresh memory; this default zeroes the
    /// buffer first, which for a large read costs more than the read.
    fn read_bytes_at(&self, position: u64, len: usize) -> io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(len);
        self.read_exact_at(&mut buf, position)?;
        Ok(buf.freeze())
    }
    /// Writes all of `buf` at `position`, growing the file if needed.
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()>;
    /// Writes `pieces` one after another from `position` on (an append of
    /// several batches: one system call where the file can).
    fn write_pieces_at(&self, pieces: &[Bytes], position: u64) -> io::Result<()> {
        let mut at = position;
        for piece in pieces {
            self.write_all_at(piece, at)?;
            at += piece.len() as u64;
        }
        Ok(())
    }
    /// Memory for an append of `len` bytes at `position` (the file's end),
    /// laid out so that the file can write it out without copying it again
    /// (see [`direct`]), or `None` where a file has no such layout. The
    /// caller fills it, freezes the parts it appends, hands them to
    /// [`File::write_pieces_at`] and gives what is left back with
    /// [`File::keep_staging`]. Filling past `len` is allowed but loses the
    /// layout: the file then copies as for any other piece.
    fn staging(&self, position: u64, len: usize) -> Option<BytesMut> {
        let _ = (position, len);
        None
    }
    /// Gives back the unused rest of a [`File::staging`] buffer, whose first
    /// byte is for `position`, for the next append to continue in.
    fn keep_staging(&self, rest: BytesMut, position: u64) {
        let _ = (rest, position);
    }
    /// Lets go of memory kept for the next appends ([`File::staging`]): the
    /// file went idle or was sealed.
    fn release_staging(&self) {}
    /// Hands what this handle keeps in memory to the file (see [`direct`]),
    /// without syncing it: from then on only a crash of the machine, not of
    /// the process, can lose it. Nothing to do for a file that writes at once.
    fn write_out(&self) -> io::Result<()> {
        Ok(())
    }
    /// Does the work [`File::allocate`] left for later, off the path that
    /// acknowledges writes: the flusher calls it after a group commit has
    /// released its waiters. Returns whether it wrote anything: the file
    /// then has new blocks and a new length that the next `sync_data` makes
    /// durable, with the next group commit's data. Nothing to do for a file
    /// that allocates at once.
    fn write_ahead(&self) -> io::Result<bool> {
        Ok(false)
    }
    /// How long the file may be after a write that ends at `end`: `end`,
    /// or more where writes are padded to a block (see [`direct`]).
    fn extent_after_write(&self, end: u64) -> u64 {
        end
    }
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Grows or shrinks the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Grows the file to `len` bytes (zeroes past the old end) with the
    /// file system's blocks for them allocated now, so that writing there
    /// later overwrites instead of allocating (`fallocate`). Does nothing if
    /// the file is already that long. Made durable by `sync_data`, like a
    /// write. A file may defer it to [`File::write_ahead`] (the direct file
    /// writes real zeroes then, see [`direct`]), so `len` need not show it
    /// at once.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Makes the data and length durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Returns bytes `[0, len)` of a file that will not change any more, as a
    /// `Bytes` that keeps its backing alive: a memory map on a real disk.
    ///
    /// To ensure correctness: the caller must never write to, or shrink, a
    /// file after mapping it; files are replaced by rename instead.
    fn map(&self, len: u64) -> io::Result<Bytes>;
}

/// One directory: the partition directory holding segments and metadata.
pub trait Dir: Send + Sync {
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Arc<dyn File>>;
    /// Creates a new, empty file; fails if it exists.
    fn create(&self, name: &str) -> io::Result<Arc<dyn File>>;
    /// [`Dir::create`] for a segment data file: written only by appends at
    /// its end and by cuts, read back by position, memory-mapped once
    /// sealed. A real directory may open it for direct I/O (see [`direct`]).
    fn create_segment(&self, name: &str) -> io::Result<Arc<dyn File>> {
        self.create(name)
    }
    /// [`Dir::open`] for a segment data file (see [`Dir::create_segment`]).
    fn open_segment(&self, name: &str) -> io::Result<Arc<dyn File>> {
        self.open(name)
    }
    /// Removes a file (open handles and maps stay valid).
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Names of the files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Makes creations, removals and renames durable (fsync of the directory).
    fn sync_dir(&self) -> io::Result<()>;
}

/// A directory under the system temp dir, removed on drop: for the unit
/// tests of the modules here that need a real file system.
#[cfg(test)]
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

#[cfg(test)]
impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("strata-io-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }
}

#[cfg(test)]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
