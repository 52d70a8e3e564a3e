//! Process-wide counters of the storage engine, for the server's metrics:
//! how many fdatasyncs ran, how long they took (a histogram), and how many
//! flush requests each one released (the group commit's batch size). Plain
//! relaxed atomics, written on the sync path and only read by exporters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the sync-latency histogram's buckets; a last,
/// unbounded bucket follows.
pub const SYNC_SECONDS_BOUNDS: [f64; 12] = [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0];

/// The counters.
pub struct Stats {
    syncs: AtomicU64,
    sync_micros: AtomicU64,
    buckets: [AtomicU64; SYNC_SECONDS_BOUNDS.len() + 1],
    released: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Syncs made (each covers one log's dirty files).
    pub syncs: u64,
    /// Total time spent in them.
    pub sync_seconds: f64,
    /// Syncs per latency bucket (not cumulative), see [`SYNC_SECONDS_BOUNDS`].
    pub sync_buckets: Vec<u64>,
    /// Flush requests released by those syncs.
    pub flushes_released: u64,
}

static STATS: Stats = Stats {
    syncs: AtomicU64::new(0),
    sync_micros: AtomicU64::new(0),
    buckets: [const { AtomicU64::new(0) }; SYNC_SECONDS_BOUNDS.len() + 1],
    released: AtomicU64::new(0),
};

/// Records one sync that took `took` and released `released` flush requests.
pub(crate) fn record_sync(took: Duration, released: usize) {
    STATS.syncs.fetch_add(1, Ordering::Relaxed);
    STATS.sync_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    let seconds = took.as_secs_f64();
    let bucket = SYNC_SECONDS_BOUNDS.iter().position(|b| seconds <= *b).unwrap_or(SYNC_SECONDS_BOUNDS.len());
    STATS.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    STATS.released.fetch_add(released as u64, Ordering::Relaxed);
}

/// The counters now.
pub fn snapshot() -> StatsSnapshot {
    StatsSnapshot {
        syncs: STATS.syncs.load(Ordering::Relaxed),
        sync_seconds: STATS.sync_micros.load(Ordering::Relaxed) as f64 / 1e6,
        sync_buckets: STATS.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
        flushes_released: STATS.released.load(Ordering::Relaxed),
    }
}
