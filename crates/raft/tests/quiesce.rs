//! Quiet groups: an idle, fully replicated partition stops ticking on every
//! replica, keeps its leader while quiet (no spurious elections, not even
//! when a follower restarts), takes writes at once, and still fails over
//! when its leader's node dies. Three nodes on real sockets and files.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{GROUP, Root, batch, cluster, committed_batches, start, wait_for_leader, write};
use openraft::async_runtime::WatchReceiver;
use strata_raft::RaftNode;

fn term(node: &RaftNode) -> u64 {
    node.group(GROUP).expect("group").raft.metrics().borrow_watched().current_term
}

async fn wait_quiet(nodes: &[Arc<RaftNode>], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !nodes.iter().all(|n| n.quiescence().is_quiet(GROUP)) {
        let quiet: Vec<bool> = nodes.iter().map(|n| n.quiescence().is_quiet(GROUP)).collect();
        assert!(Instant::now() < deadline, "group not quiet on every node within {timeout:?}: {quiet:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_group_goes_quiet_stays_led_takes_writes_and_fails_over() {
    let root = Root::new("quiesce");
    let nodes = cluster(3, &root.0).await;
    let leader = wait_for_leader(&nodes, Duration::from_secs(10)).await;
    let mut acked = Vec::new();
    for n in 0..10u64 {
        write(&leader, n, Duration::from_secs(10)).await.expect("write");
        acked.push(n);
    }

    // Idle: every replica goes quiet (fast_raft: after 2 x 600 ms idle).
    wait_quiet(&nodes, Duration::from_secs(10)).await;
    let quiet_term = term(&leader);
    // No elections while quiet: three election timeouts and more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in &nodes {
        assert_eq!(term(node), quiet_term, "node {} changed term while quiet", node.id());
        assert!(node.quiescence().is_quiet(GROUP), "node {} woke with nothing to do", node.id());
    }

    // A write to a quiet group is taken at once and wakes it; it goes
    // quiet again afterwards.
    let started = Instant::now();
    write(&leader, 10, Duration::from_secs(10)).await.expect("write to a quiet group");
    acked.push(10);
    assert!(started.elapsed() < Duration::from_secs(1), "a write to a quiet group took {:?}", started.elapsed());
    wait_quiet(&nodes, Duration::from_secs(10)).await;

    // A follower restarts while the group is quiet: the leader hears the new
    // incarnation and heartbeats, so the follower follows it instead of
    // calling an election.
    let follower = nodes.iter().find(|n| n.id() != leader.id()).expect("a follower").clone();
    let (follower_id, follower_addr) = (follower.id(), follower.addr());
    follower.shutdown().await;
    drop(follower);
    let restarted = start(follower_id, follower_addr, &root.0).await;
    let mut nodes: Vec<Arc<RaftNode>> = nodes.into_iter().filter(|n| n.id() != follower_id).collect();
    nodes.push(restarted.clone());
    wait_quiet(&nodes, Duration::from_secs(15)).await;
    assert_eq!(term(&leader), quiet_term, "a restarted follower caused an election");
    assert!(leader.group(GROUP).expect("group").raft.is_leader());

    // The leader's node dies while the group is quiet: the followers notice
    // through the node pings and elect a new leader.
    let leader_id = leader.id();
    leader.shutdown().await;
    drop(leader);
    let survivors: Vec<Arc<RaftNode>> = nodes.into_iter().filter(|n| n.id() != leader_id).collect();
    let started = Instant::now();
    let new_leader = wait_for_leader(&survivors, Duration::from_secs(10)).await;
    let failover = started.elapsed();
    assert_ne!(new_leader.id(), leader_id);
    assert!(failover < Duration::from_secs(5), "failover of a quiet group took {failover:?}");
    write(&new_leader, 11, Duration::from_secs(10)).await.expect("write on the new leader");
    acked.push(11);
    let expected: Vec<Vec<u8>> = acked.iter().map(|n| batch(*n).to_vec()).collect();
    assert_eq!(committed_batches(&new_leader), expected);
    common::shutdown_all(&survivors).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_replica_group_goes_quiet_and_still_takes_writes() {
    let root = Root::new("quiesce-single");
    let nodes = cluster(1, &root.0).await;
    let leader = wait_for_leader(&nodes, Duration::from_secs(10)).await;
    write(&leader, 0, Duration::from_secs(10)).await.expect("write");
    wait_quiet(&nodes, Duration::from_secs(10)).await;
    // A quiet leader with no followers renews its lease alone.
    let started = Instant::now();
    write(&leader, 1, Duration::from_secs(10)).await.expect("write to a quiet single-replica group");
    assert!(started.elapsed() < Duration::from_secs(1), "the write took {:?}", started.elapsed());
    let expected: Vec<Vec<u8>> = [0u64, 1].iter().map(|n| batch(*n).to_vec()).collect();
    assert_eq!(committed_batches(&leader), expected);
    common::shutdown_all(&nodes).await;
}
