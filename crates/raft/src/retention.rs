//! Retention under replication: one decision, taken by the partition's
//! leader, carried out by every replica.
//!
//! Replicas roll their segments at their own moments, and their clocks
//! differ, so each deciding for itself would leave them holding different
//! data. Instead the leader decides the new first Raft index (the end of
//! its expired segments) and proposes it as a `LogStart` control entry. It
//! takes no offset and is never served to consumers; applying it records
//! the index in the state machine (and so in snapshots). Each replica then
//! snapshots at or past it and purges the entries before it
//! ([`purge_to_log_start`]); a follower that is behind the leader's log
//! start installs the leader's snapshot and continues from there.
//!
//! Where the data is deleted and when the leader decides belongs to the
//! broker's scheduler; this module provides the two steps.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strata_batch::{ControlType, build_control};

use crate::node::Group;
use crate::partition::{ProduceError, from_write_error};
use crate::types::BatchData;

/// How long a replica waits for the snapshot it asked for before leaving
/// the purge to its next pass.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

/// A decision to start a partition's log later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogStartDecision {
    /// Entries before this Raft index may be purged.
    pub first_index: u64,
    /// Records before this offset are deleted (Kafka's DeleteRecords),
    /// though the entry at `first_index` may hold some of them; absent in
    /// retention's decisions, which start the log at a whole entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_offset: Option<u64>,
}

/// The control batch carrying a decision to start the log at `first_index`
/// (and, with `first_offset`, to read from that offset on).
pub fn log_start_batch(first_index: u64, first_offset: Option<u64>, timestamp_ms: i64) -> Bytes {
    let payload =
        serde_json::to_vec(&LogStartDecision { first_index, first_offset }).expect("a plain struct serializes");
    build_control(ControlType::LogStart, timestamp_ms, &payload)
}

/// The decision a `LogStart` control batch carries, or `None` for any
/// other batch (or a damaged one, which is then logged).
pub(crate) fn decoded_log_start(batch: &Bytes) -> Option<LogStartDecision> {
    let record = strata_batch::decode_records(batch).ok()?.next()?.ok()?;
    if ControlType::from_key(record.key.as_deref()?) != Some(ControlType::LogStart) {
        return None;
    }
    match serde_json::from_slice::<LogStartDecision>(record.value.as_deref()?) {
        Ok(decision) => Some(decision),
        Err(err) => {
            tracing::error!(error = %err, "a log-start entry does not decode; ignored");
            None
        }
    }
}

/// On the leader: proposes that the partition's log start at `first_index`.
/// Returns once the decision is committed and applied here.
pub async fn propose_log_start(group: &Group, first_index: u64, now_ms: i64) -> Result<(), ProduceError> {
    group.ensure_awake().await;
    group
        .raft
        .client_write(BatchData::checked(log_start_batch(first_index, None, now_ms)))
        .await
        .map(|_| ())
        .map_err(|e| from_write_error(group, e))
}

/// On the leader: deletes the records before `offset` (Kafka's
/// DeleteRecords; the caller refuses offsets past the high watermark, and
/// any is taken as at most it): proposes a log start at the first entry
/// holding `offset` or a later one, with `offset` as the first readable
/// offset. Returns the partition's log start offset once the decision is
/// committed and applied here (the current one, unchanged, when `offset`
/// is not past it).
pub async fn delete_records(group: &Group, offset: u64, now_ms: i64) -> Result<u64, ProduceError> {
    group.ensure_awake().await;
    let start = group.log.state().log_start_offset.0;
    let offset = offset.min(group.state_machine.high_watermark().0);
    if offset <= start {
        return Ok(start);
    }
    let first_index = group.log.index_of_offset(strata_log::Offset(offset)).0;
    group
        .raft
        .client_write(BatchData::checked(log_start_batch(first_index, Some(offset), now_ms)))
        .await
        .map_err(|e| from_write_error(group, e))?;
    Ok(group.log.state().log_start_offset.0)
}

/// On the leader: the lowest Raft index some follower still needs (one past
/// the last entry it has; 0 for one that has acknowledged nothing), or
/// `None` when this node does not lead or has no followers.
pub fn lowest_follower_need(group: &Group) -> Option<u64> {
    use openraft::async_runtime::WatchReceiver;
    let metrics = group.raft.metrics().borrow_watched().clone();
    let replication = metrics.replication?;
    replication.iter().filter(|(id, _)| **id != metrics.id).map(|(_, matched)| matched.map_or(0, |m| m.index + 1)).min()
}

/// On every replica: carries out the last applied retention decision —
/// snapshots at or past it if the current snapshot is older, then purges
/// the entries before it. Returns whether a purge was asked for. Harmless
/// to call often: with nothing to do it only reads state.
pub async fn purge_to_log_start(group: &Group) -> Result<bool, String> {
    let target = group.state_machine.log_start_index();
    let first = group.log.state().first_index.0;
    if target <= first {
        return Ok(false);
    }
    let upto = target - 1;
    let applied = group.state_machine.last_applied().map_or(0, |id| id.index);
    if applied < upto {
        return Ok(false); // the decision is ahead of what this replica applied
    }
    if group.state_machine.snapshot_last().is_none_or(|id| id.index < upto) {
        group.raft.trigger().snapshot().await.map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + SNAPSHOT_WAIT;
        while group.state_machine.snapshot_last().is_none_or(|id| id.index < upto) {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("no snapshot covering index {upto} within {SNAPSHOT_WAIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    group.raft.trigger().purge_log(upto).await.map_err(|e| e.to_string())?;
    Ok(true)
}
