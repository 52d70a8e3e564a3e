//! Every bound of the storage engine, in one place, with the relations
//! between them checked at compile time.

/// Largest batch the log accepts (a topic's `max.message.bytes` is lower).
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Largest segment data file. Positions in the index are u64, but a segment
/// is mapped whole, so it must stay well within the address space.
pub const SEGMENT_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;
/// Smallest segment, so a roll cannot happen on every append.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;
/// Entries the active segment may hold; its index lives in memory until the
/// segment is sealed, so this bounds that memory (32 bytes per entry).
pub const SEGMENT_ENTRIES_MAX: usize = 4 * 1024 * 1024;
/// Largest opaque vote the metadata file stores.
pub const VOTE_BYTES_MAX: usize = 256;
/// Pending flush requests one log may queue before `flush` fails, bounding
/// the callbacks held in memory.
pub const FLUSH_WAITERS_MAX: usize = 1 << 20;
/// Largest tail cache a log may keep ([`crate::LogConfig::tail_cache_bytes`]).
pub const TAIL_CACHE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Bytes a log's tail cache keeps past its budget for entries the state
/// machine has not applied yet ([`crate::Log::hold_cache_from`]): enough
/// for a producer's full window on a partition (ten batches of 1 MiB) with
/// room to spare, while a state machine that stopped applying cannot make a
/// partition hold more than this.
pub const TAIL_CACHE_HELD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest headroom an active segment keeps allocated ahead of its end
/// ([`crate::LogConfig::preallocate_bytes`]).
pub const PREALLOCATE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Bytes an active segment must hold before it gets any headroom, so a
/// partition that sees a few small writes never costs a preallocation.
pub const PREALLOCATE_AFTER_BYTES: u64 = 64 * 1024;
/// Smallest batch [`crate::Log::append_verified`] writes and keeps without
/// copying it (when it is already stamped): below it, one copy into the
/// call's buffer costs less than a `pwrite` of its own.
pub const ZERO_COPY_BYTES_MIN: usize = 32 * 1024;
/// Threads of a [`crate::Flusher`]: how many logs' `fdatasync`s run at once.
pub const FLUSH_THREADS: usize = 4;
/// Most bytes one read (by index or by offset) returns, whatever budget the
/// caller asks for; the first batch is always returned whole, and it is at
/// most `BATCH_BYTES_MAX`.
pub const READ_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Distinct keys one compaction pass tracks; past it, the pass compacts only
/// the segments scanned so far (bounding the cleaner's memory).
pub const COMPACTION_KEYS_MAX: usize = 4 * 1024 * 1024;

/// Bytes copied per read in the journaled test mode's catch-up of a shadow
/// file (`io::journaled`), bounding that buffer.
pub const JOURNAL_COPY_CHUNK_BYTES: usize = 1024 * 1024;

const _: () = assert!(SEGMENT_BYTES_MIN < SEGMENT_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_MAX as u64 <= SEGMENT_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_MAX <= READ_BYTES_MAX);
const _: () = assert!(TAIL_CACHE_HELD_BYTES_MAX <= TAIL_CACHE_BYTES_MAX);
