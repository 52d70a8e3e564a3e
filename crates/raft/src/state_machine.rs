//! The partition state machine: what applying committed entries yields.
//!
//! Its state is small: the last applied log id, the membership, and the high
//! watermark (the offset after the last applied data batch; consumers read
//! below it). Records are not copied anywhere: they stay in the log.
//!
//! Snapshots are tiny (that state, as JSON) and saved durably in the
//! partition directory as `snapshot`, replaced atomically. A follower whose
//! log is behind a snapshot it installs resets its log to start right after
//! it, at the snapshot's next offset.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use futures::{Stream, TryStreamExt};
use openraft::async_runtime::WatchReceiver;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::WatchReceiverOf;
use openraft::{EntryPayload, OptionalSend, RaftMetrics};
use serde::{Deserialize, Serialize};
use strata_log::{Log, Offset, RaftIndex, Term};

use crate::limits::FOLLOWER_HOLD_ENTRIES_MAX;
use crate::log_store::io_error;
use crate::metadata::{ClusterMetadata, MetadataCommand};
use crate::producer::{ProducerStates, SequenceCheck, SequencedBatch, last_seq};
use crate::types::{C, RaftLogId, RaftMembership, WriteResult, term_of};

/// A snapshot's data: what a replica needs to continue after the snapshot's
/// last log id without the entries before it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSnapshot {
    /// Offset the next data batch after the snapshot gets.
    pub next_offset: u64,
    /// Idempotent producers' recent batches.
    #[serde(default)]
    pub producers: ProducerStates,
    /// The cluster metadata, in the controller group only.
    #[serde(default)]
    pub metadata: Option<ClusterMetadata>,
    /// The first Raft index the leader's last retention decision keeps
    /// (see `retention.rs`); 0 before any.
    #[serde(default)]
    pub log_start_index: u64,
    /// The first offset readable since the last DeleteRecords (see
    /// `retention::delete_records`); 0 before any.
    #[serde(default)]
    pub log_start_offset: u64,
}

/// The first index to keep cached: `next` (the first not applied), or what
/// a follower still needs (one past its last entry), if lower and within
/// [`FOLLOWER_HOLD_ENTRIES_MAX`] of `next`.
fn hold_floor(next: u64, followers_need: impl Iterator<Item = u64>) -> u64 {
    followers_need.filter(|need| next.saturating_sub(*need) <= FOLLOWER_HOLD_ENTRIES_MAX).fold(next, u64::min)
}

/// A snapshot with its metadata, as kept on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: openraft::alias::SnapshotMetaOf<C>,
    data: PartitionSnapshot,
}

#[derive(Debug, Default)]
struct State {
    last_applied: Option<RaftLogId>,
    membership: RaftMembership,
    high_watermark: u64,
    producers: ProducerStates,
    /// `Some` in the controller group: its records are metadata commands.
    /// Shared with readers, who take it without copying (a request reads
    /// it on every call); an apply copies it only while a reader holds it.
    metadata: Option<Arc<ClusterMetadata>>,
    /// The first index the last applied retention decision keeps.
    log_start_index: u64,
    /// The first offset readable after the last applied DeleteRecords.
    log_start_offset: u64,
    snapshot: Option<StoredSnapshot>,
}

/// The state machine of one partition group. Clones share the state, so the
/// broker can read the high watermark while openraft owns the machine.
#[derive(Clone)]
pub struct PartitionStateMachine {
    log: Arc<Log>,
    /// Shared, not owned: the reconciler and quiescence clone every group's
    /// handle several times a second, and a `PathBuf` would allocate each
    /// time.
    snapshot_path: Arc<Path>,
    state: Arc<Mutex<State>>,
    /// The high watermark, for readers that wait for it to move (long polls).
    high_watermark: Arc<tokio::sync::watch::Sender<u64>>,
    /// Woken when a retention decision is applied (see
    /// `notify_log_start_on`).
    log_start_moved: Arc<std::sync::OnceLock<Arc<tokio::sync::Notify>>>,
    /// The group's Raft metrics once it runs (see `watch_replication`).
    metrics: Arc<OnceLock<WatchReceiverOf<C, RaftMetrics<C>>>>,
}

