//! openraft's network for one group: a thin handle (group id, target node,
//! shared peer connection) implementing `RaftNetworkV2` over the shared
//! stream.
//!
//! Appends to a follower go one at a time, each waiting for its answer, as
//! openraft's default does, with one difference ([`GroupClient::stream_append`]):
//! an append without entries that only tells the follower a new commit index
//! may wait a little ([`COMMIT_NOTICE_WAIT`]) for the next append, which
//! carries that index anyway, instead of taking a round trip of its own.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
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
use crate::limits::COMMIT_NOTICE_WAIT;
use crate::state_machine::PartitionSnapshot;
use crate::types::{C, RaftLogId, RaftVote};

/// Makes network clients for one group.
#[derive(Clone)]
pub struct GroupNetworkFactory {
    group: u64,
    peers: Arc<Peers>,
    faults: Arc<TransportFaults>,
    hold_commit_notices: bool,
}

impl GroupNetworkFactory {
    /// `hold_commit_notices`: whether commit notices may wait for the next
    /// append (see the module's documentation). Partitions' groups do;
    /// the controller's does not, so every node applies a metadata change
    /// as soon as it is committed.
    pub fn new(
        group: u64,
        peers: Arc<Peers>,
        faults: Arc<TransportFaults>,
        hold_commit_notices: bool,
    ) -> GroupNetworkFactory {
        GroupNetworkFactory { group, peers, faults, hold_commit_notices }
    }
}

impl RaftNetworkFactory<C> for GroupNetworkFactory {
    type Network = GroupClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> GroupClient {
        GroupClient {
            group: self.group,
            target,
            peer: self.peers.get(target, &node.addr),
            faults: self.faults.clone(),
            hold_commit_notices: self.hold_commit_notices,
        }
    }
}

/// One group's view of one peer.
pub struct GroupClient {
    group: u64,
    target: u64,
    peer: Arc<Peer>,
    faults: Arc<TransportFaults>,
    hold_commit_notices: bool,
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

/// Answers to a [`GroupClient::stream_append`] session's requests, in order.
type AppendAnswer = Result<StreamAppendResult<C>, RPCError<C>>;

/// One [`GroupClient::stream_append`] session: the requests openraft
/// produces, sent one at a time, and their answers.
struct AppendSession<'s, S> {
    client: &'s mut GroupClient,
    input: S,
    option: RPCOption,
    /// A commit notice not sent yet, how many notices it stands for (each
    /// gets an answer), and until when it waits for an append.
    held: Option<(AppendEntriesRequest<C>, usize, tokio::time::Instant)>,
    /// Answers not yielded yet.
    ready: VecDeque<AppendAnswer>,
    /// No request is sent any more: an answer ended the session (an error,
    /// or a follower that took only part of the entries), or the input did.
    done: bool,
}

/// Whether an append could stand for `notice`: the same leader, from the
/// same position of the follower's log.
fn carries(request: &AppendEntriesRequest<C>, notice: &AppendEntriesRequest<C>) -> bool {
    request.vote == notice.vote && request.prev_log_id == notice.prev_log_id
}

/// The answer a commit notice at `prev` would have had, given the answer of
/// the append that carried it (which started at the same position).
fn notice_answer(carrier: &AppendAnswer, prev: &Option<RaftLogId>) -> AppendAnswer {
    match carrier {
        Ok(Ok(_)) => Ok(Ok(*prev)),
        Ok(Err(refused)) => Ok(Err(refused.clone())),
        Err(err) => Err(unreachable(err.to_string())),
    }
}

