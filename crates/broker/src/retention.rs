//! The retention and compaction scheduler: one task per node that, every
//! `log.retention_check_interval`, goes over the node's partitions and
//!
//! 1. applies the topic's roll limits (segment.bytes, segment.ms) and flush
//!    policy (flush.policy) to the log (to a replica just opened, at once:
//!    a topic created with its own segment.bytes has it from its first
//!    record);
//! 2. where this node leads and the topic's cleanup.policy has `delete`,
//!    decides the new log start from retention.ms and retention.bytes and
//!    proposes it through Raft (`strata_raft::retention`), holding back for
//!    a follower that still needs the data at most
//!    `log.retention_follower_hold`;
//! 3. on every replica, carries out the last decision applied (snapshot,
//!    then purge of the whole segments before the new start);
//! 4. where cleanup.policy has `compact`, compacts sealed segments below the
//!    applied index by key once enough of them are dirty (written since the
//!    last pass), or once tombstones may have expired, within the cleaner's
//!    I/O budget.
//!
//! Every replica compacts its own copy: compaction keeps every Raft index
//! and offset, and all replicas hold the same entries below the applied
//! index, so they end up with the same records.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use strata_log::plan::{Retention, retention_purge_before};
use strata_log::{Compaction, FlushPolicy, RaftIndex};
use strata_raft::metadata::{ClusterMetadata, TopicInfo};
use strata_raft::{ClusterNode, Group, retention};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::ServerConfig;
use crate::limits::CLEANER_MIN_DIRTY_RATIO;
use crate::topic_config::TopicSettings;

/// What the scheduler remembers of one partition between passes.
#[derive(Debug, Default)]
struct PartitionState {
    /// Since when a due purge has been held back for a lagging follower.
    held_since: Option<Instant>,
    /// Sealed segments ending at or before this index were compacted.
    cleaned_upto: u64,
    /// When this replica last compacted the partition.
    cleaned_at: Option<Instant>,
    /// The log end offset at the leader's previous retention check, and when.
    last_end_offset: Option<(u64, Instant)>,
}

/// Each partition's Raft group, mapped to its topic.
fn topic_of_group(metadata: &ClusterMetadata) -> HashMap<u64, &TopicInfo> {
    metadata.topics.values().flat_map(|topic| topic.partitions.iter().map(move |p| (p.group, topic))).collect()
}

/// Tells one opening of a group's log from another.
fn log_address(group: &Group) -> usize {
    Arc::as_ptr(&group.log) as usize
}

/// The scheduler of one node.
pub struct Scheduler {
    cluster: Arc<ClusterNode>,
    defaults: BTreeMap<String, String>,
    interval: Duration,
    flush_interval: Duration,
    follower_hold: Duration,
    cleaner_bytes_per_second: u64,
    partitions: HashMap<u64, PartitionState>,
    /// Groups whose log has had its topic's settings applied, with that
    /// log's address (a replica closed and opened again, say rebuilt after
    /// damage, has a new log).
    configured: HashMap<u64, usize>,
}

impl Scheduler {
    /// A scheduler for the node under `cluster`, configured by `config`.
    pub fn new(cluster: Arc<ClusterNode>, config: &ServerConfig) -> Scheduler {
        Scheduler {
            cluster,
            defaults: config.topic_defaults.clone(),
            interval: config.retention_check_interval,
            flush_interval: config.flush_interval,
            follower_hold: config.retention_follower_hold,
            cleaner_bytes_per_second: config.cleaner_io_bytes_per_second,
            partitions: HashMap::new(),
            configured: HashMap::new(),
        }
    }

