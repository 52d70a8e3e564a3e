//! Segment data files written with `O_DIRECT`: appends go from a buffer of
//! ours to the device, not through the page cache.
//!
//! Why: on the virtual machines Strata is measured on, the kernel's buffered
//! write path (allocate a page-cache page, copy into it, write it back at the
//! sync) is CPU-bound near 300 MB/s, and it is most of the broker's kernel
//! time; the device itself takes 0.6–1.7 GB/s of direct writes of 256 KiB–1
//! MiB with an `fdatasync` after each (docs/benchmarks.md, session 13).
//!
//! `O_DIRECT` wants the file position, the length and the buffer's address
//! aligned to the device's block. Appends are not: a batch ends anywhere. So
//! a write starts at the block holding its first byte, and carries again that
//! block's bytes before the write (kept from the previous write, or read back
//! from the file), then the new bytes, then zeroes up to the next block
//! boundary. Where the appends were filled into the file's staging memory
//! (an [`super::arena::Arena`], which mirrors the file from an aligned
//! position), those bytes already lie in memory that way, and are written
//! from there; only the last, partial block is copied, to pad it. The
//! zeroes land where the next append will write; to the
//! segment's recovery scan they are the same as preallocated space, which it
//! already tells from data (see `segment::scan`). [`File::extent_after_write`]
//! tells the segment how far the file may have grown, so that sealing cuts
//! the padding off.
//!
//! Space ahead of the data ([`File::allocate`], the segment's headroom) is
//! written with zeroes after a group commit has answered its waiters
//! ([`File::write_ahead`], on the flusher thread), not reserved with
//! `fallocate`. `fallocate` leaves its blocks *unwritten* extents: every
//! later write into them changes the file's extent map, and every
//! `fdatasync` then writes that metadata too, one synchronous device write
//! after the data. Blocks already written with zeroes are overwritten in
//! place, and the sync writes only the data: on the machine of session 14,
//! fio's 64 KiB direct writes with `fdatasync` took 63–89 µs per sync into a
//! zero-filled file against 237 µs into an `fallocate`d one
//! (docs/benchmarks.md). PostgreSQL fills its WAL files with zeroes for the
//! same reason.
//!
//! Reads of bytes not written out yet come from memory. Other reads go
//! through the page cache, by a second, buffered descriptor of the same file,
//! so that a consumer catching up finds warm data there; sealed segments are
//! memory-mapped as usual. Linux keeps buffered reads coherent with direct
//! writes: a direct write invalidates the cached pages of its range before
//! and after it, and that only fails for pages that cannot be dropped (dirty
//! ones, written through the page cache), which these files never have. The
//! block an append must carry again, when it is not in memory, is read back
//! with a direct read.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use bytes::{Buf, Bytes, BytesMut};

use super::File;
use super::arena::{self, Arena};

/// The alignment used for positions, lengths and buffers: 4 KiB, which every
/// block device's logical block size divides.
pub const ALIGN: u64 = 4096;

/// A write buffer this large or larger is freed after use instead of kept
/// for the thread's next write.
const KEEP_BUFFER_BYTES_MAX: usize = 16 << 20;

/// Most bytes appended and not yet written out before an append writes them
/// itself (normally the flusher's sync writes them long before; under the
/// interval policy the log has each append written out at once).
const PENDING_BYTES_MAX: u64 = 8 << 20;

/// Most buffers one vectored write-out takes (Linux's `IOV_MAX` is 1024);
/// more, and the bytes are copied into one instead.
const IOVECS_MAX: usize = 1024;

/// Most zeroes one [`File::write_ahead`] writes, from one shared buffer of
/// this size: the headroom is filled a little after each group commit, as
/// the data moves into it. A sync after zeroes were written is slower (the
/// file system records the new blocks, and the device takes them in): in
/// 2 MiB steps one sync in 25 took over 2 ms at 50k records/s, where 256 KiB
/// steps spread that cost (docs/benchmarks.md, session 14). Larger steps
/// with a sync of their own after each did worse (session 18).
const ZERO_CHUNK_BYTES: usize = 256 << 10;

fn align_down(position: u64) -> u64 {
    position & !(ALIGN - 1)
}

fn align_up(position: u64) -> u64 {
    position.div_ceil(ALIGN) * ALIGN
}

/// Memory aligned to [`ALIGN`], as a `Vec` a little larger than needed and
/// the aligned part of it.
#[derive(Default)]
struct AlignedBuf {
    raw: Vec<u8>,
}

impl AlignedBuf {
    /// An aligned slice of `len` bytes (contents unspecified).
    fn get(&mut self, len: usize) -> &mut [u8] {
        let align = ALIGN as usize;
        if self.raw.len() < len + align {
            self.raw = vec![0; (len + align).next_power_of_two()];
        }
        let skip = self.raw.as_ptr().align_offset(align);
        assert!(skip < align, "a byte pointer can always be aligned");
        &mut self.raw[skip..skip + len]
    }
}

/// [`ZERO_CHUNK_BYTES`] aligned zeroes, allocated once and never written.
fn zero_chunk() -> &'static [u8] {
    static ZEROES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let raw = ZEROES.get_or_init(|| vec![0; ZERO_CHUNK_BYTES + ALIGN as usize]);
    let skip = raw.as_ptr().align_offset(ALIGN as usize);
    &raw[skip..skip + ZERO_CHUNK_BYTES]
}

thread_local! {
    /// Each thread's write buffer, kept between writes so its pages are not
    /// faulted in again for every append.
    static WRITE_BUF: RefCell<AlignedBuf> = RefCell::default();
}

