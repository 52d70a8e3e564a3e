//! [`Consumer`]: reads assigned partitions from their leaders, from a
//! position the caller chooses (offset, beginning, end, timestamp).
//! Consumer groups come later; here the caller assigns partitions.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use strata_batch::Header;
use strata_proto::api as pb;

use crate::client::Client;
use crate::error::{Error, ErrorCode, Result};
use crate::group::{MemberConfig, Membership};
use crate::metrics::ConsumerMetrics;

/// How long a request for a partition keeps retrying while its leader is
/// unknown or moving.
/// How often a pattern subscription looks for new matching topics.
const PATTERN_REFRESH: Duration = Duration::from_secs(1);

pub(crate) const LEADER_WAIT_MAX: Duration = Duration::from_secs(15);

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
    /// Topic.
    pub topic: String,
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
    buffered: VecDeque<ConsumerRecord>,
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
            buffered: VecDeque::new(),
            membership: None,
            on_rebalance: None,
            paused: BTreeSet::new(),
            last_commit: tokio::time::Instant::now(),
            pattern: None,
        }
    }

    /// Reads these partitions (replacing any earlier assignment), each from
    /// `auto_offset_reset` until sought.
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) {
        self.buffered.clear();
        self.positions = partitions.into_iter().map(|tp| (tp, None)).collect();
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
        self.buffered.retain(|r| !(r.topic == tp.topic && r.partition == tp.partition));
        self.positions.insert(tp.clone(), Some(offset));
        Ok(())
    }

    async fn list_offset(&self, tp: &TopicPartition, timestamp: i64) -> Result<u64> {
        self.client.list_offset(&tp.topic, tp.partition, timestamp).await
    }

    /// Records from the assigned partitions, waiting up to `max_wait` when
    /// there are none; an empty answer means nothing new yet. Retriable
    /// errors (a leader moving) are handled here.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        if self.pattern.is_some() {
            self.refresh_pattern().await?;
        }
        if self.membership.is_some() {
            self.sync_group().await?;
            self.maybe_auto_commit().await;
        }
        if !self.buffered.is_empty() {
            return Ok(self.buffered.drain(..).collect());
        }
        if self.positions.is_empty() {
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
        // One fetch per leader, in parallel.
        let mut by_leader: BTreeMap<String, Vec<(TopicPartition, u64)>> = BTreeMap::new();
        for (tp, position) in &self.positions {
            if self.paused.contains(tp) {
                continue;
            }
            let addr = match self.client.leader_addr(&tp.topic, tp.partition, 0).await {
                Ok(addr) => addr,
                // Metadata behind (a broker just restarted): next poll.
                Err(e) if e.is_retriable() => continue,
                Err(e) => return Err(e),
            };
            by_leader.entry(addr).or_default().push((tp.clone(), position.unwrap_or(0)));
        }
        let fetches = by_leader.into_iter().map(|(addr, partitions)| {
            let asked: Vec<TopicPartition> = partitions.iter().map(|(tp, _)| tp.clone()).collect();
            let fetch = self.fetch_from(addr, partitions);
            async move { (asked, fetch.await) }
        });
        let answers = futures::future::join_all(fetches).await;
        let mut records = Vec::new();
        let mut reset = Vec::new();
        for (asked, answer) in answers {
            self.metrics.fetches += 1;
            let results = match answer {
                Ok(results) => results,
                Err(e) if e.is_retriable() => {
                    // The broker is unreachable (down, cut off): the next
                    // poll asks fresh metadata and, if it names no leader,
                    // the next replica.
                    self.metrics.fetch_errors += 1;
                    for tp in &asked {
                        self.client.note_error(&tp.topic, tp.partition, &e);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for result in results {
                let tp = TopicPartition::new(result.topic.clone(), result.partition);
                let Some(Some(position)) = self.positions.get(&tp).copied() else { continue };
                if let Some(error) = Error::from_pb(result.error) {
                    self.metrics.fetch_errors += 1;
                    match error.code() {
                        Some(ErrorCode::OffsetOutOfRange) => reset.push((tp, error)),
                        _ if error.is_retriable() => self.client.note_error(&tp.topic, tp.partition, &error),
                        _ => return Err(error),
                    }
                    continue;
                }
                let mut next = position;
                let before = records.len();
                for chunk in &result.records {
                    decode_chunk(chunk, &tp, position, &mut records, &mut next)?;
                    self.metrics.bytes_consumed += chunk.len() as u64;
                }
                self.metrics.records_consumed += (records.len() - before) as u64;
                self.positions.insert(tp, Some(next));
            }
        }
        for (tp, error) in reset {
            if self.config.auto_offset_reset == OffsetReset::Error {
                return Err(error);
            }
            self.reset(&tp).await?;
        }
        Ok(records)
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

    async fn fetch_from(
        &self,
        addr: String,
        partitions: Vec<(TopicPartition, u64)>,
    ) -> Result<Vec<pb::PartitionFetchResult>> {
        let request = pb::FetchRequest {
            partitions: partitions
                .iter()
                .map(|(tp, offset)| pb::PartitionFetch {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: *offset,
                    max_bytes: self.config.partition_max_bytes,
                })
                .collect(),
            max_wait_ms: self.config.max_wait.as_millis() as u32,
            min_bytes: self.config.min_bytes,
            max_bytes: self.config.max_bytes,
        };
        let response = self.client.stub(&addr)?.fetch(request).await.map_err(Error::from_status);
        match response {
            Ok(response) => {
                let response = response.into_inner();
                if let Some(error) = Error::from_pb(response.error) {
                    return Err(error);
                }
                Ok(response.partitions)
            }
            Err(error) => {
                for (tp, _) in &partitions {
                    self.client.note_error(&tp.topic, tp.partition, &error);
                }
                Err(error)
            }
        }
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
            self.buffered.retain(|r| !revoked.iter().any(|tp| tp.topic == r.topic && tp.partition == r.partition));
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

/// Decodes the batches of one chunk, keeping records at or after `from`.
fn decode_chunk(
    chunk: &Bytes,
    tp: &TopicPartition,
    from: u64,
    out: &mut Vec<ConsumerRecord>,
    next: &mut u64,
) -> Result<()> {
    let mut at = 0;
    while at < chunk.len() {
        let len = strata_batch::batch_total_len(&chunk[at..])
            .map_err(|e| Error::api(ErrorCode::CorruptBatch, format!("{}/{}: {e}", tp.topic, tp.partition)))?;
        if at + len > chunk.len() {
            return Err(Error::api(ErrorCode::CorruptBatch, format!("{}/{}: truncated batch", tp.topic, tp.partition)));
        }
        let batch = chunk.slice(at..at + len);
        at += len;
        let header = strata_batch::BatchHeader::parse(&batch)
            .map_err(|e| Error::api(ErrorCode::CorruptBatch, format!("{}/{}: {e}", tp.topic, tp.partition)))?;
        let records = strata_batch::decode_records(&batch)
            .map_err(|e| Error::api(ErrorCode::CorruptBatch, format!("{}/{}: {e}", tp.topic, tp.partition)))?;
        for record in records {
            let record = record
                .map_err(|e| Error::api(ErrorCode::CorruptBatch, format!("{}/{}: {e}", tp.topic, tp.partition)))?;
            if record.offset < 0 || (record.offset as u64) < from {
                continue;
            }
            out.push(ConsumerRecord {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: record.offset as u64,
                timestamp: record.timestamp,
                key: record.key,
                value: record.value,
                headers: record.headers,
            });
        }
        let batch_end = header.last_offset().saturating_add(1).max(0) as u64;
        *next = (*next).max(batch_end);
    }
    Ok(())
}
