//! TLS on a node's ports (`tls.*`): a cluster whose client and peer ports
//! both speak mutual TLS replicates and serves clients that present a
//! certificate of its authority, and refuses, at the handshake, plain
//! clients, clients without a certificate, clients of another authority,
//! and clients that do not trust the node's authority. Bad TLS files stop
//! a node before it starts, with an error that names them.

mod common;

use std::time::{Duration, Instant};

use common::{TempDir, client_tls, cluster, tls_file, wait_for_leaders, with_tls};
use strata_broker::{ConfigBuilder, Server, ServerError};
use strata_client::{Admin, Client, Consumer, Error, NewTopic, Producer, Record, Seek, Tls, TopicPartition};

fn read(name: &str) -> Vec<u8> {
    std::fs::read(tls_file(name)).expect("read test certificate")
}

/// What asking `client` for the cluster's description fails with.
async fn refusal(client: Client) -> String {
    match Admin::new(&client).describe_cluster().await {
        Ok(_) => panic!("the node answered a client it should have refused"),
        Err(err) => {
            // A handshake refused says so and is not retried; a client
            // still writing when refused sees only a closed connection.
            assert!(
                matches!(&err, Error::Transport(_))
                    || matches!(&err, Error::Invalid(m) if m.starts_with("TLS handshake refused")),
                "refused at the connection, not by the API: {err}"
            );
            err.to_string()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_replicates_and_serves_only_clients_with_its_certificates() {
    let cluster = cluster(3, with_tls).await;
    let client = Client::with_tls(&cluster.bootstrap, client_tls()).expect("client");
    let admin = Admin::new(&client);
    // Three replicas of each partition: the records below are committed
    // only if the nodes reach each other over the peer port's mutual TLS.
    admin.create_topic(NewTopic::new("secure", 3).replication_factor(3)).await.expect("create");
    wait_for_leaders(&admin, "secure").await;
    let producer = Producer::new(&client);
    let mut deliveries = Vec::new();
    for i in 0..60 {
        deliveries.push(producer.send(Record::new("secure", format!("r{i}")).partition(i % 3)).await.expect("send"));
    }
    for delivery in deliveries {
        delivery.await.expect("acknowledged by a majority");
    }
    producer.close().await;
    let mut consumer = Consumer::new(&client);
    let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("secure", p)).collect();
    consumer.assign(tps.clone());
    for tp in &tps {
        consumer.seek(tp, Seek::Beginning).await.expect("seek");
    }
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while values.len() < 60 {
        assert!(Instant::now() < deadline, "only {} of 60 records came back", values.len());
        for record in consumer.poll().await.expect("poll") {
            values.push(String::from_utf8(record.value.expect("value").to_vec()).expect("utf8"));
        }
    }
    values.sort_by_key(|v| v[1..].parse::<u32>().expect("number"));
    assert_eq!(values, (0..60).map(|i| format!("r{i}")).collect::<Vec<_>>());

    let node = cluster.addr(1);
    let plain = refusal(Client::new(&node).expect("client")).await;
    let no_certificate = refusal(Client::with_tls(&node, Tls::new(read("ca.crt"))).expect("client")).await;
    let other_authority = refusal(
        Client::with_tls(&node, Tls::new(read("ca.crt")).identity(read("other/client.crt"), read("other/client.key")))
            .expect("client"),
    )
    .await;
    let distrusting = refusal(
        Client::with_tls(&node, Tls::new(read("other/ca.crt")).identity(read("client.crt"), read("client.key")))
            .expect("client"),
    )
    .await;
    // The client's own check of the node's certificate says so.
    assert!(distrusting.contains("TLS handshake refused") && distrusting.contains("UnknownIssuer"), "{distrusting}");
    assert!(other_authority.contains("TLS handshake refused"), "not retried: {other_authority}");
    eprintln!(
        "refusals:\n  plain: {plain}\n  no certificate: {no_certificate}\n  other authority: {other_authority}\n  \
         distrusting: {distrusting}"
    );

    // The peer port is TLS too: a plain connection is cut before any gRPC
    // answer, while one with a node's certificate reaches the transport
    // (which serves no client API: "not implemented").
    let peer = cluster.servers[0].peer_addr().to_string();
    let plain_peer = refusal(Client::new(&peer).expect("client")).await;
    assert!(!plain_peer.contains("not implemented"), "a plain connection got past the peer port's TLS: {plain_peer}");
    let as_node = Tls::new(read("ca.crt")).identity(read("node.crt"), read("node.key"));
    let with_node_certificate = refusal(Client::with_tls(&peer, as_node).expect("client")).await;
    assert!(
        with_node_certificate.contains("not implemented"),
        "TLS with a node's certificate: {with_node_certificate}"
    );
    let as_other = Tls::new(read("ca.crt")).identity(read("other/client.crt"), read("other/client.key"));
    let other_peer = refusal(Client::with_tls(&peer, as_other).expect("client")).await;
    assert!(!other_peer.contains("not implemented"), "a certificate of another authority reached the peer port");
    // A client's certificate, good on the client port, is not a node's.
    let client_on_peer = refusal(Client::with_tls(&peer, client_tls()).expect("client")).await;
    assert!(!client_on_peer.contains("not implemented"), "a client certificate reached the peer port");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_client_certificates_serves_any_client_that_trusts_the_node() {
    let cluster = cluster(1, |b| {
        b.set("tls.cert_file", tls_file("node.crt"))
            .and_then(|b| b.set("tls.key_file", tls_file("node.key")))
            .expect("tls")
    })
    .await;
    let client = Client::with_tls(&cluster.bootstrap, Tls::new(read("ca.crt"))).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("t", 1).replication_factor(1)).await.expect("create over TLS");
    wait_for_leaders(&admin, "t").await;
    refusal(Client::new(&cluster.bootstrap).expect("client")).await;
    cluster.shutdown().await;
}

#[test]
fn tls_settings_are_checked_when_the_configuration_is_built() {
    let base = || ConfigBuilder::new().set("data_dir", "/tmp/unused").expect("data dir");
    let err = base().set("tls.cert_file", tls_file("node.crt")).expect("set").build().expect_err("no key");
    assert!(err.to_string().contains("tls.key_file"), "{err}");
    let err = base().set("tls.peer_ca_file", tls_file("ca.crt")).expect("set").build().expect_err("no cert");
    assert!(err.to_string().contains("tls.cert_file"), "{err}");
    let files = |cert: &str, key: &str| {
        base()
            .set("tls.cert_file", tls_file(cert))
            .and_then(|b| b.set("tls.key_file", tls_file(key)))
            .expect("set")
            .build()
    };
    let err = files("node.key", "node.key").expect_err("a key is not a certificate");
    assert!(err.to_string().contains("tls.cert_file") && err.to_string().contains("CERTIFICATE"), "{err}");
    let err = files("missing.crt", "node.key").expect_err("missing file");
    assert!(err.to_string().contains("missing.crt") && err.to_string().contains("cannot read"), "{err}");
    let config = files("node.crt", "node.key").expect("valid");
    let key = &config.tls.as_ref().expect("tls").key_pem;
    let some_key_bytes = format!("{:?}", &key[40..56]);
    assert!(!format!("{config:?}").contains(some_key_bytes.trim_matches(['[', ']'])), "the key stays out of Debug");
    // Empty means unset (as `${VAR:-}` in a Compose file gives).
    let config = base().set("tls.cert_file", "").expect("set").build().expect("empty is unset");
    assert!(config.tls.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_an_unusable_certificate_does_not_start() {
    let dir = TempDir::new("tls-bad");
    let garbage = dir.0.join("garbage.crt");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
        .expect("write");
    let config = ConfigBuilder::new()
        .set("data_dir", dir.0.join("data").display().to_string())
        .and_then(|b| b.set("listen.client", "127.0.0.1:0"))
        .and_then(|b| b.set("listen.peer", "127.0.0.1:0"))
        .and_then(|b| b.set("listen.http", "127.0.0.1:0"))
        .and_then(|b| b.set("tls.cert_file", garbage.display().to_string()))
        .and_then(|b| b.set("tls.key_file", tls_file("node.key")))
        .expect("set")
        .build()
        .expect("the files hold PEM");
    match Server::start(config).await {
        Ok(server) => {
            server.shutdown().await;
            panic!("a node started with a certificate that is not one");
        }
        Err(err) => {
            assert!(matches!(err, ServerError::Tls(_)), "{err}");
            // The settings, then what the TLS library found wrong.
            assert!(err.to_string().contains("tls.cert_file"), "{err}");
            assert!(err.to_string().contains("BadEncoding"), "says what is wrong: {err}");
        }
    }
}