/// What a [`DirectFile`] holds in memory: the file's bytes from an aligned
/// position to the end of the last append. Those past `written` are not in
/// the file yet; the block before `written` is kept so the next write can
/// carry it again.
///
/// The appended bytes are kept as the appends' own buffers, not copied. Most
/// of them are the file's own staging memory ([`Arena`]), laid out as
/// `O_DIRECT` wants it, and are written out from where they lie; others
/// (a follower's batches, as they came from the network) are copied once at
/// the write-out, into an aligned buffer. (Those buffers are the ones the
/// log's tail cache keeps too, so holding them here costs no memory of its
/// own.)
struct Pending {
    /// Aligned position of the first byte held.
    start: u64,
    /// The bytes from `start` on, in file order: the block the next write
    /// carries again (for a new append position, read back from the file),
    /// then the appends.
    pieces: VecDeque<Piece>,
    /// Bytes in `pieces`.
    len: u64,
    /// The file holds the bytes up to here (`start <= written <= end`).
    written: u64,
    /// Whether the bytes are known: false for a new handle, and after a cut
    /// below `start`, until an append reads the block back from the file.
    known: bool,
    /// Where [`File::staging`] hands out memory from.
    arena: Option<Arena>,
    /// The part of the arena not handed out yet, and the file position of
    /// its first byte (`None` while an append holds it).
    spare: Option<(BytesMut, u64)>,
    /// The number the next arena gets.
    next_arena: u64,
}

/// Some bytes held, and the [`Arena`] they lie in, if one of this file's.
struct Piece {
    bytes: Bytes,
    /// The arena's number, or 0. Pieces of one arena that follow each other
    /// in memory are one run of it: they were handed out one after another.
    arena: u64,
}

/// Less room than this left in an arena after an append, and it is let go
/// rather than kept for the next append.
const SPARE_BYTES_MIN: usize = 16 << 10;

/// The least an arena holds. Small, so that the arenas a partition's tail
/// cache keeps alive are not much more than the cache itself (a piece keeps
/// its whole arena); an append larger than this gets an arena of its own
/// size, and a new arena costs only the copy of one partial block.
const ARENA_BYTES: usize = 256 << 10;

impl Pending {
    fn unknown() -> Pending {
        Pending {
            start: 0,
            pieces: VecDeque::new(),
            len: 0,
            written: 0,
            known: false,
            arena: None,
            spare: None,
            next_arena: 1,
        }
    }

    fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Adds bytes at the end, noting the arena they lie in, if any.
    fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let arena = self.arena.as_ref().filter(|arena| arena.holds(&bytes)).map_or(0, |arena| arena.number);
        self.len += bytes.len() as u64;
        self.pieces.push_back(Piece { bytes, arena });
    }

    /// The pieces holding the bytes from `from` on (`start <= from`), in
    /// order, each with how many of its first bytes lie before `from`.
    fn pieces_from(&self, from: u64) -> impl Iterator<Item = (&Bytes, usize)> {
        let mut skip = (from - self.start) as usize;
        self.pieces.iter().filter_map(move |piece| {
            if skip >= piece.bytes.len() {
                skip -= piece.bytes.len();
                return None;
            }
            let before = skip;
            skip = 0;
            Some((&piece.bytes, before))
        })
    }

    /// The held bytes from `from` on (`start <= from`), as slices in order.
    fn slices_from(&self, from: u64) -> impl Iterator<Item = &[u8]> {
        self.pieces_from(from).map(|(bytes, skip)| &bytes[skip..])
    }

    /// Copies the held bytes from `from` on into `out`, which they must fill.
    fn copy_to(&self, from: u64, out: &mut [u8]) {
        let mut done = 0;
        for slice in self.slices_from(from) {
            let n = slice.len().min(out.len() - done);
            out[done..done + n].copy_from_slice(&slice[..n]);
            done += n;
            if done == out.len() {
                break;
            }
        }
        assert_eq!(done, out.len(), "the bytes asked for are held");
    }

    /// The held bytes `[from, end)` (`start <= from`, `end <= self.end()`),
    /// as slices of the pieces: what a read copies after letting go of the
    /// lock.
    fn pieces_between(&self, from: u64, end: u64) -> Vec<Bytes> {
        let mut left = (end - from) as usize;
        let mut out = Vec::new();
        for (bytes, skip) in self.pieces_from(from) {
            if left == 0 {
                break;
            }
            let take = (bytes.len() - skip).min(left);
            out.push(bytes.slice(skip..skip + take));
            left -= take;
        }
        assert_eq!(left, 0, "the bytes asked for are held");
        out
    }

    /// Where a read of `[position, end)` meets the held bytes: `None` when
    /// the file has all of it, else the position from which they hold the
    /// rest. Fails for a read past the end of what is held.
    fn held_from(&self, position: u64, end: u64) -> io::Result<Option<u64>> {
        if !self.known || end <= self.written {
            return Ok(None);
        }
        if end > self.end() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"));
        }
        Ok(Some(position.max(self.start)))
    }

    /// Forgets the held bytes from `len` on (`start <= len`).
    fn truncate(&mut self, len: u64) {
        let mut keep = len - self.start;
        let mut n = 0;
        for piece in self.pieces.iter_mut() {
            if keep == 0 {
                break;
            }
            let take = keep.min(piece.bytes.len() as u64);
            piece.bytes.truncate(take as usize);
            keep -= take;
            n += 1;
        }
        self.pieces.truncate(n);
        self.len = len - self.start;
    }

    /// Lets go of the held bytes before aligned `position` (`start <=
    /// position <= end`): they are in the file.
    fn drop_before(&mut self, position: u64) {
        let mut skip = position - self.start;
        while skip > 0 {
            let front = self.pieces.front_mut().expect("the bytes before `end` are held");
            if front.bytes.len() as u64 <= skip {
                skip -= front.bytes.len() as u64;
                self.pieces.pop_front();
            } else {
                front.bytes.advance(skip as usize);
                skip = 0;
            }
        }
        self.len -= position - self.start;
        self.start = position;
    }

    /// Memory for `len` bytes appended at the end: the rest of the arena if
    /// it continues there and has room, else a new arena, into which the
    /// bytes from the block holding the end are copied first (so the arena
    /// mirrors the file from an aligned position) and held from there
    /// instead of the old buffers.
    fn staging(&mut self, len: usize) -> BytesMut {
        let end = self.end();
        if let Some((spare, at)) = self.spare.take() {
            if at == end && spare.capacity() >= len {
                return spare;
            }
        }
        let from = align_down(end);
        let carried = (end - from) as usize;
        let (arena, mut spare) = Arena::new(self.next_arena, (carried + len).max(ARENA_BYTES), ALIGN as usize);
        self.next_arena += 1;
        self.arena = Some(arena);
        if carried > 0 {
            for slice in self.slices_from(from) {
                spare.extend_from_slice(slice);
            }
            let block = spare.split().freeze();
            self.truncate(from);
            self.push(block);
        }
        spare
    }

    /// After a write-out: the block kept for the next one (all that is held
    /// then, unless appends came meanwhile) stays a slice of the buffer it
    /// lies in only if that is the arena the next append will continue in;
    /// otherwise it is copied, so that it does not keep a whole append's
    /// buffer alive (the tail cache decides how long those live). A new
    /// arena copies it in anyway.
    fn keep_block_alone(&mut self) {
        let current = self.spare.as_ref().and(self.arena.as_ref()).map(|arena| arena.number);
        if let Some(front) = self.pieces.front_mut() {
            if front.arena == 0 || Some(front.arena) != current {
                if front.bytes.len() < ALIGN as usize && self.len < ALIGN {
                    *front = Piece { bytes: Bytes::copy_from_slice(&front.bytes), arena: 0 };
                }
            }
        }
    }

    /// Forgets the arena: later appends are held as they come.
    fn drop_arena(&mut self) {
        self.arena = None;
        self.spare = None;
    }
}

