//! Replication under faults: a follower behind the leader's log start
//! installs a snapshot; a deposed leader's uncommitted suffix is cut; seeded
//! drops, duplicates and delays between nodes leave no divergence.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    GROUP, Root, batch, cluster, committed_batches, shutdown_all, start, stored_entries, wait_for_high_watermark,
    wait_for_leader, write,
};
use strata_raft::FaultRates;

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_the_log_start_installs_a_snapshot_and_continues() {
    let root = Root::new("snapshot");
    let nodes = cluster(3, &root.0).await;
    let leader = wait_for_leader(&nodes, T).await;
    for n in 0..20 {
        write(&leader, n, T).await.expect("write");
    }
    // Take down a follower, write on, then snapshot and purge on the others.
    let follower = nodes.iter().find(|n| n.id() != leader.id()).expect("follower").clone();
    let (follower_id, follower_addr) = (follower.id(), follower.addr());
    follower.shutdown().await;
    drop(follower);
    for n in 20..50 {
        write(&leader, n, T).await.expect("write");
    }
    let others: Vec<_> = nodes.iter().filter(|n| n.id() != follower_id).cloned().collect();
    for node in &others {
        let group = node.group(GROUP).expect("group");
        group.raft.trigger().snapshot().await.expect("snapshot");
        let applied = group.state_machine.last_applied().expect("applied").index;
        group.raft.wait(Some(T)).snapshot(strata_raft::log_id(applied_term(&group), applied), "snapshot").await.ok();
        group.raft.trigger().purge_log(applied).await.expect("purge");
    }
    let leader_group = leader.group(GROUP).expect("group");
    let deadline = std::time::Instant::now() + T;
    while leader_group.log.state().first_index.0 <= 20 {
        assert!(std::time::Instant::now() < deadline, "leader never purged: {:?}", leader_group.log.state());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The follower comes back behind the leader's log start.
    let restarted = start(follower_id, follower_addr, &root.0).await;
    wait_for_high_watermark(std::slice::from_ref(&restarted), 500, T).await;
    let state = restarted.group(GROUP).expect("group").log.state();
    assert!(state.last_purged.is_some(), "the follower installed a snapshot and reset its log: {state:?}");
    // It serves what follows the snapshot, and later writes reach it.
    for n in 50..60 {
        write(&leader, n, T).await.expect("write");
    }
    wait_for_high_watermark(std::slice::from_ref(&restarted), 600, T).await;
    let leader_tail: Vec<_> = committed_batches(&leader);
    let follower_tail = committed_batches(&restarted);
    assert!(!follower_tail.is_empty());
    assert!(leader_tail.ends_with(&follower_tail), "the follower's records are the leader's last ones");
    assert_eq!(follower_tail.last(), Some(&batch(59).to_vec()));
    restarted.shutdown().await;
    shutdown_all(&others).await;
}

fn applied_term(group: &strata_raft::Group) -> u64 {
    group.state_machine.last_applied().map(|id| strata_raft::term_of(&id)).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deposed_leaders_uncommitted_suffix_is_truncated() {
    let root = Root::new("deposed");
    let nodes = cluster(3, &root.0).await;
    let old = wait_for_leader(&nodes, T).await;
    for n in 0..10 {
        write(&old, n, T).await.expect("write");
    }
    let last_before = old.group(GROUP).expect("group").log.state().last_log_id.map(|id| id.index.0);
    // Cut the leader off from both followers, both ways.
    for node in &nodes {
        if node.id() == old.id() {
            for other in &nodes {
                if other.id() != old.id() {
                    node.faults().isolate(other.id());
                }
            }
        } else {
            node.faults().isolate(old.id());
        }
    }
    // Writes to the isolated leader are appended but can never commit.
    let stranded = {
        let raft = old.group(GROUP).expect("group").raft;
        tokio::spawn(async move {
            let mut results = Vec::new();
            for n in 1000..1005 {
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    raft.client_write(strata_raft::BatchData::new(batch(n)).expect("a valid batch")),
                )
                .await;
                results.push(matches!(r, Ok(Ok(_))));
            }
            results
        })
    };
    let majority: Vec<_> = nodes.iter().filter(|n| n.id() != old.id()).cloned().collect();
    let new = wait_for_leader(&majority, T).await;
    for n in 10..30 {
        write(&new, n, T).await.expect("write on the majority");
    }
    let old_log = old.group(GROUP).expect("group").log.state();
    assert!(
        old_log.last_log_id.map(|id| id.index.0) > last_before,
        "the isolated leader appended the stranded writes: {old_log:?}"
    );
    for node in &nodes {
        node.faults().heal();
    }
    assert!(stranded.await.expect("join").iter().all(|ok| !ok), "no write to the isolated leader was acknowledged");
    wait_for_high_watermark(&nodes, 300, T).await;
    // Give the old leader a moment to take the new leader's log.
    let deadline = std::time::Instant::now() + T;
    while stored_entries(&old) != stored_entries(&new) {
        assert!(std::time::Instant::now() < deadline, "the deposed leader's log never matched the new leader's");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expected: Vec<Vec<u8>> = (0..30).map(|n| batch(n).to_vec()).collect();
    for node in &nodes {
        assert_eq!(committed_batches(node), expected, "node {}", node.id());
    }
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seeded_drops_duplicates_and_delays_leave_no_divergence() {
    let seed = std::env::var("STRATA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    println!("STRATA_SEED={seed}");
    let root = Root::new("chaos");
    let nodes = cluster(3, &root.0).await;
    wait_for_leader(&nodes, T).await;
    let rates = FaultRates { drop_pct: 10, duplicate_pct: 10, delay_pct: 10, delay_max: Duration::from_millis(30) };
    for (i, node) in nodes.iter().enumerate() {
        node.faults().set_rates(rates, seed.wrapping_add(i as u64));
    }
    let mut acked = Vec::new();
    for n in 0..100u64 {
        // Whoever leads now; a failed attempt is simply not acknowledged.
        let leader = wait_for_leader(&nodes, T).await;
        if write(&leader, n, Duration::from_secs(3)).await.is_ok() {
            acked.push(n);
        }
    }
    let n_faults: u64 = nodes.iter().map(|n| n.faults().n_injected()).sum();
    assert!(n_faults > 20, "seed {seed}: only {n_faults} faults fired");
    for node in &nodes {
        node.faults().heal();
    }
    let leader = wait_for_leader(&nodes, T).await;
    write(&leader, 10_000, T).await.expect("write after healing");
    let hw = leader.group(GROUP).expect("group").state_machine.high_watermark().0;
    wait_for_high_watermark(&nodes, hw, T).await;
    // Same committed log everywhere, and every acknowledged batch in it, in
    // acknowledgement order.
    let reference = committed_batches(&leader);
    for node in &nodes {
        assert_eq!(committed_batches(node), reference, "seed {seed}: node {} diverged", node.id());
    }
    let positions: Vec<usize> = acked
        .iter()
        .map(|n| {
            let want = batch(*n).to_vec();
            reference.iter().position(|b| *b == want).unwrap_or_else(|| panic!("seed {seed}: acked batch {n} lost"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "seed {seed}: acknowledged batches out of order");
    let _ = Arc::strong_count(&leader);
    shutdown_all(&nodes).await;
}
