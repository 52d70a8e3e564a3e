//! [`RaftNode`]: the Raft side of one Strata node — its transport server,
//! its connections to peers, its flusher, and the groups it runs (one per
//! partition replica, plus, later, the metadata group).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use strata_log::io::fs::FsDir;
use strata_log::{Flusher, Log, LogConfig};
use tokio::sync::{oneshot, watch};

use crate::limits::{FORWARD_TIMEOUT, SERVER_STOP_GRACE};
use crate::log_store::LogStore;
use crate::metadata::CONTROLLER_GROUP;
use crate::network::client::GroupNetworkFactory;
use crate::network::convert::propose_reply_from_pb;
use crate::network::faults::TransportFaults;
use crate::network::peer::Peers;
use crate::network::server::{GroupRaft, Router, TransportService};
use crate::partition::ProduceGate;
use crate::partition::{ProduceError, Produced};
use crate::quiesce::{QuiesceTiming, Quiescence};
use crate::state_machine::PartitionStateMachine;

/// Errors of starting a node or opening a group.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The storage engine refused to open a log.
    #[error("open log of group {group}: {source}")]
    Log {
        /// The group.
        group: u64,
        /// The engine's error.
        #[source]
        source: strata_log::LogError,
    },
    /// openraft refused the configuration or failed to start.
    #[error("raft: {0}")]
    Raft(String),
    /// The peer transport's TLS material is unusable.
    #[error("{0}")]
    Tls(String),
    /// The group's stored data is damaged (a checksum mismatch, a cut-off
    /// sealed segment, an unreadable snapshot): this replica cannot be
    /// trusted and must be rebuilt from the others (see `quarantine_group`).
    #[error("replica of group {group} is damaged: {reason}")]
    Damaged {
        /// The group.
        group: u64,
        /// What was found.
        reason: String,
    },
    /// The group's replica was quarantined and waits until the other
    /// replicas removed it from the group before it may start again, empty.
    #[error("replica of group {group} is waiting to be rebuilt")]
    AwaitingRebuild {
        /// The group.
        group: u64,
    },
}

/// What another node's copy of the metadata says of a quarantined replica
/// (see [`RaftNode::ask_rebuild`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildStatus {
    /// Its removal from the group is recorded: it may start again, empty.
    pub removed: bool,
    /// Its damage is recorded and the removal is still to come.
    pub reported: bool,
}

/// How a node runs.
#[derive(Debug, Clone)]
pub struct RaftNodeConfig {
    /// This node's id (unique in the cluster, never reused).
    pub node_id: u64,
    /// Where the transport listens (port 0 picks one).
    pub listen: SocketAddr,
    /// Root of this node's data; group `g` lives in `<data_dir>/group-<g>`.
    pub data_dir: PathBuf,
    /// Timing of Raft (validated on start).
    pub raft: openraft::Config,
    /// Settings of each group's log.
    pub log: LogConfig,
    /// Mutual TLS between nodes (`None`: plain TCP).
    pub tls: Option<crate::PeerTls>,
}

/// Raft timing for a LAN: heartbeats every 100 ms, elections after 1–2 s of
/// silence, no automatic snapshots (retention snapshots and purges), and no
/// leader restore (the committed index is not persisted, see DESIGN).
pub fn default_raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "strata".into(),
        heartbeat_interval: 100,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_payload_entries: 256,
        enable_leader_restore: Some(false),
        install_snapshot_timeout: 2000,
        ..openraft::Config::default()
    }
}

/// What a group's records mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupRole {
    /// A topic partition: records are the users'.
    Partition,
    /// The controller: records are metadata commands.
    Controller,
}

/// One group a node runs: its Raft handle, its log and its state machine.
#[derive(Clone)]
pub struct Group {
    /// The group's id.
    pub id: u64,
    /// The Raft handle (cheap to clone).
    pub raft: GroupRaft,
    /// The group's log, for reads.
    pub log: Arc<Log>,
    /// The group's state machine, for the high watermark.
    pub state_machine: PartitionStateMachine,
    /// The produce path's lock and in-flight table (see `produce`).
    pub gate: Arc<ProduceGate>,
    /// What the group's records mean.
    pub role: GroupRole,
    /// The node's quiescence (see `quiesce.rs`).
    quiescence: Arc<Quiescence>,
}