/// Zeroes ahead of a [`DirectFile`]'s data.
#[derive(Default)]
struct Zeroes {
    /// Where the file should end in zeroes ([`File::allocate`]), written by
    /// the next [`File::write_ahead`].
    wanted: u64,
    /// The file holds zeroes from its data's end up to here (as far as this
    /// handle wrote them), so a top-up need not write them again.
    written: u64,
}

/// A segment data file opened with `O_DIRECT`, written behind: an append
/// only keeps its buffers (`Bytes`, shared, not copied); `sync_data` (the
/// flusher thread's call) writes them to the file, padded to a block, then
/// syncs. Buffers filled in the file's staging memory ([`File::staging`],
/// the leader's stamped copies) are written from where they lie; others are
/// copied into one aligned buffer first. So appends never wait for the
/// device, and the device gets one large write per group commit. Reads of
/// bytes not written yet are served from memory.
pub(crate) struct DirectFile {
    file: std::fs::File,
    /// The same file opened without `O_DIRECT`, for reads through the page
    /// cache and the memory map.
    cached: std::fs::File,
    pending: Mutex<Pending>,
    /// The zeroes asked for ahead of the data and those written.
    zeroes: Mutex<Zeroes>,
    /// Held while bytes are written out or the file is cut, so that a
    /// write-out that copied its bytes before a cut cannot land after it.
    io: Mutex<()>,
    /// Bytes write-outs copied (not counting a padded last block): what
    /// staging did not save. Read by tests.
    copied: std::sync::atomic::AtomicU64,
}

/// Opens `path` with `O_DIRECT` (creating it if `create_new`). `Ok(None)`:
/// the file system refuses direct I/O (tmpfs does, with `EINVAL`).
/// Elsewhere than Linux, always `Ok(None)`.
pub(crate) fn open(path: &Path, create_new: bool) -> io::Result<Option<DirectFile>> {
    let Some(flags) = direct_flag() else { return Ok(None) };
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).custom_flags(flags);
    if create_new {
        options.create_new(true);
    }
    match options.open(path) {
        Ok(file) => Ok(Some(DirectFile {
            file,
            cached: std::fs::OpenOptions::new().read(true).open(path)?,
            // A file just created is known to be empty.
            pending: Mutex::new(Pending { known: create_new, ..Pending::unknown() }),
            zeroes: Mutex::new(Zeroes::default()),
            io: Mutex::new(()),
            copied: std::sync::atomic::AtomicU64::new(0),
        })),
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(err) => Err(err),
    }
}

#[cfg(target_os = "linux")]
fn direct_flag() -> Option<i32> {
    Some(libc::O_DIRECT)
}

#[cfg(not(target_os = "linux"))]
fn direct_flag() -> Option<i32> {
    None
}

