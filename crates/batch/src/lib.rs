//! The Kafka RecordBatch v2 codec, written once and shared by the client, the
//! storage engine and the broker.
//!
//! A batch is stored and sent verbatim: the broker validates the header and the
//! CRC-32C and then only stamps the fields that lie outside the CRC (base offset
//! and partition leader epoch). Nothing here does I/O.
//!
//! The byte layout (all integers big-endian, as in Kafka):
//!
//! ```text
//! off len field
//!   0   8 base_offset            stamped by the log at append (outside the CRC)
//!   8   4 batch_length           bytes after this field: total = 12 + batch_length
//!  12   4 partition_leader_epoch stamped by the log at append (outside the CRC)
//!  16   1 magic                  always 2
//!  17   4 crc                    CRC-32C (Castagnoli) of bytes 21..end
//!  21   2 attributes             bits 0-2 compression, 3 timestamp type,
//!                                4 transactional, 5 control
//!  23   4 last_offset_delta
//!  27   8 base_timestamp
//!  35   8 max_timestamp
//!  43   8 producer_id
//!  51   2 producer_epoch
//!  53   4 base_sequence
//!  57   4 record_count
//!  61   . records (compressed as a whole when compression != none)
//! ```
//!
//! **Invariant:** every function that takes batch bytes from the outside checks
//! lengths before it indexes; none of them panics on any input.

mod builder;
mod error;
mod header;
mod record;
mod varint;

pub use builder::{BatchBuilder, Compression, ControlType, build_control, recompress};
pub use error::BatchError;
pub use header::{
    BATCH_HEADER_BYTES, BatchHeader, CRC_START, MAGIC_V2, batch_total_len, stamp, validate, validate_structure,
};
pub use record::{Header, Record, RecordIter, decode_records};

/// How many records the whole batches at the start of `buf` hold, read
/// from their headers alone: no CRC, no validation (for counting what is
/// served; whoever decodes the records validates them). The walk stops at
/// the first length that does not fit.
pub fn count_records(buf: &[u8]) -> u64 {
    let mut rest = buf;
    let mut n = 0u64;
    while let Ok(total) = batch_total_len(rest) {
        let Some((one, tail)) = rest.split_at_checked(total) else { break };
        let Ok(header) = BatchHeader::parse(one) else { break };
        n += header.record_count.max(0) as u64;
        rest = tail;
    }
    n
}

/// Splits a buffer that holds whole batches back to back into the batches.
///
/// Each item is either one batch's bytes (validated with [`validate`]) or the
/// error that stopped the walk, after which the iterator ends.
pub fn split_batches(buf: &[u8]) -> impl Iterator<Item = Result<(BatchHeader, &[u8]), BatchError>> {
    let mut rest = buf;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || rest.is_empty() {
            return None;
        }
        let result = batch_total_len(rest).and_then(|total| {
            if total > rest.len() {
                return Err(BatchError::Truncated { needed: total, available: rest.len() });
            }
            let (one, tail) = rest.split_at(total);
            let header = validate(one)?;
            rest = tail;
            Ok((header, one))
        });
        failed = result.is_err();
        Some(result)
    })
}
