//! Consumer groups: members that join, leave and crash never consume the
//! same partition at once (checked from the recorded history of every
//! member's assignments); fenced commits are refused; a group survives the
//! crash of its coordinator's node with its offsets, and resumes without
//! skipping a record.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{cluster, wait_for_leaders};
use strata_client::{
    Admin, Client, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, RebalanceEvent, Record, TopicPartition,
};
use strata_proto::api as pb;
use strata_proto::api::strata_client::StrataClient;

const PARTITIONS: u32 = 12;

#[derive(Debug, Clone)]
enum Event {
    Assigned(String, Vec<TopicPartition>),
    Released(String, Vec<TopicPartition>),
    Crashed(String),
}

fn group_config(group: &str) -> ConsumerConfig {
    ConsumerConfig {
        group_id: Some(group.into()),
        session_timeout: Duration::from_secs(2),
        auto_offset_reset: OffsetReset::Earliest,
        auto_commit_interval: Duration::from_millis(200),
        max_wait: Duration::from_millis(100),
        ..ConsumerConfig::default()
    }
}

/// A member running in a task: polls, records its rebalances, counts the
/// records it sees; `stop` leaves the group, `crash` aborts it.
struct Member {
    name: String,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn_member(
    client: &Client,
    name: &str,
    history: Arc<Mutex<Vec<Event>>>,
    seen: Arc<Mutex<Vec<(u32, u64)>>>,
) -> Member {
    let mut consumer = Consumer::with_config(client, group_config("g"));
    let who = name.to_string();
    let log = history.clone();
    consumer.on_rebalance(move |event| {
        let entry = match event {
            RebalanceEvent::Assigned(tps) => Event::Assigned(who.clone(), tps.clone()),
            RebalanceEvent::Revoked(tps) | RebalanceEvent::Lost(tps) => Event::Released(who.clone(), tps.clone()),
        };
        log.lock().expect("history").push(entry);
    });
    consumer.subscribe(vec!["events".into()]).expect("subscribe");
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        while !*stopped.borrow_and_update() {
            if let Ok(records) = consumer.poll().await {
                let mut seen = seen.lock().expect("seen");
                seen.extend(records.iter().map(|r| (r.partition, r.offset)));
            }
        }
        let _ = consumer.close().await;
    });
    Member { name: name.into(), stop, task }
}

