//! [`Admin`]: topics and the cluster.

use std::collections::BTreeMap;

use strata_proto::api as pb;

use crate::client::Client;
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};

/// How often [`Admin::wait_for_leaders`] asks again.
const LEADER_POLL: std::time::Duration = std::time::Duration::from_millis(50);

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

/// One replica of a partition, as the broker holding it reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaDescription {
    /// Partition number.
    pub partition: u32,
    /// The broker holding the replica.
    pub broker: u64,
    /// True when that broker leads the partition.
    pub is_leader: bool,
    /// First offset still stored.
    pub log_start_offset: u64,
    /// One past the last offset stored.
    pub log_end_offset: u64,
    /// Offset below which records are committed, as this replica knows.
    pub high_watermark: u64,
    /// Bytes of data on disk.
    pub size_bytes: u64,
    /// Segments, the active one included.
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

/// A member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static membership id (empty if none).
    pub instance_id: String,
    /// Member epoch.
    pub epoch: i32,
    /// Owned partitions.
    pub assignment: Vec<TopicPartition>,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Name.
    pub group: String,
    /// Empty, Reconciling or Stable.
    pub state: String,
    /// Group epoch.
    pub epoch: i32,
    /// Assignor.
    pub assignor: String,
    /// Members.
    pub members: Vec<MemberDescription>,
    /// Committed offsets (the next offset to consume).
    pub offsets: Vec<(TopicPartition, u64)>,
    /// The coordinating broker.
    pub coordinator: u64,
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

    /// Waits until every partition of topic `name` has a leader, or until
    /// `timeout` has passed; returns how many partitions are still without
    /// one. A new topic's Raft groups elect their leaders within a second or
    /// so of its creation; a producer that starts before then has its first
    /// requests refused (not the leader) and retried. A broker that does not
    /// know the topic yet (it has not applied the creation) is asked again,
    /// until the timeout; then its error is returned.
    pub async fn wait_for_leaders(&self, name: &str, timeout: std::time::Duration) -> Result<usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let leaderless = self
                .describe_topic(name)
                .await
                .map(|topic| topic.partitions.iter().filter(|p| p.leader.is_none()).count());
            match leaderless {
                Ok(0) => {
                    self.client.refresh_metadata(&[name.to_string()]).await?;
                    return Ok(0);
                }
                done if tokio::time::Instant::now() >= deadline => return done,
                _ => tokio::time::sleep(LEADER_POLL).await,
            }
        }
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

    /// Every replica of a topic's partitions, each as reported by the broker
    /// holding it (log start and end, size on disk, segments). Brokers that
    /// cannot be reached are left out; an error only when none answers.
    pub async fn describe_replicas(&self, name: &str) -> Result<Vec<ReplicaDescription>> {
        let _ = self.client.refresh_metadata(&[]).await;
        let request = pb::DescribeTopicRequest { name: name.to_string() };
        let mut out = Vec::new();
        let mut last_error = None;
        let mut answered = false;
        for addr in self.client.broker_addrs() {
            let response = match self.client.stub(&addr)?.describe_topic(request.clone()).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    last_error = Some(Error::from_status(status));
                    continue;
                }
            };
            check(response.error)?;
            answered = true;
            for p in response.partitions.into_iter().filter(|p| p.local) {
                out.push(ReplicaDescription {
                    partition: p.partition,
                    broker: response.node_id,
                    is_leader: p.leader == Some(response.node_id),
                    log_start_offset: p.log_start_offset,
                    log_end_offset: p.log_end_offset,
                    high_watermark: p.high_watermark,
                    size_bytes: p.size_bytes,
                    segments: p.segments,
                });
            }
        }
        if !answered {
            return Err(last_error.unwrap_or_else(|| Error::Transport("no broker reachable".into())));
        }
        out.sort_by_key(|r| (r.partition, r.broker));
        Ok(out)
    }

    /// Sets (`set`) and removes (`delete`) configuration keys of a topic at
    /// runtime; returns the topic's whole configuration afterwards. The
    /// result is checked first: an invalid value is refused naming the key,
    /// the value and what is allowed.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<BTreeMap<String, String>> {
        let request = pb::AlterTopicConfigRequest { name: name.to_string(), set: set.into_iter().collect(), delete };
        let response = self
            .client
            .call_any(|mut stub| {
                let request = request.clone();
                async move { stub.alter_topic_config(request).await }
            })
            .await?;
        check(response.error)?;
        Ok(response.configs.into_iter().collect())
    }

    /// Grows `topic` to `count` partitions (Kafka's `createPartitions`): the
    /// new ones get as many replicas as partition 0. Partitions are never
    /// removed, so `count` must be above the current one. Records with a
    /// key may go to another partition from then on. Producers of this
    /// client use the new partitions at once; other clients see them at
    /// their next metadata refresh ([`Client::set_metadata_max_age`]), and
    /// consumer groups are given them at their members' next heartbeat.
    /// The new partitions elect leaders within a second or so; see
    /// [`Admin::wait_for_leaders`].
    pub async fn create_partitions(&self, topic: &str, count: u32) -> Result<()> {
        let request = pb::CreatePartitionsRequest { topic: topic.to_string(), count };
        let response = self
            .client
            .call_any(|mut stub| {
                let request = request.clone();
                async move { stub.create_partitions(request).await }
            })
            .await?;
        check(response.error)?;
        self.client.refresh_metadata(&[topic.to_string()]).await
    }

    /// Moves partition `partition` of `topic` to the brokers `replicas` (the
    /// first preferred as leader). Returns once the controller recorded the
    /// new assignment; the partition's leader then brings the new replicas
    /// up to date before they become voters, so follow the move with
    /// [`Admin::describe_topic`].
    pub async fn reassign_partition(&self, topic: &str, partition: u32, replicas: Vec<u64>) -> Result<()> {
        let request = pb::ReassignPartitionRequest { topic: topic.to_string(), partition, replicas };
        let response = self
            .client
            .call_any(|mut stub| {
                let request = request.clone();
                async move { stub.reassign_partition(request).await }
            })
            .await?;
        check(response.error)
    }

    /// Removes broker `id` from the cluster for good: the controller moves
    /// each of its replicas to the least loaded other broker, and the broker
    /// leaves once they are moved. Returns the number of partitions being
    /// moved, once the controller recorded it; follow the moves with
    /// [`Admin::describe_topic`].
    pub async fn remove_broker(&self, id: u64) -> Result<u32> {
        let request = pb::RemoveBrokerRequest { broker_id: id };
        let response = self.client.call_any(|mut stub| async move { stub.remove_broker(request).await }).await?;
        check(response.error)?;
        Ok(response.partitions_moved)
    }

    /// Adds access control bindings (checked on every request by brokers
    /// with `authorization.enabled`). Needs ALTER on the cluster.
    pub async fn create_acls(&self, acls: Vec<AclBinding>) -> Result<()> {
        let request = pb::CreateAclsRequest { acls: acls.iter().map(AclBinding::to_pb).collect() };
        let response = self
            .client
            .call_any(|mut stub| {
                let request = request.clone();
                async move { stub.create_acls(request).await }
            })
            .await?;
        check(response.error)
    }

    /// Removes the bindings `filter` selects, and returns them. Needs
    /// ALTER on the cluster.
    pub async fn delete_acls(&self, filter: AclFilter) -> Result<Vec<AclBinding>> {
        let request = pb::DeleteAclsRequest { filter: Some(filter.to_pb()) };
        let response = self
            .client
            .call_any(|mut stub| {
                let request = request.clone();
                async move { stub.delete_acls(request).await }
            })
            .await?;
        check(response.error)?;
        Ok(response.deleted.into_iter().map(AclBinding::from_pb).collect())
    }

    /// The bindings `filter` selects. Needs DESCRIBE on the cluster.
    pub async fn describe_acls(&self, filter: AclFilter) -> Result<Vec<AclBinding>> {
        let request = pb::DescribeAclsRequest { filter: Some(filter.to_pb()) };
        let response = self
            .client
            .call_any(|mut stub| {
                let request = request.clone();
                async move { stub.describe_acls(request).await }
            })
            .await?;
        check(response.error)?;
        Ok(response.acls.into_iter().map(AclBinding::from_pb).collect())
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

    /// Calls the coordinator of `group`, finding it again while it moves.
    async fn group_call<T, F, Fut>(&self, group: &str, call: F) -> Result<T>
    where
        F: Fn(strata_proto::api::strata_client::StrataClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(Option<pb::Error>, T), tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let request = pb::FindCoordinatorRequest { group: group.to_string() };
            let found = self
                .client
                .call_any(|mut stub| {
                    let request = request.clone();
                    async move { stub.find_coordinator(request).await }
                })
                .await;
            let error = match found {
                Ok(found) => match Error::from_pb(found.error) {
                    Some(e) => e,
                    None => match call(self.client.stub(&found.address)?).await {
                        Ok((error, value)) => match Error::from_pb(error) {
                            None => return Ok(value),
                            Some(e) => e,
                        },
                        Err(status) => Error::from_status(status),
                    },
                },
                Err(e) => e,
            };
            if !error.is_retriable() || tokio::time::Instant::now() >= deadline {
                return Err(error);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Every consumer group of the cluster.
    pub async fn list_groups(&self) -> Result<Vec<String>> {
        self.client.refresh_metadata(&[]).await?;
        let mut all = std::collections::BTreeSet::new();
        for addr in self.client.broker_addrs() {
            let answer = self.client.stub(&addr)?.list_groups(pb::ListGroupsRequest {}).await;
            match answer {
                Ok(answer) => all.extend(answer.into_inner().groups),
                Err(status) => tracing::debug!(broker = %addr, %status, "listing groups failed"),
            }
        }
        Ok(all.into_iter().collect())
    }

    /// A group's state, members, assignment and committed offsets.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let request = pb::DescribeGroupRequest { group: group.to_string() };
        let d = self
            .group_call(group, |mut stub| {
                let request = request.clone();
                async move { stub.describe_group(request).await.map(|r| r.into_inner()).map(|r| (r.error.clone(), r)) }
            })
            .await?;
        Ok(GroupDescription {
            group: d.group,
            state: d.state,
            epoch: d.group_epoch,
            assignor: d.assignor,
            members: d
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    epoch: m.member_epoch,
                    assignment: crate::group::from_pb(m.assignment).into_iter().collect(),
                })
                .collect(),
            offsets: d
                .offsets
                .into_iter()
                .filter(|c| c.offset >= 0)
                .map(|c| (TopicPartition::new(c.topic, c.partition), c.offset as u64))
                .collect(),
            coordinator: d.coordinator,
        })
    }

    /// Deletes a group with no active members, and its offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let request = pb::DeleteGroupRequest { group: group.to_string() };
        self.group_call(group, |mut stub| {
            let request = request.clone();
            async move { stub.delete_group(request).await.map(|r| (r.into_inner().error, ())) }
        })
        .await
    }

    /// Sets a group's committed offsets (the group must have no active
    /// members): the one way offsets go backwards.
    pub async fn reset_offsets(&self, group: &str, offsets: Vec<(TopicPartition, u64)>) -> Result<()> {
        let request = pb::OffsetCommitRequest {
            group: group.to_string(),
            member_id: String::new(),
            member_epoch: -1,
            offsets: offsets
                .into_iter()
                .map(|(tp, offset)| pb::PartitionOffsetCommit {
                    topic: tp.topic,
                    partition: tp.partition,
                    offset,
                    metadata: String::new(),
                })
                .collect(),
        };
        self.group_call(group, |mut stub| {
            let request = request.clone();
            async move { stub.offset_commit(request).await.map(|r| (r.into_inner().error, ())) }
        })
        .await
    }

    /// Deletes the records of `tp` before `offset` (Kafka's DeleteRecords;
    /// `None`: every committed record, up to the high watermark) and
    /// returns the partition's log start offset after it. The records are
    /// gone for every reader at once (a fetch below the new start answers
    /// OFFSET_OUT_OF_RANGE), and the segments wholly below it are removed
    /// from every replica. An offset past the high watermark is refused;
    /// one at or below the current start changes nothing.
    pub async fn delete_records(&self, tp: &TopicPartition, offset: Option<u64>) -> Result<u64> {
        let offset = match offset {
            None => -1,
            Some(o) => i64::try_from(o).map_err(|_| Error::Invalid(format!("offset {o} is too large")))?,
        };
        self.client.delete_records(&tp.topic, tp.partition, offset).await
    }

    /// A partition's earliest (`-2`), latest (`-1`, the log end) or
    /// by-timestamp offset.
    pub async fn list_offset(&self, tp: &TopicPartition, timestamp: i64) -> Result<u64> {
        self.client.list_offset(&tp.topic, tp.partition, timestamp).await
    }
}

