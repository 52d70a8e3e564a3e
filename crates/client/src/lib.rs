//! `strata-client`: the native async Rust client of Strata.
//!
//! - [`Producer`]: batching, key partitioning as Kafka (murmur2), sticky
//!   partitioning for keyless records, LZ4, acks, idempotence on by default,
//!   retries with backoff, a future per record.
//! - [`Consumer`]: assigned partitions, seek, poll or stream.
//! - [`Admin`]: topics and the cluster.
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
//! **Architecture Invariant:** the client depends on the wire format
//! (`strata-proto`, `strata-batch`) only, never on the server's crates.

mod admin;
mod client;
mod consumer;
mod error;
mod group;
mod producer;

pub use admin::{
    Admin, BrokerDescription, ClusterDescription, GroupDescription, MemberDescription, NewTopic, PartitionDescription,
    TopicDescription,
};
pub use client::{Client, PartitionInfo};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, RebalanceEvent, Seek, TopicPartition};
pub use error::{Error, ErrorCode, Result};
pub use producer::{
    Acks, Compression, DeliveryFuture, Producer, ProducerConfig, Record, RecordMetadata, murmur2, partition_for_key,
};
pub use strata_batch::Header;
