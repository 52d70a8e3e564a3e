//! A node whose disk is almost full refuses produce requests with a clear,
//! retriable UNAVAILABLE, stores nothing of them, says so in its metrics,
//! and still takes the controller's records (creating and deleting topics);
//! a producer facing the refusal fails every batch past its delivery
//! timeout at once.
//!
//! "Almost full" is made real by asking for more free space than any disk
//! has (`limits.min_free_disk_bytes` = 1,024 TiB): the check reads the
//! file system of the data directory as it is.
//!
//! And a follower whose disk really fills (its data directory on a small
//! file system of its own) stops its replica, and reopens it by itself once
//! space is freed, then catches up.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TempDir, cluster, cluster_each, http_get, metric_sum, wait_for_leaders};
use strata_client::{Admin, Client, DeliveredBatch, NewTopic, Producer, ProducerConfig, Record};

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
    let text = http_get(cluster.servers[0].http_addr(), "/metrics").await;
    assert_eq!(metric_sum(&text, "strata_disk_produce_refused", &[]), 1.0, "{text}");
    assert!(metric_sum(&text, "strata_disk_available_bytes", &[]) > 0.0, "{text}");
    assert!(metric_sum(&text, "strata_disk_total_bytes", &[]) > 0.0, "{text}");

    // Deleting a topic, the way out, is a controller record too.
    admin.delete_topic("t").await.expect("delete while the disk is 'full'");
    cluster.shutdown().await;
}

/// A small ext4 file system of the test's own, in an image file mounted on
/// a loop device for the test's life: a disk that really fills. Root only.
struct SmallDisk {
    mount: PathBuf,
    _dir: TempDir,
}

fn run(program: &str, args: &[&Path]) -> Result<(), String> {
    let output = std::process::Command::new(program).args(args).output().map_err(|e| format!("run {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

impl SmallDisk {
    fn mount(bytes: u64) -> Result<SmallDisk, String> {
        let dir = TempDir::new("small-disk");
        let image = dir.0.join("disk.img");
        let mount = dir.0.join("mnt");
        std::fs::create_dir(&mount).map_err(|e| format!("create {}: {e}", mount.display()))?;
        let file = std::fs::File::create(&image).map_err(|e| format!("create {}: {e}", image.display()))?;
        file.set_len(bytes).map_err(|e| format!("size {}: {e}", image.display()))?;
        // No blocks reserved for root: the test runs as root, and the free
        // space it reads must be all there is.
        run("mkfs.ext4", &[Path::new("-q"), Path::new("-F"), Path::new("-m"), Path::new("0"), &image])?;
        run("mount", &[Path::new("-o"), Path::new("loop"), &image, &mount])?;
        Ok(SmallDisk { mount, _dir: dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if run("umount", &[&self.mount]).is_err() {
            let _ = run("umount", &[Path::new("-l"), &self.mount]);
        }
    }
}

/// Writes `bytes` of zeroes to `path` and syncs them: space really taken.
fn fill(path: &Path, bytes: u64) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).expect("write filler");
        left -= n as u64;
    }
    file.sync_all().expect("sync filler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_stopped_by_a_full_disk_reopens_by_itself_once_space_is_freed() {
    let disk = match SmallDisk::mount(64 << 20) {
        Ok(disk) => disk,
        Err(why) if std::env::var_os("STRATA_TEST_MOUNT").is_none() => {
            eprintln!("skipped: cannot mount a small file system ({why}); CI runs it as root with STRATA_TEST_MOUNT=1");
            return;
        }
        Err(why) => panic!("cannot mount a small file system: {why}"),
    };
    let node3_dir = disk.mount.join("node-3");
    // Every node writes until its disk is full (the check that would
    // refuse produce first is off): node 3's disk fills first.
    let cluster = cluster_each(3, |id, builder| {
        let builder = builder.set("limits.min_free_disk_bytes", "0").expect("setting");
        if id == 3 { builder.set("data_dir", node3_dir.display().to_string()).expect("setting") } else { builder }
    })
    .await;
    let client = Client::new(&cluster.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("t", 1)).await.expect("create");
    wait_for_leaders(&admin, "t").await;
    let node3 = cluster.servers[2].http_addr();
    let node3_metric = |name: &'static str| async move { metric_sum(&http_get(node3, "/metrics").await, name, &[]) };

    // Leave node 3 a few MiB.
    let available = node3_metric("strata_disk_available_bytes").await as u64;
    let filler = disk.mount.join("filler");
    fill(&filler, available.saturating_sub(6 << 20));

    // Produce until node 3's replica stops; every record is still
    // acknowledged, by nodes 1 and 2.
    let producer = Producer::new(&client);
    let mut sent = 0u64;
    let value = vec![7u8; 1024];
    while node3_metric("strata_replicas_stopped").await == 0.0 {
        assert!(sent < 48 * 1024, "node 3's replica did not stop after {sent} records of 1 KiB");
        let mut acks = Vec::new();
        for _ in 0..1024 {
            acks.push(producer.send(Record::new("t", value.clone()).partition(0)).await.expect("queued"));
        }
        for ack in acks {
            ack.await.expect("acknowledged by a majority");
        }
        sent += 1024;
    }

    eprintln!("node 3's replica stopped after {sent} records of 1 KiB");

    // Space freed: the replica reopens by itself, catches up, and follows
    // what is written next.
    std::fs::remove_file(&filler).expect("remove filler");
    let freed = Instant::now();
    for _ in 0..1024 {
        producer.send(Record::new("t", value.clone()).partition(0)).await.expect("queued").await.expect("acked");
    }
    let total = sent + 1024;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let replicas = admin.describe_replicas("t").await.expect("describe replicas");
        let on3 = replicas.iter().find(|r| r.broker == 3).map(|r| r.log_end_offset);
        let stopped = node3_metric("strata_replicas_stopped").await;
        if stopped == 0.0 && on3 == Some(total) {
            eprintln!("node 3's replica caught up {:?} after space was freed", freed.elapsed());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3's replica did not come back: stopped replicas {stopped}, its log end {on3:?} of {total}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.shutdown().await;
    drop(cluster);
}
