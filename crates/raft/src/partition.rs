//! The produce path of one partition on its leader: validation, the
//! idempotent-producer check, and the proposal to Raft.
//!
//! A batch from an idempotent producer is checked, under one lock per
//! partition, against the applied producer state *and* the batches this
//! leader proposed that are not applied yet; only a new batch is proposed,
//! and it is submitted before the lock is released, so proposals follow the
//! order of the checks. A retry of a batch still in flight waits for the
//! original's answer. The first produce of a leadership term first waits
//! until everything committed before the term is applied
//! (`ensure_linearizable`), so a retry of a batch written under the previous
//! leader is recognised.

use std::collections::HashMap;

use bytes::Bytes;
use openraft::impls::ProgressResponder;
use tokio::sync::{Mutex, oneshot, watch};

use crate::node::Group;
use crate::producer::{SequenceCheck, last_seq, next_seq};
use crate::types::{BatchData, WriteResult};

/// Why a produce failed. Cheap to clone (shared by retries of one batch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    /// This node does not lead the partition; retry on the leader.
    #[error("not the leader; leader is {leader:?}")]
    NotLeader {
        /// The leader, if known.
        leader: Option<u64>,
    },
    /// The batch is not a valid RecordBatch v2.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// The producer skipped or rewound sequence numbers.
    #[error("out of order sequence: expected {expected}, got {got}")]
    OutOfOrderSequence {
        /// Sequence the producer should have sent.
        expected: i32,
        /// Sequence it sent.
        got: i32,
    },
    /// The producer's epoch is older than the partition's.
    #[error("producer fenced: epoch {current} is current")]
    ProducerFenced {
        /// The current epoch.
        current: i16,
    },
    /// Raft failed (stopped, storage error).
    #[error("replication failed: {0}")]
    Raft(String),
    /// The node a write was forwarded to could not be reached; retriable.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Where a produced batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offsets the batch took.
    pub n_offsets: u64,
    /// True when the batch was already stored and is answered from there.
    pub duplicate: bool,
}

type Outcome = Option<Result<WriteResult, ProduceError>>;

struct Pending {
    epoch: i16,
    first_seq: i32,
    last_seq: i32,
    outcome: watch::Receiver<Outcome>,
}

#[derive(Default)]
struct GateState {
    /// The term in which the applied state was last brought up to the commit.
    linearized_term: Option<u64>,
    pending: HashMap<i64, Vec<Pending>>,
}

/// The per-partition lock and in-flight table of the produce path.
#[derive(Default)]
pub struct ProduceGate {
    state: Mutex<GateState>,
    /// Woken whenever a batch is proposed: a batch that arrived ahead of
    /// its predecessor waits on it (see `submit`).
    proposed: tokio::sync::Notify,
}

fn not_leader(group: &Group) -> ProduceError {
    use openraft::async_runtime::WatchReceiver;
    ProduceError::NotLeader { leader: group.raft.metrics().borrow_watched().current_leader }
}

pub(crate) fn from_write_error(group: &Group, err: impl std::fmt::Display + ForwardHint) -> ProduceError {
    if err.is_forward() { not_leader(group) } else { ProduceError::Raft(err.to_string()) }
}

/// Tells a Raft error that means "ask the leader" from a real failure.
pub(crate) trait ForwardHint {
    fn is_forward(&self) -> bool;
}

impl<E: std::error::Error> ForwardHint for openraft::errors::RaftError<crate::C, E>
where
    E: ForwardHintInner,
{
    fn is_forward(&self) -> bool {
        self.api_error().is_some_and(ForwardHintInner::is_forward)
    }
}

trait ForwardHintInner {
    fn is_forward(&self) -> bool;
}

impl ForwardHintInner for openraft::errors::ClientWriteError<crate::C> {
    fn is_forward(&self) -> bool {
        matches!(self, openraft::errors::ClientWriteError::ForwardToLeader(_))
    }
}

impl ForwardHintInner for openraft::errors::LinearizableReadError<crate::C> {
    fn is_forward(&self) -> bool {
        matches!(self, openraft::errors::LinearizableReadError::ForwardToLeader(_))
    }
}

