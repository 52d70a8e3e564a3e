//! The client side of the shared stream: one connection per peer node,
//! carrying the requests of every group, answered by id in any order.
//!
//! The connection is made lazily on first use and again after it breaks;
//! a call on a broken connection fails at once (the caller's group reports
//! the peer unreachable and openraft backs off).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use strata_proto::raft as pb;
use strata_proto::{chained, error_chain};
use tokio::sync::{mpsc, oneshot};
use tonic::codegen::http::{HeaderMap, HeaderValue};

use crate::limits::{
    PEER_CONNECT_TIMEOUT, PEER_KEEPALIVE_INTERVAL, PEER_KEEPALIVE_TIMEOUT, PEER_QUEUE_MAX, TRANSPORT_MESSAGE_BYTES_MAX,
};
use crate::network::tls::PeerTls;

/// The gRPC metadata key naming the node a stream is meant for.
pub(crate) const TO_NODE_HEADER: &str = "strata-to-node";

/// The shared stream's gRPC path (`raft.proto`).
pub(crate) const EXCHANGE_PATH: &str = "/strata.raft.v1.RaftTransport/Exchange";

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<pb::RaftResponse>>>>;

struct Connection {
    tx: mpsc::Sender<pb::RaftRequest>,
    pending: Pending,
    /// Cleared by the reader task when the stream ends: the request side
    /// may stay open on a dead connection, so it cannot tell.
    alive: Arc<AtomicBool>,
}

impl Connection {
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire) && !self.tx.is_closed()
    }
}

/// A connection to one peer node, shared by all groups.
pub struct Peer {
    /// The node id this connection is for: sent with the stream, so a
    /// different node now listening at the address refuses it.
    node: u64,
    addr: String,
    /// Mutual TLS to the peer, when the cluster uses it.
    tls: Option<Arc<PeerTls>>,
    next_id: AtomicU64,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl Peer {
    pub fn new(node: u64, addr: String, tls: Option<Arc<PeerTls>>) -> Peer {
        Peer { node, addr, tls, next_id: AtomicU64::new(1), connection: tokio::sync::Mutex::new(None) }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn connection(&self) -> Result<Arc<Connection>, String> {
        let mut slot = self.connection.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| c.is_alive()) {
            return Ok(conn.clone());
        }
        let conn = Arc::new(self.connect().await?);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn connect(&self) -> Result<Connection, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", self.addr))
            .map_err(|e| format!("bad peer address {}: {e}", self.addr))?;
        if let Some(tls) = &self.tls {
            endpoint =
                endpoint.tls_config(tls.client()).map_err(|e| format!("TLS to {}: {}", self.addr, error_chain(&e)))?;
        }
        let endpoint = endpoint
            .connect_timeout(PEER_CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .max_frame_size(crate::limits::H2_FRAME_BYTES)
            .initial_stream_window_size(crate::limits::H2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(crate::limits::H2_CONNECTION_WINDOW_BYTES)
            // A peer that vanished without closing (host down, blackhole) is
            // noticed by HTTP/2 pings instead of TCP's minutes-long timeout.
            .http2_keep_alive_interval(PEER_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(PEER_KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let mut channel =
            endpoint.connect().await.map_err(|e| format!("connect to {}: {}", self.addr, error_chain(&e)))?;
        let (tx, rx) = mpsc::channel::<pb::RaftRequest>(PEER_QUEUE_MAX);
        let outbound = Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) }));
        let mut headers = HeaderMap::new();
        headers.insert(TO_NODE_HEADER, HeaderValue::from(self.node));
        // Entries go out shared, not copied into tonic's buffer once per
        // follower (`strata_proto::chained`); the peer's `server.rs`
        // decodes them without copying too.
        let mut inbound = chained::call::<_, _, pb::RaftResponse>(
            &mut channel,
            EXCHANGE_PATH,
            headers,
            outbound,
            TRANSPORT_MESSAGE_BYTES_MAX,
            TRANSPORT_MESSAGE_BYTES_MAX,
        )
        .await
        .map_err(|e| format!("open stream to {}: {e}", self.addr))?;
        let pending: Pending = Arc::default();
        let reader_pending = pending.clone();
        let alive = Arc::new(AtomicBool::new(true));
        let reader_alive = alive.clone();
        let addr = self.addr.clone();
        tokio::spawn(async move {
            while let Some(message) = inbound.next().await {
                match message {
                    Ok(response) => {
                        let waiter = reader_pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&response.id);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(response);
                        }
                    }
                    Err(status) => {
                        tracing::debug!(peer = %addr, %status, "raft stream ended");
                        break;
                    }
                }
            }
            // Dropping the waiters fails every call still in flight; the next
            // call reconnects.
            reader_alive.store(false, Ordering::Release);
            reader_pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        Ok(Connection { tx, pending, alive })
    }

    /// Sends one request for `group` and waits for its answer, at most `ttl`.
    pub async fn call(
        &self,
        group: u64,
        body: pb::raft_request::Body,
        ttl: Duration,
    ) -> Result<pb::RaftResponse, String> {
        // The whole call, connecting included, is bounded by `ttl`.
        match tokio::time::timeout(ttl, self.call_unbounded(group, body)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer from {} within {ttl:?}", self.addr)),
        }
    }

    async fn call_unbounded(&self, group: u64, body: pb::raft_request::Body) -> Result<pb::RaftResponse, String> {
        let conn = self.connection().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        // Removes the waiter however this future ends (answer, error, timeout).
        struct Forget<'a>(&'a Pending, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
            }
        }
        let _forget = Forget(&conn.pending, id);
        let request = pb::RaftRequest { id, group, body: Some(body) };
        conn.tx.send(request).await.map_err(|_| format!("stream to {} closed", self.addr))?;
        rx.await.map_err(|_| format!("stream to {} broke", self.addr))
    }
}

/// The peers of a node, by node id.
pub struct Peers {
    peers: Mutex<HashMap<u64, Arc<Peer>>>,
    tls: Option<Arc<PeerTls>>,
}

impl Peers {
    /// No connection yet; each will use `tls` when given.
    pub fn new(tls: Option<PeerTls>) -> Peers {
        Peers { peers: Mutex::default(), tls: tls.map(Arc::new) }
    }

    /// The connection to `node` at `addr` (replaced if the address changed).
    pub fn get(&self, node: u64, addr: &str) -> Arc<Peer> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        match peers.get(&node) {
            Some(peer) if peer.addr() == addr => peer.clone(),
            _ => {
                let peer = Arc::new(Peer::new(node, addr.to_string(), self.tls.clone()));
                peers.insert(node, peer.clone());
                peer
            }
        }
    }
}
