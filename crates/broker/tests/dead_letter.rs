//! Dead-letter handling in the client, against a real three-node cluster:
//! a group member whose handler fails on some records retries them, writes
//! those that keep failing to `<topic>.dlq` with their origin and error,
//! commits, and the next member of the group starts after every record.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{cluster, wait_for_leaders};
use strata_client::{
    Admin, Client, Consumer, ConsumerConfig, ConsumerRecord, DeadLetterConfig, DeadLetters, Handled, NewTopic,
    OffsetReset, Producer, Record, Seek, TopicPartition,
};

fn text(b: &Option<bytes::Bytes>) -> String {
    String::from_utf8_lossy(b.as_deref().unwrap_or_default()).into_owned()
}

fn group_config() -> ConsumerConfig {
    ConsumerConfig {
        group_id: Some("billing".into()),
        enable_auto_commit: false,
        auto_offset_reset: OffsetReset::Earliest,
        max_wait: Duration::from_millis(100),
        ..ConsumerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_that_keep_failing_go_to_the_dead_letter_topic_with_their_origin() {
    let cluster = cluster(3, |b| b).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("payments", 2).replication_factor(3)).await.expect("create");
    wait_for_leaders(&admin, "payments").await;
    let config = DeadLetterConfig { backoff: Duration::from_millis(5), ..DeadLetterConfig::default() };
    let dead_letters = DeadLetters::new(Producer::new(&client), config);
    dead_letters.ensure_topic(&admin, "payments").await.expect("dead-letter topic");
    dead_letters.ensure_topic(&admin, "payments").await.expect("a second call finds it");
    let dlq = admin.describe_topic("payments.dlq").await.expect("describe");
    assert_eq!((dlq.partitions.len(), dlq.partitions[0].replicas.len()), (2, 3), "shaped like its source");
    wait_for_leaders(&admin, "payments.dlq").await;

    // 20 payments; "bad" ones always fail, "flaky" ones fail once.
    let producer = Producer::new(&client);
    let value = |i: u32| match i % 7 {
        3 => format!("bad-{i}"),
        5 => format!("flaky-{i}"),
        _ => format!("ok-{i}"),
    };
    for i in 0..20u32 {
        let record = Record::new("payments", value(i)).key(format!("customer-{}", i % 4)).header("trace", "t-1");
        producer.send(record).await.expect("queue").await.expect("ack");
    }

    let mut consumer = Consumer::with_config(&client, group_config());
    consumer.subscribe(vec!["payments".into()]).expect("subscribe");
    let mut tries: BTreeMap<String, u32> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, Handled> = BTreeMap::new();
    let mut origin: BTreeMap<String, (u32, u64)> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while outcomes.len() < 20 {
        assert!(tokio::time::Instant::now() < deadline, "read {} of 20 records", outcomes.len());
        for record in consumer.poll().await.expect("poll") {
            let name = text(&record.value);
            origin.insert(name.clone(), (record.partition, record.offset));
            let outcome = dead_letters
                .handle(&record, async |r: &ConsumerRecord| {
                    let name = text(&r.value);
                    let n = tries.entry(name.clone()).or_default();
                    *n += 1;
                    let fails = name.starts_with("bad") || (name.starts_with("flaky") && *n == 1);
                    if fails { Err(format!("cannot charge {name}")) } else { Ok(()) }
                })
                .await
                .expect("handled or dead-lettered");
            outcomes.insert(name, outcome);
        }
        consumer.commit().await.expect("commit");
    }
    consumer.close().await.expect("close");

    let bad: BTreeSet<String> = (0..20).map(value).filter(|v| v.starts_with("bad")).collect();
    for (name, outcome) in &outcomes {
        match outcome {
            Handled::Processed { attempts } => {
                assert!(!bad.contains(name), "{name} cannot succeed");
                let expected = if name.starts_with("flaky") { 2 } else { 1 };
                assert_eq!(*attempts, expected, "{name}");
            }
            Handled::DeadLettered { topic, error, .. } => {
                assert!(bad.contains(name), "{name} should have been processed");
                assert_eq!(topic, "payments.dlq");
                assert_eq!(error, &format!("cannot charge {name}"));
                assert_eq!(tries[name], 3, "{name} was tried max_attempts times");
            }
        }
    }

    // The dead-letter topic holds exactly the bad records, with their key,
    // their own headers, and where they came from.
    let mut reader = Consumer::new(&client);
    let tps: Vec<TopicPartition> = (0..2).map(|p| TopicPartition::new("payments.dlq", p)).collect();
    reader.assign(tps.clone());
    for tp in &tps {
        reader.seek(tp, Seek::Beginning).await.expect("seek");
    }
    let mut dead: BTreeMap<String, ConsumerRecord> = BTreeMap::new();
    while dead.len() < bad.len() {
        assert!(tokio::time::Instant::now() < deadline, "read {} dead letters of {}", dead.len(), bad.len());
        for record in reader.poll().await.expect("poll") {
            dead.insert(text(&record.value), record);
        }
    }
    assert_eq!(dead.keys().cloned().collect::<BTreeSet<_>>(), bad);
    for (name, record) in &dead {
        let from = DeadLetters::origin(record).expect("origin headers");
        assert_eq!((from.topic.as_str(), from.partition, from.offset), ("payments", origin[name].0, origin[name].1));
        assert_eq!((from.error, from.attempts), (format!("cannot charge {name}"), 3));
        let i: u32 = name.trim_start_matches("bad-").parse().expect("number");
        assert_eq!(text(&record.key), format!("customer-{}", i % 4), "the key is kept");
        assert!(record.headers.iter().any(|h| h.key == "trace"), "the record's own headers are kept");
    }

    // Everything was committed: the group's next member finds nothing left.
    let mut next = Consumer::with_config(&client, group_config());
    next.subscribe(vec!["payments".into()]).expect("subscribe");
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < until {
        let again = next.poll().await.expect("poll");
        assert!(again.is_empty(), "records redelivered after their commit: {}", again.len());
    }

    // Replayed (the bug fixed), the dead letters come back to the
    // partitions they left, and the group reads them once more.
    for record in dead.values() {
        let back = dead_letters.replay(record).await.expect("replay");
        assert_eq!((&*back.topic, back.partition), ("payments", origin[&text(&record.value)].0));
    }
    let not_a_dead_letter = ConsumerRecord { headers: Vec::new(), ..dead.values().next().expect("one").clone() };
    assert!(dead_letters.replay(&not_a_dead_letter).await.is_err(), "a record without origin headers is refused");
    let mut replayed: BTreeSet<String> = BTreeSet::new();
    while replayed.len() < bad.len() {
        assert!(tokio::time::Instant::now() < deadline + Duration::from_secs(30), "replayed {}", replayed.len());
        for record in next.poll().await.expect("poll") {
            assert_eq!(DeadLetters::origin(&record).map(|o| o.topic), Some("payments".into()), "headers kept");
            replayed.insert(text(&record.value));
        }
    }
    assert_eq!(replayed, bad);
    next.close().await.expect("close");
    cluster.shutdown().await;
}
