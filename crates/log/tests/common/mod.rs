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

/// What a [`HookedDir`]'s files call before the real operation.
#[derive(Clone, Default)]
pub struct FileHooks {
    /// Before each `read_exact_at` and each `map`.
    pub on_read: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
    /// Before each `sync_data` (it may block, to hold a sync).
    pub on_sync: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
}

/// A real directory whose files run hooks, to observe or hold the
/// engine's I/O.
pub struct HookedDir {
    pub inner: strata_log::io::fs::FsDir,
    pub hooks: FileHooks,
}

struct HookedFile {
    inner: std::sync::Arc<dyn strata_log::io::File>,
    hooks: FileHooks,
}

impl HookedDir {
    fn wrap(&self, inner: std::sync::Arc<dyn strata_log::io::File>) -> std::sync::Arc<dyn strata_log::io::File> {
        std::sync::Arc::new(HookedFile { inner, hooks: self.hooks.clone() })
    }
}

impl strata_log::io::Dir for HookedDir {
    fn open(&self, name: &str) -> std::io::Result<std::sync::Arc<dyn strata_log::io::File>> {
        Ok(self.wrap(self.inner.open(name)?))
    }
    fn create(&self, name: &str) -> std::io::Result<std::sync::Arc<dyn strata_log::io::File>> {
        Ok(self.wrap(self.inner.create(name)?))
    }
    fn remove(&self, name: &str) -> std::io::Result<()> {
        self.inner.remove(name)
    }
    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn list(&self) -> std::io::Result<Vec<String>> {
        self.inner.list()
    }
    fn sync_dir(&self) -> std::io::Result<()> {
        self.inner.sync_dir()
    }
}

impl strata_log::io::File for HookedFile {
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> std::io::Result<()> {
        if let Some(hook) = &self.hooks.on_read {
            hook();
        }
        self.inner.read_exact_at(buf, position)
    }
    fn write_all_at(&self, buf: &[u8], position: u64) -> std::io::Result<()> {
        self.inner.write_all_at(buf, position)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn allocate(&self, len: u64) -> std::io::Result<()> {
        self.inner.allocate(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        if let Some(hook) = &self.hooks.on_sync {
            hook();
        }
        self.inner.sync_data()
    }
    fn map(&self, len: u64) -> std::io::Result<Bytes> {
        if let Some(hook) = &self.hooks.on_read {
            hook();
        }
        self.inner.map(len)
    }
}

/// Whether two reads hold the same entries: index, term, base offset and
/// bytes.
pub fn same(a: &[strata_log::Entry], b: &[strata_log::Entry]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.index == y.index && x.term == y.term && x.base_offset == y.base_offset && x.batch == y.batch
        })
}