/// Appends `batch` to the partition through Raft, answering once a majority
/// has it on disk and the leader applied it.
pub async fn produce(group: &Group, batch: Bytes) -> Result<Produced, ProduceError> {
    let batch = BatchData::new(batch).map_err(|e| ProduceError::InvalidBatch(e.to_string()))?;
    submit(group, batch).await?.wait().await
}

/// A batch the leader accepted: checked, sequenced and handed to Raft, not
/// yet committed.
pub enum Submission {
    /// A retry of a batch already stored: answered from there.
    Stored(Produced),
    /// Proposed (or a retry of a batch in flight): its outcome will come.
    InFlight(oneshot::Receiver<Result<Produced, ProduceError>>),
}

impl Submission {
    /// Waits for the batch to be committed and applied.
    pub async fn wait(self) -> Result<Produced, ProduceError> {
        match self {
            Submission::Stored(produced) => Ok(produced),
            Submission::InFlight(answer) => {
                answer.await.unwrap_or_else(|_| Err(ProduceError::Raft("write abandoned".into())))
            }
        }
    }
}

/// Checks an idempotent producer's sequence of a validated `batch`, and
/// hands it to Raft in the order of the checks; returns once it is
/// proposed. The outcome is carried to the [`Submission`] by a task, so a
/// caller that does not wait (acks = leader) leaves nothing half done.
pub async fn submit(group: &Group, batch: BatchData) -> Result<Submission, ProduceError> {
    let header =
        strata_batch::BatchHeader::parse(batch.bytes()).map_err(|e| ProduceError::InvalidBatch(e.to_string()))?;
    if header.is_control() {
        return Err(ProduceError::InvalidBatch("clients may not write control batches".into()));
    }
    group.ensure_awake().await;
    let (tx, rx) = oneshot::channel();
    if header.producer_id < 0 {
        let (responder, answer) = ProgressResponder::complete_only();
        let proposed = std::time::Instant::now();
        group.raft.client_write_ff(batch, Some(responder)).await.map_err(|e| ProduceError::Raft(e.to_string()))?;
        let group = group.clone();
        tokio::spawn(async move {
            let result = outcome_of(&group, answer.await);
            if result.is_ok() {
                crate::stats::record_commit(proposed.elapsed());
            }
            let _ = tx.send(result.map(|w| produced(w, false)));
        });
        return Ok(Submission::InFlight(rx));
    }
    let (pid, epoch) = (header.producer_id, header.producer_epoch);
    let first = header.base_sequence;
    let last = last_seq(first, header.record_count);

    // A producer pipelines up to 5 batches per partition, and requests on
    // one connection are served concurrently, so a batch may get here just
    // before the one it follows. A gap is therefore waited out briefly
    // (until the predecessor is proposed), not refused at once.
    let gap_deadline = tokio::time::Instant::now() + crate::limits::SEQUENCE_GAP_WAIT;
    let mut gate = loop {
        let mut gate = group.gate.state.lock().await;
        let term = {
            use openraft::async_runtime::WatchReceiver;
            group.raft.metrics().borrow_watched().current_term
        };
        if gate.linearized_term != Some(term) {
            group
                .raft
                .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
                .await
                .map_err(|e| from_write_error(group, e))?;
            gate.linearized_term = Some(term);
            gate.pending.clear();
        }
        let in_flight = gate.pending.get(&pid).map(|v| v.as_slice()).unwrap_or_default();
        if let Some(same) = in_flight.iter().find(|p| p.epoch == epoch && p.first_seq == first && p.last_seq == last) {
            let mut outcome = same.outcome.clone();
            drop(gate);
            tokio::spawn(async move {
                let result = match outcome.wait_for(Option::is_some).await {
                    Ok(result) => result.clone().expect("waited for Some").map(|w| produced(w, true)),
                    Err(_) => Err(ProduceError::Raft("write abandoned".into())),
                };
                let _ = tx.send(result);
            });
            return Ok(Submission::InFlight(rx));
        }
        // Applied state first: a retry of an applied batch is a duplicate
        // even while later batches are in flight; then the newest in-flight
        // batch the applied state does not cover yet decides what comes next.
        let applied = group.state_machine.check_sequence(pid, epoch, first, last);
        let in_flight_last_seqs = in_flight.iter().filter(|p| p.epoch == epoch).map(|p| p.last_seq);
        let newest_in_flight = newest_unapplied(in_flight_last_seqs, applied, first);
        match combine_checks(applied, newest_in_flight, first) {
            SequenceCheck::New => break gate,
            SequenceCheck::Duplicate(stored) => {
                return Ok(Submission::Stored(Produced {
                    base_offset: stored.base_offset,
                    n_offsets: stored.n_offsets,
                    duplicate: true,
                }));
            }
            SequenceCheck::OutOfOrder { expected, got }
                if is_ahead(expected, got) && tokio::time::Instant::now() < gap_deadline =>
            {
                let proposed = group.gate.proposed.notified();
                tokio::pin!(proposed);
                proposed.as_mut().enable();
                drop(gate);
                let _ = tokio::time::timeout_at(gap_deadline, proposed).await;
            }
            SequenceCheck::OutOfOrder { expected, got } => {
                return Err(ProduceError::OutOfOrderSequence { expected, got });
            }
            SequenceCheck::Fenced { current } => return Err(ProduceError::ProducerFenced { current }),
        }
    };
    // Submit while holding the gate, so proposals keep the order of checks.
    let (responder, answer) = ProgressResponder::complete_only();
    let proposed = std::time::Instant::now();
    group.raft.client_write_ff(batch, Some(responder)).await.map_err(|e| ProduceError::Raft(e.to_string()))?;
    let (publish, outcome) = watch::channel::<Outcome>(None);
    gate.pending.entry(pid).or_default().push(Pending { epoch, first_seq: first, last_seq: last, outcome });
    drop(gate);
    group.gate.proposed.notify_waiters();

    let group = group.clone();
    tokio::spawn(async move {
        let result = outcome_of(&group, answer.await);
        if result.is_ok() {
            crate::stats::record_commit(proposed.elapsed());
        }
        let _ = publish.send(Some(result.clone()));
        let mut gate = group.gate.state.lock().await;
        if let Some(list) = gate.pending.get_mut(&pid) {
            list.retain(|p| !(p.epoch == epoch && p.first_seq == first));
            if list.is_empty() {
                gate.pending.remove(&pid);
            }
        }
        drop(gate);
        let _ = tx.send(result.map(|w| produced(w, false)));
    });
    Ok(Submission::InFlight(rx))
}

