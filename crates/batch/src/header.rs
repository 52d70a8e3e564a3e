//! Parsing, validating and stamping the 61-byte RecordBatch v2 header.

use crate::BatchError;

/// Bytes in a RecordBatch v2 header, up to and including `record_count`.
pub const BATCH_HEADER_BYTES: usize = 61;
/// The CRC covers the batch from this byte (attributes) to its end.
pub const CRC_START: usize = 21;
/// The only supported magic byte.
pub const MAGIC_V2: i8 = 2;
/// Bytes before `batch_length`'s count starts: base_offset + batch_length.
const LENGTH_PREFIX_BYTES: usize = 12;
/// Largest batch accepted anywhere (a hard ceiling; topics set lower limits).
const BATCH_BYTES_MAX: usize = 256 * 1024 * 1024;

const ATTR_COMPRESSION_MASK: i16 = 0b111;
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;

/// The decoded header of one batch. Field names follow Kafka's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (stamped by the log).
    pub base_offset: i64,
    /// Bytes after the `batch_length` field.
    pub batch_length: i32,
    /// Leader epoch; Strata stores the Raft term here (stamped by the log).
    pub partition_leader_epoch: i32,
    /// Always [`MAGIC_V2`] once validated.
    pub magic: i8,
    /// CRC-32C of bytes [`CRC_START`]..end.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record, in ms since the epoch.
    pub base_timestamp: i64,
    /// Largest record timestamp, in ms since the epoch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header fields without checking the CRC or the records.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated { needed: BATCH_HEADER_BYTES, available: buf.len() });
        }
        Ok(BatchHeader {
            base_offset: i64_at(buf, 0),
            batch_length: i32_at(buf, 8),
            partition_leader_epoch: i32_at(buf, 12),
            magic: buf[16] as i8,
            crc: u32::from_be_bytes([buf[17], buf[18], buf[19], buf[20]]),
            attributes: i16::from_be_bytes([buf[21], buf[22]]),
            last_offset_delta: i32_at(buf, 23),
            base_timestamp: i64_at(buf, 27),
            max_timestamp: i64_at(buf, 35),
            producer_id: i64_at(buf, 43),
            producer_epoch: i16::from_be_bytes([buf[51], buf[52]]),
            base_sequence: i32_at(buf, 53),
            record_count: i32_at(buf, 57),
        })
    }

    /// Total bytes of the batch, header included.
    pub fn total_len(&self) -> usize {
        LENGTH_PREFIX_BYTES + self.batch_length.max(0) as usize
    }

    /// The compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression_id(&self) -> u8 {
        (self.attributes & ATTR_COMPRESSION_MASK) as u8
    }

    /// True for control batches (Strata: Raft blank and membership entries).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// True for transactional batches.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Offsets this batch occupies in the partition: none for a control batch,
    /// `last_offset_delta + 1` otherwise (kept by compaction even when records
    /// are removed).
    pub fn n_offsets(&self) -> u64 {
        if self.is_control() { 0 } else { self.last_offset_delta as u64 + 1 }
    }

    /// Offset of the last record (for a data batch).
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
}

/// Reads the total length of the batch starting at `buf` from its length field.
pub fn batch_total_len(buf: &[u8]) -> Result<usize, BatchError> {
    if buf.len() < LENGTH_PREFIX_BYTES {
        return Err(BatchError::Truncated { needed: LENGTH_PREFIX_BYTES, available: buf.len() });
    }
    let batch_length = i32_at(buf, 8);
    let min = (BATCH_HEADER_BYTES - LENGTH_PREFIX_BYTES) as i32;
    if batch_length < min || batch_length as usize > BATCH_BYTES_MAX {
        return Err(BatchError::BadLength(batch_length));
    }
    Ok(LENGTH_PREFIX_BYTES + batch_length as usize)
}

/// Validates one whole batch: exact length, magic, CRC, and consistent header
/// fields. Records themselves are not decoded (the log never needs to).
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    check(buf, true)
}

/// Everything [`validate`] checks but the CRC: for bytes whose CRC this
/// process has already checked (and that cannot have changed since, such as
/// a `Bytes`), so that a batch handed from one layer to the next is not
/// checksummed again at each.
pub fn validate_structure(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    check(buf, false)
}

fn check(buf: &[u8], with_crc: bool) -> Result<BatchHeader, BatchError> {
    let total = batch_total_len(buf)?;
    if total != buf.len() {
        return Err(BatchError::LengthMismatch { declared: total, actual: buf.len() });
    }
    let header = BatchHeader::parse(buf)?;
    if header.magic != MAGIC_V2 {
        return Err(BatchError::BadMagic(header.magic));
    }
    if with_crc {
        let actual = crc32c::crc32c(&buf[CRC_START..]);
        if actual != header.crc {
            return Err(BatchError::BadCrc { expected: header.crc, actual });
        }
    }
    if header.record_count < 0 {
        return Err(BatchError::BadHeader("record_count is negative"));
    }
    if header.last_offset_delta < 0 {
        return Err(BatchError::BadHeader("last_offset_delta is negative"));
    }
    // Compaction may remove records but keeps last_offset_delta, so the count
    // can be smaller than the offset span, never larger.
    if i64::from(header.record_count) > i64::from(header.last_offset_delta) + 1 {
        return Err(BatchError::BadHeader("record_count exceeds last_offset_delta + 1"));
    }
    if header.compression_id() > 4 {
        return Err(BatchError::UnsupportedCompression(header.compression_id()));
    }
    Ok(header)
}

/// Writes the fields outside the CRC: base offset and leader epoch.
///
/// The caller has validated `buf`; stamping never invalidates the CRC.
pub fn stamp(buf: &mut [u8], base_offset: i64, partition_leader_epoch: i32) {
    assert!(buf.len() >= BATCH_HEADER_BYTES, "stamp needs a whole header");
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
    buf[12..16].copy_from_slice(&partition_leader_epoch.to_be_bytes());
}

fn i64_at(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

fn i32_at(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(b)
}
