//! Beyond `limits.connections`, a client connection waits to be accepted
//! (back-pressure) and is served as soon as a slot frees; nothing is refused.

mod common;

use std::time::Duration;

use common::cluster;
use strata_proto::api as pb;
use strata_proto::api::strata_client::StrataClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_the_limit_waits_for_a_free_slot() {
    let cluster = cluster(1, |b| b.set("limits.connections", "2").expect("set")).await;
    let addr = format!("http://{}", cluster.addr(1));
    // The cluster helper's own admin client may still hold a slot: take
    // slots until one connection has to wait.
    let mut held = Vec::new();
    let waiting = loop {
        let mut stub = StrataClient::connect(addr.clone()).await.expect("connect");
        let call = tokio::time::timeout(Duration::from_millis(500), stub.list_topics(pb::ListTopicsRequest {})).await;
        match call {
            Ok(answer) => {
                answer.expect("served");
                held.push(stub);
                assert!(held.len() <= 2, "more connections served than the limit allows");
            }
            Err(_) => break stub,
        }
    };
    assert!(!held.is_empty(), "at least one connection is served");
    let mut waiting = waiting;
    let pending = tokio::spawn(async move { waiting.list_topics(pb::ListTopicsRequest {}).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "the connection over the limit is not served yet");
    held.clear();
    let served = tokio::time::timeout(Duration::from_secs(10), pending).await;
    served.expect("served once a slot freed").expect("task").expect("answer");
    cluster.shutdown().await;
}
