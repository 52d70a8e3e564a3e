//! [`Admin`]: topics and the cluster.

use std::collections::BTreeMap;

use strata_proto::api as pb;

use crate::client::Client;
use crate::error::{Error, Result};

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partitions.
    pub partitions: u32,
    /// Replicas per partition; 0 = the cluster's choice (3, or fewer
    /// brokers).
    pub replication_factor: u32,
    /// Configuration, Kafka's keys (`retention.ms`, `max.message.bytes`, ...).
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    /// A topic with `partitions` partitions and the default replication.
    pub fn new(name: impl Into<String>, partitions: u32) -> NewTopic {
        NewTopic { name: name.into(), partitions, replication_factor: 0, configs: BTreeMap::new() }
    }

    /// Sets the replication factor.
    pub fn replication_factor(mut self, rf: u32) -> NewTopic {
        self.replication_factor = rf;
        self
    }

    /// Sets a config key.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> NewTopic {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// One partition of a described topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    /// Partition number.
    pub partition: u32,
    /// Leader broker id, when known.
    pub leader: Option<u64>,
    /// Replica broker ids.
    pub replicas: Vec<u64>,
    /// First stored offset (as the answering broker's replica sees it).
    pub log_start_offset: u64,
    /// Offset below which records are committed.
    pub high_watermark: u64,
    /// Bytes on disk of the answering broker's replica.
    pub size_bytes: u64,
    /// Segments of that replica.
    pub segments: u32,
}

/// A described topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Name.
    pub name: String,
    /// Configuration.
    pub configs: BTreeMap<String, String>,
    /// Partitions.
    pub partitions: Vec<PartitionDescription>,
}

/// A broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDescription {
    /// Node id.
    pub id: u64,
    /// Client address (empty until announced).
    pub address: String,
    /// Peer (Raft) address.
    pub raft_address: String,
}

/// The cluster, as one broker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// Brokers.
    pub brokers: Vec<BrokerDescription>,
    /// The controller's leader, when known.
    pub controller: Option<u64>,
    /// The broker that answered.
    pub node_id: u64,
    /// Topic count.
    pub topics: u32,
    /// Partition count.
    pub partitions: u32,
}

/// Administration of topics and the cluster.
///
/// ```no_run
/// # async fn example() -> Result<(), strata_client::Error> {
/// use strata_client::{Admin, Client, NewTopic};
/// let admin = Admin::new(&Client::new("127.0.0.1:7070")?);
/// admin.create_topic(NewTopic::new("orders", 6).replication_factor(3)).await?;
/// println!("{:?}", admin.list_topics().await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Admin {
    client: Client,
}

fn check(error: Option<pb::Error>) -> Result<()> {
    match Error::from_pb(error) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

impl Admin {
    /// Admin over `client`.
    pub fn new(client: &Client) -> Admin {
        Admin { client: client.clone() }
    }

    /// Creates a topic.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        let request = pb::CreateTopicRequest {
            name: topic.name.clone(),
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            configs: topic.configs.into_iter().collect(),
        };
        let response = self
            .client
            .call_any(|mut stub| {
                let request = request.clone();
                async move { stub.create_topic(request).await }
            })
            .await?;
        check(response.error)?;
        self.client.refresh_metadata(&[topic.name]).await
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = pb::DeleteTopicRequest { name: name.to_string() };
        let response = self
            .client
            .call_any(|mut stub| {
                let request = request.clone();
                async move { stub.delete_topic(request).await }
            })
            .await?;
        check(response.error)
    }

    /// Topic names.
    pub async fn list_topics(&self) -> Result<Vec<String>> {
        let response =
            self.client.call_any(|mut stub| async move { stub.list_topics(pb::ListTopicsRequest {}).await }).await?;
        Ok(response.names)
    }

    /// A topic's partitions, leaders, replicas and extent.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let request = pb::DescribeTopicRequest { name: name.to_string() };
        let response = self
            .client
            .call_any(|mut stub| {
                let request = request.clone();
                async move { stub.describe_topic(request).await }
            })
            .await?;
        check(response.error)?;
        Ok(TopicDescription {
            name: response.name,
            configs: response.configs.into_iter().collect(),
            partitions: response
                .partitions
                .into_iter()
                .map(|p| PartitionDescription {
                    partition: p.partition,
                    leader: p.leader,
                    replicas: p.replicas,
                    log_start_offset: p.log_start_offset,
                    high_watermark: p.high_watermark,
                    size_bytes: p.size_bytes,
                    segments: p.segments,
                })
                .collect(),
        })
    }

    /// The brokers and the controller.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let response = self
            .client
            .call_any(|mut stub| async move { stub.describe_cluster(pb::DescribeClusterRequest {}).await })
            .await?;
        Ok(ClusterDescription {
            brokers: response
                .brokers
                .into_iter()
                .map(|b| BrokerDescription { id: b.id, address: b.address, raft_address: b.raft_address })
                .collect(),
            controller: response.controller,
            node_id: response.node_id,
            topics: response.topics,
            partitions: response.partitions,
        })
    }
}
