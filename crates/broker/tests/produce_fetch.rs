//! Produce with each acks level and fetch's long poll behave as the API
//! says: acks=all answers with offsets once committed, acks=leader and
//! acks=none answer at once (offset -1) and the records still arrive, and a
//! fetch waiting for data returns as soon as a record is committed; a
//! consumer hands out at most `max_poll_records` per poll, keeps its position
//! at what it handed out, and drops what it fetched ahead when sought; large
//! batches come back byte for byte, from sealed segments and from the tail
//! (the fetch answer sends them without copying them).

mod common;

use std::time::{Duration, Instant};

use common::{cluster, wait_for_leaders};
use strata_client::{Acks, Admin, Client, Consumer, NewTopic, Producer, ProducerConfig, Record, Seek, TopicPartition};
use strata_raft::FaultRates;

async fn read_all(client: &Client, tp: &TopicPartition, n: usize) -> Vec<String> {
    let mut consumer = Consumer::new(client);
    consumer.assign(vec![tp.clone()]);
    consumer.seek(tp, Seek::Beginning).await.expect("seek");
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while values.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} records arrived: {values:?}", values.len());
        for record in consumer.poll().await.expect("poll") {
            values.push(String::from_utf8(record.value.expect("value").to_vec()).expect("utf8"));
        }
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_acks_level_answers_as_documented_and_every_record_arrives() {
    let cluster = cluster(3, |b| b).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("acks", 1).replication_factor(3)).await.expect("create");
    wait_for_leaders(&admin, "acks").await;
    let tp = TopicPartition::new("acks", 0);
    for (acks, label) in [(Acks::All, "all"), (Acks::Leader, "leader"), (Acks::None, "none")] {
        let producer = Producer::with_config(&client, ProducerConfig { acks, ..ProducerConfig::default() });
        let mut deliveries = Vec::new();
        let before = std::time::Instant::now();
        for i in 0..10 {
            deliveries
                .push(producer.send(Record::new("acks", format!("{label}-{i}")).partition(0)).await.expect("send"));
        }
        for (i, delivery) in deliveries.into_iter().enumerate() {
            let meta = delivery.await.expect("acknowledged");
            let acknowledged = meta.acknowledged_at;
            assert!(
                before <= acknowledged && acknowledged <= std::time::Instant::now(),
                "acknowledged while waited for"
            );
            match acks {
                Acks::All => assert_eq!(meta.offset, i as i64, "acks=all reports the offset"),
                _ => assert_eq!(meta.offset, -1, "acks={label} answers before the offset is known"),
            }
        }
        producer.close().await;
    }
    let values = read_all(&client, &tp, 30).await;
    for label in ["all", "leader", "none"] {
        let expected: Vec<String> = (0..10).map(|i| format!("{label}-{i}")).collect();
        let got: Vec<String> = values.iter().filter(|v| v.starts_with(label)).cloned().collect();
        assert_eq!(got, expected, "acks={label}: every record arrives, in order");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_batches_are_fetched_byte_for_byte_from_sealed_segments_and_the_tail() {
    let cluster = cluster(3, |b| b.set("log.segment_bytes", "1 MiB").expect("segment size")).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("large", 1).replication_factor(3)).await.expect("create");
    wait_for_leaders(&admin, "large").await;
    // Each record its own batch of over 16 KiB, the size from which a
    // fetch answer carries a slice of the log as a buffer of its own; 2.5
    // MiB in all, so most lie in sealed (mapped) segments.
    let value = |i: usize| -> Vec<u8> { (0..40_000).map(|k| ((i * 7 + k * 13) % 251) as u8).collect() };
    let producer = Producer::new(&client);
    let mut deliveries = Vec::new();
    for i in 0..64 {
        deliveries.push(producer.send(Record::new("large", value(i)).partition(0)).await.expect("send"));
    }
    for delivery in deliveries {
        delivery.await.expect("acknowledged");
    }
    producer.close().await;
    let tp = TopicPartition::new("large", 0);
    let mut consumer = Consumer::new(&client);
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, Seek::Beginning).await.expect("seek");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 64 {
        assert!(Instant::now() < deadline, "only {} of 64 records arrived", got.len());
        for record in consumer.poll().await.expect("poll") {
            got.push((record.offset, record.value.expect("value")));
        }
    }
    for (i, (offset, bytes)) in got.iter().enumerate() {
        assert_eq!(*offset, i as u64);
        assert!(bytes[..] == value(i)[..], "record {i} differs");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_poll_returns_when_a_record_is_committed_not_at_its_deadline() {
    let cluster = cluster(1, |b| b).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("poll", 1)).await.expect("create");
    wait_for_leaders(&admin, "poll").await;
    let tp = TopicPartition::new("poll", 0);
    let config = strata_client::ConsumerConfig { max_wait: Duration::from_secs(20), ..Default::default() };
    let mut consumer = Consumer::with_config(&client, config);
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, Seek::End).await.expect("seek");
    let started = Instant::now();
    let poll = tokio::spawn(async move { consumer.poll().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let producer = Producer::new(&client);
    producer.send(Record::new("poll", "wake up").partition(0)).await.expect("send").await.expect("ack");
    let records = poll.await.expect("task").expect("poll");
    assert_eq!(records.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(10), "the poll waited for its deadline: {:?}", started.elapsed());
    cluster.shutdown().await;
}

/// Polls until `enough(seen)`, recording each record's offset under its
/// partition; no poll hands out more than 64 records, and none repeats
/// without end.
async fn poll_until(
    consumer: &mut Consumer,
    seen: &mut [Vec<u64>; 2],
    deadline: Instant,
    enough: impl Fn(&[Vec<u64>; 2]) -> bool,
) {
    while !enough(seen) {
        assert!(Instant::now() < deadline, "only {} and {} records arrived", seen[0].len(), seen[1].len());
        let records = consumer.poll().await.expect("poll");
        assert!(records.len() <= 64, "a poll returned {} records", records.len());
        for record in records {
            assert!(seen[record.partition as usize].len() < 1000, "records repeat");
            seen[record.partition as usize].push(record.offset);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn polls_are_bounded_positions_follow_what_was_handed_out_and_a_seek_drops_what_was_fetched_ahead() {
    let cluster = cluster(1, |b| b).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("bounded", 2)).await.expect("create");
    wait_for_leaders(&admin, "bounded").await;
    let producer = Producer::new(&client);
    let mut deliveries = Vec::new();
    for p in 0..2u32 {
        for i in 0..500 {
            deliveries
                .push(producer.send(Record::new("bounded", format!("{p}-{i}")).partition(p)).await.expect("send"));
        }
    }
    for delivery in deliveries {
        delivery.await.expect("ack");
    }
    producer.close().await;

    let config =
        strata_client::ConsumerConfig { max_poll_records: 64, max_wait: Duration::from_secs(2), ..Default::default() };
    let mut consumer = Consumer::with_config(&client, config);
    let (tp0, tp1) = (TopicPartition::new("bounded", 0), TopicPartition::new("bounded", 1));
    consumer.assign(vec![tp0.clone(), tp1.clone()]);
    consumer.seek(&tp0, Seek::Beginning).await.expect("seek");
    consumer.seek(&tp1, Seek::Beginning).await.expect("seek");
    let mut seen: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut first = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.is_empty() {
        assert!(Instant::now() < deadline, "nothing arrived");
        first = consumer.poll().await.expect("poll");
    }
    // One fetch brought whole partitions; one poll hands out 64 at most,
    // and the position is where the caller is, not where the fetch ended.
    assert!(first.len() <= 64, "a poll returned {} records", first.len());
    for record in &first {
        seen[record.partition as usize].push(record.offset);
        assert_eq!(record.value.as_deref(), Some(format!("{}-{}", record.partition, record.offset).as_bytes()));
    }
    let last = first.last().expect("a record");
    let tp_last = TopicPartition::new("bounded", last.partition);
    assert_eq!(consumer.position(&tp_last), Some(last.offset + 1), "the position follows what was handed out");

    // Partition 0 is sought back (a replay) while its later records are
    // buffered or being fetched: they must not be handed out next.
    poll_until(&mut consumer, &mut seen, deadline, |seen| seen[0].len() >= 200).await;
    consumer.seek(&tp0, Seek::Offset(100)).await.expect("seek back");
    let sought_at = seen[0].len();
    poll_until(&mut consumer, &mut seen, deadline, |seen| seen[0].len() >= sought_at + 400 && seen[1].len() >= 500)
        .await;
    let expected0: Vec<u64> = seen[0][..sought_at].iter().copied().chain(100..500).collect();
    assert_eq!(seen[0], expected0, "partition 0: what was read before the seek, then 100..500");
    assert_eq!(seen[1], (0..500).collect::<Vec<u64>>(), "partition 1: every record once, in order");

    // Both partitions are read to their ends: this poll waits out a long
    // poll and sends the next fetch of partition 0, from offset 500. A
    // record committed while that fetch waits is answered to it, but the
    // consumer has meanwhile been sought back to 300: the answer is dropped.
    assert!(consumer.poll().await.expect("poll").is_empty());
    consumer.seek(&tp0, Seek::Offset(300)).await.expect("seek back again");
    let producer = Producer::new(&client);
    producer.send(Record::new("bounded", "0-500").partition(0)).await.expect("send").await.expect("ack");
    producer.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replayed_from = seen[0].len();
    poll_until(&mut consumer, &mut seen, deadline, |seen| seen[0].len() >= replayed_from + 201).await;
    assert_eq!(seen[0][replayed_from..], (300..501).collect::<Vec<u64>>()[..], "partition 0 after the second seek");

    // Assigning again leaves a partition that stays assigned where it was,
    // as Kafka's assign does; one assigned anew starts over.
    assert_eq!(consumer.position(&tp0), Some(501));
    consumer.assign(vec![tp0.clone()]);
    assert_eq!(consumer.assignment(), vec![tp0.clone()]);
    assert_eq!(consumer.position(&tp0), Some(501));
    consumer.assign(vec![tp0.clone(), tp1.clone()]);
    assert_eq!(consumer.position(&tp0), Some(501), "kept through a second assign");
    assert_eq!(consumer.position(&tp1), None, "dropped, then assigned anew: from auto_offset_reset");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_with_callback_reports_each_record_once_with_its_offset() {
    let cluster = cluster(1, |b| b).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("callbacks", 1)).await.expect("create");
    wait_for_leaders(&admin, "callbacks").await;
    let producer = Producer::new(&client);
    let outcomes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    for i in 0..300u32 {
        let outcomes = outcomes.clone();
        producer
            .send_with_callback(Record::new("callbacks", format!("v{i}")).partition(0), move |result| {
                outcomes.lock().expect("lock").push((i, result.map(|meta| meta.offset)));
            })
            .await
            .expect("queued");
    }
    // Every callback has run once the flush returns.
    producer.flush().await;
    let outcomes = std::mem::take(&mut *outcomes.lock().expect("lock"));
    let expected: Vec<(u32, i64)> = (0..300).map(|i| (i, i64::from(i))).collect();
    let got: Vec<(u32, i64)> = outcomes.into_iter().map(|(i, r)| (i, r.expect("acknowledged"))).collect();
    assert_eq!(got, expected, "each record's callback ran once, in order, with its offset");
    // A record that cannot be queued is an error at once, and its callback
    // never runs.
    let called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = called.clone();
    let refused = producer
        .send_with_callback(Record::new("callbacks", "x").partition(7), move |_| {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        })
        .await;
    assert!(refused.is_err(), "partition 7 does not exist");
    producer.close().await;
    assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
    cluster.shutdown().await;
}

/// Tagged records are answered once per batch, to the producer's delivery
/// handler, each with its tag and offset; records sent the other ways in
/// the same batches are answered their own way; a failed batch reports its
/// tagged records' error; a producer without a handler refuses the send.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_tagged_reports_each_batch_once_with_its_records_tags_and_offsets() {
    use std::sync::{Arc, Mutex};
    use strata_client::{DeliveredBatch, ErrorCode};
    let cluster = cluster(1, |b| b).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("tagged", 1).config("max.message.bytes", "40000")).await.expect("create");
    wait_for_leaders(&admin, "tagged").await;
    // (tag, offset, timestamp) per record, and one entry per handler call.
    type Seen = Arc<Mutex<(Vec<(u64, i64, i64)>, Vec<std::result::Result<usize, ErrorCode>>)>>;
    let seen: Seen = Arc::default();
    let handler = {
        let seen = seen.clone();
        move |batch: &DeliveredBatch<'_>| {
            let mut seen = seen.lock().expect("lock");
            assert_eq!((batch.topic, batch.partition), ("tagged", 0));
            let records: Vec<_> = batch.records().collect();
            assert_eq!(records.len(), batch.len());
            seen.0.extend(records.iter().map(|r| (r.tag, r.offset, r.timestamp)));
            seen.1.push(batch.outcome.map(|_| batch.len()).map_err(|e| e.code().expect("an API error")));
        }
    };
    let config = ProducerConfig { linger: Duration::from_millis(20), ..ProducerConfig::default() };
    let producer = Producer::with_delivery_handler(&client, config, handler);
    // 300 tagged records with a future-answered one in the middle: one
    // linger, so they share batches.
    let mut middle = None;
    for i in 0..300u64 {
        let record =
            Record { timestamp: Some(1_000 + i as i64), ..Record::new("tagged", format!("v{i}")).partition(0) };
        producer.send_tagged(record, 7_000 + i).await.expect("queued");
        if i == 149 {
            middle = Some(producer.send(Record::new("tagged", "middle").partition(0)).await.expect("queued"));
        }
    }
    producer.flush().await;
    assert_eq!(middle.expect("sent").await.expect("acknowledged").offset, 150);
    let (records, calls) = std::mem::take(&mut *seen.lock().expect("lock"));
    let expected: Vec<(u64, i64, i64)> =
        (0..300u64).map(|i| (7_000 + i, if i < 150 { i as i64 } else { i as i64 + 1 }, 1_000 + i as i64)).collect();
    assert_eq!(records, expected, "each tagged record reported once, in order, with its offset and timestamp");
    assert!(calls.len() < 300, "reported per batch, not per record: {} calls", calls.len());
    assert_eq!(calls.iter().map(|c| *c.as_ref().expect("acknowledged")).sum::<usize>(), 300);
    // A batch the broker refuses: its tagged record is reported failed.
    producer.send_tagged(Record::new("tagged", vec![b'v'; 50_000]).partition(0), 42).await.expect("queued");
    producer.flush().await;
    let (records, calls) = std::mem::take(&mut *seen.lock().expect("lock"));
    assert_eq!(records.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(), vec![(42, -1)]);
    assert_eq!(calls, vec![Err(ErrorCode::MessageTooLarge)]);
    producer.close().await;
    // Without a handler a tagged send is refused at once.
    let plain = Producer::new(&client);
    assert!(plain.send_tagged(Record::new("tagged", "x").partition(0), 1).await.is_err());
    plain.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_callback_does_not_stop_the_partition_or_lose_the_records_after_it() {
    // A callback is user code run on the producer's partition task; Kafka
    // logs an exception thrown there and carries on.
    let cluster = cluster(1, |b| b).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("panics", 1)).await.expect("create");
    wait_for_leaders(&admin, "panics").await;
    let producer = Producer::new(&client);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    for i in 0..20i64 {
        let seen = seen.clone();
        producer
            .send_with_callback(Record::new("panics", format!("v{i}")).partition(0), move |result| {
                let offset = result.expect("acknowledged").offset;
                assert!(offset % 7 != 3, "a callback that panics at offset {offset}");
                seen.lock().expect("lock").push(offset);
            })
            .await
            .expect("queued");
    }
    producer.flush().await;
    let later = producer.send(Record::new("panics", "after").partition(0)).await.expect("queued");
    let meta = tokio::time::timeout(std::time::Duration::from_secs(10), later)
        .await
        .expect("the partition still answers")
        .expect("acknowledged");
    assert_eq!(meta.offset, 20);
    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    let expected: Vec<i64> = (0..20).filter(|o| o % 7 != 3).collect();
    assert_eq!(seen, expected, "every other callback ran, in order");
    producer.close().await;
    cluster.shutdown().await;
}

