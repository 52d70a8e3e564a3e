//! Commit notices ride on the next append: a leader tells its followers of
//! a commit with the next append rather than a round trip of its own, and
//! followers still learn every commit. Alone in its test binary, so the
//! process-wide counters are this test's.

mod common;

use std::time::Duration;

use common::{Root, batch, cluster, committed_batches, shutdown_all, wait_for_high_watermark, wait_for_leader, write};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_notices_ride_on_the_next_append_and_followers_still_learn_every_commit() {
    let root = Root::new("commit-notices");
    let nodes = cluster(3, &root.0).await;
    let leader = wait_for_leader(&nodes, Duration::from_secs(10)).await;
    let before = strata_raft::stats::snapshot();

    // One write after another: each is committed (and its notice to each
    // follower held) before the next append.
    let n_writes = 60u64;
    for n in 0..n_writes {
        write(&leader, n, Duration::from_secs(10)).await.expect("write on leader");
    }
    // Followers learn the last commit too, with no append left to carry it.
    wait_for_high_watermark(&nodes, n_writes * 10, Duration::from_secs(15)).await;
    let expected = committed_batches(&leader);
    assert_eq!(expected.len() as u64, n_writes);
    assert_eq!(expected[5], batch(5).to_vec());
    for node in &nodes {
        assert_eq!(committed_batches(node), expected, "node {}", node.id());
    }

    let after = strata_raft::stats::snapshot();
    let carried = after.commit_notices_carried - before.commit_notices_carried;
    let alone = after.commit_notices_alone - before.commit_notices_alone;
    // Two followers, one notice each per commit: nearly all of them carried
    // by the next write's append.
    assert!(carried >= n_writes, "only {carried} of about {} notices carried ({alone} alone)", 2 * n_writes);
    assert!(alone >= 1, "the last commit's notices go alone: {alone}");
    shutdown_all(&nodes).await;
}
