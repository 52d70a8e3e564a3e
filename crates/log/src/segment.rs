//! One segment: a data file of batches stored back to back, and its index.
//!
//! A segment is *active* (the last one; appended to; read by copying with
//! `pread`, because it still changes, except for its most recent appends,
//! which it keeps in memory: see [`TailCache`]) or *sealed* (immutable; data
//! and index read through a memory map, as `Bytes` slices that own the map).
//!
//! Invariants:
//! - entry `i` holds Raft index `base_index + i`; entries are dense;
//! - entry positions increase, start at 0 and end at `data_len`;
//! - base offsets never decrease; an entry's width in offsets is the next
//!   entry's base offset minus its own (0 exactly for control entries);
//! - a sealed segment's bytes below `verified_len` have passed their CRC in
//!   this process; nothing above it is served before it is checked.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use strata_batch::{BATCH_HEADER_BYTES, BatchHeader};

use crate::error::{LogError, Result};
use crate::index::{Entries, IndexEntry, decode_index_file, encode_index_file};
use crate::io::{Dir, File};
use crate::limits::{PREALLOCATE_AFTER_BYTES, TAIL_CACHE_HELD_BYTES_MAX};
use crate::types::{Offset, RaftIndex, Term};

/// Name of a segment's data file: first Raft index and first offset, zero
/// padded so names sort in log order.
pub(crate) fn data_file_name(base_index: RaftIndex, base_offset: Offset) -> String {
    format!("{:020}-{:020}.log", base_index.0, base_offset.0)
}

/// Name of the index file that goes with a data file.
pub(crate) fn index_file_name(data_name: &str) -> String {
    format!("{}.index", data_name.trim_end_matches(".log"))
}

/// Parses a data file name back into (base index, base offset).
pub(crate) fn parse_data_file_name(name: &str) -> Option<(RaftIndex, Offset)> {
    let stem = name.strip_suffix(".log")?;
    let (index, offset) = stem.split_once('-')?;
    if index.len() != 20 || offset.len() != 20 {
        return None;
    }
    Some((RaftIndex(index.parse().ok()?), Offset(offset.parse().ok()?)))
}

pub(crate) struct Segment {
    pub base_index: RaftIndex,
    pub base_offset: Offset,
    pub name: String,
    pub file: Arc<dyn File>,
    pub entries: Entries,
    /// Bytes of valid data.
    pub data_len: u64,
    /// Length of the file: `data_len`, plus space allocated ahead of it
    /// (reading as zeroes) while the segment is active (see [`Segment::preallocate`]).
    file_len: u64,
    /// Set once preallocating failed: the segment no longer tries.
    preallocate_refused: bool,
    /// Offset after the last entry.
    pub next_offset: Offset,
    /// Largest batch max timestamp in the segment, -1 when empty.
    pub max_timestamp: i64,
    /// When the first entry was appended in this process (age-based roll).
    pub first_append_at: Option<Instant>,
    /// Mapping of a sealed segment's data, made on first read.
    map: OnceLock<Bytes>,
    verified_len: AtomicU64,
    /// The active segment's latest appends, as written.
    tail: TailCache,
}

/// The active segment's most recent appends, kept as the very buffers that
/// were written (each `append`'s pieces, whole batches only), up to a byte
/// budget. A piece kept as it came (`Log::append_verified`) may be a slice of
/// a larger buffer, a network message's, which it keeps alive meanwhile.
/// Whatever reads the log right after an append (the state machine applying
/// the entry, the leader replicating it, a consumer at the end of the log)
/// gets a slice of these instead of a `pread` into a fresh buffer.
///
/// Past the budget, appends the state machine has not applied yet are kept
/// (up to [`TAIL_CACHE_HELD_BYTES_MAX`]): it is about to read each of them,
/// and an active segment's bytes are written around the page cache, so a
/// copy let go too early is read back from the device.
#[derive(Default)]
struct TailCache {
    /// (position in the data file, the bytes written there), in order and
    /// contiguous, the last ending at `data_len`.
    chunks: VecDeque<(u64, Bytes)>,
    n_bytes: usize,
}

impl TailCache {
    /// Where the cached bytes start (`None`: nothing cached).
    fn start(&self) -> Option<u64> {
        self.chunks.front().map(|(position, _)| *position)
    }

