//! No acknowledged record is lost or duplicated when partition leaders are
//! killed (SIGKILL) and restarted: a 3-node cluster of real `strata server`
//! processes, 100,000 records with acks=all to a 6-partition RF=3 topic,
//! then every partition read back from the start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_client::{Admin, Client, Consumer, NewTopic, Producer, Record, Seek, TopicPartition};

const RECORDS: u64 = 100_000;
const PARTITIONS: u32 = 6;

struct Node {
    id: u64,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start strata server");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap_or_else(|e| panic!("SIGKILL node {}: {e}", self.id));
            child.wait().expect("reap");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect()
}

fn nodes(dir: &Path) -> Vec<Node> {
    let ports = free_ports(9);
    let peers: Vec<String> = (0..3).map(|i| format!("{}=127.0.0.1:{}", i + 1, ports[3 * i + 1])).collect();
    let peers = peers.join(",");
    (0..3)
        .map(|i| {
            let id = i as u64 + 1;
            let args = vec![
                "server".to_string(),
                "--stop-on-stdin-eof".into(),
                "--node-id".into(),
                id.to_string(),
                "--peers".into(),
                peers.clone(),
                "--data-dir".into(),
                dir.join(format!("node-{id}")).display().to_string(),
                "--listen-client".into(),
                format!("127.0.0.1:{}", ports[3 * i]),
                "--listen-peer".into(),
                format!("127.0.0.1:{}", ports[3 * i + 1]),
                "--listen-http".into(),
                format!("127.0.0.1:{}", ports[3 * i + 2]),
            ];
            Node { id, args, log: dir.join(format!("node-{id}.log")), child: None }
        })
        .collect()
}

fn client_addr(node: &Node) -> String {
    let at = node.args.iter().position(|a| a == "--listen-client").expect("flag");
    node.args[at + 1].clone()
}

