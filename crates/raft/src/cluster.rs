//! [`ClusterNode`]: a node of a cluster bootstrapped from a static peer list,
//! following the controller and running the partition replicas the
//! controller assigns to it.
//!
//! Bootstrap: every node opens the controller group (0); the node with the
//! smallest id initializes it with every peer as a voter (a no-op when it
//! already is). The controller's leader registers the peers as brokers. A
//! reconciler then
//! opens, on each node, the groups of the partitions assigned to it, and the
//! first replica of each initializes its group with the replicas (the
//! others do, with the same replicas, when it has not within a few
//! seconds). A node restarted on its data directory recovers its groups
//! and rejoins.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::BasicNode;
use strata_batch::{BatchBuilder, Compression};
use tokio::task::JoinHandle;

use crate::metadata::{
    CONTROLLER_GROUP, ClusterMetadata, MetadataCommand, PartitionInfo, TopicInfo, assign_replicas_live,
};
use crate::node::{Group, GroupRole, NodeError, RaftNode, RaftNodeConfig};
use crate::partition::{ProduceError, produce};

/// How often the reconciler wakes: it then does the controller's part and,
/// while anything is in progress or may have changed, looks at every
/// replica this node is assigned ([`Passes`]).
const RECONCILE_INTERVAL: Duration = Duration::from_millis(100);
/// How often the reconciler looks at every replica when nothing is in
/// progress and nothing changed: a floor for what no trigger reports (a
/// replica found damaged on a read, say).
const RECONCILE_SETTLED_INTERVAL: Duration = Duration::from_secs(1);
/// How long a partition's other initial replicas wait for its first one to
/// start the group before one of them starts it instead: the first replica
/// may have gone down between the topic's creation and its start, and
/// without this the partition would have no leader until it came back,
/// though a majority of its replicas could elect one. Well past the first
/// replica's own wait and its election, whose vote makes the others'
/// start a no-op.
const INITIALIZE_IN_PLACE_OF_FIRST_AFTER: Duration = Duration::from_secs(5);
/// How long after any group saved a vote the reconciler keeps looking at
/// every replica on each wake, so that a leader elected in that time
/// reports itself at once. Longer than an election with a retry.
const RECONCILE_AFTER_VOTE: Duration = Duration::from_secs(5);
/// Longest one reconcile step (a proposal, a learner catching up, a
/// membership change) may take before the pass moves on; it is retried on
/// a later pass, so one unreachable broker never stalls the others.
const RECONCILE_STEP_MAX: Duration = Duration::from_secs(5);
/// A broker that answered no ping for this long takes no new replica while
/// enough others can (see `live_brokers`). Longer than an election timeout
/// (a broker that slow is not one to count on), so that a busy machine's
/// late answers do not make a live broker look down.
const PLACEMENT_SILENCE_MAX: Duration = Duration::from_secs(5);
/// A broker that never answered a ping counts as down only once this node
/// has been up this long: while a cluster starts on a busy machine, peers
/// up and registered went unanswered for seconds (a node's first pings to
/// a peer not yet listening), and placement then left them out. Until
/// then a broker down since before this node started may still be given a
/// partition first, which waits for it.
const PLACEMENT_UNHEARD_MAX: Duration = Duration::from_secs(30);
/// How long a replica moved off a broker that was then removed from the
/// cluster may stay a silent learner before the leader drops it anyway.
const GONE_LEARNER_GRACE: Duration = Duration::from_secs(30);
/// The controller keeps at least this many voters while brokers remain
/// to promote (a removed voter is replaced by an up-to-date learner).
const CONTROLLER_VOTERS_MIN: usize = 3;

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
    /// The change is in the controller's log, but this node did not apply
    /// it in time: it takes effect, the answer could not wait for it.
    #[error("{0}")]
    NotAppliedYet(String),
}

