//! The receiving side of the shared stream: the gRPC service and the router
//! that hands each request to its group's Raft.
//!
//! Requests of one group on one stream are handled in order by one task per
//! group (Raft expects its appends in order); different groups proceed in
//! parallel, and their answers go back on the stream as they are ready.
//! A group whose queue (`GROUP_QUEUE_MAX`) is full holds up the stream's
//! reader, and with it the other groups on that stream, until it drains:
//! back-pressure, not loss.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures::StreamExt;
use openraft::Raft;
use strata_proto::chained;
use strata_proto::raft as pb;
use strata_proto::raft::raft_request::Body;
use strata_proto::raft::raft_response::Body as ReplyBody;
use tokio::sync::{mpsc, watch};
use tonic::codegen::http;

use super::convert::{
    append_from_pb, append_reply_to_pb, from_json, json_bytes, propose_reply_to_pb, vote_from_pb, vote_reply_to_pb,
    vote_request_from_pb, vote_to_pb,
};
use super::peer::{EXCHANGE_PATH, TO_NODE_HEADER};
use crate::limits::{GROUP_QUEUE_MAX, PEER_QUEUE_MAX, TRANSPORT_MESSAGE_BYTES_MAX};
use crate::node::Group;
use crate::quiesce::{Arrived, Quiescence};
use crate::state_machine::{PartitionSnapshot, PartitionStateMachine};
use crate::types::C;

/// A running group's Raft handle.
pub type GroupRaft = Raft<C, PartitionStateMachine>;

/// The groups this node runs, by group id.
pub struct Router {
    groups: RwLock<HashMap<u64, Group>>,
    quiescence: Arc<Quiescence>,
}

impl Router {
    pub fn new(quiescence: Arc<Quiescence>) -> Router {
        Router { groups: RwLock::default(), quiescence }
    }

    /// Every group.
    pub fn all(&self) -> Vec<Group> {
        self.groups.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn insert(&self, group: Group) {
        self.groups.write().unwrap_or_else(|p| p.into_inner()).insert(group.id, group);
    }

    pub fn remove(&self, group: u64) -> Option<Group> {
        self.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&group)
    }

    pub fn get(&self, group: u64) -> Option<Group> {
        self.groups.read().unwrap_or_else(|p| p.into_inner()).get(&group).cloned()
    }

    async fn handle(&self, group: u64, body: Option<Body>) -> ReplyBody {
        let Some(group) = self.get(group) else {
            return ReplyBody::Error(format!("group {group} is not on this node"));
        };
        match handle_with(&group, body, &self.quiescence).await {
            Ok(reply) => reply,
            Err(message) => ReplyBody::Error(message),
        }
    }
}

async fn handle_with(group: &Group, body: Option<Body>, quiescence: &Quiescence) -> Result<ReplyBody, String> {
    let raft = &group.raft;
    match body.ok_or("empty request")? {
        Body::Ping(_) => Ok(ReplyBody::Pong(quiescence.pong())),
        Body::Quiesce(req) => {
            Ok(ReplyBody::Quiesce(pb::QuiesceReply { quiet: quiescence.on_quiesce_request(group, req) }))
        }
        Body::Rebuild(req) => {
            // Answered from this node's copy of the metadata (group 0's):
            // what it applied is committed, so a yes is final.
            let metadata = group.state_machine.metadata().unwrap_or_default();
            let removed = metadata.removed_replica(req.group, req.node) == Some(req.nonce);
            let reported = metadata.damaged_replica(req.group, req.node) == Some(req.nonce);
            Ok(ReplyBody::Rebuild(pb::RebuildReply { removed, reported }))
        }
        Body::Propose(req) => {
            let result = crate::partition::produce(group, req.batch).await;
            Ok(ReplyBody::Propose(propose_reply_to_pb(&result)))
        }
        Body::TransferLeader(req) => {
            let req = from_json(&req.request_json)?;
            quiescence.arrived(group, Arrived::Other);
            let resp = raft.handle_transfer_leader(req).await.map_err(|e| e.to_string())?;
            Ok(ReplyBody::TransferLeader(pb::TransferLeaderReply { response_json: json_bytes(&resp)? }))
        }
        Body::Append(req) => {
            let req = append_from_pb(req)?;
            let arrived = Arrived::Append { vote: req.vote, has_entries: !req.entries.is_empty() };
            let resp = raft.append_entries(req).await.map_err(|e| e.to_string())?;
            // After the append: it renewed the leader's lease, so a woken
            // ticker does not stand for election at its first tick.
            quiescence.arrived(group, arrived);
            Ok(ReplyBody::Append(append_reply_to_pb(&resp)))
        }
        Body::Vote(req) => {
            let req = vote_request_from_pb(req)?;
            let resp = raft.vote(req).await.map_err(|e| e.to_string())?;
            quiescence.arrived(group, Arrived::Other);
            Ok(ReplyBody::Vote(vote_reply_to_pb(&resp)))
        }
        Body::Snapshot(req) => {
            let vote = vote_from_pb(req.vote)?;
            let meta = from_json(&req.meta_json)?;
            let data: PartitionSnapshot = from_json(&req.data_json)?;
            let snapshot = openraft::Snapshot { meta, snapshot: data };
            let resp = raft.install_full_snapshot(vote, snapshot).await.map_err(|e| e.to_string())?;
            quiescence.arrived(group, Arrived::Other);
            Ok(ReplyBody::Snapshot(pb::InstallSnapshotReply { vote: Some(vote_to_pb(&resp.vote)) }))
        }
    }
}

