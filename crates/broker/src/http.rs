//! The HTTP listener: `/health/live` and `/health/ready` (metrics come
//! later). A few lines of HTTP/1.1 by hand: one GET per connection, no
//! body, so no HTTP library is needed.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::limits::HTTP_HEAD_MAX;
use strata_raft::ClusterNode;

/// Serves health checks until `stop` turns true.
pub async fn serve(listener: TcpListener, cluster: Arc<ClusterNode>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let cluster = cluster.clone();
                tokio::spawn(async move {
                    if let Err(err) = answer(stream, &cluster).await {
                        tracing::debug!(error = %err, "health request failed");
                    }
                });
            }
            Err(err) => tracing::warn!(error = %err, "accepting an HTTP connection failed"),
        }
    }
}

/// Ready: the node follows a controller with a leader, is registered, and
/// every partition replica it holds has a leader.
pub fn readiness(cluster: &ClusterNode) -> Result<(), String> {
    use openraft::async_runtime::WatchReceiver;
    if cluster.controller_leader().is_none() {
        return Err("the controller has no leader".into());
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

async fn answer(mut stream: TcpStream, cluster: &ClusterNode) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > HTTP_HEAD_MAX {
            return respond(&mut stream, 431, "request head too large\n").await;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut stream, 405, "only GET\n").await;
    }
    match path {
        "/health/live" => respond(&mut stream, 200, "live\n").await,
        "/health/ready" => match readiness(cluster) {
            Ok(()) => respond(&mut stream, 200, "ready\n").await,
            Err(why) => respond(&mut stream, 503, &format!("not ready: {why}\n")).await,
        },
        _ => respond(&mut stream, 404, "not found; try /health/live or /health/ready\n").await,
    }
}

async fn respond(stream: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
