//! The HTTP listener: `/metrics` (Prometheus text), `/health/live`,
//! `/health/ready` and `/v1/cluster` (JSON). A few lines of HTTP/1.1 by
//! hand: one GET per connection, no body, so no HTTP library is needed.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::disk::DiskGuard;
use crate::groups::Coordinator;
use crate::limits::HTTP_HEAD_MAX;
use crate::metrics::Metrics;
use strata_raft::ClusterNode;

/// What the HTTP endpoints read.
pub struct Http {
    /// The node.
    pub cluster: Arc<ClusterNode>,
    /// Its group coordinator (group metrics).
    pub coordinator: Arc<Coordinator>,
    /// Its counters.
    pub metrics: Arc<Metrics>,
    pub disk: Arc<DiskGuard>,
}

/// Serves the endpoints until `stop` turns true.
pub async fn serve(listener: TcpListener, http: Arc<Http>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let http = http.clone();
                tokio::spawn(async move {
                    if let Err(err) = answer(stream, &http).await {
                        tracing::debug!(error = %err, "health request failed");
                    }
                });
            }
            Err(err) => tracing::warn!(error = %err, "accepting an HTTP connection failed"),
        }
    }
}

/// Runs `starting` (the node's start) to its end while answering on
/// `listener` meanwhile: live, but not ready. A start can take long (a
/// damaged controller replica waits to be rebuilt from the other nodes),
/// and a probe left unanswered would look like a hung process.
pub async fn answer_while<T>(listener: &TcpListener, starting: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(starting);
    loop {
        tokio::select! {
            done = &mut starting => return done,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(async move {
                        if let Err(err) = answer_starting(stream).await {
                            tracing::debug!(error = %err, "health request failed");
                        }
                    });
                }
                Err(err) => tracing::warn!(error = %err, "accepting an HTTP connection failed"),
            },
        }
    }
}

async fn answer_starting(mut stream: TcpStream) -> std::io::Result<()> {
    let Some(path) = read_request(&mut stream).await? else { return Ok(()) };
    match path.as_str() {
        "/health/live" => respond(&mut stream, 200, "live\n").await,
        _ => respond(&mut stream, 503, "not ready: the node is starting (its log says why it waits)\n").await,
    }
}

/// Reads one request head; answers what cannot be served and returns
/// `None` then (or when the client left), else the GET's path.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > HTTP_HEAD_MAX {
            respond(stream, 431, "request head too large\n").await?;
            return Ok(None);
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        respond(stream, 405, "only GET\n").await?;
        return Ok(None);
    }
    Ok(Some(path.to_string()))
}

/// Ready: the node follows a controller with a leader, its copy of the
/// metadata has caught up, it is registered, and every partition replica it
/// holds has a leader.
pub fn readiness(cluster: &ClusterNode) -> Result<(), String> {
    use openraft::async_runtime::WatchReceiver;
    if cluster.controller_leader().is_none() {
        return Err("the controller has no leader".into());
    }
    if !cluster.metadata_caught_up() {
        return Err("this node's copy of the cluster metadata has not caught up yet".into());
    }
    let node = cluster.raft_node();
    if !cluster.metadata().brokers.contains_key(&node.id()) {
        return Err("this node is not registered yet".into());
    }
    let leaderless: Vec<u64> = node
        .groups()
        .iter()
        .filter(|g| g.raft.metrics().borrow_watched().current_leader.is_none())
        .map(|g| g.id)
        .collect();
    if !leaderless.is_empty() {
        return Err(format!("groups without a leader: {leaderless:?}"));
    }
    Ok(())
}

