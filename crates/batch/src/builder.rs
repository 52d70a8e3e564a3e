//! Building batches: the producer's side of the codec, also used by tests and
//! by the compactor to rewrite a batch with fewer records.

use bytes::Bytes;

use crate::varint::{put_varint, put_varlong, varlong_len};
use crate::{BATCH_HEADER_BYTES, CRC_START, Header, MAGIC_V2};

/// How the records of a batch are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Records stored as they are.
    None,
    /// LZ4 frame format, as Kafka writes it (the default).
    #[default]
    Lz4,
}

impl Compression {
    fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 3,
        }
    }
}

/// Kinds of control batch Strata writes. Kafka uses 0 and 1 for transaction
/// markers; Strata's Raft entries take their own numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub enum ControlType {
    /// The blank entry a new Raft leader appends.
    RaftBlank = 100,
    /// A Raft membership change.
    RaftMembership = 101,
    /// A retention decision: the partition's leader moves the log start, and
    /// every replica purges what lies before it.
    LogStart = 102,
}

impl ControlType {
    /// The control type of a control record's key (version 0, type), if
    /// it is one Strata writes.
    pub fn from_key(key: &[u8]) -> Option<ControlType> {
        let t = match key {
            [0, 0, a, b] => i16::from_be_bytes([*a, *b]),
            _ => return None,
        };
        [ControlType::RaftBlank, ControlType::RaftMembership, ControlType::LogStart]
            .into_iter()
            .find(|c| *c as i16 == t)
    }
}

/// Accumulates records and encodes them as one RecordBatch v2.
///
/// Offsets are relative (0, 1, 2, ...); the log stamps the base offset.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    /// Room for the batch header, then the encoded records (empty until
    /// the first record), so an uncompressed batch is finished in place.
    buf: Vec<u8>,
    n_records: i32,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    offset_span: i32,
    attributes_extra: i16,
    fixed_max_timestamp: bool,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder::new()
    }
}

impl BatchBuilder {
    /// An empty batch with no producer id (not idempotent).
    pub fn new() -> BatchBuilder {
        BatchBuilder {
            buf: Vec::new(),
            n_records: 0,
            base_timestamp: None,
            max_timestamp: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            offset_span: 0,
            attributes_extra: 0,
            fixed_max_timestamp: false,
        }
    }

    /// Marks the batch as written by an idempotent producer.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Fixes the batch's base and max timestamps instead of deriving them
    /// from the records pushed (the compactor keeps a batch's original ones,
    /// so the time index stays true). Call before pushing.
    pub fn keep_timestamps(mut self, base_timestamp: i64, max_timestamp: i64) -> Self {
        self.base_timestamp = Some(base_timestamp);
        self.max_timestamp = max_timestamp;
        self.fixed_max_timestamp = true;
        self
    }

    /// Carries over attribute bits other than the codec (timestamp type,
    /// transactional), as the compactor must when it rewrites a batch.
    pub fn attributes_from(mut self, attributes: i16) -> Self {
        self.attributes_extra |= attributes & !0b111 & !(1 << 5);
        self
    }

    /// Makes room for about `bytes` more of encoded records, so a batch
    /// whose size is known up front grows without copying.
    pub fn reserve(&mut self, bytes: usize) {
        let header = if self.buf.is_empty() { BATCH_HEADER_BYTES } else { 0 };
        self.buf.reserve(header + bytes);
    }

    /// Number of records added so far.
    pub fn n_records(&self) -> usize {
        self.n_records as usize
    }

    /// Bytes of encoded (uncompressed) records so far, plus the header.
    pub fn size_bytes(&self) -> usize {
        BATCH_HEADER_BYTES + self.records().len()
    }

    /// The encoded records so far.
    fn records(&self) -> &[u8] {
        self.buf.get(BATCH_HEADER_BYTES..).unwrap_or(&[])
    }

    /// Appends a record at the next offset delta.
    pub fn push(&mut self, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>, headers: &[Header]) {
        let offset_delta = self.offset_span;
        self.push_at(offset_delta, timestamp, key, value, headers);
    }

