//! Idempotent producers: per producer id, the epoch and the last batches'
//! sequence ranges and offsets, so that a retried batch is answered with its
//! original offsets and a gap in sequences is refused.
//!
//! The state is replicated state: every replica rebuilds it by applying the
//! log, and it is carried in snapshots. The leader checks a batch against it
//! (and against batches it has proposed but not yet applied, see
//! `partition.rs`) *before* proposing, so a duplicate never enters the log.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Batches remembered per producer: as Kafka, up to 5 in flight.
pub const PRODUCER_BATCHES_MAX: usize = 5;

/// One batch's sequence range and where it landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequencedBatch {
    /// Sequence of the first record.
    pub first_seq: i32,
    /// Sequence of the last record.
    pub last_seq: i32,
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offsets the batch took.
    pub n_offsets: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<SequencedBatch>,
}

/// What a batch from an idempotent producer is, given what was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// The next batch of the producer: store it.
    New,
    /// Already stored: answer with its offsets, store nothing.
    Duplicate(SequencedBatch),
    /// A gap or a rewind: refuse (OUT_OF_ORDER_SEQUENCE).
    OutOfOrder {
        /// Sequence the producer should have sent.
        expected: i32,
        /// Sequence it sent.
        got: i32,
    },
    /// An older epoch of a producer that has moved on: refuse (fenced).
    Fenced {
        /// The producer's current epoch.
        current: i16,
    },
}

/// The producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStates {
    /// Checks a batch of `producer_id`/`epoch` covering `first_seq..=last_seq`.
    pub fn check(&self, producer_id: i64, epoch: i16, first_seq: i32, last_seq: i32) -> SequenceCheck {
        let Some(entry) = self.producers.get(&producer_id) else {
            // A new producer starts at sequence 0. Accepting a later
            // sequence would let a batch overtake an earlier one that failed
            // and is being retried, breaking the producer's order. (Producer
            // state is never expired: it lives in snapshots.)
            return if first_seq == 0 {
                SequenceCheck::New
            } else {
                SequenceCheck::OutOfOrder { expected: 0, got: first_seq }
            };
        };
        if epoch < entry.epoch {
            return SequenceCheck::Fenced { current: entry.epoch };
        }
        if epoch > entry.epoch {
            return if first_seq == 0 {
                SequenceCheck::New
            } else {
                SequenceCheck::OutOfOrder { expected: 0, got: first_seq }
            };
        }
        if let Some(stored) = entry.batches.iter().find(|b| b.first_seq == first_seq && b.last_seq == last_seq) {
            return SequenceCheck::Duplicate(*stored);
        }
        let expected = entry.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if first_seq == expected { SequenceCheck::New } else { SequenceCheck::OutOfOrder { expected, got: first_seq } }
    }

    /// Records a stored batch (on apply, in log order).
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: SequencedBatch) {
        let entry = self.producers.entry(producer_id).or_default();
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(batch);
        while entry.batches.len() > PRODUCER_BATCHES_MAX {
            entry.batches.pop_front();
        }
    }
}

/// The sequence after `seq` (sequences wrap at i32::MAX, as Kafka's do).
pub fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// The last sequence of a batch starting at `first_seq` with `n_records`.
pub fn last_seq(first_seq: i32, n_records: i32) -> i32 {
    let last = i64::from(first_seq) + i64::from(n_records.max(1)) - 1;
    (last % (i64::from(i32::MAX) + 1)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: i32, last: i32, offset: u64) -> SequencedBatch {
        SequencedBatch { first_seq: first, last_seq: last, base_offset: offset, n_offsets: (last - first + 1) as u64 }
    }

    #[test]
    fn sequences_are_checked_as_kafka_does() {
        let mut states = ProducerStates::default();
        assert_eq!(states.check(7, 0, 0, 4), SequenceCheck::New);
        assert_eq!(
            states.check(7, 0, 5, 9),
            SequenceCheck::OutOfOrder { expected: 0, got: 5 },
            "a new producer starts at 0, so no batch overtakes a retried first one"
        );
        states.record(7, 0, batch(0, 4, 100));
        assert_eq!(states.check(7, 0, 0, 4), SequenceCheck::Duplicate(batch(0, 4, 100)));
        assert_eq!(states.check(7, 0, 5, 9), SequenceCheck::New);
        assert_eq!(states.check(7, 0, 6, 9), SequenceCheck::OutOfOrder { expected: 5, got: 6 });
        states.record(7, 0, batch(5, 9, 105));
        assert_eq!(states.check(7, 1, 3, 3), SequenceCheck::OutOfOrder { expected: 0, got: 3 });
        assert_eq!(states.check(7, 1, 0, 0), SequenceCheck::New);
        states.record(7, 1, batch(0, 0, 110));
        assert_eq!(states.check(7, 0, 10, 10), SequenceCheck::Fenced { current: 1 });
        for i in 1..10 {
            states.record(7, 1, batch(i, i, 110 + i as u64));
        }
        // Only the last five batches are remembered.
        assert_eq!(states.check(7, 1, 4, 4), SequenceCheck::OutOfOrder { expected: 10, got: 4 });
        assert!(matches!(states.check(7, 1, 9, 9), SequenceCheck::Duplicate(_)));
        assert_eq!(last_seq(i32::MAX, 2), 0);
        assert_eq!(next_seq(i32::MAX), 0);
    }
}
