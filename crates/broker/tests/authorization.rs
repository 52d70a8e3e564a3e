//! `authorization.enabled`: every request is checked against the cluster's
//! access control bindings, the principal being `User:` and the CN of the
//! client's certificate. A client is refused what no binding allows (and
//! what a binding denies), sees only the topics it may describe, and gets
//! what it was allowed as soon as the binding is made, on every broker;
//! super users may do everything.

mod common;

use std::time::Duration;

use common::{cluster, tls_as, wait_for_leaders, with_tls};
use strata_client::{
    AclBinding, AclFilter, Admin, Client, Consumer, ConsumerConfig, ErrorCode, NewTopic, OffsetReset, Producer, Record,
    Seek, TopicPartition,
};

fn refused<T: std::fmt::Debug>(result: strata_client::Result<T>, what: &str) {
    match result {
        Err(err) => assert_eq!(err.code(), Some(ErrorCode::NotAuthorized), "{what}: {err}"),
        Ok(value) => panic!("{what} was allowed: {value:?}"),
    }
}

/// Sends one record and waits for its acknowledgement.
async fn send(client: &Client, topic: &str, value: &str) -> strata_client::Result<i64> {
    let producer = Producer::new(client);
    let result = match producer.send(Record::new(topic, value.to_string()).partition(0)).await {
        Ok(delivery) => delivery.await.map(|meta| meta.offset),
        Err(err) => Err(err),
    };
    producer.close().await;
    result
}

