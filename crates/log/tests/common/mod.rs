//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use strata_batch::{BatchBuilder, Compression, ControlType, build_control};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!("strata-log-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A data batch of `n_records` records of `value_bytes` each, tagged with
/// `tag` in every key so batches differ.
pub fn data_batch(tag: u64, n_records: usize, value_bytes: usize, timestamp: i64) -> Bytes {
    let mut builder = BatchBuilder::new();
    let value = vec![(tag % 251) as u8; value_bytes];
    for i in 0..n_records {
        let key = format!("{tag}-{i}");
        builder.push(timestamp, Some(key.as_bytes()), Some(&value), &[]);
    }
    builder.build(Compression::None)
}

/// A control batch (takes no offsets).
pub fn control_batch(tag: u64) -> Bytes {
    build_control(ControlType::RaftBlank, 0, &tag.to_be_bytes())
}

/// The batch with its stamped fields (base offset, leader epoch) zeroed, to
/// compare what was appended with what is read back.
pub fn unstamped(batch: &[u8]) -> Vec<u8> {
    let mut out = batch.to_vec();
    strata_batch::stamp(&mut out, 0, 0);
    out
}

/// Every record readable by offset, from the log start to its end, in order.
pub fn records_from_start(log: &strata_log::Log) -> Vec<strata_batch::Record> {
    let state = log.state();
    let mut out = Vec::new();
    let mut from = state.log_start_offset;
    while from < state.next_offset {
        let read = log.read_offsets(from, 1 << 20, state.next_offset).expect("read");
        for chunk in &read.chunks {
            for item in strata_batch::split_batches(chunk) {
                let (_, bytes) = item.expect("valid batch");
                let batch = Bytes::copy_from_slice(bytes);
                for record in strata_batch::decode_records(&batch).expect("decode") {
                    out.push(record.expect("record"));
                }
            }
        }
        assert!(read.next_offset > from, "no progress reading at {from}");
        from = read.next_offset;
    }
    out
}