/// The transport's gRPC service (`strata.raft.v1.RaftTransport`): one
/// `Exchange` stream per connected peer.
///
/// Served by hand rather than by tonic's generated server, whose decoder
/// copies every received byte into a buffer of its own: here a request's
/// entries keep the HTTP/2 frames they arrived in (`chained::Messages`),
/// and the answers go out as `chained::answer`. The peers' side is
/// `peer.rs`; the bytes on the wire are plain gRPC either way.
#[derive(Clone)]
pub struct TransportService {
    node_id: u64,
    router: Arc<Router>,
    stopping: watch::Receiver<bool>,
}

impl TransportService {
    /// `stopping` turning true ends every open stream: the server's own
    /// shutdown does not end tasks a stream spawned, and a peer would keep
    /// talking to a stopped node over a connection that never breaks.
    /// Streams meant for another node id (one that listened at this
    /// address before, say a removed broker) are refused.
    pub fn new(node_id: u64, router: Arc<Router>, stopping: watch::Receiver<bool>) -> TransportService {
        TransportService { node_id, router, stopping }
    }

    fn exchange(&self, request: http::Request<tonic::body::Body>) -> http::Response<tonic::body::Body> {
        if request.uri().path() != EXCHANGE_PATH {
            return tonic::Status::unimplemented(format!("no method {}", request.uri().path())).into_http();
        }
        let to = request.headers().get(TO_NODE_HEADER).map(|v| v.to_str().unwrap_or("?").to_string());
        if let Some(to) = to.filter(|to| *to != self.node_id.to_string()) {
            return tonic::Status::failed_precondition(format!("this is node {}, not node {to}", self.node_id))
                .into_http();
        }
        let mut inbound =
            chained::Messages::<_, pb::RaftRequest>::new(request.into_body(), TRANSPORT_MESSAGE_BYTES_MAX);
        let (out_tx, out_rx) = mpsc::channel::<pb::RaftResponse>(PEER_QUEUE_MAX);
        let router = self.router.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            // One ordered worker per group on this stream.
            let mut workers: HashMap<u64, mpsc::Sender<pb::RaftRequest>> = HashMap::new();
            loop {
                let next = tokio::select! {
                    next = inbound.next() => next,
                    _ = stopping.wait_for(|stop| *stop) => None,
                };
                let request = match next {
                    Some(Ok(request)) => request,
                    Some(Err(status)) => {
                        tracing::debug!(%status, "raft stream from a peer ended");
                        break;
                    }
                    None => break,
                };
                if let Some(Body::Ping(_)) = request.body {
                    // Liveness is answered at once: a busy group's queue
                    // must not make its node look dead.
                    let reply =
                        pb::RaftResponse { id: request.id, body: Some(ReplyBody::Pong(router.quiescence.pong())) };
                    if out_tx.send(reply).await.is_err() {
                        break;
                    }
                    continue;
                }
                let group = request.group;
                let worker = workers.entry(group).or_insert_with(|| {
                    let (tx, mut rx) = mpsc::channel::<pb::RaftRequest>(GROUP_QUEUE_MAX);
                    let router = router.clone();
                    let out = out_tx.clone();
                    tokio::spawn(async move {
                        while let Some(request) = rx.recv().await {
                            let body = router.handle(request.group, request.body).await;
                            let reply = pb::RaftResponse { id: request.id, body: Some(body) };
                            if out.send(reply).await.is_err() {
                                return;
                            }
                        }
                    });
                    tx
                });
                if worker.send(request).await.is_err() {
                    break;
                }
            }
            // Dropping the workers' senders ends them, and with the last
            // answer sender gone the answer stream ends: the peer sees the
            // stream close and reconnects.
        });
        let answers =
            Box::pin(futures::stream::unfold(out_rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) }));
        chained::answer(answers, TRANSPORT_MESSAGE_BYTES_MAX)
    }
}

impl tonic::server::NamedService for TransportService {
    const NAME: &'static str = "strata.raft.v1.RaftTransport";
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for TransportService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        std::future::ready(Ok(self.exchange(request)))
    }
}
