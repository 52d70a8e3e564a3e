//! Decoding the records inside a batch.
//!
//! The log never needs this (it stores batches verbatim); consumers, the
//! compactor and the broker's key checks do. Keys and values are `Bytes`
//! slices of the batch (or of its decompressed records), so iterating does not
//! copy payloads.

use bytes::Bytes;

use crate::varint::{get_varint, get_varlong};
use crate::{BATCH_HEADER_BYTES, BatchError, BatchHeader};

/// One record header (a key/value pair attached to a record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub key: String,
    /// Header value, `None` when null.
    pub value: Option<Bytes>,
}

/// One decoded record with its absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Absolute offset: batch base offset + offset delta.
    pub offset: i64,
    /// Absolute timestamp in ms: batch base timestamp + timestamp delta.
    pub timestamp: i64,
    /// Record key, `None` when null.
    pub key: Option<Bytes>,
    /// Record value, `None` when null (a tombstone in a compacted topic).
    pub value: Option<Bytes>,
    /// Record headers in order.
    pub headers: Vec<Header>,
}

/// Iterator over the records of one batch.
pub struct RecordIter {
    header: BatchHeader,
    records: Bytes,
    position: usize,
    n_left: usize,
    index: usize,
}

impl Iterator for RecordIter {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.n_left == 0 {
            return None;
        }
        self.n_left -= 1;
        let index = self.index;
        self.index += 1;
        let result = self.decode_one(index);
        if result.is_err() {
            self.n_left = 0;
        }
        Some(result)
    }
}

impl RecordIter {
    fn decode_one(&mut self, index: usize) -> Result<Record, BatchError> {
        let bad = |reason| BatchError::BadRecord { index, reason };
        let buf = &self.records[self.position..];
        let (length, n) = get_varint(buf).ok_or(bad("length varint"))?;
        if length < 0 || buf.len() - n < length as usize {
            return Err(bad("length exceeds batch"));
        }
        let body_start = self.position + n;
        let body_end = body_start + length as usize;
        let mut cursor = Cursor { bytes: &self.records, at: body_start, end: body_end };
        let _attributes = cursor.byte().ok_or(bad("attributes"))?;
        let timestamp_delta = cursor.varlong().ok_or(bad("timestamp delta"))?;
        let offset_delta = cursor.varint().ok_or(bad("offset delta"))?;
        if offset_delta < 0 || offset_delta > self.header.last_offset_delta {
            return Err(bad("offset delta outside the batch"));
        }
        let key = cursor.nullable_bytes().ok_or(bad("key"))?;
        let value = cursor.nullable_bytes().ok_or(bad("value"))?;
        let n_headers = cursor.varint().ok_or(bad("header count"))?;
        if n_headers < 0 || n_headers as usize > length as usize {
            return Err(bad("header count"));
        }
        // `Vec::new` for none: `with_capacity(0)` is a call, 31 instructions
        // a record.
        let mut headers = if n_headers == 0 { Vec::new() } else { Vec::with_capacity(n_headers as usize) };
        for _ in 0..n_headers {
            let key = cursor.nullable_bytes().ok_or(bad("header key"))?.ok_or(bad("null header key"))?;
            let key = String::from_utf8(key.to_vec()).map_err(|_| bad("header key is not UTF-8"))?;
            let value = cursor.nullable_bytes().ok_or(bad("header value"))?;
            headers.push(Header { key, value });
        }
        if cursor.at != body_end {
            return Err(bad("length does not match fields"));
        }
        self.position = body_end;
        Ok(Record {
            offset: self.header.base_offset + i64::from(offset_delta),
            timestamp: self.header.base_timestamp.saturating_add(timestamp_delta),
            key,
            value,
            headers,
        })
    }
}

struct Cursor<'a> {
    bytes: &'a Bytes,
    at: usize,
    end: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        if self.at >= self.end {
            return None;
        }
        self.at += 1;
        Some(self.bytes[self.at - 1])
    }
    fn varlong(&mut self) -> Option<i64> {
        let (v, n) = get_varlong(&self.bytes[self.at..self.end])?;
        self.at += n;
        Some(v)
    }
    fn varint(&mut self) -> Option<i32> {
        let (v, n) = get_varint(&self.bytes[self.at..self.end])?;
        self.at += n;
        Some(v)
    }
    /// A varint length (-1 = null) followed by that many bytes.
    fn nullable_bytes(&mut self) -> Option<Option<Bytes>> {
        let len = self.varint()?;
        if len == -1 {
            return Some(None);
        }
        let len = usize::try_from(len).ok()?;
        if self.end - self.at < len {
            return None;
        }
        let out = self.bytes.slice(self.at..self.at + len);
        self.at += len;
        Some(Some(out))
    }
}

/// Decodes the records of one validated batch, decompressing them first when
/// the batch is compressed. `batch` must be exactly one batch.
pub fn decode_records(batch: &Bytes) -> Result<RecordIter, BatchError> {
    let header = crate::validate(batch)?;
    let raw = batch.slice(BATCH_HEADER_BYTES..);
    let records = match header.compression_id() {
        0 => raw,
        3 => Bytes::from(decompress_lz4(&raw)?),
        other => return Err(BatchError::UnsupportedCompression(other)),
    };
    Ok(RecordIter { header, records, position: 0, n_left: header.record_count as usize, index: 0 })
}

/// Decompressed records may be at most this many times the compressed size,
/// so a small hostile batch cannot make us allocate without bound.
const DECOMPRESSED_RATIO_MAX: usize = 1024;

fn decompress_lz4(raw: &[u8]) -> Result<Vec<u8>, BatchError> {
    use std::io::Read;
    let mut out = Vec::with_capacity(raw.len() * 2);
    let limit = (raw.len() * DECOMPRESSED_RATIO_MAX) as u64;
    let mut reader = lz4_flex::frame::FrameDecoder::new(raw).take(limit + 1);
    reader.read_to_end(&mut out).map_err(|e| BatchError::Decompress(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(BatchError::Decompress("decompressed size exceeds 1024x the batch".into()));
    }
    Ok(out)
}