const SNAPSHOT_FILE: &str = "snapshot";

impl PartitionStateMachine {
    /// Opens the state machine of the partition whose directory is `dir`,
    /// starting from its saved snapshot if there is one.
    pub fn open(dir: &Path, log: Arc<Log>) -> io::Result<PartitionStateMachine> {
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let _ = std::fs::remove_file(dir.join(format!("{SNAPSHOT_FILE}.tmp")));
        let mut state = State::default();
        match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let stored: StoredSnapshot = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("read {}: {e}", snapshot_path.display()))
                })?;
                state.last_applied = stored.meta.last_log_id;
                state.membership = stored.meta.last_membership.clone();
                state.high_watermark = stored.data.next_offset;
                state.producers = stored.data.producers.clone();
                state.metadata = stored.data.metadata.clone().map(Arc::new);
                state.log_start_index = stored.data.log_start_index;
                state.log_start_offset = stored.data.log_start_offset;
                log.raise_log_start_offset(Offset(state.log_start_offset));
                // A crash between saving an installed snapshot and resetting
                // the log leaves the log ending before the snapshot: finish.
                if let Some(last) = stored.meta.last_log_id {
                    let log_state = log.state();
                    let end = log_state.last_log_id.map_or(log_state.first_index.0, |id| id.index.0 + 1);
                    if last.index + 1 > end {
                        let id = strata_log::LogId { term: Term(term_of(&last)), index: RaftIndex(last.index) };
                        log.reset(id, Offset(stored.data.next_offset)).map_err(io_error)?;
                    }
                }
                state.snapshot = Some(stored);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        log.hold_cache_from(RaftIndex(state.last_applied.map_or(0, |id| id.index + 1)));
        let high_watermark = Arc::new(tokio::sync::watch::Sender::new(state.high_watermark));
        Ok(PartitionStateMachine {
            log,
            snapshot_path: snapshot_path.into(),
            state: Arc::new(Mutex::new(state)),
            high_watermark,
            log_start_moved: Arc::default(),
            metrics: Arc::default(),
        })
    }

    /// Opens the state machine of the controller group: like a partition's,
    /// and its records are applied as metadata commands.
    pub fn open_controller(dir: &Path, log: Arc<Log>) -> io::Result<PartitionStateMachine> {
        let sm = PartitionStateMachine::open(dir, log)?;
        sm.lock().metadata.get_or_insert_with(Arc::default);
        Ok(sm)
    }

    /// The cluster metadata this node has applied (controller group only).
    pub fn metadata(&self) -> Option<Arc<ClusterMetadata>> {
        self.lock().metadata.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The offset below which records are committed and may be served.
    pub fn high_watermark(&self) -> Offset {
        Offset(self.lock().high_watermark)
    }

    /// A receiver that sees the high watermark change.
    pub fn watch_high_watermark(&self) -> tokio::sync::watch::Receiver<u64> {
        self.high_watermark.subscribe()
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<RaftLogId> {
        self.lock().last_applied
    }

    /// The first Raft index the last applied retention decision keeps (0
    /// before any): entries before it may be purged on every replica.
    pub fn log_start_index(&self) -> u64 {
        self.lock().log_start_index
    }

    /// Has `notify` woken whenever this replica applies a retention
    /// decision, so the purge need not wait for the next scheduled pass
    /// (set once; later calls are ignored).
    pub fn notify_log_start_on(&self, notify: Arc<tokio::sync::Notify>) {
        let _ = self.log_start_moved.set(notify);
    }

    /// Gives the state machine its group's Raft metrics, so that as a
    /// leader it keeps in the log's tail cache what followers still need too.
    pub fn watch_replication(&self, metrics: WatchReceiverOf<C, RaftMetrics<C>>) {
        let _ = self.metrics.set(metrics);
    }

    /// The first index the log's tail cache should keep, `next` being the
    /// first not applied: on a leader, also what a follower at most
    /// [`FOLLOWER_HOLD_ENTRIES_MAX`] entries behind still lacks. The leader
    /// commits with the faster followers; the slower one's replication then
    /// reads entries already applied, which would otherwise be read back
    /// from the device.
    fn hold_from(&self, next: u64) -> u64 {
        let Some(metrics) = self.metrics.get() else { return next };
        let metrics = metrics.borrow_watched();
        let Some(replication) = metrics.replication.as_ref() else { return next };
        let needs = replication
            .iter()
            .filter(|(id, _)| **id != metrics.id)
            .map(|(_, matched)| matched.map_or(0, |m| m.index + 1));
        hold_floor(next, needs)
    }

    /// The last log id of the snapshot this replica holds, if any.
    pub fn snapshot_last(&self) -> Option<RaftLogId> {
        self.lock().snapshot.as_ref().and_then(|s| s.meta.last_log_id)
    }

    /// Checks an idempotent producer's batch against what was applied.
    pub fn check_sequence(&self, producer_id: i64, epoch: i16, first_seq: i32, last_seq: i32) -> SequenceCheck {
        self.lock().producers.check(producer_id, epoch, first_seq, last_seq)
    }

    fn save(&self, stored: &StoredSnapshot) -> io::Result<()> {
        let bytes = serde_json::to_vec(stored).map_err(io::Error::other)?;
        write_atomically(&self.snapshot_path, &bytes)
    }
}

/// Applies the metadata commands in one controller batch. A record that is
/// not a command is skipped (and logged): the controller log is written only
/// through the controller, so this is damage, not input.
fn apply_metadata(metadata: &mut ClusterMetadata, batch: &bytes::Bytes) {
    let records = match strata_batch::decode_records(batch) {
        Ok(records) => records,
        Err(err) => {
            tracing::error!(error = %err, "controller batch does not decode; skipped");
            return;
        }
    };
    for record in records {
        let Ok(record) = record else { return };
        let Some(value) = record.value else { continue };
        match serde_json::from_slice::<MetadataCommand>(&value) {
            Ok(command) => metadata.apply(record.offset as u64, &command),
            Err(err) => tracing::error!(offset = record.offset, error = %err, "not a metadata command; skipped"),
        }
    }
}

/// Write to `path.tmp`, fsync, rename over `path`, fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Applies one entry to `state`: what `apply` does per entry, and what a
/// snapshot at the log start replays.
fn apply_entry(state: &mut State, entry: &crate::types::RaftEntry) -> io::Result<WriteResult> {
    state.last_applied = Some(entry.log_id);
    let base_offset = state.high_watermark;
    Ok(match &entry.payload {
        EntryPayload::Normal(batch) => {
            let header = strata_batch::BatchHeader::parse(batch.bytes())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if header.is_control() {
                // Only Strata's own control entries are proposed as Normal
                // ones: the retention decision.
                if let Some(decision) = crate::retention::decoded_log_start(batch.bytes()) {
                    state.log_start_index = state.log_start_index.max(decision.first_index);
                    if let Some(offset) = decision.first_offset {
                        state.log_start_offset = state.log_start_offset.max(offset);
                    }
                }
                return Ok(WriteResult { base_offset, n_offsets: 0 });
            }
            let n_offsets = header.n_offsets();
            state.high_watermark += n_offsets;
            if header.producer_id >= 0 {
                let first_seq = header.base_sequence;
                let last_seq = last_seq(first_seq, header.record_count);
                let batch = SequencedBatch { first_seq, last_seq, base_offset, n_offsets };
                state.producers.record(header.producer_id, header.producer_epoch, batch);
            }
            if let Some(metadata) = state.metadata.as_mut() {
                apply_metadata(Arc::make_mut(metadata), batch.bytes());
            }
            WriteResult { base_offset, n_offsets }
        }
        EntryPayload::Blank => WriteResult { base_offset, n_offsets: 0 },
        EntryPayload::Membership(membership) => {
            state.membership = RaftMembership::new(Some(entry.log_id), membership.clone());
            WriteResult { base_offset, n_offsets: 0 }
        }
    })
}

impl State {
    /// The state a stored snapshot describes (nothing else set).
    fn of_snapshot(stored: &StoredSnapshot) -> State {
        State {
            last_applied: stored.meta.last_log_id,
            membership: stored.meta.last_membership.clone(),
            high_watermark: stored.data.next_offset,
            producers: stored.data.producers.clone(),
            metadata: stored.data.metadata.clone().map(Arc::new),
            log_start_index: stored.data.log_start_index,
            log_start_offset: stored.data.log_start_offset,
            snapshot: None,
        }
    }

    fn to_snapshot(&self) -> StoredSnapshot {
        StoredSnapshot {
            meta: openraft::SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone() },
            data: PartitionSnapshot {
                next_offset: self.high_watermark,
                producers: self.producers.clone(),
                metadata: self.metadata.as_deref().cloned(),
                log_start_index: self.log_start_index,
                log_start_offset: self.log_start_offset,
            },
        }
    }
}

