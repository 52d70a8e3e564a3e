//! The node's metrics, served at `/metrics` in Prometheus' text format.
//!
//! Two kinds: counters and histograms updated on the request paths (records
//! and bytes per topic, requests and errors per RPC, produce and fetch
//! latency), kept in [`Metrics`]; and gauges read from the node's state when
//! scraped (partitions, leaders, replication lag, log extents, fsyncs,
//! groups, the process). The text is written by hand: the format is a few
//! lines per series, and no metrics library is needed for it.
//!
//! Names carry their unit (`_bytes`, `_seconds`, `_total` for counters), as
//! Prometheus recommends; `docs/operations.md` lists them.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_log::Offset;
use strata_raft::ClusterNode;
use strata_raft::metadata::ClusterMetadata;

use crate::disk::DiskGuard;
use crate::groups::Coordinator;

/// Upper bounds (seconds) of the request-latency histograms.
const LATENCY_BOUNDS: [f64; 14] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

/// A metric family read from a value: name, help, and how to read it.
type Series<T, V> = (&'static str, &'static str, fn(&T) -> V);

/// A histogram with fixed buckets, lock-free.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = self.bounds.iter().position(|b| seconds <= *b).unwrap_or(self.bounds.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        render_histogram(out, name, labels, self.bounds, &counts, sum);
    }
}

/// Counters of one topic on this node.
#[derive(Default)]
pub struct TopicCounters {
    records_in: AtomicU64,
    bytes_in: AtomicU64,
    records_out: AtomicU64,
    bytes_out: AtomicU64,
}

