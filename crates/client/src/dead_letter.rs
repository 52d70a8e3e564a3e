//! Dead-letter handling: a record whose handler keeps failing is tried a
//! few times with backoff, then written to a dead-letter topic together
//! with where it came from and what went wrong, so that its partition moves
//! on instead of stalling on it (what Kafka Connect's
//! `errors.deadletterqueue.topic.name` and Spring Kafka's dead-letter
//! recoverer do).
//!
//! [`DeadLetters::handle`] returns once the record was processed or the
//! dead-letter topic acknowledged it (with the producer's acks; `All` by
//! default), so committing the record's offset after it never loses a
//! record: it is either processed or stored in the dead-letter topic.
//!
//! The dead-letter record keeps the original's key, value, timestamp and
//! headers, and adds the `strata.dlq.*` headers below. It is partitioned by
//! its key, so the records of one key keep their order there too.
//! [`DeadLetters::origin`] reads the headers back, for a consumer of the
//! dead-letter topic that inspects records, and [`DeadLetters::replay`]
//! writes one back to the partition it came from.

use std::time::Duration;

use bytes::Bytes;
use strata_batch::Header;

use crate::admin::{Admin, NewTopic};
use crate::consumer::ConsumerRecord;
use crate::error::{Error, ErrorCode, Result};
use crate::producer::{Producer, Record, RecordMetadata};

/// Header: the topic the record was read from.
pub const HEADER_TOPIC: &str = "strata.dlq.topic";
/// Header: its partition (decimal).
pub const HEADER_PARTITION: &str = "strata.dlq.partition";
/// Header: its offset (decimal).
pub const HEADER_OFFSET: &str = "strata.dlq.offset";
/// Header: the handler's last error, in words.
pub const HEADER_ERROR: &str = "strata.dlq.error";
/// Header: how many times the handler was tried (decimal).
pub const HEADER_ATTEMPTS: &str = "strata.dlq.attempts";

/// How records are retried and where they go when they keep failing.
#[derive(Debug, Clone)]
pub struct DeadLetterConfig {
    /// The dead-letter topic of a source topic is its name followed by
    /// this (default `.dlq`: `orders` → `orders.dlq`).
    pub topic_suffix: String,
    /// Times the handler is tried before the record is dead-lettered (at
    /// least 1; default 3).
    pub max_attempts: u32,
    /// Wait before the second try; doubled before each further one (default
    /// 100 ms).
    pub backoff: Duration,
    /// Longest wait between two tries (default 10 s).
    pub backoff_max: Duration,
}

impl Default for DeadLetterConfig {
    fn default() -> DeadLetterConfig {
        DeadLetterConfig {
            topic_suffix: ".dlq".into(),
            max_attempts: 3,
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The handler succeeded, at this try (1 = the first).
    Processed {
        /// Tries it took.
        attempts: u32,
    },
    /// The handler failed every try; the record is in the dead-letter topic.
    DeadLettered {
        /// The dead-letter topic.
        topic: String,
        /// Partition there.
        partition: u32,
        /// Offset there (-1 unless the producer waits for acks=all).
        offset: i64,
        /// The handler's last error.
        error: String,
    },
}

/// Where a dead-lettered record came from (see [`DeadLetters::origin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: u32,
    /// Source offset.
    pub offset: u64,
    /// The handler's last error.
    pub error: String,
    /// Tries made.
    pub attempts: u32,
}

/// Retries records and dead-letters those that keep failing.
///
/// ```no_run
/// # async fn charge(_: &strata_client::ConsumerRecord) -> Result<(), String> { Ok(()) }
/// # async fn example() -> Result<(), strata_client::Error> {
/// use strata_client::{Admin, Client, Consumer, ConsumerConfig, DeadLetters, DeadLetterConfig, Producer};
/// let client = Client::new("127.0.0.1:7070")?;
/// let dead_letters = DeadLetters::new(Producer::new(&client), DeadLetterConfig::default());
/// dead_letters.ensure_topic(&Admin::new(&client), "payments").await?; // payments.dlq
/// let config = ConsumerConfig { group_id: Some("billing".into()), enable_auto_commit: false, ..Default::default() };
/// let mut consumer = Consumer::with_config(&client, config);
/// consumer.subscribe(vec!["payments".into()])?;
/// loop {
///     for record in consumer.poll().await? {
///         dead_letters.handle(&record, charge).await?;
///     }
///     consumer.commit().await?; // every record is processed or dead-lettered
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct DeadLetters {
    producer: Producer,
    config: DeadLetterConfig,
}

impl DeadLetters {
    /// Dead-letters through `producer` (keep its default `acks = All`, so
    /// that a record handed over is stored before its offset is committed).
    pub fn new(producer: Producer, config: DeadLetterConfig) -> DeadLetters {
        DeadLetters { producer, config }
    }

    /// The dead-letter topic of `source`.
    pub fn topic_for(&self, source: &str) -> String {
        format!("{source}{}", self.config.topic_suffix)
    }

    /// Creates `source`'s dead-letter topic unless it exists, with as many
    /// partitions and replicas as `source` has.
    pub async fn ensure_topic(&self, admin: &Admin, source: &str) -> Result<()> {
        let described = admin.describe_topic(source).await?;
        let partitions = described.partitions.len() as u32;
        let replicas = described.partitions.first().map_or(0, |p| p.replicas.len() as u32);
        let topic = NewTopic::new(self.topic_for(source), partitions).replication_factor(replicas);
        match admin.create_topic(topic).await {
            Err(err) if err.code() == Some(ErrorCode::TopicAlreadyExists) => Ok(()),
            other => other,
        }
    }