impl<S> AppendSession<'_, S>
where
    S: Stream<Item = AppendEntriesRequest<C>> + Unpin,
{
    /// The next answer, sending what it takes.
    async fn next(mut self) -> Option<(AppendAnswer, Self)> {
        loop {
            if let Some(answer) = self.ready.pop_front() {
                return Some((answer, self));
            }
            if self.done {
                return None;
            }
            let next = match &self.held {
                None => self.input.next().await,
                // Dropping `next()` at the deadline loses nothing: the
                // stream keeps a request it was making for the next poll.
                Some((_, _, until)) => match tokio::time::timeout_at(*until, self.input.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        // No append came to carry it: the notice goes alone.
                        self.send_held().await;
                        continue;
                    }
                },
            };
            let Some(request) = next else {
                self.send_held().await;
                self.done = true;
                continue;
            };
            // A request from the held notice's position stands for it;
            // any other sends it first.
            if !self.held.as_ref().is_some_and(|(notice, _, _)| carries(&request, notice)) {
                self.send_held().await;
                if self.done {
                    continue;
                }
            }
            if request.entries.is_empty() && self.client.hold_commit_notices {
                match &mut self.held {
                    // A newer notice from the same position: one send for both.
                    Some((notice, n, _)) => {
                        *notice = request;
                        *n += 1;
                    }
                    None => self.held = Some((request, 1, tokio::time::Instant::now() + COMMIT_NOTICE_WAIT)),
                }
                continue;
            }
            // An append carries a commit index at least as new as a held
            // notice's (openraft reads the index as it builds each request),
            // and its answer answers the notices too.
            let notices = self.held.take().map(|(notice, n, _)| (notice.prev_log_id, n));
            let answer = self.send(request).await;
            if let Some((prev, n)) = notices {
                self.queue_notice_answers(&answer, &prev, n);
                crate::stats::record_notices_carried(n);
            }
            self.ready.push_back(answer);
        }
    }

    /// Sends the held notice, if any, and queues its answers.
    async fn send_held(&mut self) {
        if let Some((notice, n, _)) = self.held.take() {
            let prev = notice.prev_log_id;
            let answer = self.send(notice).await;
            self.queue_notice_answers(&answer, &prev, n - 1);
            self.ready.push_back(answer);
            crate::stats::record_notices_carried(n - 1);
            crate::stats::record_notices_alone(1);
        }
    }

    /// Queues the answers of `n` notices at `prev` that `answer` stands for.
    fn queue_notice_answers(&mut self, answer: &AppendAnswer, prev: &Option<RaftLogId>, n: usize) {
        for _ in 0..n {
            self.ready.push_back(notice_answer(answer, prev));
        }
    }

    /// Sends one request and waits for its answer.
    async fn send(&mut self, request: AppendEntriesRequest<C>) -> AppendAnswer {
        let prev = request.prev_log_id;
        let last = request.entries.last().map(|entry| entry.log_id).or(prev);
        match self.client.append_entries(request, self.option.clone()).await {
            Ok(response) => {
                let whole = match &response {
                    AppendEntriesResponse::Success => true,
                    AppendEntriesResponse::PartialSuccess(upto) => *upto == last,
                    _ => false,
                };
                if !whole {
                    // As openraft's own sequential stream: a refusal or a
                    // partial success ends the session.
                    self.done = true;
                }
                Ok(response.into_stream_result(prev, last))
            }
            Err(err) => {
                self.done = true;
                Err(err)
            }
        }
    }
}

impl RaftNetworkV2<C> for GroupClient {
    type SnapshotData = PartitionSnapshot;

    /// openraft's sequential stream (one request at a time, each waiting for
    /// its answer), except that a commit notice (an append without entries)
    /// waits up to [`COMMIT_NOTICE_WAIT`] for the next append when the group
    /// holds them. At a steady rate of writes, each entry otherwise costs a
    /// second round trip to each follower, and the next entry waits behind
    /// it. Heartbeats are not held: they come one per session, and the
    /// session's input ends right after them.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, AppendAnswer>, RPCError<C>>>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
    {
        let session = AppendSession { client: self, input, option, held: None, ready: VecDeque::new(), done: false };
        let answers: BoxStream<'s, AppendAnswer> = Box::pin(futures::stream::unfold(session, AppendSession::next));
        Box::pin(async move { Ok(answers) })
    }

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
