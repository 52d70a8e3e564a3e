//! `strata-log`: the storage engine of one partition — a segmented,
//! memory-mapped, append-only log of Kafka RecordBatch v2 batches that is
//! also the partition's Raft log.
//!
//! Model:
//! - Every entry is one batch, written once, and takes one Raft index. Data
//!   batches take offsets (assigned at append from the previous entry, so
//!   every replica computes the same); control batches (Raft's blank and
//!   membership entries) take none and are never returned by offset reads.
//! - A log is a directory of segments (`<first index>-<first offset>.log`
//!   plus an `.index` once sealed) and a `meta` file (vote, committed,
//!   purged). See `docs/log-format.md` for the bytes.
//! - Appends go to the active segment with `pwrite` and are readable at once;
//!   durability comes from [`Flusher`] (group commit) or [`Log::sync`].
//! - Sealed segments are read through `mmap` as `Bytes` slices owning the map.
//!
//! **Architecture Invariant:** this crate is synchronous and depends on no
//! async runtime, no openraft and no protobuf type. All file access goes
//! through the [`io`] seam; `unsafe` lives only in `io::mmap`,
//! `io::fallocate`, `io::arena` and `io::pread`.
mod compact;
mod config;
mod error;
mod flush;
mod index;
pub mod io;
pub mod limits;
mod log;
mod meta;
pub mod plan;
mod segment;
pub mod stats;
mod types;

pub use compact::{Compaction, CompactionStats};
pub use config::{FlushPolicy, LogConfig};
pub use error::{ErrorKind, LogError, Result};
pub use flush::{FlushCallback, Flusher};
pub use log::Log;
pub use meta::Meta;
pub use types::{Appended, Entry, LogId, LogState, Offset, OffsetRead, RaftIndex, Term};