impl TopicCounters {
    /// A produced batch was accepted (this node leads the partition).
    pub fn produced(&self, records: u64, bytes: u64) {
        self.records_in.fetch_add(records, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Batches were served to a consumer.
    pub fn fetched(&self, records: u64, bytes: u64) {
        self.records_out.fetch_add(records, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The node's counters and histograms.
pub struct Metrics {
    started: Instant,
    topics: Mutex<HashMap<String, Arc<TopicCounters>>>,
    /// (rpc, result code) → requests; code "ok" for success.
    results: Mutex<BTreeMap<(&'static str, String), u64>>,
    produce_latency: Histogram,
    fetch_latency: Histogram,
    connections: AtomicI64,
    /// Last seen Raft term per group, and the term increases seen (each is
    /// an election).
    terms: Mutex<HashMap<u64, u64>>,
    elections: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            topics: Mutex::default(),
            results: Mutex::default(),
            produce_latency: Histogram::new(&LATENCY_BOUNDS),
            fetch_latency: Histogram::new(&LATENCY_BOUNDS),
            connections: AtomicI64::new(0),
            terms: Mutex::default(),
            elections: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// The counters of `topic`.
    pub fn topic(&self, topic: &str) -> Arc<TopicCounters> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(counters) = topics.get(topic) {
            return counters.clone();
        }
        topics.entry(topic.to_string()).or_default().clone()
    }

    /// Counts one answer of `rpc` per result code in `codes` (an empty list
    /// counts one success).
    pub fn answered(&self, rpc: &'static str, codes: &[&str]) {
        let mut results = self.results.lock().unwrap_or_else(|p| p.into_inner());
        if codes.is_empty() {
            *results.entry((rpc, "ok".to_string())).or_default() += 1;
        }
        for code in codes {
            *results.entry((rpc, (*code).to_string())).or_default() += 1;
        }
    }

    /// A produce request took `took` (acks=all: until committed).
    pub fn produce_latency(&self, took: Duration) {
        self.produce_latency.observe(took);
    }

    /// A fetch request took `took` (long-poll waits included).
    pub fn fetch_latency(&self, took: Duration) {
        self.fetch_latency.observe(took);
    }

    /// A client connection opened (+1) or closed (-1).
    pub fn connection(&self, delta: i64) {
        self.connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// The whole exposition, reading the node's state now.
    pub async fn render(&self, cluster: &ClusterNode, coordinator: &Coordinator, disk: &DiskGuard) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let metadata = cluster.metadata();
        self.render_counters(&mut out);
        self.render_partitions(&mut out, cluster, &metadata);
        render_storage(&mut out);
        render_disk(&mut out, disk);
        render_groups(&mut out, cluster, coordinator, &metadata).await;
        self.render_process(&mut out);
        out
    }

    fn render_counters(&self, out: &mut String) {
        let topics: Vec<(String, Arc<TopicCounters>)> = {
            let topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
            let mut all: Vec<_> = topics.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        let series: [Series<TopicCounters, u64>; 4] = [
            ("strata_topic_records_in_total", "Records accepted by this node (as partition leader).", |c| {
                c.records_in.load(Ordering::Relaxed)
            }),
            ("strata_topic_bytes_in_total", "Bytes of record batches accepted by this node.", |c| {
                c.bytes_in.load(Ordering::Relaxed)
            }),
            ("strata_topic_records_out_total", "Records served to consumers by this node.", |c| {
                c.records_out.load(Ordering::Relaxed)
            }),
            ("strata_topic_bytes_out_total", "Bytes of record batches served to consumers.", |c| {
                c.bytes_out.load(Ordering::Relaxed)
            }),
        ];
        for (name, help, field) in series {
            header(out, name, help, "counter");
            for (topic, counters) in &topics {
                let _ = writeln!(out, "{name}{{topic=\"{}\"}} {}", escape(topic), field(counters));
            }
        }
        header(
            out,
            "strata_requests_total",
            "Client requests answered, by RPC and result code (ok or the error code; a request with several partitions counts once per partition error).",
            "counter",
        );
        let results = self.results.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for ((rpc, code), n) in results {
            let _ = writeln!(out, "strata_requests_total{{rpc=\"{rpc}\",code=\"{code}\"}} {n}");
        }
        header(
            out,
            "strata_produce_latency_seconds",
            "Time to answer a produce request (acks=all: until a majority has it on disk).",
            "histogram",
        );
        self.produce_latency.render(out, "strata_produce_latency_seconds", "");
        header(
            out,
            "strata_fetch_latency_seconds",
            "Time to answer a fetch request, long-poll waits included.",
            "histogram",
        );
        self.fetch_latency.render(out, "strata_fetch_latency_seconds", "");
    }

    fn render_partitions(&self, out: &mut String, cluster: &ClusterNode, metadata: &ClusterMetadata) {
        use openraft::async_runtime::WatchReceiver;
        let node = cluster.raft_node();
        let mut rows = Vec::new();
        let (mut led, mut under, mut leaderless, mut stopped) = (0u64, 0u64, 0u64, 0u64);
        let mut lag_rows = Vec::new();
        let mut terms = self.terms.lock().unwrap_or_else(|p| p.into_inner());
        for group in node.groups() {
            let metrics = group.raft.metrics().borrow_watched().clone();
            let last = terms.insert(group.id, metrics.current_term);
            if let Some(last) = last {
                self.elections.fetch_add(metrics.current_term.saturating_sub(last), Ordering::Relaxed);
            }
            if metrics.running_state.is_err() {
                stopped += 1;
            }
            let Some((topic, partition)) = metadata.partition_of_group(group.id) else { continue };
            let labels = format!("topic=\"{}\",partition=\"{partition}\"", escape(topic));
            if metrics.current_leader.is_none() {
                leaderless += 1;
            }
            let state = group.log.state();
            let is_leader = metrics.current_leader == Some(node.id());
            let mut under_replicated = false;
            if is_leader {
                led += 1;
                let last_index = metrics.last_log_index.unwrap_or(0);
                let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
                let replication = metrics.replication.clone().unwrap_or_default();
                let heartbeat = metrics.heartbeat.clone().unwrap_or_default();
                for follower in voters.into_iter().filter(|v| *v != node.id()) {
                    let matched = replication.get(&follower).cloned().flatten().map(|id| id.index);
                    let lag_entries = matched.map_or(last_index + 1, |m| last_index.saturating_sub(m));
                    // A quiet group sends no heartbeats: its followers had
                    // everything when it went quiet, and the node pings say
                    // whether they are still there.
                    let acked = heartbeat.get(&follower).cloned().flatten().map(|at| openraft::Instant::elapsed(&*at));
                    let since_ack = if group.is_quiet() { node.quiescence().since_contact(follower) } else { acked };
                    let since_ack = since_ack.unwrap_or_else(|| self.started.elapsed());
                    let lag_seconds = if lag_entries == 0 { 0.0 } else { since_ack.as_secs_f64() };
                    // Silent for too long (down, partitioned), whether or
                    // not there was anything to send it.
                    if matched.is_none() || since_ack > UNDER_REPLICATED_AFTER {
                        under_replicated = true;
                    }
                    lag_rows.push((labels.clone(), follower, lag_entries, lag_seconds));
                }
                if under_replicated {
                    under += 1;
                }
            }
            rows.push((labels, is_leader, under_replicated, state, group.state_machine.high_watermark()));
        }
        drop(terms);
        header(out, "strata_partitions_led", "Partitions this node leads.", "gauge");
        let _ = writeln!(out, "strata_partitions_led {led}");
        header(
            out,
            "strata_partitions_under_replicated",
            "Partitions led here with a voter that has not acknowledged anything for 10 s (down or cut off), or never has.",
            "gauge",
        );
        let _ = writeln!(out, "strata_partitions_under_replicated {under}");
        header(out, "strata_partitions_leaderless", "Partition replicas on this node that know of no leader.", "gauge");
        let _ = writeln!(out, "strata_partitions_leaderless {leaderless}");
        header(
            out,
            "strata_replicas_stopped",
            "Raft replicas on this node (partitions and the controller) stopped after an error, such as a write to a full disk: they serve nothing until reopened (a partition's replica is reopened from disk after a pause of 2 s to 60 s; the controller's, when the broker restarts).",
            "gauge",
        );
        let _ = writeln!(out, "strata_replicas_stopped {stopped}");
        let open: std::collections::HashSet<u64> = node.group_ids().into_iter().collect();
        let n_not_open = metadata
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.replicas.contains(&node.id()) && !open.contains(&p.group))
            .count();
        header(
            out,
            "strata_replicas_not_open",
            "Partition replicas assigned to this node that it does not run: just assigned, waiting to be rebuilt after damage, or failing to open (the node's log says why).",
            "gauge",
        );
        let _ = writeln!(out, "strata_replicas_not_open {n_not_open}");
        header(
            out,
            "strata_partitions_quiet",
            "Partition replicas on this node that are quiet: idle and fully replicated, with Raft's timers parked.",
            "gauge",
        );
        let _ = writeln!(out, "strata_partitions_quiet {}", node.quiescence().n_quiet());
        header(
            out,
            "strata_raft_elections_total",
            "Raft term increases seen on this node's groups (each is an election).",
            "counter",
        );
        let _ = writeln!(out, "strata_raft_elections_total {}", self.elections.load(Ordering::Relaxed));
        header(out, "strata_partition_leader", "1 when this node leads the partition.", "gauge");
        for (labels, is_leader, ..) in &rows {
            let _ = writeln!(out, "strata_partition_leader{{{labels}}} {}", u8::from(*is_leader));
        }
        header(
            out,
            "strata_partition_under_replicated",
            "1 when this node leads the partition and a voter lags (see strata_partitions_under_replicated).",
            "gauge",
        );
        for (labels, _, under, ..) in &rows {
            let _ = writeln!(out, "strata_partition_under_replicated{{{labels}}} {}", u8::from(*under));
        }
        header(out, "strata_replication_lag_entries", "On the leader: Raft entries a follower lacks.", "gauge");
        for (labels, follower, entries, _) in &lag_rows {
            let _ = writeln!(out, "strata_replication_lag_entries{{{labels},follower=\"{follower}\"}} {entries}");
        }
        header(
            out,
            "strata_replication_lag_seconds",
            "On the leader: for a follower that lacks entries, the time since it last acknowledged (0 when caught up).",
            "gauge",
        );
        for (labels, follower, _, seconds) in &lag_rows {
            let _ = writeln!(out, "strata_replication_lag_seconds{{{labels},follower=\"{follower}\"}} {seconds:.3}");
        }
        let extents: [Series<(strata_log::LogState, Offset), u64>; 5] = [
            ("strata_log_size_bytes", "Bytes of segment data of this replica.", |(s, _)| s.size_bytes),
            ("strata_log_segments", "Segments of this replica, the active one included.", |(s, _)| s.n_segments as u64),
            ("strata_log_start_offset", "First offset this replica still stores.", |(s, _)| s.log_start_offset.0),
            ("strata_log_end_offset", "Offset the next record appended to this replica gets.", |(s, _)| {
                s.next_offset.0
            }),
            (
                "strata_partition_high_watermark",
                "Offset below which records are committed, as this replica knows.",
                |(_, hw)| hw.0,
            ),
        ];
        for (name, help, value) in extents {
            header(out, name, help, "gauge");
            for (labels, _, _, state, hw) in &rows {
                let _ = writeln!(out, "{name}{{{labels}}} {}", value(&(*state, *hw)));
            }
        }
    }

    fn render_process(&self, out: &mut String) {
        header(out, "strata_client_connections", "Client connections open.", "gauge");
        let _ = writeln!(out, "strata_client_connections {}", self.connections.load(Ordering::Relaxed));
        header(out, "strata_uptime_seconds", "Seconds since this node started.", "gauge");
        let _ = writeln!(out, "strata_uptime_seconds {:.1}", self.started.elapsed().as_secs_f64());
        if let Some(rss) = resident_bytes() {
            header(out, "strata_process_resident_memory_bytes", "Resident memory of the process.", "gauge");
            let _ = writeln!(out, "strata_process_resident_memory_bytes {rss}");
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            header(out, "strata_process_open_fds", "Open file descriptors of the process.", "gauge");
            let _ = writeln!(out, "strata_process_open_fds {}", fds.count());
        }
    }
}

/// A leader calls a partition under-replicated once a voter has lacked
/// entries without acknowledging for this long.
const UNDER_REPLICATED_AFTER: Duration = Duration::from_secs(10);

fn render_disk(out: &mut String, disk: &DiskGuard) {
    let Some((space, refusing)) = disk.snapshot() else { return };
    header(out, "strata_disk_available_bytes", "Bytes still available on the data directory's file system.", "gauge");
    let _ = writeln!(out, "strata_disk_available_bytes {}", space.available);
    header(out, "strata_disk_total_bytes", "Size of the data directory's file system.", "gauge");
    let _ = writeln!(out, "strata_disk_total_bytes {}", space.total);
    header(
        out,
        "strata_disk_produce_refused",
        "1 while produce is refused: less than limits.min_free_disk_bytes available.",
        "gauge",
    );
    let _ = writeln!(out, "strata_disk_produce_refused {}", u8::from(refusing));
}

fn render_storage(out: &mut String) {
    let stats = strata_log::stats::snapshot();
    header(
        out,
        "strata_fsync_seconds",
        "Syncs of the group commit, by duration (every log of the process); with log.direct_io, each includes writing out the appended bytes.",
        "histogram",
    );
    render_histogram(
        out,
        "strata_fsync_seconds",
        "",
        &strata_log::stats::SYNC_SECONDS_BOUNDS,
        &stats.sync_buckets,
        stats.sync_seconds,
    );
    header(
        out,
        "strata_fsync_flushes_released_total",
        "Flush requests (Raft appends) made durable by those syncs; divided by the sync count, the group commit's batch size.",
        "counter",
    );
    let _ = writeln!(out, "strata_fsync_flushes_released_total {}", stats.flushes_released);
    let raft = strata_raft::stats::snapshot();
    header(
        out,
        "strata_raft_commit_seconds",
        "Produced batches on partitions led here, from proposal to commit (a majority has them on disk, applied here).",
        "histogram",
    );
    render_histogram(
        out,
        "strata_raft_commit_seconds",
        "",
        &strata_raft::stats::COMMIT_SECONDS_BOUNDS,
        &raft.commit_buckets,
        raft.commit_seconds,
    );
    header(
        out,
        "strata_raft_commit_notices_total",
        "Appends without entries from partitions' leaders to followers: \"carried\", commit notices not sent, answered by a later request that carried the index (the next append, or a newer notice); \"alone\", sent on their own (no append came in time, and heartbeats).",
        "counter",
    );
    let _ = writeln!(out, "strata_raft_commit_notices_total{{how=\"carried\"}} {}", raft.commit_notices_carried);
    let _ = writeln!(out, "strata_raft_commit_notices_total{{how=\"alone\"}} {}", raft.commit_notices_alone);
}

async fn render_groups(out: &mut String, cluster: &ClusterNode, coordinator: &Coordinator, metadata: &ClusterMetadata) {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let mut members = Vec::new();
    let mut lags = Vec::new();
    for name in coordinator.list().await {
        let Ok(description) = coordinator.describe(&name).await else { continue };
        let group = escape(&name);
        members.push((group.clone(), description.members.len(), description.epoch));
        for ((topic, partition), committed) in &description.offsets {
            let Some(info) = metadata.topics.get(topic).and_then(|t| t.partitions.get(*partition as usize)) else {
                continue;
            };
            let Some(replica) = cluster.raft_node().group(info.group) else { continue };
            let high_watermark = replica.state_machine.high_watermark();
            let lag = high_watermark.0.saturating_sub(committed.offset);
            let mut lag_seconds = 0.0;
            if lag > 0 {
                let oldest =
                    replica.log.read_offsets(Offset(committed.offset), 1, high_watermark).ok().and_then(|read| {
                        let chunk = read.chunks.first()?;
                        strata_batch::BatchHeader::parse(chunk).ok().map(|h| h.base_timestamp)
                    });
                if let Some(ts) = oldest {
                    lag_seconds = (now_ms.saturating_sub(ts).max(0)) as f64 / 1000.0;
                }
            }
            let labels = format!("group=\"{group}\",topic=\"{}\",partition=\"{partition}\"", escape(topic));
            lags.push((labels, lag, lag_seconds));
        }
    }
    header(out, "strata_group_members", "Members of a group this node coordinates.", "gauge");
    for (group, n, _) in &members {
        let _ = writeln!(out, "strata_group_members{{group=\"{group}\"}} {n}");
    }
    header(
        out,
        "strata_group_epoch",
        "The group's epoch; it rises by one per rebalance (rate() is the rebalance rate).",
        "gauge",
    );
    for (group, _, epoch) in &members {
        let _ = writeln!(out, "strata_group_epoch{{group=\"{group}\"}} {epoch}");
    }
    header(
        out,
        "strata_group_lag_records",
        "Records between a group's committed offset and the high watermark.",
        "gauge",
    );
    for (labels, lag, _) in &lags {
        let _ = writeln!(out, "strata_group_lag_records{{{labels}}} {lag}");
    }
    header(
        out,
        "strata_group_lag_seconds",
        "Age of the oldest record a group has not committed past (0 when caught up).",
        "gauge",
    );
    for (labels, _, seconds) in &lags {
        let _ = writeln!(out, "strata_group_lag_seconds{{{labels}}} {seconds:.3}");
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes a histogram's cumulative buckets, sum and count; `counts` are per
/// bucket (not cumulative), the last one unbounded.
fn render_histogram(out: &mut String, name: &str, labels: &str, bounds: &[f64], counts: &[u64], sum: f64) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (bound, count) in bounds.iter().zip(counts) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
    }
    cumulative += counts.get(bounds.len()).copied().unwrap_or(0);
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
    let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(out, "{name}_sum{braces} {sum:.6}");
    let _ = writeln!(out, "{name}_count{braces} {cumulative}");
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Resident set size from /proc (Linux), if readable.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "");
        assert!(out.contains("x_seconds_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.01\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_count 3\n") && out.contains("x_seconds_sum 1.005500\n"), "{out}");
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
