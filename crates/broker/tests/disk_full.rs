//! A node whose disk is almost full refuses produce requests with a clear,
//! retriable UNAVAILABLE, stores nothing of them, says so in its metrics,
//! and still takes the controller's records (creating and deleting topics);
//! a producer facing the refusal fails every batch past its delivery
//! timeout at once.
//!
//! "Almost full" is made real by asking for more free space than any disk
//! has (`limits.min_free_disk_bytes` = 1,024 TiB): the check reads the
//! file system of the data directory as it is.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cluster, wait_for_leaders};
use strata_client::{Admin, Client, DeliveredBatch, NewTopic, Producer, ProducerConfig, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn metrics(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_almost_full_disk_refuses_produce_and_keeps_the_rest_working() {
    let cluster = cluster(1, |b| b.set("limits.min_free_disk_bytes", "1024 TiB").expect("setting")).await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    // The controller's records still go through.
    admin.create_topic(NewTopic::new("t", 1)).await.expect("create while the disk is 'full'");
    wait_for_leaders(&admin, "t").await;

    let config = ProducerConfig {
        delivery_timeout: Duration::from_secs(2),
        retry_backoff: Duration::from_millis(300),
        retry_backoff_max: Duration::from_millis(300),
        batch_size: 1,
        linger: Duration::ZERO,
        ..ProducerConfig::default()
    };
    // When each record's failure came, and what it said.
    let failures: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let handler = {
        let failures = failures.clone();
        move |batch: &DeliveredBatch<'_>| {
            let error = batch.outcome.as_ref().expect_err("nothing may be written").to_string();
            let mut failures = failures.lock().expect("lock");
            failures.extend((0..batch.len()).map(|_| (Instant::now(), error.clone())));
        }
    };
    let producer = Producer::with_delivery_handler(&client, config, handler);
    // One record a batch: 100 batches, of which the producer seals 32 at a
    // time (the rest wait in its accumulator), each refused by the broker
    // until its delivery timeout, counted from `send`, passes.
    for i in 0..100u32 {
        let record = Record::new("t", i.to_be_bytes().to_vec()).partition(0);
        producer.send_tagged(record, u64::from(i)).await.expect("queued");
    }
    producer.flush().await;
    let failures = failures.lock().expect("lock").clone();
    assert_eq!(failures.len(), 100, "every record is answered");
    for (_, error) in &failures {
        assert!(error.contains("delivery timeout"), "{error}");
        assert!(error.contains("broker 1 refuses writes"), "{error}");
        assert!(error.contains("limits.min_free_disk_bytes"), "{error}");
    }
    // Failed together once their timeout passed: the batches sealed late
    // were sent long before, so their timeout had passed too (counted from
    // sealing, each group of 32 would take another 2 s).
    let first = failures.iter().map(|(at, _)| *at).min().expect("some");
    let last = failures.iter().map(|(at, _)| *at).max().expect("some");
    assert!(last - first < Duration::from_secs(2), "failures spread over {:?}", last - first);

    // Nothing was stored, and the metrics say why.
    let described = admin.describe_topic("t").await.expect("describe");
    assert_eq!(described.partitions[0].high_watermark, 0);
    let text = metrics(cluster.servers[0].http_addr()).await;
    assert_eq!(sample(&text, "strata_disk_produce_refused"), Some(1.0), "{text}");
    assert!(sample(&text, "strata_disk_available_bytes").is_some_and(|b| b > 0.0), "{text}");
    assert!(sample(&text, "strata_disk_total_bytes").is_some_and(|b| b > 0.0), "{text}");

    // Deleting a topic, the way out, is a controller record too.
    admin.delete_topic("t").await.expect("delete while the disk is 'full'");
    cluster.shutdown().await;
}
