//! Retention and compaction in a running 3-node cluster: the leader's
//! decision deletes the same segments on every replica, a follower that was
//! down while the log start passed its position catches up from a snapshot,
//! a consumer below the log start gets OFFSET_OUT_OF_RANGE or is reset, topic
//! configs change at runtime through the controller (bad values refused),
//! a compacted topic keeps the latest value of every live key, and a topic's
//! compression.type and flush.policy reach every replica, a topic created
//! with its own segment.bytes rolls by it from its first record, and
//! records deleted before an offset (DeleteRecords) are gone for every
//! reader and every replica, through a leader's restart.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::{cluster, wait_for_leaders};
use strata_client::{
    Admin, Client, Consumer, ConsumerConfig, ErrorCode, NewTopic, OffsetReset, Producer, Record, ReplicaDescription,
    Seek, TopicPartition,
};

const SEGMENT: u64 = 65536;

fn fast_retention(b: strata_broker::ConfigBuilder) -> strata_broker::ConfigBuilder {
    b.set("log.retention_check_interval", "100ms")
        .and_then(|b| b.set("log.retention_follower_hold", "1s"))
        .expect("settings")
}

async fn produce(client: &Client, topic: &str, n: usize, size: usize, tag: &str) {
    let producer = Producer::new(client);
    let mut deliveries = Vec::new();
    for i in 0..n {
        let mut value = format!("{tag}-{i}-").into_bytes();
        value.resize(size, b'x');
        deliveries.push(producer.send(Record::new(topic, value).partition(0)).await.expect("send"));
    }
    for delivery in deliveries {
        delivery.await.expect("acknowledged");
    }
    producer.close().await;
}