    /// Keeps `bytes`, written at `position`, then lets the oldest chunks go
    /// while over `budget`, except those reaching past `held_from` (bytes
    /// still to be applied) while within [`TAIL_CACHE_HELD_BYTES_MAX`].
    fn push(&mut self, position: u64, bytes: Bytes, budget: usize, held_from: u64) {
        self.n_bytes += bytes.len();
        self.chunks.push_back((position, bytes));
        let ceiling = budget.max(TAIL_CACHE_HELD_BYTES_MAX);
        while self.n_bytes > budget {
            let Some((position, front)) = self.chunks.front() else { break };
            if position + front.len() as u64 > held_from && self.n_bytes <= ceiling {
                break;
            }
            self.n_bytes -= front.len();
            self.chunks.pop_front();
        }
    }

    /// Bytes `[start, end)` as one slice, if one chunk holds them all.
    fn slice(&self, start: u64, end: u64) -> Option<Bytes> {
        let i = self.chunks.partition_point(|(position, _)| *position <= start).checked_sub(1)?;
        let (position, bytes) = &self.chunks[i];
        let (a, b) = ((start - position) as usize, (end - position) as usize);
        (b <= bytes.len()).then(|| bytes.slice(a..b))
    }

    /// Bytes `[start, end)` copied out of the chunks, if all are cached.
    fn copy(&self, start: u64, end: u64) -> Option<Bytes> {
        if self.start()? > start {
            return None;
        }
        let mut out = BytesMut::with_capacity((end - start) as usize);
        for (position, bytes) in &self.chunks {
            let chunk_end = position + bytes.len() as u64;
            if chunk_end <= start || *position >= end {
                continue;
            }
            let a = start.max(*position) - position;
            let b = end.min(chunk_end) - position;
            out.extend_from_slice(&bytes[a as usize..b as usize]);
        }
        (out.len() as u64 == end - start).then(|| out.freeze())
    }

    /// Forgets everything at or after `len` (a truncation).
    fn cut(&mut self, len: u64) {
        while self.chunks.back().is_some_and(|(position, bytes)| position + bytes.len() as u64 > len) {
            let (_, old) = self.chunks.pop_back().expect("checked");
            self.n_bytes -= old.len();
        }
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.n_bytes = 0;
    }
}

impl Segment {
    pub fn new_active(dir: &dyn Dir, base_index: RaftIndex, base_offset: Offset) -> Result<Segment> {
        let name = data_file_name(base_index, base_offset);
        let file = dir.create_segment(&name).map_err(LogError::io(|| format!("create segment {name}")))?;
        Ok(Segment {
            base_index,
            base_offset,
            name,
            file,
            entries: Entries::Active(Vec::new()),
            data_len: 0,
            file_len: 0,
            preallocate_refused: false,
            next_offset: base_offset,
            max_timestamp: -1,
            first_append_at: None,
            map: OnceLock::new(),
            verified_len: AtomicU64::new(0),
            tail: TailCache::default(),
        })
    }

    pub fn is_sealed(&self) -> bool {
        matches!(self.entries, Entries::Sealed { .. })
    }

    pub fn n_entries(&self) -> usize {
        self.entries.len()
    }

    /// One past the last Raft index held.
    pub fn end_index(&self) -> RaftIndex {
        RaftIndex(self.base_index.0 + self.entries.len() as u64)
    }

    pub fn last_term(&self) -> Option<Term> {
        self.entries.last().map(|e| e.term)
    }

    /// Byte range of entry `i`.
    pub fn entry_span(&self, i: usize) -> (u64, u64) {
        let start = self.entries.get(i).position;
        let end = if i + 1 < self.entries.len() { self.entries.get(i + 1).position } else { self.data_len };
        (start, end)
    }

    /// Offsets entry `i` takes (0 for a control entry).
    pub fn entry_n_offsets(&self, i: usize) -> u64 {
        let base = self.entries.get(i).base_offset;
        let next = if i + 1 < self.entries.len() { self.entries.get(i + 1).base_offset } else { self.next_offset };
        next.0 - base.0
    }