    /// Appends a record at a given offset delta (deltas must increase). Used by
    /// the compactor, which keeps the offsets of the records it retains.
    pub fn push_at(
        &mut self,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        assert!(offset_delta >= self.offset_span, "offset deltas must increase");
        let base_timestamp = *self.base_timestamp.get_or_insert(timestamp);
        let timestamp_delta = timestamp - base_timestamp;
        let nullable_len = |b: Option<&[u8]>| b.map_or(1, |b| varlong_len(b.len() as i64) + b.len());
        let body_len = 1
            + varlong_len(timestamp_delta)
            + varlong_len(i64::from(offset_delta))
            + nullable_len(key)
            + nullable_len(value)
            + varlong_len(headers.len() as i64)
            + headers
                .iter()
                .map(|h| nullable_len(Some(h.key.as_bytes())) + nullable_len(h.value.as_deref()))
                .sum::<usize>();
        if self.buf.is_empty() {
            self.buf.resize(BATCH_HEADER_BYTES, 0);
        }
        // Written straight into the batch: the length first, then the body.
        let out = &mut self.buf;
        out.reserve(varlong_len(body_len as i64) + body_len);
        put_varint(out, body_len as i32);
        let body_start = out.len();
        out.push(0); // record attributes: unused in v2
        put_varlong(out, timestamp_delta);
        put_varint(out, offset_delta);
        put_nullable(out, key);
        put_nullable(out, value);
        put_varint(out, headers.len() as i32);
        for header in headers {
            put_nullable(out, Some(header.key.as_bytes()));
            put_nullable(out, header.value.as_deref());
        }
        debug_assert_eq!(out.len() - body_start, body_len);
        self.n_records += 1;
        if !self.fixed_max_timestamp {
            self.max_timestamp = self.max_timestamp.max(timestamp);
        }
        self.offset_span = offset_delta + 1;
    }

    /// Keeps the batch's offset span at least `n_offsets` even if its last
    /// records were removed (compaction keeps `last_offset_delta`).
    pub fn reserve_offsets(&mut self, n_offsets: i32) {
        self.offset_span = self.offset_span.max(n_offsets);
    }

    /// Encodes the batch. Base offset and leader epoch are left 0 for the log
    /// to stamp.
    pub fn build(&self, compression: Compression) -> Bytes {
        let compressed;
        let records = match compression {
            Compression::None => self.records(),
            Compression::Lz4 => {
                compressed = compress_lz4(self.records());
                &compressed[..]
            }
        };
        let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + records.len());
        out.extend_from_slice(&self.header(compression, records));
        out.extend_from_slice(records);
        Bytes::from(out)
    }

    /// Encodes the batch as [`build`](Self::build) does, without copying
    /// the records when they are not compressed.
    pub fn finish(mut self, compression: Compression) -> Bytes {
        if compression != Compression::None {
            return self.build(compression);
        }
        if self.buf.is_empty() {
            self.buf.resize(BATCH_HEADER_BYTES, 0);
        }
        let header = self.header(compression, self.records());
        self.buf[..BATCH_HEADER_BYTES].copy_from_slice(&header);
        Bytes::from(self.buf)
    }

    /// The batch header for `records` (encoded as `compression` says),
    /// its CRC included.
    fn header(&self, compression: Compression, records: &[u8]) -> [u8; BATCH_HEADER_BYTES] {
        let mut out = [0u8; BATCH_HEADER_BYTES];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&0i64.to_be_bytes()); // base offset
        let batch_length = (BATCH_HEADER_BYTES - 12 + records.len()) as i32;
        put(&batch_length.to_be_bytes());
        put(&0i32.to_be_bytes()); // partition leader epoch
        put(&[MAGIC_V2 as u8]);
        put(&[0; 4]); // crc, filled below
        put(&(compression.id() | self.attributes_extra).to_be_bytes());
        put(&(self.offset_span.max(1) - 1).to_be_bytes());
        let base_timestamp = self.base_timestamp.unwrap_or(self.max_timestamp);
        put(&base_timestamp.to_be_bytes());
        put(&self.max_timestamp.to_be_bytes());
        put(&self.producer_id.to_be_bytes());
        put(&self.producer_epoch.to_be_bytes());
        put(&self.base_sequence.to_be_bytes());
        put(&self.n_records.to_be_bytes());
        debug_assert_eq!(at, BATCH_HEADER_BYTES);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out[CRC_START..]), records);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

