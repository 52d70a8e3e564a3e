//! Process-wide counters of replication, for the server's metrics: how long
//! produced batches took from proposal to commit (applied on the leader,
//! so a majority has them on disk), as a histogram, and how leaders told
//! followers of commits. Relaxed atomics, written by the produce path and
//! the transport, and only read by exporters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the commit-latency histogram's buckets; a last,
/// unbounded bucket follows.
pub const COMMIT_SECONDS_BOUNDS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

struct Stats {
    commits: AtomicU64,
    commit_micros: AtomicU64,
    buckets: [AtomicU64; COMMIT_SECONDS_BOUNDS.len() + 1],
    notices_carried: AtomicU64,
    notices_alone: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Produced batches committed on a partition led by this process.
    pub commits: u64,
    /// Their total proposal-to-commit time.
    pub commit_seconds: f64,
    /// Commits per latency bucket (not cumulative), see [`COMMIT_SECONDS_BOUNDS`].
    pub commit_buckets: Vec<u64>,
    /// Commit notices to followers (appends without entries) not sent:
    /// answered by a later request that carried the index (the next append,
    /// or a newer notice).
    pub commit_notices_carried: u64,
    /// Appends without entries sent on their own by groups that hold them
    /// (commit notices no append came for in time, and heartbeats).
    pub commit_notices_alone: u64,
}

static STATS: Stats = Stats {
    commits: AtomicU64::new(0),
    commit_micros: AtomicU64::new(0),
    buckets: [const { AtomicU64::new(0) }; COMMIT_SECONDS_BOUNDS.len() + 1],
    notices_carried: AtomicU64::new(0),
    notices_alone: AtomicU64::new(0),
};

/// Records `n` commit notices answered by the append that carried them.
pub(crate) fn record_notices_carried(n: usize) {
    STATS.notices_carried.fetch_add(n as u64, Ordering::Relaxed);
}

/// Records `n` appends without entries sent on their own (one send).
pub(crate) fn record_notices_alone(n: usize) {
    STATS.notices_alone.fetch_add(n as u64, Ordering::Relaxed);
}

/// Records one batch committed `took` after it was proposed.
pub(crate) fn record_commit(took: Duration) {
    STATS.commits.fetch_add(1, Ordering::Relaxed);
    STATS.commit_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    let seconds = took.as_secs_f64();
    let bucket = COMMIT_SECONDS_BOUNDS.iter().position(|b| seconds <= *b).unwrap_or(COMMIT_SECONDS_BOUNDS.len());
    STATS.buckets[bucket].fetch_add(1, Ordering::Relaxed);
}

/// The counters now.
pub fn snapshot() -> StatsSnapshot {
    StatsSnapshot {
        commits: STATS.commits.load(Ordering::Relaxed),
        commit_seconds: STATS.commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
        commit_buckets: STATS.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
        commit_notices_carried: STATS.notices_carried.load(Ordering::Relaxed),
        commit_notices_alone: STATS.notices_alone.load(Ordering::Relaxed),
    }
}