type WriteAnswer = Result<openraft::raft::ClientWriteResponse<crate::C>, openraft::errors::ClientWriteError<crate::C>>;

fn outcome_of<E>(group: &Group, answer: Result<WriteAnswer, E>) -> Result<WriteResult, ProduceError> {
    match answer {
        Ok(Ok(response)) => Ok(response.data),
        Ok(Err(err)) if err.is_forward() => Err(not_leader(group)),
        Ok(Err(err)) => Err(ProduceError::Raft(err.to_string())),
        Err(_) => Err(ProduceError::Raft("raft dropped the write".into())),
    }
}

fn produced(written: WriteResult, duplicate: bool) -> Produced {
    Produced { base_offset: written.base_offset, n_offsets: written.n_offsets, duplicate }
}

/// True when sequence `got` lies ahead of `expected` (a gap, not a rewind),
/// sequences wrapping from `i32::MAX` to 0.
fn is_ahead(expected: i32, got: i32) -> bool {
    let distance = (i64::from(got) - i64::from(expected)).rem_euclid(1 << 31);
    distance > 0 && distance < (1 << 30)
}

/// The last sequence of the newest in-flight batch (of this epoch, oldest
/// first in `last_seqs`) that the applied state does not cover yet. A batch
/// stays in the in-flight table until its outcome's task removes it, and
/// those tasks run in any order: an applied batch can linger there after a
/// later one has left. Taken for the newest, it made the next batch look
/// ahead of its place and wait out `SEQUENCE_GAP_WAIT` for a predecessor
/// that was long applied (500 ms stalls under pipelined produce).
fn newest_unapplied(
    last_seqs: impl DoubleEndedIterator<Item = i32>,
    applied: SequenceCheck,
    first_seq: i32,
) -> Option<i32> {
    let applied_next = match applied {
        SequenceCheck::New => Some(first_seq),
        SequenceCheck::OutOfOrder { expected, .. } => Some(expected),
        SequenceCheck::Duplicate(_) | SequenceCheck::Fenced { .. } => None,
    };
    let mut last_seqs = last_seqs;
    last_seqs.next_back().filter(|last| applied_next.is_none_or(|next| !is_ahead(*last, next)))
}

