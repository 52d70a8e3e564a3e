//! Converting between openraft entries and stored batches, in one place.
//!
//! A `Normal` entry *is* its batch: stored verbatim, no re-encoding. Raft's
//! own entries become control batches (which take no offsets): `Blank` with
//! an empty payload, `Membership` with the membership as JSON (small and
//! rare, so a readable format costs nothing). Strata's own control entries
//! (a retention decision, [`ControlType::LogStart`]) are `Normal` entries
//! whose batch is a control batch: stored verbatim like data, applied by
//! the state machine, never served to consumers.

use std::io;

use bytes::Bytes;
use openraft::EntryPayload;
use strata_batch::{ControlType, build_control};

use crate::types::{BatchData, RaftEntry, log_id};

/// The bytes to store for an entry.
pub fn entry_to_batch(entry: &RaftEntry) -> io::Result<Bytes> {
    Ok(match &entry.payload {
        EntryPayload::Normal(data) => data.bytes().clone(),
        EntryPayload::Blank => build_control(ControlType::RaftBlank, 0, &[]),
        EntryPayload::Membership(membership) => {
            let json = serde_json::to_vec(membership).map_err(io::Error::other)?;
            build_control(ControlType::RaftMembership, 0, &json)
        }
    })
}

/// Rebuilds the openraft entry from a stored one.
pub fn stored_to_entry(stored: &strata_log::Entry) -> io::Result<RaftEntry> {
    // The header only: the batch's CRC was checked when it entered the log
    // (append) and is checked again when a sealed segment is first read, and
    // bytes from the network are validated by the log's append. Checking it
    // here too cost ~4% of a replica's CPU (docs/benchmarks.md).
    let header =
        strata_batch::BatchHeader::parse(&stored.batch).map_err(|e| bad(format!("entry {}: {e}", stored.index)))?;
    if header.total_len() != stored.batch.len() {
        return Err(bad(format!("entry {}: length field disagrees with the entry", stored.index)));
    }
    let payload = if header.is_control() {
        let mut records =
            strata_batch::decode_records(&stored.batch).map_err(|e| bad(format!("entry {}: {e}", stored.index)))?;
        let record = records
            .next()
            .ok_or_else(|| bad(format!("control entry {} has no record", stored.index)))?
            .map_err(|e| bad(format!("entry {}: {e}", stored.index)))?;
        let key = record.key.unwrap_or_default();
        match ControlType::from_key(&key) {
            Some(ControlType::RaftBlank) => EntryPayload::Blank,
            Some(ControlType::RaftMembership) => {
                let value = record.value.unwrap_or_default();
                let membership = serde_json::from_slice(&value)
                    .map_err(|e| bad(format!("membership entry {}: {e}", stored.index)))?;
                EntryPayload::Membership(membership)
            }
            Some(ControlType::LogStart) => EntryPayload::Normal(BatchData::checked(stored.batch.clone())),
            None => return Err(bad(format!("entry {} has unknown control key {key:?}", stored.index))),
        }
    } else {
        EntryPayload::Normal(BatchData::checked(stored.batch.clone()))
    };
    Ok(RaftEntry { log_id: log_id(stored.term.0, stored.index.0), payload })
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}
