//! [`Consumer`]: reads assigned partitions from their leaders, from a
//! position the caller chooses (offset, beginning, end, timestamp).
//! Consumer groups come later; here the caller assigns partitions.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use strata_batch::Header;
use strata_proto::api as pb;

use crate::client::Client;
use crate::error::{Error, ErrorCode, Result};

/// How long a request for a partition keeps retrying while its leader is
/// unknown or moving.
const LEADER_WAIT_MAX: Duration = Duration::from_secs(15);

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
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            partition_max_bytes: 1024 * 1024,
            max_bytes: 50 * 1024 * 1024,
            auto_offset_reset: OffsetReset::Latest,
        }
    }
}

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
}

impl Consumer {
    /// A consumer with the default settings.
    pub fn new(client: &Client) -> Consumer {
        Consumer::with_config(client, ConsumerConfig::default())
    }

    /// A consumer with `config`.
    pub fn with_config(client: &Client, config: ConsumerConfig) -> Consumer {
        Consumer { client: client.clone(), config, positions: BTreeMap::new(), buffered: VecDeque::new() }
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

    /// The offset for a ListOffsets query (-2 earliest, -1 latest, else a
    /// timestamp), from the partition's leader.
    async fn list_offset(&self, tp: &TopicPartition, timestamp: i64) -> Result<u64> {
        let mut last = Error::Transport("no attempt".into());
        // A partition just created or whose leader just failed has none for
        // an election timeout or two: keep asking, with backoff, for a while.
        let deadline = tokio::time::Instant::now() + LEADER_WAIT_MAX;
        let mut backoff = Duration::from_millis(50);
        for attempt in 0.. {
            if attempt > 0 {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            let addr = self.client.leader_addr(&tp.topic, tp.partition, attempt).await?;
            let request = pb::ListOffsetsRequest {
                partitions: vec![pb::PartitionOffsetQuery {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    timestamp,
                }],
            };
            let result = match self.client.stub(&addr)?.list_offsets(request).await {
                Ok(response) => response.into_inner().partitions.into_iter().next(),
                Err(status) => {
                    last = Error::from_status(status);
                    self.client.note_error(&tp.topic, tp.partition, &last);
                    continue;
                }
            };
            let Some(result) = result else { return Err(Error::Transport(format!("{addr} sent no offset"))) };
            match Error::from_pb(result.error) {
                None if result.offset >= 0 => return Ok(result.offset as u64),
                None => return Err(Error::Invalid(format!("no record at or after timestamp {timestamp}"))),
                Some(e) if e.is_retriable() => {
                    self.client.note_error(&tp.topic, tp.partition, &e);
                    last = e;
                }
                Some(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Records from the assigned partitions, waiting up to `max_wait` when
    /// there are none; an empty answer means nothing new yet. Retriable
    /// errors (a leader moving) are handled here.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        if !self.buffered.is_empty() {
            return Ok(self.buffered.drain(..).collect());
        }
        if self.positions.is_empty() {
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
            let addr = self.client.leader_addr(&tp.topic, tp.partition, 0).await?;
            by_leader.entry(addr).or_default().push((tp.clone(), position.unwrap_or(0)));
        }
        let fetches = by_leader.into_iter().map(|(addr, partitions)| self.fetch_from(addr, partitions));
        let answers = futures::future::join_all(fetches).await;
        let mut records = Vec::new();
        let mut reset = Vec::new();
        for answer in answers {
            let results = match answer {
                Ok(results) => results,
                Err(e) if e.is_retriable() => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for result in results {
                let tp = TopicPartition::new(result.topic.clone(), result.partition);
                let Some(Some(position)) = self.positions.get(&tp).copied() else { continue };
                if let Some(error) = Error::from_pb(result.error) {
                    match error.code() {
                        Some(ErrorCode::OffsetOutOfRange) => reset.push((tp, error)),
                        _ if error.is_retriable() => self.client.note_error(&tp.topic, tp.partition, &error),
                        _ => return Err(error),
                    }
                    continue;
                }
                let mut next = position;
                for chunk in &result.records {
                    decode_chunk(chunk, &tp, position, &mut records, &mut next)?;
                }
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
        let batch_end = (header.last_offset() + 1).max(0) as u64;
        *next = (*next).max(batch_end);
    }
    Ok(())
}