impl Group {
    /// Makes sure the group is not quiet before a write: a quiet leader has
    /// let its lease lapse (openraft refuses writes then), so it wakes,
    /// heartbeats and waits for a quorum's answer, about one round trip.
    /// Every write path calls this before proposing.
    pub async fn ensure_awake(&self) {
        self.quiescence.ensure_awake(self).await;
    }

    /// Whether the group is quiet on this node (see `quiesce.rs`).
    pub fn is_quiet(&self) -> bool {
        self.quiescence.is_quiet(self.id)
    }

    /// Why this replica's Raft stopped, if it did: openraft stops a group
    /// for good on a storage error (a write to a full disk, a failed sync).
    /// The reconciler then reopens it from disk after a pause (see
    /// `cluster.rs`, `Reopens`).
    pub fn stopped_by(&self) -> Option<String> {
        use openraft::async_runtime::WatchReceiver;
        self.raft.metrics().borrow_watched().running_state.as_ref().err().map(ToString::to_string)
    }
}

/// The Raft side of a node.
pub struct RaftNode {
    config: RaftNodeConfig,
    raft_config: Arc<openraft::Config>,
    addr: SocketAddr,
    router: Arc<Router>,
    peers: Arc<Peers>,
    faults: Arc<TransportFaults>,
    quiescence: Arc<Quiescence>,
    flusher: Arc<Flusher>,
    groups: Mutex<HashMap<u64, Group>>,
    /// Woken when any group applies a retention decision.
    log_start_moved: Arc<tokio::sync::Notify>,
    /// Woken when a group is opened on this node.
    group_opened: Arc<tokio::sync::Notify>,
    stop_server: Mutex<Option<oneshot::Sender<()>>>,
    stopping: watch::Sender<bool>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl RaftNode {
    /// Binds the transport and starts serving it.
    pub async fn start(config: RaftNodeConfig) -> Result<RaftNode, NodeError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| NodeError::Io { context: format!("bind raft transport on {}", config.listen), source })?;
        RaftNode::start_on(config, listener).await
    }

    /// Starts serving the transport on an already bound listener
    /// (`config.listen` is then ignored): tests bind first, so no other
    /// socket can take the port between choosing and binding it.
    pub async fn start_on(config: RaftNodeConfig, listener: tokio::net::TcpListener) -> Result<RaftNode, NodeError> {
        let raft_config = Arc::new(config.raft.clone().validate().map_err(|e| NodeError::Raft(e.to_string()))?);
        let addr = listener
            .local_addr()
            .map_err(|source| NodeError::Io { context: "read raft transport address".into(), source })?;
        let flusher = Flusher::spawn(&format!("node{}", config.node_id))
            .map_err(|source| NodeError::Io { context: "start flusher thread".into(), source })?;
        let quiescence = Arc::new(Quiescence::new(config.node_id, QuiesceTiming::from_raft(&raft_config)));
        let router = Arc::new(Router::new(quiescence.clone()));
        let (stopping_tx, stopping_rx) = watch::channel(false);
        if let Some(tls) = &config.tls {
            tls.check().map_err(NodeError::Tls)?;
        }
        let peers = Arc::new(Peers::new(config.tls.clone()));
        let faults: Arc<TransportFaults> = Arc::default();
        tokio::spawn(quiescence.clone().run(router.clone(), peers.clone(), faults.clone(), stopping_rx.clone()));
        let service = TransportService::new(config.node_id, router.clone(), stopping_rx);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &config.tls {
            builder = builder.tls_config(tls.server()).map_err(|e| NodeError::Tls(strata_proto::error_chain(&e)))?;
        }
        let server = tokio::spawn(async move {
            let result = builder
                .max_frame_size(crate::limits::H2_FRAME_BYTES)
                .initial_stream_window_size(crate::limits::H2_STREAM_WINDOW_BYTES)
                .initial_connection_window_size(crate::limits::H2_CONNECTION_WINDOW_BYTES)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(err) = result {
                tracing::error!(error = %err, "raft transport stopped");
            }
        });
        Ok(RaftNode {
            config,
            raft_config,
            addr,
            router,
            peers,
            faults,
            quiescence,
            flusher: Arc::new(flusher),
            groups: Mutex::default(),
            log_start_moved: Arc::default(),
            group_opened: Arc::default(),
            stop_server: Mutex::new(Some(stop_tx)),
            stopping: stopping_tx,
            server: Mutex::new(Some(server)),
        })
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.config.node_id
    }

    /// The address the transport listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens (creating or recovering) group `group` on this node and starts
    /// its Raft. A new group must then be initialized by one member.
    pub async fn open_group(&self, group: u64) -> Result<Group, NodeError> {
        self.open_group_as(group, GroupRole::Partition).await
    }

    /// Opens a group with the given role (see [`GroupRole`]).
    pub async fn open_group_as(&self, group: u64, role: GroupRole) -> Result<Group, NodeError> {
        if let Some(existing) = self.group(group) {
            return Ok(existing);
        }
        if self.rebuild_marker(group).is_some() {
            return Err(NodeError::AwaitingRebuild { group });
        }
        self.open_dir(group, role).await
    }

    async fn open_dir(&self, group: u64, role: GroupRole) -> Result<Group, NodeError> {
        let dir = self.group_dir(group);
        let fs = FsDir::open(&dir)
            .map_err(|source| NodeError::Io { context: format!("create {}", dir.display()), source })?
            .with_direct_segments(self.config.log.direct_io);
        let log =
            Log::open(Arc::new(fs), self.config.log.clone(), Some(&self.flusher)).map_err(|source| {
                match source.kind() {
                    strata_log::ErrorKind::Corrupt => NodeError::Damaged { group, reason: source.to_string() },
                    _ => NodeError::Log { group, source },
                }
            })?;
        let log = Arc::new(log);
        let opened = match role {
            GroupRole::Partition => PartitionStateMachine::open(&dir, log.clone()),
            GroupRole::Controller => PartitionStateMachine::open_controller(&dir, log.clone()),
        };
        let state_machine = opened.map_err(|source| match source.kind() {
            std::io::ErrorKind::InvalidData => {
                NodeError::Damaged { group, reason: format!("state machine in {}: {source}", dir.display()) }
            }
            _ => NodeError::Io { context: format!("open state machine in {}", dir.display()), source },
        })?;
        state_machine.notify_log_start_on(self.log_start_moved.clone());
        let network =
            GroupNetworkFactory::new(group, self.peers.clone(), self.faults.clone(), role == GroupRole::Partition);
        let raft = openraft::Raft::new(
            self.config.node_id,
            self.raft_config.clone(),
            network,
            LogStore::new(log.clone()),
            state_machine.clone(),
        )
        .await
        .map_err(|e| match log.damage() {
            // openraft read the log at start and met the damage.
            Some(reason) => NodeError::Damaged { group, reason },
            None => NodeError::Raft(format!("start group {group}: {e}")),
        })?;
        state_machine.watch_replication(raft.metrics());
        let handle = Group {
            id: group,
            raft: raft.clone(),
            log,
            state_machine,
            gate: Arc::default(),
            role,
            quiescence: self.quiescence.clone(),
        };
        self.router.insert(handle.clone());
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).insert(group, handle.clone());
        // A permit is kept if nobody waits, so no opening goes unnoticed.
        self.group_opened.notify_one();
        Ok(handle)
    }

    /// Woken whenever one of this node's groups applies a retention
    /// decision (the broker's scheduler then purges at once).
    pub fn log_start_moved(&self) -> Arc<tokio::sync::Notify> {
        self.log_start_moved.clone()
    }

    /// Woken whenever a group is opened on this node (the broker's
    /// scheduler then applies its topic's log settings at once).
    pub fn group_opened(&self) -> Arc<tokio::sync::Notify> {
        self.group_opened.clone()
    }

    /// Which of this node's groups are quiet, and what it hears of its
    /// peers (see `quiesce.rs`).
    pub fn quiescence(&self) -> &Quiescence {
        &self.quiescence
    }

    /// Fault injection on this node's outgoing messages (tests).
    pub fn faults(&self) -> &TransportFaults {
        &self.faults
    }

    /// A running group.
    pub fn group(&self, group: u64) -> Option<Group> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).get(&group).cloned()
    }

    /// The ids of every running group.
    pub fn group_ids(&self) -> Vec<u64> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect()
    }

    /// Every running group.
    pub fn groups(&self) -> Vec<Group> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Closes group `group` on this node (its replica was moved away or its
    /// topic deleted) and, with `delete_data`, removes its directory.
    pub async fn close_group(&self, group: u64, delete_data: bool) -> Result<(), NodeError> {
        let removed = self.groups.lock().unwrap_or_else(|p| p.into_inner()).remove(&group);
        let Some(handle) = removed else { return Ok(()) };
        self.router.remove(group);
        if let Err(err) = handle.raft.shutdown().await {
            tracing::warn!(group, error = %err, "raft did not shut down cleanly");
        }
        if delete_data {
            drop(handle);
            let dir = self.group_dir(group);
            let context = format!("remove {}", dir.display());
            // Unlinking a large partition's segments takes a while; off the
            // runtime's threads, so the node's other groups are not held up
            // (a dev node runs one runtime thread).
            let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
            let result = removed.unwrap_or_else(|join| Err(std::io::Error::other(join)));
            result.map_err(|source| NodeError::Io { context, source })?;
        }
        Ok(())
    }

    fn group_dir(&self, group: u64) -> PathBuf {
        self.config.data_dir.join(format!("group-{group}"))
    }

    fn rebuild_marker_path(&self, group: u64) -> PathBuf {
        self.config.data_dir.join(format!("group-{group}.rebuild"))
    }

    /// The nonce of the rebuild this node's replica of `group` waits for, if
    /// it was quarantined (see [`RaftNode::quarantine_group`]).
    pub fn rebuild_marker(&self, group: u64) -> Option<u64> {
        let text = std::fs::read_to_string(self.rebuild_marker_path(group)).ok()?;
        text.trim().parse().ok()
    }

    /// Takes a damaged replica out of service: closes the group, moves its
    /// directory aside as `group-G.damaged-NONCE` (kept for the operator) and
    /// leaves a marker `group-G.rebuild` holding `nonce`, durably, so that
    /// the replica is not started again — not even empty, after a restart —
    /// until [`RaftNode::open_rebuilt_group`]. A replica that forgot what it
    /// stored and voted for must not vote before the others removed it from
    /// the group: it may have been part of the majority that acknowledged a
    /// write. Returns the nonce in force (an existing marker's).
    pub async fn quarantine_group(&self, group: u64, nonce: u64) -> Result<u64, NodeError> {
        self.close_group(group, false).await?;
        let nonce = match self.rebuild_marker(group) {
            Some(existing) => existing,
            None => {
                // The marker first: from then on the directory is never
                // opened as it is, whatever happens next.
                let io = |context: String| move |source| NodeError::Io { context, source };
                let marker = self.rebuild_marker_path(group);
                let tmp = marker.with_extension("rebuild.tmp");
                let mut file = std::fs::File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
                std::io::Write::write_all(&mut file, format!("{nonce}\n").as_bytes())
                    .map_err(io(format!("write {}", tmp.display())))?;
                file.sync_all().map_err(io(format!("sync {}", tmp.display())))?;
                std::fs::rename(&tmp, &marker).map_err(io(format!("create {}", marker.display())))?;
                sync_dir(&self.config.data_dir)?;
                nonce
            }
        };
        self.move_aside(group, nonce)?;
        Ok(nonce)
    }

    /// Moves a quarantined group's directory (if still there) to
    /// `group-G.damaged-NONCE` (or a free name after it).
    fn move_aside(&self, group: u64, nonce: u64) -> Result<(), NodeError> {
        let dir = self.group_dir(group);
        if !dir.exists() {
            return Ok(());
        }
        let mut aside = self.config.data_dir.join(format!("group-{group}.damaged-{nonce}"));
        for n in 1.. {
            if !aside.exists() {
                break;
            }
            aside = self.config.data_dir.join(format!("group-{group}.damaged-{nonce}-{n}"));
        }
        std::fs::rename(&dir, &aside)
            .map_err(|source| NodeError::Io { context: format!("move {} aside", dir.display()), source })?;
        sync_dir(&self.config.data_dir)
    }

    /// Starts a quarantined replica again, empty, once the other replicas
    /// removed it from the group (the controller says so): it joins again
    /// as a new member and receives a snapshot and the log from the leader.
    /// (Being out of the group, it may start empty: it votes again only
    /// once the leader added it back.)
    pub async fn open_rebuilt_group(&self, group: u64) -> Result<Group, NodeError> {
        self.open_rebuilt_group_as(group, GroupRole::Partition).await
    }

    /// As [`RaftNode::open_rebuilt_group`], with the given role.
    pub async fn open_rebuilt_group_as(&self, group: u64, role: GroupRole) -> Result<Group, NodeError> {
        if let Some(existing) = self.group(group) {
            return Ok(existing);
        }
        if let Some(nonce) = self.rebuild_marker(group) {
            self.move_aside(group, nonce)?;
            let marker = self.rebuild_marker_path(group);
            std::fs::remove_file(&marker)
                .map_err(|source| NodeError::Io { context: format!("remove {}", marker.display()), source })?;
            sync_dir(&self.config.data_dir)?;
        }
        self.open_dir(group, role).await
    }

    /// Asks `node` (at `addr`) what its copy of the metadata says of this
    /// node's quarantined replica of `group` named by `nonce`: whether its
    /// removal was recorded (`ReplicaRemoved`), and if not, whether its
    /// damage was (`ReplicaDamaged`). For a replica of the controller's own
    /// group, whose node has no metadata to read.
    pub async fn ask_rebuild(&self, node: u64, addr: &str, group: u64, nonce: u64) -> Result<RebuildStatus, String> {
        use strata_proto::raft::raft_response::Body as ReplyBody;
        let query = strata_proto::raft::RebuildQuery { group, node: self.id(), nonce };
        let body = strata_proto::raft::raft_request::Body::Rebuild(query);
        let reply = self.peers.get(node, addr).call(CONTROLLER_GROUP, body, FORWARD_TIMEOUT).await?;
        match reply.body {
            Some(ReplyBody::Rebuild(reply)) => Ok(RebuildStatus { removed: reply.removed, reported: reply.reported }),
            Some(ReplyBody::Error(message)) => Err(format!("node {node}: {message}")),
            _ => Err(format!("node {node} sent an answer of the wrong kind")),
        }
    }

    /// Sends a write for `group` to `node` (at `addr`), which should lead it,
    /// and returns its answer; see `ClusterNode`'s metadata commands.
    pub async fn forward(&self, node: u64, addr: &str, group: u64, batch: Bytes) -> Result<Produced, ProduceError> {
        use strata_proto::raft::raft_response::Body as ReplyBody;
        let body = strata_proto::raft::raft_request::Body::Propose(strata_proto::raft::ProposeRequest { batch });
        let reply = self
            .peers
            .get(node, addr)
            .call(group, body, FORWARD_TIMEOUT)
            .await
            .map_err(|e| ProduceError::Unavailable(format!("forward to node {node}: {e}")))?;
        match reply.body {
            Some(ReplyBody::Propose(reply)) => propose_reply_from_pb(reply),
            Some(ReplyBody::Error(message)) => Err(ProduceError::Unavailable(format!("node {node}: {message}"))),
            _ => Err(ProduceError::Unavailable(format!("node {node} sent an answer of the wrong kind"))),
        }
    }

    /// Stops every group and the transport. Data stays on disk; a node
    /// started again on the same directory recovers it.
    pub async fn shutdown(&self) {
        let groups: Vec<Group> =
            self.groups.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, g)| g).collect();
        for group in groups {
            self.router.remove(group.id);
            if let Err(err) = group.raft.shutdown().await {
                tracing::warn!(group = group.id, error = %err, "raft did not shut down cleanly");
            }
        }
        let _ = self.stopping.send(true);
        if let Some(stop) = self.stop_server.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut server) = server {
            // Graceful shutdown waits for every connection to close, and peers
            // keep their streams open: give it a moment, then cut them.
            if tokio::time::timeout(SERVER_STOP_GRACE, &mut server).await.is_err() {
                server.abort();
                let _ = server.await;
            }
        }
    }
}

fn sync_dir(dir: &std::path::Path) -> Result<(), NodeError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| NodeError::Io { context: format!("sync {}", dir.display()), source })
}