impl DirectFile {
    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads into aligned `buf` from aligned `position` until it is full or
    /// the file ends; returns how many bytes were read.
    fn read_aligned(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], position + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
            if done % ALIGN as usize != 0 {
                // Only the end of the file ends a direct read off a block
                // boundary.
                break;
            }
        }
        Ok(done)
    }

    /// Reads `buf.len()` bytes at any `position` from the file itself,
    /// around the page cache.
    fn read_direct(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let start = align_down(position);
        let end = position + buf.len() as u64;
        let mut aligned = AlignedBuf::default();
        let chunk = aligned.get((align_up(end) - start) as usize);
        let got = self.read_aligned(chunk, start)?;
        let skip = (position - start) as usize;
        if got < skip + buf.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"));
        }
        buf.copy_from_slice(&chunk[skip..skip + buf.len()]);
        Ok(())
    }

    fn write_aligned(&self, buf: &[u8], position: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.write_at(&buf[done..], position + done as u64) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "direct write wrote nothing")),
                Ok(n) if n % ALIGN as usize != 0 => {
                    return Err(io::Error::other(format!("direct write of {} bytes wrote {n}", buf.len() - done)));
                }
                Ok(n) => done += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    fn lock_zeroes(&self) -> std::sync::MutexGuard<'_, Zeroes> {
        self.zeroes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes zeroes from the block after the last append towards where
    /// [`File::allocate`] asked the file to end, if that is further, at most
    /// [`ZERO_CHUNK_BYTES`] of them. The caller holds `io`.
    fn write_zeroes(&self) -> io::Result<bool> {
        let (from, to) = {
            let pending = self.lock_pending();
            if !pending.known {
                // No append yet in this handle: where the data ends is not
                // known, and nothing asks for zeroes before an append.
                return Ok(false);
            }
            let zeroes = self.lock_zeroes();
            (align_up(pending.end()).max(zeroes.written), align_up(zeroes.wanted))
        };
        if from >= to {
            return Ok(false);
        }
        let n = (to - from).min(ZERO_CHUNK_BYTES as u64);
        self.write_aligned(&zero_chunk()[..n as usize], from)?;
        let mut done = self.lock_zeroes();
        done.written = done.written.max(from + n);
        Ok(true)
    }

    /// Writes everything appended so far to the file (not synced). The
    /// caller holds `io`.
    ///
    /// From where the bytes lie, when every one of them lies in an arena,
    /// laid out for it (see [`Arena`]): one vectored write of their whole
    /// blocks and of a copy of the last, partial one. Otherwise all are
    /// copied into one aligned buffer first.
    fn flush_pending(&self) -> io::Result<()> {
        WRITE_BUF.with(|cell| {
            let mut cell = cell.borrow_mut();
            let (start, end, held) = {
                let pending = self.lock_pending();
                if !pending.known || pending.written >= pending.end() {
                    return Ok::<(), io::Error>(());
                }
                let (start, end) = (pending.start, pending.end());
                // Held here: an append may replace the pieces before `end`
                // with the same bytes in a new arena (`Pending::staging`)
                // while this writes them.
                let held: Option<Vec<(Bytes, u64)>> = pending
                    .pieces
                    .iter()
                    .all(|piece| piece.arena != 0)
                    .then(|| pending.pieces.iter().map(|piece| (piece.bytes.clone(), piece.arena)).collect());
                if held.is_none() {
                    let buf = cell.get(align_up(end - start) as usize);
                    let len = (end - start) as usize;
                    pending.copy_to(start, &mut buf[..len]);
                    buf[len..].fill(0);
                }
                (start, end, held)
            };
            // Appends may go on meanwhile: they only add bytes past `end`.
            let in_place = held.as_ref().and_then(|held| blocks_in_place(held));
            match in_place {
                Some((mut blocks, tail)) => {
                    let buf = cell.get(ALIGN as usize);
                    buf[..tail.len()].copy_from_slice(tail);
                    buf[tail.len()..].fill(0);
                    if !tail.is_empty() {
                        blocks.push(buf);
                    }
                    arena::write_all_vectored_at(&self.file, &blocks, start, whole_blocks(end - start))?;
                }
                None => {
                    let buf = cell.get(align_up(end - start) as usize);
                    if held.is_some() {
                        // In arenas, but not laid out for a direct write
                        // (runs that do not meet at a block boundary, which
                        // staging avoids): copy after all.
                        let len = (end - start) as usize;
                        self.lock_pending().copy_to(start, &mut buf[..len]);
                        buf[len..].fill(0);
                    }
                    self.write_aligned(buf, start)?;
                    self.copied.fetch_add(end - start, std::sync::atomic::Ordering::Relaxed);
                }
            }
            drop(held);
            let mut pending = self.lock_pending();
            // Keep the block holding `end`: the next write starts there.
            pending.drop_before(align_down(end));
            pending.keep_block_alone();
            pending.written = end;
            Ok(())
        })?;
        WRITE_BUF.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.raw.len() > KEEP_BUFFER_BYTES_MAX {
                *cell = AlignedBuf::default();
            }
        });
        Ok(())
    }
}

/// How pieces in arenas can be written from where they lie: their whole
/// blocks as slices of the arenas' memory, and the bytes of the last,
/// partial block (to be copied into a padded block). `None` unless every
/// run of one arena starts at an aligned address and all but the last end on
/// a block boundary, as a direct write wants its memory; also when there
/// are more runs than one write takes.
fn blocks_in_place(held: &[(Bytes, u64)]) -> Option<(Vec<&[u8]>, &[u8])> {
    let mut runs = arena::runs(held.iter().map(|(bytes, arena)| (bytes, *arena)))?;
    let align = ALIGN as usize;
    let aligned = |run: &[u8]| (run.as_ptr() as usize).is_multiple_of(align);
    let last = runs.pop()?;
    if runs.len() >= IOVECS_MAX - 2
        || !aligned(last)
        || !runs.iter().all(|run| aligned(run) && run.len().is_multiple_of(align))
    {
        return None;
    }
    let (whole, tail) = last.split_at(last.len() - last.len() % align);
    if !whole.is_empty() {
        runs.push(whole);
    }
    Some((runs, tail))
}

