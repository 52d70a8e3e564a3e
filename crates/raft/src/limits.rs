//! Every bound of the replication layer, in one place.

/// Bytes of entries one AppendEntries carries at most (the first entry is
/// always sent whole). Keeps a replication message well inside the
/// transport's message limit.
pub const REPLICATION_BYTES_MAX: usize = 8 * 1024 * 1024;