/// An access control binding, in Kafka's words (any case): who
/// (`User:NAME`, `User:*` for everyone), which resource (`topic`, `group`
/// or `cluster`; a name, `*` for every name, or a prefix with
/// `pattern_type` `prefixed`), which operation (`all`, `read`, `write`,
/// `create`, `delete`, `alter`, `describe`), and `allow` or `deny`. The
/// broker checks the words and says which are not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclBinding {
    /// `User:NAME`: a client's certificate CN.
    pub principal: String,
    /// `topic`, `group` or `cluster`.
    pub resource_type: String,
    /// The name, `*`, or a prefix (ignored for the cluster).
    pub resource_name: String,
    /// `literal` or `prefixed`.
    pub pattern_type: String,
    /// The operation.
    pub operation: String,
    /// `allow` or `deny`.
    pub permission: String,
}

impl AclBinding {
    /// Allows `principal` to do `operation` to the resource named
    /// `name` (literal) of `resource_type`.
    pub fn allow(principal: &str, operation: &str, resource_type: &str, name: &str) -> AclBinding {
        AclBinding {
            principal: principal.to_string(),
            resource_type: resource_type.to_string(),
            resource_name: name.to_string(),
            pattern_type: "literal".to_string(),
            operation: operation.to_string(),
            permission: "allow".to_string(),
        }
    }

