//! Every fixed bound of the broker, in one place (configurable limits live
//! in [`crate::config`]).

use std::time::Duration;

/// Largest `limits.request_bytes` that may be configured.
pub const REQUEST_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Largest HTTP/2 frame the client API accepts (HTTP/2's default is 16 KiB;
/// a producer's request is megabytes).
pub const H2_FRAME_BYTES: u32 = 1024 * 1024;
/// Bytes a client may send on one request before the broker has read them
/// (HTTP/2's flow-control window; its default is 1 MiB here). The broker
/// reads a whole request into memory anyway (up to `limits.request_bytes`),
/// so a larger window only saves the client waiting for window updates.
pub const H2_STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// The same for all requests of one connection together.
pub const H2_CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Longest a fetch may wait for data (`max_wait_ms` is capped here).
pub const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);
/// Bytes a fetch returns when the request names no limit.
pub const FETCH_BYTES_DEFAULT: usize = 1024 * 1024;
/// Bytes one fetch answer holds at most, whatever the request asks.
pub const FETCH_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How long a produce with acks=all waits when the request names no timeout.
pub const PRODUCE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Longest produce timeout a request may ask for.
pub const PRODUCE_TIMEOUT_MAX: Duration = Duration::from_secs(300);
/// Retry-after given with THROTTLED.
pub const THROTTLE_RETRY_AFTER: Duration = Duration::from_millis(50);
/// Partitions a topic may have.
pub const PARTITIONS_MAX: u32 = 10_000;
/// Longest topic name (Kafka's bound).
pub const TOPIC_NAME_MAX: usize = 249;
/// How long a stopping node tries to hand its leaderships over.
pub const HANDOVER_MAX: Duration = Duration::from_secs(3);
/// Bytes of an HTTP request head the health endpoint reads at most.
pub const HTTP_HEAD_MAX: usize = 8 * 1024;
/// How long an admin change (create or delete a topic, a producer id) may
/// take before the client is answered TIMEOUT.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// A compacted partition is cleaned again once this share of its sealed
/// bytes was written since the last pass (Kafka's min.cleanable.dirty.ratio).
pub const CLEANER_MIN_DIRTY_RATIO: f64 = 0.5;