/// Waits until `check` holds for the replicas of partition 0, or panics
/// with them.
async fn wait_replicas(
    admin: &Admin,
    topic: &str,
    what: &str,
    check: impl Fn(&[ReplicaDescription]) -> bool,
) -> Vec<ReplicaDescription> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replicas: Vec<ReplicaDescription> =
            admin.describe_replicas(topic).await.unwrap_or_default().into_iter().filter(|r| r.partition == 0).collect();
        if check(&replicas) {
            return replicas;
        }
        assert!(Instant::now() < deadline, "{what}: {replicas:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all_equal<T: PartialEq>(replicas: &[ReplicaDescription], f: impl Fn(&ReplicaDescription) -> T) -> bool {
    replicas.windows(2).all(|w| f(&w[0]) == f(&w[1]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn size_retention_deletes_the_same_segments_on_every_replica_and_a_restarted_follower_catches_up() {
    let mut cluster = cluster(3, fast_retention).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    let retention_bytes = 4 * SEGMENT;
    let topic = NewTopic::new("sized", 1)
        .replication_factor(3)
        .config("segment.bytes", SEGMENT.to_string())
        .config("retention.bytes", retention_bytes.to_string());
    admin.create_topic(topic).await.expect("create");
    wait_for_leaders(&admin, "sized").await;
    produce(&client, "sized", 1000, 1000, "a").await;

    // Every replica deletes down to the same log start and holds less than
    // retention.bytes plus one segment; while writes go on, the leader
    // deletes ahead by up to one check interval's growth, so at least
    // retention.bytes less one segment stays.
    let replicas = wait_replicas(&admin, "sized", "retention on all three replicas", |rs| {
        rs.len() == 3
            && rs.iter().all(|r| r.log_start_offset > 0 && r.size_bytes <= retention_bytes + SEGMENT)
            && all_equal(rs, |r| r.log_start_offset)
    })
    .await;
    for r in &replicas {
        assert!(r.size_bytes + SEGMENT >= retention_bytes, "too much deleted on broker {}: {r:?}", r.broker);
    }
    let log_start = replicas[0].log_start_offset;

    // Below the log start: OFFSET_OUT_OF_RANGE, or a reset to the start.
    let tp = TopicPartition::new("sized", 0);
    let strict = ConsumerConfig { auto_offset_reset: OffsetReset::Error, ..ConsumerConfig::default() };
    let mut consumer = Consumer::with_config(&client, strict);
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, Seek::Offset(0)).await.expect("seek");
    let err = consumer.poll().await.expect_err("offset 0 was deleted");
    assert_eq!(err.code(), Some(ErrorCode::OffsetOutOfRange), "{err}");
    let reset = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::with_config(&client, reset);
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, Seek::Offset(0)).await.expect("seek");
    let first = loop {
        if let Some(record) = consumer.poll().await.expect("poll after reset").into_iter().next() {
            break record;
        }
    };
    assert_eq!(first.offset, log_start, "reset to the log start");

    // A follower down while the log start passes its end catches up.
    let leader = replicas.iter().find(|r| r.is_leader).expect("a leader").broker;
    let follower = replicas.iter().find(|r| !r.is_leader).expect("a follower").broker;
    let follower_end = replicas.iter().find(|r| r.broker == follower).expect("follower").log_end_offset;
    cluster.servers[(follower - 1) as usize].halt().await;
    produce(&client, "sized", 1000, 1000, "b").await;
    wait_replicas(&admin, "sized", "the leader's log start passes the stopped follower's end", |rs| {
        rs.iter().any(|r| r.broker == leader && r.log_start_offset > follower_end)
    })
    .await;
    cluster.restart(follower).await;
    let replicas = wait_replicas(&admin, "sized", "the restarted follower catches up", |rs| {
        rs.len() == 3 && all_equal(rs, |r| r.log_end_offset) && all_equal(rs, |r| r.log_start_offset)
    })
    .await;
    assert!(replicas[0].log_start_offset > follower_end, "{replicas:#?}");
    assert_eq!(replicas[0].log_end_offset, 2000, "{replicas:#?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_deleted_before_an_offset_are_gone_for_every_reader_and_replica() {
    let mut cluster = cluster(3, fast_retention).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    let topic = NewTopic::new("ledger", 1).replication_factor(3).config("segment.bytes", SEGMENT.to_string());
    admin.create_topic(topic).await.expect("create");
    wait_for_leaders(&admin, "ledger").await;
    produce(&client, "ledger", 1000, 1000, "a").await;
    let tp = TopicPartition::new("ledger", 0);

    // Offset 333 is inside a batch (batches hold many records here): the
    // log still starts exactly there.
    assert_eq!(admin.delete_records(&tp, Some(333)).await.expect("delete"), 333);
    assert_eq!(admin.list_offset(&tp, -2).await.expect("earliest"), 333);
    let replicas = wait_replicas(&admin, "ledger", "every replica to start at 333", |rs| {
        rs.len() == 3 && rs.iter().all(|r| r.log_start_offset == 333)
    })
    .await;
    let segments_before = replicas.iter().map(|r| r.segments).max().expect("replicas");
    // A reader from the start gets 333 first; below it, OFFSET_OUT_OF_RANGE.
    let earliest = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::with_config(&client, earliest);
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, Seek::Beginning).await.expect("seek");
    let first = loop {
        if let Some(record) = consumer.poll().await.expect("poll").into_iter().next() {
            break record;
        }
    };
    assert_eq!(first.offset, 333);
    assert!(first.value.as_deref().is_some_and(|v| v.starts_with(b"a-333-")), "{first:?}");
    let strict = ConsumerConfig { auto_offset_reset: OffsetReset::Error, ..ConsumerConfig::default() };
    let mut consumer = Consumer::with_config(&client, strict);
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, Seek::Offset(100)).await.expect("seek");
    let err = consumer.poll().await.expect_err("offset 100 was deleted");
    assert_eq!(err.code(), Some(ErrorCode::OffsetOutOfRange), "{err}");
    // Lower than the start: nothing changes. Past the high watermark: refused.
    assert_eq!(admin.delete_records(&tp, Some(10)).await.expect("no-op"), 333);
    let err = admin.delete_records(&tp, Some(1001)).await.expect_err("past the end");
    assert_eq!(err.code(), Some(ErrorCode::OffsetOutOfRange), "{err}");
    // Not the groups' offsets, nor a compacted topic's records, as in Kafka.
    let offsets = TopicPartition::new("__consumer_offsets", 0);
    let err = admin.delete_records(&offsets, None).await.expect_err("internal");
    assert!(err.code() == Some(ErrorCode::InvalidRequest) && err.to_string().contains("internal"), "{err}");
    let compacted = NewTopic::new("kv", 1).replication_factor(3).config("cleanup.policy", "compact");
    admin.create_topic(compacted).await.expect("create");
    wait_for_leaders(&admin, "kv").await;
    let err = admin.delete_records(&TopicPartition::new("kv", 0), None).await.expect_err("compacted");
    assert!(err.code() == Some(ErrorCode::InvalidRequest) && err.to_string().contains("compact"), "{err}");

    // The start holds on a new leader, after the old one restarted.
    let leader = replicas.iter().find(|r| r.is_leader).expect("a leader").broker;
    cluster.servers[(leader - 1) as usize].halt().await;
    cluster.restart(leader).await;
    wait_replicas(&admin, "ledger", "every replica still starting at 333 after a restart", |rs| {
        rs.len() == 3 && rs.iter().all(|r| r.log_start_offset == 333)
    })
    .await;
    assert_eq!(admin.list_offset(&tp, -2).await.expect("earliest"), 333);

    // Everything: the log starts at the high watermark, and the segments
    // below it go from every replica.
    assert_eq!(admin.delete_records(&tp, None).await.expect("delete all"), 1000);
    wait_replicas(&admin, "ledger", "every replica to drop its old segments", |rs| {
        rs.len() == 3 && rs.iter().all(|r| r.log_start_offset == 1000 && r.segments < segments_before.min(3))
    })
    .await;
    produce(&client, "ledger", 10, 100, "b").await;
    assert_eq!(admin.list_offset(&tp, -2).await.expect("earliest"), 1000);
    assert_eq!(admin.list_offset(&tp, -1).await.expect("latest"), 1010);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn time_retention_set_at_runtime_deletes_every_sealed_segment_on_every_replica() {
    let cluster = cluster(3, fast_retention).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    let topic = NewTopic::new("timed", 1).replication_factor(3).config("segment.bytes", SEGMENT.to_string());
    admin.create_topic(topic).await.expect("create");
    wait_for_leaders(&admin, "timed").await;
    produce(&client, "timed", 400, 1000, "t").await;
    let before =
        wait_replicas(&admin, "timed", "segments rolled", |rs| rs.len() == 3 && rs.iter().all(|r| r.segments > 3))
            .await;
    assert!(before.iter().all(|r| r.log_start_offset == 0), "nothing deleted under the default 7 days: {before:#?}");

    // Bad values are refused, naming the key, the value and the range.
    let bad = BTreeMap::from([("retention.ms".to_string(), "soon".to_string())]);
    let err = admin.alter_topic_config("timed", bad, vec![]).await.expect_err("refused").to_string();
    assert!(err.contains("retention.ms") && err.contains("soon") && err.contains(">= -1"), "{err}");
    let bad = BTreeMap::from([("segment.bytes".to_string(), "1".to_string())]);
    assert!(admin.alter_topic_config("timed", bad, vec![]).await.is_err(), "segment.bytes below the minimum");

    let set = BTreeMap::from([("retention.ms".to_string(), "500".to_string())]);
    let configs = admin.alter_topic_config("timed", set, vec![]).await.expect("alter");
    assert_eq!(configs.get("retention.ms").map(String::as_str), Some("500"));
    let after = wait_replicas(&admin, "timed", "every sealed segment deleted everywhere", |rs| {
        rs.len() == 3
            && rs.iter().all(|r| r.segments == 1 && r.log_start_offset > 0)
            && all_equal(rs, |r| r.log_start_offset)
    })
    .await;
    assert!(after.iter().all(|r| r.log_end_offset == 400), "{after:#?}");
    let configs =
        admin.alter_topic_config("timed", BTreeMap::new(), vec!["retention.ms".into()]).await.expect("delete key");
    assert!(!configs.contains_key("retention.ms"), "{configs:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compacted_topic_keeps_the_latest_value_of_every_live_key_and_drops_deleted_keys() {
    let cluster = cluster(3, fast_retention).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    let topic = NewTopic::new("accounts", 1)
        .replication_factor(3)
        .config("cleanup.policy", "compact")
        .config("segment.bytes", SEGMENT.to_string())
        .config("delete.retention.ms", "1000");
    admin.create_topic(topic).await.expect("create");
    wait_for_leaders(&admin, "accounts").await;
    let producer = Producer::new(&client);
    let mut latest: HashMap<String, String> = HashMap::new();
    let mut deliveries = Vec::new();
    let pad = "p".repeat(500);
    let mut send = |key: String, value: Option<String>, deliveries: &mut Vec<_>, producer: &Producer| {
        let record = Record {
            topic: "accounts".into(),
            partition: Some(0),
            key: Some(key.clone().into()),
            value: value.clone().map(Into::into),
            ..Record::default()
        };
        match value {
            Some(v) => latest.insert(key, v),
            None => latest.remove(&key),
        };
        let producer = producer.clone();
        deliveries.push(async move { producer.send(record).await.expect("send").await.expect("acknowledged") });
    };
    let mut n_sent = 0;
    for round in 0..20 {
        for k in 0..50 {
            send(format!("key-{k}"), Some(format!("v{round}-{pad}")), &mut deliveries, &producer);
            n_sent += 1;
        }
    }
    for k in 0..10 {
        send(format!("key-{k}"), None, &mut deliveries, &producer);
        n_sent += 1;
    }
    // More writes to the live keys, so the tombstones end up in sealed
    // segments.
    for round in 20..30 {
        for k in 10..50 {
            send(format!("key-{k}"), Some(format!("v{round}-{pad}")), &mut deliveries, &producer);
            n_sent += 1;
        }
    }
    for delivery in deliveries {
        delivery.await;
    }
    producer.close().await;

    let tp = TopicPartition::new("accounts", 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut consumer = Consumer::new(&client);
        consumer.assign(vec![tp.clone()]);
        consumer.seek(&tp, Seek::Beginning).await.expect("seek");
        let mut seen: Vec<(String, Option<String>)> = Vec::new();
        let mut last_offset = None;
        while last_offset.is_none_or(|o| o + 1 < n_sent as u64) {
            let records = consumer.poll().await.expect("poll");
            for r in records {
                last_offset = Some(r.offset);
                let key = String::from_utf8(r.key.expect("key").to_vec()).expect("utf8");
                seen.push((key, r.value.map(|v| String::from_utf8(v.to_vec()).expect("utf8"))));
            }
        }
        let mut last: HashMap<String, Option<String>> = HashMap::new();
        for (k, v) in &seen {
            last.insert(k.clone(), v.clone());
        }
        let deleted_gone = (0..10).all(|k| !last.contains_key(&format!("key-{k}")));
        let live_latest = latest.iter().all(|(k, v)| last.get(k) == Some(&Some(v.clone())));
        assert!(live_latest, "a live key lost its latest value");
        if deleted_gone && seen.len() < n_sent / 2 {
            assert_eq!(last.len(), latest.len());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted: {} of {n_sent} records remain, deleted keys gone: {deleted_gone}",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compression_type_and_flush_policy_of_a_topic_apply_to_every_replica() {
    let cluster = cluster(3, fast_retention).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    let topic = NewTopic::new("packed", 1).replication_factor(3).config("compression.type", "lz4");
    admin.create_topic(topic).await.expect("create");
    wait_for_leaders(&admin, "packed").await;
    let config = strata_client::ProducerConfig {
        compression: strata_client::Compression::None,
        ..strata_client::ProducerConfig::default()
    };
    let producer = Producer::with_config(&client, config);
    let mut deliveries = Vec::new();
    for i in 0..200 {
        let value = format!("{i:05}{}", "x".repeat(995));
        deliveries.push(producer.send(Record::new("packed", value).partition(0)).await.expect("send"));
    }
    for delivery in deliveries {
        delivery.await.expect("acknowledged");
    }
    producer.close().await;
    // Stored re-encoded with LZ4: far below the 200 KB sent.
    let replicas = wait_replicas(&admin, "packed", "all replicas hold the records", |rs| {
        rs.len() == 3 && rs.iter().all(|r| r.log_end_offset == 200)
    })
    .await;
    assert!(replicas.iter().all(|r| r.size_bytes < 50_000), "{replicas:#?}");
    let tp = TopicPartition::new("packed", 0);
    let mut consumer = Consumer::new(&client);
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, Seek::Beginning).await.expect("seek");
    let mut n = 0;
    while n < 200 {
        for record in consumer.poll().await.expect("poll") {
            let value = record.value.expect("value");
            assert_eq!(&value[..5], format!("{n:05}").as_bytes(), "records come back whole and in order");
            assert_eq!(value.len(), 1000);
            n += 1;
        }
    }

    // flush.policy changed at runtime reaches every replica's log.
    let set = BTreeMap::from([("flush.policy".to_string(), "interval".to_string())]);
    admin.alter_topic_config("packed", set, vec![]).await.expect("alter");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let policies: Vec<_> = cluster
            .servers
            .iter()
            .flat_map(|s| s.cluster().raft_node().groups())
            .filter(|g| g.id != 0 && group_of_topic(&cluster, g.id, "packed"))
            .map(|g| g.log.flush_policy())
            .collect();
        if policies.len() == 3 && policies.iter().all(|p| matches!(p, strata_log::FlushPolicy::Interval(_))) {
            break;
        }
        assert!(Instant::now() < deadline, "flush policies: {policies:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.shutdown().await;
}

fn group_of_topic(cluster: &common::TestCluster, group: u64, topic: &str) -> bool {
    let metadata = cluster.servers[0].cluster().metadata();
    metadata.partition_of_group(group).is_some_and(|(t, _)| t == topic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_created_with_its_own_segment_size_rolls_by_it_from_the_first_record() {
    // No scheduled pass comes during the test: only the opening of each
    // replica can have applied the topic's segment.bytes.
    let cluster = cluster(3, |b| b.set("log.retention_check_interval", "1h").expect("setting")).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin
        .create_topic(NewTopic::new("sized", 1).replication_factor(3).config("segment.bytes", SEGMENT.to_string()))
        .await
        .expect("create");
    wait_for_leaders(&admin, "sized").await;
    // 40 records of 10 KB: six segments of 64 KiB, or one of the default
    // 128 MiB had the setting waited for the hourly pass.
    produce(&client, "sized", 40, 10_000, "a").await;
    let replicas = wait_replicas(&admin, "sized", "rolled by segment.bytes", |rs| {
        rs.len() == 3 && rs.iter().all(|r| r.segments >= 5)
    })
    .await;
    assert!(replicas.iter().all(|r| r.log_end_offset == 40), "{replicas:#?}");
    cluster.shutdown().await;
}
