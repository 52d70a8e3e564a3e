//! `strata-raft`: replication of each partition with Raft (openraft), over
//! the storage engine.
//!
//! - [`LogStore`]: openraft's log storage on `strata_log::Log` — one entry is
//!   one batch, stored once; Raft's blank and membership entries are control
//!   batches that take no offsets.
//! - [`PartitionStateMachine`]: the high watermark and membership; tiny
//!   snapshots.
//! - [`retention`]: the leader's retention decision, carried out by every
//!   replica as snapshot + purge.
//! - [`RaftNode`]: a node's groups, its flusher, and the transport that
//!   carries every group's messages to a peer over one gRPC stream.
//!
//! **Architecture Invariant:** openraft types stay inside this crate's API
//! surface; the storage engine below knows nothing of them, and a bump of
//! the pinned openraft version touches only this crate.

pub mod acl;
mod cluster;
mod codec;
pub mod limits;
mod log_store;
pub mod metadata;
mod network;
mod node;
mod partition;
mod producer;
mod quiesce;
pub mod retention;
mod state_machine;
pub mod stats;
mod types;

pub use cluster::{ClusterError, ClusterNode};
pub use codec::{entry_to_batch, stored_to_entry};
pub use log_store::LogStore;
pub use network::faults::{FaultAction, FaultRates, TransportFaults};
pub use network::server::GroupRaft;
pub use network::tls::PeerTls;
pub use node::{Group, GroupRole, NodeError, RaftNode, RaftNodeConfig, RebuildStatus, default_raft_config};
pub use partition::{ProduceError, ProduceGate, Produced, Submission, produce, submit};
pub use producer::{ProducerStates, SequenceCheck, SequencedBatch};
pub use quiesce::{QuiesceTiming, Quiescence};
pub use state_machine::{PartitionSnapshot, PartitionStateMachine};
pub use types::{
    BatchData, C, RaftEntry, RaftLogId, RaftMembership, RaftVote, TypeConfig, WriteResult, log_id, term_of,
};