/// A node of a statically configured cluster.
pub struct ClusterNode {
    node: Arc<RaftNode>,
    controller: Group,
    peers: BTreeMap<u64, String>,
    /// Set once this node's copy of the metadata caught up (see
    /// `metadata_caught_up`), by a task watching the controller group from
    /// the start; never cleared.
    caught_up: Arc<std::sync::atomic::AtomicBool>,
    /// The client API address this node announces to the cluster.
    client_addr: Arc<std::sync::Mutex<Option<String>>>,
    reconciler: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl ClusterNode {
    /// Starts the node, bootstraps or rejoins the controller, registers the
    /// broker and starts reconciling its partitions. `peers` maps every
    /// node id of the cluster (this one included) to its Raft address.
    pub async fn start(config: RaftNodeConfig, peers: BTreeMap<u64, String>) -> Result<ClusterNode, ClusterError> {
        if !peers.contains_key(&config.node_id) {
            return Err(ClusterError::Invalid(format!("node {} is not in its own peer list", config.node_id)));
        }
        let node = RaftNode::start(config).await?;
        ClusterNode::start_with(node, peers).await
    }

    /// As [`ClusterNode::start`], on an already bound transport listener.
    pub async fn start_on(
        config: RaftNodeConfig,
        listener: tokio::net::TcpListener,
        peers: BTreeMap<u64, String>,
    ) -> Result<ClusterNode, ClusterError> {
        if !peers.contains_key(&config.node_id) {
            return Err(ClusterError::Invalid(format!("node {} is not in its own peer list", config.node_id)));
        }
        let node = RaftNode::start_on(config, listener).await?;
        ClusterNode::start_with(node, peers).await
    }

    async fn start_with(node: RaftNode, peers: BTreeMap<u64, String>) -> Result<ClusterNode, ClusterError> {
        let id = node.id();
        let node = Arc::new(node);
        let (controller, rebuilt) = open_controller(&node, &peers).await?;
        // A rebuilt replica is empty as a never-started one is, but the
        // group exists: it joins through the leader, never initializes.
        if peers.keys().next() == Some(&id) && !rebuilt {
            let members: BTreeMap<u64, BasicNode> =
                peers.iter().map(|(id, addr)| (*id, BasicNode::new(addr.clone()))).collect();
            // NotAllowed means "already initialized": a restart.
            let _ = controller.raft.initialize(members).await;
        }
        let client_addr = Arc::new(std::sync::Mutex::new(None));
        let reconciler = Reconciler {
            node: node.clone(),
            controller: controller.clone(),
            peers: peers.clone(),
            client_addr: client_addr.clone(),
        };
        let reconciler = tokio::spawn(reconciler.run());
        let caught_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(watch_catch_up(controller.clone(), caught_up.clone()));
        Ok(ClusterNode {
            node,
            controller,
            peers,
            caught_up,
            client_addr,
            reconciler: std::sync::Mutex::new(Some(reconciler)),
        })
    }

    /// Sets the address clients reach this node at; the node registers it
    /// with the controller (and again whenever the metadata disagrees).
    pub fn announce_client_addr(&self, addr: String) {
        *self.client_addr.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }

    /// The Raft side of this node.
    pub fn raft_node(&self) -> &Arc<RaftNode> {
        &self.node
    }

    /// Whether this node's copy of the metadata has caught up with the
    /// controller: it has heard from a leader and applied everything that
    /// leader reported committed. A node just restarted serves stale
    /// metadata until then (topics it does not know yet), so clients are
    /// sent elsewhere meanwhile. Once true, stays true.
    ///
    /// It is latched by a task that sees every change of the controller
    /// group's state, not computed when a client asks: under steady
    /// metadata traffic a node's applied index trails the committed one
    /// for a moment after each commit, and a node first asked in such a
    /// moment (long after it caught up) turned the client away, which then
    /// waited out a retry backoff.
    pub fn metadata_caught_up(&self) -> bool {
        self.caught_up.load(std::sync::atomic::Ordering::Acquire)
    }

    /// This node's copy of the cluster metadata, once it holds every
    /// change the controller had applied when this was called: decisions
    /// made from it (a replica assignment) then see every broker and topic.
    /// (A just-restarted node may otherwise still be replaying its copy.)
    pub async fn sync_metadata(&self) -> Result<Arc<ClusterMetadata>, ClusterError> {
        let offset = self.propose(MetadataCommand::Barrier).await?;
        self.wait_applied(offset).await?;
        Ok(self.metadata())
    }

    /// Waits (at most [`RECONCILE_STEP_MAX`]) until this node's copy of the
    /// metadata has applied the controller record at `offset`.
    async fn wait_applied(&self, offset: u64) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + RECONCILE_STEP_MAX;
        while self.controller.state_machine.high_watermark().0 <= offset {
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::NotAppliedYet(format!(
                    "the change is committed, but this node's copy of the metadata did not apply it within \
                     {RECONCILE_STEP_MAX:?}; it takes effect as the copy catches up"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// This node's copy of the cluster metadata.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.controller.state_machine.metadata().unwrap_or_default()
    }

    /// Creates a topic, assigning replicas over the registered brokers (the
    /// live ones first, see [`assign_replicas_live`]), and returns it as
    /// applied here. Any node may be asked: the command goes to the
    /// controller's leader.
    pub async fn create_topic(
        &self,
        name: &str,
        n_partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicInfo, ClusterError> {
        let metadata = self.sync_metadata().await?;
        if metadata.topics.contains_key(name) {
            return Err(ClusterError::Invalid(format!("topic {name} already exists")));
        }
        let brokers: Vec<u64> = metadata.brokers.keys().copied().collect();
        let start = metadata.topics.len();
        let assignment =
            assign_replicas_live(&brokers, &self.live_brokers(&metadata), n_partitions, replication_factor, |_| start)
                .map_err(ClusterError::Invalid)?;
        self.propose(MetadataCommand::CreateTopic { name: name.to_string(), assignment, configs }).await?;
        // The command was applied on the controller's leader; wait until this
        // node has applied it too, so the caller sees its own write.
        let deadline = tokio::time::Instant::now() + RECONCILE_STEP_MAX;
        loop {
            if let Some(topic) = self.metadata().topics.get(name) {
                return Ok(topic.clone());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::Invalid(format!("topic {name} was not created")));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The registered brokers not known to be down: each answered one of
    /// this node's pings (see `quiesce.rs`) within [`PLACEMENT_SILENCE_MAX`],
    /// or never did while this node has been up for less than
    /// [`PLACEMENT_UNHEARD_MAX`]. New replicas go to them first (see
    /// [`assign_replicas_live`]).
    fn live_brokers(&self, metadata: &ClusterMetadata) -> std::collections::BTreeSet<u64> {
        let quiescence = self.node.quiescence();
        let live = |b: &u64| quiescence.answered_within(*b, PLACEMENT_SILENCE_MAX, PLACEMENT_UNHEARD_MAX);
        metadata.brokers.keys().copied().filter(live).collect()
    }

    /// Grows topic `name` to `total` partitions and returns it as applied
    /// here. The new partitions have as many replicas as partition 0 has
    /// now, spread over the brokers from the one after the last partition's
    /// preferred leader, as if the topic had been created with them (the
    /// live brokers first, see [`assign_replicas_live`]). A partition
    /// cannot be removed: `total` must be larger than the current count.
    pub async fn add_partitions(&self, name: &str, total: u32) -> Result<TopicInfo, ClusterError> {
        let metadata = self.sync_metadata().await?;
        let topic =
            metadata.topics.get(name).ok_or_else(|| ClusterError::Invalid(format!("topic {name} does not exist")))?;
        let from = topic.partitions.len() as u32;
        if total <= from {
            return Err(ClusterError::Invalid(format!(
                "topic {name} has {from} partitions; partitions can only be added (asked for {total})"
            )));
        }
        let brokers: Vec<u64> = metadata.brokers.keys().copied().collect();
        let replication_factor = topic.partitions.first().map_or(1, |p| p.replicas.len()) as u32;
        // Start after the last partition's preferred leader.
        let last_leader = topic.partitions.last().and_then(|p| p.replicas.first());
        let start = |list: &[u64]| last_leader.and_then(|l| list.iter().position(|b| b == l)).map_or(0, |i| i + 1);
        let live = self.live_brokers(&metadata);
        let assignment = assign_replicas_live(&brokers, &live, total - from, replication_factor, start)
            .map_err(ClusterError::Invalid)?;
        let first_group = topic.partitions.first().map_or(0, |p| p.group);
        let command = MetadataCommand::AddPartitions { name: name.to_string(), from, first_group, assignment };
        let offset = self.propose(command).await?;
        self.wait_applied(offset).await?;
        match self.metadata().topics.get(name) {
            Some(topic) if topic.partitions.len() == total as usize => Ok(topic.clone()),
            Some(topic) => Err(ClusterError::Invalid(format!(
                "topic {name} has {} partitions: it changed while {total} were asked for; ask again",
                topic.partitions.len()
            ))),
            None => Err(ClusterError::Invalid(format!("topic {name} was deleted"))),
        }
    }

    /// Deletes a topic; every replica then closes its partitions and removes
    /// their data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClusterError> {
        if !self.metadata().topics.contains_key(name) {
            return Err(ClusterError::Invalid(format!("topic {name} does not exist")));
        }
        self.propose(MetadataCommand::DeleteTopic { name: name.to_string() }).await?;
        let deadline = tokio::time::Instant::now() + RECONCILE_STEP_MAX;
        while self.metadata().topics.contains_key(name) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Sets and removes configuration keys of a topic (checked by the
    /// caller) and returns the topic's configuration once this node has
    /// applied the change.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<BTreeMap<String, String>, ClusterError> {
        if !self.metadata().topics.contains_key(name) {
            return Err(ClusterError::Invalid(format!("topic {name} does not exist")));
        }
        let offset =
            self.propose(MetadataCommand::AlterTopicConfig { name: name.to_string(), configs, delete }).await?;
        // Applied on the controller's leader at `offset`; wait for this
        // node's copy to pass it.
        self.wait_applied(offset).await?;
        let topic = self.metadata().topics.get(name).cloned();
        topic.map(|t| t.configs).ok_or_else(|| ClusterError::Invalid(format!("topic {name} was deleted")))
    }

    /// Adds access control bindings (each validated first) and waits until
    /// this node's copy of the metadata has them.
    pub async fn create_acls(&self, acls: Vec<crate::acl::AclBinding>) -> Result<(), ClusterError> {
        if acls.is_empty() {
            return Err(ClusterError::Invalid("no binding given".into()));
        }
        for acl in &acls {
            acl.validate().map_err(ClusterError::Invalid)?;
        }
        let offset = self.propose(MetadataCommand::CreateAcls { acls }).await?;
        self.wait_applied(offset).await
    }

    /// Removes the bindings `filter` selects; returns those it removed.
    pub async fn delete_acls(
        &self,
        filter: crate::acl::AclFilter,
    ) -> Result<Vec<crate::acl::AclBinding>, ClusterError> {
        let metadata = self.sync_metadata().await?;
        let doomed: Vec<_> = metadata.acls.iter().filter(|acl| filter.matches(acl)).cloned().collect();
        if doomed.is_empty() {
            return Ok(doomed);
        }
        let offset = self.propose(MetadataCommand::DeleteAcls { acls: doomed.clone() }).await?;
        self.wait_applied(offset).await?;
        Ok(doomed)
    }

    /// Registers a broker joining a running cluster (on the controller's
    /// leader); the controller then adds it as a learner so it follows the
    /// metadata.
    pub async fn add_broker(&self, id: u64, raft_addr: &str) -> Result<(), ClusterError> {
        let command = MetadataCommand::RegisterBroker { id, raft_addr: raft_addr.to_string(), client_addr: None };
        self.propose(command).await.map(|_| ())
    }

    /// Moves partition `partition` of `topic` to `replicas` (on the
    /// controller's leader); the partition's leader then changes the group's
    /// membership, new replicas catching up as learners first.
    pub async fn reassign(&self, topic: &str, partition: u32, replicas: Vec<u64>) -> Result<(), ClusterError> {
        let metadata = self.sync_metadata().await?;
        let exists = metadata.topics.get(topic).is_some_and(|t| (partition as usize) < t.partitions.len());
        if !exists {
            return Err(ClusterError::Invalid(format!("no partition {partition} in topic {topic}")));
        }
        if let Some(unknown) = replicas.iter().find(|r| !metadata.brokers.contains_key(r)) {
            return Err(ClusterError::Invalid(format!("broker {unknown} is not registered")));
        }
        if replicas.is_empty() {
            return Err(ClusterError::Invalid("a partition needs at least one replica".into()));
        }
        let command = MetadataCommand::ReassignPartition { topic: topic.to_string(), partition, replicas };
        self.propose(command).await.map(|_| ())
    }

    /// Removes broker `id` from the cluster for good: moves each of its
    /// replicas to the least loaded broker up (else one down) not already
    /// holding the partition (keeping its place in the replica order), then
    /// records the removal. The partitions' leaders carry the moves out as
    /// membership changes; the broker deletes each replica once the move committed,
    /// and the controller drops it from its own group. Returns the number
    /// of partitions moved.
    pub async fn remove_broker(&self, id: u64) -> Result<usize, ClusterError> {
        let metadata = self.sync_metadata().await?;
        if !metadata.brokers.contains_key(&id) {
            return Err(ClusterError::Invalid(format!("broker {id} is not registered")));
        }
        let mut load: BTreeMap<u64, usize> = metadata.brokers.keys().filter(|b| **b != id).map(|b| (*b, 0)).collect();
        for partition in metadata.topics.values().flat_map(|t| &t.partitions) {
            for replica in &partition.replicas {
                load.entry(*replica).and_modify(|n| *n += 1);
            }
        }
        // A broker that is down takes a replica only when no other can: it
        // could not catch up until it came back.
        let live = self.live_brokers(&metadata);
        let mut moves = Vec::new();
        for topic in metadata.topics.values() {
            for (i, partition) in topic.partitions.iter().enumerate() {
                if !partition.replicas.contains(&id) {
                    continue;
                }
                let free = load
                    .iter()
                    .filter(|(b, _)| !partition.replicas.contains(b))
                    .min_by_key(|(b, n)| (!live.contains(b), **n, **b));
                let Some((&target, _)) = free else {
                    return Err(ClusterError::Invalid(format!(
                        "cannot move {}/{i} off broker {id}: each of the other {} brokers already holds it",
                        topic.name,
                        load.len()
                    )));
                };
                *load.entry(target).or_default() += 1;
                let replicas = partition.replicas.iter().map(|r| if *r == id { target } else { *r }).collect();
                moves.push(MetadataCommand::ReassignPartition {
                    topic: topic.name.clone(),
                    partition: i as u32,
                    replicas,
                });
            }
        }
        let moved = moves.len();
        for command in moves {
            self.propose(command).await?;
        }
        let offset = self.propose(MetadataCommand::RemoveBroker { id }).await?;
        // Applied on the controller's leader; once this node's copy has it
        // too, see whether it took (a topic made or grown meanwhile may have
        // put a replica on the broker). A copy slow to catch up proves
        // nothing either way: the removal is reported as done.
        if self.wait_applied(offset).await.is_ok() && !self.metadata().removed_brokers.contains(&id) {
            return Err(ClusterError::Invalid(format!(
                "broker {id} was given a replica while its own were being moved; remove it again"
            )));
        }
        Ok(moved)
    }

    /// Allocates a producer id (unique in the cluster, increasing).
    pub async fn allocate_producer_id(&self) -> Result<u64, ClusterError> {
        let offset = self.propose(MetadataCommand::AllocateProducerId).await?;
        Ok(offset)
    }

    /// Proposes one command to the controller, on its leader wherever that
    /// is; returns its offset once applied there.
    async fn propose(&self, command: MetadataCommand) -> Result<u64, ClusterError> {
        propose_anywhere(&self.node, &self.controller, &self.peers, &command).await
    }

    /// The node currently leading the controller, if known.
    pub fn controller_leader(&self) -> Option<u64> {
        use openraft::async_runtime::WatchReceiver;
        self.controller.raft.metrics().borrow_watched().current_leader
    }

    /// Hands the leadership of every group this node leads to another
    /// voter, and waits (at most `wait`) until none is led here any more:
    /// a node about to stop spares its partitions an election timeout.
    pub async fn hand_over_leadership(&self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let led: Vec<Group> = self.node.groups().into_iter().filter(|g| g.raft.is_leader()).collect();
            if led.is_empty() || tokio::time::Instant::now() >= deadline {
                return;
            }
            for group in &led {
                let (voters, _) = membership_of(group);
                let successor = voters.into_iter().find(|v| *v != self.node.id());
                if let Some(successor) = successor {
                    let _ = group.raft.trigger().transfer_leader(successor).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops reconciling and every group, keeping the data.
    pub async fn shutdown(&self) {
        // Wait for the reconciler to be gone, so it cannot open a group after
        // the node has closed them.
        let reconciler = self.reconciler.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(reconciler) = reconciler {
            reconciler.abort();
            let _ = reconciler.await;
        }
        self.node.shutdown().await;
    }
}

/// Opens this node's replica of the controller group; returns it and
/// whether it was rebuilt. A damaged replica is quarantined and rebuilt as
/// a partition's is (see `Reconciler::open_replica`), but this node has no
/// metadata of its own meanwhile: it reports the damage to the other nodes
/// and asks them until the controller's leader has removed the replica from
/// group 0 (`remove_damaged`), then starts it again empty, to be added back
/// as a learner and sent the metadata. Until then the node does not start.
/// A cluster of one node has nothing to rebuild from: the error stands.
async fn open_controller(node: &RaftNode, peers: &BTreeMap<u64, String>) -> Result<(Group, bool), ClusterError> {
    let me = node.id();
    let others: Vec<(u64, &String)> = peers.iter().filter(|(id, _)| **id != me).map(|(id, a)| (*id, a)).collect();
    let mut complaints = Complaints::default();
    let mut waiting_since = None;
    loop {
        let Some(nonce) = node.rebuild_marker(CONTROLLER_GROUP) else {
            match node.open_group_as(CONTROLLER_GROUP, GroupRole::Controller).await {
                Ok(group) => return Ok((group, false)),
                Err(NodeError::Damaged { reason, .. }) if !others.is_empty() => {
                    tracing::error!(%reason, "controller replica damaged: quarantining it, to be rebuilt from the other nodes");
                    node.quarantine_group(CONTROLLER_GROUP, fresh_nonce()).await?;
                    continue;
                }
                Err(err) => return Err(err.into()),
            }
        };
        if others.is_empty() {
            return Err(NodeError::AwaitingRebuild { group: CONTROLLER_GROUP }.into());
        }
        let since = *waiting_since.get_or_insert_with(|| {
            tracing::warn!(
                nonce,
                "controller replica quarantined: waiting for the other nodes to remove it from the controller"
            );
            tokio::time::Instant::now()
        });
        let (mut removed, mut reported) = (false, false);
        for (id, addr) in &others {
            match node.ask_rebuild(*id, addr, CONTROLLER_GROUP, nonce).await {
                Ok(status) => {
                    removed |= status.removed;
                    reported |= status.reported;
                }
                Err(err) => {
                    tracing::debug!(node = id, error = %err, "no answer about the controller replica's rebuild")
                }
            }
            if removed {
                break;
            }
        }
        if removed {
            let group = node.open_rebuilt_group_as(CONTROLLER_GROUP, GroupRole::Controller).await?;
            tracing::info!(
                waited_ms = since.elapsed().as_millis() as u64,
                "damaged controller replica removed from the controller; starting it again empty"
            );
            return Ok((group, true));
        }
        if !reported {
            let command = MetadataCommand::ReplicaDamaged { group: CONTROLLER_GROUP, node: me, nonce };
            let unknown = ClusterMetadata::default();
            let report = forward_to_controller(node, None, &unknown, peers, command_batch(&command)?);
            if let Err(err) = bounded(report).await {
                complaints.error(CONTROLLER_GROUP, "cannot report the damaged controller replica yet", &err);
            }
        }
        tokio::time::sleep(RECONCILE_INTERVAL).await;
    }
}

/// Proposes one command to the controller group: here when this node leads
/// it, otherwise forwarded over the transport to the node that does.
async fn propose_anywhere(
    node: &RaftNode,
    controller: &Group,
    peers: &BTreeMap<u64, String>,
    command: &MetadataCommand,
) -> Result<u64, ClusterError> {
    let batch = command_batch(command)?;
    let leader = match produce(controller, batch.clone()).await {
        Ok(produced) => return Ok(produced.base_offset),
        Err(ProduceError::NotLeader { leader }) => leader.filter(|l| *l != node.id()),
        Err(err) => return Err(err.into()),
    };
    let metadata = controller.state_machine.metadata().unwrap_or_default();
    forward_to_controller(node, leader, &metadata, peers, batch).await
}

/// Sends one command's batch to the controller's leader: `leader` if
/// known, else every node of `peers` and `metadata`, each of which names
/// the leader if it is not it.
async fn forward_to_controller(
    node: &RaftNode,
    leader: Option<u64>,
    metadata: &ClusterMetadata,
    peers: &BTreeMap<u64, String>,
    batch: Bytes,
) -> Result<u64, ClusterError> {
    let addr_of = |id: u64| metadata.brokers.get(&id).map(|b| b.raft_addr.clone()).or_else(|| peers.get(&id).cloned());
    // The leader this node knows of; else (a node just added, not yet
    // following the controller, knows none) every node it knows, each of
    // which names the leader if it is not it.
    let mut candidates: Vec<u64> = leader.into_iter().collect();
    for id in peers.keys().chain(metadata.brokers.keys()) {
        if *id != node.id() && !candidates.contains(id) {
            candidates.push(*id);
        }
    }
    let mut last = ProduceError::NotLeader { leader: None };
    for id in candidates {
        let Some(addr) = addr_of(id) else { continue };
        match node.forward(id, &addr, CONTROLLER_GROUP, batch.clone()).await {
            Ok(produced) => return Ok(produced.base_offset),
            Err(ProduceError::NotLeader { leader: Some(named) }) if named != node.id() && named != id => {
                let Some(named_addr) = addr_of(named) else { continue };
                match node.forward(named, &named_addr, CONTROLLER_GROUP, batch.clone()).await {
                    Ok(produced) => return Ok(produced.base_offset),
                    Err(err) => last = err,
                }
            }
            Err(err) => last = err,
        }
        if !matches!(last, ProduceError::NotLeader { .. } | ProduceError::Unavailable(_)) {
            break; // refused: another node would refuse it too
        }
    }
    Err(last.into())
}

/// Proposes one command to the controller group here (its leader).
async fn propose(controller: &Group, command: &MetadataCommand) -> Result<u64, ClusterError> {
    Ok(produce(controller, command_batch(command)?).await?.base_offset)
}

/// One metadata command as a batch of one record (its JSON as the value).
fn command_batch(command: &MetadataCommand) -> Result<Bytes, ClusterError> {
    let value = serde_json::to_vec(command).map_err(|e| ClusterError::Invalid(e.to_string()))?;
    let mut builder = BatchBuilder::new();
    builder.push(now_ms(), None, Some(&value), &[]);
    Ok(builder.build(Compression::None))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Sets `caught_up` the first time the controller group has a leader and
/// this node has applied everything that leader reported committed; ends
/// then, or when the group stops.
async fn watch_catch_up(controller: Group, caught_up: Arc<std::sync::atomic::AtomicBool>) {
    use openraft::async_runtime::WatchReceiver;
    let mut metrics = controller.raft.metrics();
    drop(controller);
    loop {
        let done = {
            let m = metrics.borrow_watched();
            m.current_leader.is_some() && m.last_applied.map(|id| id.index) >= m.cluster_committed.map(|id| id.index)
        };
        if done {
            caught_up.store(true, std::sync::atomic::Ordering::Release);
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// When the reconciler's pass over every replica assigned to this node is
/// due. A pass on a node of a thousand replicas touches every one of them
/// (a lookup, its Raft's metrics, its log), which costs an idle cluster
/// more than anything else it does, so it is not made every wake when
/// nothing can have changed: only while the last pass left something in
/// progress (a replica not open, a group not initialized, a leadership
/// not reported, a move or a removal under way), when the metadata
/// changed (the controller applied an entry), for a while after a vote
/// (a leader may have been elected), and otherwise every
/// [`RECONCILE_SETTLED_INTERVAL`].
#[derive(Default)]
struct Passes {
    /// When the last pass was made.
    last: Option<tokio::time::Instant>,
    /// The controller's last applied entry at the last pass.
    applied: Option<crate::types::RaftLogId>,
    /// `log_store::votes_saved` when last looked at.
    votes: u64,
    /// Passes are made every wake until then (a recent vote).
    eager_until: Option<tokio::time::Instant>,
    /// The last pass found everything as the metadata wants it.
    settled: bool,
}

impl Passes {
    /// Whether a pass is due now, the controller having applied up to
    /// `applied`; if so, it is taken as made now.
    fn due(&mut self, applied: Option<crate::types::RaftLogId>) -> bool {
        let now = tokio::time::Instant::now();
        let votes = crate::log_store::votes_saved();
        if votes != self.votes {
            self.votes = votes;
            self.eager_until = Some(now + RECONCILE_AFTER_VOTE);
        }
        let due = !self.settled
            || applied != self.applied
            || self.eager_until.is_some_and(|until| now < until)
            || self.last.is_none_or(|last| now.duration_since(last) >= RECONCILE_SETTLED_INTERVAL);
        if due {
            self.last = Some(now);
            self.applied = applied;
        }
        due
    }
}

/// Whether `group`, this node's replica of `partition`, belongs to a group
/// never started: no leader reported, nothing received or voted here. Only
/// then does a replica initialize it: the first one, or another in its
/// place ([`INITIALIZE_IN_PLACE_OF_FIRST_AFTER`]) while the replicas are
/// still those it was created with. Every replica that starts it starts it
/// with the same membership, which Raft's vote keeps to one leader; a
/// first replica back after another started the group does not campaign
/// against its leader.
fn never_led(group: &Group, partition: &PartitionInfo, metadata: &ClusterMetadata) -> bool {
    use openraft::async_runtime::WatchReceiver;
    let pristine = {
        let watch = group.raft.metrics();
        let metrics = watch.borrow_watched();
        metrics.current_term == 0 && metrics.last_log_index.is_none()
    };
    pristine && !metadata.leaders.contains_key(&partition.group)
}

/// Keeps this node in line with the metadata: registers peers (controller
/// leader), adds brokers to the controller as learners (controller leader),
/// announces this node's client address, opens assigned groups, initializes
/// groups it created, carries out reassignments of groups it leads, and
/// closes the groups of deleted topics.
struct Reconciler {
    node: Arc<RaftNode>,
    controller: Group,
    peers: BTreeMap<u64, String>,
    client_addr: Arc<std::sync::Mutex<Option<String>>>,
}

impl Reconciler {
    async fn run(self) {
        let (node, controller, peers) = (&self.node, &self.controller, &self.peers);
        let mut initialized: BTreeSet<u64> = BTreeSet::new();
        // When this node first saw each group it must initialize: the other
        // replicas learn of it at about the same time, but open it on their
        // own next pass; voting before they have would fail and cost a whole
        // election timeout.
        let mut first_seen: std::collections::HashMap<u64, tokio::time::Instant> = Default::default();
        let mut complaints = Complaints::default();
        let mut reopens = Reopens::default();
        // The term in which this node last reported leading each group.
        let mut reported: std::collections::HashMap<u64, u64> = Default::default();
        let mut passes = Passes::default();
        let mut preferred = PreferredLeaders::default();
        loop {
            // Read before the metadata, which is then at least as new: a
            // change applied in between brings another pass.
            let applied = {
                use openraft::async_runtime::WatchReceiver;
                controller.raft.metrics().borrow_watched().last_applied
            };
            let metadata = controller.state_machine.metadata().unwrap_or_default();
            if controller.raft.is_leader() {
                remove_damaged(&self, controller, &metadata).await;
                reconcile_controller(controller, &metadata, peers).await;
            }
            self.announce(&metadata).await;
            if !passes.due(applied) {
                tokio::time::sleep(RECONCILE_INTERVAL).await;
                continue;
            }
            // Whether every replica is as the metadata wants it, nothing
            // left to retry or wait for.
            let mut settled = true;
            let assigned = metadata.partitions_of(node.id());
            for partition in &assigned {
                let Some(group) = self.open_replica(&metadata, partition.group, &mut complaints, &mut reopens).await
                else {
                    settled = false;
                    continue;
                };
                if partition.initial_replicas.contains(&node.id()) && !initialized.contains(&partition.group) {
                    let first = partition.initial_replicas.first() == Some(&node.id());
                    let as_created = partition.replicas == partition.initial_replicas;
                    if !never_led(&group, partition, &metadata) || (!first && !as_created) {
                        // Started already, or (for a stand-in) no longer
                        // as created: this replica only follows.
                        initialized.insert(partition.group);
                    } else {
                        let seen = *first_seen.entry(partition.group).or_insert_with(tokio::time::Instant::now);
                        let members = nodes_of(&partition.initial_replicas, &metadata, peers);
                        let wait = match (first, partition.initial_replicas.len()) {
                            (true, 1) => Duration::ZERO,
                            (true, _) => RECONCILE_INTERVAL * 3,
                            (false, _) => INITIALIZE_IN_PLACE_OF_FIRST_AFTER,
                        };
                        if members.len() == partition.initial_replicas.len() && seen.elapsed() >= wait {
                            if !first {
                                tracing::info!(
                                    group = partition.group,
                                    first = ?partition.initial_replicas.first(),
                                    "the partition's first replica has not started its group; starting it here"
                                );
                            }
                            // NotAllowed means "already initialized" (a
                            // restart) or, on another replica, that this
                            // one has voted or received entries already.
                            let _ = bounded(group.raft.initialize(members)).await;
                            initialized.insert(partition.group);
                        } else {
                            settled = false;
                        }
                    }
                }
                if group.raft.is_leader() {
                    use openraft::async_runtime::WatchReceiver;
                    let term = group.raft.metrics().borrow_watched().current_term;
                    let hint = metadata.leaders.get(&group.id).map(|h| (h.node, h.term));
                    // Until the report is applied (the metadata's change
                    // brings the next pass anyway).
                    settled &= hint == Some((node.id(), term));
                    if hint != Some((node.id(), term)) && reported.get(&group.id) != Some(&term) {
                        let command = MetadataCommand::LeaderChanged { group: group.id, node: node.id(), term };
                        match bounded(propose_anywhere(node, controller, peers, &command)).await {
                            Ok(_) => {
                                reported.insert(group.id, term);
                            }
                            Err(err) => {
                                tracing::debug!(group = group.id, error = %err, "reporting leadership will be retried")
                            }
                        }
                    }
                }
                if group.raft.is_leader() {
                    if remove_damaged(&self, &group, &metadata).await {
                        settled = false;
                    } else if move_replicas(&group, &partition.replicas, &metadata, peers).await {
                        preferred.check(node, &group, partition, &metadata).await;
                    } else {
                        settled = false;
                    }
                }
            }
            // Groups of topics deleted since they were opened, and replicas
            // moved away once this replica knows a committed membership in
            // which it no longer votes: the new voters then hold everything
            // committed. (A replica moved away stays a learner until then,
            // see `move_replicas`, so it does learn of that commit.)
            let assigned: BTreeSet<u64> = assigned.iter().map(|p| p.group).collect();
            let unassigned =
                node.group_ids().into_iter().filter(|id| *id != CONTROLLER_GROUP && !assigned.contains(id));
            for group in unassigned.filter_map(|id| node.group(id)) {
                settled = false;
                let deleted = metadata.partition_of_group(group.id).is_none();
                if !deleted && group.raft.is_leader() {
                    // A leader moved away carries the move out itself, then
                    // steps down once the new voters committed it.
                    let replicas = metadata
                        .topics
                        .values()
                        .flat_map(|t| &t.partitions)
                        .find(|p| p.group == group.id)
                        .map(|p| p.replicas.clone())
                        .unwrap_or_default();
                    move_replicas(&group, &replicas, &metadata, peers).await;
                }
                let moved_away = !deleted && {
                    use openraft::async_runtime::WatchReceiver;
                    let committed = group.raft.metrics().borrow_watched().committed_membership_config.clone();
                    !committed.membership().voter_ids().any(|id| id == node.id())
                };
                if deleted || moved_away {
                    let what = if deleted { "a deleted partition" } else { "a replica moved away" };
                    tracing::info!(group = group.id, "removing {what}");
                    if let Err(err) = node.close_group(group.id, true).await {
                        tracing::warn!(group = group.id, error = %err, "cannot remove {what}");
                    }
                }
            }
            if metadata.removed_brokers.contains(&node.id())
                && !metadata.left_brokers.contains(&node.id())
                && node.groups().iter().all(|g| g.id == CONTROLLER_GROUP)
            {
                // Until the report is applied.
                settled = false;
                let command = MetadataCommand::BrokerLeft { id: node.id() };
                match bounded(propose_anywhere(node, controller, peers, &command)).await {
                    Ok(_) => tracing::info!("this broker was removed and has handed over every replica"),
                    Err(err) => tracing::debug!(error = %err, "reporting the end of the removal will be retried"),
                }
            }
            passes.settled = settled;
            tokio::time::sleep(RECONCILE_INTERVAL).await;
        }
    }

    /// This node's replica of `group`, opened if needed; `None` while it
    /// cannot run. A damaged replica is quarantined and rebuilt: the node
    /// reports it to the controller, the group's leader removes it from the
    /// group (`remove_damaged`), and then this node starts it again empty,
    /// to be added back like a new replica and sent a snapshot and the log.
    ///
    /// A replica whose Raft stopped after a storage error other than damage
    /// is closed and opened again, after a pause that grows while it keeps
    /// stopping ([`Reopens`]).
    async fn open_replica(
        &self,
        metadata: &ClusterMetadata,
        group: u64,
        complaints: &mut Complaints,
        reopens: &mut Reopens,
    ) -> Option<Group> {
        let node = &self.node;
        let me = node.id();
        // An open replica has no rebuild marker (quarantining closes it
        // first; a rebuild removes the marker before opening it), so the
        // common case is answered from memory, without reading the data
        // directory on the runtime's thread every tick for every group.
        let damage = match node.group(group) {
            Some(open) => match (open.log.damage(), open.stopped_by()) {
                (None, None) => return Some(open),
                // Raft stopped on a storage error that is not damage (a write
                // to a full disk, most often): reopen the replica from disk,
                // as a restart of the node would, once its pause is over.
                // Opening syncs everything it recovers, so what the reopened
                // replica then reports durable is; if the cause persists, it
                // stops again and the next pause is longer.
                (None, Some(reason)) => {
                    if !reopens.due(group, tokio::time::Instant::now()) {
                        return Some(open);
                    }
                    tracing::warn!(group, %reason, "reopening a replica whose Raft stopped after an error");
                    if let Err(err) = node.close_group(group, false).await {
                        complaints.error(group, "cannot close a stopped replica to reopen it", &err);
                        return Some(open);
                    }
                    None
                }
                // Damage found while running (a sealed segment's first read).
                (Some(reason), _) => Some(reason),
            },
            None => None,
        };
        if let Some(nonce) = node.rebuild_marker(group) {
            if metadata.removed_replica(group, me) == Some(nonce) {
                match node.open_rebuilt_group(group).await {
                    Ok(opened) => {
                        tracing::info!(group, "damaged replica removed from its group; starting it again empty");
                        return Some(opened);
                    }
                    Err(err) => complaints.error(group, "cannot start a rebuilt replica", &err),
                }
            } else if metadata.damaged_replica(group, me) != Some(nonce) {
                let command = MetadataCommand::ReplicaDamaged { group, node: me, nonce };
                if let Err(err) = bounded(propose_anywhere(node, &self.controller, &self.peers, &command)).await {
                    tracing::debug!(group, error = %err, "reporting a damaged replica will be retried");
                }
            }
            return None;
        }
        let opened = match damage {
            Some(reason) => Err(NodeError::Damaged { group, reason }),
            None => node.open_group(group).await,
        };
        match opened {
            Ok(opened) => Some(opened),
            Err(NodeError::Damaged { reason, .. }) => {
                tracing::error!(group, %reason, "replica damaged: quarantining it, to be rebuilt from the other replicas");
                if let Err(err) = node.quarantine_group(group, fresh_nonce()).await {
                    complaints.error(group, "cannot quarantine a damaged replica", &err);
                }
                None
            }
            Err(err) => {
                complaints.error(group, "cannot open an assigned partition", &err);
                None
            }
        }
    }

    /// Registers this node's client address when the metadata lacks it.
    async fn announce(&self, metadata: &ClusterMetadata) {
        let wanted = self.client_addr.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(wanted) = wanted else { return };
        let id = self.node.id();
        let Some(raft_addr) = self.peers.get(&id).cloned() else { return };
        if metadata.removed_brokers.contains(&id) {
            return;
        }
        if metadata.brokers.get(&id).is_some_and(|b| b.client_addr.as_deref() == Some(wanted.as_str())) {
            return;
        }
        let command = MetadataCommand::RegisterBroker { id, raft_addr, client_addr: Some(wanted) };
        if let Err(err) = bounded(propose_anywhere(&self.node, &self.controller, &self.peers, &command)).await {
            tracing::debug!(error = %err, "announcing the client address will be retried");
        }
    }
}

fn nodes_of(ids: &[u64], metadata: &ClusterMetadata, peers: &BTreeMap<u64, String>) -> BTreeMap<u64, BasicNode> {
    ids.iter()
        .filter_map(|r| {
            let addr = metadata.brokers.get(r).map(|b| b.raft_addr.clone()).or_else(|| peers.get(r).cloned());
            addr.map(|a| (*r, BasicNode::new(a)))
        })
        .collect()
}

/// When each leader first saw a group's committed membership leave
/// learners behind, by (leader node, group).
static LEAVING_SINCE: std::sync::Mutex<BTreeMap<(u64, u64), std::time::Instant>> =
    std::sync::Mutex::new(BTreeMap::new());

/// Whether every node of `nodes` knows the group's committed membership is
/// committed: each has it in its log and answered a heartbeat sent after the
/// leader first saw it committed (a heartbeat carries the commit index).
fn has_committed_membership(group: &Group, nodes: &BTreeSet<u64>) -> bool {
    use openraft::async_runtime::WatchReceiver;
    let metrics = group.raft.metrics().borrow_watched().clone();
    let Some(at) = *metrics.committed_membership_config.log_id() else { return false };
    let since = *LEAVING_SINCE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((metrics.id, group.id))
        .or_insert_with(std::time::Instant::now);
    let replication = metrics.replication.unwrap_or_default();
    let heartbeat = metrics.heartbeat.unwrap_or_default();
    nodes.iter().all(|node| {
        let matched = replication.get(node).cloned().flatten().is_some_and(|m| m.index >= at.index);
        let acked_after = heartbeat
            .get(node)
            .cloned()
            .flatten()
            .is_some_and(|acked| openraft::Instant::elapsed(&*acked) < since.elapsed());
        matched && acked_after
    })
}

/// How long the leader has seen the group's committed membership leave
/// learners behind (see `has_committed_membership`).
fn leaving_for(group: &Group) -> Duration {
    use openraft::async_runtime::WatchReceiver;
    let me = group.raft.metrics().borrow_watched().id;
    let since = LEAVING_SINCE.lock().unwrap_or_else(|p| p.into_inner()).get(&(me, group.id)).copied();
    since.map_or(Duration::ZERO, |s| s.elapsed())
}

/// Whether the group's last membership change is not committed yet (a new
/// one would be refused until it is).
fn membership_change_pending(group: &Group) -> bool {
    use openraft::async_runtime::WatchReceiver;
    let metrics = group.raft.metrics().borrow_watched().clone();
    metrics.membership_config.log_id() != metrics.committed_membership_config.log_id()
}

fn membership_of(group: &Group) -> (BTreeSet<u64>, BTreeSet<u64>) {
    use openraft::async_runtime::WatchReceiver;
    let metrics = group.raft.metrics().borrow_watched().clone();
    let membership = metrics.membership_config.membership();
    (membership.voter_ids().collect(), membership.nodes().map(|(id, _)| *id).collect())
}

/// On the controller's leader: registers static peers and makes every
/// broker at least a learner of the controller, so it follows the metadata.
async fn reconcile_controller(controller: &Group, metadata: &ClusterMetadata, peers: &BTreeMap<u64, String>) {
    for (id, addr) in peers {
        let removed = metadata.removed_brokers.contains(id);
        if !removed && metadata.brokers.get(id).is_none_or(|b| b.raft_addr != *addr) {
            let command = MetadataCommand::RegisterBroker { id: *id, raft_addr: addr.clone(), client_addr: None };
            if let Err(err) = bounded(propose(controller, &command)).await {
                tracing::debug!(broker = id, error = %err, "broker registration will be retried");
            }
        }
    }
    let (voters, members) = membership_of(controller);
    // Removed brokers leave the controller group too, once they handed
    // over their replicas (they follow the metadata until then).
    for gone in members.iter().filter(|m| metadata.left_brokers.contains(m)) {
        if voters.len() == 1 && voters.contains(gone) {
            continue;
        }
        let change = if voters.contains(gone) {
            openraft::ChangeMembers::RemoveVoters(BTreeSet::from([*gone]))
        } else {
            openraft::ChangeMembers::RemoveNodes(BTreeSet::from([*gone]))
        };
        change_controller(controller, change, false, *gone, "removed broker left the controller").await;
        return;
    }
    use openraft::async_runtime::WatchReceiver;
    let metrics = controller.raft.metrics().borrow_watched().clone();
    let last = metrics.last_log_index.unwrap_or(0);
    let replication = metrics.replication.clone().unwrap_or_default();
    // This node (the leader), or a member that has the leader's log but
    // for at most the last entry.
    let caught_up = |m: &u64| {
        *m == metrics.id || replication.get(m).cloned().flatten().is_some_and(|matched| matched.index + 1 >= last)
    };
    let (removed_voters, staying): (Vec<u64>, Vec<u64>) =
        voters.iter().partition(|v| metadata.removed_brokers.contains(v));
    // A broker whose replica of the controller is damaged is left out
    // until `remove_damaged` has removed it and it started again empty.
    let damaged = |b: &u64| metadata.damaged_replica(CONTROLLER_GROUP, *b).is_some();
    // Keep at least three controller voters while there are brokers to
    // spare: promote a learner that is up to date (before a removed voter
    // stops voting).
    if staying.len() < CONTROLLER_VOTERS_MIN {
        let ready = members
            .iter()
            .filter(|m| !voters.contains(m) && metadata.brokers.contains_key(m) && !damaged(m))
            .find(|m| caught_up(m));
        if let Some(&learner) = ready {
            let change = openraft::ChangeMembers::AddVoterIds(BTreeSet::from([learner]));
            change_controller(controller, change, false, learner, "broker promoted to controller voter").await;
            return;
        }
    }
    // A removed broker stops voting as soon as the voters that stay can
    // commit without it, and follows the metadata as a learner until it
    // has left. It may have been removed because it is down for good: as a
    // voter it would count against the quorum until it reports that it
    // left, which a dead broker never does, and one more failure would
    // leave the controller without a majority.
    if let Some(&removed) = removed_voters.first() {
        let quorum = staying.len() / 2 + 1;
        if !staying.is_empty() && staying.iter().filter(|v| caught_up(v)).count() >= quorum {
            let change = openraft::ChangeMembers::RemoveVoters(BTreeSet::from([removed]));
            change_controller(controller, change, true, removed, "removed broker no longer votes in the controller")
                .await;
            return;
        }
    }
    for broker in metadata.brokers.values() {
        if !members.contains(&broker.id) && !damaged(&broker.id) {
            let node = BasicNode::new(broker.raft_addr.clone());
            if let Err(err) = bounded(controller.raft.add_learner(broker.id, node, false)).await {
                tracing::debug!(broker = broker.id, error = %err, "adding the broker to the controller will be retried");
            }
        }
    }
}

/// One membership change of the controller's group about `broker`, on its
/// leader: `done` is logged once it commits; a failure is logged quietly
/// and the reconciler's next pass tries again.
async fn change_controller(
    controller: &Group,
    change: openraft::ChangeMembers<u64, BasicNode>,
    retain: bool,
    broker: u64,
    done: &str,
) {
    match bounded(controller.raft.change_membership(change, retain)).await {
        Ok(_) => tracing::info!(broker, "{done}"),
        Err(err) => tracing::debug!(broker, error = %err, "controller membership change will be retried: {done}"),
    }
}

/// On a partition's leader (or the controller's, for its own group):
/// removes the replicas reported damaged from the group, then tells the
/// controller (`ReplicaRemoved`) so their nodes start them again empty;
/// `move_replicas` (`reconcile_controller`) adds them back afterwards. Returns
/// whether any damaged replica of the group is still being dealt with.
async fn remove_damaged(reconciler: &Reconciler, group: &Group, metadata: &ClusterMetadata) -> bool {
    use openraft::async_runtime::WatchReceiver;
    let damaged: Vec<_> = metadata.damaged.iter().filter(|r| r.group == group.id).copied().collect();
    for replica in &damaged {
        let (voters, members) = membership_of(group);
        if members.contains(&replica.node) {
            if voters.len() == 1 && voters.contains(&replica.node) {
                continue; // the only voter: nothing to rebuild it from
            }
            if membership_change_pending(group) {
                continue;
            }
            group.ensure_awake().await;
            let change = if voters.contains(&replica.node) {
                openraft::ChangeMembers::RemoveVoters(BTreeSet::from([replica.node]))
            } else {
                openraft::ChangeMembers::RemoveNodes(BTreeSet::from([replica.node]))
            };
            if let Err(err) = bounded(group.raft.change_membership(change, false)).await {
                tracing::debug!(group = group.id, node = replica.node, error = %err, "removing a damaged replica will be retried");
            }
            continue;
        }
        let committed = group.raft.metrics().borrow_watched().committed_membership_config.clone();
        if committed.membership().nodes().any(|(id, _)| *id == replica.node) {
            continue; // the removal is not committed yet
        }
        let command = MetadataCommand::ReplicaRemoved { group: group.id, node: replica.node, nonce: replica.nonce };
        match bounded(propose_anywhere(&reconciler.node, &reconciler.controller, &reconciler.peers, &command)).await {
            Ok(_) => {
                tracing::info!(group = group.id, node = replica.node, "damaged replica removed; it will be rebuilt")
            }
            Err(err) => tracing::debug!(group = group.id, error = %err, "reporting a removed replica will be retried"),
        }
    }
    !damaged.is_empty()
}

/// A nonce naming one quarantine: unique enough per node and group.
fn fresh_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Hands each partition's leadership back to its preferred replica (the
/// first of its replicas, over which topic creation spreads the leaders),
/// as Kafka's `auto.leader.rebalance.enable` does: after a broker restarts
/// or comes back from a partition, the others would otherwise keep leading
/// its partitions, and a rolling restart would leave every leader on the
/// broker restarted first. The leader hands over once it has led for
/// [`PREFERRED_LEADER_AFTER`] and the preferred replica has been up (it
/// answers pings), a voter, and caught up to within
/// [`PREFERRED_LEADER_LAG_MAX`] entries for as long; at most once per
/// [`PREFERRED_LEADER_RETRY`] per partition. openraft's transfer stops new
/// proposals on the old leader until the new one has its whole log and is
/// elected.
#[derive(Default)]
struct PreferredLeaders {
    /// Per group this node leads: the term and when it was first seen
    /// leading in it.
    leading: std::collections::HashMap<u64, (u64, tokio::time::Instant)>,
    /// Per group: since when its preferred replica has been ready.
    ready: std::collections::HashMap<u64, tokio::time::Instant>,
    /// Per group: when its leadership was last handed to the preferred one.
    handed: std::collections::HashMap<u64, tokio::time::Instant>,
}

/// See [`PreferredLeaders`]. Longer than a node's graceful stop, which
/// hands its leaderships away first, so that they are not handed back to
/// a node about to go.
const PREFERRED_LEADER_AFTER: Duration = Duration::from_secs(15);
/// See [`PreferredLeaders`].
const PREFERRED_LEADER_LAG_MAX: u64 = 64;
/// See [`PreferredLeaders`].
const PREFERRED_LEADER_RETRY: Duration = Duration::from_secs(60);
/// A preferred replica that answered no ping for this long is not handed
/// a leadership.
const PREFERRED_LEADER_SILENCE_MAX: Duration = Duration::from_secs(2);

impl PreferredLeaders {
    /// On the leader of `group`, whose members are `partition`'s replicas.
    async fn check(&mut self, node: &RaftNode, group: &Group, partition: &PartitionInfo, metadata: &ClusterMetadata) {
        use openraft::async_runtime::WatchReceiver;
        let Some(&preferred) = partition.replicas.first() else { return };
        if preferred == node.id() {
            return;
        }
        let now = tokio::time::Instant::now();
        let (term, last, matched) = {
            let metrics = group.raft.metrics().borrow_watched().clone();
            let matched = metrics.replication.as_ref().and_then(|r| r.get(&preferred).cloned()).flatten();
            (metrics.current_term, metrics.last_log_index.unwrap_or(0), matched.map(|m| m.index))
        };
        let leading = self.leading.entry(group.id).or_insert((term, now));
        if leading.0 != term {
            *leading = (term, now);
        }
        let leading_since = leading.1;
        let ready = !metadata.removed_brokers.contains(&preferred)
            && node.quiescence().answered_within(preferred, PREFERRED_LEADER_SILENCE_MAX, Duration::ZERO)
            && matched.is_some_and(|m| m + PREFERRED_LEADER_LAG_MAX >= last);
        if !ready {
            self.ready.remove(&group.id);
            return;
        }
        let ready_since = *self.ready.entry(group.id).or_insert(now);
        let long_enough = |since: tokio::time::Instant| now.duration_since(since) >= PREFERRED_LEADER_AFTER;
        let handed_lately =
            self.handed.get(&group.id).is_some_and(|at| now.duration_since(*at) < PREFERRED_LEADER_RETRY);
        if !long_enough(leading_since) || !long_enough(ready_since) || handed_lately {
            return;
        }
        self.handed.insert(group.id, now);
        tracing::info!(group = group.id, to = preferred, "handing the leadership back to the preferred replica");
        group.ensure_awake().await;
        if let Err(err) = group.raft.trigger().transfer_leader(preferred).await {
            tracing::warn!(group = group.id, error = %err, "cannot hand the leadership to the preferred replica");
        }
    }
}

/// Errors the reconciler meets on every pass, logged at most once per
/// `COMPLAINT_INTERVAL` per group (with the count of repeats in between)
/// instead of every 100 ms.
#[derive(Default)]
struct Complaints {
    last: std::collections::HashMap<u64, (tokio::time::Instant, u64)>,
}

const COMPLAINT_INTERVAL: Duration = Duration::from_secs(30);

impl Complaints {
    fn error(&mut self, group: u64, what: &str, err: &dyn std::fmt::Display) {
        let now = tokio::time::Instant::now();
        match self.last.get_mut(&group) {
            Some((at, repeats)) if now.duration_since(*at) < COMPLAINT_INTERVAL => *repeats += 1,
            _ => {
                let repeats = self.last.insert(group, (now, 0)).map_or(0, |(_, n)| n);
                tracing::error!(group, error = %err, repeats, "{what}");
            }
        }
    }
}

/// When to reopen replicas whose Raft stopped after a storage error (see
/// `Reconciler::open_replica`): first [`REOPEN_PAUSE_MIN`] after the stop
/// is seen, then after pauses that double, up to [`REOPEN_PAUSE_MAX`], while
/// the replica keeps stopping; a replica that ran for
/// [`REOPEN_FORGET_AFTER`] since its last reopen starts again from the
/// shortest pause. A disk that filled and was then freed is back in use
/// within a pause, without restarting the node.
#[derive(Default)]
struct Reopens {
    by_group: std::collections::HashMap<u64, Reopen>,
}

struct Reopen {
    /// The pause before the next reopen.
    pause: Duration,
    /// When the replica is to be reopened; `None` once it was, until it is
    /// seen stopped again.
    at: Option<tokio::time::Instant>,
    /// When it was last reopened.
    reopened: Option<tokio::time::Instant>,
}

const REOPEN_PAUSE_MIN: Duration = Duration::from_secs(2);
const REOPEN_PAUSE_MAX: Duration = Duration::from_secs(60);
const REOPEN_FORGET_AFTER: Duration = Duration::from_secs(600);

impl Reopens {
    /// Whether `group`, seen stopped at `now`, is to be reopened now; if
    /// so, it is taken as reopened.
    fn due(&mut self, group: u64, now: tokio::time::Instant) -> bool {
        let reopen = self.by_group.entry(group).or_insert(Reopen { pause: REOPEN_PAUSE_MIN, at: None, reopened: None });
        let Some(at) = reopen.at else {
            // A new stop: after a long run, the shortest pause again.
            if reopen.reopened.is_some_and(|last| now.duration_since(last) >= REOPEN_FORGET_AFTER) {
                reopen.pause = REOPEN_PAUSE_MIN;
            }
            reopen.at = Some(now + reopen.pause);
            return false;
        };
        if now < at {
            return false;
        }
        reopen.at = None;
        reopen.reopened = Some(now);
        reopen.pause = (reopen.pause * 2).min(REOPEN_PAUSE_MAX);
        true
    }
}

/// On a partition's leader: makes the group's voters the assigned replicas,
/// adding new ones as learners first (blocking until they catch up).
/// Returns whether there was nothing to do: the group's members were
/// already exactly the assigned replicas.
async fn move_replicas(
    group: &Group,
    replicas: &[u64],
    metadata: &ClusterMetadata,
    peers: &BTreeMap<u64, String>,
) -> bool {
    let wanted: BTreeSet<u64> = replicas.iter().copied().collect();
    let (voters, members) = membership_of(group);
    if voters == wanted && members == wanted {
        return true;
    }
    if voters == wanted {
        // Replicas moved away were kept as learners, so that they learn
        // of the committed membership that drops them and delete their
        // copy; once they have it, they leave the group altogether.
        // A removed broker that stays silent (stopped for good) is dropped
        // after `GONE_LEARNER_GRACE` without its acknowledgement.
        let leaving: BTreeSet<u64> = members.difference(&wanted).copied().collect();
        let ready: BTreeSet<u64> = leaving
            .iter()
            .copied()
            .filter(|n| {
                has_committed_membership(group, &BTreeSet::from([*n]))
                    || (!metadata.brokers.contains_key(n) && leaving_for(group) >= GONE_LEARNER_GRACE)
            })
            .collect();
        if !ready.is_empty() && !membership_change_pending(group) {
            group.ensure_awake().await;
            let remove = openraft::ChangeMembers::RemoveNodes(ready);
            match bounded(group.raft.change_membership(remove, false)).await {
                Ok(_) => {
                    use openraft::async_runtime::WatchReceiver;
                    let me = group.raft.metrics().borrow_watched().id;
                    LEAVING_SINCE.lock().unwrap_or_else(|p| p.into_inner()).remove(&(me, group.id));
                }
                Err(err) => {
                    tracing::debug!(group = group.id, error = %err, "removing replicas moved away will be retried")
                }
            }
        }
        return false;
    }
    group.ensure_awake().await;
    for (id, node) in nodes_of(replicas, metadata, peers) {
        if !members.contains(&id) {
            if let Err(err) = bounded(group.raft.add_learner(id, node, true)).await {
                tracing::debug!(group = group.id, learner = id, error = %err, "adding a replica will be retried");
                return false;
            }
        }
    }
    if membership_change_pending(group) {
        return false; // openraft would refuse (and log an error): retried next pass
    }
    // `retain`: voters dropped stay learners for now (see above).
    if let Err(err) = bounded(group.raft.change_membership(wanted, true)).await {
        tracing::debug!(group = group.id, error = %err, "membership change will be retried");
    }
    false
}

/// Runs one reconcile step for at most `RECONCILE_STEP_MAX`; a step that
/// takes longer is abandoned (as an error) and retried on a later pass.
async fn bounded<T, E: std::fmt::Display>(step: impl std::future::Future<Output = Result<T, E>>) -> Result<T, String> {
    match tokio::time::timeout(RECONCILE_STEP_MAX, step).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("step took over {RECONCILE_STEP_MAX:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At which of the given seconds (each a pass that sees the replica
    /// stopped, or running when negative) a replica is reopened.
    fn check(passes: &[i64], expected_reopens: &[i64]) {
        let start = tokio::time::Instant::from_std(std::time::Instant::now());
        let mut reopens = Reopens::default();
        let mut reopened = Vec::new();
        for &second in passes {
            if second < 0 {
                continue; // running: the reconciler does not ask
            }
            if reopens.due(7, start + Duration::from_secs(second as u64)) {
                reopened.push(second);
            }
        }
        assert_eq!(reopened, expected_reopens);
    }

    #[test]
    fn a_stopped_replica_is_reopened_after_pauses_that_double_up_to_a_minute() {
        // Seen stopped every second: reopened 2 s after the first sight, then
        // (each reopen failing at once) after 4, 8, 16, 32, 60, 60 s.
        let passes: Vec<i64> = (0..300).collect();
        check(&passes, &[2, 7, 16, 33, 66, 127, 188, 249]);
    }

    #[test]
    fn a_replica_that_ran_long_after_its_reopen_starts_again_from_the_shortest_pause() {
        // Stopped at 0 (reopened at 2), again at 3 (reopened at 7: 4 s), then
        // it runs for 20 minutes and stops at 1207: 2 s again, not 8.
        let mut passes: Vec<i64> = (0..=7).collect();
        passes.push(-1);
        passes.extend(1207..=1212);
        check(&passes, &[2, 7, 1209]);
        // Stopping again soon after a reopen keeps the longer pause.
        let mut passes: Vec<i64> = (0..=7).collect();
        passes.push(-1);
        passes.extend(100..=120);
        check(&passes, &[2, 7, 108]);
    }
}
