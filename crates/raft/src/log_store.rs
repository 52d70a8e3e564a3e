//! [`LogStore`]: openraft's log storage implemented directly on a
//! `strata_log::Log`. The Raft log *is* the partition log: an entry is
//! appended once, as the batch it carries.
//!
//! Durability follows openraft's contract: `append` returns once the entries
//! are written (readable at once) and calls `IOFlushed` after the group
//! commit's fdatasync covers them; the vote is fsynced before `save_vote`
//! returns. Blocking syncs run on tokio's blocking pool.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::OptionalSend;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use strata_log::{Log, LogError, Offset, RaftIndex, Term};

use crate::codec::{entry_to_batch, stored_to_entry};
use crate::limits::REPLICATION_BYTES_MAX;
use crate::types::{C, RaftEntry, RaftLogId, RaftVote, log_id, term_of};

/// Votes saved by any group of this process: a new term, a vote granted, a
/// leader established. The reconciler looks at every replica more often
/// for a while after this changes (`cluster.rs`), since leadership may
/// have moved.
static VOTES_SAVED: AtomicU64 = AtomicU64::new(0);

/// How many votes this process's groups have saved so far.
pub(crate) fn votes_saved() -> u64 {
    VOTES_SAVED.load(Ordering::Relaxed)
}

/// openraft's view of one partition log. Cheap to clone: clones share the log.
#[derive(Clone)]
pub struct LogStore {
    log: Arc<Log>,
}

impl LogStore {
    /// Wraps an open log.
    pub fn new(log: Arc<Log>) -> LogStore {
        LogStore { log }
    }

    /// The underlying log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Entries in `[start, end)` clamped to what is stored, up to a byte budget.
    fn read(&self, start: u64, end: u64, max_bytes: usize) -> io::Result<Vec<RaftEntry>> {
        let state = self.log.state();
        let stored_end = state.last_log_id.map_or(state.first_index.0, |id| id.index.0 + 1).max(state.first_index.0);
        let (start, end) = (start.max(state.first_index.0), end.min(stored_end));
        if start >= end {
            return Ok(Vec::new());
        }
        // The log caps one read (READ_BYTES_MAX): read on until the range or
        // the budget is covered, since openraft's apply path needs every
        // entry of the range it asks for.
        let mut out = Vec::new();
        let mut n_bytes = 0usize;
        let mut next = start;
        while next < end && n_bytes < max_bytes {
            let stored = self.log.entries(RaftIndex(next)..RaftIndex(end), max_bytes - n_bytes).map_err(io_error)?;
            let Some(last) = stored.last() else { break };
            next = last.index.0 + 1;
            for entry in &stored {
                n_bytes = n_bytes.saturating_add(entry.batch.len());
                out.push(stored_to_entry(entry)?);
            }
        }
        Ok(out)
    }
}

/// Converts an engine error for openraft (which treats any as fatal).
pub(crate) fn io_error(err: LogError) -> io::Error {
    io::Error::other(err)
}

fn range_to_bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, LogError> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)?.map_err(io_error)
}

impl RaftLogReader<C> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<RaftEntry>, io::Error> {
        let (start, end) = range_to_bounds(&range);
        self.read(start, end, usize::MAX)
    }

    async fn read_vote(&mut self) -> Result<Option<RaftVote>, io::Error> {
        let vote = self.log.meta().vote;
        if vote.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&vote).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<RaftEntry>, io::Error> {
        // Replication reads: a prefix bounded in bytes, so one AppendEntries
        // stays within the transport's message limit.
        self.read(start, end, REPLICATION_BYTES_MAX)
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let state = self.log.state();
        let to_id = |id: strata_log::LogId| log_id(id.term.0, id.index.0);
        Ok(LogState { last_purged_log_id: state.last_purged.map(to_id), last_log_id: state.last_log_id.map(to_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &RaftVote) -> Result<(), io::Error> {
        let bytes = serde_json::to_vec(vote).map_err(io::Error::other)?;
        let log = self.log.clone();
        blocking(move || log.save_vote(&bytes)).await?;
        VOTES_SAVED.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batches = Vec::new();
        let mut first_index = None;
        for entry in entries {
            first_index.get_or_insert(entry.log_id.index);
            batches.push((entry_to_batch(&entry)?, Term(term_of(&entry.log_id)), entry.log_id.index));
        }
        if let Some(first) = first_index {
            let state = self.log.state();
            let mut end = state.last_log_id.map_or(state.first_index.0, |id| id.index.0 + 1);
            if state.last_log_id.is_none() && first > end {
                // An empty log whose first entry comes at a later index.
                self.log.rebase_empty(RaftIndex(first)).map_err(io_error)?;
                end = first;
            }
            if first != end {
                return Err(io::Error::other(format!("append at index {first} but the log ends at {end}")));
            }
        }
        // Every entry's batch was validated in this process (see
        // `BatchData`), so the log skips the CRC; a follower's batches come
        // stamped by the leader and are written without a copy.
        let items: Vec<(bytes::Bytes, Term)> = batches.iter().map(|(b, t, _)| (b.clone(), *t)).collect();
        let appended = self.log.append_verified(&items).map_err(io_error)?;
        for ((_, _, want), got) in batches.iter().zip(&appended) {
            debug_assert_eq!(*want, got.index.0, "the log assigns the index openraft chose");
        }
        self.log.flush(Box::new(move |result| callback.io_completed(result.map_err(io_error))));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<RaftLogId>) -> Result<(), io::Error> {
        let first = self.log.state().first_index;
        let from = RaftIndex(last_log_id.map_or(0, |id| id.index + 1)).max(first);
        let log = self.log.clone();
        blocking(move || log.truncate_from(from)).await
    }

    async fn purge(&mut self, upto: RaftLogId) -> Result<(), io::Error> {
        let log = self.log.clone();
        blocking(move || {
            let state = log.state();
            let end = state.last_log_id.map_or(state.first_index.0, |id| id.index.0 + 1);
            if upto.index >= end {
                // Past everything stored (after a snapshot install, say): the
                // log restarts after `upto`, at the offset it had reached.
                let id = strata_log::LogId { term: Term(term_of(&upto)), index: RaftIndex(upto.index) };
                if state.last_purged == Some(id) {
                    return Ok(());
                }
                return log.reset(id, Offset(state.next_offset.0));
            }
            log.purge_upto(RaftIndex(upto.index))
        })
        .await
    }
}
