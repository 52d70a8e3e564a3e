//! A consumer whose first replica is down, and whose brokers cannot name the
//! leader, still finds it. This is the chaos harness's finding 2 (run 11,
//! seed 7777), as a regression test.
//!
//! The setup: 4 brokers; a partition on 3 of them; its first replica
//! crashed; the consumer bootstrapped with that broker and the one broker
//! holding no replica, so neither can say for sure who leads (the outsider
//! knows only the last leader reported to the controller, which may be the
//! crashed one). Before the fix, every poll asked the first replica again
//! and read nothing, forever.

mod common;

use std::time::{Duration, Instant};

use common::cluster;
use strata_client::{Admin, Client, Consumer, NewTopic, Producer, Record, Seek, TopicPartition};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_finds_the_leader_when_its_first_replica_is_down_and_no_broker_names_it() {
    let mut cluster = cluster(4, |b| b).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("orphan", 1).replication_factor(3)).await.expect("create");
    common::wait_for_leaders(&admin, "orphan").await;
    let replicas = admin.describe_topic("orphan").await.expect("describe").partitions[0].replicas.clone();
    let first = replicas[0];
    let outsider = (1..=4).find(|id| !replicas.contains(id)).expect("a broker without a replica");

    let producer = Producer::new(&client);
    for i in 0..10 {
        producer.send(Record::new("orphan", format!("v{i}")).partition(0)).await.expect("send").await.expect("ack");
    }
    producer.close().await;

    cluster.servers[(first - 1) as usize].halt().await;
    // The survivors elect a leader (asked through one of them).
    let survivor = Client::new(&cluster.addr(replicas[1])).expect("client");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let described = Admin::new(&survivor).describe_topic("orphan").await;
        if described.is_ok_and(|t| t.partitions[0].leader.is_some_and(|l| l != first)) {
            break;
        }
        assert!(Instant::now() < deadline, "no new leader after broker {first} crashed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let bootstrap = format!("{},{}", cluster.addr(first), cluster.addr(outsider));
    let client = Client::new(&bootstrap).expect("client");
    let mut consumer = Consumer::new(&client);
    let tp = TopicPartition::new("orphan", 0);
    consumer.assign(vec![tp.clone()]);
    // The crashed broker may have led the controller: until a new one is
    // elected the others answer "catching up, try another", as a client
    // would, keep trying.
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(err) = consumer.seek(&tp, Seek::Beginning).await {
        assert!(Instant::now() < deadline, "seek: {err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while values.len() < 10 {
        assert!(
            Instant::now() < deadline,
            "read {} of 10 records in 15 s: stuck on the crashed first replica (broker {first})",
            values.len()
        );
        for record in consumer.poll().await.expect("poll") {
            values.push(String::from_utf8(record.value.expect("value").to_vec()).expect("utf8"));
        }
    }
    assert_eq!(values, (0..10).map(|i| format!("v{i}")).collect::<Vec<_>>());
    cluster.restart(first).await;
    cluster.shutdown().await;
}

/// A new idempotent producer needs a producer id from the controller. Asked
/// while the controller's leader is down (before the others elect a new
/// one), the id request failed at once and took the first records with it;
/// it is now retried like a batch (found by the retention test in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_producer_gets_its_id_while_the_controller_elects_a_leader() {
    let cluster = cluster(3, |b| b).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("pid", 1).replication_factor(3)).await.expect("create");
    common::wait_for_leaders(&admin, "pid").await;
    let controller = admin.describe_cluster().await.expect("describe cluster").controller.expect("a controller");
    cluster.servers[(controller - 1) as usize].halt().await;
    let others: Vec<String> = (1..=3).filter(|id| *id != controller).map(|id| cluster.addr(id)).collect();
    let survivors = Client::new(&others.join(",")).expect("client");
    let producer = Producer::new(&survivors);
    let delivery = producer.send(Record::new("pid", "first").partition(0)).await.expect("send");
    let meta = tokio::time::timeout(Duration::from_secs(60), delivery)
        .await
        .expect("acknowledged within a minute")
        .expect("acknowledged, not failed for want of a producer id");
    assert_eq!(meta.offset, 0);
    producer.close().await;
    cluster.shutdown().await;
}