    /// The same binding with a prefix instead of a literal name.
    pub fn prefixed(self) -> AclBinding {
        AclBinding { pattern_type: "prefixed".to_string(), ..self }
    }

    /// The same binding denying instead of allowing.
    pub fn deny(self) -> AclBinding {
        AclBinding { permission: "deny".to_string(), ..self }
    }

    fn to_pb(&self) -> pb::Acl {
        pb::Acl {
            principal: self.principal.clone(),
            resource_type: self.resource_type.clone(),
            resource_name: self.resource_name.clone(),
            pattern_type: self.pattern_type.clone(),
            operation: self.operation.clone(),
            permission: self.permission.clone(),
        }
    }

    fn from_pb(acl: pb::Acl) -> AclBinding {
        AclBinding {
            principal: acl.principal,
            resource_type: acl.resource_type,
            resource_name: acl.resource_name,
            pattern_type: acl.pattern_type,
            operation: acl.operation,
            permission: acl.permission,
        }
    }
}

/// Selects bindings: each field set must equal the binding's (words in any
/// case), each unset one matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct AclFilter {
    pub principal: Option<String>,
    pub resource_type: Option<String>,
    pub resource_name: Option<String>,
    pub pattern_type: Option<String>,
    pub operation: Option<String>,
    pub permission: Option<String>,
}

impl AclFilter {
    fn to_pb(&self) -> pb::AclFilter {
        pb::AclFilter {
            principal: self.principal.clone(),
            resource_type: self.resource_type.clone(),
            resource_name: self.resource_name.clone(),
            pattern_type: self.pattern_type.clone(),
            operation: self.operation.clone(),
            permission: self.permission.clone(),
        }
    }
}
