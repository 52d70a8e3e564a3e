//! Produce with each acks level and fetch's long poll behave as the API
//! says: acks=all answers with offsets once committed, acks=leader and
//! acks=none answer at once (offset -1) and the records still arrive, and a
//! fetch waiting for data returns as soon as a record is committed.

mod common;

use std::time::{Duration, Instant};

use common::{cluster, wait_for_leaders};
use strata_client::{Acks, Admin, Client, Consumer, NewTopic, Producer, ProducerConfig, Record, Seek, TopicPartition};

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
        for i in 0..10 {
            deliveries
                .push(producer.send(Record::new("acks", format!("{label}-{i}")).partition(0)).await.expect("send"));
        }
        for (i, delivery) in deliveries.into_iter().enumerate() {
            let meta = delivery.await.expect("acknowledged");
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
