//! Protobuf ↔ openraft conversions for the Raft transport, one function per
//! type, in one place. Entries are carried as their stored batch bytes.

use bytes::Bytes;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use strata_proto::raft as pb;

use crate::codec::{entry_to_batch, stored_to_entry};
use crate::partition::{ProduceError, Produced};
use crate::types::{C, RaftEntry, RaftLogId, RaftVote, log_id, term_of};

/// Why a message could not be converted.
pub type ConvertError = String;

pub fn vote_to_pb(vote: &RaftVote) -> pb::Vote {
    pb::Vote { term: vote.leader_id.term, node_id: vote.leader_id.voted_for, committed: vote.committed }
}

pub fn vote_from_pb(vote: Option<pb::Vote>) -> Result<RaftVote, ConvertError> {
    let vote = vote.ok_or("missing vote")?;
    Ok(if vote.committed {
        openraft::impls::Vote::new_committed(vote.term, vote.node_id)
    } else {
        openraft::impls::Vote::new(vote.term, vote.node_id)
    })
}

pub fn log_id_to_pb(id: &RaftLogId) -> pb::LogId {
    pb::LogId { term: term_of(id), index: id.index }
}

pub fn log_id_from_pb(id: pb::LogId) -> RaftLogId {
    log_id(id.term, id.index)
}

pub fn entry_to_pb(entry: &RaftEntry) -> Result<pb::Entry, ConvertError> {
    let batch = entry_to_batch(entry).map_err(|e| e.to_string())?;
    Ok(pb::Entry { term: term_of(&entry.log_id), index: entry.log_id.index, batch })
}

pub fn entry_from_pb(entry: pb::Entry) -> Result<RaftEntry, ConvertError> {
    // Bytes from the network are checked whole here, so a damaged message is
    // refused (the leader retries) instead of failing the follower's log.
    strata_batch::validate(&entry.batch).map_err(|e| format!("entry {}: {e}", entry.index))?;
    let stored = strata_log::Entry {
        index: strata_log::RaftIndex(entry.index),
        term: strata_log::Term(entry.term),
        base_offset: strata_log::Offset(0),
        batch: entry.batch,
    };
    stored_to_entry(&stored).map_err(|e| e.to_string())
}

pub fn append_to_pb(req: &AppendEntriesRequest<C>) -> Result<pb::AppendEntriesRequest, ConvertError> {
    Ok(pb::AppendEntriesRequest {
        vote: Some(vote_to_pb(&req.vote)),
        prev_log_id: req.prev_log_id.as_ref().map(log_id_to_pb),
        entries: req.entries.iter().map(entry_to_pb).collect::<Result<_, _>>()?,
        leader_commit: req.leader_commit.as_ref().map(log_id_to_pb),
    })
}

pub fn append_from_pb(req: pb::AppendEntriesRequest) -> Result<AppendEntriesRequest<C>, ConvertError> {
    Ok(AppendEntriesRequest {
        vote: vote_from_pb(req.vote)?,
        prev_log_id: req.prev_log_id.map(log_id_from_pb),
        entries: req.entries.into_iter().map(entry_from_pb).collect::<Result<_, _>>()?,
        leader_commit: req.leader_commit.map(log_id_from_pb),
    })
}

pub fn append_reply_to_pb(resp: &AppendEntriesResponse<C>) -> pb::AppendEntriesReply {
    use pb::append_entries_reply::Kind;
    let mut reply = pb::AppendEntriesReply::default();
    match resp {
        AppendEntriesResponse::Success => reply.set_kind(Kind::Success),
        AppendEntriesResponse::PartialSuccess(matched) => {
            reply.set_kind(Kind::PartialSuccess);
            reply.matched = matched.as_ref().map(log_id_to_pb);
        }
        AppendEntriesResponse::Conflict => reply.set_kind(Kind::Conflict),
        AppendEntriesResponse::HigherVote(vote) => {
            reply.set_kind(Kind::HigherVote);
            reply.higher_vote = Some(vote_to_pb(vote));
        }
    }
    reply
}

pub fn append_reply_from_pb(reply: pb::AppendEntriesReply) -> Result<AppendEntriesResponse<C>, ConvertError> {
    use pb::append_entries_reply::Kind;
    Ok(match reply.kind() {
        Kind::Success => AppendEntriesResponse::Success,
        Kind::PartialSuccess => AppendEntriesResponse::PartialSuccess(reply.matched.map(log_id_from_pb)),
        Kind::Conflict => AppendEntriesResponse::Conflict,
        Kind::HigherVote => AppendEntriesResponse::HigherVote(vote_from_pb(reply.higher_vote)?),
    })
}