    /// Appends already stamped and validated batches, `pieces` written one
    /// after another from `data_len` on (`File::write_pieces_at`). `items` gives
    /// each batch's length, index entry and width, in order; they cover the
    /// pieces exactly. The pieces are then kept in the tail cache, within
    /// `cache_budget` bytes, except that entries from `held_from` on (not
    /// applied yet; see [`crate::Log::hold_cache_from`]) are kept past it.
    pub fn append(
        &mut self,
        pieces: &[Bytes],
        items: &[(usize, IndexEntry, u64, i64)],
        cache_budget: usize,
        held_from: RaftIndex,
    ) -> Result<()> {
        debug_assert!(!self.is_sealed());
        self.file
            .write_pieces_at(pieces, self.data_len)
            .map_err(LogError::io(|| format!("write to segment {}", self.name)))?;
        let at = self.data_len + pieces.iter().map(|p| p.len() as u64).sum::<u64>();
        let Entries::Active(entries) = &mut self.entries else {
            unreachable!("append to a sealed segment");
        };
        let mut position = self.data_len;
        for &(len, mut entry, n_offsets, max_timestamp) in items {
            assert_eq!(entry.base_offset, self.next_offset, "offsets are assigned in order");
            entry.position = position;
            self.max_timestamp = self.max_timestamp.max(max_timestamp);
            entry.max_timestamp_so_far = self.max_timestamp;
            entries.push(entry);
            position += len as u64;
            self.next_offset = Offset(self.next_offset.0 + n_offsets);
        }
        assert_eq!(position, at, "item lengths cover the pieces");
        if cache_budget > 0 {
            let held_from = match held_from.0.checked_sub(self.base_index.0) {
                None => 0,
                Some(i) if (i as usize) < entries.len() => entries[i as usize].position,
                Some(_) => u64::MAX,
            };
            let mut at = self.data_len;
            for piece in pieces {
                self.tail.push(at, piece.clone(), cache_budget, held_from);
                at += piece.len() as u64;
            }
        }
        self.data_len = position;
        self.file_len = self.file_len.max(self.file.extent_after_write(position));
        self.first_append_at.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Keeps space allocated ahead of the data, so that later appends land
    /// on blocks the file system has reserved already (see
    /// [`crate::LogConfig::preallocate_bytes`]): up to `max_headroom` bytes
    /// and never more than the segment holds, topped up once less than half
    /// is left, never past `limit` (where the segment rolls). The new length
    /// is made durable by the next sync of the file, with the data.
    ///
    /// Best effort: if the file system refuses (a full disk, no
    /// `fallocate`), the segment stops trying and appends simply grow the
    /// file, so the error is only logged.
    pub fn preallocate(&mut self, max_headroom: u64, limit: u64) {
        if self.is_sealed() || self.preallocate_refused || self.data_len < PREALLOCATE_AFTER_BYTES {
            return;
        }
        let want = max_headroom.min(self.data_len);
        let end = (self.data_len + want).min(limit);
        if end <= self.file_len || self.file_len - self.data_len >= want / 2 {
            return;
        }
        match self.file.allocate(end) {
            Ok(()) => self.file_len = end,
            Err(err) => {
                tracing::warn!(segment = %self.name, %err, "could not preallocate; appends will grow the file");
                self.preallocate_refused = true;
                // Whatever part was allocated reads as zeroes: keep count of it.
                self.file_len = self.file.len().unwrap_or(self.file_len).max(self.data_len);
            }
        }
    }

    /// Cuts the space kept ahead of the data, so the file is exactly the
    /// data: before the segment is sealed (a sealed file's length is its
    /// data's). The caller syncs the file.
    pub fn cut_headroom(&mut self) -> Result<()> {
        if self.file_len > self.data_len {
            self.file.set_len(self.data_len).map_err(LogError::io(|| format!("cut segment {}", self.name)))?;
            self.file_len = self.data_len;
        }
        Ok(())
    }

    /// Notes that the file was cut to `len` (a truncation).
    pub fn note_cut(&mut self, len: u64) {
        self.file_len = len;
    }

    /// Seals the segment: writes its index file and switches reads to the
    /// memory map. The index file is not synced here: it is derived data,
    /// checked on open and rebuilt if damaged, so the caller may sync it
    /// lazily (it is returned for that).
    pub fn seal(&mut self, dir: &dyn Dir) -> Result<Option<Arc<dyn File>>> {
        if self.is_sealed() {
            return Ok(None);
        }
        let index_name = index_file_name(&self.name);
        let bytes = encode_index_file(self.base_index, self.data_len, &self.entries);
        let _ = dir.remove(&index_name);
        let file = dir.create(&index_name).map_err(LogError::io(|| format!("create index {index_name}")))?;
        file.write_all_at(&bytes, 0).map_err(LogError::io(|| format!("write index {index_name}")))?;
        let map = file.map(bytes.len() as u64).map_err(LogError::io(|| format!("map index {index_name}")))?;
        self.entries = Entries::Sealed { map, n: self.entries.len() };
        // The tail cache stays for the log to release (`Log::roll`): entries
        // not applied yet are read from it rather than through the map, whose
        // pages were written around the page cache.
        self.file.release_staging();
        // Everything in this segment was validated when appended or scanned.
        self.verified_len.store(self.data_len, Ordering::Release);
        Ok(Some(file))
    }

    /// Opens a sealed segment through its index file, if the file is there
    /// and describes this data file. `None` means: rebuild by scanning.
    pub fn open_sealed(
        dir: &dyn Dir,
        name: String,
        base_index: RaftIndex,
        base_offset: Offset,
        file: Arc<dyn File>,
        data_len: u64,
        has_index_file: bool,
    ) -> Result<Option<Segment>> {
        if !has_index_file || data_len == 0 {
            return Ok(None);
        }
        let index_name = index_file_name(&name);
        let index_file = dir.open(&index_name).map_err(LogError::io(|| format!("open index {index_name}")))?;
        let index_len = index_file.len().map_err(LogError::io(|| format!("stat index {index_name}")))?;
        let map = index_file.map(index_len).map_err(LogError::io(|| format!("map index {index_name}")))?;
        let entries = match decode_index_file(map, base_index, data_len) {
            Ok(entries) => entries,
            Err(reason) => {
                tracing::warn!(index = %index_name, %reason, "index file not usable, rebuilding from the data");
                return Ok(None);
            }
        };
        let Some(first) = (entries.len() > 0).then(|| entries.get(0)) else { return Ok(None) };
        let Some(last) = entries.last() else { return Ok(None) };
        if first.position != 0 || first.base_offset != base_offset {
            return Ok(None);
        }
        // The width of the last entry comes from its batch header.
        let mut header = [0u8; BATCH_HEADER_BYTES];
        if data_len - last.position < BATCH_HEADER_BYTES as u64 {
            return Ok(None);
        }
        file.read_exact_at(&mut header, last.position).map_err(LogError::io(|| format!("read segment {name}")))?;
        let Ok(parsed) = BatchHeader::parse(&header) else { return Ok(None) };
        if parsed.total_len() as u64 != data_len - last.position || parsed.base_offset as u64 != last.base_offset.0 {
            return Ok(None);
        }
        let max_timestamp = last.max_timestamp_so_far;
        Ok(Some(Segment {
            base_index,
            base_offset,
            name,
            file,
            next_offset: Offset(last.base_offset.0 + parsed.n_offsets()),
            entries,
            data_len,
            file_len: data_len,
            preallocate_refused: false,
            max_timestamp,
            first_append_at: None,
            map: OnceLock::new(),
            verified_len: AtomicU64::new(0),
            tail: TailCache::default(),
        }))
    }

    /// Builds a segment from a scan's result. The scanned bytes were all
    /// validated, so they count as verified.
    pub fn from_scan(
        name: String,
        base_index: RaftIndex,
        base_offset: Offset,
        file: Arc<dyn File>,
        scan: Scan,
    ) -> Segment {
        Segment {
            base_index,
            base_offset,
            name,
            file,
            entries: Entries::Active(scan.entries),
            data_len: scan.valid_len,
            file_len: scan.valid_len,
            preallocate_refused: false,
            next_offset: scan.next_offset,
            max_timestamp: scan.max_timestamp,
            first_append_at: None,
            map: OnceLock::new(),
            verified_len: AtomicU64::new(scan.valid_len),
            tail: TailCache::default(),
        }
    }

    /// Returns bytes `[start, end)` of the data: a slice or a copy of the
    /// tail cache if it holds them; else a slice of the map when sealed
    /// (CRC-checked on first touch), or a fresh copy read from the file.
    pub fn read_range(&self, start: u64, end: u64) -> Result<Bytes> {
        debug_assert!(start <= end && end <= self.data_len);
        if let Some(bytes) = self.tail.slice(start, end).or_else(|| self.tail.copy(start, end)) {
            return Ok(bytes);
        }
        if self.is_sealed() {
            let map = self.map()?;
            self.verify_through(&map, start, end)?;
            return Ok(map.slice(start as usize..end as usize));
        }
        self.file
            .read_bytes_at(start, (end - start) as usize)
            .map_err(LogError::io(|| format!("read segment {}", self.name)))
    }

    /// Where the tail cache starts: entries from there on are read from
    /// memory. `None` when nothing is cached.
    pub fn cache_start(&self) -> Option<u64> {
        self.tail.start()
    }

    /// Bytes `[start, end)` as a slice of one cached append, if there is one.
    pub fn cached_slice(&self, start: u64, end: u64) -> Option<Bytes> {
        self.tail.slice(start, end)
    }

    /// Drops the tail cache (an idle partition keeps no copy of its tail).
    pub fn release_cache(&mut self) {
        self.tail.clear();
        self.file.release_staging();
    }

    /// Forgets cached bytes at or after `len`, before the file is cut there.
    pub fn cut_cache(&mut self, len: u64) {
        self.tail.cut(len);
    }

    fn map(&self) -> Result<Bytes> {
        if let Some(map) = self.map.get() {
            return Ok(map.clone());
        }
        let map = self.file.map(self.data_len).map_err(LogError::io(|| format!("map segment {}", self.name)))?;
        Ok(self.map.get_or_init(|| map).clone())
    }

    /// Checks the CRC of every batch from the verified mark up to `end`, so
    /// that damage on disk is reported (naming file and position) instead of
    /// served.
    fn verify_through(&self, map: &Bytes, start: u64, end: u64) -> Result<()> {
        let verified = self.verified_len.load(Ordering::Acquire);
        if end <= verified {
            return Ok(());
        }
        // Verify from the first entry not yet verified that overlaps the read.
        let from = verified.max(start);
        let mut i = self
            .entries
            .partition_point_le(from, |e| e.position)
            .ok_or_else(|| self.corrupt(from, "no index entry covers the position".into()))?;
        let mut position = self.entries.get(i).position;
        while position < end {
            let (s, e) = self.entry_span(i);
            let entry = self.entries.get(i);
            let header =
                strata_batch::validate(&map[s as usize..e as usize]).map_err(|err| self.corrupt(s, err.to_string()))?;
            if header.base_offset as u64 != entry.base_offset.0 || header.partition_leader_epoch as u64 != entry.term.0
            {
                return Err(self.corrupt(s, "batch header disagrees with the index".into()));
            }
            position = e;
            i += 1;
        }
        if start <= verified {
            self.verified_len.fetch_max(position, Ordering::AcqRel);
        }
        Ok(())
    }

    pub fn corrupt(&self, position: u64, reason: String) -> LogError {
        LogError::Corrupt { file: self.name.clone().into(), position, reason }
    }
}

/// The result of reading a data file from the start and validating every
/// batch.
pub(crate) struct Scan {
    pub entries: Vec<IndexEntry>,
    pub valid_len: u64,
    pub next_offset: Offset,
    pub max_timestamp: i64,
    pub last_term: Option<Term>,
    pub stop: ScanStop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanStop {
    /// Every byte of the file is a valid batch.
    Clean,
    /// The tail from `position` is not a whole valid batch and nothing valid
    /// follows it: a torn write, to be cut off.
    Torn { position: u64, reason: String },
    /// A bad batch with valid data after it: damage, not a crash.
    Corrupt { position: u64, reason: String },
    /// Zeroes from `position` on: space preallocated for appends (or a
    /// write a crash lost there), holding no data.
    Zeroes { position: u64 },
}

/// Bytes read per `pread` while scanning.
const SCAN_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Reads a data file and validates each batch: length, magic, CRC, stamped
/// base offset equal to the running next offset, non-decreasing terms.
pub(crate) fn scan(file: &dyn File, file_len: u64, base_offset: Offset) -> Result<Scan> {
    let mut out = Scan {
        entries: Vec::new(),
        valid_len: 0,
        next_offset: base_offset,
        max_timestamp: -1,
        last_term: None,
        stop: ScanStop::Clean,
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = 0u64; // file position of buf[0]
    let mut position = 0u64;
    while position < file_len {
        // Make sure the header, then the whole batch, is in the buffer.
        let need_header = ensure(file, file_len, &mut buf, &mut buf_start, position, BATCH_HEADER_BYTES)?;
        if !need_header {
            out.stop = ScanStop::Torn { position, reason: "header cut short".into() };
            break;
        }
        let at = (position - buf_start) as usize;
        let total = match strata_batch::batch_total_len(&buf[at..]) {
            Ok(total) => total,
            Err(err) => {
                out.stop = ScanStop::Torn { position, reason: err.to_string() };
                break;
            }
        };
        if !ensure(file, file_len, &mut buf, &mut buf_start, position, total)? {
            out.stop = ScanStop::Torn { position, reason: "batch cut short".into() };
            break;
        }
        let at = (position - buf_start) as usize;
        let problem = match strata_batch::validate(&buf[at..at + total]) {
            Err(err) => Some(err.to_string()),
            Ok(h) if h.base_offset < 0 || h.base_offset as u64 != out.next_offset.0 => {
                Some(format!("base offset {} where {} was expected", h.base_offset, out.next_offset))
            }
            Ok(h) if h.partition_leader_epoch < 0 => Some("negative term".into()),
            Ok(h) if out.last_term.is_some_and(|t| (h.partition_leader_epoch as u64) < t.0) => {
                Some("term goes backwards".into())
            }
            Ok(h) => {
                out.max_timestamp = out.max_timestamp.max(h.max_timestamp);
                out.entries.push(IndexEntry {
                    position,
                    base_offset: out.next_offset,
                    term: Term(h.partition_leader_epoch as u64),
                    max_timestamp_so_far: out.max_timestamp,
                });
                out.last_term = Some(Term(h.partition_leader_epoch as u64));
                out.next_offset = Offset(out.next_offset.0 + h.n_offsets());
                None
            }
        };
        if let Some(reason) = problem {
            // A valid batch right after a bad one means damage in place, not a
            // write torn by a crash (which leaves nothing valid behind it).
            let next = position + total as u64;
            let followed_by_valid = next < file_len && batch_at_is_valid(file, file_len, next)?;
            out.stop = if followed_by_valid {
                ScanStop::Corrupt { position, reason }
            } else {
                ScanStop::Torn { position, reason }
            };
            break;
        }
        position += total as u64;
        out.valid_len = position;
    }
    if let ScanStop::Torn { position, .. } = out.stop {
        if zeroes_from(file, file_len, position)? {
            out.stop = ScanStop::Zeroes { position };
        }
    }
    Ok(out)
}

/// Whether the file holds only zeroes from `position` to its end.
fn zeroes_from(file: &dyn File, file_len: u64, mut position: u64) -> Result<bool> {
    let mut buf = vec![0u8; SCAN_CHUNK_BYTES.min((file_len - position) as usize)];
    while position < file_len {
        let n = buf.len().min((file_len - position) as usize);
        file.read_exact_at(&mut buf[..n], position).map_err(LogError::io(|| "read segment while scanning"))?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        position += n as u64;
    }
    Ok(true)
}

fn batch_at_is_valid(file: &dyn File, file_len: u64, position: u64) -> Result<bool> {
    let mut header = [0u8; 12];
    if file_len - position < 12 {
        return Ok(false);
    }
    file.read_exact_at(&mut header, position).map_err(LogError::io(|| "read segment while scanning"))?;
    let Ok(total) = strata_batch::batch_total_len(&header) else { return Ok(false) };
    if file_len - position < total as u64 {
        return Ok(false);
    }
    let mut batch = vec![0u8; total];
    file.read_exact_at(&mut batch, position).map_err(LogError::io(|| "read segment while scanning"))?;
    Ok(strata_batch::validate(&batch).is_ok())
}

/// Makes `buf` hold file bytes `[position, position + len)`, reading ahead in
/// large chunks. Returns false if the file ends first.
fn ensure(
    file: &dyn File,
    file_len: u64,
    buf: &mut Vec<u8>,
    buf_start: &mut u64,
    position: u64,
    len: usize,
) -> Result<bool> {
    if position + len as u64 > file_len {
        return Ok(false);
    }
    let have_end = *buf_start + buf.len() as u64;
    if position >= *buf_start && position + len as u64 <= have_end {
        return Ok(true);
    }
    let read_len = (len.max(SCAN_CHUNK_BYTES) as u64).min(file_len - position) as usize;
    buf.resize(read_len, 0);
    file.read_exact_at(buf, position).map_err(LogError::io(|| "read segment while scanning"))?;
    *buf_start = position;
    Ok(true)
}