    /// Runs `handler` on `record` until it succeeds, at most `max_attempts`
    /// times with backoff between tries; if every try failed, writes the
    /// record to the dead-letter topic and waits for its acknowledgement.
    /// An error is returned only when the dead-letter write failed: then
    /// the record is neither processed nor stored, and its offset must not
    /// be committed.
    pub async fn handle<F, E>(&self, record: &ConsumerRecord, mut handler: F) -> Result<Handled>
    where
        F: AsyncFnMut(&ConsumerRecord) -> std::result::Result<(), E>,
        E: std::fmt::Display,
    {
        let max_attempts = self.config.max_attempts.max(1);
        let mut wait = self.config.backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match handler(record).await {
                Ok(()) => return Ok(Handled::Processed { attempts }),
                Err(err) if attempts >= max_attempts => {
                    return self.dead_letter(record, &err.to_string(), attempts).await;
                }
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2).min(self.config.backoff_max);
                }
            }
        }
    }

    /// Writes `record` to its dead-letter topic at once, with `error` and
    /// `attempts` in its headers, and waits for the acknowledgement (for a
    /// record the caller knows cannot be processed, say one that does not
    /// parse).
    pub async fn dead_letter(&self, record: &ConsumerRecord, error: &str, attempts: u32) -> Result<Handled> {
        let topic = self.topic_for(&record.topic);
        let mut headers: Vec<Header> = record.headers.clone();
        let mut add =
            |key: &str, value: String| headers.push(Header { key: key.into(), value: Some(Bytes::from(value)) });
        add(HEADER_TOPIC, record.topic.to_string());
        add(HEADER_PARTITION, record.partition.to_string());
        add(HEADER_OFFSET, record.offset.to_string());
        add(HEADER_ERROR, error.to_string());
        add(HEADER_ATTEMPTS, attempts.to_string());
        let out = Record {
            topic: topic.as_str().into(),
            partition: None,
            key: record.key.clone(),
            value: record.value.clone(),
            headers,
            timestamp: Some(record.timestamp),
        };
        let stored = self.producer.send(out).await?.await?;
        Ok(Handled::DeadLettered { topic, partition: stored.partition, offset: stored.offset, error: error.into() })
    }

    /// Writes a record read from a dead-letter topic back to the partition
    /// it came from (after the handler's bug is fixed, say), with its key,
    /// value, timestamp and every header, and waits for the
    /// acknowledgement. If it fails again, it is dead-lettered again with a
    /// second set of `strata.dlq.*` headers, and [`DeadLetters::origin`]
    /// reads the newest. Refused for a record without the headers.
    pub async fn replay(&self, record: &ConsumerRecord) -> Result<RecordMetadata> {
        let Some(origin) = DeadLetters::origin(record) else {
            return Err(Error::Invalid(format!(
                "{}/{} at {} has no {HEADER_TOPIC} header: not a dead letter",
                record.topic, record.partition, record.offset
            )));
        };
        let back = Record {
            topic: origin.topic.as_str().into(),
            partition: Some(origin.partition),
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record.headers.clone(),
            timestamp: Some(record.timestamp),
        };
        self.producer.send(back).await?.await
    }

    /// Where a record read from a dead-letter topic came from, from its
    /// `strata.dlq.*` headers; `None` if it lacks them.
    pub fn origin(record: &ConsumerRecord) -> Option<Origin> {
        // The last of each name: a record dead-lettered twice (replayed,
        // failed again) carries both sets, the newest last.
        let text = |key: &str| {
            let header = record.headers.iter().rev().find(|h| h.key == key)?;
            std::str::from_utf8(header.value.as_deref()?).ok().map(str::to_string)
        };
        Some(Origin {
            topic: text(HEADER_TOPIC)?,
            partition: text(HEADER_PARTITION)?.parse().ok()?,
            offset: text(HEADER_OFFSET)?.parse().ok()?,
            error: text(HEADER_ERROR).unwrap_or_default(),
            attempts: text(HEADER_ATTEMPTS).and_then(|a| a.parse().ok()).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(key: &str, value: &str) -> Header {
        Header { key: key.into(), value: Some(Bytes::from(value.to_string())) }
    }

    fn record(headers: Vec<Header>) -> ConsumerRecord {
        ConsumerRecord {
            topic: "orders.dlq".into(),
            partition: 0,
            offset: 9,
            timestamp: 0,
            key: None,
            value: None,
            headers,
        }
    }

    #[test]
    fn origin_reads_the_newest_set_of_headers_and_needs_the_position() {
        let first = [("orders", "1", "40", "timeout", "3"), ("orders.dlq", "0", "7", "still bad", "2")];
        let mut headers = vec![header("trace", "t-1")];
        for (topic, partition, offset, error, attempts) in first {
            headers.extend([
                header(HEADER_TOPIC, topic),
                header(HEADER_PARTITION, partition),
                header(HEADER_OFFSET, offset),
                header(HEADER_ERROR, error),
                header(HEADER_ATTEMPTS, attempts),
            ]);
        }
        let origin = DeadLetters::origin(&record(headers)).expect("origin");
        let expected =
            Origin { topic: "orders.dlq".into(), partition: 0, offset: 7, error: "still bad".into(), attempts: 2 };
        assert_eq!(origin, expected, "a record dead-lettered twice names its newest origin");
        let no_offset = vec![header(HEADER_TOPIC, "orders"), header(HEADER_PARTITION, "1")];
        assert_eq!(DeadLetters::origin(&record(no_offset)), None);
        let bad_offset =
            vec![header(HEADER_TOPIC, "orders"), header(HEADER_PARTITION, "1"), header(HEADER_OFFSET, "x")];
        assert_eq!(DeadLetters::origin(&record(bad_offset)), None);
    }
}