pub fn vote_request_to_pb(req: &VoteRequest<C>) -> pb::VoteRequest {
    pb::VoteRequest {
        vote: Some(vote_to_pb(&req.vote)),
        last_log_id: req.last_log_id.as_ref().map(log_id_to_pb),
        leadership_transfer: req.leadership_transfer,
    }
}

pub fn vote_request_from_pb(req: pb::VoteRequest) -> Result<VoteRequest<C>, ConvertError> {
    let mut out = VoteRequest::new(vote_from_pb(req.vote)?, req.last_log_id.map(log_id_from_pb));
    out.leadership_transfer = req.leadership_transfer;
    Ok(out)
}

pub fn vote_reply_to_pb(resp: &VoteResponse<C>) -> pb::VoteReply {
    pb::VoteReply {
        vote: Some(vote_to_pb(&resp.vote)),
        granted: resp.vote_granted,
        last_log_id: resp.last_log_id.as_ref().map(log_id_to_pb),
    }
}

pub fn vote_reply_from_pb(reply: pb::VoteReply) -> Result<VoteResponse<C>, ConvertError> {
    Ok(VoteResponse::new(vote_from_pb(reply.vote)?, reply.last_log_id.map(log_id_from_pb), reply.granted))
}

pub fn json_bytes<T: serde::Serialize>(value: &T) -> Result<Bytes, ConvertError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| e.to_string())
}

pub fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ConvertError> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// A forwarded write's outcome, as sent back to the forwarding node.
pub fn propose_reply_to_pb(result: &Result<Produced, ProduceError>) -> pb::ProposeReply {
    use pb::propose_error::Kind;
    match result {
        Ok(p) => {
            pb::ProposeReply { base_offset: p.base_offset, n_offsets: p.n_offsets, duplicate: p.duplicate, error: None }
        }
        Err(err) => {
            let mut e = pb::ProposeError { message: err.to_string(), ..Default::default() };
            match err {
                ProduceError::NotLeader { leader } => {
                    e.set_kind(Kind::NotLeader);
                    e.leader = *leader;
                }
                ProduceError::InvalidBatch(_) => e.set_kind(Kind::InvalidBatch),
                ProduceError::OutOfOrderSequence { expected, got } => {
                    e.set_kind(Kind::OutOfOrderSequence);
                    (e.expected, e.got) = (*expected, *got);
                }
                ProduceError::ProducerFenced { current } => {
                    e.set_kind(Kind::ProducerFenced);
                    e.current_epoch = i32::from(*current);
                }
                ProduceError::Raft(_) => e.set_kind(Kind::Raft),
                ProduceError::Unavailable(_) => e.set_kind(Kind::Unavailable),
            }
            pb::ProposeReply { error: Some(e), ..Default::default() }
        }
    }
}

/// The outcome of a write forwarded to another node.
pub fn propose_reply_from_pb(reply: pb::ProposeReply) -> Result<Produced, ProduceError> {
    use pb::propose_error::Kind;
    let Some(e) = reply.error else {
        return Ok(Produced { base_offset: reply.base_offset, n_offsets: reply.n_offsets, duplicate: reply.duplicate });
    };
    Err(match e.kind() {
        Kind::NotLeader => ProduceError::NotLeader { leader: e.leader },
        Kind::InvalidBatch => ProduceError::InvalidBatch(e.message),
        Kind::OutOfOrderSequence => ProduceError::OutOfOrderSequence { expected: e.expected, got: e.got },
        Kind::ProducerFenced => ProduceError::ProducerFenced { current: e.current_epoch as i16 },
        Kind::Raft => ProduceError::Raft(e.message),
        Kind::Unavailable => ProduceError::Unavailable(e.message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_entry_from_the_network_is_refused() {
        // Regression guard: log reads skip the CRC, so the network path must not.
        let mut builder = strata_batch::BatchBuilder::new();
        builder.push(0, Some(b"k"), Some(b"v"), &[]);
        let good = builder.build(strata_batch::Compression::None);
        let entry = pb::Entry { term: 1, index: 5, batch: good.clone() };
        assert!(entry_from_pb(entry).is_ok());
        let mut bad = good.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        let entry = pb::Entry { term: 1, index: 5, batch: Bytes::from(bad) };
        assert!(entry_from_pb(entry).is_err());
    }
}