/// Re-encodes a batch with `compression` (a topic's compression.type),
/// keeping everything else: offsets and their span, producer fields,
/// timestamps and attribute bits. A batch already in that codec is
/// returned as it is.
pub fn recompress(batch: &Bytes, compression: Compression) -> Result<Bytes, crate::BatchError> {
    let header = crate::validate(batch)?;
    if i16::from(header.compression_id()) == compression.id() || header.is_control() {
        return Ok(batch.clone());
    }
    let mut builder = BatchBuilder::new()
        .producer(header.producer_id, header.producer_epoch, header.base_sequence)
        .keep_timestamps(header.base_timestamp, header.max_timestamp)
        .attributes_from(header.attributes);
    for record in crate::decode_records(batch)? {
        let record = record?;
        let delta = (record.offset - header.base_offset) as i32;
        builder.push_at(delta, record.timestamp, record.key.as_deref(), record.value.as_deref(), &record.headers);
    }
    builder.reserve_offsets(header.last_offset_delta + 1);
    let mut out = builder.build(compression).to_vec();
    crate::stamp(&mut out, header.base_offset, header.partition_leader_epoch);
    Ok(Bytes::from(out))
}

/// Builds a control batch carrying `payload` as the value of its one record,
/// keyed by the control type (version 0, type) as Kafka keys control records.
/// Control batches take no offsets in a Strata log.
pub fn build_control(control_type: ControlType, timestamp: i64, payload: &[u8]) -> Bytes {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&(control_type as i16).to_be_bytes());
    let mut builder = BatchBuilder::new();
    builder.attributes_extra = 1 << 5;
    builder.push(timestamp, Some(&key), Some(payload), &[]);
    builder.build(Compression::None)
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

