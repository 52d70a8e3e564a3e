//! openraft's own storage test suite, run against `LogStore` and
//! `PartitionStateMachine` on real files.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use strata_log::io::fs::FsDir;
use strata_log::{Flusher, Log, LogConfig};
use strata_raft::{C, LogStore, PartitionStateMachine};

/// Keeps a test's directory and flusher alive for the test's duration.
struct Guard {
    _flusher: Flusher,
    dir: std::path::PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Builder;

impl StoreBuilder<C, LogStore, PartitionStateMachine, Guard> for Builder {
    async fn build(&self) -> Result<(Guard, LogStore, PartitionStateMachine), StorageError<C>> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("strata-raft-suite-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let flusher = Flusher::spawn("suite").expect("set up store");
        let fs = FsDir::open(&dir).expect("set up store");
        let config = LogConfig { segment_bytes: 64 * 1024, ..LogConfig::default() };
        let log = Arc::new(Log::open(Arc::new(fs), config, Some(&flusher)).expect("set up store"));
        let sm = PartitionStateMachine::open(&dir, log.clone()).expect("set up store");
        Ok((Guard { _flusher: flusher, dir }, LogStore::new(log), sm))
    }
}

#[test]
fn openraft_storage_suite_passes_on_strata_log() {
    C::run(async {
        Suite::test_all(Builder).await.expect("suite");
    });
}

#[test]
fn reading_a_range_larger_than_one_log_read_returns_all_of_it() {
    // Regression: the log caps one read at READ_BYTES_MAX, and
    // try_get_log_entries returned only the first part, so openraft's apply
    // skipped committed entries.
    use openraft::storage::RaftLogReader;
    C::run(async {
        let (_guard, store, _sm) = Builder.build().await.expect("store");
        let big = {
            let mut builder = strata_batch::BatchBuilder::new();
            builder.push(0, None, Some(&vec![7u8; 2 * 1024 * 1024]), &[]);
            builder.build(strata_batch::Compression::None)
        };
        let n = (strata_log::limits::READ_BYTES_MAX / big.len()) as u64 + 5;
        for _ in 0..n {
            store.log().append(&big, strata_log::Term(1)).expect("append");
        }
        let mut reader = store.clone();
        let entries = reader.try_get_log_entries(0..n).await.expect("read");
        assert_eq!(entries.len() as u64, n);
    });
}
