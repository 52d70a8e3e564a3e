//! A small in-process cluster on loopback sockets and temp dirs, for tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::BasicNode;
use strata_batch::{BatchBuilder, Compression};
use strata_log::LogConfig;
use strata_raft::{BatchData, RaftNode, RaftNodeConfig, default_raft_config};

pub const GROUP: u64 = 7;

pub fn fast_raft() -> openraft::Config {
    openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        max_in_snapshot_log_to_keep: 0,
        ..default_raft_config()
    }
}

/// A batch of 10 records whose content depends on `n`.
pub fn batch(n: u64) -> Bytes {
    let mut builder = BatchBuilder::new();
    for i in 0..10 {
        builder.push(n as i64, Some(format!("k{n}-{i}").as_bytes()), Some(&[n as u8; 200]), &[]);
    }
    builder.build(Compression::Lz4)
}

/// A fresh directory for a test, removed by `Drop`.
pub struct Root(pub PathBuf);

impl Root {
    pub fn new(tag: &str) -> Root {
        let path = std::env::temp_dir().join(format!("strata-raft-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Root(path)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn start(id: u64, listen: SocketAddr, root: &Path) -> Arc<RaftNode> {
    let config = RaftNodeConfig {
        node_id: id,
        listen,
        data_dir: root.join(format!("node-{id}")),
        raft: fast_raft(),
        log: LogConfig { segment_bytes: 256 * 1024, ..LogConfig::default() },
        tls: None,
    };
    let node = Arc::new(RaftNode::start(config).await.expect("start node"));
    node.open_group(GROUP).await.expect("open group");
    node
}

/// Starts `n` nodes and initializes the group with all of them.
pub async fn cluster(n: u64, root: &Path) -> Vec<Arc<RaftNode>> {
    let mut nodes = Vec::new();
    for id in 1..=n {
        nodes.push(start(id, "127.0.0.1:0".parse().expect("addr"), root).await);
    }
    let members: BTreeMap<u64, BasicNode> =
        nodes.iter().map(|n| (n.id(), BasicNode::new(n.addr().to_string()))).collect();
    nodes[0].group(GROUP).expect("group").raft.initialize(members).await.expect("initialize");
    nodes
}

pub async fn wait_for_leader(nodes: &[Arc<RaftNode>], timeout: Duration) -> Arc<RaftNode> {
    let deadline = Instant::now() + timeout;
    loop {
        for node in nodes {
            if node.group(GROUP).expect("group").raft.is_leader() {
                return node.clone();
            }
        }
        assert!(Instant::now() < deadline, "no leader within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes batch `n` through `node`, retrying while it has no established
/// leadership (as a client would). Returns the write's base offset.
pub async fn write(node: &RaftNode, n: u64, timeout: Duration) -> Result<u64, String> {
    let group = node.group(GROUP).expect("group");
    let raft = group.raft.clone();
    let deadline = Instant::now() + timeout;
    loop {
        group.ensure_awake().await;
        let result =
            tokio::time::timeout(timeout, raft.client_write(BatchData::new(batch(n)).expect("a valid batch"))).await;
        match result {
            Ok(Ok(response)) => return Ok(response.data.base_offset),
            Ok(Err(err)) if Instant::now() < deadline && err.forward_to_leader().is_some() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Err(err)) => return Err(err.to_string()),
            Err(_) => return Err(format!("write {n} not acknowledged within {timeout:?}")),
        }
    }
}

/// The committed batches readable on `node`, with stamped fields zeroed.
pub fn committed_batches(node: &RaftNode) -> Vec<Vec<u8>> {
    let group = node.group(GROUP).expect("group");
    let hw = group.state_machine.high_watermark();
    let mut out = Vec::new();
    let mut from = group.log.state().log_start_offset;
    while from < hw {
        let read = group.log.read_offsets(from, 1 << 20, hw).expect("read");
        for chunk in &read.chunks {
            for item in strata_batch::split_batches(chunk) {
                let (_, bytes) = item.expect("valid batch");
                let mut unstamped = bytes.to_vec();
                strata_batch::stamp(&mut unstamped, 0, 0);
                out.push(unstamped);
            }
        }
        assert!(read.next_offset > from, "no progress reading at {from}");
        from = read.next_offset;
    }
    out
}

/// Waits until every node's high watermark reaches `hw`.
pub async fn wait_for_high_watermark(nodes: &[Arc<RaftNode>], hw: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for node in nodes {
        loop {
            let got = node.group(GROUP).expect("group").state_machine.high_watermark().0;
            if got >= hw {
                break;
            }
            if Instant::now() >= deadline {
                let group = node.group(GROUP).expect("group");
                let metrics = {
                    use openraft::async_runtime::WatchReceiver;
                    group.raft.metrics().borrow_watched().clone()
                };
                panic!(
                    "node {} stuck at high watermark {got}, want {hw}; log {:?}; raft {metrics:?}",
                    node.id(),
                    group.log.state()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The stored entries of `node` up to its last index, as (term, unstamped bytes).
pub fn stored_entries(node: &RaftNode) -> Vec<(u64, Vec<u8>)> {
    let group = node.group(GROUP).expect("group");
    let state = group.log.state();
    let end = state.last_log_id.map_or(state.first_index.0, |id| id.index.0 + 1);
    group
        .log
        .entries(state.first_index..strata_log::RaftIndex(end), usize::MAX)
        .expect("entries")
        .into_iter()
        .map(|e| {
            let mut bytes = e.batch.to_vec();
            strata_batch::stamp(&mut bytes, 0, 0);
            (e.term.0, bytes)
        })
        .collect()
}

pub async fn shutdown_all(nodes: &[Arc<RaftNode>]) {
    for node in nodes {
        node.shutdown().await;
    }
}
