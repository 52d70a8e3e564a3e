//! Per-log configuration, validated on open.

use std::time::Duration;

use crate::LogError;
use crate::limits::{PREALLOCATE_BYTES_MAX, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, TAIL_CACHE_BYTES_MAX};

/// When appended data is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// An append is reported durable only after an fdatasync covering it
    /// (group-committed with every other append made while the previous sync
    /// ran). The default, and the only policy under which an acknowledged
    /// write survives power loss.
    #[default]
    Always,
    /// Appends are reported durable at once and synced every interval.
    /// Weaker: a power loss can lose up to one interval of acknowledged data
    /// on this replica.
    Interval(Duration),
}

/// Settings of one partition log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A segment is rolled before an append would grow it past this many
    /// bytes. Default 128 MiB; bounds 64 KiB ..= 4 GiB. Smaller segments make
    /// retention finer and more of the log mmap-served, at the cost of more
    /// files.
    pub segment_bytes: u64,
    /// A non-empty segment is rolled once its first entry is this old.
    /// Default 7 days; `None` disables.
    pub segment_age_max: Option<Duration>,
    /// Durability of appends. Default [`FlushPolicy::Always`].
    pub flush_policy: FlushPolicy,
    /// Bytes of the latest appends the log keeps in memory, as written, so
    /// that reads right behind the writer (applying, replicating, a consumer
    /// at the end of the log) take no `pread` and no copy. Default 2 MiB;
    /// 0 disables. [`crate::Log::release_cache`] drops it early (the Raft
    /// layer does when a group goes quiet), so a node holds about this much
    /// per partition written to recently: up to about twice as much, since a
    /// batch kept as it came off the network ([`crate::Log::append_verified`]) keeps
    /// the rest of its message's receive buffer alive with it (measured: peak
    /// RSS 179 → 233 MiB for 36 logs in `strata-bench raft`). Entries still
    /// to be read ([`crate::Log::hold_cache_from`]) are kept past it, up to
    /// [`crate::limits::TAIL_CACHE_HELD_BYTES_MAX`].
    pub tail_cache_bytes: usize,
    /// Most bytes the active segment keeps allocated ahead of its end
    /// (`fallocate`, reading as zeroes), so that appends overwrite blocks the
    /// file system has reserved already: the group commit's `fdatasync` then
    /// writes less metadata than for an append that grows the file and
    /// allocates blocks as it goes. The headroom grows with the segment
    /// (never more than the segment already holds, nothing below
    /// [`crate::limits::PREALLOCATE_AFTER_BYTES`]), so a quiet partition
    /// holds next to none; it is cut off when the segment is sealed, and a
    /// restart cuts what a crash left. Default 4 MiB; 0 disables.
    pub preallocate_bytes: u64,
    /// Whether segment data files are written and read with `O_DIRECT`,
    /// around the page cache (see [`crate::io::direct`]). Read by whoever
    /// opens the partition directory ([`crate::io::fs::FsDir::with_direct_segments`]);
    /// a file system without direct I/O falls back to the page cache.
    /// Sealed segments are still served from their memory map. Default off
    /// here; the server turns it on (`log.direct_io`).
    pub direct_io: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 128 * 1024 * 1024,
            segment_age_max: Some(Duration::from_secs(7 * 24 * 3600)),
            flush_policy: FlushPolicy::Always,
            tail_cache_bytes: 2 * 1024 * 1024,
            preallocate_bytes: 4 * 1024 * 1024,
            direct_io: false,
        }
    }
}

impl LogConfig {
    /// Checks every field against its bounds.
    pub fn validate(&self) -> Result<(), LogError> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(LogError::InvalidArgument(format!(
                "segment_bytes = {} is outside [{SEGMENT_BYTES_MIN}, {SEGMENT_BYTES_MAX}]",
                self.segment_bytes
            )));
        }
        if let FlushPolicy::Interval(interval) = self.flush_policy {
            if interval.is_zero() || interval > Duration::from_secs(3600) {
                return Err(LogError::InvalidArgument(format!("flush interval {interval:?} is outside (0, 1h]")));
            }
        }
        if self.tail_cache_bytes > TAIL_CACHE_BYTES_MAX {
            return Err(LogError::InvalidArgument(format!(
                "tail_cache_bytes = {} is above {TAIL_CACHE_BYTES_MAX}",
                self.tail_cache_bytes
            )));
        }
        if self.preallocate_bytes > PREALLOCATE_BYTES_MAX {
            return Err(LogError::InvalidArgument(format!(
                "preallocate_bytes = {} is above {PREALLOCATE_BYTES_MAX}",
                self.preallocate_bytes
            )));
        }
        Ok(())
    }
}
