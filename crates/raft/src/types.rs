//! The openraft type configuration shared by every Raft group of a node.
//!
//! Standard Raft leader ids (one leader per term) are used, so a log id is
//! (term, index): exactly what the storage engine keeps per entry, the term
//! living in the batch's leader epoch field.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What a client proposes to a partition group: one RecordBatch v2, as the
/// producer built it. It is validated by the leader before it is proposed
/// and stored verbatim by every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchData(pub Bytes);

impl fmt::Display for BatchData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch({} bytes)", self.0.len())
    }
}

/// What applying an entry answers: where a data batch landed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// Offset of the batch's first record (the next offset, for a control entry).
    pub base_offset: u64,
    /// Offsets the batch took (0 for a control entry).
    pub n_offsets: u64,
}

openraft::declare_raft_types!(
    /// The type configuration of every Strata Raft group.
    pub TypeConfig:
        D = BatchData,
        R = WriteResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        AsyncRuntime = openraft_rt_tokio::TokioRuntime,
);

/// Short name used across the crate.
pub type C = TypeConfig;
/// A Raft entry of a Strata group.
pub type RaftEntry = <C as openraft::RaftTypeConfig>::Entry;
/// A Raft log id of a Strata group: (term, index).
pub type RaftLogId = openraft::alias::LogIdOf<C>;
/// A Raft vote of a Strata group.
pub type RaftVote = openraft::alias::VoteOf<C>;
/// A stored membership of a Strata group.
pub type RaftMembership = openraft::alias::StoredMembershipOf<C>;

/// Builds a log id from a term and an index.
pub fn log_id(term: u64, index: u64) -> RaftLogId {
    openraft::LogId::new(openraft::alias::CommittedLeaderIdOf::<C>::from(term), index)
}

/// The term of a log id.
pub fn term_of(id: &RaftLogId) -> u64 {
    id.leader_id.term
}
