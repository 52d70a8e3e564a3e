//! A three-node cluster on real sockets and real files: replication, leader
//! failover, catch-up of a restarted node; and the transport's check of the
//! node id a stream is meant for.

mod common;

use std::time::{Duration, Instant};

use common::{GROUP, Root, batch, cluster, committed_batches, start, wait_for_high_watermark, wait_for_leader, write};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_batches_survive_leader_failover_and_a_restarted_node_catches_up() {
    let root = Root::new("failover");
    let nodes = cluster(3, &root.0).await;
    let leader = wait_for_leader(&nodes, Duration::from_secs(10)).await;

    // Acknowledged writes: client_write returns after a majority has them on
    // disk and the leader applied them.
    let mut acked = Vec::new();
    for n in 0..50u64 {
        let base_offset = write(&leader, n, Duration::from_secs(10)).await.expect("write on leader");
        assert_eq!(base_offset, acked.len() as u64 * 10);
        acked.push(n);
    }

    // Kill the leader.
    let (leader_id, leader_addr) = (leader.id(), leader.addr());
    leader.shutdown().await;
    drop(leader);
    let survivors: Vec<_> = nodes.iter().filter(|n| n.id() != leader_id).cloned().collect();
    let started = Instant::now();
    let new_leader = wait_for_leader(&survivors, Duration::from_secs(10)).await;
    let failover = started.elapsed();
    assert_ne!(new_leader.id(), leader_id);
    assert!(failover < Duration::from_secs(5), "failover took {failover:?}");
    for n in 50..80u64 {
        write(&new_leader, n, Duration::from_secs(10)).await.expect("write on new leader");
        acked.push(n);
    }

    // Every acknowledged batch is on the new leader, in order, once.
    let expected: Vec<Vec<u8>> = acked.iter().map(|n| batch(*n).to_vec()).collect();
    assert_eq!(committed_batches(&new_leader), expected);

    // Restart the old leader on its data: it rejoins and catches up.
    let restarted = start(leader_id, leader_addr, &root.0).await;
    wait_for_high_watermark(std::slice::from_ref(&restarted), acked.len() as u64 * 10, Duration::from_secs(15)).await;
    assert_eq!(committed_batches(&restarted), expected);
    assert!(restarted.group(GROUP).is_some());

    restarted.shutdown().await;
    common::shutdown_all(&survivors).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_traffic_meant_for_another_node_id() {
    // Two single-node groups: node 1 leads its own, node 3 only talks to it.
    let root = Root::new("cluster-node-id");
    let nodes = cluster(1, &root.0).await;
    let target = wait_for_leader(&nodes, Duration::from_secs(10)).await;
    let other = start(3, "127.0.0.1:0".parse().expect("addr"), &root.0).await;
    let addr = target.addr().to_string();
    // Node 1's address, believed to be node 2's (a removed node's address
    // now used by another): refused, nothing written.
    let err = other.forward(2, &addr, GROUP, batch(1)).await.expect_err("a stream meant for node 2");
    assert!(err.to_string().contains("this is node 1, not node 2"), "{err}");
    assert_eq!(committed_batches(&target).len(), 0);
    // The same write for the right id goes through.
    other.forward(1, &addr, GROUP, batch(1)).await.expect("forward to node 1");
    assert_eq!(committed_batches(&target).len(), 1);
    other.shutdown().await;
    common::shutdown_all(&nodes).await;
}