/// With `linger` zero a batch is sealed as soon as its partition's task gets
/// to it, holding whatever was queued by then (up to the batch size): no
/// record waits for a timer, and none is lost, doubled or reordered on the
/// way, flushes and close included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zero_linger_producer_batches_what_is_queued_and_keeps_every_record_in_order() {
    let cluster = cluster(1, |b| b).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("nolinger", 1)).await.expect("create");
    wait_for_leaders(&admin, "nolinger").await;
    let tp = TopicPartition::new("nolinger", 0);
    let config = ProducerConfig { linger: Duration::ZERO, batch_size: 4096, ..ProducerConfig::default() };
    let producer = Producer::with_config(&client, config);
    let mut deliveries = Vec::new();
    for i in 0..3000 {
        deliveries.push(producer.send(Record::new("nolinger", format!("r{i:05}")).partition(0)).await.expect("send"));
        if i % 1000 == 999 {
            producer.flush().await;
        }
    }
    for (i, delivery) in deliveries.into_iter().enumerate() {
        assert_eq!(delivery.await.expect("acknowledged").offset, i as i64, "offsets follow the send order");
    }
    // A last record sent alone is not held back for want of company.
    let last = producer.send(Record::new("nolinger", "r03000").partition(0)).await.expect("send");
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), last).await.expect("sent").expect("acked").offset, 3000);
    let metrics = producer.metrics();
    producer.close().await;
    assert_eq!(metrics.records_sent, 3001);
    assert!(
        metrics.batches_sent < 3001,
        "records queued while a batch was on the wire shared batches ({} batches for 3001 records)",
        metrics.batches_sent
    );
    let expected: Vec<String> = (0..3001).map(|i| format!("r{i:05}")).collect();
    assert_eq!(read_all(&client, &tp, 3001).await, expected);
    cluster.shutdown().await;
}

