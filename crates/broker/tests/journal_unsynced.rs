//! The UNSAFE `testing.journal_unsynced` setting puts every partition
//! directory of the node in the storage engine's journaled mode (what the
//! chaos harness's lose-unsynced disk fault needs), the node still serves,
//! and a node without it journals nothing.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{cluster, wait_for_leaders};
use strata_client::{Admin, Client, Consumer, NewTopic, Producer, Record, Seek, TopicPartition};
use strata_log::io::journaled::{JOURNAL_DIR_NAME, lose_unsynced};

fn group_dirs(data_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .expect("list data dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("group-")))
        .collect();
    dirs.sort();
    dirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_testing_setting_journals_every_partition_directory_of_the_node() {
    let journaled = cluster(1, |b| b.set("testing.journal_unsynced", "true").expect("known key")).await;
    let client = Client::new(&journaled.bootstrap).expect("client");
    let admin = Admin::new(&client);
    admin.create_topic(NewTopic::new("journaled", 2)).await.expect("create");
    wait_for_leaders(&admin, "journaled").await;
    let producer = Producer::new(&client);
    for i in 0..20 {
        let record = Record::new("journaled", format!("v{i}")).partition(i % 2);
        producer.send(record).await.expect("send").await.expect("acknowledged");
    }
    producer.close().await;
    let tp = TopicPartition::new("journaled", 0);
    let mut consumer = Consumer::new(&client);
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, Seek::Beginning).await.expect("seek");
    let (mut n_read, deadline) = (0, Instant::now() + Duration::from_secs(20));
    while n_read < 10 {
        assert!(Instant::now() < deadline, "only {n_read} of 10 records read back");
        n_read += consumer.poll().await.expect("poll").len();
    }

    let data_dir = journaled.configs[0].data_dir.clone();
    let groups = group_dirs(&data_dir);
    assert!(groups.len() >= 3, "the controller and both partitions: {groups:?}");
    for dir in &groups {
        assert!(dir.join(JOURNAL_DIR_NAME).join("state").is_file(), "{} is not journaled", dir.display());
    }
    journaled.shutdown().await;
    for dir in &groups {
        lose_unsynced(dir).unwrap_or_else(|e| panic!("lose unsynced writes of {}: {e}", dir.display()));
    }

    let plain = cluster(1, |b| b).await;
    let groups = group_dirs(&plain.configs[0].data_dir);
    assert!(!groups.is_empty(), "the controller's group at least");
    for dir in &groups {
        assert!(!dir.join(JOURNAL_DIR_NAME).exists(), "{} is journaled without the setting", dir.display());
    }
    plain.shutdown().await;
}