/// A check that a direct write of `total` bytes wrote whole blocks.
fn whole_blocks(total: u64) -> impl Fn(usize) -> io::Result<()> {
    move |n| {
        if n.is_multiple_of(ALIGN as usize) {
            Ok(())
        } else {
            Err(io::Error::other(format!("direct write of {} bytes wrote {n}", align_up(total))))
        }
    }
}

impl File for DirectFile {
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        let end = position + buf.len() as u64;
        let from_file = {
            let pending = self.lock_pending();
            match pending.held_from(position, end)? {
                Some(split) => {
                    let k = (split - position) as usize;
                    pending.copy_to(split, &mut buf[k..]);
                    k
                }
                None => buf.len(),
            }
        };
        self.cached.read_exact_at(&mut buf[..from_file], position)
    }

    fn read_bytes_at(&self, position: u64, len: usize) -> io::Result<Bytes> {
        let end = position + len as u64;
        let (from_file, held) = {
            let pending = self.lock_pending();
            match pending.held_from(position, end)? {
                Some(split) => ((split - position) as usize, pending.pieces_between(split, end)),
                None => (len, Vec::new()),
            }
        };
        let mut buf = BytesMut::with_capacity(len);
        super::pread::read_exact_appending(&self.cached, &mut buf, from_file, position)?;
        for piece in &held {
            buf.extend_from_slice(piece);
        }
        debug_assert_eq!(buf.len(), len);
        Ok(buf.freeze())
    }

    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.write_pieces_at(&[Bytes::copy_from_slice(buf)], position)
    }

    fn write_pieces_at(&self, pieces: &[Bytes], position: u64) -> io::Result<()> {
        let total: usize = pieces.iter().map(Bytes::len).sum();
        if total == 0 {
            return Ok(());
        }
        let mut pending = self.lock_pending();
        if !pending.known || pending.end() != position {
            // Not an append right after the last: write out what is pending,
            // then start again from the block holding `position`, read back.
            drop(pending);
            let _io = self.io.lock().unwrap_or_else(|p| p.into_inner());
            self.flush_pending()?;
            let start = align_down(position);
            let mut block = vec![0u8; (position - start) as usize];
            self.read_direct(&mut block, start).map_err(|err| {
                io::Error::new(err.kind(), format!("append at {position}, past the end of the file: {err}"))
            })?;
            pending = self.lock_pending();
            let next_arena = pending.next_arena;
            *pending = Pending { start, written: start, known: true, next_arena, ..Pending::unknown() };
            pending.push(Bytes::from(block));
            pending.written = position;
        }
        for piece in pieces {
            pending.push(piece.clone());
        }
        let unwritten = pending.end() - pending.written;
        drop(pending);
        if unwritten > PENDING_BYTES_MAX {
            // No sync came for a while: write out here rather than hold more.
            let _io = self.io.lock().unwrap_or_else(|p| p.into_inner());
            self.flush_pending()?;
        }
        Ok(())
    }

    fn extent_after_write(&self, end: u64) -> u64 {
        align_up(end)
    }

    fn staging(&self, position: u64, len: usize) -> Option<BytesMut> {
        let mut pending = self.lock_pending();
        (pending.known && pending.end() == position).then(|| pending.staging(len))
    }

    fn keep_staging(&self, rest: BytesMut, position: u64) {
        let mut pending = self.lock_pending();
        let in_arena = pending.arena.as_ref().is_some_and(|arena| arena.holds_buffer(&rest));
        if in_arena && pending.end() == position && rest.capacity() >= SPARE_BYTES_MIN {
            pending.spare = Some((rest, position));
        } else {
            // Too little left to be worth keeping the arena alive for: the
            // next append starts a new one. (Its pieces keep their number.)
            pending.drop_arena();
        }
    }

    fn release_staging(&self) {
        self.lock_pending().drop_arena();
    }

    fn write_out(&self) -> io::Result<()> {
        let _io = self.io.lock().unwrap_or_else(|p| p.into_inner());
        self.flush_pending()
    }

    fn len(&self) -> io::Result<u64> {
        let on_disk = self.file.metadata()?.len();
        let pending = self.lock_pending();
        Ok(if pending.known { on_disk.max(pending.end()) } else { on_disk })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let _io = self.io.lock().unwrap_or_else(|p| p.into_inner());
        {
            // Zeroes past the cut are neither wanted nor there any more.
            let mut zeroes = self.lock_zeroes();
            zeroes.wanted = zeroes.wanted.min(len);
            zeroes.written = zeroes.written.min(len);
        }
        // Write out first, so that no later write-out pads the file past
        // `len` again (a seal cuts the padding this way).
        self.flush_pending()?;
        {
            let mut pending = self.lock_pending();
            if pending.known && len < pending.end() {
                pending.drop_arena();
                if len >= pending.start {
                    pending.truncate(len);
                    pending.written = pending.written.min(len);
                } else {
                    // Everything below `len` is in the file already.
                    let next_arena = pending.next_arena;
                    *pending = Pending { next_arena, ..Pending::unknown() };
                }
            }
        }
        self.file.set_len(len)
    }

    /// Asks for zeroes up to `len` (rounded up to a block), written by the
    /// next [`File::write_ahead`]: see the module's documentation for why
    /// not `fallocate`. The next sync after that makes the new length
    /// durable.
    fn allocate(&self, len: u64) -> io::Result<()> {
        let mut zeroes = self.lock_zeroes();
        zeroes.wanted = zeroes.wanted.max(len);
        Ok(())
    }

    fn write_ahead(&self) -> io::Result<bool> {
        let _io = self.io.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.write_zeroes();
        if result.is_err() {
            // Not asked again until the segment asks: it may be a full disk.
            self.lock_zeroes().wanted = 0;
        }
        result
    }

    fn sync_data(&self) -> io::Result<()> {
        {
            let _io = self.io.lock().unwrap_or_else(|p| p.into_inner());
            self.flush_pending()?;
        }
        self.file.sync_data()
    }

    fn map(&self, len: u64) -> io::Result<Bytes> {
        {
            let _io = self.io.lock().unwrap_or_else(|p| p.into_inner());
            self.flush_pending()?;
        }
        super::mmap::map_read_only(&self.cached, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::TempDir;

    /// `None` where the temporary directory's file system has no direct I/O
    /// (tmpfs): the test then has nothing to check.
    fn direct_file(dir: &Path, name: &str) -> Option<DirectFile> {
        let file = open(&dir.join(name), true).expect("open");
        if file.is_none() {
            eprintln!("{} has no O_DIRECT; nothing to test", dir.display());
        }
        file
    }

    /// Bytes `[position, position + len)` read both ways, which must agree.
    fn read_back(file: &DirectFile, position: u64, len: usize) -> Vec<u8> {
        let mut back = vec![0u8; len];
        file.read_exact_at(&mut back, position).expect("read");
        let fresh = file.read_bytes_at(position, len).expect("read into fresh memory");
        assert_eq!(&fresh[..], &back[..], "both reads give the same bytes");
        back
    }

    fn on_disk(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(name)).expect("read back")
    }

    #[test]
    fn appends_at_any_position_leave_the_bytes_written_and_zeroes_to_the_next_block() {
        let dir = TempDir::new("appends");
        let Some(file) = direct_file(dir.path(), "seg") else { return };
        let mut expected = Vec::new();
        let mut n = 0u8;
        // Sizes that start and end inside blocks, on boundaries, and span several.
        for size in [1usize, 100, 3995, 4096, 5000, 1, 8191, 12_288, 7] {
            let pieces: Vec<Bytes> = (0..3)
                .map(|k| {
                    n = n.wrapping_add(1);
                    Bytes::from(vec![n; size + k])
                })
                .collect();
            file.write_pieces_at(&pieces, expected.len() as u64).expect("append");
            let before = expected.len();
            for piece in &pieces {
                expected.extend_from_slice(piece);
            }
            // Not in the file yet, but readable.
            let back = read_back(&file, (before / 2) as u64, expected.len() - before / 2);
            assert_eq!(&back[..], &expected[before / 2..]);
            // Partly in the file, partly held, and not to the end.
            let back = read_back(&file, (before / 3) as u64, expected.len() - before / 2);
            assert_eq!(&back[..], &expected[before / 3..before / 3 + expected.len() - before / 2]);
            file.sync_data().expect("sync");
            let disk = on_disk(dir.path(), "seg");
            assert_eq!(disk.len() as u64, file.extent_after_write(expected.len() as u64));
            assert_eq!(&disk[..expected.len()], &expected[..]);
            assert!(disk[expected.len()..].iter().all(|&b| b == 0), "padding is zeroes");
        }
        let back = read_back(&file, 1234, 6000);
        assert_eq!(&back[..], &expected[1234..7234]);
        let mut back = vec![0u8; 6000];
        assert!(file.read_exact_at(&mut back, expected.len() as u64).is_err(), "a read past the end fails");
        let err = file.read_bytes_at(expected.len() as u64, 6000).expect_err("a read past the end fails");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn an_append_after_a_cut_or_from_a_new_handle_keeps_the_bytes_before_it() {
        let dir = TempDir::new("cuts");
        let Some(file) = direct_file(dir.path(), "seg") else { return };
        let first: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        file.write_pieces_at(&[Bytes::from(first.clone())], 0).expect("append");
        file.sync_data().expect("sync");
        // A truncation into the last block, then an append where it cut.
        file.set_len(9_000).expect("cut");
        file.write_pieces_at(&[Bytes::from_static(b"after the cut")], 9_000).expect("append");
        let mut expected = first[..9_000].to_vec();
        expected.extend_from_slice(b"after the cut");
        // A cut of bytes not written out yet.
        file.write_pieces_at(&[Bytes::from_static(b"never written")], expected.len() as u64).expect("append");
        file.set_len(expected.len() as u64).expect("cut");
        file.sync_data().expect("sync");
        // A cut before the kept block.
        file.set_len(5_000).expect("cut");
        expected.truncate(5_000);
        file.write_pieces_at(&[Bytes::from_static(b"xyz")], 5_000).expect("append");
        expected.extend_from_slice(b"xyz");
        file.sync_data().expect("sync");
        let disk = on_disk(dir.path(), "seg");
        assert_eq!(&disk[..expected.len()], &expected[..]);
        assert!(disk[expected.len()..].iter().all(|&b| b == 0), "the cut bytes are gone");
        drop(file);
        // A new handle knows nothing of the tail: it reads the block back.
        let file = open(&dir.path().join("seg"), false).expect("reopen").expect("direct");
        file.write_pieces_at(&[Bytes::from_static(b"reopened")], expected.len() as u64).expect("append");
        expected.extend_from_slice(b"reopened");
        file.sync_data().expect("sync");
        let disk = on_disk(dir.path(), "seg");
        assert_eq!(&disk[..expected.len()], &expected[..]);
        assert!(disk[expected.len()..].iter().all(|&b| b == 0));
        // An append past the end of the file is refused, not padded with garbage.
        let len = disk.len() as u64;
        file.set_len(len - 100).expect("cut");
        let err = file.write_pieces_at(&[Bytes::from_static(b"gap")], len + 1).expect_err("past the end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn appends_are_held_as_their_own_buffers_and_cuts_and_reads_cross_them() {
        let dir = TempDir::new("pieces");
        let Some(file) = direct_file(dir.path(), "seg") else { return };
        let pieces: Vec<Bytes> = (1..=4u8).map(|k| Bytes::from(vec![k; 3000 * k as usize])).collect();
        file.write_pieces_at(&pieces[..2], 0).expect("append");
        file.sync_data().expect("sync");
        // Written: 9,000 bytes; the block holding the end (8192..9000) is kept.
        file.write_pieces_at(&pieces[2..], 9000).expect("append");
        {
            let pending = file.lock_pending();
            assert_eq!((pending.start, pending.written), (8192, 9000));
            let held: Vec<*const u8> = pending.pieces.iter().map(|p| p.bytes.as_ptr()).collect();
            assert_eq!(&held[1..], &[pieces[2].as_ptr(), pieces[3].as_ptr()], "the appends' buffers, not copies");
            // The kept block is a copy of its own: holding a slice of the
            // second append would keep all of it alive.
            let kept = &pending.pieces[0].bytes;
            assert_eq!(kept.len(), 808);
            assert!(!pieces[1].as_ptr_range().contains(&kept.as_ptr()));
            assert!(kept.iter().all(|&b| b == 2));
        }
        let mut expected: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        // A read from the file, across the kept block and both pieces.
        let mut back = vec![0u8; expected.len() - 100];
        file.read_exact_at(&mut back, 100).expect("read");
        assert_eq!(&back[..], &expected[100..]);
        // Cuts (each writes out first) inside the last piece and the one
        // before, then an append where the second cut left off.
        file.set_len(20_000).expect("cut");
        file.set_len(17_000).expect("cut");
        expected.truncate(17_000);
        file.write_pieces_at(&[Bytes::from_static(b"tail")], 17_000).expect("append");
        expected.extend_from_slice(b"tail");
        let mut back = vec![0u8; expected.len()];
        file.read_exact_at(&mut back, 0).expect("read");
        assert_eq!(back, expected);
        file.sync_data().expect("sync");
        let disk = on_disk(dir.path(), "seg");
        assert_eq!(&disk[..expected.len()], &expected[..]);
        assert!(disk[expected.len()..].iter().all(|&b| b == 0));
        let pending = file.lock_pending();
        assert!(pending.len < ALIGN, "written pieces are let go but for the last block");
        assert_eq!(pending.end(), expected.len() as u64);
    }

    /// Fills a staging buffer for `data` at `position` the way the log does
    /// (one piece per batch), appends it and gives the rest back.
    fn staged_append(file: &DirectFile, position: u64, batches: &[&[u8]]) -> Vec<Bytes> {
        let len = batches.iter().map(|b| b.len()).sum();
        let mut buf = file.staging(position, len).expect("an append at the end gets staging memory");
        let pieces: Vec<Bytes> = batches
            .iter()
            .map(|batch| {
                buf.extend_from_slice(batch);
                buf.split().freeze()
            })
            .collect();
        file.write_pieces_at(&pieces, position).expect("append");
        file.keep_staging(buf, position + len as u64);
        pieces
    }

    #[test]
    fn staged_appends_are_written_from_where_they_lie_across_arenas_and_after_cuts() {
        let dir = TempDir::new("staged");
        let Some(file) = direct_file(dir.path(), "seg") else { return };
        let copied = || file.copied.load(std::sync::atomic::Ordering::Relaxed);
        let mut expected: Vec<u8> = Vec::new();
        let mut n = 0u8;
        // Sizes that end inside blocks and on boundaries; together several
        // arenas' worth, so later appends start new arenas mid-block.
        for size in [1usize, 100, 3995, 4096, 5000, 700_000, 8191, 1_500_000, 12_288, 7, 2_100_000, 333] {
            let batches: Vec<Vec<u8>> = (0..3)
                .map(|k| {
                    n = n.wrapping_add(1);
                    vec![n; size + k]
                })
                .collect();
            let refs: Vec<&[u8]> = batches.iter().map(|b| &b[..]).collect();
            let pieces = staged_append(&file, expected.len() as u64, &refs);
            assert!(pieces.iter().zip(&batches).all(|(p, b)| p[..] == b[..]));
            for batch in &batches {
                expected.extend_from_slice(batch);
            }
            file.sync_data().expect("sync");
            let disk = on_disk(dir.path(), "seg");
            assert_eq!(&disk[..expected.len()], &expected[..]);
            assert!(disk[expected.len()..].iter().all(|&b| b == 0), "padding is zeroes");
        }
        assert_eq!(copied(), 0, "every write-out went from the staging memory");
        assert!(file.lock_pending().next_arena > 3, "the appends took several arenas");
        // A cut inside the block kept in memory: the next staged append
        // starts a new arena, the block's bytes before it copied in.
        let cut = expected.len() as u64 - 1000;
        file.set_len(cut).expect("cut");
        expected.truncate(cut as usize);
        staged_append(&file, cut, &[b"after the cut", &[9u8; 10_000]]);
        expected.extend_from_slice(b"after the cut");
        expected.extend_from_slice(&[9u8; 10_000]);
        let mut back = vec![0u8; 20_000];
        file.read_exact_at(&mut back, expected.len() as u64 - 20_000).expect("read pending");
        assert_eq!(&back[..], &expected[expected.len() - 20_000..]);
        file.sync_data().expect("sync");
        assert_eq!(copied(), 0, "the block carried over was copied into the new arena, not written apart");
        // Plain pieces mixed in are copied at the write-out.
        let plain = Bytes::from(vec![5u8; 3000]);
        file.write_pieces_at(std::slice::from_ref(&plain), expected.len() as u64).expect("append");
        expected.extend_from_slice(&plain);
        staged_append(&file, expected.len() as u64, &[&[6u8; 5000]]);
        expected.extend_from_slice(&[6u8; 5000]);
        file.sync_data().expect("sync");
        assert!(copied() > 0);
        let before = copied();
        // Staging after the plain piece is written out carries it over.
        staged_append(&file, expected.len() as u64, &[&[7u8; 50_000]]);
        expected.extend_from_slice(&[7u8; 50_000]);
        file.release_staging();
        file.sync_data().expect("sync");
        assert_eq!(copied(), before, "released staging memory still writes out from where it lies");
        let disk = on_disk(dir.path(), "seg");
        assert_eq!(&disk[..expected.len()], &expected[..]);
        assert!(disk[expected.len()..].iter().all(|&b| b == 0));
        // No staging memory for an append anywhere but at the end.
        assert!(file.staging(expected.len() as u64 + 1, 10).is_none());
    }

    #[test]
    fn staged_appends_racing_the_write_outs_land_byte_exact() {
        let dir = TempDir::new("staged-race");
        let Some(file) = direct_file(dir.path(), "seg") else { return };
        let done = std::sync::atomic::AtomicBool::new(false);
        let expected = std::thread::scope(|scope| {
            // The flusher: writes out and syncs whatever is there, all along.
            scope.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    file.sync_data().expect("sync");
                }
            });
            let mut expected: Vec<u8> = Vec::new();
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            for i in 0..400u32 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Mostly small appends, some of several blocks, some past an
                // arena's size, so new arenas start while write-outs run.
                let size = match seed % 10 {
                    0 => 300_000 + (seed >> 8) as usize % 900_000,
                    1..=3 => 4096 + (seed >> 8) as usize % 40_000,
                    _ => 1 + (seed >> 8) as usize % 3000,
                };
                let batch: Vec<u8> = (0..size).map(|k| (i as usize * 31 + k) as u8).collect();
                if seed.is_multiple_of(17) {
                    // Now and then a plain piece, as a follower's batch.
                    file.write_pieces_at(&[Bytes::from(batch.clone())], expected.len() as u64).expect("append");
                } else {
                    staged_append(&file, expected.len() as u64, &[&batch]);
                }
                expected.extend_from_slice(&batch);
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            expected
        });
        file.sync_data().expect("sync");
        let disk = on_disk(dir.path(), "seg");
        assert_eq!(disk.len() as u64, file.extent_after_write(expected.len() as u64));
        assert!(disk[..expected.len()] == expected[..], "the file holds what was appended");
        assert!(disk[expected.len()..].iter().all(|&b| b == 0));
        let mut back = vec![0u8; expected.len()];
        file.read_exact_at(&mut back, 0).expect("read");
        assert!(back == expected);
        let copied = file.copied.load(std::sync::atomic::Ordering::Relaxed);
        assert!(copied < expected.len() as u64 / 4, "most went out from the staging memory: {copied} copied");
    }

    #[test]
    fn space_asked_for_ahead_is_written_with_zeroes_after_the_sync_a_step_at_a_time() {
        let dir = TempDir::new("ahead");
        let Some(file) = direct_file(dir.path(), "seg") else { return };
        let first: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8 + 1).collect();
        file.write_pieces_at(&[Bytes::from(first.clone())], 0).expect("append");
        file.allocate(1 << 20).expect("allocate");
        file.sync_data().expect("sync");
        // Deferred: the sync wrote the data only.
        let data_extent = align_up(first.len() as u64);
        assert_eq!(on_disk(dir.path(), "seg").len() as u64, data_extent);
        assert!(file.write_ahead().expect("write ahead"), "zeroes written");
        let disk = on_disk(dir.path(), "seg");
        assert_eq!(disk.len() as u64, data_extent + ZERO_CHUNK_BYTES as u64, "one step of zeroes");
        assert_eq!(&disk[..first.len()], &first[..]);
        assert!(disk[first.len()..].iter().all(|&b| b == 0));
        for _ in 0..8 {
            file.write_ahead().expect("write ahead");
        }
        assert_eq!(on_disk(dir.path(), "seg").len() as u64, 1 << 20, "no further than asked");
        assert!(!file.write_ahead().expect("write ahead"), "nothing left to write");
        // Appends overwrite the zeroes; the file does not grow.
        let second = vec![7u8; 300_000];
        file.write_pieces_at(&[Bytes::from(second.clone())], first.len() as u64).expect("append");
        file.sync_data().expect("sync");
        let disk = on_disk(dir.path(), "seg");
        assert_eq!(disk.len() as u64, 1 << 20);
        assert_eq!(&disk[first.len()..first.len() + second.len()], &second[..]);
        assert!(disk[first.len() + second.len()..].iter().all(|&b| b == 0));
        // A cut (a seal) drops the zeroes and what was still asked for.
        let end = (first.len() + second.len()) as u64;
        file.allocate(4 << 20).expect("allocate");
        file.set_len(end).expect("cut");
        file.write_ahead().expect("write ahead");
        assert_eq!(on_disk(dir.path(), "seg").len() as u64, end, "nothing written past the cut");
    }
}
