//! openraft's network for one group: a thin handle (group id, target node,
//! shared peer connection) implementing `RaftNetworkV2` over the shared
//! stream.

use std::sync::Arc;

use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend};
use strata_proto::raft::raft_request::Body;
use strata_proto::raft::raft_response::Body as ReplyBody;

use super::convert::{
    append_reply_from_pb, append_to_pb, from_json, json_bytes, vote_from_pb, vote_reply_from_pb, vote_request_to_pb,
    vote_to_pb,
};
use super::faults::{FaultAction, TransportFaults};
use super::peer::{Peer, Peers};
use crate::state_machine::PartitionSnapshot;
use crate::types::{C, RaftVote};

/// Makes network clients for one group.
#[derive(Clone)]
pub struct GroupNetworkFactory {
    group: u64,
    peers: Arc<Peers>,
    faults: Arc<TransportFaults>,
}

impl GroupNetworkFactory {
    pub fn new(group: u64, peers: Arc<Peers>, faults: Arc<TransportFaults>) -> GroupNetworkFactory {
        GroupNetworkFactory { group, peers, faults }
    }
}

impl RaftNetworkFactory<C> for GroupNetworkFactory {
    type Network = GroupClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> GroupClient {
        GroupClient { group: self.group, target, peer: self.peers.get(target, &node.addr), faults: self.faults.clone() }
    }
}

/// One group's view of one peer.
pub struct GroupClient {
    group: u64,
    target: u64,
    peer: Arc<Peer>,
    faults: Arc<TransportFaults>,
}

fn unreachable(message: String) -> RPCError<C> {
    RPCError::Unreachable(Unreachable::from_string(message))
}

impl GroupClient {
    async fn call(&self, body: Body, option: &RPCOption) -> Result<ReplyBody, RPCError<C>> {
        match self.faults.decide(self.target) {
            FaultAction::Deliver => {}
            FaultAction::Drop => {
                return Err(unreachable(format!("fault injected: message to {} dropped", self.target)));
            }
            FaultAction::Duplicate => {
                let _ = self.peer.call(self.group, body.clone(), option.hard_ttl()).await;
            }
            FaultAction::Delay(delay) => tokio::time::sleep(delay).await,
        }
        let response = self.peer.call(self.group, body, option.hard_ttl()).await.map_err(unreachable)?;
        match response.body {
            Some(ReplyBody::Error(message)) => Err(unreachable(format!("peer {}: {message}", self.peer.addr()))),
            Some(body) => Ok(body),
            None => Err(unreachable(format!("peer {} sent an empty answer", self.peer.addr()))),
        }
    }
}

impl RaftNetworkV2<C> for GroupClient {
    type SnapshotData = PartitionSnapshot;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        let body = Body::Append(append_to_pb(&rpc).map_err(unreachable)?);
        match self.call(body, &option).await? {
            ReplyBody::Append(reply) => append_reply_from_pb(reply).map_err(unreachable),
            _ => Err(unreachable("answer of the wrong kind to append".into())),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        match self.call(Body::Vote(vote_request_to_pb(&rpc)), &option).await? {
            ReplyBody::Vote(reply) => vote_reply_from_pb(reply).map_err(unreachable),
            _ => Err(unreachable("answer of the wrong kind to vote".into())),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        let body = Body::TransferLeader(strata_proto::raft::TransferLeaderRequest {
            request_json: json_bytes(&req).map_err(unreachable)?,
        });
        match self.call(body, &option).await? {
            ReplyBody::TransferLeader(reply) => from_json(&reply.response_json).map_err(unreachable),
            _ => Err(unreachable("answer of the wrong kind to transfer leader".into())),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: RaftVote,
        snapshot: openraft::alias::SnapshotOf<C, PartitionSnapshot>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let body = Body::Snapshot(strata_proto::raft::InstallSnapshotRequest {
            vote: Some(vote_to_pb(&vote)),
            meta_json: json_bytes(&snapshot.meta).map_err(unreachable)?,
            data_json: json_bytes(&snapshot.snapshot).map_err(unreachable)?,
        });
        match self.call(body, &option).await? {
            ReplyBody::Snapshot(reply) => Ok(SnapshotResponse::new(vote_from_pb(reply.vote).map_err(unreachable)?)),
            _ => Err(unreachable("answer of the wrong kind to snapshot".into()).into()),
        }
    }
}