fn compress_lz4(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(raw.len() / 2 + 64));
    // Writing into a Vec cannot fail; the frame encoder only reports the
    // inner writer's errors.
    encoder.write_all(raw).expect("lz4 into a Vec");
    encoder.finish().expect("lz4 into a Vec")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchError, decode_records, split_batches, stamp, validate};

    fn sample(compression: Compression) -> Bytes {
        let mut b = BatchBuilder::new().producer(7, 1, 40);
        b.push(1000, Some(b"k1"), Some(b"v1"), &[]);
        b.push(1005, None, Some(b"v2"), &[Header { key: "h".into(), value: Some(Bytes::from_static(b"x")) }]);
        b.push(999, Some(b"k3"), None, &[]);
        b.build(compression)
    }

    #[test]
    fn built_batch_validates_and_decodes_back() {
        for compression in [Compression::None, Compression::Lz4] {
            let batch = sample(compression);
            let header = validate(&batch).expect("valid");
            assert_eq!(header.record_count, 3);
            assert_eq!(header.last_offset_delta, 2);
            assert_eq!(header.max_timestamp, 1005);
            assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (7, 1, 40));
            let records: Vec<Record> =
                decode_records(&batch).expect("decode").collect::<Result<_, _>>().expect("records");
            assert_eq!(records.len(), 3);
            assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
            assert_eq!(records[1].headers[0].key, "h");
            assert_eq!(records[2].value, None);
            assert_eq!(records[2].timestamp, 999);
            assert_eq!(records[2].offset, 2);
        }
    }

    use crate::Record;

    #[test]
    fn records_are_counted_from_the_headers_up_to_the_first_batch_that_does_not_fit() {
        let one = sample(Compression::None);
        let two = sample(Compression::Lz4);
        let mut both = one.to_vec();
        both.extend_from_slice(&two);
        assert_eq!(crate::count_records(&both), 6);
        // A damaged CRC does not stop the count (nothing is validated)...
        let mut damaged = both.clone();
        damaged[crate::CRC_START + 3] ^= 0xff;
        assert_eq!(crate::count_records(&damaged), 6);
        // ...a truncated batch ends it, and nothing at all counts nothing.
        assert_eq!(crate::count_records(&both[..both.len() - 1]), 3);
        assert_eq!(crate::count_records(&both[..5]), 0);
        assert_eq!(crate::count_records(&[]), 0);
    }

    #[test]
    fn finish_encodes_what_build_does() {
        let big = vec![7u8; 300];
        for compression in [Compression::None, Compression::Lz4] {
            let mut b = BatchBuilder::new().producer(3, 2, 9);
            b.reserve(64);
            b.push(5, Some(&big), Some(b"v"), &[Header { key: "h".repeat(200), value: None }]);
            b.push(-70_000, None, Some(&big), &[]);
            b.push(1 << 40, Some(b""), None, &[Header { key: "x".into(), value: Some(Bytes::from(big.clone())) }]);
            let built = b.build(compression);
            assert_eq!(b.finish(compression), built);
            validate(&built).expect("valid");
            let records: Vec<Record> =
                decode_records(&built).expect("decode").collect::<Result<_, _>>().expect("records");
            assert_eq!(records[0].headers[0].key.len(), 200);
            assert_eq!(records[1].timestamp, -70_000);
            assert_eq!(records[2].headers[0].value.as_deref(), Some(&big[..]));
            assert_eq!(records[2].key.as_deref(), Some(&b""[..]));
        }
        let empty = BatchBuilder::new();
        assert_eq!(empty.clone().finish(Compression::None), empty.build(Compression::None));
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let mut batch = sample(Compression::None).to_vec();
        stamp(&mut batch, 12345, 9);
        let header = validate(&batch).expect("still valid");
        assert_eq!((header.base_offset, header.partition_leader_epoch), (12345, 9));
    }

    #[test]
    fn every_flipped_bit_after_the_crc_field_is_caught() {
        let batch = sample(Compression::Lz4).to_vec();
        for i in CRC_START..batch.len() {
            let mut bad = batch.clone();
            bad[i] ^= 0x10;
            assert!(validate(&bad).is_err(), "flip at byte {i} not caught");
        }
    }

    #[test]
    fn truncated_and_padded_batches_are_refused() {
        let batch = sample(Compression::None);
        for cut in [0, 5, 12, 60, batch.len() - 1] {
            assert!(validate(&batch[..cut]).is_err(), "cut {cut}");
        }
        let mut padded = batch.to_vec();
        padded.push(0);
        assert!(matches!(validate(&padded), Err(BatchError::LengthMismatch { .. })));
    }

    #[test]
    fn recompressing_keeps_records_offsets_and_producer_fields() {
        let mut builder = BatchBuilder::new().producer(7, 2, 40);
        for i in 0..20 {
            builder.push(1_000 + i, Some(format!("k{i}").as_bytes()), Some(&[b'v'; 300]), &[]);
        }
        let plain = builder.build(Compression::None);
        let packed = recompress(&plain, Compression::Lz4).expect("recompress");
        assert!(packed.len() < plain.len() / 2, "lz4 shrinks repetitive values");
        let (a, b) = (crate::validate(&plain).expect("valid"), crate::validate(&packed).expect("valid"));
        assert_eq!((b.compression_id(), b.producer_id, b.producer_epoch, b.base_sequence), (3, 7, 2, 40));
        assert_eq!(
            (a.last_offset_delta, a.record_count, a.max_timestamp),
            (b.last_offset_delta, b.record_count, b.max_timestamp)
        );
        let back = recompress(&packed, Compression::None).expect("back");
        let records = |batch: &Bytes| {
            crate::decode_records(batch).expect("decode").collect::<Result<Vec<_>, _>>().expect("records")
        };
        assert_eq!(records(&back), records(&plain));
    }

    #[test]
    fn control_batches_take_no_offsets() {
        let batch = build_control(ControlType::RaftMembership, 5, b"members");
        let header = validate(&batch).expect("valid");
        assert!(header.is_control());
        assert_eq!(header.n_offsets(), 0);
        assert_eq!(sample(Compression::None).len(), validate(&sample(Compression::None)).expect("ok").total_len());
    }

    #[test]
    fn split_walks_batches_and_stops_at_damage() {
        let mut buf = sample(Compression::None).to_vec();
        buf.extend_from_slice(&sample(Compression::Lz4));
        let n_whole = buf.len();
        buf.extend_from_slice(&sample(Compression::None)[..30]);
        let items: Vec<_> = split_batches(&buf).collect();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok());
        assert!(items[2].is_err());
        assert_eq!(split_batches(&buf[..n_whole]).count(), 2);
    }

    #[test]
    fn compaction_style_batch_keeps_its_offset_span() {
        let mut b = BatchBuilder::new();
        b.push_at(3, 10, Some(b"k"), Some(b"v"), &[]);
        b.reserve_offsets(10);
        let batch = b.build(Compression::None);
        let header = validate(&batch).expect("valid");
        assert_eq!((header.record_count, header.last_offset_delta), (1, 9));
        let record = decode_records(&batch).expect("ok").next().expect("one").expect("ok");
        assert_eq!(record.offset, 3);
    }
}
