//! `strata-client`: the native async Rust client of Strata.
//!
//! - [`Producer`]: batching, key partitioning as Kafka (murmur2), sticky
//!   partitioning for keyless records, LZ4, acks, idempotence on by default,
//!   retries with backoff, a future per record.
//! - [`Consumer`]: assigned partitions, seek, poll or stream.
//! - [`Admin`]: topics and the cluster.
//! - [`DeadLetters`]: retries a record's handler, then writes a record that
//!   keeps failing to a dead-letter topic with where it came from and why.
//!
//! Producing takes a few lines:
//!
//! ```no_run
//! # async fn example() -> Result<(), strata_client::Error> {
//! use strata_client::{Client, Producer, Record};
//! let producer = Producer::new(&Client::new("127.0.0.1:7070")?);
//! producer.send(Record::new("orders", "hello")).await?.await?;
//! # Ok(()) }
//! ```
//!
//! And consuming:
//!
//! ```no_run
//! # async fn example() -> Result<(), strata_client::Error> {
//! use strata_client::{Client, Consumer, Seek, TopicPartition};
//! let mut consumer = Consumer::new(&Client::new("127.0.0.1:7070")?);
//! let tp = TopicPartition::new("orders", 0);
//! consumer.assign(vec![tp.clone()]);
//! consumer.seek(&tp, Seek::Beginning).await?;
//! let records = consumer.poll().await?;
//! # Ok(()) }
//! ```
//!
//! ## Consumer groups and delivery modes
//!
//! With a `group_id`, [`Consumer::subscribe`] shares the topics' partitions
//! with the group's other members; the group remembers, per partition, the
//! next offset to read (the *committed* offset), and a member that takes a
//! partition over starts there.
//!
//! **At least once**: commit *after* processing. A crash between the two
//! makes the next owner process those records again, never skip them.
//!
//! ```no_run
//! # async fn process(_: &strata_client::ConsumerRecord) {}
//! # async fn example() -> Result<(), strata_client::Error> {
//! use strata_client::{Client, Consumer, ConsumerConfig};
//! let config = ConsumerConfig { group_id: Some("billing".into()), enable_auto_commit: false, ..Default::default() };
//! let mut consumer = Consumer::with_config(&Client::new("127.0.0.1:7070")?, config);
//! consumer.subscribe(vec!["orders".into()])?;
//! loop {
//!     let records = consumer.poll().await?;
//!     for record in &records {
//!         process(record).await;
//!     }
//!     consumer.commit().await?; // the positions after what was processed
//! }
//! # }
//! ```
//!
//! **At most once**: commit *before* processing. A crash after the commit
//! loses the records being processed; none is ever processed twice.
//!
//! ```no_run
//! # async fn process(_: &strata_client::ConsumerRecord) {}
//! # async fn example() -> Result<(), strata_client::Error> {
//! use strata_client::{Client, Consumer, ConsumerConfig};
//! let config = ConsumerConfig { group_id: Some("alerts".into()), enable_auto_commit: false, ..Default::default() };
//! let mut consumer = Consumer::with_config(&Client::new("127.0.0.1:7070")?, config);
//! consumer.subscribe(vec!["orders".into()])?;
//! loop {
//!     let records = consumer.poll().await?;
//!     consumer.commit().await?; // commit first
//!     for record in &records {
//!         process(record).await;
//!     }
//! }
//! # }
//! ```
//!
//! With auto-commit (the default) positions are committed every
//! `auto_commit_interval` during `poll` and before partitions are given up:
//! at least once, with up to an interval of records redelivered after a
//! crash.
//!
//! **Architecture Invariant:** the client depends on the wire format
//! (`strata-proto`, `strata-batch`) only, never on the server's crates.

mod admin;
mod client;
mod consumer;
mod dead_letter;
mod dispatch;
mod error;
mod group;
mod linger;
mod metrics;
mod producer;
mod tls;

pub use admin::{
    AclBinding, AclFilter, Admin, BrokerDescription, ClusterDescription, GroupDescription, MemberDescription, NewTopic,
    PartitionDescription, ReplicaDescription, TopicDescription,
};
pub use client::{Client, PartitionInfo};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, RebalanceEvent, Seek, TopicPartition};
pub use dead_letter::{
    DeadLetterConfig, DeadLetters, HEADER_ATTEMPTS, HEADER_ERROR, HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC,
    Handled, Origin,
};
pub use error::{Error, ErrorCode, Result};
pub use metrics::{ConsumerMetrics, ProducerMetrics};
pub use producer::{
    Acks, Compression, DeliveredBatch, DeliveryFuture, DeliveryHandler, Producer, ProducerConfig, Record,
    RecordMetadata, TaggedRecord, murmur2, partition_for_key,
};
pub use strata_batch::Header;
pub use tls::Tls;
