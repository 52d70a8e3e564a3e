//! [`Consumer`]: reads assigned partitions from their leaders, from a
//! position the caller chooses (offset, beginning, end, timestamp).
//! Consumer groups come later; here the caller assigns partitions.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_batch::Header;
use strata_proto::api as pb;
use strata_proto::{api_paths, chained};

use crate::client::{Client, RESPONSE_BYTES_MAX};
use crate::error::{Error, ErrorCode, Result};
use crate::group::{MemberConfig, Membership};
use crate::metrics::ConsumerMetrics;

/// How long a request for a partition keeps retrying while its leader is
/// unknown or moving.
/// How often a pattern subscription looks for new matching topics.
const PATTERN_REFRESH: Duration = Duration::from_secs(1);

pub(crate) const LEADER_WAIT_MAX: Duration = Duration::from_secs(15);

/// How long a partition whose fetch failed with a retriable error (a
/// leader moving) waits before it is fetched again.
const FETCH_RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// A topic and a partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
}

impl TopicPartition {
    /// `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: u32) -> TopicPartition {
        TopicPartition { topic: topic.into(), partition }
    }
}

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    /// At this offset.
    Offset(u64),
    /// At the first stored record.
    Beginning,
    /// After the last committed record (only new records).
    End,
    /// At the first record with a timestamp (ms) at least this.
    Timestamp(i64),
}

/// What to do when the position is outside the log (or not set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// Go to the beginning.
    Earliest,
    /// Go to the end (Kafka's default).
    #[default]
    Latest,
    /// Fail the poll with OFFSET_OUT_OF_RANGE.
    Error,
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Longest a poll waits for records. Default 500 ms.
    pub max_wait: Duration,
    /// A fetch answers as soon as this many bytes are there. Default 1.
    pub min_bytes: u32,
    /// Bytes per partition per fetch, at most. Default 1 MiB.
    pub partition_max_bytes: u32,
    /// Bytes per fetch, at most. Default 50 MiB.
    pub max_bytes: u32,
    /// Records one `poll` returns, at most; the rest stay buffered, still
    /// encoded, for the next polls. Default 500 (Kafka's `max.poll.records`).
    pub max_poll_records: usize,
    /// Where to go when the position is lost. Default latest.
    pub auto_offset_reset: OffsetReset,
    /// The consumer group, for [`Consumer::subscribe`]. Default none.
    pub group_id: Option<String>,
    /// Static membership: a stable id across restarts. Default none.
    pub group_instance_id: Option<String>,
    /// A member silent this long is removed from the group. Default 10 s.
    pub session_timeout: Duration,
    /// How long a member may take to give up revoked partitions. Default 30 s.
    pub rebalance_timeout: Duration,
    /// Server-side assignor: "sticky" (default), "range" or "roundrobin".
    pub assignor: String,
    /// Commit positions every `auto_commit_interval` and before giving
    /// partitions up. Default on.
    pub enable_auto_commit: bool,
    /// Default 5 s.
    pub auto_commit_interval: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            partition_max_bytes: 1024 * 1024,
            max_bytes: 50 * 1024 * 1024,
            max_poll_records: 500,
            auto_offset_reset: OffsetReset::Latest,
            group_id: None,
            group_instance_id: None,
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            assignor: "sticky".into(),
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
        }
    }
}

/// A change of the partitions a group member owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// Newly owned (positions come from the group's committed offsets).
    Assigned(Vec<TopicPartition>),
    /// Given up in a rebalance (after committing, with auto-commit).
    Revoked(Vec<TopicPartition>),
    /// Lost without a chance to commit (the member was fenced or expired).
    Lost(Vec<TopicPartition>),
}

type RebalanceCallback = Box<dyn FnMut(&RebalanceEvent) + Send + Sync>;

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic. Shared by the records of one fetch: a copy of the name for
    /// every record was a third of a consumer's instructions at 100 B.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Timestamp, ms since the epoch.
    pub timestamp: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value (`None`: a tombstone).
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<Header>,
}

