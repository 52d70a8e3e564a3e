//! Key compaction of sealed segments: keep the latest record of every key,
//! drop tombstones once they are older than the delete retention, and keep
//! everything that makes the log a Raft log — every entry (possibly emptied)
//! at its Raft index, every offset span, every control entry.
//!
//! This module holds the record-level decisions (no I/O); `Log::compact`
//! drives them over segments and swaps the rewritten files in.

use std::collections::HashMap;

use bytes::Bytes;
use strata_batch::{BatchBuilder, BatchHeader, Compression, Record};

use crate::error::Result;
use crate::types::RaftIndex;

/// What a compaction pass is allowed to do.
#[derive(Debug, Clone, Copy)]
pub struct Compaction {
    /// Only segments wholly below this index are compacted (the caller
    /// passes the commit or applied index, so replicas compact the same data).
    pub boundary: RaftIndex,
    /// Current time in ms since the epoch (for tombstone expiry).
    pub now_ms: i64,
    /// Tombstones (records with a null value) are kept this long after their
    /// batch's max timestamp, so that consumers see deletes.
    pub delete_retention_ms: u64,
}

/// What a compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Segments rewritten.
    pub n_segments_rewritten: usize,
    /// Records kept in the rewritten segments.
    pub n_records_kept: u64,
    /// Records removed (superseded values and expired tombstones).
    pub n_records_removed: u64,
    /// Data bytes before and after, over the rewritten segments.
    pub bytes_before: u64,
    /// See `bytes_before`.
    pub bytes_after: u64,
}

/// Latest offset per key over the batches scanned.
#[derive(Default)]
pub(crate) struct KeyMap {
    latest: HashMap<Bytes, i64>,
}

impl KeyMap {
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Records every keyed record of a data batch.
    pub fn add_batch(&mut self, batch: &Bytes) -> Result<()> {
        let header = strata_batch::validate(batch)?;
        if header.is_control() || !readable(&header) {
            return Ok(());
        }
        // A batch whose records do not decode is kept as it is (its CRC is
        // good, so it is what the producer sent); compaction skips it.
        let Ok(records) = strata_batch::decode_records(batch) else { return Ok(()) };
        for record in records {
            let Ok(record) = record else { return Ok(()) };
            if let Some(key) = record.key {
                let slot = self.latest.entry(key).or_insert(record.offset);
                *slot = (*slot).max(record.offset);
            }
        }
        Ok(())
    }

    fn is_latest(&self, record: &Record) -> bool {
        match &record.key {
            // Keyless records cannot be superseded; they are kept.
            None => true,
            // A key not in the map was not scanned (the map is a prefix).
            Some(key) => self.latest.get(key).is_none_or(|&offset| offset == record.offset),
        }
    }
}

/// The outcome of compacting one batch.
pub(crate) enum Rewritten {
    /// Nothing to drop: store the original bytes.
    Unchanged { n_records: u64 },
    /// The batch without the dropped records (stamped like the original).
    Changed { batch: Vec<u8>, n_kept: u64, n_removed: u64 },
}

/// Decides which records of one stored batch survive and re-encodes it if
/// any do not. Control batches are never changed. An emptied batch keeps its
/// header (offset span, producer fields, timestamps) with zero records, so
/// the entry keeps its Raft index and offsets.
pub(crate) fn rewrite_batch(batch: &Bytes, map: &KeyMap, compaction: &Compaction) -> Result<Rewritten> {
    let header: BatchHeader = strata_batch::validate(batch)?;
    if header.is_control() || !readable(&header) {
        return Ok(Rewritten::Unchanged { n_records: header.record_count.max(0) as u64 });
    }
    let delete_retention_ms = i64::try_from(compaction.delete_retention_ms).unwrap_or(i64::MAX);
    let tombstones_expired = compaction.now_ms.saturating_sub(header.max_timestamp) > delete_retention_ms;
    let mut kept = Vec::new();
    let mut n_removed = 0u64;
    let Ok(records) = strata_batch::decode_records(batch) else {
        return Ok(Rewritten::Unchanged { n_records: header.record_count.max(0) as u64 });
    };
    let Ok(records) = records.collect::<Result<Vec<_>, _>>() else {
        return Ok(Rewritten::Unchanged { n_records: header.record_count.max(0) as u64 });
    };
    for record in records {
        let keep = map.is_latest(&record) && !(record.value.is_none() && record.key.is_some() && tombstones_expired);
        if keep { kept.push(record) } else { n_removed += 1 }
    }
    if n_removed == 0 {
        return Ok(Rewritten::Unchanged { n_records: kept.len() as u64 });
    }
    let mut builder = BatchBuilder::new()
        .producer(header.producer_id, header.producer_epoch, header.base_sequence)
        .keep_timestamps(header.base_timestamp, header.max_timestamp)
        .attributes_from(header.attributes);
    for record in &kept {
        let delta = (record.offset - header.base_offset) as i32;
        builder.push_at(delta, record.timestamp, record.key.as_deref(), record.value.as_deref(), &record.headers);
    }
    builder.reserve_offsets(header.last_offset_delta + 1);
    let compression = if header.compression_id() == 0 { Compression::None } else { Compression::Lz4 };
    let mut out = builder.build(compression).to_vec();
    strata_batch::stamp(&mut out, header.base_offset, header.partition_leader_epoch);
    Ok(Rewritten::Changed { batch: out, n_kept: kept.len() as u64, n_removed })
}

/// Codecs the compactor can rewrite; batches in others are kept as they are.
fn readable(header: &BatchHeader) -> bool {
    matches!(header.compression_id(), 0 | 3)
}