impl Member {
    async fn leave(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    async fn crash(self, history: &Mutex<Vec<Event>>) {
        self.task.abort();
        let _ = self.task.await;
        history.lock().expect("history").push(Event::Crashed(self.name));
    }
}

/// Replays the history: a partition is assigned only while nobody owns it.
fn check_history(history: &[Event]) {
    let mut owner: BTreeMap<TopicPartition, String> = BTreeMap::new();
    for event in history {
        match event {
            Event::Assigned(who, tps) => {
                for tp in tps {
                    if let Some(other) = owner.insert(tp.clone(), who.clone()) {
                        assert_eq!(&other, who, "{tp:?} given to {who} while {other} owned it: {history:?}");
                    }
                }
            }
            Event::Released(who, tps) => {
                for tp in tps {
                    assert_eq!(owner.remove(tp).as_ref(), Some(who), "{who} released {tp:?} it did not own");
                }
            }
            Event::Crashed(who) => owner.retain(|_, o| o != who),
        }
    }
}

/// Waits until the group is stable with the given assignment sizes.
async fn wait_stable(admin: &Admin, sizes: &[usize]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(d) = admin.describe_group("g").await {
            let mut got: Vec<usize> = d.members.iter().map(|m| m.assignment.len()).collect();
            got.sort_unstable();
            if d.state == "Stable" && got == sizes {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "group never reached {sizes:?}: {d:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_join_leave_and_crash_without_ever_sharing_a_partition() {
    let cluster = cluster(3, |b| b.set("groups.offsets_partitions", "3").expect("set")).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("events", PARTITIONS).replication_factor(3)).await.expect("create");
    wait_for_leaders(&admin, "events").await;
    let producer = Producer::new(&client);
    for i in 0..(PARTITIONS * 50) {
        producer.send(Record::new("events", i.to_string()).partition(i % PARTITIONS)).await.expect("send");
    }
    producer.flush().await;

    let history = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    // A sampler watches the committed offsets: they never go backwards.
    let sampler = {
        let admin = admin.clone();
        tokio::spawn(async move {
            let mut highest: BTreeMap<TopicPartition, u64> = BTreeMap::new();
            let mut samples = 0u64;
            loop {
                if let Ok(d) = admin.describe_group("g").await {
                    for (tp, offset) in d.offsets {
                        let before = highest.insert(tp.clone(), offset).unwrap_or(0);
                        assert!(offset >= before, "{tp:?} committed {offset} after {before}");
                    }
                    samples += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                if samples > 1_000_000 {
                    return samples;
                }
            }
        })
    };
    let a = spawn_member(&client, "a", history.clone(), seen.clone());
    wait_stable(&admin, &[12]).await;
    let b = spawn_member(&client, "b", history.clone(), seen.clone());
    let c = spawn_member(&client, "c", history.clone(), seen.clone());
    wait_stable(&admin, &[4, 4, 4]).await;
    b.leave().await;
    wait_stable(&admin, &[6, 6]).await;
    c.crash(&history).await;
    wait_stable(&admin, &[12]).await;
    let d = spawn_member(&client, "d", history.clone(), seen.clone());
    wait_stable(&admin, &[6, 6]).await;
    check_history(&history.lock().expect("history"));

    // Every record was consumed (some twice, after the crash), none skipped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let distinct: BTreeSet<(u32, u64)> = seen.lock().expect("seen").iter().copied().collect();
        if distinct.len() == (PARTITIONS * 50) as usize {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {} records consumed", distinct.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.leave().await;
    d.leave().await;
    check_history(&history.lock().expect("history"));
    assert!(!sampler.is_finished(), "the offset sampler failed: {:?}", sampler.await);
    sampler.abort();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fenced_and_unknown_members_cannot_commit_and_admins_reset_only_empty_groups() {
    let cluster = cluster(1, |b| b.set("groups.offsets_partitions", "1").expect("set")).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("events", 2)).await.expect("create");
    wait_for_leaders(&admin, "events").await;
    let mut stub = StrataClient::connect(format!("http://{}", cluster.addr(1))).await.expect("connect");
    let join = pb::GroupHeartbeatRequest {
        group: "f".into(),
        member_epoch: 0,
        topics: vec!["events".into()],
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        ..Default::default()
    };
    let joined = loop {
        let answer = stub.group_heartbeat(join.clone()).await.expect("rpc").into_inner();
        if answer.error.is_none() {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(joined.assignment.iter().map(|t| t.partitions.len()).sum::<usize>(), 2);
    let commit = |member_id: &str, epoch: i32, partition: u32| pb::OffsetCommitRequest {
        group: "f".into(),
        member_id: member_id.into(),
        member_epoch: epoch,
        offsets: vec![pb::PartitionOffsetCommit {
            topic: "events".into(),
            partition,
            offset: 5,
            metadata: String::new(),
        }],
    };
    let code = |r: pb::OffsetCommitResponse| r.error.map_or(pb::ErrorCode::None, |e| e.code());
    let ok = stub.offset_commit(commit(&joined.member_id, joined.member_epoch, 0)).await.expect("rpc").into_inner();
    assert_eq!(code(ok), pb::ErrorCode::None);
    let stale = stub.offset_commit(commit(&joined.member_id, joined.member_epoch - 1, 0)).await.expect("rpc");
    assert_eq!(code(stale.into_inner()), pb::ErrorCode::FencedMemberEpoch);
    let stranger = stub.offset_commit(commit("m-nobody", 1, 0)).await.expect("rpc");
    assert_eq!(code(stranger.into_inner()), pb::ErrorCode::UnknownMemberId);
    let tp = TopicPartition::new("events", 0);
    let busy = admin.reset_offsets("f", vec![(tp.clone(), 0)]).await.expect_err("members are active");
    assert_eq!(busy.code(), Some(strata_client::ErrorCode::GroupNotEmpty));
    // The member leaves; now an admin may move the offset back.
    let leave = pb::GroupHeartbeatRequest { member_id: joined.member_id.clone(), member_epoch: -1, ..join.clone() };
    assert!(stub.group_heartbeat(leave).await.expect("rpc").into_inner().error.is_none());
    let after_leave = stub.offset_commit(commit(&joined.member_id, joined.member_epoch, 0)).await.expect("rpc");
    assert_eq!(code(after_leave.into_inner()), pb::ErrorCode::UnknownMemberId, "a member that left is fenced");
    admin.reset_offsets("f", vec![(tp.clone(), 1)]).await.expect("reset");
    let described = admin.describe_group("f").await.expect("describe");
    assert_eq!(described.offsets, vec![(tp, 1)]);
    assert!(admin.list_groups().await.expect("list").contains(&"f".to_string()));
    admin.delete_group("f").await.expect("delete");
    let gone = admin.describe_group("f").await.expect_err("deleted");
    assert_eq!(gone.code(), Some(strata_client::ErrorCode::UnknownGroup));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_keeps_its_offsets_and_resumes_when_its_coordinator_crashes() {
    let cluster = cluster(3, |b| b.set("groups.offsets_partitions", "1").expect("set")).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("events", 3).replication_factor(3)).await.expect("create");
    wait_for_leaders(&admin, "events").await;
    let producer = Producer::new(&client);
    for i in 0..300u32 {
        producer.send(Record::new("events", i.to_string()).partition(i % 3)).await.expect("send");
    }
    producer.flush().await;

    let config = ConsumerConfig { enable_auto_commit: false, ..group_config("g") };
    let mut consumer = Consumer::with_config(&client, config.clone());
    consumer.subscribe(vec!["events".into()]).expect("subscribe");
    // Process 150 records, then commit exactly what was processed.
    let mut first: Vec<(u32, u64)> = Vec::new();
    while first.len() < 150 {
        for r in consumer.poll().await.expect("poll") {
            if first.len() < 150 {
                first.push((r.partition, r.offset));
            }
        }
    }
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    for (p, o) in &first {
        let n = next.entry(*p).or_default();
        *n = (*n).max(o + 1);
    }
    let processed: Vec<(TopicPartition, u64)> =
        next.iter().map(|(p, o)| (TopicPartition::new("events", *p), *o)).collect();
    consumer.commit_offsets(processed).await.expect("commit");
    let committed: BTreeMap<u32, Option<u64>> = {
        let mut m = BTreeMap::new();
        for p in 0..3 {
            m.insert(p, consumer.committed(&TopicPartition::new("events", p)).await.expect("committed"));
        }
        m
    };
    drop(consumer);

    let coordinator = admin.describe_group("g").await.expect("describe").coordinator;
    cluster.servers[(coordinator - 1) as usize].halt().await;

    // A fresh member of the same group starts at the committed offsets.
    let survivors: Vec<String> = (1..=3).filter(|id| *id != coordinator).map(|id| cluster.addr(id)).collect();
    let client2 = Client::new(&survivors.join(",")).expect("client");
    let mut consumer = Consumer::with_config(&client2, config);
    consumer.subscribe(vec!["events".into()]).expect("subscribe");
    let mut second: Vec<(u32, u64)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while second.iter().collect::<BTreeSet<_>>().len() < 150 {
        assert!(tokio::time::Instant::now() < deadline, "resumed with only {} records", second.len());
        match consumer.poll().await {
            Ok(records) => second.extend(records.iter().map(|r| (r.partition, r.offset))),
            Err(e) => eprintln!("poll failed, retrying: {e}"),
        }
    }
    for p in 0..3u32 {
        let start = committed[&p].unwrap_or(0);
        let lowest = second.iter().filter(|(q, _)| *q == p).map(|(_, o)| *o).min();
        assert_eq!(lowest, Some(start).filter(|s| *s < 100), "partition {p} resumes exactly at its committed offset");
    }
    let all: BTreeSet<(u32, u64)> = first.into_iter().chain(second).collect();
    assert_eq!(all.len(), 300, "no record skipped");
    for id in (1..=3).filter(|id| *id != coordinator) {
        cluster.servers[(id - 1) as usize].shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pattern_subscription_follows_matching_topics_and_commits_in_the_background() {
    let cluster = cluster(1, |b| b.set("groups.offsets_partitions", "1").expect("set")).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("orders-eu", 1)).await.expect("create");
    admin.create_topic(NewTopic::new("payments", 1)).await.expect("create");
    let mut consumer = Consumer::with_config(&client, group_config("p"));
    consumer.subscribe_pattern("orders-.*").await.expect("subscribe");
    let assigned = |consumer: &Consumer| consumer.assignment().into_iter().map(|tp| tp.topic).collect::<BTreeSet<_>>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while assigned(&consumer) != BTreeSet::from(["orders-eu".to_string()]) {
        assert!(tokio::time::Instant::now() < deadline, "never assigned orders-eu: {:?}", consumer.assignment());
        let _ = consumer.poll().await;
    }
    // A topic created later that matches is picked up; one that does not is not.
    admin.create_topic(NewTopic::new("orders-us", 1)).await.expect("create");
    while assigned(&consumer) != BTreeSet::from(["orders-eu".to_string(), "orders-us".to_string()]) {
        assert!(tokio::time::Instant::now() < deadline, "never assigned orders-us: {:?}", consumer.assignment());
        let _ = consumer.poll().await;
    }
    let producer = Producer::new(&client);
    producer.send(Record::new("orders-us", "x")).await.expect("send").await.expect("ack");
    let mut n = 0;
    while n == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the record never arrived");
        n += consumer.poll().await.expect("poll").len();
    }
    consumer.commit_async().await.expect("task").expect("committed in the background");
    assert_eq!(consumer.committed(&TopicPartition::new("orders-us", 0)).await.expect("committed"), Some(1));
    consumer.close().await.expect("close");
    cluster.shutdown().await;
}