/// A consumer of assigned partitions.
///
/// ```no_run
/// # async fn example() -> Result<(), strata_client::Error> {
/// use strata_client::{Client, Consumer, Seek, TopicPartition};
/// let mut consumer = Consumer::new(&Client::new("127.0.0.1:7070")?);
/// consumer.assign(vec![TopicPartition::new("orders", 0)]);
/// consumer.seek(&TopicPartition::new("orders", 0), Seek::Beginning).await?;
/// for record in consumer.poll().await? {
///     println!("{}: {:?}", record.offset, record.value);
/// }
/// # Ok(()) }
/// ```
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    /// Assigned partitions and their next offsets (`None`: not yet known).
    positions: BTreeMap<TopicPartition, Option<u64>>,
    /// Fetched batches not yet handed out, per partition.
    buffered: BTreeMap<TopicPartition, Fetched>,
    /// Fetches under way while the caller handles what `poll` returned.
    in_flight: Vec<InFlight>,
    /// Where the next `poll` starts draining: the partition it was at.
    drain_turn: usize,
    /// Partitions whose last fetch failed with a retriable error (no
    /// leader yet, say): not fetched again before this.
    retry_at: BTreeMap<TopicPartition, tokio::time::Instant>,
    membership: Option<Membership>,
    on_rebalance: Option<RebalanceCallback>,
    paused: BTreeSet<TopicPartition>,
    last_commit: tokio::time::Instant,
    /// `subscribe_pattern`: the pattern and when topics were last matched.
    pattern: Option<(regex::Regex, tokio::time::Instant)>,
    metrics: ConsumerMetrics,
}

impl Consumer {
    /// A consumer with the default settings.
    pub fn new(client: &Client) -> Consumer {
        Consumer::with_config(client, ConsumerConfig::default())
    }

    /// What this consumer read so far.
    pub fn metrics(&self) -> ConsumerMetrics {
        self.metrics
    }

    /// A consumer with `config`.
    pub fn with_config(client: &Client, config: ConsumerConfig) -> Consumer {
        Consumer {
            metrics: ConsumerMetrics::default(),
            client: client.clone(),
            config,
            positions: BTreeMap::new(),
            buffered: BTreeMap::new(),
            in_flight: Vec::new(),
            drain_turn: 0,
            retry_at: BTreeMap::new(),
            membership: None,
            on_rebalance: None,
            paused: BTreeSet::new(),
            last_commit: tokio::time::Instant::now(),
            pattern: None,
        }
    }

