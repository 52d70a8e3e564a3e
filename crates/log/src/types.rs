//! Newtypes for the quantities a log juggles, so they cannot be mixed up:
//! a Raft index is not an offset, and a term is neither.

use std::fmt;

macro_rules! newtype_u64 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

newtype_u64!(
    /// Position of an entry in the Raft log; every entry, data or control,
    /// takes exactly one. Dense: no gaps between the first and last index.
    RaftIndex
);
newtype_u64!(
    /// Position of a record in the partition, as consumers see it. Only data
    /// batches take offsets; control entries take none.
    Offset
);
newtype_u64!(
    /// A Raft term; stored in the batch's partition leader epoch field.
    Term
);

impl RaftIndex {
    /// The next index.
    pub fn next(self) -> RaftIndex {
        RaftIndex(self.0 + 1)
    }
}

/// A Raft log id: the index of an entry and the term it was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogId {
    /// Term of the entry.
    pub term: Term,
    /// Index of the entry.
    pub index: RaftIndex,
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Raft index of the entry.
    pub index: RaftIndex,
    /// Offset of the first record (the next offset, for a control entry).
    pub base_offset: Offset,
    /// Offsets the entry took: 0 for a control entry.
    pub n_offsets: u64,
}

/// One stored entry, as read back by Raft index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Raft index.
    pub index: RaftIndex,
    /// Term it was appended in.
    pub term: Term,
    /// Base offset stamped at append.
    pub base_offset: Offset,
    /// The whole batch, stamped, as stored (a slice of the map when sealed).
    pub batch: bytes::Bytes,
}

/// A read by offset: the data batches found, as few contiguous slices as the
/// segments allow (control entries are cut out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetRead {
    /// Whole batches, back to back within each chunk.
    pub chunks: Vec<bytes::Bytes>,
    /// The offset after the last batch returned (where the next read starts).
    pub next_offset: Offset,
    /// Total bytes in `chunks`.
    pub n_bytes: usize,
}

/// A summary of the log's extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogState {
    /// First stored index (== last purged + 1).
    pub first_index: RaftIndex,
    /// Last entry stored, or the last purged id when nothing is stored.
    pub last_log_id: Option<LogId>,
    /// Last purged log id, if any.
    pub last_purged: Option<LogId>,
    /// Offset the next data batch will get.
    pub next_offset: Offset,
    /// First offset still stored.
    pub log_start_offset: Offset,
    /// Bytes of data files on disk.
    pub size_bytes: u64,
    /// Number of segments, the active one included.
    pub n_segments: usize,
    /// Highest index known durable (fdatasync'd).
    pub durable_index: Option<RaftIndex>,
}
