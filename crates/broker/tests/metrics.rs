//! The metrics a 3-node cluster serves move as they should: records and
//! bytes in count what was produced, a group's lag appears and drains with
//! its committed offset, a stopped follower shows up as under-replicated
//! partitions on the leaders, replicas a node cannot open show as not open;
//! and every metric the Grafana dashboard and the
//! alert rules query is one the server exports.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{cluster, http_get as get, metric_sum as sum, wait_for_leaders};
use strata_client::{Admin, Client, NewTopic, Producer, Record, TopicPartition};

async fn sum_over(servers: &[SocketAddr], name: &str, labels: &[&str]) -> f64 {
    let mut total = 0.0;
    for addr in servers {
        total += sum(&get(*addr, "/metrics").await, name, labels);
    }
    total
}

async fn wait_for(servers: &[SocketAddr], name: &str, labels: &[&str], what: &str, ok: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let value = sum_over(servers, name, labels).await;
        if ok(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {name}{labels:?} = {value}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throughput_lag_and_a_stopped_follower_show_in_the_metrics() {
    let mut cluster = cluster(3, |b| b).await;
    let http: Vec<SocketAddr> = cluster.servers.iter().map(|s| s.http_addr()).collect();
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("watched", 1).replication_factor(3)).await.expect("create");
    wait_for_leaders(&admin, "watched").await;

    let producer = Producer::new(&client);
    let mut deliveries = Vec::new();
    for i in 0..200 {
        deliveries.push(producer.send(Record::new("watched", format!("{i:0100}")).partition(0)).await.expect("send"));
    }
    for d in deliveries {
        d.await.expect("acknowledged");
    }
    let sent = producer.metrics();
    assert_eq!((sent.records_sent, sent.records_failed), (200, 0), "the client's own counters: {sent:?}");
    assert!(sent.batches_sent >= 1 && sent.bytes_sent >= 200 * 100, "{sent:?}");
    producer.close().await;
    let topic = "topic=\"watched\"";
    assert_eq!(sum_over(&http, "strata_topic_records_in_total", &[topic]).await, 200.0);
    assert!(sum_over(&http, "strata_topic_bytes_in_total", &[topic]).await >= 200.0 * 100.0);
    assert!(sum_over(&http, "strata_produce_latency_seconds_count", &[]).await >= 1.0);
    // The leader's commit latency histogram counted the produced batches.
    assert!(sum_over(&http, "strata_raft_commit_seconds_count", &[]).await >= 1.0);
    assert!(sum_over(&http, "strata_requests_total", &["rpc=\"produce\"", "code=\"ok\""]).await >= 1.0);
    assert_eq!(sum_over(&http, "strata_partition_leader", &[topic]).await, 1.0, "one leader");
    wait_for(&http, "strata_partition_high_watermark", &[topic], "every replica at 200", |v| v == 600.0).await;

    // A group's lag follows its committed offset.
    let tp = TopicPartition::new("watched", 0);
    admin.reset_offsets("auditors", vec![(tp.clone(), 50)]).await.expect("commit 50");
    let group = "group=\"auditors\"";
    wait_for(&http, "strata_group_lag_records", &[group], "lag appears", |v| v == 150.0).await;
    assert!(sum_over(&http, "strata_group_lag_seconds", &[group]).await >= 0.0);
    admin.reset_offsets("auditors", vec![(tp.clone(), 200)]).await.expect("commit 200");
    wait_for(&http, "strata_group_lag_records", &[group], "lag drains", |v| v == 0.0).await;

    // A stopped follower: the leaders report under-replicated partitions
    // (none before).
    wait_for(&http, "strata_partitions_under_replicated", &[], "a healthy cluster", |v| v == 0.0).await;
    let description = admin.describe_topic("watched").await.expect("describe");
    let leader = description.partitions[0].leader.expect("leader");
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.servers[(follower - 1) as usize].halt().await;
    let leader_addr = cluster.servers[(leader - 1) as usize].http_addr();
    let under = "strata_partition_under_replicated";
    wait_for(&[leader_addr], under, &[topic], "the leader flags the partition", |v| v == 1.0).await;
    assert!(sum_over(&[leader_addr], "strata_partitions_under_replicated", &[]).await >= 1.0);
    let cluster_json: serde_json::Value = serde_json::from_str(&get(leader_addr, "/v1/cluster").await).expect("json");
    assert_eq!(cluster_json["brokers"].as_array().map(Vec::len), Some(3), "{cluster_json}");

    // A follower that cannot open its replicas (each partition directory
    // replaced by a file) shows them as assigned and not open (none were
    // before).
    assert_eq!(sum_over(&[leader_addr], "strata_replicas_not_open", &[]).await, 0.0);
    let data_dir = cluster.configs[(follower - 1) as usize].data_dir.clone();
    let mut n_replaced = 0;
    for entry in std::fs::read_dir(&data_dir).expect("list data dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if name.starts_with("group-") && name != "group-0" && path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove replica");
            std::fs::write(&path, b"not a directory").expect("a file in its place");
            n_replaced += 1;
        }
    }
    assert!(n_replaced >= 1, "the follower held a replica of the topic");
    cluster.restart(follower).await;
    let follower_addr = cluster.servers[(follower - 1) as usize].http_addr();
    wait_for(&[follower_addr], "strata_replicas_not_open", &[], "the replicas it cannot open", |v| v >= 1.0).await;
    cluster.shutdown().await;
}

/// Metric names (`strata_...`) in a text, with histogram suffixes removed.
fn names_in(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("strata_") {
        let start = i + at;
        let end = start
            + text[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(text.len() - start);
        let preceded = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'/');
        if !preceded {
            let name = &text[start..end];
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            names.push(base.to_string());
        }
        i = end;
    }
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let cluster = cluster(1, |b| b).await;
    let exported = get(cluster.servers[0].http_addr(), "/metrics").await;
    let families: Vec<&str> =
        exported.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana/dashboards/strata.json")).expect("dashboard");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<String> = parsed["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(String::from))
        .collect();
    assert!(exprs.len() >= 10, "the dashboard has its panels");
    let alerts = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).expect("alerts");
    let queried: Vec<String> = names_in(&exprs.join("\n")).into_iter().chain(names_in(&alerts)).collect();
    assert!(queried.len() >= 10, "{queried:?}");
    let missing: Vec<&String> = queried.iter().filter(|n| !families.contains(&n.as_str())).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}\nexported: {families:?}");
    cluster.shutdown().await;
}
