//! Moving a partition to other brokers through the Admin API (what
//! `strata topic reassign` calls): the new replica catches up with every
//! record, the dropped one goes away, consumers read everything from the
//! new set, and bad replica sets are refused naming the problem.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster;
use strata_client::{Admin, Client, Consumer, ErrorCode, NewTopic, Producer, Record, Seek, TopicPartition};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reassigned_partition_moves_with_all_its_records() {
    let cluster = cluster(3, |b| b).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("moving", 1).replication_factor(2)).await.expect("create");
    common::wait_for_leaders(&admin, "moving").await;
    let before = admin.describe_topic("moving").await.expect("describe").partitions[0].replicas.clone();
    let newcomer = (1..=3).find(|id| !before.contains(id)).expect("a broker without a replica");
    let (kept, dropped) = (before[0], before[1]);

    let producer = Producer::new(&client);
    let mut deliveries = Vec::new();
    for i in 0..100 {
        deliveries.push(producer.send(Record::new("moving", format!("r{i}")).partition(0)).await.expect("send"));
    }
    for d in deliveries {
        d.await.expect("acknowledged");
    }
    producer.close().await;

    // Bad replica sets are refused before anything changes.
    for (replicas, why) in [(vec![kept, kept], "twice"), (vec![kept, 9], "not registered"), (vec![], "at least one")] {
        let err = admin.reassign_partition("moving", 0, replicas.clone()).await.expect_err("a bad replica set");
        assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{replicas:?}: {err}");
        assert!(err.to_string().contains(why), "{replicas:?}: {err}");
    }
    let err = admin.reassign_partition("moving", 5, vec![kept]).await.expect_err("no partition 5");
    assert_eq!(err.code(), Some(ErrorCode::UnknownPartition), "{err}");

    admin.reassign_partition("moving", 0, vec![newcomer, kept]).await.expect("reassign");
    let wanted: BTreeSet<u64> = [newcomer, kept].into();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replicas = admin.describe_replicas("moving").await.expect("describe replicas");
        let holders: BTreeSet<u64> = replicas.iter().map(|r| r.broker).collect();
        let newcomer_end = replicas.iter().find(|r| r.broker == newcomer).map(|r| r.log_end_offset);
        let described = admin.describe_topic("moving").await.expect("describe").partitions[0].clone();
        let leader_ok = replicas.iter().any(|r| r.is_leader && wanted.contains(&r.broker));
        if holders == wanted && newcomer_end == Some(100) && leader_ok {
            assert_eq!(described.replicas.iter().copied().collect::<BTreeSet<u64>>(), wanted);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the move to {wanted:?} (dropping {dropped}) did not finish: replicas {replicas:?}, described {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every record is read back from the new replica set.
    let tp = TopicPartition::new("moving", 0);
    let mut consumer = Consumer::new(&client);
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, Seek::Beginning).await.expect("seek");
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while values.len() < 100 {
        assert!(Instant::now() < deadline, "only {} of 100 records after the move", values.len());
        for record in consumer.poll().await.expect("poll") {
            values.push(String::from_utf8(record.value.expect("value").to_vec()).expect("utf8"));
        }
    }
    let expected: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
    assert_eq!(values, expected);
    cluster.shutdown().await;
}