/// A batch whose linger is over while the in-flight window is full stays
/// open and gathers the records that come meanwhile, as Kafka's does. The
/// leader's AppendEntries are delayed (up to 40 ms each), so each acks=all
/// round trip takes milliseconds: records sent 200 µs apart behind one batch
/// in flight go out in a few batches, not one batch each, and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_held_back_by_a_full_window_gathers_the_records_that_come_meanwhile() {
    const N: usize = 200;
    let cluster = cluster(3, |b| b).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("window", 1).replication_factor(3)).await.expect("create");
    wait_for_leaders(&admin, "window").await;
    let leader = admin.describe_topic("window").await.expect("describe").partitions[0].leader.expect("leader");
    let faults = cluster.servers[(leader - 1) as usize].cluster().raft_node().faults();
    let slow = FaultRates { delay_pct: 100, delay_max: Duration::from_millis(40), ..FaultRates::default() };
    faults.set_rates(slow, 7);
    let tp = TopicPartition::new("window", 0);
    let config =
        ProducerConfig { linger: Duration::ZERO, batch_size: 1 << 20, max_in_flight: 1, ..ProducerConfig::default() };
    let producer = Producer::with_config(&client, config);
    let topic: std::sync::Arc<str> = "window".into();
    let mut deliveries = Vec::new();
    for i in 0..N {
        let record = Record::new(topic.clone(), format!("w{i:05}")).partition(0);
        deliveries.push(producer.send(record).await.expect("send"));
        // Shorter than tokio's timer tick, so spun.
        let sent = Instant::now();
        while sent.elapsed() < Duration::from_micros(200) {
            std::hint::spin_loop();
        }
    }
    for (i, delivery) in deliveries.into_iter().enumerate() {
        assert_eq!(delivery.await.expect("acknowledged").offset, i as i64, "offsets follow the send order");
    }
    let metrics = producer.metrics();
    producer.close().await;
    assert!(faults.n_injected() > 0, "no AppendEntries was delayed");
    faults.heal();
    assert_eq!(metrics.records_sent, N as u64);
    assert!(
        metrics.batches_sent <= 20,
        "{N} records sent 200 µs apart behind one slow batch in flight went out in {} batches",
        metrics.batches_sent
    );
    let expected: Vec<String> = (0..N).map(|i| format!("w{i:05}")).collect();
    assert_eq!(read_all(&client, &tp, N).await, expected);
    cluster.shutdown().await;
}