impl PartitionStateMachine {
    /// The snapshot to build now. With a retention decision pending (the log
    /// start `X` is past the current snapshot), the snapshot is taken *at
    /// the log start* — after entry `X - 1` — by replaying the entries
    /// between the current snapshot and `X` (still in the log: they are the
    /// ones about to be purged) over the current snapshot's state. A
    /// follower that installs it then receives every entry the leader keeps
    /// and ends up holding the same records. Without a decision, the
    /// snapshot is the applied state.
    fn snapshot_to_build(&self) -> io::Result<StoredSnapshot> {
        let (applied, start, base) = {
            let state = self.lock();
            if state.log_start_index == 0 {
                return Ok(state.to_snapshot());
            }
            (state.last_applied, state.log_start_index, state.snapshot.clone())
        };
        let upto = start - 1;
        let covered = base.as_ref().and_then(|b| b.meta.last_log_id).map_or(0, |id| id.index + 1);
        if applied.is_none_or(|a| a.index < upto) || covered > upto {
            return Ok(self.lock().to_snapshot());
        }
        let mut scratch = match &base {
            Some(stored) => State::of_snapshot(stored),
            None => State { metadata: self.lock().metadata.as_ref().map(|_| Arc::default()), ..State::default() },
        };
        let log_first = self.log.state().first_index.0;
        if log_first > covered {
            // The entries to replay are gone (purged past the snapshot
            // without one, which this module never does): the applied state.
            tracing::warn!(covered, log_first, "cannot replay to the log start; snapshot at the applied index");
            return Ok(self.lock().to_snapshot());
        }
        let mut next = covered;
        while next <= upto {
            let entries = self
                .log
                .entries(RaftIndex(next)..RaftIndex(upto + 1), usize::MAX)
                .map_err(crate::log_store::io_error)?;
            let Some(last) = entries.last() else { break };
            next = last.index.0 + 1;
            for stored in &entries {
                apply_entry(&mut scratch, &crate::codec::stored_to_entry(stored)?)?;
            }
        }
        if scratch.last_applied.is_none_or(|id| id.index != upto) {
            return Err(io::Error::other(format!("replay to the log start stopped before index {upto}")));
        }
        scratch.log_start_index = scratch.log_start_index.max(start);
        scratch.log_start_offset = scratch.log_start_offset.max(self.lock().log_start_offset);
        Ok(scratch.to_snapshot())
    }
}

