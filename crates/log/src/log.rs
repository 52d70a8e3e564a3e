//! [`Log`]: one partition's log, the segments in order, and the operations
//! the Raft layer and the broker call.
//!
//! Concurrency: one writer (the Raft log store) and many readers (fetches,
//! replication). State sits behind an `RwLock`; an append holds the write lock
//! for its `pwrite`, so readers see it as soon as `append` returns. Reads hold
//! the read lock only while they slice maps or copy from the active segment.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use crate::compact::{Compaction, CompactionStats, KeyMap, Rewritten, rewrite_batch};
use crate::config::LogConfig;
use crate::error::{LogError, Result};
use crate::flush::{Durability, FlushCallback, Flusher, FlusherHandle};
use crate::index::IndexEntry;
use crate::io::Dir;
use crate::limits::{BATCH_BYTES_MAX, COMPACTION_KEYS_MAX, READ_BYTES_MAX, SEGMENT_ENTRIES_MAX, ZERO_COPY_BYTES_MIN};
use crate::meta::Meta;
use crate::plan::{ActiveSegment, Retention, SegmentInfo, retention_purge_before, roll_reason};
use crate::segment::{Scan, ScanStop, Segment, index_file_name, parse_data_file_name, scan};
use crate::types::{Appended, Entry, LogId, LogState, Offset, OffsetRead, RaftIndex, Term};

/// Suffixes of temporary files; any found on open are leftovers of an
/// interrupted operation and are removed.
const TEMP_SUFFIXES: [&str; 3] = [".tmp", ".truncating", ".compacting"];

/// A partition log. See the crate docs for the model.
pub struct Log {
    dir: Arc<dyn Dir>,
    config: LogConfig,
    /// The roll limits in force: `config`'s, or what `set_roll_limits` set
    /// since (a topic's segment.bytes / segment.ms changed at runtime).
    /// Segment age in ms, 0 for none.
    segment_bytes: AtomicU64,
    segment_age_ms: AtomicU64,
    inner: RwLock<Inner>,
    durability: Arc<Durability>,
    flusher: FlusherHandle,
    /// The first damage a read found in stored bytes (see [`Log::damage`]).
    damage: std::sync::OnceLock<String>,
    /// The first Raft index still to be read soon (not applied yet, or on a
    /// leader not yet on a close follower), as last told by
    /// [`Log::hold_cache_from`] (`u64::MAX`: never told; nothing is held).
    held_from: AtomicU64,
}

struct Inner {
    /// Never empty; the last one is the active segment.
    segments: Vec<Segment>,
    meta: Meta,
    /// The first offset readable, as the owner last raised it (records
    /// deleted below it, Kafka's DeleteRecords); kept in the owner's
    /// replicated state, not here, and set again on each open.
    start_floor: Offset,
}

impl Inner {
    /// Lets the newest sealed segment's tail cache go once every entry in
    /// it is applied (`held_from` is past its end).
    fn release_applied_cache(&mut self, held_from: u64) {
        let n = self.segments.len();
        if n >= 2 && self.segments[n - 2].cache_start().is_some() && held_from >= self.segments[n - 2].end_index().0 {
            self.segments[n - 2].release_cache();
        }
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has an active segment")
    }

    fn first_index(&self) -> RaftIndex {
        let first = self.segments[0].base_index;
        match self.meta.last_purged {
            Some((id, _)) => first.max(id.index.next()),
            None => first,
        }
    }

    /// One past the last stored index.
    fn end_index(&self) -> RaftIndex {
        self.active().end_index()
    }

    fn last_entry_id(&self) -> Option<LogId> {
        let first = self.first_index();
        self.segments
            .iter()
            .rev()
            .find(|s| s.n_entries() > 0 && s.end_index() > first)
            .and_then(|s| s.entries.last().map(|e| LogId { term: e.term, index: RaftIndex(s.end_index().0 - 1) }))
    }

    /// The segment holding `index`, if stored.
    fn segment_of(&self, index: RaftIndex) -> Option<usize> {
        if index < self.first_index() || index >= self.end_index() {
            return None;
        }
        let i = self.segments.partition_point(|s| s.base_index <= index);
        (i > 0).then(|| i - 1).filter(|&i| index < self.segments[i].end_index())
    }

    fn entry_at(&self, index: RaftIndex) -> Option<(usize, usize, IndexEntry)> {
        let s = self.segment_of(index)?;
        let ordinal = (index.0 - self.segments[s].base_index.0) as usize;
        Some((s, ordinal, self.segments[s].entries.get(ordinal)))
    }

