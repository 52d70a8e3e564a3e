//! Growing a topic (what `strata topic alter --partitions` calls): the new
//! partitions are replicated and led like the first ones, a producer whose
//! metadata predates them starts using them at its next refresh, a record
//! sent to one of them by number is not refused (records to a partition
//! that does not exist are, without a metadata request each), a consumer
//! group is given them without being restarted, and counts that would
//! shrink the topic or move the groups' placement are refused. And partitions made (created or
//! added) while a broker is down all get a leader at once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cluster, wait_for_leaders};
use strata_client::{
    Admin, Client, Consumer, ConsumerConfig, ErrorCode, NewTopic, OffsetReset, Producer, Record, RecordMetadata,
};

const TOPIC: &str = "growing";

/// Sends `n` keyed records (keys `k{from}`..) and returns where each landed.
async fn send_keyed(producer: &Producer, from: usize, n: usize) -> Vec<(String, RecordMetadata)> {
    let mut pending = Vec::new();
    for i in from..from + n {
        let value = format!("v{i}");
        let delivery = producer.send(Record::new(TOPIC, value.clone()).key(format!("k{i}"))).await.expect("queued");
        pending.push((value, delivery));
    }
    let mut out = Vec::new();
    for (value, delivery) in pending {
        out.push((value, delivery.await.expect("acknowledged")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_grows_and_its_producers_and_groups_use_the_new_partitions() {
    let cluster = cluster(3, |b| b).await;
    let admin_client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&admin_client);
    admin.create_topic(NewTopic::new(TOPIC, 2).replication_factor(3)).await.expect("create");
    wait_for_leaders(&admin, TOPIC).await;

    // A group member reading the topic from the start, all along.
    let seen: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let consumer_client = Client::new(&cluster.bootstrap).expect("client");
    let config = ConsumerConfig {
        group_id: Some("readers".into()),
        session_timeout: Duration::from_secs(2),
        auto_offset_reset: OffsetReset::Earliest,
        max_wait: Duration::from_millis(100),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::with_config(&consumer_client, config);
    consumer.subscribe(vec![TOPIC.into()]).expect("subscribe");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let reader = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while !*stopped.borrow() {
                match consumer.poll().await {
                    Ok(records) => {
                        let mut seen = seen.lock().expect("seen");
                        for r in records {
                            let value = String::from_utf8(r.value.expect("value").to_vec()).expect("utf8");
                            seen.insert(value, r.partition);
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            let _ = consumer.close().await;
        })
    };

    // A producer on its own client: nothing but its metadata refresh can
    // tell it of the new partitions.
    let producer_client = Client::new(&cluster.bootstrap).expect("client");
    producer_client.set_metadata_max_age(Duration::from_millis(500));
    let producer = Producer::new(&producer_client);
    let mut sent = send_keyed(&producer, 0, 50).await;
    assert!(sent.iter().all(|(_, m)| m.partition < 2));
    // And one whose cached metadata stays old (the default 5 minutes).
    let stale_client = Client::connect(&cluster.bootstrap).await.expect("client");
    let stale = Producer::new(&stale_client);

    // Counts that are not growth, the internal topic and unknown topics
    // are refused, naming why.
    for (topic, count, code, why) in [
        (TOPIC, 2, ErrorCode::InvalidRequest, "can only be added"),
        (TOPIC, 1, ErrorCode::InvalidRequest, "can only be added"),
        ("__consumer_offsets", 100, ErrorCode::InvalidRequest, "internal"),
        ("nope", 3, ErrorCode::UnknownTopic, "does not exist"),
    ] {
        let err = admin.create_partitions(topic, count).await.expect_err("refused");
        assert_eq!(err.code(), Some(code), "{topic} to {count}: {err}");
        assert!(err.to_string().contains(why), "{topic} to {count}: {err}");
    }

    admin.create_partitions(TOPIC, 5).await.expect("grow");
    wait_for_leaders(&admin, TOPIC).await;
    let described = admin.describe_topic(TOPIC).await.expect("describe");
    assert_eq!(described.partitions.len(), 5);
    for p in &described.partitions {
        assert_eq!(p.replicas.iter().collect::<BTreeSet<_>>().len(), 3, "partition {} {:?}", p.partition, p.replicas);
    }
    let leaders: BTreeSet<u64> = described.partitions[2..].iter().map(|p| p.replicas[0]).collect();
    assert_eq!(leaders.len(), 3, "the new partitions' preferred leaders are spread: {:?}", described.partitions);

    // By number, the stale producer asks again instead of refusing.
    let m = stale.send(Record::new(TOPIC, "by-number").partition(4)).await.expect("queued").await.expect("acked");
    assert_eq!(m.partition, 4);
    let err = match stale.send(Record::new(TOPIC, "nowhere").partition(9)).await {
        Ok(delivery) => delivery.await.expect_err("no partition 9"),
        Err(err) => err,
    };
    assert_eq!(err.code(), Some(ErrorCode::UnknownPartition), "{err}");
    // More records to it are refused without a metadata request each.
    let metadata_requests = || async {
        let mut sum = 0.0;
        for server in &cluster.servers {
            let text = common::http_get(server.http_addr(), "/metrics").await;
            sum += common::metric_sum(&text, "strata_requests_total", &["rpc=\"metadata\""]);
        }
        sum
    };
    let before = metadata_requests().await;
    for i in 0..200 {
        let err = match stale.send(Record::new(TOPIC, format!("nowhere {i}")).partition(9)).await {
            Ok(delivery) => delivery.await.expect_err("no partition 9"),
            Err(err) => err,
        };
        assert_eq!(err.code(), Some(ErrorCode::UnknownPartition), "{err}");
    }
    let asked = metadata_requests().await - before;
    assert!(asked < 20.0, "200 records to a missing partition made {asked} metadata requests");

    // Keyed records spread over all five once the producer refreshed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut from = 50;
    loop {
        let round = send_keyed(&producer, from, 40).await;
        from += 40;
        let grown = round.iter().any(|(_, m)| m.partition >= 2);
        sent.extend(round);
        if grown {
            break;
        }
        assert!(Instant::now() < deadline, "the producer never used the new partitions");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sent.extend(send_keyed(&producer, from, 100).await);
    let used: BTreeSet<u32> = sent.iter().map(|(_, m)| m.partition).collect();
    assert_eq!(used, (0..5).collect(), "keyed records over five partitions");

    // The group member reads every record, from the new partitions too.
    let mut expected: BTreeMap<String, u32> = sent.iter().map(|(v, m)| (v.clone(), m.partition)).collect();
    expected.insert("by-number".into(), 4);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let missing: Vec<(String, u32)> = {
            let seen = seen.lock().expect("seen");
            expected.iter().filter(|(v, _)| !seen.contains_key(*v)).map(|(v, p)| (v.clone(), *p)).collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} records never read, such as {:?}",
            missing.len(),
            &missing[..3.min(missing.len())]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(*seen.lock().expect("seen"), expected, "each record read from the partition it was written to");

    let _ = stop.send(true);
    reader.await.expect("reader");
    producer.close().await;
    stale.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_made_while_a_broker_is_down_all_get_leaders() {
    let mut cluster = cluster(3, |b| b).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    // A broker other than the one asked (node 1) and the controller's
    // leader goes down, long enough for the others' pings to tell.
    let controller = admin.describe_cluster().await.expect("cluster").controller;
    let down = (2..=3).find(|id| Some(*id) != controller).expect("a broker to stop");
    let deadline = Instant::now() + Duration::from_secs(30);
    let quiescence = cluster.servers[0].cluster().raft_node().quiescence();
    while (2..=3).any(|id| quiescence.since_contact(id).is_none()) {
        assert!(Instant::now() < deadline, "node 1 never heard from the others");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.servers[(down - 1) as usize].halt().await;
    tokio::time::sleep(Duration::from_secs(6)).await;

    // RF=3 on three brokers must use the one down, but never first: the
    // first replica starts the group, and the two up elect a leader.
    admin.create_topic(NewTopic::new(TOPIC, 3).replication_factor(3)).await.expect("create");
    wait_for_leaders(&admin, TOPIC).await;
    admin.create_partitions(TOPIC, 6).await.expect("grow");
    wait_for_leaders(&admin, TOPIC).await;
    for p in admin.describe_topic(TOPIC).await.expect("describe").partitions {
        assert_ne!(p.replicas[0], down, "partition {} is led first by the broker down: {:?}", p.partition, p.replicas);
        assert_eq!(p.replicas.len(), 3);
    }
    // RF=2 has brokers enough without it.
    admin.create_topic(NewTopic::new("narrow", 4).replication_factor(2)).await.expect("create");
    wait_for_leaders(&admin, "narrow").await;
    for p in admin.describe_topic("narrow").await.expect("describe").partitions {
        assert!(!p.replicas.contains(&down), "partition {} on the broker down: {:?}", p.partition, p.replicas);
    }

    // Every partition takes writes; the broker, back, catches up on all.
    let producer = Producer::new(&client);
    let sent = send_keyed(&producer, 0, 120).await;
    producer.close().await;
    let mut ends = [0u64; 6];
    for (_, m) in &sent {
        ends[m.partition as usize] = ends[m.partition as usize].max(m.offset as u64 + 1);
    }
    assert!(ends.iter().all(|e| *e > 0), "every partition written: {ends:?}");
    cluster.restart(down).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replicas = admin.describe_replicas(TOPIC).await.unwrap_or_default();
        let caught_up = (0..6).all(|p| {
            replicas.iter().any(|r| r.broker == down && r.partition == p && r.log_end_offset == ends[p as usize])
        });
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "broker {down} did not catch up: {replicas:?}, ends {ends:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.shutdown().await;
}
