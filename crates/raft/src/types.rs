//! The openraft type configuration shared by every Raft group of a node.
//!
//! Standard Raft leader ids (one leader per term) are used, so a log id is
//! (term, index): exactly what the storage engine keeps per entry, the term
//! living in the batch's leader epoch field.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What a client proposes to a partition group: one RecordBatch v2, as the
/// producer built it, stored verbatim by every replica.
///
/// **Invariant:** the batch has passed `strata_batch::validate` (CRC
/// included) in this process, on these very bytes: a `BatchData` is made
/// only by [`BatchData::new`] / [`BatchData::validate`], from bytes this
/// process read back from its own log (checked when they were appended) or
/// from a control batch it built. So the log appends it without computing
/// its CRC again (`Log::append_verified`). Deserializing validates too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Bytes", into = "Bytes")]
pub struct BatchData(Bytes);

impl BatchData {
    /// Validates `bytes` as one whole batch.
    pub fn new(bytes: Bytes) -> Result<BatchData, strata_batch::BatchError> {
        BatchData::validate(bytes).map(|(data, _)| data)
    }

    /// Validates `bytes` as one whole batch, returning its header too.
    pub fn validate(bytes: Bytes) -> Result<(BatchData, strata_batch::BatchHeader), strata_batch::BatchError> {
        let header = strata_batch::validate(&bytes)?;
        Ok((BatchData(bytes), header))
    }

    /// Bytes checked already: read back from this node's log (validated
    /// when appended; a sealed segment's CRCs are checked again on first
    /// read), or a control batch this process built.
    pub(crate) fn checked(bytes: Bytes) -> BatchData {
        BatchData(bytes)
    }

    /// The batch.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl TryFrom<Bytes> for BatchData {
    type Error = strata_batch::BatchError;
    fn try_from(bytes: Bytes) -> Result<BatchData, Self::Error> {
        BatchData::new(bytes)
    }
}

impl From<BatchData> for Bytes {
    fn from(data: BatchData) -> Bytes {
        data.0
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Bytes {
        let mut builder = strata_batch::BatchBuilder::new();
        builder.push(0, Some(b"k"), Some(b"v"), &[]);
        builder.build(strata_batch::Compression::None)
    }

    #[test]
    fn batch_data_is_made_only_from_a_batch_that_validates() {
        let good = batch();
        let mut damaged = good.to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x40;
        let damaged = Bytes::from(damaged);
        assert!(BatchData::new(good.clone()).is_ok());
        assert!(BatchData::new(damaged.clone()).is_err(), "a bad CRC is refused");
        // Deserializing is a way in too: it validates as well.
        let json = serde_json::to_vec(&BatchData::new(good).expect("valid")).expect("serialize");
        assert!(serde_json::from_slice::<BatchData>(&json).is_ok());
        let json = serde_json::to_vec(&damaged).expect("serialize bytes");
        assert!(serde_json::from_slice::<BatchData>(&json).is_err(), "a damaged batch does not deserialize");
    }
}
