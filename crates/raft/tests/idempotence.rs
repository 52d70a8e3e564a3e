//! Idempotent producers: a retried batch is stored once, even when the retry
//! goes to a new leader after a failover; a sequence gap is refused.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{GROUP, Root, cluster, committed_batches, shutdown_all, wait_for_leader};
use strata_batch::{BatchBuilder, Compression};
use strata_raft::{ProduceError, Produced, RaftNode, produce};

const T: Duration = Duration::from_secs(10);

fn idempotent_batch(first_seq: i32) -> Bytes {
    let mut builder = BatchBuilder::new().producer(42, 0, first_seq);
    for i in 0..10 {
        builder.push(0, Some(format!("k{}", first_seq + i).as_bytes()), Some(b"value"), &[]);
    }
    builder.build(Compression::None)
}

async fn produce_on(node: &RaftNode, batch: Bytes) -> Result<Produced, ProduceError> {
    let group = node.group(GROUP).expect("group");
    let deadline = Instant::now() + T;
    loop {
        match produce(&group, batch.clone()).await {
            Err(ProduceError::NotLeader { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_batch_is_stored_once_even_across_a_leader_change() {
    let root = Root::new("idempotence");
    let nodes = cluster(3, &root.0).await;
    let leader = wait_for_leader(&nodes, T).await;

    let first = produce_on(&leader, idempotent_batch(0)).await.expect("produce");
    assert_eq!(first, Produced { base_offset: 0, n_offsets: 10, duplicate: false });
    let retry = produce_on(&leader, idempotent_batch(0)).await.expect("retry");
    assert_eq!(retry, Produced { base_offset: 0, n_offsets: 10, duplicate: true });
    let second = produce_on(&leader, idempotent_batch(10)).await.expect("produce");
    assert_eq!(second.base_offset, 10);
    assert_eq!(
        produce_on(&leader, idempotent_batch(25)).await,
        Err(ProduceError::OutOfOrderSequence { expected: 20, got: 25 })
    );

    // Fail over, then retry the last batch on the new leader.
    let old_id = leader.id();
    leader.shutdown().await;
    drop(leader);
    let survivors: Vec<_> = nodes.iter().filter(|n| n.id() != old_id).cloned().collect();
    let new = wait_for_leader(&survivors, T).await;
    let retry = produce_on(&new, idempotent_batch(10)).await.expect("retry on new leader");
    assert_eq!(retry, Produced { base_offset: 10, n_offsets: 10, duplicate: true });
    let third = produce_on(&new, idempotent_batch(20)).await.expect("produce on new leader");
    assert_eq!((third.base_offset, third.duplicate), (20, false));

    let stored = committed_batches(&new);
    let expected: Vec<Vec<u8>> = [0, 10, 20].iter().map(|s| idempotent_batch(*s).to_vec()).collect();
    assert_eq!(stored, expected, "each batch stored exactly once");
    shutdown_all(&survivors).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_an_in_flight_batch_get_the_same_answer() {
    let root = Root::new("idempotence-inflight");
    let nodes = cluster(3, &root.0).await;
    let leader = wait_for_leader(&nodes, T).await;
    produce_on(&leader, idempotent_batch(0)).await.expect("warm up the term");
    let group = leader.group(GROUP).expect("group");
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let group = group.clone();
            tokio::spawn(async move { produce(&group, idempotent_batch(10)).await })
        })
        .collect();
    let mut results = Vec::new();
    for attempt in attempts {
        results.push(attempt.await.expect("join").expect("produce"));
    }
    assert!(results.iter().all(|r| r.base_offset == 10 && r.n_offsets == 10));
    assert_eq!(results.iter().filter(|r| !r.duplicate).count(), 1, "exactly one attempt wrote");
    assert_eq!(committed_batches(&leader).len(), 2);
    shutdown_all(&nodes).await;
}
