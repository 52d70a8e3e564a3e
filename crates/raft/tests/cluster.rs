//! A three-node cluster on real sockets and real files: replication, leader
//! failover, catch-up of a restarted node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::BasicNode;
use strata_batch::{BatchBuilder, Compression};
use strata_log::{LogConfig, Offset};
use strata_raft::{BatchData, RaftNode, RaftNodeConfig, default_raft_config};

const GROUP: u64 = 7;

fn fast_raft() -> openraft::Config {
    openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        ..default_raft_config()
    }
}

fn batch(n: u64) -> Bytes {
    let mut builder = BatchBuilder::new();
    for i in 0..10 {
        builder.push(n as i64, Some(format!("k{n}-{i}").as_bytes()), Some(&[n as u8; 200]), &[]);
    }
    builder.build(Compression::Lz4)
}

async fn start(id: u64, listen: SocketAddr, root: &std::path::Path) -> Arc<RaftNode> {
    let config = RaftNodeConfig {
        node_id: id,
        listen,
        data_dir: root.join(format!("node-{id}")),
        raft: fast_raft(),
        log: LogConfig { segment_bytes: 256 * 1024, ..LogConfig::default() },
    };
    let node = Arc::new(RaftNode::start(config).await.expect("start node"));
    node.open_group(GROUP).await.expect("open group");
    node
}

async fn wait_for_leader(nodes: &[&Arc<RaftNode>], timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        for node in nodes {
            let group = node.group(GROUP).expect("group");
            if group.raft.is_leader() {
                return node.id();
            }
        }
        assert!(Instant::now() < deadline, "no leader within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every record readable on `node` below its high watermark, as batches.
fn committed_batches(node: &RaftNode) -> Vec<Vec<u8>> {
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
        assert!(read.next_offset > from, "no progress reading at {from} (hw {hw}, log {:?})", group.log.state());
        from = read.next_offset;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_batches_survive_leader_failover_and_a_restarted_node_catches_up() {
    let root = std::env::temp_dir().join(format!("strata-raft-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let root = PathBuf::from(&root);
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id, "127.0.0.1:0".parse().expect("addr"), &root).await);
    }
    let members: BTreeMap<u64, BasicNode> =
        nodes.iter().map(|n| (n.id(), BasicNode::new(n.addr().to_string()))).collect();
    nodes[0].group(GROUP).expect("group").raft.initialize(members).await.expect("initialize");
    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;

    // Acknowledged writes: client_write returns after a majority has them on
    // disk and the leader applied them.
    let mut acked = Vec::new();
    let mut next = 0u64;
    let write = |node: &Arc<RaftNode>, n: u64| {
        let raft = node.group(GROUP).expect("group").raft;
        async move {
            // A new leader refuses writes until its lease is established
            // (ForwardToLeader without a leader): retry as a client would.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let result = tokio::time::timeout(Duration::from_secs(10), raft.client_write(BatchData(batch(n))))
                    .await
                    .unwrap_or_else(|_| panic!("write {n} not acknowledged within 10 s"));
                match result {
                    Err(err) if Instant::now() < deadline && err.forward_to_leader().is_some() => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => return other,
                }
            }
        }
    };
    let leader_node = nodes.iter().find(|n| n.id() == leader).expect("leader").clone();
    for _ in 0..50 {
        let response = write(&leader_node, next).await.expect("write on leader");
        assert_eq!(response.data.base_offset, acked.len() as u64 * 10);
        acked.push(next);
        next += 1;
    }

    // Kill the leader.
    let old_leader_addr = leader_node.addr();
    leader_node.shutdown().await;
    drop(leader_node);
    let survivors: Vec<Arc<RaftNode>> = nodes.iter().filter(|n| n.id() != leader).cloned().collect();
    let started = Instant::now();
    let new_leader = wait_for_leader(&survivors.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;
    let failover = started.elapsed();
    assert_ne!(new_leader, leader);
    assert!(failover < Duration::from_secs(5), "failover took {failover:?}");
    let new_leader_node = survivors.iter().find(|n| n.id() == new_leader).expect("new leader").clone();
    for _ in 0..30 {
        write(&new_leader_node, next).await.expect("write on new leader");
        acked.push(next);
        next += 1;
    }

    // Every acknowledged batch is on the new leader, in order, once.
    let expected: Vec<Vec<u8>> = acked.iter().map(|n| batch(*n).to_vec()).collect();
    assert_eq!(committed_batches(&new_leader_node), expected);

    // Restart the old leader on its data: it rejoins and catches up.
    let restarted = start(leader, old_leader_addr, &root).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let hw = restarted.group(GROUP).expect("group").state_machine.high_watermark();
        if hw == Offset(acked.len() as u64 * 10) {
            break;
        }
        assert!(Instant::now() < deadline, "restarted node stuck at {hw}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(committed_batches(&restarted), expected);

    restarted.shutdown().await;
    for node in &survivors {
        node.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&root);
}