    fn log_start_offset(&self) -> Offset {
        let stored = match self.entry_at(self.first_index()) {
            Some((_, _, e)) => e.base_offset,
            None => self.active().next_offset,
        };
        stored.max(self.start_floor.min(self.active().next_offset))
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering from any crash: a torn
    /// tail is cut off, damaged or missing index files are rebuilt, leftovers
    /// of interrupted operations are removed. Syncs go to `flusher`'s thread,
    /// or are made inline when it is `None`.
    pub fn open(dir: Arc<dyn Dir>, config: LogConfig, flusher: Option<&Flusher>) -> Result<Log> {
        config.validate()?;
        let meta = Meta::load(dir.as_ref())?;
        let segments = recover_segments(dir.as_ref(), &meta)?;
        let inner = Inner { segments, meta, start_floor: Offset(0) };
        let appended = inner.last_entry_id().map(|id| id.index);
        let durability = Arc::new(Durability::new(dir.clone(), config.flush_policy, appended));
        let flusher = flusher.map_or_else(FlusherHandle::inline, Flusher::handle);
        let segment_bytes = AtomicU64::new(config.segment_bytes);
        let segment_age_ms = AtomicU64::new(config.segment_age_max.map_or(0, |d| d.as_millis().max(1) as u64));
        Ok(Log {
            dir,
            config,
            segment_bytes,
            segment_age_ms,
            inner: RwLock::new(inner),
            durability,
            flusher,
            damage: std::sync::OnceLock::new(),
            held_from: AtomicU64::new(u64::MAX),
        })
    }

    /// The damage a read of this log found in its stored bytes since it was
    /// opened, if any: a sealed segment's bytes are CRC-checked on first read,
    /// so damage can surface long after `open`. A replica whose log is
    /// damaged must not serve or vote on it any more; the node rebuilds it
    /// from the other replicas.
    pub fn damage(&self) -> Option<String> {
        self.damage.get().cloned()
    }

    /// Remembers `err` if it reports damage, and returns it.
    fn note(&self, err: LogError) -> LogError {
        if err.kind() == crate::ErrorKind::Corrupt {
            let _ = self.damage.set(err.to_string());
        }
        err
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one batch in `term`; see [`Log::append_many`].
    pub fn append(&self, batch: &[u8], term: Term) -> Result<Appended> {
        let appended = self.append_many(&[(batch, term)])?;
        Ok(appended[0])
    }

    /// Appends batches, each validated (length, magic, CRC) and stamped with
    /// its base offset and term. They are visible to readers when this
    /// returns and durable once a later [`Log::flush`] reports so. All the
    /// batches are checked before any is written: on invalid input nothing
    /// is. On an I/O error some may have been written; the log is then
    /// poisoned (refuses writes) until reopened, which recovers a valid log.
    pub fn append_many(&self, batches: &[(&[u8], Term)]) -> Result<Vec<Appended>> {
        let result = self.append_inner(batches, Check::Crc);
        self.poison(result)
    }

    /// [`Log::append_many`] for batches whose CRC the caller has checked in
    /// this process (`strata_batch::validate`): everything else is checked
    /// as there, the CRC is not computed again. A batch of at least
    /// [`ZERO_COPY_BYTES_MIN`] that already carries the base offset and term
    /// it gets here (a follower's copy of what its leader stamped) is
    /// written and kept as it is, without a copy.
    pub fn append_verified(&self, batches: &[(Bytes, Term)]) -> Result<Vec<Appended>> {
        let result = self.append_inner(batches, Check::Structure);
        self.poison(result)
    }

    fn append_inner<B: Source>(&self, batches: &[(B, Term)], check: Check) -> Result<Vec<Appended>> {
        let mut inner = self.write();
        self.check_not_poisoned()?;
        inner.release_applied_cache(self.held_from.load(Ordering::Relaxed));
        // Check everything first, and find the batches written as they are.
        let mut last_term = inner.last_entry_id().map(|id| id.term).unwrap_or_default();
        let mut next_offset = inner.active().next_offset.0;
        let mut headers = Vec::with_capacity(batches.len());
        let mut copied_bytes = 0;
        for (batch, term) in batches {
            let bytes = batch.bytes();
            if bytes.len() > BATCH_BYTES_MAX {
                return Err(LogError::InvalidArgument(format!(
                    "batch of {} bytes exceeds the {BATCH_BYTES_MAX}-byte limit",
                    bytes.len()
                )));
            }
            let header = match check {
                Check::Crc => strata_batch::validate(bytes)?,
                Check::Structure => strata_batch::validate_structure(bytes)?,
            };
            if *term < last_term {
                return Err(LogError::InvalidArgument(format!("term {term} is below the log's last term {last_term}")));
            }
            if term.0 > i32::MAX as u64 {
                return Err(LogError::InvalidArgument(format!("term {term} does not fit the leader epoch field")));
            }
            last_term = *term;
            let as_is = batch.shared().is_some()
                && bytes.len() >= ZERO_COPY_BYTES_MIN
                && header.base_offset == next_offset as i64
                && header.partition_leader_epoch == term.0 as i32;
            if !as_is {
                copied_bytes += bytes.len();
            }
            next_offset += header.n_offsets();
            headers.push((header, as_is));
        }
        let mut out = Vec::with_capacity(batches.len());
        let mut pending: Vec<(usize, IndexEntry, u64, i64)> = Vec::new();
        // What goes to the active segment, in order: batches written as they
        // are, and the copies stamped into `buf`, each run of them frozen
        // into a piece of its own (once written, the tail cache keeps it).
        let mut pieces: Vec<Bytes> = Vec::new();
        // When every batch is copied, `buf` is the file's staging memory,
        // which it can write out without copying them again; else a fresh
        // buffer.
        let staged_at = (copied_bytes > 0 && headers.iter().all(|(_, as_is)| !as_is)).then(|| inner.active().data_len);
        let mut buf = staged_at
            .and_then(|at| inner.active().file.staging(at, copied_bytes))
            .unwrap_or_else(|| bytes::BytesMut::with_capacity(copied_bytes));
        let mut pending_bytes = 0u64;
        let mut result = Ok(());
        for ((batch, term), (header, as_is)) in batches.iter().zip(&headers) {
            let bytes = batch.bytes();
            let active = inner.active();
            let incoming = pending_bytes + bytes.len() as u64;
            let roll = roll_reason(
                ActiveSegment {
                    size_bytes: active.data_len,
                    n_entries: active.n_entries() + pending.len(),
                    age: active.first_append_at.map(|t| t.elapsed()),
                },
                incoming,
                self.segment_bytes.load(Ordering::Relaxed),
                match self.segment_age_ms.load(Ordering::Relaxed) {
                    0 => None,
                    ms => Some(std::time::Duration::from_millis(ms)),
                },
                SEGMENT_ENTRIES_MAX,
            );
            if let Some(reason) = roll {
                take_buffer(&mut pieces, &mut buf);
                if let Err(err) = self.write_pending(&mut inner, &pieces, &pending) {
                    result = Err(err);
                    break;
                }
                pieces.clear();
                pending.clear();
                pending_bytes = 0;
                tracing::debug!(?reason, segment = %inner.active().name, "rolling segment");
                if let Err(err) = self.roll(&mut inner) {
                    result = Err(err);
                    break;
                }
            }
            let active = inner.active();
            let index = RaftIndex(active.end_index().0 + pending.len() as u64);
            let base_offset = match pending.last() {
                Some((_, e, n, _)) => Offset(e.base_offset.0 + n),
                None => active.next_offset,
            };
            match batch.shared().filter(|_| *as_is) {
                Some(shared) => {
                    debug_assert_eq!(header.base_offset, base_offset.0 as i64, "stamped as it will be");
                    take_buffer(&mut pieces, &mut buf);
                    pieces.push(shared.clone());
                }
                None => {
                    let start = buf.len();
                    buf.extend_from_slice(bytes);
                    strata_batch::stamp(&mut buf[start..], base_offset.0 as i64, term.0 as i32);
                }
            }
            let n_offsets = header.n_offsets();
            let entry = IndexEntry { position: 0, base_offset, term: *term, max_timestamp_so_far: 0 };
            pending.push((bytes.len(), entry, n_offsets, header.max_timestamp));
            pending_bytes += bytes.len() as u64;
            out.push(Appended { index, base_offset, n_offsets });
        }
        if result.is_ok() {
            take_buffer(&mut pieces, &mut buf);
            result = self.write_pending(&mut inner, &pieces, &pending);
        }
        if result.is_ok() && staged_at.is_some() && buf.capacity() > 0 {
            // The rest, for the next append to continue in (the file keeps it
            // only if it is its own and the data still ends where it starts).
            let active = inner.active();
            active.file.keep_staging(buf, active.data_len);
        }
        result.map(|()| out)
    }

    fn write_pending(
        &self,
        inner: &mut Inner,
        pieces: &[Bytes],
        pending: &[(usize, IndexEntry, u64, i64)],
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let held_from = RaftIndex(self.held_from.load(Ordering::Relaxed));
        let active = inner.segments.last_mut().expect("a log always has an active segment");
        active.append(pieces, pending, self.config.tail_cache_bytes, held_from)?;
        if matches!(self.durability.policy(), crate::FlushPolicy::Interval(_)) {
            // Reported durable at once: at least the page cache must have it,
            // as after a plain `pwrite`, so that only a crash of the machine
            // can lose it (a direct file would otherwise hold it until the
            // interval's sync).
            active.file.write_out().map_err(LogError::io(|| format!("write out segment {}", active.name)))?;
        }
        active.preallocate(self.config.preallocate_bytes, self.segment_bytes.load(Ordering::Relaxed));
        self.durability.note_append(&active.file, RaftIndex(active.end_index().0 - 1));
        Ok(())
    }

    /// Seals the active segment and starts a new one.
    ///
    /// The old segment's data is synced first, so a segment that is not the
    /// last one is always whole on disk: recovery can then treat any damage
    /// in it as corruption, never as a torn write. One fdatasync per segment
    /// (every `segment_bytes`) is the price.
    fn roll(&self, inner: &mut Inner) -> Result<()> {
        let active = inner.segments.last_mut().expect("a log always has an active segment");
        active.cut_headroom()?;
        active.file.sync_data().map_err(LogError::io(|| format!("sync segment {} before rolling", active.name)))?;
        let (base_index, base_offset) = (active.end_index(), active.next_offset);
        let segment = Segment::new_active(self.dir.as_ref(), base_index, base_offset)?;
        let index_file = active.seal(self.dir.as_ref())?;
        // The sealed segment keeps its tail cache while entries in it are
        // still to be applied; only the newest sealed segment keeps one.
        if self.held_from.load(Ordering::Relaxed) >= base_index.0 {
            active.release_cache();
        }
        let n = inner.segments.len();
        if n >= 2 {
            inner.segments[n - 2].release_cache();
        }
        inner.segments.push(segment);
        // The new segment's name and the index file become durable with the
        // next group commit, off the append path.
        let mut durability = self.durability.lock();
        durability.dir_dirty = true;
        durability.dirty_files.extend(index_file);
        Ok(())
    }

    /// Refuses further writes after a failed one: what is on disk past the
    /// last good state is unknown until recovery (reopening) sorts it out.
    /// Queued flush callbacks get the error. Call without the log's lock
    /// held: callbacks run here.
    fn poison<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(err) = &result {
            if matches!(err.kind(), crate::ErrorKind::Io | crate::ErrorKind::Corrupt) {
                self.durability.poison(err.to_string());
            }
        }
        self.durability.deliver();
        result
    }

    fn check_not_poisoned(&self) -> Result<()> {
        match &self.durability.lock().poisoned {
            Some(reason) => Err(LogError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Asks for everything appended so far to be made durable; `on_durable`
    /// runs once it is (usually on the flusher thread; on whichever thread is
    /// delivering callbacks), in append order with every other callback of
    /// this log, with no lock held, so it may call back into the log. Under [`crate::FlushPolicy::Interval`] it
    /// runs at once.
    pub fn flush(&self, on_durable: FlushCallback) {
        self.flusher.request(&self.durability, on_durable);
    }

    /// Drops the copy of the latest appends kept for readers
    /// ([`LogConfig::tail_cache_bytes`]): for a partition gone idle, whose
    /// tail nobody is about to read.
    pub fn release_cache(&self) {
        let mut inner = self.write();
        let n = inner.segments.len();
        for segment in &mut inner.segments[n.saturating_sub(2)..] {
            segment.release_cache();
        }
    }

    /// Tells the log that entries from `index` on are still to be read soon
    /// (the Raft layer passes the first not applied, or on a leader what a
    /// close follower still lacks, if lower): the tail cache keeps
    /// them past its budget (up to [`crate::limits::TAIL_CACHE_HELD_BYTES_MAX`]),
    /// across a roll too, so applying them never reads the device. The
    /// latest call counts; a log never told holds nothing past its budget.
    pub fn hold_cache_from(&self, index: RaftIndex) {
        self.held_from.store(index.0, Ordering::Relaxed);
    }

    /// Makes everything appended so far durable before returning.
    pub fn sync(&self) -> Result<()> {
        self.durability.sync_now()
    }

    /// The highest index known durable.
    pub fn durable_index(&self) -> Option<RaftIndex> {
        self.durability.lock().durable
    }

    /// Entries `range` by Raft index, stopping early once `max_bytes` is
    /// reached (at least one entry is returned when the range is not empty).
    pub fn entries(&self, range: Range<RaftIndex>, max_bytes: usize) -> Result<Vec<Entry>> {
        let max_bytes = max_bytes.min(READ_BYTES_MAX);
        let inner = self.read();
        let (first, end) = (inner.first_index(), inner.end_index());
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        if range.start < first || range.end > end {
            let index = if range.start < first { range.start } else { range.end };
            return Err(LogError::IndexOutOfRange { index, first, last_plus_one: end });
        }
        let mut out = Vec::new();
        let mut n_bytes = 0usize;
        let mut index = range.start;
        while index < range.end {
            let (s, ordinal, _) = inner.entry_at(index).expect("checked in range");
            let segment = &inner.segments[s];
            let (a, b) = segment.entry_span(ordinal);
            if !out.is_empty() && n_bytes + (b - a) as usize > max_bytes {
                break;
            }
            // One read (or map slice) for the run in this segment.
            let last_ordinal = ((range.end.0 - segment.base_index.0) as usize).min(segment.n_entries());
            let mut stop = ordinal + 1;
            let mut budget = n_bytes + (segment.entry_span(ordinal).1 - segment.entry_span(ordinal).0) as usize;
            while stop < last_ordinal {
                let (a, b) = segment.entry_span(stop);
                if budget + (b - a) as usize > max_bytes {
                    break;
                }
                budget += (b - a) as usize;
                stop += 1;
            }
            let start_pos = segment.entry_span(ordinal).0;
            let end_pos = segment.entry_span(stop - 1).1;
            // Entries the tail cache holds are slices of the appends that
            // wrote them (the cache starts at an entry's start); the rest
            // come from one read.
            let cached_from = segment.cache_start().map_or(end_pos, |c| c.clamp(start_pos, end_pos));
            let read = match cached_from > start_pos {
                true => segment.read_range(start_pos, cached_from).map_err(|e| self.note(e))?,
                false => Bytes::new(),
            };
            for i in ordinal..stop {
                let (a, b) = segment.entry_span(i);
                let e = segment.entries.get(i);
                let batch = if a >= cached_from {
                    match segment.cached_slice(a, b) {
                        Some(bytes) => bytes,
                        None => segment.read_range(a, b).map_err(|e| self.note(e))?,
                    }
                } else {
                    read.slice((a - start_pos) as usize..(b - start_pos) as usize)
                };
                out.push(Entry {
                    index: RaftIndex(segment.base_index.0 + i as u64),
                    term: e.term,
                    base_offset: e.base_offset,
                    batch,
                });
            }
            n_bytes = budget;
            index = RaftIndex(segment.base_index.0 + stop as u64);
            if n_bytes >= max_bytes || stop < last_ordinal {
                break;
            }
        }
        Ok(out)
    }

    /// Reads data batches from the one holding offset `from`, whole batches
    /// only, none holding an offset at or above `upper` (the high watermark),
    /// and stops once `max_bytes` is reached; the first batch is returned even
    /// when larger, so a reader always makes progress. Control entries are
    /// never returned.
    pub fn read_offsets(&self, from: Offset, max_bytes: usize, upper: Offset) -> Result<OffsetRead> {
        let max_bytes = max_bytes.min(READ_BYTES_MAX);
        let inner = self.read();
        let (log_start, log_end) = (inner.log_start_offset(), inner.active().next_offset);
        if from < log_start || from > log_end {
            return Err(LogError::OffsetOutOfRange { offset: from, log_start, log_end });
        }
        let mut out = OffsetRead { chunks: Vec::new(), next_offset: from, n_bytes: 0 };
        let upper = upper.min(log_end);
        if from >= upper {
            return Ok(out);
        }
        let first_index = inner.first_index();
        // Segments whose offsets reach past `from`.
        let mut s = inner.segments.partition_point(|seg| seg.base_offset <= from).saturating_sub(1);
        while s < inner.segments.len() {
            let segment = &inner.segments[s];
            s += 1;
            if segment.next_offset <= from || segment.n_entries() == 0 {
                continue;
            }
            let mut i = segment.entries.partition_point_le(from.0, |e| e.base_offset.0).unwrap_or(0);
            let min_ordinal = first_index.0.saturating_sub(segment.base_index.0) as usize;
            i = i.max(min_ordinal);
            let mut run: Option<(u64, u64)> = None;
            let mut done = false;
            while i < segment.n_entries() {
                let entry = segment.entries.get(i);
                let n_offsets = segment.entry_n_offsets(i);
                let (a, b) = segment.entry_span(i);
                i += 1;
                if n_offsets == 0 || entry.base_offset.0 + n_offsets <= from.0 {
                    // A control entry, or data wholly before `from`: cut here.
                    if let Some((ra, rb)) = run.take() {
                        out.chunks.push(segment.read_range(ra, rb).map_err(|e| self.note(e))?);
                    }
                    continue;
                }
                let size = (b - a) as usize;
                if entry.base_offset.0 + n_offsets > upper.0 || (out.n_bytes > 0 && out.n_bytes + size > max_bytes) {
                    done = true;
                    break;
                }
                run = Some(match run {
                    Some((ra, _)) => (ra, b),
                    None => (a, b),
                });
                out.n_bytes += size;
                out.next_offset = Offset(entry.base_offset.0 + n_offsets);
                if out.n_bytes >= max_bytes {
                    done = true;
                    break;
                }
            }
            if let Some((ra, rb)) = run.take() {
                out.chunks.push(segment.read_range(ra, rb).map_err(|e| self.note(e))?);
            }
            if done {
                break;
            }
        }
        Ok(out)
    }

    /// The first offset of the first batch whose records reach timestamp
    /// `timestamp_ms` (batch granularity, as the index keeps the largest
    /// timestamp so far), or `None` when no stored record is that recent.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Option<Offset> {
        let inner = self.read();
        let first_index = inner.first_index();
        for segment in &inner.segments {
            if segment.max_timestamp < timestamp_ms || segment.end_index() <= first_index {
                continue;
            }
            let i = segment.entries.first_with_max_timestamp_at_least(timestamp_ms)?;
            let min_ordinal = first_index.0.saturating_sub(segment.base_index.0) as usize;
            let e = segment.entries.get(i.max(min_ordinal));
            return Some(e.base_offset.max(inner.log_start_offset()));
        }
        None
    }

    /// Makes `offset` the first readable one (when it is past the current
    /// start; capped at the next offset): records below it are no longer
    /// read or counted, though the entries holding them stay until purged
    /// ([`Log::index_of_offset`] tells up to where). Not stored: the owner
    /// keeps it and sets it again after each open.
    pub fn raise_log_start_offset(&self, offset: Offset) {
        let mut inner = self.write();
        inner.start_floor = inner.start_floor.max(offset);
    }

    /// The index of the first entry that holds `offset` or a later one (the
    /// entries before it hold only lower offsets, and may be purged when
    /// the records below `offset` are deleted); the end index when none is
    /// stored.
    pub fn index_of_offset(&self, offset: Offset) -> RaftIndex {
        let inner = self.read();
        let first_index = inner.first_index();
        for segment in &inner.segments {
            if segment.next_offset <= offset || segment.end_index() <= first_index || segment.n_entries() == 0 {
                continue;
            }
            let min_ordinal = first_index.0.saturating_sub(segment.base_index.0) as usize;
            let from = segment.entries.partition_point_le(offset.0, |e| e.base_offset.0).unwrap_or(0);
            for i in from.max(min_ordinal)..segment.n_entries() {
                let n_offsets = segment.entry_n_offsets(i);
                if n_offsets > 0 && segment.entries.get(i).base_offset.0 + n_offsets > offset.0 {
                    return RaftIndex(segment.base_index.0 + i as u64);
                }
            }
        }
        inner.end_index()
    }

    /// Removes every entry at or after `index` (Raft's conflict truncation).
    /// Later segments are deleted from the last backwards, then the segment
    /// holding `index` is cut; each step is durable before the next, so a
    /// crash leaves a prefix of the log and never a hole.
    pub fn truncate_from(&self, index: RaftIndex) -> Result<()> {
        self.check_not_poisoned()?;
        let result = self.truncate_from_inner(index);
        self.poison(result)
    }

    fn truncate_from_inner(&self, index: RaftIndex) -> Result<()> {
        let mut inner = self.write();
        let (first, end) = (inner.first_index(), inner.end_index());
        if index < first {
            return Err(LogError::IndexOutOfRange { index, first, last_plus_one: end });
        }
        if index >= end {
            return Ok(());
        }
        // Make what stays durable first, so the reset below reports truth.
        self.durability.sync_and_release()?;
        while inner.segments.len() > 1 && inner.segments.last().is_some_and(|s| s.base_index >= index) {
            let segment = inner.segments.pop().expect("checked non-empty");
            self.remove_segment_files(&segment)?;
            self.dir.sync_dir().map_err(LogError::io(|| "sync directory after removing a segment"))?;
        }
        let last = inner.segments.len() - 1;
        let segment = &mut inner.segments[last];
        let keep = (index.0.saturating_sub(segment.base_index.0)) as usize;
        if keep == segment.n_entries() {
            // A cut exactly at the end of a sealed segment: start a new active one.
            if segment.is_sealed() {
                let (base_index, base_offset) = (segment.end_index(), segment.next_offset);
                let fresh = Segment::new_active(self.dir.as_ref(), base_index, base_offset)?;
                inner.segments.push(fresh);
                self.dir.sync_dir().map_err(LogError::io(|| "sync directory after creating a segment"))?;
            }
        } else {
            self.cut_segment(segment, keep)?;
        }
        let last = inner.last_entry_id().map(|id| id.index);
        self.durability.note_truncated(last);
        Ok(())
    }

    /// Keeps the first `keep` entries of `segment` and makes it the active one.
    fn cut_segment(&self, segment: &mut Segment, keep: usize) -> Result<()> {
        let new_len = segment.entry_span(keep).0;
        let next_offset = segment.entries.get(keep).base_offset;
        let kept: Vec<IndexEntry> = (0..keep).map(|i| segment.entries.get(i)).collect();
        if segment.is_sealed() {
            // Copy-on-truncate: the old inode may be mapped by live readers,
            // so it is never shrunk; the prefix goes to a new file renamed over it.
            let tmp = format!("{}.truncating", segment.name);
            let _ = self.dir.remove(&tmp);
            let file = self.dir.create(&tmp).map_err(LogError::io(|| format!("create {tmp}")))?;
            if new_len > 0 {
                let prefix = segment.read_range(0, new_len).map_err(|e| self.note(e))?;
                file.write_all_at(&prefix, 0).map_err(LogError::io(|| format!("write {tmp}")))?;
            }
            file.sync_data().map_err(LogError::io(|| format!("sync {tmp}")))?;
            let index_name = index_file_name(&segment.name);
            let _ = self.dir.remove(&index_name);
            self.dir.rename(&tmp, &segment.name).map_err(LogError::io(|| format!("rename {tmp}")))?;
            self.dir.sync_dir().map_err(LogError::io(|| "sync directory after truncation"))?;
            let scan = Scan {
                entries: kept,
                valid_len: new_len,
                next_offset,
                max_timestamp: -1,
                last_term: None,
                stop: ScanStop::Clean,
            };
            let mut fresh =
                Segment::from_scan(segment.name.clone(), segment.base_index, segment.base_offset, file, scan);
            fresh.max_timestamp = fresh.entries.last().map_or(-1, |e| e.max_timestamp_so_far);
            *segment = fresh;
        } else {
            segment.cut_cache(new_len);
            segment.file.set_len(new_len).map_err(LogError::io(|| format!("truncate {}", segment.name)))?;
            segment.note_cut(new_len);
            segment.file.sync_data().map_err(LogError::io(|| format!("sync {}", segment.name)))?;
            segment.entries.truncate(keep);
            segment.data_len = new_len;
            segment.next_offset = next_offset;
            segment.max_timestamp = segment.entries.last().map_or(-1, |e| e.max_timestamp_so_far);
        }
        Ok(())
    }

    fn remove_segment_files(&self, segment: &Segment) -> Result<()> {
        self.dir.remove(&segment.name).map_err(LogError::io(|| format!("remove segment {}", segment.name)))?;
        let index_name = index_file_name(&segment.name);
        match self.dir.remove(&index_name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LogError::io(|| format!("remove index {index_name}"))(e)),
        }
    }

    /// Removes entries up to and including `upto` (Raft's purge). The purged
    /// log id is saved first; whole segments below it are then deleted, never
    /// the active one, so some entries at or below `upto` may stay on disk,
    /// hidden.
    pub fn purge_upto(&self, upto: RaftIndex) -> Result<()> {
        self.check_not_poisoned()?;
        let result = self.purge_upto_inner(upto);
        self.poison(result)
    }

    fn purge_upto_inner(&self, upto: RaftIndex) -> Result<()> {
        let mut inner = self.write();
        let (first, end) = (inner.first_index(), inner.end_index());
        if upto < first {
            return Ok(()); // already purged
        }
        if upto >= end {
            return Err(LogError::IndexOutOfRange { index: upto, first, last_plus_one: end });
        }
        let (_, _, entry) = inner.entry_at(upto).expect("checked in range");
        let next_offset = match inner.entry_at(upto.next()) {
            Some((_, _, next)) => next.base_offset,
            None => inner.active().next_offset,
        };
        let mut meta = inner.meta.clone();
        meta.last_purged = Some((LogId { term: entry.term, index: upto }, next_offset));
        meta.store(self.dir.as_ref())?;
        inner.meta = meta;
        let mut n_removed = 0;
        while inner.segments.len() > 1 && inner.segments[0].end_index() <= upto.next() {
            let segment = inner.segments.remove(0);
            self.remove_segment_files(&segment)?;
            n_removed += 1;
        }
        if n_removed > 0 {
            self.dir.sync_dir().map_err(LogError::io(|| "sync directory after purge"))?;
        }
        Ok(())
    }

    /// Moves the start of a log that holds no entries to `next_index`, keeping
    /// its next offset (a Raft log whose first entry arrives at an index past
    /// 0). Nothing is marked purged. The old empty segment is removed before
    /// the new one is created, so a crash between leaves an empty log.
    pub fn rebase_empty(&self, next_index: RaftIndex) -> Result<()> {
        self.check_not_poisoned()?;
        let result = self.rebase_empty_inner(next_index);
        self.poison(result)
    }

    fn rebase_empty_inner(&self, next_index: RaftIndex) -> Result<()> {
        let mut inner = self.write();
        if inner.segments.len() != 1 || inner.active().n_entries() != 0 || next_index < inner.first_index() {
            return Err(LogError::InvalidArgument(format!(
                "rebase to {next_index} needs an empty log starting at or before it"
            )));
        }
        if next_index == inner.active().base_index {
            return Ok(());
        }
        let next_offset = inner.active().next_offset;
        let old = inner.segments.pop().expect("checked one segment");
        self.remove_segment_files(&old)?;
        self.dir.sync_dir().map_err(LogError::io(|| "sync directory after rebase"))?;
        let fresh = Segment::new_active(self.dir.as_ref(), next_index, next_offset)?;
        inner.segments.push(fresh);
        self.dir.sync_dir().map_err(LogError::io(|| "sync directory after rebase"))?;
        Ok(())
    }

    /// Applies time and size retention: plans with
    /// [`crate::plan::retention_purge_before`] (whole sealed segments, never
    /// at or past `boundary`) and purges. Returns the new first index if
    /// anything was purged.
    pub fn apply_retention(&self, now_ms: i64, retention: Retention, boundary: RaftIndex) -> Result<Option<RaftIndex>> {
        let infos = self.segment_infos();
        let first = self.read().first_index();
        match retention_purge_before(&infos, now_ms, retention, boundary) {
            Some(before) if before > first => {
                self.purge_upto(RaftIndex(before.0 - 1))?;
                Ok(Some(before))
            }
            _ => Ok(None),
        }
    }

    /// Replaces the whole log by an empty one that continues after
    /// `last_purged` at `next_offset` (a follower installing a snapshot past
    /// its log; `last_purged` must be at or past the last stored entry).
    /// Crash-safe: the purged id is saved first, then the new segment is
    /// created, then the old segments are removed from the last backwards;
    /// recovery drops segments wholly at or below the purged id.
    pub fn reset(&self, last_purged: LogId, next_offset: Offset) -> Result<()> {
        self.check_not_poisoned()?;
        let result = self.reset_inner(last_purged, next_offset);
        self.poison(result)
    }

    fn reset_inner(&self, last_purged: LogId, next_offset: Offset) -> Result<()> {
        let mut inner = self.write();
        if let Some(last) = inner.last_entry_id() {
            if last_purged.index < last.index {
                return Err(LogError::InvalidArgument(format!(
                    "reset to {} would keep stored entries up to {}; truncate or purge instead",
                    last_purged.index, last.index
                )));
            }
        }
        self.durability.sync_and_release()?;
        let mut meta = inner.meta.clone();
        meta.last_purged = Some((last_purged, next_offset));
        meta.store(self.dir.as_ref())?;
        inner.meta = meta;
        // Resetting twice to the same point finds the new segment there.
        let fresh_name = crate::segment::data_file_name(last_purged.index.next(), next_offset);
        let reuse = inner.segments.iter().position(|s| s.name == fresh_name && s.n_entries() == 0);
        let fresh = match reuse {
            Some(i) => inner.segments.remove(i),
            // Created before the old segments leave the list, so a failure
            // here leaves the log whole (and poisoned), never without segments.
            None => Segment::new_active(self.dir.as_ref(), last_purged.index.next(), next_offset)?,
        };
        let old = std::mem::replace(&mut inner.segments, vec![fresh]);
        self.dir.sync_dir().map_err(LogError::io(|| "sync directory after reset"))?;
        for segment in old.iter().rev() {
            self.remove_segment_files(segment)?;
        }
        self.dir.sync_dir().map_err(LogError::io(|| "sync directory after reset"))?;
        self.durability.note_truncated(Some(last_purged.index));
        Ok(())
    }

    /// The log's extent.
    pub fn state(&self) -> LogState {
        let inner = self.read();
        LogState {
            first_index: inner.first_index(),
            last_log_id: inner.last_entry_id().or(inner.meta.last_purged.map(|(id, _)| id)),
            last_purged: inner.meta.last_purged.map(|(id, _)| id),
            next_offset: inner.active().next_offset,
            log_start_offset: inner.log_start_offset(),
            size_bytes: inner.segments.iter().map(|s| s.data_len).sum(),
            n_segments: inner.segments.len(),
            durable_index: self.durability.lock().durable,
        }
    }

    /// The term of the entry at `index`, if stored (or purged last).
    pub fn term_at(&self, index: RaftIndex) -> Option<Term> {
        let inner = self.read();
        match inner.entry_at(index) {
            Some((_, _, e)) => Some(e.term),
            None => inner.meta.last_purged.filter(|(id, _)| id.index == index).map(|(id, _)| id.term),
        }
    }

    /// Segments, oldest first, for retention planning.
    pub fn segment_infos(&self) -> Vec<SegmentInfo> {
        let inner = self.read();
        inner
            .segments
            .iter()
            .map(|s| SegmentInfo {
                base_index: s.base_index,
                end_index: s.end_index(),
                size_bytes: s.data_len,
                max_timestamp: s.max_timestamp,
                sealed: s.is_sealed(),
            })
            .collect()
    }

    /// The metadata saved with [`Log::save_vote`] and [`Log::save_committed`].
    pub fn meta(&self) -> Meta {
        self.read().meta.clone()
    }

    /// Saves Raft's vote durably (the metadata file is replaced and synced).
    pub fn save_vote(&self, vote: &[u8]) -> Result<()> {
        self.check_not_poisoned()?;
        let result = self.save_vote_inner(vote);
        self.poison(result)
    }

    fn save_vote_inner(&self, vote: &[u8]) -> Result<()> {
        let mut inner = self.write();
        let mut meta = inner.meta.clone();
        meta.vote = vote.to_vec();
        meta.store(self.dir.as_ref())?;
        inner.meta = meta;
        Ok(())
    }

    /// Saves the committed log id durably.
    pub fn save_committed(&self, committed: Option<LogId>) -> Result<()> {
        self.check_not_poisoned()?;
        let result = self.save_committed_inner(committed);
        self.poison(result)
    }

    fn save_committed_inner(&self, committed: Option<LogId>) -> Result<()> {
        let mut inner = self.write();
        let mut meta = inner.meta.clone();
        meta.committed = committed;
        meta.store(self.dir.as_ref())?;
        inner.meta = meta;
        Ok(())
    }

    /// Compacts sealed segments wholly below `compaction.boundary` by key
    /// (see [`Compaction`]). Each rewritten segment is written to a temporary
    /// file, synced, and renamed over the old one, so a crash leaves either
    /// the old or the new segment; readers holding slices of the old map keep
    /// them. Appends go on meanwhile: the log is read-locked while the
    /// candidates are listed and CRC-checked, and write-locked only to swap
    /// each rewritten segment in.
    ///
    /// A failure to write a compacted copy (a full disk, most often) leaves
    /// the log as it was and writable: the copy is removed and the error
    /// returned. A failure while swapping a copy in poisons the log, as any
    /// failed write does.
    pub fn compact(&self, compaction: Compaction) -> Result<CompactionStats> {
        self.check_not_poisoned()?;
        match self.compact_inner(compaction) {
            Err(CompactError::Copy(err)) => {
                self.durability.deliver();
                Err(err)
            }
            Err(CompactError::Log(err)) => self.poison(Err(err)),
            Ok(stats) => self.poison(Ok(stats)),
        }
    }

    fn compact_inner(&self, compaction: Compaction) -> std::result::Result<CompactionStats, CompactError> {
        // 1. The candidates, and their bytes (map slices, CRC-checked).
        let candidates: Vec<Candidate> = {
            let inner = self.read();
            let mut out = Vec::new();
            for segment in &inner.segments {
                if !segment.is_sealed() || segment.end_index() > compaction.boundary || segment.n_entries() == 0 {
                    break;
                }
                let bytes = segment.read_range(0, segment.data_len).map_err(|e| self.note(e))?;
                let spans = (0..segment.n_entries()).map(|i| segment.entry_span(i)).collect();
                out.push(Candidate {
                    name: segment.name.clone(),
                    base_index: segment.base_index,
                    n_entries: segment.n_entries(),
                    bytes,
                    spans,
                });
            }
            out
        };
        // 2. Latest offset per key, over as many segments as the bound allows.
        let mut map = KeyMap::default();
        let mut n_mapped = 0;
        for Candidate { bytes, spans, .. } in &candidates {
            for &(a, b) in spans {
                map.add_batch(&bytes.slice(a as usize..b as usize))?;
            }
            n_mapped += 1;
            if map.len() >= COMPACTION_KEYS_MAX {
                break;
            }
        }
        // 3. Rewrite each segment that has something to drop, and swap it in.
        let mut stats = CompactionStats::default();
        for Candidate { name, base_index, n_entries, bytes, spans } in candidates.into_iter().take(n_mapped) {
            let mut out = Vec::with_capacity(bytes.len());
            let mut n_removed = 0;
            let mut n_kept = 0;
            let mut positions = Vec::with_capacity(spans.len());
            for &(a, b) in &spans {
                positions.push(out.len() as u64);
                let batch = bytes.slice(a as usize..b as usize);
                match rewrite_batch(&batch, &map, &compaction)? {
                    Rewritten::Unchanged { n_records } => {
                        n_kept += n_records;
                        out.extend_from_slice(&batch);
                    }
                    Rewritten::Changed { batch, n_kept: k, n_removed: r } => {
                        n_kept += k;
                        n_removed += r;
                        out.extend_from_slice(&batch);
                    }
                }
            }
            if n_removed == 0 {
                continue;
            }
            if self.swap_compacted(&name, base_index, n_entries, &out, &positions)? {
                stats.n_segments_rewritten += 1;
                stats.n_records_kept += n_kept;
                stats.n_records_removed += n_removed;
                stats.bytes_before += bytes.len() as u64;
                stats.bytes_after += out.len() as u64;
            }
        }
        Ok(stats)
    }

    /// Writes a compacted segment next to the old one and renames it over,
    /// if the old one is still there unchanged. Returns whether it swapped.
    fn swap_compacted(
        &self,
        name: &str,
        base_index: RaftIndex,
        n_entries: usize,
        data: &[u8],
        positions: &[u64],
    ) -> std::result::Result<bool, CompactError> {
        let tmp = format!("{name}.compacting");
        let _ = self.dir.remove(&tmp);
        let copy = || -> Result<Arc<dyn crate::io::File>> {
            let file = self.dir.create(&tmp).map_err(LogError::io(|| format!("create {tmp}")))?;
            file.write_all_at(data, 0).map_err(LogError::io(|| format!("write {tmp}")))?;
            file.sync_data().map_err(LogError::io(|| format!("sync {tmp}")))?;
            Ok(file)
        };
        // Nothing of the log has changed yet: a copy that cannot be written
        // is given up, and its space back.
        let file = copy().map_err(|err| {
            let _ = self.dir.remove(&tmp);
            CompactError::Copy(err)
        })?;
        let mut inner = self.write();
        let Some(slot) = inner.segments.iter().position(|s| s.name == name && s.base_index == base_index) else {
            // Purged or truncated meanwhile.
            let _ = self.dir.remove(&tmp);
            return Ok(false);
        };
        let old = &inner.segments[slot];
        if !old.is_sealed() || old.n_entries() != n_entries {
            let _ = self.dir.remove(&tmp);
            return Ok(false);
        }
        let entries: Vec<IndexEntry> =
            (0..n_entries).map(|i| IndexEntry { position: positions[i], ..old.entries.get(i) }).collect();
        let scan = Scan {
            entries,
            valid_len: data.len() as u64,
            next_offset: old.next_offset,
            max_timestamp: old.max_timestamp,
            last_term: old.last_term(),
            stop: ScanStop::Clean,
        };
        let (base_offset, old_name) = (old.base_offset, old.name.clone());
        // Old index first: between the two renames a crash must not pair
        // the new data with the old index.
        let index_name = index_file_name(&old_name);
        let _ = self.dir.remove(&index_name);
        self.dir.rename(&tmp, &old_name).map_err(LogError::io(|| format!("rename {tmp}")))?;
        let mut segment = Segment::from_scan(old_name, base_index, base_offset, file, scan);
        if let Some(index_file) = segment.seal(self.dir.as_ref())? {
            index_file.sync_data().map_err(LogError::io(|| format!("sync {index_name}")))?;
        }
        self.dir.sync_dir().map_err(LogError::io(|| "sync directory after compaction"))?;
        inner.segments[slot] = segment;
        Ok(true)
    }

    /// Changes when segments roll from now on (a topic's segment.bytes and
    /// segment.ms altered at runtime); checked against the same bounds as
    /// [`LogConfig`].
    pub fn set_roll_limits(&self, segment_bytes: u64, segment_age_max: Option<std::time::Duration>) -> Result<()> {
        LogConfig { segment_bytes, segment_age_max, ..self.config.clone() }.validate()?;
        self.segment_bytes.store(segment_bytes, Ordering::Relaxed);
        self.segment_age_ms.store(segment_age_max.map_or(0, |d| d.as_millis().max(1) as u64), Ordering::Relaxed);
        Ok(())
    }

    /// Changes when appends are reported durable from now on (a topic's
    /// flush.policy altered at runtime).
    pub fn set_flush_policy(&self, policy: crate::FlushPolicy) -> Result<()> {
        LogConfig { flush_policy: policy, ..self.config.clone() }.validate()?;
        self.durability.set_policy(policy);
        Ok(())
    }

    /// The flush policy in force.
    pub fn flush_policy(&self) -> crate::FlushPolicy {
        self.durability.policy()
    }

    /// The configuration the log was opened with (roll limits and flush
    /// policy may have changed since; see the setters).
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
}

/// A sealed segment picked for compaction, with its bytes and entry spans.
struct Candidate {
    name: String,
    base_index: RaftIndex,
    n_entries: usize,
    bytes: Bytes,
    spans: Vec<(u64, u64)>,
}

/// Finds, checks and opens the segments of a partition directory.
///
/// Rules: every segment but the last is whole on disk (a roll syncs it
/// first), so damage there, or a gap or overlap between segments, is
/// corruption and an error naming the file. The last segment may end in a
/// write torn by a crash: a bad batch with nothing valid after it is cut off.
/// Zeroes after the last batch (preallocated space) are cut off in any
/// segment: they hold no data, and the names still prove the segments
/// follow one another.
fn recover_segments(dir: &dyn Dir, meta: &Meta) -> Result<Vec<Segment>> {
    let names = dir.list().map_err(LogError::io(|| "list partition directory"))?;
    let mut data_files = Vec::new();
    let mut index_files = std::collections::HashSet::new();
    for name in &names {
        if TEMP_SUFFIXES.iter().any(|suffix| name.ends_with(suffix)) {
            tracing::info!(file = %name, "removing leftover of an interrupted operation");
            dir.remove(name).map_err(LogError::io(|| format!("remove leftover {name}")))?;
        } else if let Some((base_index, base_offset)) = parse_data_file_name(name) {
            data_files.push((base_index, base_offset, name.clone()));
        } else if name.ends_with(".index") {
            index_files.insert(name.clone());
        }
    }
    data_files.sort();
    for index_name in &index_files {
        let data_name = format!("{}.log", index_name.trim_end_matches(".index"));
        if !data_files.iter().any(|(_, _, n)| *n == data_name) {
            dir.remove(index_name).map_err(LogError::io(|| format!("remove orphan index {index_name}")))?;
        }
    }
    // Finish an interrupted purge or reset: a segment followed by one that
    // starts at or below the first unpurged index holds only purged entries.
    if let Some((purged, next_offset)) = meta.last_purged {
        // Two resets to the same index with different offsets leave two files
        // at purged + 1; the one the metadata names is the right one.
        let wanted = crate::segment::data_file_name(purged.index.next(), next_offset);
        if data_files.iter().any(|(_, _, n)| *n == wanted) {
            let (stale, keep): (Vec<_>, Vec<_>) =
                data_files.into_iter().partition(|(index, _, name)| *index == purged.index.next() && *name != wanted);
            for (_, _, name) in stale {
                tracing::info!(segment = %name, "removing a segment left by an earlier reset");
                dir.remove(&name).map_err(LogError::io(|| format!("remove stale segment {name}")))?;
                let _ = dir.remove(&index_file_name(&name));
            }
            data_files = keep;
        }
        while data_files.len() > 1 && data_files[1].0 <= purged.index.next() {
            let (_, _, name) = data_files.remove(0);
            tracing::info!(segment = %name, "removing a purged segment");
            dir.remove(&name).map_err(LogError::io(|| format!("remove purged segment {name}")))?;
            let _ = dir.remove(&index_file_name(&name));
        }
    }
    let mut segments: Vec<Segment> = Vec::new();
    let n_files = data_files.len();
    for (k, (base_index, base_offset, name)) in data_files.into_iter().enumerate() {
        if let Some(prev) = segments.last() {
            if base_index != prev.end_index() || base_offset != prev.next_offset {
                return Err(LogError::Corrupt {
                    file: name.into(),
                    position: 0,
                    reason: format!(
                        "segment starts at index {base_index} offset {base_offset}, but the previous one ends at index {} offset {}",
                        prev.end_index(),
                        prev.next_offset
                    ),
                });
            }
        }
        let is_last = k + 1 == n_files;
        // Only the last segment is appended to; the others are read (and
        // mapped) only.
        let file = if is_last { dir.open_segment(&name) } else { dir.open(&name) }
            .map_err(LogError::io(|| format!("open segment {name}")))?;
        let file_len = file.len().map_err(LogError::io(|| format!("stat segment {name}")))?;
        let index_name = index_file_name(&name);
        let has_index = index_files.contains(&index_name);
        if !is_last {
            let opened =
                Segment::open_sealed(dir, name.clone(), base_index, base_offset, file.clone(), file_len, has_index)?;
            if let Some(segment) = opened {
                segments.push(segment);
                continue;
            }
        } else if has_index {
            // The active segment keeps its index in memory.
            dir.remove(&index_name).map_err(LogError::io(|| format!("remove index {index_name}")))?;
        }
        let result = scan(file.as_ref(), file_len, base_offset)?;
        match &result.stop {
            ScanStop::Clean => {}
            ScanStop::Zeroes { position } => {
                // Headroom an active segment kept ahead of its data (a roll
                // cuts and syncs a segment before its successor exists, so
                // this is normally the last one): no data, nothing to
                // report.
                tracing::debug!(segment = %name, position, "cutting preallocated space");
                file.set_len(*position).map_err(LogError::io(|| format!("cut preallocated space of {name}")))?;
                file.sync_data().map_err(LogError::io(|| format!("sync {name}")))?;
            }
            ScanStop::Torn { position, reason } if is_last => {
                tracing::warn!(segment = %name, position, %reason, "cutting a torn tail left by a crash");
                file.set_len(*position).map_err(LogError::io(|| format!("truncate torn tail of {name}")))?;
                file.sync_data().map_err(LogError::io(|| format!("sync {name}")))?;
            }
            ScanStop::Torn { position, reason } | ScanStop::Corrupt { position, reason } => {
                return Err(LogError::Corrupt { file: name.into(), position: *position, reason: reason.clone() });
            }
        }
        let mut segment = Segment::from_scan(name, base_index, base_offset, file, result);
        if !is_last {
            if let Some(index_file) = segment.seal(dir)? {
                index_file.sync_data().map_err(LogError::io(|| "sync rebuilt index"))?;
            }
        }
        segments.push(segment);
    }
    if let Some((purged, next_offset)) = meta.last_purged {
        if let Some(first) = segments.first() {
            if first.base_index > purged.index.next() {
                return Err(LogError::Corrupt {
                    file: first.name.clone().into(),
                    position: 0,
                    reason: format!("log starts at {} but only up to {} was purged", first.base_index, purged.index),
                });
            }
        } else {
            segments.push(Segment::new_active(dir, purged.index.next(), next_offset)?);
        }
        // A reset interrupted before its new segment was durable leaves an
        // old last segment holding only purged entries, at the wrong offset
        // or ending before the purged id: replace it.
        let lone_purged = segments.len() == 1
            && (segments[0].end_index() < purged.index.next()
                || (segments[0].end_index() == purged.index.next() && segments[0].next_offset != next_offset));
        if lone_purged {
            let old = segments.remove(0);
            tracing::info!(segment = %old.name, "finishing an interrupted reset");
            dir.remove(&old.name).map_err(LogError::io(|| format!("remove purged segment {}", old.name)))?;
            let _ = dir.remove(&index_file_name(&old.name));
            segments.push(Segment::new_active(dir, purged.index.next(), next_offset)?);
        }
    }
    if segments.is_empty() {
        segments.push(Segment::new_active(dir, RaftIndex(0), Offset(0))?);
    }
    // A crash may have left written but unsynced data in the page cache,
    // which a scan reads as if it were on disk. Sync everything once, so
    // that what the reopened log reports durable is.
    for segment in &segments {
        segment.file.sync_data().map_err(LogError::io(|| format!("sync segment {} on open", segment.name)))?;
    }
    dir.sync_dir().map_err(LogError::io(|| "sync partition directory on open"))?;
    Ok(segments)
}

/// How a compaction failed: writing a compacted copy, before anything of
/// the log changed (the log stays writable), or anywhere else (reading the
/// segments, swapping a copy in: the log is poisoned, as on any failed
/// write, or its damage noted).
enum CompactError {
    Copy(LogError),
    Log(LogError),
}

impl From<LogError> for CompactError {
    fn from(err: LogError) -> CompactError {
        CompactError::Log(err)
    }
}

/// How much of a batch [`Log::append_inner`] checks.
#[derive(Clone, Copy)]
enum Check {
    /// Everything, CRC included ([`Log::append_many`]).
    Crc,
    /// Everything but the CRC, which the caller checked
    /// ([`Log::append_verified`]).
    Structure,
}

/// A batch handed to [`Log::append_inner`]: its bytes, and a shared handle
/// on them when it may be written and kept without a copy.
trait Source {
    fn bytes(&self) -> &[u8];
    fn shared(&self) -> Option<&Bytes>;
}

impl Source for &[u8] {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn shared(&self) -> Option<&Bytes> {
        None
    }
}

impl Source for Bytes {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn shared(&self) -> Option<&Bytes> {
        Some(self)
    }
}

/// Moves what `buf` holds, if anything, to the end of `pieces`.
fn take_buffer(pieces: &mut Vec<Bytes>, buf: &mut bytes::BytesMut) {
    if !buf.is_empty() {
        pieces.push(buf.split().freeze());
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("state", &self.state()).finish()
    }
}

const _: () = {
    const fn check<T: Send + Sync>() {}
    check::<Log>();
};
