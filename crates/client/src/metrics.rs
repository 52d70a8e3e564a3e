//! The client's own counters: what a producer sent and what a consumer
//! read, for applications to export to their monitoring. Relaxed atomics
//! updated on the send and poll paths; `snapshot` copies them.

use std::sync::atomic::{AtomicU64, Ordering};

/// A producer's counters, since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerMetrics {
    /// Records acknowledged as the producer's acks setting asks.
    pub records_sent: u64,
    /// Bytes of acknowledged batches (as sent: compressed, with headers).
    pub bytes_sent: u64,
    /// Batches acknowledged.
    pub batches_sent: u64,
    /// Produce requests sent (each carries batches of one or more
    /// partitions led by one broker, see `Producer`).
    pub produce_requests: u64,
    /// Records that failed for good (their delivery future got an error).
    pub records_failed: u64,
    /// Batches resent after a retriable error.
    pub retries: u64,
    /// Times a partition restarted its sequence under a new epoch.
    pub epoch_restarts: u64,
}

/// A consumer's counters, since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerMetrics {
    /// Records returned by `poll`.
    pub records_consumed: u64,
    /// Bytes of the batches they came in.
    pub bytes_consumed: u64,
    /// Fetch requests answered.
    pub fetches: u64,
    /// Fetches or partitions answered with an error (retried or reset).
    pub fetch_errors: u64,
    /// Assignments applied from the group (0 without a group).
    pub rebalances: u64,
}

#[derive(Default)]
pub(crate) struct ProducerCounters {
    pub records_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub batches_sent: AtomicU64,
    pub produce_requests: AtomicU64,
    pub records_failed: AtomicU64,
    pub retries: AtomicU64,
    pub epoch_restarts: AtomicU64,
}

impl ProducerCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ProducerMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProducerMetrics {
            records_sent: get(&self.records_sent),
            bytes_sent: get(&self.bytes_sent),
            batches_sent: get(&self.batches_sent),
            produce_requests: get(&self.produce_requests),
            records_failed: get(&self.records_failed),
            retries: get(&self.retries),
            epoch_restarts: get(&self.epoch_restarts),
        }
    }
}
