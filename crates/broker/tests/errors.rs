//! Every error code of the client API is provoked and answered typed, with
//! its retriable flag, and bad input leaves stored data untouched.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{cluster, wait_for_leaders};
use strata_batch::{BatchBuilder, Compression};
use strata_client::{Admin, Client, ErrorCode, NewTopic, Producer, Record};
use strata_proto::api as pb;
use strata_proto::api::strata_client::StrataClient;
use tonic::transport::Channel;

async fn stub(addr: &str) -> StrataClient<Channel> {
    StrataClient::connect(format!("http://{addr}")).await.expect("connect").max_encoding_message_size(usize::MAX)
}

fn batch(value_len: usize) -> Bytes {
    let mut b = BatchBuilder::new();
    b.push(1, Some(b"k"), Some(&vec![b'v'; value_len]), &[]);
    b.build(Compression::None)
}

fn idempotent_batch(producer_id: i64, epoch: i16, seq: i32) -> Bytes {
    let mut b = BatchBuilder::new().producer(producer_id, epoch, seq);
    b.push(1, None, Some(b"x"), &[]);
    b.build(Compression::None)
}

async fn produce_raw(
    addr: &str,
    topic: &str,
    partition: u32,
    batch: Bytes,
    timeout_ms: u32,
) -> Result<pb::PartitionProduceResult, pb::Error> {
    try_produce_raw(addr, topic, partition, batch, timeout_ms).await.expect("rpc")
}

/// A produce whose call itself may fail: a broker still catching up with
/// the cluster metadata answers the call with UNAVAILABLE.
async fn try_produce_raw(
    addr: &str,
    topic: &str,
    partition: u32,
    batch: Bytes,
    timeout_ms: u32,
) -> Result<Result<pb::PartitionProduceResult, pb::Error>, tonic::Status> {
    let request = pb::ProduceRequest {
        acks: pb::Acks::All.into(),
        timeout_ms,
        partitions: vec![pb::PartitionRecords { topic: topic.into(), partition, batch }],
    };
    let response = stub(addr).await.produce(request).await?.into_inner();
    if let Some(e) = response.error {
        return Ok(Err(e));
    }
    let result = response.partitions.into_iter().next().expect("one result");
    Ok(match result.error.clone() {
        Some(e) if e.code() != pb::ErrorCode::None => Err(e),
        _ => Ok(result),
    })
}

fn expect_code(
    result: Result<pb::PartitionProduceResult, pb::Error>,
    code: pb::ErrorCode,
    retriable: bool,
) -> pb::Error {
    let error = result.expect_err("an error");
    assert_eq!(error.code(), code, "{error:?}");
    assert_eq!(error.retriable, retriable, "{error:?}");
    error
}