    /// Reads these partitions (replacing any earlier assignment). A
    /// partition assigned before keeps its position (and what is buffered
    /// of it), as Kafka's `assign` does; a new one reads from
    /// `auto_offset_reset` until sought.
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) {
        let wanted: BTreeSet<TopicPartition> = partitions.into_iter().collect();
        self.buffered.retain(|tp, _| wanted.contains(tp));
        self.paused.retain(|tp| wanted.contains(tp));
        let mut before = std::mem::take(&mut self.positions);
        self.positions = wanted.into_iter().map(|tp| (tp.clone(), before.remove(&tp).flatten())).collect();
    }

    /// Every partition of `topic`.
    pub async fn partitions_of(&self, topic: &str) -> Result<Vec<TopicPartition>> {
        Ok(self.client.partitions(topic).await?.into_iter().map(|p| TopicPartition::new(topic, p.partition)).collect())
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    /// The next offset to be read from `tp`, once known.
    pub fn position(&self, tp: &TopicPartition) -> Option<u64> {
        self.positions.get(tp).copied().flatten()
    }

    /// Moves the position of an assigned partition.
    pub async fn seek(&mut self, tp: &TopicPartition, to: Seek) -> Result<()> {
        if !self.positions.contains_key(tp) {
            return Err(Error::Invalid(format!("{}/{} is not assigned", tp.topic, tp.partition)));
        }
        let offset = match to {
            Seek::Offset(offset) => offset,
            Seek::Beginning => self.list_offset(tp, -2).await?,
            Seek::End => self.list_offset(tp, -1).await?,
            Seek::Timestamp(ts) => match self.list_offset(tp, ts).await {
                Ok(offset) => offset,
                // Nothing that recent: the end.
                Err(Error::Invalid(_)) => self.list_offset(tp, -1).await?,
                Err(e) => return Err(e),
            },
        };
        self.buffered.remove(tp);
        self.positions.insert(tp.clone(), Some(offset));
        Ok(())
    }

    async fn list_offset(&self, tp: &TopicPartition, timestamp: i64) -> Result<u64> {
        self.client.list_offset(&tp.topic, tp.partition, timestamp).await
    }

    /// Records from the assigned partitions, at most `max_poll_records`,
    /// waiting up to `max_wait` when there are none; an empty answer means
    /// nothing new yet. Retriable errors (a leader moving) are handled here.
    ///
    /// Fetched batches are kept encoded and decoded as they are handed out.
    /// Before returning, `poll` sends the next fetch for every partition
    /// with nothing buffered, so the brokers answer while the caller works
    /// on these records.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        if self.pattern.is_some() {
            self.refresh_pattern().await?;
        }
        if self.membership.is_some() {
            self.sync_group().await?;
            self.maybe_auto_commit().await;
        }
        if self.positions.is_empty() {
            self.in_flight.clear();
            if self.membership.is_some() {
                // Nothing owned yet: wait for the group to hand something out.
                tokio::time::sleep(Duration::from_millis(50).min(self.config.max_wait)).await;
                return Ok(Vec::new());
            }
            return Err(Error::Invalid("no partition assigned".into()));
        }
        let unknown: Vec<TopicPartition> =
            self.positions.iter().filter(|(_, p)| p.is_none()).map(|(tp, _)| tp.clone()).collect();
        for tp in unknown {
            self.reset(&tp).await?;
        }
        self.collect_fetches(false).await?;
        let mut records = self.drain()?;
        self.send_fetches().await?;
        if records.is_empty() && self.in_flight.is_empty() {
            // Only partitions waiting out a retriable error: wait for the
            // first, so a caller polling in a loop does not spin.
            let now = tokio::time::Instant::now();
            if let Some(&at) = self.retry_at.values().filter(|at| **at > now).min() {
                tokio::time::sleep_until(at.min(now + self.config.max_wait)).await;
                self.send_fetches().await?;
            }
        }
        if records.is_empty() && !self.in_flight.is_empty() {
            self.collect_fetches(true).await?;
            records = self.drain()?;
            self.send_fetches().await?;
        }
        Ok(records)
    }

    /// Hands out up to `max_poll_records` buffered records, a partition at
    /// a time, each emptied before the next (so its next fetch can go out),
    /// going round the partitions so none starves; moves the positions past
    /// them.
    fn drain(&mut self) -> Result<Vec<ConsumerRecord>> {
        let room = self.config.max_poll_records.max(1);
        let mut out = Vec::with_capacity(room.min(4096));
        let ready: Vec<TopicPartition> =
            self.buffered.keys().filter(|tp| !self.paused.contains(*tp)).cloned().collect();
        if ready.is_empty() {
            return Ok(out);
        }
        let first = self.drain_turn % ready.len();
        for tp in ready[first..].iter().chain(&ready[..first]) {
            if out.len() >= room {
                break;
            }
            let Some(Some(mut position)) = self.positions.get(tp).copied() else {
                self.buffered.remove(tp);
                continue;
            };
            let Some(fetched) = self.buffered.get_mut(tp) else { continue };
            let before = out.len();
            let drained = fetched.drain_into(tp, &mut position, room - out.len(), &mut out);
            self.metrics.records_consumed += (out.len() - before) as u64;
            self.positions.insert(tp.clone(), Some(position));
            match drained {
                Ok(true) => {
                    self.buffered.remove(tp);
                    self.drain_turn = self.drain_turn.wrapping_add(1);
                }
                Ok(false) => {}
                Err(error) => {
                    // Dropped: the next fetch reads the batch again.
                    self.buffered.remove(tp);
                    return Err(error);
                }
            }
        }
        Ok(out)
    }

    /// Sends a fetch, in the background, to each leader of an assigned
    /// partition that is not paused, not buffered and not already being
    /// fetched. A partition is thus fetched again as soon as it is drained,
    /// without waiting for a long poll on partitions that have caught up.
    async fn send_fetches(&mut self) -> Result<()> {
        let mut by_leader: BTreeMap<String, Vec<(TopicPartition, u64)>> = BTreeMap::new();
        let now = tokio::time::Instant::now();
        self.retry_at.retain(|_, at| *at > now);
        for (tp, position) in &self.positions {
            let Some(position) = position else { continue };
            if self.paused.contains(tp)
                || self.retry_at.contains_key(tp)
                || self.buffered.contains_key(tp)
                || self.in_flight.iter().any(|f| f.asked.iter().any(|(asked, _)| asked == tp))
            {
                continue;
            }
            let addr = match self.client.leader_addr(&tp.topic, tp.partition, 0).await {
                Ok(addr) => addr,
                // Metadata behind (a broker just restarted): next poll.
                Err(e) if e.is_retriable() => continue,
                Err(e) => return Err(e),
            };
            by_leader.entry(addr).or_default().push((tp.clone(), *position));
        }
        for (addr, asked) in by_leader {
            let client = self.client.clone();
            let config = self.config.clone();
            let partitions = asked.clone();
            let task = tokio::spawn(async move { fetch_from(&client, &config, addr, &partitions).await });
            self.in_flight.push(InFlight { asked, task: AbortOnDrop(task) });
        }
        Ok(())
    }

    /// Buffers what the finished fetches brought (with `wait`, first waits
    /// for one to finish); answers for partitions sought, revoked or
    /// reassigned since they were sent are dropped.
    async fn collect_fetches(&mut self, wait: bool) -> Result<()> {
        let mut finished = Vec::new();
        if wait && !self.in_flight.is_empty() && !self.in_flight.iter().any(|f| f.task.is_finished()) {
            let tasks = self.in_flight.iter_mut().map(|f| &mut f.task.0);
            let (answer, i, _) = futures::future::select_all(tasks).await;
            finished.push((self.in_flight.swap_remove(i).asked, answer));
        }
        while let Some(i) = self.in_flight.iter().position(|f| f.task.is_finished()) {
            let mut done = self.in_flight.swap_remove(i);
            let answer = (&mut done.task.0).await;
            finished.push((std::mem::take(&mut done.asked), answer));
        }
        let mut reset = Vec::new();
        let mut slept = false;
        for (asked, answer) in finished {
            let answer = answer.map_err(|e| Error::Invalid(format!("the fetch task failed: {e}")))?;
            self.metrics.fetches += 1;
            let results = match answer {
                Ok(results) => results,
                Err(e) if e.is_retriable() => {
                    // The broker is unreachable (down, cut off): the next
                    // poll asks fresh metadata and, if it names no leader,
                    // the next replica.
                    self.metrics.fetch_errors += 1;
                    if !slept {
                        slept = true;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            for result in results {
                let tp = TopicPartition::new(result.topic, result.partition);
                let Some(Some(position)) = self.positions.get(&tp).copied() else { continue };
                let Some(&(_, from)) = asked.iter().find(|(asked, _)| *asked == tp) else { continue };
                if from != position || self.buffered.contains_key(&tp) {
                    continue;
                }
                if let Some(error) = Error::from_pb(result.error) {
                    self.metrics.fetch_errors += 1;
                    match error.code() {
                        Some(ErrorCode::OffsetOutOfRange) => reset.push((tp, error)),
                        _ if error.is_retriable() => {
                            self.client.note_error(&tp.topic, tp.partition, &error);
                            self.retry_at.insert(tp, tokio::time::Instant::now() + FETCH_RETRY_BACKOFF);
                        }
                        _ => return Err(error),
                    }
                    continue;
                }
                let mut fetched = Fetched {
                    topic: Arc::from(tp.topic.as_str()),
                    batches: VecDeque::new(),
                    current: None,
                    next_fetch: position,
                };
                for chunk in result.records {
                    self.metrics.bytes_consumed += chunk.len() as u64;
                    fetched.push_chunk(&tp, chunk)?;
                }
                if !fetched.batches.is_empty() {
                    self.buffered.insert(tp, fetched);
                }
            }
        }
        for (tp, error) in reset {
            if self.config.auto_offset_reset == OffsetReset::Error {
                return Err(error);
            }
            self.reset(&tp).await?;
        }
        Ok(())
    }

    async fn reset(&mut self, tp: &TopicPartition) -> Result<()> {
        let to = match self.config.auto_offset_reset {
            OffsetReset::Earliest => Seek::Beginning,
            OffsetReset::Latest => Seek::End,
            OffsetReset::Error => {
                return Err(Error::api(
                    ErrorCode::OffsetOutOfRange,
                    format!("{}/{} has no position and auto.offset.reset is error", tp.topic, tp.partition),
                ));
            }
        };
        self.seek(tp, to).await
    }

    /// Joins the consumer group `group_id` (from the config) and consumes
    /// the partitions of `topics` it is assigned; `poll` applies each new
    /// assignment (committing and revoking first).
    pub fn subscribe(&mut self, topics: Vec<String>) -> Result<()> {
        let group = self.config.group_id.clone().ok_or_else(|| Error::Invalid("subscribe needs a group_id".into()))?;
        if topics.is_empty() {
            return Err(Error::Invalid("subscribe to at least one topic".into()));
        }
        let topics: BTreeSet<String> = topics.into_iter().collect();
        if let Some(membership) = &self.membership {
            membership.lock().topics = topics;
            membership.wake.notify_one();
            return Ok(());
        }
        let config = MemberConfig {
            group,
            instance_id: self.config.group_instance_id.clone(),
            session_timeout: self.config.session_timeout,
            rebalance_timeout: self.config.rebalance_timeout,
            assignor: self.config.assignor.clone(),
        };
        self.positions.clear();
        self.buffered.clear();
        self.membership = Some(Membership::start(self.client.clone(), config, topics));
        Ok(())
    }

    /// Called with every change of the owned partitions (group mode).
    pub fn on_rebalance(&mut self, callback: impl FnMut(&RebalanceEvent) + Send + Sync + 'static) {
        self.on_rebalance = Some(Box::new(callback));
    }

    fn notify(&mut self, event: RebalanceEvent) {
        if let Some(callback) = self.on_rebalance.as_mut() {
            callback(&event);
        }
    }

    /// The member's epoch in its group (group mode, once joined).
    pub fn member_epoch(&self) -> Option<i32> {
        self.membership.as_ref().map(|m| m.lock().epoch)
    }

    /// Applies what the heartbeat learned: a lost membership, then
    /// revocations (commit, callback, stop), then new partitions (from
    /// their committed offsets).
    async fn sync_group(&mut self) -> Result<()> {
        let Some(membership) = &self.membership else { return Ok(()) };
        let (lost, target, owned) = {
            let mut s = membership.lock();
            if let Some(error) = s.refused.clone() {
                return Err(error);
            }
            let lost = std::mem::take(&mut s.lost);
            if lost {
                s.owned.clear();
            }
            (lost, s.target.clone(), s.owned.clone())
        };
        if lost {
            let dropped: Vec<TopicPartition> = self.positions.keys().cloned().collect();
            self.positions.clear();
            self.buffered.clear();
            if !dropped.is_empty() {
                self.notify(RebalanceEvent::Lost(dropped));
            }
        }
        let Some(target) = target else { return Ok(()) };
        let revoked: Vec<TopicPartition> = owned.difference(&target).cloned().collect();
        if !revoked.is_empty() || target != owned {
            self.metrics.rebalances += 1;
        }
        if !revoked.is_empty() {
            if self.config.enable_auto_commit {
                let offsets: Vec<(TopicPartition, u64)> =
                    revoked.iter().filter_map(|tp| self.position(tp).map(|p| (tp.clone(), p))).collect();
                if let Err(error) = self.commit_offsets(offsets).await {
                    tracing::warn!(%error, "committing revoked partitions failed");
                }
            }
            for tp in &revoked {
                self.positions.remove(tp);
                self.paused.remove(tp);
            }
            for tp in &revoked {
                self.buffered.remove(tp);
            }
            self.notify(RebalanceEvent::Revoked(revoked.clone()));
        }
        let added: Vec<TopicPartition> = target.difference(&owned).cloned().collect();
        if !added.is_empty() {
            let committed = self.fetch_committed(&added).await?;
            for tp in &added {
                let position = committed.get(tp).copied().flatten();
                self.positions.insert(tp.clone(), position);
            }
            self.notify(RebalanceEvent::Assigned(added.clone()));
        }
        if !revoked.is_empty() || !added.is_empty() {
            if let Some(membership) = &self.membership {
                membership.lock().owned = target;
                membership.wake.notify_one();
            }
        }
        Ok(())
    }

    async fn maybe_auto_commit(&mut self) {
        if self.config.enable_auto_commit && self.last_commit.elapsed() >= self.config.auto_commit_interval {
            self.last_commit = tokio::time::Instant::now();
            if let Err(error) = self.commit().await {
                tracing::warn!(%error, "auto-commit failed");
            }
        }
    }

    /// The group's committed offsets of `tps` (`None`: none committed).
    async fn fetch_committed(&self, tps: &[TopicPartition]) -> Result<BTreeMap<TopicPartition, Option<u64>>> {
        let membership = self.membership.as_ref().ok_or_else(|| Error::Invalid("not in a group".into()))?;
        let request = pb::OffsetFetchRequest {
            group: membership.config.group.clone(),
            partitions: tps
                .iter()
                .map(|tp| pb::TopicPartitions { topic: tp.topic.clone(), partitions: vec![tp.partition] })
                .collect(),
        };
        let response = self
            .coordinator_call(|mut stub, _| {
                let request = request.clone();
                async move { stub.offset_fetch(request).await.map(|r| r.into_inner()).map(|r| (r.error.clone(), r)) }
            })
            .await?;
        Ok(response
            .offsets
            .into_iter()
            .map(|c| (TopicPartition::new(c.topic, c.partition), (c.offset >= 0).then_some(c.offset as u64)))
            .collect())
    }

    /// Calls the group's coordinator, finding it again while it moves.
    async fn coordinator_call<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(strata_proto::api::strata_client::StrataClient<tonic::transport::Channel>, &Membership) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(Option<pb::Error>, T), tonic::Status>>,
    {
        let membership = self.membership.as_ref().ok_or_else(|| Error::Invalid("not in a group".into()))?;
        let deadline = tokio::time::Instant::now() + LEADER_WAIT_MAX;
        loop {
            let result: Result<()> = match membership.coordinator().await {
                Ok(addr) => match call(self.client.stub(&addr)?, membership).await {
                    Ok((error, value)) => match Error::from_pb(error) {
                        None => return Ok(value),
                        Some(e) => Err(e),
                    },
                    Err(status) => Err(Error::from_status(status)),
                },
                Err(e) => Err(e),
            };
            let error = result.err().unwrap_or(Error::Closed);
            if !error.is_retriable() || tokio::time::Instant::now() >= deadline {
                return Err(error);
            }
            membership.forget_coordinator();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Commits the positions of every owned partition (group mode).
    pub async fn commit(&mut self) -> Result<()> {
        let offsets: Vec<(TopicPartition, u64)> =
            self.positions.iter().filter_map(|(tp, p)| p.map(|p| (tp.clone(), p))).collect();
        self.commit_offsets(offsets).await
    }

    /// Commits explicit offsets (the next offset to read) for the group. A
    /// member that was fenced gets FENCED_MEMBER_EPOCH or UNKNOWN_MEMBER_ID.
    pub async fn commit_offsets(&self, offsets: Vec<(TopicPartition, u64)>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let membership = self.membership.as_ref().ok_or_else(|| Error::Invalid("not in a group".into()))?;
        crate::group::commit(self.client.clone(), membership.config.group.clone(), membership.shared.clone(), offsets)
            .await
    }

    /// Commits the current positions in the background; the handle tells
    /// how it went. Commits are sent in order but may complete out of order
    /// with a later synchronous one, as in Kafka.
    pub fn commit_async(&self) -> tokio::task::JoinHandle<Result<()>> {
        let offsets: Vec<(TopicPartition, u64)> =
            self.positions.iter().filter_map(|(tp, p)| p.map(|p| (tp.clone(), p))).collect();
        match &self.membership {
            Some(m) => tokio::spawn(crate::group::commit(
                self.client.clone(),
                m.config.group.clone(),
                m.shared.clone(),
                offsets,
            )),
            None => tokio::spawn(async { Err(Error::Invalid("not in a group".into())) }),
        }
    }

    /// Subscribes to every topic whose whole name matches `pattern` (a
    /// regular expression), now and as topics are created or deleted
    /// (checked about every second, on poll). Internal topics (`__*`) are
    /// left out.
    pub async fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        let regex = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| Error::Invalid(format!("bad pattern {pattern:?}: {e}")))?;
        self.pattern = Some((regex, tokio::time::Instant::now() - PATTERN_REFRESH));
        self.refresh_pattern().await
    }

    async fn refresh_pattern(&mut self) -> Result<()> {
        let Some((regex, checked)) = &self.pattern else { return Ok(()) };
        if checked.elapsed() < PATTERN_REFRESH {
            return Ok(());
        }
        let regex = regex.clone();
        let names = crate::Admin::new(&self.client).list_topics().await?;
        let topics: Vec<String> = names.into_iter().filter(|t| !t.starts_with("__") && regex.is_match(t)).collect();
        self.pattern = Some((regex, tokio::time::Instant::now()));
        if topics.is_empty() {
            return Ok(());
        }
        let current: Option<BTreeSet<String>> = self.membership.as_ref().map(|m| m.lock().topics.clone());
        if current.as_ref() != Some(&topics.iter().cloned().collect()) {
            self.subscribe(topics)?;
        }
        Ok(())
    }

    /// The group's committed offset of `tp`, if any.
    pub async fn committed(&self, tp: &TopicPartition) -> Result<Option<u64>> {
        Ok(self.fetch_committed(std::slice::from_ref(tp)).await?.get(tp).copied().flatten())
    }

    /// Stops fetching these partitions (they stay owned).
    pub fn pause(&mut self, tps: &[TopicPartition]) {
        self.paused.extend(tps.iter().cloned());
    }

    /// Fetches these partitions again.
    pub fn resume(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            self.paused.remove(tp);
        }
    }

    /// Commits (with auto-commit) and leaves the group, so its partitions
    /// are reassigned at once.
    pub async fn close(mut self) -> Result<()> {
        if self.membership.is_some() && self.config.enable_auto_commit {
            self.commit().await?;
        }
        let owned: Vec<TopicPartition> = self.positions.keys().cloned().collect();
        if self.membership.is_some() && !owned.is_empty() {
            self.positions.clear();
            self.notify(RebalanceEvent::Revoked(owned));
        }
        if let Some(membership) = self.membership.as_mut() {
            membership.leave().await;
        }
        Ok(())
    }

    /// The records as a stream (polling forever).
    pub fn stream(self) -> impl futures::Stream<Item = Result<ConsumerRecord>> {
        futures::stream::unfold((self, VecDeque::new()), |(mut consumer, mut ready)| async move {
            loop {
                if let Some(record) = ready.pop_front() {
                    return Some((Ok(record), (consumer, ready)));
                }
                match consumer.poll().await {
                    Ok(records) => ready.extend(records),
                    Err(error) => return Some((Err(error), (consumer, ready))),
                }
            }
        })
    }
}

/// One fetch to one broker: the partitions asked for, from which offsets.
async fn fetch_from(
    client: &Client,
    config: &ConsumerConfig,
    addr: String,
    partitions: &[(TopicPartition, u64)],
) -> Result<Vec<pb::PartitionFetchResult>> {
    let request = pb::FetchRequest {
        partitions: partitions
            .iter()
            .map(|(tp, offset)| pb::PartitionFetch {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: *offset,
                max_bytes: config.partition_max_bytes,
            })
            .collect(),
        max_wait_ms: config.max_wait.as_millis() as u32,
        min_bytes: config.min_bytes,
        max_bytes: config.max_bytes,
    };
    // The answer's records stay slices of the HTTP/2 frames they arrived
    // in (`strata_proto::chained`), where tonic's decoder would copy them.
    let mut channel = client.channel(&addr)?;
    let response =
        chained::unary::<_, pb::FetchResponse>(&mut channel, api_paths::FETCH, request, usize::MAX, RESPONSE_BYTES_MAX)
            .await
            .map_err(Error::from_status);
    match response {
        Ok(response) => {
            if let Some(error) = Error::from_pb(response.error) {
                return Err(error);
            }
            Ok(response.partitions)
        }
        Err(error) => {
            for (tp, _) in partitions {
                client.note_error(&tp.topic, tp.partition, &error);
            }
            Err(error)
        }
    }
}

/// A fetch a consumer has under way.
struct InFlight {
    /// The partitions asked for, from which offsets.
    asked: Vec<(TopicPartition, u64)>,
    task: AbortOnDrop<Result<Vec<pb::PartitionFetchResult>>>,
}

/// A task that ends with its handle (a dropped consumer stops its fetch).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetched batches of one partition that `poll` has not handed out yet.
struct Fetched {
    /// The partition's topic, for its records.
    topic: Arc<str>,
    /// Whole batches, still encoded, in offset order.
    batches: VecDeque<Bytes>,
    /// The batch being handed out: its records and where it ends.
    current: Option<(strata_batch::RecordIter, u64)>,
    /// Where the partition's next fetch starts: after the last batch.
    next_fetch: u64,
}

fn corrupt(tp: &TopicPartition, what: impl std::fmt::Display) -> Error {
    Error::api(ErrorCode::CorruptBatch, format!("{}/{}: {what}", tp.topic, tp.partition))
}

impl Fetched {
    /// Splits a chunk of the answer (whole batches back to back) into its
    /// batches; the CRC is checked when a batch is decoded.
    fn push_chunk(&mut self, tp: &TopicPartition, chunk: Bytes) -> Result<()> {
        let mut at = 0;
        while at < chunk.len() {
            let len = strata_batch::batch_total_len(&chunk[at..]).map_err(|e| corrupt(tp, e))?;
            if at + len > chunk.len() {
                return Err(corrupt(tp, "truncated batch"));
            }
            let batch = chunk.slice(at..at + len);
            let header = strata_batch::BatchHeader::parse(&batch).map_err(|e| corrupt(tp, e))?;
            self.next_fetch = self.next_fetch.max(header.last_offset().saturating_add(1).max(0) as u64);
            self.batches.push_back(batch);
            at += len;
        }
        Ok(())
    }

    /// Decodes up to `room` records at or after `position` into `out`,
    /// moving `position` past each record and each finished batch; true
    /// when nothing is left.
    fn drain_into(
        &mut self,
        tp: &TopicPartition,
        position: &mut u64,
        room: usize,
        out: &mut Vec<ConsumerRecord>,
    ) -> Result<bool> {
        let mut left = room;
        while left > 0 {
            let (records, end) = match &mut self.current {
                Some(current) => current,
                None => {
                    let Some(batch) = self.batches.pop_front() else { break };
                    let header = strata_batch::BatchHeader::parse(&batch).map_err(|e| corrupt(tp, e))?;
                    let records = strata_batch::decode_records(&batch).map_err(|e| corrupt(tp, e))?;
                    let end = header.last_offset().saturating_add(1).max(0) as u64;
                    self.current.insert((records, end))
                }
            };
            match records.next() {
                Some(record) => {
                    let record = record.map_err(|e| corrupt(tp, e))?;
                    if record.offset < 0 || (record.offset as u64) < *position {
                        continue;
                    }
                    *position = record.offset as u64 + 1;
                    out.push(ConsumerRecord {
                        topic: self.topic.clone(),
                        partition: tp.partition,
                        offset: record.offset as u64,
                        timestamp: record.timestamp,
                        key: record.key,
                        value: record.value,
                        headers: record.headers,
                    });
                    left -= 1;
                }
                None => {
                    *position = (*position).max(*end);
                    self.current = None;
                }
            }
        }
        let done = self.current.is_none() && self.batches.is_empty();
        if done {
            *position = (*position).max(self.next_fetch);
        }
        Ok(done)
    }
}