impl RaftSnapshotBuilder<C> for PartitionStateMachine {
    type SnapshotData = PartitionSnapshot;

    async fn build_snapshot(&mut self) -> Result<openraft::alias::SnapshotOf<C, PartitionSnapshot>, io::Error> {
        let this = self.clone();
        let stored =
            tokio::task::spawn_blocking(move || this.snapshot_to_build()).await.map_err(io::Error::other)??;
        let this = self.clone();
        let to_save = stored.clone();
        tokio::task::spawn_blocking(move || this.save(&to_save)).await.map_err(io::Error::other)??;
        self.lock().snapshot = Some(stored.clone());
        Ok(openraft::Snapshot { meta: stored.meta, snapshot: stored.data })
    }
}

impl RaftStateMachine<C> for PartitionStateMachine {
    type SnapshotData = PartitionSnapshot;
    type SnapshotBuilder = PartitionStateMachine;

    async fn applied_state(&mut self) -> Result<(Option<RaftLogId>, RaftMembership), io::Error> {
        let state = self.lock();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        let mut applied = None;
        while let Some((entry, responder)) = entries.try_next().await? {
            applied = Some(entry.log_id.index);
            let (result, high_watermark, log_start_moved) = {
                let mut state = self.lock();
                let (log_start, first_offset) = (state.log_start_index, state.log_start_offset);
                let result = apply_entry(&mut state, &entry)?;
                if state.log_start_offset != first_offset {
                    self.log.raise_log_start_offset(Offset(state.log_start_offset));
                }
                (result, state.high_watermark, state.log_start_index != log_start)
            };
            if log_start_moved {
                if let Some(notify) = self.log_start_moved.get() {
                    notify.notify_one();
                }
            }
            self.high_watermark.send_if_modified(|hw| std::mem::replace(hw, high_watermark) != high_watermark);
            if let Some(responder) = responder {
                responder.send(result);
            }
        }
        if let Some(index) = applied {
            // Entries past it stay in the log's tail cache until applied
            // (and replicated, on a leader).
            self.log.hold_cache_from(RaftIndex(self.hold_from(index + 1)));
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &openraft::alias::SnapshotMetaOf<C>,
        snapshot: PartitionSnapshot,
    ) -> Result<(), io::Error> {
        let stored = StoredSnapshot { meta: meta.clone(), data: snapshot };
        let this = self.clone();
        let to_save = stored.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            this.save(&to_save)?;
            // A log that ends before the snapshot restarts right after it.
            if let Some(last) = to_save.meta.last_log_id {
                let state = this.log.state();
                let end = state.last_log_id.map_or(0, |id| id.index.0 + 1);
                if last.index + 1 > end {
                    let id = strata_log::LogId { term: Term(term_of(&last)), index: RaftIndex(last.index) };
                    this.log.reset(id, Offset(to_save.data.next_offset)).map_err(io_error)?;
                }
            }
            Ok(())
        })
        .await
        .map_err(io::Error::other)??;
        let mut state = self.lock();
        state.last_applied = stored.meta.last_log_id;
        state.membership = stored.meta.last_membership.clone();
        state.high_watermark = stored.data.next_offset;
        state.producers = stored.data.producers.clone();
        state.log_start_index = state.log_start_index.max(stored.data.log_start_index);
        state.log_start_offset = state.log_start_offset.max(stored.data.log_start_offset);
        self.log.raise_log_start_offset(Offset(state.log_start_offset));
        if state.metadata.is_some() {
            state.metadata = Some(Arc::new(stored.data.metadata.clone().unwrap_or_default()));
        }
        state.snapshot = Some(stored);
        self.high_watermark.send_replace(state.high_watermark);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::alias::SnapshotOf<C, PartitionSnapshot>>, io::Error> {
        Ok(self.lock().snapshot.clone().map(|s| openraft::Snapshot { meta: s.meta, snapshot: s.data }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_held_for_the_slowest_follower_unless_it_is_far_behind() {
        assert_eq!(hold_floor(100, std::iter::empty()), 100, "a follower, or no leader: what is not applied");
        assert_eq!(hold_floor(100, [120, 95].into_iter()), 95, "a follower behind the applied index");
        assert_eq!(hold_floor(100, [120, 130].into_iter()), 100, "followers ahead of the applied index");
        let far = 100 - FOLLOWER_HOLD_ENTRIES_MAX - 1;
        assert_eq!(hold_floor(100, [far, 98].into_iter()), 98, "one too far behind is read for from the file");
        assert_eq!(hold_floor(100, [100 - FOLLOWER_HOLD_ENTRIES_MAX].into_iter()), 100 - FOLLOWER_HOLD_ENTRIES_MAX);
        assert_eq!(hold_floor(10, [0].into_iter()), 0, "a follower with nothing yet, early in the log");
    }
}