async fn leader_and_follower(admin: &Admin, topic: &str) -> (u64, u64) {
    wait_for_leaders(admin, topic).await;
    let p = admin.describe_topic(topic).await.expect("describe").partitions.remove(0);
    let leader = p.leader.expect("leader");
    let follower = *p.replicas.iter().find(|r| **r != leader).expect("a follower");
    (leader, follower)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_error_code_is_provoked_and_answered_typed() {
    let cluster = cluster(3, |b| {
        b.set("limits.produce_memory_bytes", "1 MiB").and_then(|b| b.set("limits.request_bytes", "4 MiB")).expect("set")
    })
    .await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin
        .create_topic(NewTopic::new("t", 1).replication_factor(3).config("max.message.bytes", "2000"))
        .await
        .expect("create");
    // (A leader just elected may still lose its term once, and a broker may
    // still be catching up with the metadata that names the topic: ask
    // again until the leader writes and the follower answers.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let (leader, follower) = loop {
        let (leader, follower) = leader_and_follower(&admin, "t").await;
        let written = try_produce_raw(&cluster.addr(leader), "t", 0, batch(10), 0).await;
        let answered = try_produce_raw(&cluster.addr(follower), "t", 0, batch(10), 0).await;
        match (written, answered) {
            (Ok(Ok(_)), Ok(_)) => break (leader, follower),
            (Err(status), _) | (_, Err(status)) => assert!(
                status.code() == tonic::Code::Unavailable && std::time::Instant::now() < deadline,
                "a broker does not answer: {status:?}"
            ),
            (Ok(Err(e)), _) => assert!(std::time::Instant::now() < deadline, "a good batch is not written: {e:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let (leader_addr, follower_addr) = (cluster.addr(leader), cluster.addr(follower));

    // NOT_LEADER, naming the leader.
    let e = expect_code(produce_raw(&follower_addr, "t", 0, batch(10), 0).await, pb::ErrorCode::NotLeader, true);
    assert_eq!((e.leader_id, e.leader_address.as_str()), (Some(leader), leader_addr.as_str()));
    // UNKNOWN_TOPIC, UNKNOWN_PARTITION: retriable, as in Kafka (metadata
    // on a just-restarted broker may be behind).
    expect_code(produce_raw(&leader_addr, "nope", 0, batch(10), 0).await, pb::ErrorCode::UnknownTopic, true);
    expect_code(produce_raw(&leader_addr, "t", 7, batch(10), 0).await, pb::ErrorCode::UnknownPartition, true);
    // MESSAGE_TOO_LARGE, raw and through the producer.
    expect_code(produce_raw(&leader_addr, "t", 0, batch(3000), 0).await, pb::ErrorCode::MessageTooLarge, false);
    let producer = Producer::new(&client);
    let delivery = producer.send(Record::new("t", vec![b'v'; 3000])).await.expect("queued").await;
    assert_eq!(delivery.expect_err("too large").code(), Some(ErrorCode::MessageTooLarge));
    // CORRUPT_BATCH: a flipped byte, and trailing bytes after a batch.
    let mut damaged = batch(10).to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    expect_code(produce_raw(&leader_addr, "t", 0, Bytes::from(damaged), 0).await, pb::ErrorCode::CorruptBatch, false);
    let mut two = batch(10).to_vec();
    two.extend_from_slice(&batch(10));
    expect_code(produce_raw(&leader_addr, "t", 0, Bytes::from(two), 0).await, pb::ErrorCode::CorruptBatch, false);
    expect_code(
        produce_raw(&leader_addr, "t", 0, Bytes::from_static(b"junk"), 0).await,
        pb::ErrorCode::CorruptBatch,
        false,
    );
    // OUT_OF_ORDER_SEQUENCE, then PRODUCER_FENCED.
    produce_raw(&leader_addr, "t", 0, idempotent_batch(4242, 0, 0), 0).await.expect("first batch");
    expect_code(
        produce_raw(&leader_addr, "t", 0, idempotent_batch(4242, 0, 7), 0).await,
        pb::ErrorCode::OutOfOrderSequence,
        false,
    );
    produce_raw(&leader_addr, "t", 0, idempotent_batch(4242, 1, 0), 0).await.expect("a new epoch starts at 0");
    expect_code(
        produce_raw(&leader_addr, "t", 0, idempotent_batch(4242, 0, 1), 0).await,
        pb::ErrorCode::ProducerFenced,
        false,
    );
    // Nothing refused was stored: 3 records (the good batch, two idempotent).
    // A follower answering the describe learns the last commit a few
    // milliseconds after the leader (its notice may wait for the next
    // append), so wait until it has caught up to the 3, then look: a refused
    // batch stored would have been committed before its refusal was sent.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let high_watermark = loop {
        let description = admin.describe_topic("t").await.expect("describe");
        let high_watermark = description.partitions[0].high_watermark;
        if high_watermark >= 3 || std::time::Instant::now() >= deadline {
            break high_watermark;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(high_watermark, 3);

    // OFFSET_OUT_OF_RANGE, raw and through a consumer that may not reset.
    let fetch = pb::FetchRequest {
        partitions: vec![pb::PartitionFetch { topic: "t".into(), partition: 0, offset: 1_000, max_bytes: 0 }],
        ..Default::default()
    };
    let answer = stub(&leader_addr).await.fetch(fetch).await.expect("rpc").into_inner();
    let error = answer.partitions[0].error.clone().expect("an error");
    assert_eq!((error.code(), error.retriable), (pb::ErrorCode::OffsetOutOfRange, false));
    let config =
        strata_client::ConsumerConfig { auto_offset_reset: strata_client::OffsetReset::Error, ..Default::default() };
    let mut consumer = strata_client::Consumer::with_config(&client, config);
    let tp = strata_client::TopicPartition::new("t", 0);
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, strata_client::Seek::Offset(1_000)).await.expect("seek");
    assert_eq!(consumer.poll().await.expect_err("out of range").code(), Some(ErrorCode::OffsetOutOfRange));

    // Admin: INVALID_CONFIG, TOPIC_ALREADY_EXISTS, INVALID_REQUEST.
    let bad = admin.create_topic(NewTopic::new("u", 1).config("segment.bytes", "10")).await.expect_err("bad config");
    assert_eq!(bad.code(), Some(ErrorCode::InvalidConfig));
    assert!(bad.to_string().contains("segment.bytes"), "{bad}");
    let again = admin.create_topic(NewTopic::new("t", 1)).await.expect_err("exists");
    assert_eq!(again.code(), Some(ErrorCode::TopicAlreadyExists));
    for bad in [NewTopic::new("u", 0), NewTopic::new("u", 1).replication_factor(5), NewTopic::new("bad name", 1)] {
        let e = admin.create_topic(bad).await.expect_err("invalid");
        assert_eq!(e.code(), Some(ErrorCode::InvalidRequest), "{e}");
    }

    // REQUEST_TOO_LARGE: above limits.request_bytes (4 MiB).
    admin
        .create_topic(NewTopic::new("big", 1).replication_factor(3).config("max.message.bytes", "8000000"))
        .await
        .expect("create");
    let (big_leader, _) = leader_and_follower(&admin, "big").await;
    let huge = producer.send(Record::new("big", vec![b'v'; 5 << 20])).await.expect("queued").await;
    assert_eq!(huge.expect_err("too large").code(), Some(ErrorCode::RequestTooLarge));

    // TIMEOUT and THROTTLED: the leader cut off from its followers cannot
    // commit; one 700 KiB request holds most of the 1 MiB produce budget.
    // Its timeout (800 ms) ends before the followers can elect a new leader
    // (election timeout >= 1 s), which would end it with a leader change
    // instead.
    let big_leader_addr = cluster.addr(big_leader);
    let faults = cluster.servers[(big_leader - 1) as usize].cluster().raft_node().faults();
    for peer in 1..=3 {
        if peer != big_leader {
            faults.isolate(peer);
        }
    }
    let holder = {
        let addr = big_leader_addr.clone();
        tokio::spawn(async move { produce_raw(&addr, "big", 0, batch(700 * 1024), 800).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let throttled = produce_raw(&big_leader_addr, "big", 0, batch(700 * 1024), 3000).await;
    let e = expect_code(throttled, pb::ErrorCode::Throttled, true);
    assert!(e.retry_after_ms > 0, "{e:?}");
    expect_code(holder.await.expect("task"), pb::ErrorCode::Timeout, true);
    faults.heal();

    // UNAVAILABLE: the controller's leader crashed and a second node is
    // gone: the survivor has no leader to forward the change to.
    let controller = admin.describe_cluster().await.expect("cluster").controller.expect("controller");
    let survivor = (1..=3).find(|id| *id != controller).expect("a survivor");
    for (i, server) in cluster.servers.iter().enumerate() {
        if i as u64 + 1 != survivor {
            server.halt().await;
        }
    }
    let lonely = Admin::new(&Client::new(&cluster.addr(survivor)).expect("client"));
    let e = lonely.create_topic(NewTopic::new("later", 1).replication_factor(1)).await.expect_err("no quorum");
    assert_eq!(e.code(), Some(ErrorCode::Unavailable), "{e}");
    assert!(e.is_retriable());
    cluster.servers[(survivor - 1) as usize].shutdown().await;
}