/// The node leading the most partitions of `topic`, `down` aside.
async fn busiest_leader(admin: &Admin, topic: &str, down: Option<u64>) -> u64 {
    loop {
        if let Ok(t) = admin.describe_topic(topic).await {
            let leaders: Vec<u64> = t.partitions.iter().filter_map(|p| p.leader).filter(|l| Some(*l) != down).collect();
            if !leaders.is_empty() {
                let mut counts: HashMap<u64, usize> = HashMap::new();
                for leader in leaders {
                    *counts.entry(leader).or_default() += 1;
                }
                return counts.into_iter().max_by_key(|(id, n)| (*n, *id)).map(|(id, _)| id).expect("a leader");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_records_survive_leaders_killed_and_restarted_exactly_once_in_order() {
    let dir = std::env::temp_dir().join(format!("strata-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let nodes = Arc::new(Mutex::new(nodes(&dir)));
    let bootstrap = {
        let mut nodes = nodes.lock().expect("lock");
        nodes.iter_mut().for_each(Node::start);
        nodes.iter().map(client_addr).collect::<Vec<_>>().join(",")
    };
    let client = Client::new(&bootstrap).expect("client");
    let admin = Admin::new(&client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ready = admin.create_topic(NewTopic::new("orders", PARTITIONS).replication_factor(3)).await;
        if ready.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cluster did not come up: {ready:?}; logs in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A killer task watches acknowledgements and, at 30% and 65% acked,
    // SIGKILLs the node leading the most partitions and restarts it 2 s later.
    let n_acked = Arc::new(AtomicU64::new(0));
    let killer = {
        let (nodes, admin, n_acked) = (nodes.clone(), admin.clone(), n_acked.clone());
        tokio::spawn(async move {
            let mut kills = Vec::new();
            let mut down = None;
            for at in [RECORDS / 4, RECORDS / 2] {
                while n_acked.load(Ordering::Relaxed) < at {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let victim = busiest_leader(&admin, "orders", down).await;
                nodes.lock().expect("lock")[(victim - 1) as usize].kill();
                kills.push((victim, n_acked.load(Ordering::Relaxed)));
                down = Some(victim);
                let nodes = nodes.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    nodes.lock().expect("lock")[(victim - 1) as usize].start();
                });
            }
            kills
        })
    };
    let producer = Producer::new(&client);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let collector = {
        let n_acked = n_acked.clone();
        tokio::spawn(async move {
            let mut acked: HashMap<u64, (u32, u64)> = HashMap::new();
            let mut failed = 0u64;
            while let Some((i, delivery)) = rx.recv().await {
                let delivery: strata_client::DeliveryFuture = delivery;
                match delivery.await {
                    Ok(meta) => {
                        acked.insert(i, (meta.partition, meta.offset as u64));
                        n_acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("record {i} not acknowledged: {e}");
                    }
                }
            }
            (acked, failed)
        })
    };
    for i in 0..RECORDS {
        let partition = (i % u64::from(PARTITIONS)) as u32;
        let record = Record::new("orders", i.to_string()).partition(partition);
        tx.send((i, producer.send(record).await.expect("queued"))).expect("collector");
    }
    drop(tx);
    let (acked, failed) = collector.await.expect("collector");
    producer.close().await;
    let kills = killer.await.expect("killer");
    eprintln!("killed (node, records acked at the time): {kills:?}; {failed} records not acknowledged");
    assert_eq!(kills.len(), 2, "both kills happened");
    assert!(kills.iter().all(|(_, at)| *at < RECORDS), "each kill came while records were in flight");
    assert!(acked.len() as u64 >= RECORDS * 99 / 100, "{failed} of {RECORDS} records failed");

    // Read every partition back from the start with a fresh client.
    let reader = Client::new(&bootstrap).expect("client");
    let mut seen: HashMap<u64, Vec<(u32, u64)>> = HashMap::new();
    for partition in 0..PARTITIONS {
        let tp = TopicPartition::new("orders", partition);
        let mut consumer = Consumer::new(&reader);
        consumer.assign(vec![tp.clone()]);
        consumer.seek(&tp, Seek::Beginning).await.expect("seek");
        let high_watermark = loop {
            let t = admin.describe_topic("orders").await;
            if let Ok(t) = t {
                if t.partitions[partition as usize].leader.is_some() {
                    break t.partitions[partition as usize].high_watermark;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // A leader elected a moment ago may not have applied all that is
        // committed yet, so its high watermark can lag what was
        // acknowledged: read at least past every acknowledged offset,
        // which the leader serves once it has caught up.
        let acked_end = acked.values().filter(|(p, _)| *p == partition).map(|(_, offset)| offset + 1).max();
        let end = high_watermark.max(acked_end.unwrap_or(0));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut last_value: Option<u64> = None;
        while consumer.position(&tp).unwrap_or(0) < end {
            assert!(
                std::time::Instant::now() < deadline,
                "partition {partition}: read stopped at offset {:?} of {end} (high watermark {high_watermark} when \
                 the read began, acknowledged up to {acked_end:?})",
                consumer.position(&tp)
            );
            for record in consumer.poll().await.expect("poll") {
                let value: u64 = std::str::from_utf8(record.value.as_deref().expect("value"))
                    .expect("utf8")
                    .parse()
                    .expect("number");
                assert_eq!(value % u64::from(PARTITIONS), u64::from(partition), "record in the wrong partition");
                if let Some(last) = last_value {
                    assert!(value > last, "partition {partition}: {value} after {last}: order broken");
                }
                last_value = Some(value);
                seen.entry(value).or_default().push((partition, record.offset));
            }
        }
    }
    for (i, (partition, offset)) in &acked {
        let copies = seen.get(i).map_or(0, Vec::len);
        assert_eq!(copies, 1, "acknowledged record {i} read back {copies} times");
        assert_eq!(seen[i][0], (*partition, *offset), "record {i} is not where its acknowledgement said");
    }
    for (value, copies) in &seen {
        assert_eq!(copies.len(), 1, "record {value} stored {} times", copies.len());
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
