//! A cluster bootstrapped from a static peer list: the controller group
//! registers brokers, creates a topic with balanced replicas, every node
//! follows the metadata and runs the partitions assigned to it.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Root, batch, fast_raft};
use strata_log::LogConfig;
use strata_raft::{ClusterNode, RaftNodeConfig, produce};

const T: Duration = Duration::from_secs(15);

/// Listeners bound now and kept until their node starts on them, so no other
/// socket can take a port between choosing it and using it.
async fn listeners(n: usize) -> (Vec<String>, Vec<tokio::net::TcpListener>) {
    let mut bound = Vec::new();
    for _ in 0..n {
        bound.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let addrs = bound.iter().map(|l| l.local_addr().expect("addr").to_string()).collect();
    (addrs, bound)
}

async fn start_on(
    id: u64,
    listener: tokio::net::TcpListener,
    peers: &BTreeMap<u64, String>,
    root: &std::path::Path,
) -> ClusterNode {
    ClusterNode::start_on(config(id, peers, root), listener, peers.clone()).await.expect("start cluster node")
}

fn config(id: u64, peers: &BTreeMap<u64, String>, root: &std::path::Path) -> RaftNodeConfig {
    RaftNodeConfig {
        node_id: id,
        listen: peers[&id].parse().expect("addr"),
        data_dir: root.join(format!("node-{id}")),
        raft: fast_raft(),
        log: LogConfig { segment_bytes: 256 * 1024, ..LogConfig::default() },
        tls: None,
    }
}

/// Restarts a node on the address it had (released when it stopped).
async fn start(id: u64, peers: &BTreeMap<u64, String>, root: &std::path::Path) -> ClusterNode {
    ClusterNode::start(config(id, peers, root), peers.clone()).await.expect("start cluster node")
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts nodes 1..=n on fresh listeners, with the others as static peers,
/// and waits until every node sees the n brokers registered.
async fn static_cluster(n: u64, root: &std::path::Path) -> (BTreeMap<u64, String>, Vec<ClusterNode>) {
    let (addrs, bound) = listeners(n as usize).await;
    let peers: BTreeMap<u64, String> = (1..=n).zip(addrs).collect();
    let mut nodes = Vec::new();
    for (id, listener) in (1..=n).zip(bound) {
        nodes.push(start_on(id, listener, &peers, root).await);
    }
    wait_until("every node to see every broker", || {
        nodes.iter().all(|node| node.metadata().brokers.len() == n as usize)
    })
    .await;
    (peers, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_static_cluster_boots_creates_a_balanced_topic_and_serves_it() {
    let root = Root::new("controller");
    let (peers, mut nodes) = static_cluster(3, &root.0).await;
    let leader_id = nodes[0].controller_leader().expect("controller leader");
    let leader = nodes.iter().find(|n| n.raft_node().id() == leader_id).expect("leader node");

    let topic = leader.create_topic("orders", 6, 3, BTreeMap::new()).await.expect("create topic");
    assert_eq!(topic.partitions.len(), 6);
    assert!(leader.create_topic("orders", 1, 1, BTreeMap::new()).await.is_err(), "a second create is refused");
    assert!(leader.create_topic("too-wide", 1, 4, BTreeMap::new()).await.is_err(), "RF above the broker count");
    // Every node follows the same metadata.
    wait_until("every node to see the topic", || {
        nodes.iter().all(|n| n.metadata().topics.get("orders") == Some(&topic))
    })
    .await;
    // Preferred leaders are spread: two partitions per broker.
    let mut preferred = BTreeMap::new();
    for p in &topic.partitions {
        *preferred.entry(p.replicas[0]).or_insert(0) += 1;
    }
    assert_eq!(preferred.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);

    // Every partition gets a leader and takes writes.
    for (p, partition) in topic.partitions.iter().enumerate() {
        let deadline = Instant::now() + T;
        let produced = loop {
            let leading =
                nodes.iter().filter_map(|n| n.raft_node().group(partition.group)).find(|g| g.raft.is_leader());
            if let Some(group) = leading {
                // A new leader may not have established its lease yet.
                match produce(&group, batch(p as u64)).await {
                    Ok(produced) => break produced,
                    Err(strata_raft::ProduceError::NotLeader { .. }) => {}
                    Err(other) => panic!("produce to partition {p}: {other}"),
                }
            }
            assert!(Instant::now() < deadline, "partition {p} has no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(produced.base_offset, 0);
    }

    // Producer ids are unique and increasing.
    let a = leader.allocate_producer_id().await.expect("producer id");
    let b = leader.allocate_producer_id().await.expect("producer id");
    assert!(b > a);

    // A restarted node recovers the metadata and its partitions from disk.
    let restarted_id = nodes.iter().map(|n| n.raft_node().id()).find(|id| *id != leader_id).expect("a follower");
    let position = nodes.iter().position(|n| n.raft_node().id() == restarted_id).expect("position");
    let old = nodes.remove(position);
    old.shutdown().await;
    drop(old);
    let restarted = start(restarted_id, &peers, &root.0).await;
    wait_until("the restarted node to see the topic", || restarted.metadata().topics.get("orders") == Some(&topic))
        .await;
    wait_until("the restarted node to reopen its partitions", || {
        topic.partitions.iter().all(|p| restarted.raft_node().group(p.group).is_some())
    })
    .await;
    restarted.shutdown().await;
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_added_to_a_running_cluster_takes_over_a_replica() {
    let root = Root::new("controller-add");
    let (addrs, mut bound) = listeners(4).await;
    let fourth = bound.pop().expect("four listeners");
    let initial: BTreeMap<u64, String> = (1..=3).zip(addrs.iter().cloned()).collect();
    let mut nodes = Vec::new();
    for (id, listener) in (1..=3).zip(bound) {
        nodes.push(start_on(id, listener, &initial, &root.0).await);
    }
    wait_until("three brokers", || nodes.iter().all(|n| n.metadata().brokers.len() == 3)).await;
    let leader_id = nodes[0].controller_leader().expect("controller leader");
    let controller = nodes.iter().find(|n| n.raft_node().id() == leader_id).expect("leader");
    let topic = controller.create_topic("payments", 1, 3, BTreeMap::new()).await.expect("create");
    let group_id = topic.partitions[0].group;
    let leader_group =
        |nodes: &[ClusterNode]| nodes.iter().filter_map(|n| n.raft_node().group(group_id)).find(|g| g.raft.is_leader());
    let mut written = 0;
    let deadline = Instant::now() + T;
    while written < 5 {
        if let Some(group) = leader_group(&nodes) {
            if produce(&group, batch(written)).await.is_ok() {
                written += 1;
                continue;
            }
        }
        assert!(Instant::now() < deadline, "no writes to the partition");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Node 4 starts, is registered, follows the metadata, and takes the
    // place of one replica.
    let mut all = initial.clone();
    all.insert(4, addrs[3].clone());
    // It registers itself: it knows the others from its peer list only,
    // and they know nothing of it.
    let newcomer = start_on(4, fourth, &all, &root.0).await;
    newcomer.announce_client_addr("127.0.0.1:1".into());
    wait_until("node 4 to register and follow the metadata", || {
        newcomer.metadata().topics.contains_key("payments") && controller.metadata().brokers.contains_key(&4)
    })
    .await;
    let dropped = topic.partitions[0].replicas[2];
    let mut replicas = topic.partitions[0].replicas.clone();
    replicas[2] = 4;
    controller.reassign("payments", 0, replicas.clone()).await.expect("reassign");
    let wanted: std::collections::BTreeSet<u64> = replicas.iter().copied().collect();
    wait_until("the group's voters to become the new replicas", || {
        leader_group(&nodes).is_some_and(|g| {
            use openraft::async_runtime::WatchReceiver;
            let voters: std::collections::BTreeSet<u64> =
                g.raft.metrics().borrow_watched().membership_config.membership().voter_ids().collect();
            voters == wanted
        })
    })
    .await;
    // Node 4 holds the partition's data, including writes made after the move.
    let group = leader_group(&nodes).expect("leader");
    produce(&group, batch(99)).await.expect("produce after the move");
    let hw = group.state_machine.high_watermark();
    wait_until("node 4 to catch up", || {
        newcomer.raft_node().group(group_id).is_some_and(|g| g.state_machine.high_watermark() == hw)
    })
    .await;
    assert_ne!(dropped, 4);
    newcomer.shutdown().await;
    for node in &nodes {
        node.shutdown().await;
    }
}

/// A batch of 10 incompressible records of 4 KB, so a few fill a segment.
fn big_batch(n: u64) -> bytes::Bytes {
    let mut builder = strata_batch::BatchBuilder::new();
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..10 {
        let value: Vec<u8> = (0..4000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        builder.push(i, Some(format!("k{n}-{i}").as_bytes()), Some(&value), &[]);
    }
    builder.build(strata_batch::Compression::None)
}

/// Every committed batch of a replica, as stored.
fn stored_data(group: &strata_raft::Group) -> Vec<u8> {
    let hw = group.state_machine.high_watermark();
    let (mut out, mut from) = (Vec::new(), group.log.state().log_start_offset);
    while from < hw {
        let read = group.log.read_offsets(from, 1 << 20, hw).expect("read");
        read.chunks.iter().for_each(|c| out.extend_from_slice(c));
        from = read.next_offset;
    }
    out
}

/// Creates a topic through `node`, retrying while the controller is not
/// ready yet (no leader, say); a refusal once the topic exists fails.
async fn create_topic(node: &ClusterNode, name: &str, partitions: u32, rf: u32) -> strata_raft::metadata::TopicInfo {
    loop {
        match node.create_topic(name, partitions, rf, BTreeMap::new()).await {
            Ok(topic) => return topic,
            Err(err) if node.metadata().topics.contains_key(name) => panic!("create {name}: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Flips byte `at` of the first segment of the group directory `dir` (its
/// node stopped); returns how many segments the directory holds.
fn damage_first_segment(dir: &std::path::Path, at: usize) -> usize {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .expect("group dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let mut data = std::fs::read(&segments[0]).expect("read segment");
    data[at] ^= 0x5a;
    std::fs::write(&segments[0], &data).expect("damage segment");
    segments.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_replica_is_quarantined_and_rebuilt_from_the_others() {
    let root = Root::new("controller-repair");
    let (peers, nodes) = static_cluster(3, &root.0).await;
    let mut nodes: Vec<Option<ClusterNode>> = nodes.into_iter().map(Some).collect();
    let any = nodes[0].as_ref().expect("node 1");
    let topic = create_topic(any, "ledger", 1, 3).await;
    let group_id = topic.partitions[0].group;
    let leader_of = |nodes: &[Option<ClusterNode>]| {
        nodes.iter().flatten().filter_map(|n| n.raft_node().group(group_id)).find(|g| g.raft.is_leader())
    };
    // Several sealed segments (256 KiB each) on every replica.
    let (mut written, deadline) = (0, Instant::now() + T);
    while written < 24 {
        match leader_of(&nodes) {
            Some(group) if produce(&group, big_batch(written)).await.is_ok() => written += 1,
            _ => {
                assert!(Instant::now() < deadline, "no writes to the partition");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let leader = leader_of(&nodes).expect("leader");
    let hw = leader.state_machine.high_watermark();
    let leader_id = {
        use openraft::async_runtime::WatchReceiver;
        leader.raft.metrics().borrow_watched().id
    };
    let victim = (1..=3u64).find(|id| *id != leader_id).expect("a follower");
    let slot = (victim - 1) as usize;
    wait_until("the follower to hold everything", || {
        nodes[slot]
            .as_ref()
            .and_then(|n| n.raft_node().group(group_id))
            .is_some_and(|g| g.state_machine.high_watermark() == hw)
    })
    .await;
    nodes[slot].take().expect("victim").shutdown().await;

    // Flip one byte inside the first batch of its first (sealed) segment.
    let segments = damage_first_segment(&root.0.join(format!("node-{victim}/group-{group_id}")), 20_000);
    assert!(segments >= 3, "expected sealed segments, found {segments}");

    // Restarted, the node finds the damage, quarantines its replica, the
    // leader removes it from the group, and it comes back empty and catches up.
    nodes[slot] = Some(start(victim, &peers, &root.0).await);
    let expected = stored_data(&leader);
    wait_until("the rebuilt replica to hold everything again", || {
        nodes[slot].as_ref().and_then(|n| n.raft_node().group(group_id)).is_some_and(|g| {
            g.state_machine.high_watermark() == hw && g.log.damage().is_none() && stored_data(&g) == expected
        })
    })
    .await;
    let quarantined: Vec<String> = std::fs::read_dir(root.0.join(format!("node-{victim}")))
        .expect("data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!("group-{group_id}.")))
        .collect();
    assert!(
        quarantined.len() == 1 && quarantined[0].starts_with(&format!("group-{group_id}.damaged-")),
        "the damaged copy is kept aside and no rebuild marker is left: {quarantined:?}"
    );
    wait_until("the rebuilt replica to vote again", || {
        leader_of(&nodes).is_some_and(|g| {
            use openraft::async_runtime::WatchReceiver;
            g.raft.metrics().borrow_watched().membership_config.membership().voter_ids().any(|id| id == victim)
        })
    })
    .await;
    // It takes new writes like any replica.
    let group = leader_of(&nodes).expect("leader");
    produce(&group, big_batch(99)).await.expect("produce after the rebuild");
    let hw = group.state_machine.high_watermark();
    wait_until("the rebuilt replica to take a new write", || {
        nodes[slot]
            .as_ref()
            .and_then(|n| n.raft_node().group(group_id))
            .is_some_and(|g| g.state_machine.high_watermark() == hw)
    })
    .await;
    for node in nodes.iter().flatten() {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_controller_replica_is_rebuilt_from_the_other_nodes() {
    use openraft::async_runtime::WatchReceiver;
    let root = Root::new("controller-rebuild");
    let (peers, nodes) = static_cluster(3, &root.0).await;
    let mut nodes: Vec<Option<ClusterNode>> = nodes.into_iter().map(Some).collect();
    let any = nodes[0].as_ref().expect("node 1");
    for name in ["orders", "payments", "audit"] {
        create_topic(any, name, 1, 3).await;
    }
    let group_id = any.metadata().topics["orders"].partitions[0].group;
    let controller_leader = any.controller_leader().expect("controller leader");
    let victim = (1..=3u64).find(|id| *id != controller_leader).expect("a controller follower");
    let slot = (victim - 1) as usize;
    wait_until("the victim to hold the metadata and its replica", || {
        nodes[slot].as_ref().is_some_and(|n| n.metadata().topics.len() == 3 && n.raft_node().group(group_id).is_some())
    })
    .await;
    nodes[slot].take().expect("victim").shutdown().await;

    // Flip a byte inside the first batch of its controller log; the
    // batches after it show this is damage, not a torn write.
    // (Byte 30 is in the first batch's first timestamp, under its CRC.)
    damage_first_segment(&root.0.join(format!("node-{victim}/group-0")), 30);

    // Restarted, the node quarantines the replica and waits; the
    // controller's leader removes it from group 0, the node starts it again
    // empty, and it is sent the metadata. (Before, the node refused to
    // start until an operator removed it from the cluster.)
    let restarted = tokio::time::timeout(T, start(victim, &peers, &root.0)).await;
    nodes[slot] = Some(restarted.expect("the node starts again within the time limit"));
    let node = nodes[slot].as_ref().expect("victim");
    wait_until("the rebuilt replica to hold the metadata and run its partition", || {
        node.metadata().topics.len() == 3 && node.raft_node().group(group_id).is_some()
    })
    .await;
    let quarantined: Vec<String> = std::fs::read_dir(root.0.join(format!("node-{victim}")))
        .expect("data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("group-0."))
        .collect();
    assert!(
        quarantined.len() == 1 && quarantined[0].starts_with("group-0.damaged-"),
        "the damaged copy is kept aside and no rebuild marker is left: {quarantined:?}"
    );
    let witness = nodes[(controller_leader - 1) as usize].as_ref().expect("controller leader's node");
    let rebuild = witness.metadata().removed_replica(0, victim);
    assert!(rebuild.is_some(), "the controller recorded the removal");
    wait_until("the rebuilt replica to vote in the controller again", || {
        nodes.iter().flatten().filter_map(|n| n.raft_node().group(0)).any(|g| {
            g.raft.is_leader()
                && g.raft.metrics().borrow_watched().membership_config.membership().voter_ids().any(|id| id == victim)
        })
    })
    .await;
    // The controller takes changes through the rebuilt node, which sees
    // them applied.
    let node = nodes[slot].as_ref().expect("victim");
    let created = create_topic(node, "inventory", 1, 3).await;
    assert_eq!(created.partitions.len(), 1);
    for node in nodes.iter().flatten() {
        node.shutdown().await;
    }
}

/// Produces one batch to `group` through whichever of `nodes` leads it,
/// waiting up to `T` for a leader; returns the leader's id.
async fn produce_somewhere(nodes: &[ClusterNode], group: u64, what: &str) -> u64 {
    use openraft::async_runtime::WatchReceiver;
    let deadline = Instant::now() + T;
    loop {
        let leading = nodes.iter().filter_map(|n| n.raft_node().group(group)).find(|g| g.raft.is_leader());
        if let Some(leader) = leading {
            match produce(&leader, batch(group)).await {
                Ok(_) => return leader.raft.metrics().borrow_watched().id,
                Err(strata_raft::ProduceError::NotLeader { .. }) => {}
                Err(other) => panic!("produce to {what}: {other}"),
            }
        }
        assert!(Instant::now() < deadline, "{what} has no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_whose_first_replica_died_before_starting_it_still_gets_a_leader() {
    use openraft::async_runtime::WatchReceiver;
    let root = Root::new("controller-first-down");
    let (peers, mut nodes) = static_cluster(3, &root.0).await;
    wait_until("a controller leader", || nodes[0].controller_leader().is_some()).await;
    let controller = nodes[0].controller_leader().expect("controller leader");
    let down = (2..=3).find(|id| *id != controller).expect("a broker");
    wait_until("node 1 to hear from every other node", || {
        (2..=3).all(|id| nodes[0].raft_node().quiescence().since_contact(id).is_some())
    })
    .await;
    // Stopped just before the topic is created: it answered a ping moments
    // ago, so placement still counts it up and makes it the first replica
    // of a partition, which it never starts.
    let stopped = nodes.remove(nodes.iter().position(|n| n.raft_node().id() == down).expect("node"));
    stopped.shutdown().await;
    drop(stopped);
    let topic = create_topic(&nodes[0], "early", 3, 3).await;
    let orphan =
        topic.partitions.iter().find(|p| p.initial_replicas[0] == down).expect("a partition led by the down broker");
    // Every partition, the orphan included, gets a leader among the two
    // brokers up and takes writes.
    for partition in &topic.partitions {
        let leader = produce_somewhere(&nodes, partition.group, &format!("group {}", partition.group)).await;
        assert_ne!(leader, down);
    }
    // The first replica back follows the group started in its place; it
    // does not campaign against its leader.
    let before = nodes
        .iter()
        .filter_map(|n| n.raft_node().group(orphan.group))
        .find(|g| g.raft.is_leader())
        .map(|g| g.raft.metrics().borrow_watched().current_term)
        .expect("a leader");
    nodes.push(start(down, &peers, &root.0).await);
    wait_until("the first replica to catch up", || {
        let last = |n: &ClusterNode| {
            n.raft_node()
                .group(orphan.group)
                .and_then(|g| g.raft.metrics().borrow_watched().last_applied)
                .map(|l| l.index)
        };
        let leader_last = nodes.iter().filter(|n| n.raft_node().id() != down).filter_map(last).max();
        let back = nodes.iter().find(|n| n.raft_node().id() == down).and_then(last);
        back.is_some() && back == leader_last
    })
    .await;
    let leader = produce_somewhere(&nodes, orphan.group, "the orphan after the first replica came back").await;
    let group = nodes.iter().find(|n| n.raft_node().id() == leader).and_then(|n| n.raft_node().group(orphan.group));
    let after = group.map(|g| g.raft.metrics().borrow_watched().current_term).expect("leader's replica");
    assert_eq!(after, before, "the returning first replica forced an election");
    for node in &nodes {
        node.shutdown().await;
    }
}

/// The node leading `group` among `nodes`, if one does.
fn leader_of(nodes: &[ClusterNode], group: u64) -> Option<u64> {
    use openraft::async_runtime::WatchReceiver;
    nodes
        .iter()
        .filter_map(|n| n.raft_node().group(group))
        .find(|g| g.raft.is_leader())
        .map(|g| g.raft.metrics().borrow_watched().id)
}

/// Waits (up to 90 s) until every partition of `topic` is led by its
/// preferred replica, the first.
async fn wait_preferred(nodes: &[ClusterNode], topic: &strata_raft::metadata::TopicInfo, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let leaders: Vec<_> = topic.partitions.iter().map(|p| (p.replicas[0], leader_of(nodes, p.group))).collect();
        if leaders.iter().all(|(preferred, leader)| Some(*preferred) == *leader) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: (preferred, leader) {leaders:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaderships_return_to_the_preferred_replicas_after_a_broker_restarts() {
    let root = Root::new("controller-preferred");
    let (peers, mut nodes) = static_cluster(3, &root.0).await;
    let topic = create_topic(&nodes[0], "spread", 3, 3).await;
    wait_preferred(&nodes, &topic, "every partition led by its preferred replica").await;
    // A broker restarts: its partitions are led elsewhere meanwhile, and
    // handed back once it is up and caught up.
    let down = topic.partitions[0].replicas[0];
    let stopped = nodes.remove(nodes.iter().position(|n| n.raft_node().id() == down).expect("node"));
    stopped.shutdown().await;
    drop(stopped);
    let elsewhere = produce_somewhere(&nodes, topic.partitions[0].group, "the stopped broker's partition").await;
    assert_ne!(elsewhere, down);
    nodes.push(start(down, &peers, &root.0).await);
    wait_preferred(&nodes, &topic, "leaderships handed back after the restart").await;
    produce_somewhere(&nodes, topic.partitions[0].group, "the partition back on its preferred replica").await;
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_brokers_replicas_go_to_brokers_that_are_up() {
    let root = Root::new("controller-remove-down");
    let (_peers, mut nodes) = static_cluster(5, &root.0).await;
    let topic = create_topic(&nodes[0], "orders", 5, 3).await;
    // Neither node 1 (asked) nor the controller's leader goes down or away;
    // the broker down has the lowest id, so it would win a tie on load.
    let controller = nodes[0].controller_leader();
    let mut others = (2..=5).filter(|id| Some(*id) != controller);
    let (down, removed) = (others.next().expect("a broker"), others.next().expect("another"));
    wait_until("node 1 to hear from every other node", || {
        (2..=5).all(|id| nodes[0].raft_node().quiescence().since_contact(id).is_some())
    })
    .await;
    let stopped = nodes.remove(nodes.iter().position(|n| n.raft_node().id() == down).expect("node"));
    stopped.shutdown().await;
    drop(stopped);
    // Long enough for node 1's pings to tell that it is down.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let moved = nodes[0].remove_broker(removed).await.expect("remove broker");
    assert_eq!(moved, 3, "5 partitions of RF 3 on 5 brokers: each broker holds 3");
    let after = nodes[0].sync_metadata().await.expect("metadata");
    for (before, now) in topic.partitions.iter().zip(&after.topics["orders"].partitions) {
        assert!(!now.replicas.contains(&removed), "{:?} still on {removed}", now.replicas);
        assert_eq!(
            before.replicas.contains(&down),
            now.replicas.contains(&down),
            "broker {down} is down but was given a replica: {:?} -> {:?}",
            before.replicas,
            now.replicas
        );
    }
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_broker_hands_over_its_replicas_and_leaves() {
    use openraft::async_runtime::WatchReceiver;
    let root = Root::new("controller-remove");
    let (_peers, nodes) = static_cluster(4, &root.0).await;
    let topic = create_topic(&nodes[0], "orders", 4, 3).await;
    let groups: Vec<u64> = topic.partitions.iter().map(|p| p.group).collect();
    let leader_of = |nodes: &[ClusterNode], group: u64| {
        nodes.iter().filter_map(|n| n.raft_node().group(group)).find(|g| g.raft.is_leader())
    };
    let deadline = Instant::now() + T;
    for (i, group) in groups.iter().enumerate() {
        loop {
            match leader_of(&nodes, *group) {
                Some(leader) if produce(&leader, batch(i as u64)).await.is_ok() => break,
                _ => {
                    assert!(Instant::now() < deadline, "no writes to partition {i}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    // Every node can name every partition's leader, also where it holds
    // no replica (RF 3 on 4 brokers): leaders report themselves to the
    // controller.
    wait_until("every node to know every leader", || {
        groups.iter().all(|group| {
            let leader = leader_of(&nodes, *group).map(|g| g.raft.metrics().borrow_watched().id);
            leader.is_some() && nodes.iter().all(|n| n.metadata().leaders.get(group).map(|h| h.node) == leader)
        })
    })
    .await;
    // Remove the broker leading partition 0 (so it leads at least one group).
    let removed = {
        use openraft::async_runtime::WatchReceiver;
        leader_of(&nodes, groups[0]).expect("leader").raft.metrics().borrow_watched().id
    };
    let moved = nodes[0].remove_broker(removed).await.expect("remove broker");
    assert_eq!(moved, 3, "4 partitions of RF 3 on 4 brokers: each broker holds 3");
    assert!(nodes[0].remove_broker(removed).await.is_err(), "a removed broker is no longer registered");
    let stays: Vec<&ClusterNode> = nodes.iter().filter(|n| n.raft_node().id() != removed).collect();
    let gone = nodes.iter().find(|n| n.raft_node().id() == removed).expect("removed node");
    wait_until("the removed broker to hand over every replica and leave", || {
        let metadata = stays[0].metadata();
        !metadata.brokers.contains_key(&removed)
            && metadata.left_brokers.contains(&removed)
            && gone.raft_node().groups().iter().all(|g| g.id == 0)
    })
    .await;
    wait_until("the controller to drop it", || {
        stays.iter().filter_map(|n| n.raft_node().group(0)).filter(|g| g.raft.is_leader()).any(|g| {
            use openraft::async_runtime::WatchReceiver;
            let metrics = g.raft.metrics().borrow_watched().clone();
            let membership = metrics.membership_config.membership();
            membership.nodes().all(|(id, _)| *id != removed) && membership.voter_ids().count() == 3
        })
    })
    .await;
    let leftovers: Vec<String> = std::fs::read_dir(root.0.join(format!("node-{removed}")))
        .expect("data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("group-") && name != "group-0")
        .collect();
    assert!(leftovers.is_empty(), "the removed broker deleted its replicas: {leftovers:?}");
    // Every partition runs on the three others, with its data, and takes writes.
    let metadata = stays[0].metadata();
    for (i, group) in groups.iter().enumerate() {
        let replicas = &metadata.topics["orders"].partitions[i].replicas;
        assert!(!replicas.contains(&removed));
        let wanted: std::collections::BTreeSet<u64> = replicas.iter().copied().collect();
        wait_until("the partition's voters to be its replicas", || {
            stays.iter().filter_map(|n| n.raft_node().group(*group)).find(|g| g.raft.is_leader()).is_some_and(|g| {
                use openraft::async_runtime::WatchReceiver;
                let voters: std::collections::BTreeSet<u64> =
                    g.raft.metrics().borrow_watched().membership_config.membership().voter_ids().collect();
                voters == wanted
            })
        })
        .await;
        // (Leadership may still move once: the removed broker led some.)
        let deadline = Instant::now() + T;
        let leader = loop {
            let leader = stays.iter().filter_map(|n| n.raft_node().group(*group)).find(|g| g.raft.is_leader());
            match leader {
                Some(leader) if produce(&leader, batch(100 + i as u64)).await.is_ok() => break leader,
                _ => {
                    assert!(Instant::now() < deadline, "no write to partition {i} after the removal");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        assert_eq!(leader.state_machine.high_watermark().0, 20, "both batches of partition {i} are there");
    }
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_broker_that_is_down_stops_voting_so_the_controller_outlives_one_more_failure() {
    use openraft::async_runtime::WatchReceiver;
    let root = Root::new("controller-remove-down");
    let (_peers, mut nodes) = static_cluster(4, &root.0).await;
    let controller_voters = |nodes: &[ClusterNode]| {
        nodes.iter().filter_map(|n| n.raft_node().group(0)).find(|g| g.raft.is_leader()).map(|g| {
            let metrics = g.raft.metrics().borrow_watched().clone();
            let membership = metrics.membership_config.membership();
            let voters: Vec<u64> = membership.voter_ids().collect();
            let members: Vec<u64> = membership.nodes().map(|(id, _)| *id).collect();
            (voters, members)
        })
    };
    wait_until("four controller voters", || controller_voters(&nodes).is_some_and(|(v, _)| v == [1, 2, 3, 4])).await;

    // Broker 4 dies for good, and the operator removes it. It can never
    // report that it left.
    let dead = nodes.pop().expect("node 4");
    dead.shutdown().await;
    let deadline = Instant::now() + T;
    loop {
        match nodes[0].remove_broker(4).await {
            Ok(moved) => break assert_eq!(moved, 0, "no topic, nothing to move"),
            Err(err) => {
                assert!(Instant::now() < deadline, "remove broker 4: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    wait_until("the removed broker to stop voting in the controller", || {
        controller_voters(&nodes).is_some_and(|(voters, members)| voters == [1, 2, 3] && members.contains(&4))
    })
    .await;

    // One more node fails: two of the three voters remain, a majority, so
    // metadata changes still commit (with broker 4 still voting, two of
    // four would not be).
    let third = nodes.pop().expect("node 3");
    third.shutdown().await;
    let deadline = Instant::now() + T;
    loop {
        match nodes[0].create_topic("after", 1, 2, BTreeMap::new()).await {
            Ok(_) => break,
            Err(_) if nodes[0].metadata().topics.contains_key("after") => break,
            Err(err) => {
                assert!(Instant::now() < deadline, "no metadata change after the second failure: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    wait_until("both live nodes to see the topic", || nodes.iter().all(|n| n.metadata().topics.contains_key("after")))
        .await;
    for node in &nodes {
        node.shutdown().await;
    }
}
