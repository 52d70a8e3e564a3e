//! [`ClusterNode`]: a node of a cluster bootstrapped from a static peer list,
//! following the controller and running the partition replicas the
//! controller assigns to it.
//!
//! Bootstrap: every node opens the controller group (0); the node with the
//! smallest id initializes it with every peer as a voter (a no-op when it
//! already is). The controller's leader registers the peers as brokers. A
//! reconciler then
//! opens, on each node, the groups of the partitions assigned to it, and the
//! first replica of each initializes its group with the replicas. A node
//! restarted on its data directory recovers its groups and rejoins.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::BasicNode;
use strata_batch::{BatchBuilder, Compression};
use tokio::task::JoinHandle;

use crate::metadata::{CONTROLLER_GROUP, ClusterMetadata, MetadataCommand, TopicInfo, assign_replicas};
use crate::node::{Group, GroupRole, NodeError, RaftNode, RaftNodeConfig};
use crate::partition::{ProduceError, produce};

/// How often the reconciler compares assignments with the open groups.
const RECONCILE_INTERVAL: Duration = Duration::from_millis(100);

/// Errors of cluster operations.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Starting the node or a group failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The controller refused or failed the change.
    #[error(transparent)]
    Produce(#[from] ProduceError),
    /// The request is invalid (bad replication factor, topic exists, ...).
    #[error("{0}")]
    Invalid(String),
}

/// A node of a statically configured cluster.
pub struct ClusterNode {
    node: Arc<RaftNode>,
    controller: Group,
    reconciler: JoinHandle<()>,
}

impl ClusterNode {
    /// Starts the node, bootstraps or rejoins the controller, registers the
    /// broker and starts reconciling its partitions. `peers` maps every
    /// node id of the cluster (this one included) to its Raft address.
    pub async fn start(config: RaftNodeConfig, peers: BTreeMap<u64, String>) -> Result<ClusterNode, ClusterError> {
        let id = config.node_id;
        if !peers.contains_key(&id) {
            return Err(ClusterError::Invalid(format!("node {id} is not in its own peer list")));
        }
        let node = Arc::new(RaftNode::start(config).await?);
        let controller = node.open_group_as(CONTROLLER_GROUP, GroupRole::Controller).await?;
        if peers.keys().next() == Some(&id) {
            let members: BTreeMap<u64, BasicNode> =
                peers.iter().map(|(id, addr)| (*id, BasicNode::new(addr.clone()))).collect();
            // NotAllowed means "already initialized": a restart.
            let _ = controller.raft.initialize(members).await;
        }
        let reconciler = tokio::spawn(reconcile(node.clone(), controller.clone(), peers));
        Ok(ClusterNode { node, controller, reconciler })
    }

    /// The Raft side of this node.
    pub fn raft_node(&self) -> &Arc<RaftNode> {
        &self.node
    }

    /// This node's copy of the cluster metadata.
    pub fn metadata(&self) -> ClusterMetadata {
        self.controller.state_machine.metadata().unwrap_or_default()
    }

    /// Creates a topic (on the controller's leader; NotLeader elsewhere),
    /// assigning replicas over the registered brokers, and returns it as
    /// applied.
    pub async fn create_topic(
        &self,
        name: &str,
        n_partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicInfo, ClusterError> {
        let metadata = self.metadata();
        if metadata.topics.contains_key(name) {
            return Err(ClusterError::Invalid(format!("topic {name} already exists")));
        }
        let brokers: Vec<u64> = metadata.brokers.keys().copied().collect();
        let start = metadata.topics.len();
        let assignment =
            assign_replicas(&brokers, n_partitions, replication_factor, start).map_err(ClusterError::Invalid)?;
        self.propose(MetadataCommand::CreateTopic { name: name.to_string(), assignment, configs }).await?;
        self.metadata()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| ClusterError::Invalid(format!("topic {name} was not created")))
    }

    /// Allocates a producer id (unique in the cluster, increasing).
    pub async fn allocate_producer_id(&self) -> Result<u64, ClusterError> {
        let offset = self.propose(MetadataCommand::AllocateProducerId).await?;
        Ok(offset)
    }

    /// Proposes one command to the controller; returns its offset once applied here.
    async fn propose(&self, command: MetadataCommand) -> Result<u64, ClusterError> {
        propose(&self.controller, &command).await
    }

    /// The node currently leading the controller, if known.
    pub fn controller_leader(&self) -> Option<u64> {
        use openraft::async_runtime::WatchReceiver;
        self.controller.raft.metrics().borrow_watched().current_leader
    }

    /// Stops reconciling and every group, keeping the data.
    pub async fn shutdown(&self) {
        self.reconciler.abort();
        self.node.shutdown().await;
    }
}

/// Proposes one command to the controller group (on its leader).
async fn propose(controller: &Group, command: &MetadataCommand) -> Result<u64, ClusterError> {
    let value = serde_json::to_vec(command).map_err(|e| ClusterError::Invalid(e.to_string()))?;
    let mut builder = BatchBuilder::new();
    builder.push(now_ms(), None, Some(&value), &[]);
    let batch: Bytes = builder.build(Compression::None);
    Ok(produce(controller, batch).await?.base_offset)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Opens the groups assigned to this node and initializes those it is the
/// first replica of.
async fn reconcile(node: Arc<RaftNode>, controller: Group, peers: BTreeMap<u64, String>) {
    let mut initialized: BTreeSet<u64> = BTreeSet::new();
    loop {
        let metadata = controller.state_machine.metadata().unwrap_or_default();
        // The controller's leader registers the static peers as brokers.
        if controller.raft.is_leader() {
            for (id, addr) in &peers {
                if metadata.brokers.get(id).is_none_or(|b| b.raft_addr != *addr) {
                    let command = MetadataCommand::RegisterBroker { id: *id, raft_addr: addr.clone() };
                    if let Err(err) = propose(&controller, &command).await {
                        tracing::debug!(broker = id, error = %err, "broker registration will be retried");
                    }
                }
            }
        }
        for (group_id, replicas) in metadata.groups_of(node.id()) {
            let group = match node.open_group(group_id).await {
                Ok(group) => group,
                Err(err) => {
                    tracing::error!(group = group_id, error = %err, "cannot open an assigned partition");
                    continue;
                }
            };
            if replicas.first() == Some(&node.id()) && !initialized.contains(&group_id) {
                let members: BTreeMap<u64, BasicNode> = replicas
                    .iter()
                    .filter_map(|r| {
                        let addr =
                            metadata.brokers.get(r).map(|b| b.raft_addr.clone()).or_else(|| peers.get(r).cloned());
                        addr.map(|a| (*r, BasicNode::new(a)))
                    })
                    .collect();
                if members.len() == replicas.len() {
                    // NotAllowed means "already initialized" (a restart).
                    let _ = group.raft.initialize(members).await;
                    initialized.insert(group_id);
                }
            }
        }
        tokio::time::sleep(RECONCILE_INTERVAL).await;
    }
}