async fn answer(mut stream: TcpStream, http: &Http) -> std::io::Result<()> {
    let cluster = &http.cluster;
    let Some(path) = read_request(&mut stream).await? else { return Ok(()) };
    match path.as_str() {
        "/health/live" => respond(&mut stream, 200, "live\n").await,
        "/metrics" => {
            let body = http.metrics.render(cluster, &http.coordinator, &http.disk).await;
            respond_typed(&mut stream, 200, "text/plain; version=0.0.4", &body).await
        }
        "/v1/cluster" => {
            let body = cluster_json(cluster, &http.coordinator).await;
            respond_typed(&mut stream, 200, "application/json", &body).await
        }
        "/health/ready" => match readiness(cluster) {
            Ok(()) => respond(&mut stream, 200, "ready\n").await,
            Err(why) => respond(&mut stream, 503, &format!("not ready: {why}\n")).await,
        },
        _ => respond(&mut stream, 404, "not found; try /metrics, /health/live, /health/ready or /v1/cluster\n").await,
    }
}

async fn respond(stream: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    respond_typed(stream, status, "text/plain", body).await
}

async fn respond_typed(stream: &mut TcpStream, status: u16, content_type: &str, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// `/v1/cluster`: brokers, topics with their partitions (leader, replicas,
/// and, where this node leads, each voter's matched index and lag), and the
/// groups this node coordinates.
async fn cluster_json(cluster: &ClusterNode, coordinator: &Coordinator) -> String {
    use openraft::async_runtime::WatchReceiver;
    let metadata = cluster.metadata();
    let node = cluster.raft_node();
    let brokers: Vec<serde_json::Value> = metadata
        .brokers
        .values()
        .map(|b| serde_json::json!({"id": b.id, "client_address": b.client_addr, "peer_address": b.raft_addr}))
        .collect();
    let topics: Vec<serde_json::Value> = metadata
        .topics
        .values()
        .map(|t| {
            let partitions: Vec<serde_json::Value> = t
                .partitions
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let mut entry = serde_json::json!({"partition": i, "replicas": p.replicas});
                    if let Some(group) = node.group(p.group) {
                        let m = group.raft.metrics().borrow_watched().clone();
                        entry["leader"] = serde_json::json!(m.current_leader);
                        entry["high_watermark"] = serde_json::json!(group.state_machine.high_watermark().0);
                        if let Some(replication) = m.replication.as_ref() {
                            let last = m.last_log_index.unwrap_or(0);
                            let state: serde_json::Map<String, serde_json::Value> = replication
                                .iter()
                                .map(|(id, matched)| {
                                    let matched = matched.map(|l| l.index);
                                    let lag = matched.map_or(last + 1, |i| last.saturating_sub(i));
                                    (id.to_string(), serde_json::json!({"matched_index": matched, "lag_entries": lag}))
                                })
                                .collect();
                            entry["replica_state"] = serde_json::Value::Object(state);
                        }
                    }
                    entry
                })
                .collect();
            serde_json::json!({"name": t.name, "configs": t.configs, "partitions": partitions})
        })
        .collect();
    let groups = coordinator.list().await;
    let body = serde_json::json!({
        "node_id": node.id(),
        "controller": cluster.controller_leader(),
        "brokers": brokers,
        "topics": topics,
        "groups_coordinated_here": groups,
    });
    body.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).await.expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn a_starting_node_answers_live_and_not_ready_until_its_start_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (done, started) = tokio::sync::oneshot::channel::<u32>();
        let probes = tokio::spawn(async move {
            let live = get(addr, "/health/live").await;
            let ready = get(addr, "/health/ready").await;
            let other = get(addr, "/metrics").await;
            let _ = done.send(7);
            (live, ready, other)
        });
        let value = answer_while(&listener, async { started.await.expect("the probes finish") }).await;
        assert_eq!(value, 7, "the start's own result comes back");
        let (live, ready, other) = probes.await.expect("probes");
        assert!(live.starts_with("HTTP/1.1 200"), "{live}");
        assert!(ready.starts_with("HTTP/1.1 503") && ready.contains("starting"), "{ready}");
        assert!(other.starts_with("HTTP/1.1 503"), "{other}");
    }
}
