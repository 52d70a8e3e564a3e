//! The history: every operation of the run as an `invoke` followed by its
//! completion (`ok`, `fail` or `info`), in the order they happened, with
//! monotonic timestamps; written as JSON lines and kept for the checker.
//!
//! The meaning of the completion types is Jepsen's and the checker relies
//! on it:
//! - `ok`: the operation happened, with the results recorded;
//! - `fail`: it definitely did not happen (nothing was written);
//! - `info`: unknown (a timeout, a broken connection, NOT_LEADER after
//!   retries): a send may or may not have been written.
//!
//! **Invariant:** every completion of a process follows that process's
//! invoke and each process has at most one operation in flight, so a
//! completion pairs with the latest invoke of its process.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The process id of the nemesis in the history.
pub const NEMESIS_PROCESS: i64 = -1;
/// The process id of the final read.
pub const FINAL_PROCESS: i64 = -2;

/// Whether an entry starts an operation or says how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The operation starts.
    Invoke,
    /// It happened.
    Ok,
    /// It definitely did not happen.
    Fail,
    /// Unknown.
    Info,
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum F {
    /// Produce one value to a key with acks=all.
    Send,
    /// Poll the consumer's partitions.
    Poll,
    /// A new consumer assigned keys and sought to the `offsets` given.
    Assign,
    /// A new consumer subscribed to the topic in the group.
    Subscribe,
    /// Commit the consumer's positions (`offsets`: next offset to read).
    Commit,
    /// The coordinator's view of the group.
    DescribeGroup,
    /// The final phase's read of one key from the start.
    FinalRead,
    /// A fault starts (`fault`: kind and details).
    StartFault,
    /// A fault ends.
    StopFault,
}

/// The state of a group as the coordinator described it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupView {
    /// The group epoch.
    pub epoch: i32,
    /// Member id → owned keys.
    pub members: BTreeMap<String, Vec<u32>>,
    /// Key → committed offset.
    pub committed: BTreeMap<u32, u64>,
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history.
    pub index: u64,
    /// Nanoseconds since the run started (monotonic clock).
    pub time_ns: u64,
    /// Worker process; negative for the nemesis and the final read.
    pub process: i64,
    /// Invoke or completion.
    #[serde(rename = "type")]
    pub op_type: OpType,
    /// What the operation does.
    pub f: F,
    /// The key (a partition of the chaos topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u32>,
    /// The value sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// The offset a send was acknowledged at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Records read: key → [offset, value] in the order read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads: Option<BTreeMap<u32, Vec<(u64, u64)>>>,
    /// Positions: seek targets of an assign, committed offsets of a
    /// commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsets: Option<BTreeMap<u32, u64>>,
    /// Keys given by an assign, or by a rebalance during a poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<u32>>,
    /// Keys taken away (revoked or lost) by a rebalance during a poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Vec<u32>>,
    /// A described group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupView>,
    /// A fault's description (nemesis entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// The node a worker is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u32>,
    /// Why an operation failed or is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    /// An entry with only the required fields set; index and time are
    /// stamped by [`History::record`].
    pub fn new(process: i64, op_type: OpType, f: F) -> Op {
        Op {
            index: 0,
            time_ns: 0,
            process,
            op_type,
            f,
            key: None,
            value: None,
            offset: None,
            reads: None,
            offsets: None,
            keys: None,
            revoked: None,
            group: None,
            fault: None,
            node: None,
            error: None,
        }
    }
}

struct Inner {
    ops: Vec<Op>,
    file: Option<std::io::BufWriter<std::fs::File>>,
    write_error: Option<String>,
}

/// The shared, append-only history of a run.
#[derive(Clone)]
pub struct History {
    started: Instant,
    inner: Arc<Mutex<Inner>>,
}

impl History {
    /// A history that also appends every entry to `path` as a JSON line.
    pub fn create(path: &Path, started: Instant) -> anyhow::Result<History> {
        let file =
            std::fs::File::create(path).map_err(|e| anyhow::anyhow!("create history file {}: {e}", path.display()))?;
        Ok(History {
            started,
            inner: Arc::new(Mutex::new(Inner {
                ops: Vec::new(),
                file: Some(std::io::BufWriter::new(file)),
                write_error: None,
            })),
        })
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Stamps `op` with its index and time and appends it; returns the
    /// stamped copy.
    pub fn record(&self, mut op: Op) -> Op {
        // A poisoned lock only means another worker panicked mid-append;
        // the vector is still whole, so keep recording.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        op.index = inner.ops.len() as u64;
        op.time_ns = self.now_ns();
        let line = serde_json::to_string(&op).unwrap_or_else(|e| format!("{{\"unserializable\":\"{e}\"}}"));
        if let Some(file) = inner.file.as_mut() {
            if let Err(e) = writeln!(file, "{line}") {
                inner.write_error = Some(e.to_string());
                inner.file = None;
            }
        }
        inner.ops.push(op.clone());
        op
    }

    /// Flushes the file and returns every entry so far.
    pub fn finish(&self) -> anyhow::Result<Vec<Op>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = inner.file.as_mut() {
            file.flush().map_err(|e| anyhow::anyhow!("flush history: {e}"))?;
        }
        if let Some(e) = &inner.write_error {
            anyhow::bail!("writing the history failed: {e}");
        }
        Ok(inner.ops.clone())
    }
}

/// Reads a history written by [`History`] (for `strata-chaos check`).
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Op>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1)))
        .collect()
}