/// Combines the check against applied state with the newest in-flight batch
/// of the same epoch (its last sequence), if any.
fn combine_checks(applied: SequenceCheck, newest_in_flight_last_seq: Option<i32>, first_seq: i32) -> SequenceCheck {
    match (applied, newest_in_flight_last_seq) {
        (SequenceCheck::Duplicate(_) | SequenceCheck::Fenced { .. }, _) | (_, None) => applied,
        (_, Some(last)) if first_seq == next_seq(last) => SequenceCheck::New,
        (_, Some(last)) => SequenceCheck::OutOfOrder { expected: next_seq(last), got: first_seq },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::SequencedBatch;

    #[test]
    fn a_retry_of_an_applied_batch_is_a_duplicate_even_with_later_batches_in_flight() {
        // Regression: the in-flight batch was consulted first, so the retry
        // of an applied batch was refused as out of order.
        let stored = SequencedBatch { first_seq: 0, last_seq: 4, base_offset: 0, n_offsets: 5 };
        assert_eq!(combine_checks(SequenceCheck::Duplicate(stored), Some(9), 0), SequenceCheck::Duplicate(stored));
        let out_of_order = SequenceCheck::OutOfOrder { expected: 5, got: 10 };
        assert_eq!(combine_checks(out_of_order, Some(9), 10), SequenceCheck::New);
        assert_eq!(
            combine_checks(SequenceCheck::New, Some(9), 12),
            SequenceCheck::OutOfOrder { expected: 10, got: 12 }
        );
        assert_eq!(combine_checks(SequenceCheck::New, None, 12), SequenceCheck::New);
        assert!(is_ahead(10, 12) && !is_ahead(10, 10) && !is_ahead(10, 3));
        // Regression: batches 0-4 and 5-9 were applied, 5-9 had left the
        // in-flight table and 0-4 not yet; the batch 10-14 then waited for
        // a "missing" 5 instead of going.
        let applied = SequenceCheck::New;
        assert_eq!(newest_unapplied([4].into_iter(), applied, 10), None, "an applied batch in the table is stale");
        assert_eq!(combine_checks(applied, newest_unapplied([4].into_iter(), applied, 10), 10), SequenceCheck::New);
        // A batch proposed but not applied still decides what comes next.
        let applied = SequenceCheck::OutOfOrder { expected: 5, got: 15 };
        assert_eq!(newest_unapplied([4, 9, 14].into_iter(), applied, 15), Some(14));
        assert_eq!(combine_checks(applied, Some(14), 15), SequenceCheck::New);
        assert_eq!(newest_unapplied([9].into_iter(), SequenceCheck::OutOfOrder { expected: 10, got: 20 }, 20), None);
        // A new epoch starts at 0, which the applied state expects.
        assert_eq!(newest_unapplied([4].into_iter(), SequenceCheck::OutOfOrder { expected: 0, got: 5 }, 5), Some(4));
        assert!(is_ahead(i32::MAX, 1), "sequences wrap to 0");
        assert_eq!(
            combine_checks(SequenceCheck::Fenced { current: 2 }, Some(9), 10),
            SequenceCheck::Fenced { current: 2 }
        );
    }
}