/// Batches of many partitions led by one broker share produce requests:
/// with one request in flight per broker, the batches sealed meanwhile go
/// out together in the next one (several of a partition among them), and
/// every partition still gets its records once each, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_of_partitions_led_by_one_broker_share_requests_and_keep_their_order() {
    const PARTITIONS: u32 = 8;
    const N: usize = 4000;
    let cluster = cluster(1, |b| b).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("shared", PARTITIONS)).await.expect("create");
    wait_for_leaders(&admin, "shared").await;
    let config =
        ProducerConfig { linger: Duration::ZERO, batch_size: 2048, max_in_flight: 1, ..ProducerConfig::default() };
    let producer = Producer::with_config(&client, config);
    let topic: std::sync::Arc<str> = "shared".into();
    let mut deliveries = Vec::new();
    for i in 0..N {
        let partition = i as u32 % PARTITIONS;
        let record = Record::new(topic.clone(), format!("s{i:05}")).partition(partition);
        deliveries.push((partition, producer.send(record).await.expect("send")));
    }
    let mut next = vec![0i64; PARTITIONS as usize];
    for (partition, delivery) in deliveries {
        let metadata = delivery.await.expect("acknowledged");
        assert_eq!(metadata.partition, partition);
        assert_eq!(metadata.offset, next[partition as usize], "offsets follow the send order");
        next[partition as usize] += 1;
    }
    let metrics = producer.metrics();
    producer.close().await;
    assert_eq!(metrics.records_sent, N as u64);
    assert!(
        metrics.produce_requests < metrics.batches_sent,
        "{} batches went out in {} requests",
        metrics.batches_sent,
        metrics.produce_requests
    );
    for partition in [0, PARTITIONS - 1] {
        let expected: Vec<String> =
            (0..N).filter(|i| *i as u32 % PARTITIONS == partition).map(|i| format!("s{i:05}")).collect();
        let tp = TopicPartition::new("shared", partition);
        assert_eq!(read_all(&client, &tp, expected.len()).await, expected);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_to_a_topic_not_known_yet_waits_for_its_metadata() {
    let cluster = cluster(1, |b| b).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    let producer = Producer::new(&client);
    // The record is sent before the topic exists; the topic appears a
    // little later, as it does on a broker whose copy of the metadata
    // trails the controller's.
    let send = tokio::spawn({
        let producer = producer.clone();
        async move { producer.send(Record::new("late", "first")).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!send.is_finished(), "send gave up on a topic that is not there yet");
    admin.create_topic(NewTopic::new("late", 1)).await.expect("create");
    let delivery = send.await.expect("task").expect("queued once the topic is known");
    let meta = delivery.await.expect("acknowledged");
    assert_eq!((meta.partition, meta.offset), (0, 0));
    // A topic that never appears fails after max.block.
    let quick = Producer::with_config(
        &client,
        ProducerConfig { max_block: Duration::from_millis(300), ..ProducerConfig::default() },
    );
    let started = Instant::now();
    let refused = quick.send(Record::new("never", "x")).await;
    assert!(refused.is_err(), "no topic named never");
    assert!(started.elapsed() >= Duration::from_millis(100), "it asked again before failing");
    producer.close().await;
}