    /// Runs passes until `stop` turns true. Between passes, a retention
    /// decision applied on this node is carried out at once, so followers
    /// do not hold deleted data for another interval.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let moved = self.cluster.raft_node().log_start_moved();
        let opened = self.cluster.raft_node().group_opened();
        loop {
            self.pass().await;
            let next = Instant::now() + self.interval;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => break,
                    _ = moved.notified() => self.purge_pass().await,
                    _ = opened.notified() => self.settings_pass(),
                    changed = stop.changed() => {
                        if changed.is_err() || *stop.borrow() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Carries out the applied retention decisions only.
    async fn purge_pass(&self) {
        let groups = self.cluster.raft_node().groups();
        let purges = groups.iter().map(|group| async move {
            if let Err(err) = retention::purge_to_log_start(group).await {
                tracing::warn!(group = group.id, error = %err, "retention purge failed");
            }
        });
        futures::future::join_all(purges).await;
    }

    /// Applies the topic's log settings to the groups opened since they
    /// were last applied.
    fn settings_pass(&mut self) {
        let metadata = self.cluster.metadata();
        let topic_of_group = topic_of_group(&metadata);
        for group in self.cluster.raft_node().groups() {
            if self.configured.get(&group.id) == Some(&log_address(&group)) {
                continue;
            }
            let Some(topic) = topic_of_group.get(&group.id) else { continue };
            let settings = TopicSettings::resolve(&self.defaults, &topic.configs);
            self.apply_settings(&group, &topic.name, &settings);
            self.configured.insert(group.id, log_address(&group));
        }
    }

    /// Roll limits and flush policy, from the topic's settings to the log.
    fn apply_settings(&self, group: &Group, topic: &str, settings: &TopicSettings) {
        let segment_age = settings.segment_ms.map(Duration::from_millis);
        if let Err(err) = group.log.set_roll_limits(settings.segment_bytes, segment_age) {
            tracing::warn!(topic = %topic, error = %err, "segment settings refused by the log");
        }
        let flush = match settings.flush_policy.as_str() {
            "interval" => FlushPolicy::Interval(self.flush_interval),
            _ => FlushPolicy::Always,
        };
        if group.log.flush_policy() != flush {
            if let Err(err) = group.log.set_flush_policy(flush) {
                tracing::warn!(topic = %topic, error = %err, "flush policy refused by the log");
            }
        }
    }

    /// One pass over every local partition.
    async fn pass(&mut self) {
        let metadata = self.cluster.metadata();
        let topic_of_group = topic_of_group(&metadata);
        let groups = self.cluster.raft_node().groups();
        self.partitions.retain(|id, _| topic_of_group.contains_key(id));
        self.configured.clear();
        // Three phases, so that slow steps (a snapshot before a purge, a
        // compaction) never delay another partition's retention decision.
        let mut local = Vec::new();
        for group in groups {
            let Some(topic) = topic_of_group.get(&group.id) else { continue };
            let settings = TopicSettings::resolve(&self.defaults, &topic.configs);
            self.apply_settings(&group, &topic.name, &settings);
            self.configured.insert(group.id, log_address(&group));
            if settings.delete && group.raft.is_leader() {
                self.decide(&group, &settings).await;
            }
            local.push((group, topic.name.clone(), settings));
        }
        // Every replica's purges, side by side.
        let purges = local.iter().map(|(group, topic, _)| async move {
            match retention::purge_to_log_start(group).await {
                Ok(true) => tracing::debug!(topic = %topic, group = group.id, "purged to the log start"),
                Ok(false) => {}
                Err(err) => tracing::warn!(topic = %topic, group = group.id, error = %err, "retention purge failed"),
            }
        });
        futures::future::join_all(purges).await;
        for (group, topic, settings) in &local {
            if settings.compact {
                self.compact(group, settings, topic).await;
            }
        }
    }

    /// On the leader: the retention decision, proposed through Raft.
    async fn decide(&mut self, group: &Group, settings: &TopicSettings) {
        let retention = Retention { retention_ms: settings.retention_ms, retention_bytes: settings.retention_bytes };
        if retention.retention_ms.is_none() && retention.retention_bytes.is_none() {
            return;
        }
        let now_ms = now_ms();
        let applied_end = group.state_machine.last_applied().map_or(0, |id| id.index + 1);
        let log = group.log.state();
        let decided = group.state_machine.log_start_index().max(log.first_index.0);
        let state = self.partitions.entry(group.id).or_default();
        // Size retention deletes ahead by one whole segment while the
        // partition is being written to, so that the bound holds at every
        // instant, not only at checks: before a roll the log holds less than
        // retention.bytes (sealed segments plus the active one), the roll
        // seals what it holds, and the next check deletes the oldest segment
        // well before the new active segment can fill. The price: a written
        // partition keeps between retention.bytes less one segment and
        // retention.bytes plus one. Without writes since the last check it
        // keeps exactly retention.bytes or more, as Kafka does.
        let end = log.next_offset.0;
        let growth = match state.last_end_offset {
            Some((prev, _)) if end > prev => settings.segment_bytes,
            _ => 0,
        };
        state.last_end_offset = Some((end, Instant::now()));
        let retention = Retention {
            retention_bytes: retention.retention_bytes.map(|limit| limit.saturating_sub(growth)),
            ..retention
        };
        let infos = group.log.segment_infos();
        let Some(mut first) = retention_purge_before(&infos, now_ms, retention, RaftIndex(applied_end)) else {
            return;
        };
        match retention::lowest_follower_need(group) {
            Some(need) if need < first.0 => {
                let since = *state.held_since.get_or_insert_with(Instant::now);
                if since.elapsed() < self.follower_hold {
                    // Delete only what every follower already has.
                    let bound = RaftIndex(applied_end.min(need));
                    match retention_purge_before(&infos, now_ms, retention, bound) {
                        Some(partial) => first = partial,
                        None => return,
                    }
                } else {
                    tracing::info!(
                        group = group.id,
                        need,
                        first = first.0,
                        "a follower lags past the retention hold; it will install a snapshot"
                    );
                }
            }
            _ => state.held_since = None,
        }
        if first.0 <= decided {
            return;
        }
        if let Err(err) = retention::propose_log_start(group, first.0, now_ms).await {
            tracing::debug!(group = group.id, error = %err, "retention decision not committed; next pass retries");
        }
    }

    /// On every replica: compaction, when due.
    async fn compact(&mut self, group: &Group, settings: &TopicSettings, topic: &str) {
        let now_ms = now_ms();
        let applied_end = group.state_machine.last_applied().map_or(0, |id| id.index + 1);
        let infos = group.log.segment_infos();
        // Records younger than min.compaction.lag.ms stay as written.
        let lag_cut = now_ms.saturating_sub(settings.min_compaction_lag_ms as i64);
        let mut boundary = applied_end;
        for info in &infos {
            if !info.sealed || info.end_index.0 > boundary {
                break;
            }
            if settings.min_compaction_lag_ms > 0 && info.max_timestamp > lag_cut {
                boundary = info.base_index.0;
                break;
            }
        }
        let state = self.partitions.entry(group.id).or_default();
        let (mut total, mut dirty) = (0u64, 0u64);
        for info in infos.iter().filter(|i| i.sealed && i.end_index.0 <= boundary) {
            total += info.size_bytes;
            if info.end_index.0 > state.cleaned_upto {
                dirty += info.size_bytes;
            }
        }
        let tombstones_due = state
            .cleaned_at
            .is_some_and(|at| at.elapsed() >= Duration::from_millis(settings.delete_retention_ms) && total > 0);
        if total == 0 || ((dirty as f64) < CLEANER_MIN_DIRTY_RATIO * total as f64 && !tombstones_due) {
            return;
        }
        let log = group.log.clone();
        let compaction =
            Compaction { boundary: RaftIndex(boundary), now_ms, delete_retention_ms: settings.delete_retention_ms };
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || log.compact(compaction)).await;
        match result {
            Ok(Ok(stats)) => {
                state.cleaned_upto = boundary;
                state.cleaned_at = Some(Instant::now());
                tracing::debug!(topic, group = group.id, ?stats, "compacted");
                // Stay within the cleaner's I/O budget: what was read and
                // written, spread over at least this long.
                let moved = stats.bytes_before + stats.bytes_after;
                let budget = Duration::from_secs_f64(moved as f64 / self.cleaner_bytes_per_second as f64);
                tokio::time::sleep(budget.saturating_sub(started.elapsed())).await;
            }
            Ok(Err(err)) => tracing::error!(topic, group = group.id, error = %err, "compaction failed"),
            Err(err) => tracing::error!(topic, group = group.id, error = %err, "compaction task failed"),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