/// Polls `topic`'s partition 0 from the start until a record or an error.
async fn read_first(client: &Client, topic: &str) -> strata_client::Result<String> {
    let mut consumer = Consumer::new(client);
    let tp = TopicPartition::new(topic, 0);
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, Seek::Beginning).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(record) = consumer.poll().await?.into_iter().next() {
            return Ok(String::from_utf8(record.value.expect("value").to_vec()).expect("utf8"));
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing to read in {topic}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_are_allowed_only_as_the_bindings_say_on_every_broker() {
    let cluster = cluster(3, |b| {
        with_tls(b)
            .set("authorization.enabled", "true")
            .and_then(|b| b.set("authorization.super_users", "User:strata-client"))
            .expect("authorization")
    })
    .await;
    let connect = |name: &str| Client::with_tls(&cluster.bootstrap, tls_as(name)).expect("client");
    let admin = Admin::new(&connect("client"));
    for topic in ["orders", "secret"] {
        admin.create_topic(NewTopic::new(topic, 1).replication_factor(3)).await.expect("a super user creates");
        wait_for_leaders(&admin, topic).await;
    }
    assert_eq!(send(&connect("client"), "secret", "s0").await.expect("a super user writes"), 0);

    // No binding: alice may do nothing, and sees no topic.
    let alice = connect("alice");
    let alice_admin = Admin::new(&alice);
    refused(send(&alice, "orders", "o0").await, "a write without a binding");
    refused(read_first(&alice, "secret").await, "a read without a binding");
    assert_eq!(alice_admin.list_topics().await.expect("list"), Vec::<String>::new());
    refused(alice_admin.create_topic(NewTopic::new("mine", 1).replication_factor(1)).await, "create");
    refused(alice_admin.delete_topic("orders").await, "delete");
    refused(alice_admin.create_acls(vec![AclBinding::allow("User:alice", "all", "topic", "*")]).await, "self-grant");

    // Bindings made through one broker hold on every broker.
    admin
        .create_acls(vec![
            AclBinding::allow("User:alice", "write", "topic", "orders"),
            AclBinding::allow("User:alice", "read", "topic", "ord").prefixed(),
            AclBinding::allow("User:alice", "read", "group", "billing"),
        ])
        .await
        .expect("a super user makes bindings");
    // Each broker applies the change from the controller's log, a moment
    // after the one that took it.
    for id in 1..=3 {
        let via = Admin::new(&Client::with_tls(&cluster.addr(id), tls_as("alice")).expect("client"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while via.list_topics().await.expect("list") != vec!["orders"] {
            assert!(tokio::time::Instant::now() < deadline, "broker {id} never applied the bindings");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let offset = send(&alice, "orders", "o1").await.expect("allowed to write orders");
    assert_eq!(offset, 0);
    assert_eq!(read_first(&alice, "orders").await.expect("allowed to read orders by prefix"), "o1");
    refused(send(&alice, "secret", "s1").await, "a write to another topic");
    refused(read_first(&alice, "secret").await, "a read of another topic");
    refused(alice_admin.describe_topic("secret").await, "describing another topic");
    alice_admin.describe_topic("orders").await.expect("read implies describe");

    // A group she may read: she joins, reads and commits.
    let config = ConsumerConfig {
        group_id: Some("billing".into()),
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut member = Consumer::with_config(&alice, config.clone());
    member.subscribe(vec!["orders".into()]).expect("subscribe");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the group member read nothing");
        got = member.poll().await.expect("poll as a group member");
    }
    member.commit().await.expect("commit");
    member.close().await.expect("leave the group");
    // A group she may not read, and a topic she may not see in hers.
    for (group, topic, refused_resource) in [("audit", "orders", "group audit"), ("billing", "secret", "topic secret")]
    {
        let config = ConsumerConfig { group_id: Some(group.into()), ..config.clone() };
        let mut member = Consumer::with_config(&alice, config);
        member.subscribe(vec![topic.into()]).expect("subscribe");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let refusal = loop {
            match member.poll().await {
                Ok(records) => assert!(records.is_empty(), "{group}/{topic}: read what it may not"),
                Err(err) => break err,
            }
            assert!(tokio::time::Instant::now() < deadline, "{group}/{topic}: never told it may not join");
        };
        assert_eq!(refusal.code(), Some(ErrorCode::NotAuthorized), "{refusal}");
        assert!(refusal.to_string().contains(refused_resource), "names what was refused: {refusal}");
    }

    // Bob may read everything but one topic: a deny wins.
    admin
        .create_acls(vec![
            AclBinding::allow("User:bob", "read", "topic", "*"),
            AclBinding::allow("User:bob", "read", "topic", "secret").deny(),
        ])
        .await
        .expect("bindings");
    let bob = connect("bob");
    assert_eq!(read_first(&bob, "orders").await.expect("bob reads orders"), "o1");
    refused(read_first(&bob, "secret").await, "a denied read");

    let listed = admin.describe_acls(AclFilter::default()).await.expect("describe");
    assert_eq!(listed.len(), 5, "{listed:?}");
    assert!(listed.iter().all(|a| a.principal == "User:alice" || a.principal == "User:bob"));
    refused(alice_admin.describe_acls(AclFilter::default()).await, "describing the bindings");
    let bad = admin.create_acls(vec![AclBinding::allow("alice", "reed", "topic", "orders")]).await;
    assert_eq!(bad.expect_err("bad words").code(), Some(ErrorCode::InvalidRequest));

    // Removed: refused again.
    let filter = AclFilter { principal: Some("User:alice".into()), ..AclFilter::default() };
    assert_eq!(admin.delete_acls(filter).await.expect("delete").len(), 3);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match send(&alice, "orders", "o2").await {
            Err(err) if err.code() == Some(ErrorCode::NotAuthorized) => break,
            other => assert!(tokio::time::Instant::now() < deadline, "still allowed after removal: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.shutdown().await;
}

#[test]
fn authorization_needs_client_certificates_and_a_tls_peer_port() {
    let err = strata_broker::ConfigBuilder::new()
        .set("authorization.enabled", "true")
        .expect("set")
        .build()
        .expect_err("no client certificates");
    assert!(err.to_string().contains("tls.client_ca_file"), "{err}");
    let err = strata_broker::ConfigBuilder::new()
        .set("authorization.super_users", "admin")
        .expect("set")
        .build()
        .expect_err("not User:NAME");
    assert!(err.to_string().contains("User:NAME"), "{err}");
    let err = strata_broker::ConfigBuilder::new()
        .set("authorization.super_users", "User:*")
        .expect("set")
        .build()
        .expect_err("everyone a super user");
    assert!(err.to_string().contains("everyone"), "{err}");
    let client_tls_only = |b: strata_broker::ConfigBuilder| {
        b.set("tls.cert_file", common::tls_file("node.crt"))
            .and_then(|b| b.set("tls.key_file", common::tls_file("node.key")))
            .and_then(|b| b.set("tls.client_ca_file", common::tls_file("client-ca.crt")))
            .expect("set")
    };
    let err = client_tls_only(strata_broker::ConfigBuilder::new())
        .set("authorization.enabled", "true")
        .expect("set")
        .build()
        .expect_err("a plain peer port");
    assert!(err.to_string().contains("tls.peer_ca_file"), "{err}");
    let err = client_tls_only(strata_broker::ConfigBuilder::new())
        .set("tls.peer_ca_file", common::tls_file("client-ca.crt"))
        .expect("set")
        .build()
        .expect_err("one authority for clients and nodes");
    assert!(err.to_string().contains("same authority"), "{err}");
}
