//! The segment index: Raft index → (file position, base offset, term, running
//! max timestamp), one fixed-size entry per stored entry.
//!
//! Both maps the engine needs live in one dense array: by Raft index it is
//! direct addressing (`index - segment base`); by offset and by timestamp it is
//! a binary search, since base offsets and the running max timestamp never
//! decrease within a segment.
//!
//! The active segment keeps its index in memory (bounded by
//! `SEGMENT_ENTRIES_MAX`); a sealed segment's index is written to
//! `<segment>.index` once, at seal, and mapped. The file is derived data: it is
//! not synced at seal (the next group commit syncs it, off the append path),
//! and on open it is used only if its checksum and its recorded data length
//! match; otherwise it is rebuilt from the data file.
//!
//! Index file layout (little-endian):
//!
//! ```text
//! off len
//!   0   4 magic "SIX1"
//!   4   4 CRC-32C of bytes 8..end
//!   8   8 base Raft index of the segment
//!  16   8 n entries
//!  24   8 data file length this index describes
//!  32  32 entry 0: position u64, base offset u64, term u64, max timestamp i64
//!  ..     entry 1, ...
//! ```

use bytes::Bytes;

use crate::types::{Offset, RaftIndex, Term};

const MAGIC: &[u8; 4] = b"SIX1";
pub(crate) const INDEX_HEADER_BYTES: usize = 32;
pub(crate) const INDEX_ENTRY_BYTES: usize = 32;

/// One entry of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Byte position of the batch in the data file.
    pub position: u64,
    /// Base offset stamped into the batch.
    pub base_offset: Offset,
    /// Term stamped into the batch.
    pub term: Term,
    /// Largest batch max timestamp in the segment up to and including this
    /// entry (never decreases, so it can be binary searched).
    pub max_timestamp_so_far: i64,
}

impl IndexEntry {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.base_offset.0.to_le_bytes());
        out.extend_from_slice(&self.term.0.to_le_bytes());
        out.extend_from_slice(&self.max_timestamp_so_far.to_le_bytes());
    }

    fn decode(buf: &[u8]) -> IndexEntry {
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[at..at + 8]);
            u64::from_le_bytes(b)
        };
        IndexEntry {
            position: u64_at(0),
            base_offset: Offset(u64_at(8)),
            term: Term(u64_at(16)),
            max_timestamp_so_far: u64_at(24) as i64,
        }
    }
}

/// The entries of one segment: in memory while active, mapped once sealed.
#[derive(Debug, Clone)]
pub(crate) enum Entries {
    Active(Vec<IndexEntry>),
    Sealed { map: Bytes, n: usize },
}

impl Entries {
    pub fn len(&self) -> usize {
        match self {
            Entries::Active(v) => v.len(),
            Entries::Sealed { n, .. } => *n,
        }
    }

    pub fn get(&self, i: usize) -> IndexEntry {
        match self {
            Entries::Active(v) => v[i],
            Entries::Sealed { map, n } => {
                assert!(i < *n, "index entry {i} of {n}");
                let at = INDEX_HEADER_BYTES + i * INDEX_ENTRY_BYTES;
                IndexEntry::decode(&map[at..at + INDEX_ENTRY_BYTES])
            }
        }
    }

    pub fn last(&self) -> Option<IndexEntry> {
        self.len().checked_sub(1).map(|i| self.get(i))
    }

    /// Ordinal of the last entry with `key(entry) <= target`, if any.
    pub fn partition_point_le(&self, target: u64, key: impl Fn(&IndexEntry) -> u64) -> Option<usize> {
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if key(&self.get(mid)) <= target { lo = mid + 1 } else { hi = mid }
        }
        lo.checked_sub(1)
    }

    /// Ordinal of the first entry with `max_timestamp_so_far >= ts`, if any.
    pub fn first_with_max_timestamp_at_least(&self, ts: i64) -> Option<usize> {
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid).max_timestamp_so_far < ts { lo = mid + 1 } else { hi = mid }
        }
        (lo < self.len()).then_some(lo)
    }

    pub fn truncate(&mut self, n: usize) {
        match self {
            Entries::Active(v) => v.truncate(n),
            Entries::Sealed { .. } => unreachable!("sealed indexes are never truncated in place"),
        }
    }
}

/// Encodes an index file for a sealed segment.
pub(crate) fn encode_index_file(base_index: RaftIndex, data_len: u64, entries: &Entries) -> Vec<u8> {
    let n = entries.len();
    let mut out = Vec::with_capacity(INDEX_HEADER_BYTES + n * INDEX_ENTRY_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&base_index.0.to_le_bytes());
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..n {
        entries.get(i).encode_into(&mut out);
    }
    let crc = crc32c::crc32c(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a mapped index file against the segment it should describe and
/// returns the entries, or why it cannot be trusted (then it is rebuilt).
pub(crate) fn decode_index_file(map: Bytes, base_index: RaftIndex, data_len: u64) -> Result<Entries, String> {
    if map.len() < INDEX_HEADER_BYTES {
        return Err("shorter than its header".into());
    }
    if &map[0..4] != MAGIC {
        return Err("bad magic".into());
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&map[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if u64_at(8) != base_index.0 {
        return Err(format!("describes base index {}, not {base_index}", u64_at(8)));
    }
    let n = usize::try_from(u64_at(16)).unwrap_or(usize::MAX);
    let expected_len = n.checked_mul(INDEX_ENTRY_BYTES).and_then(|b| b.checked_add(INDEX_HEADER_BYTES));
    if expected_len != Some(map.len()) {
        return Err("entry count does not match the file length".into());
    }
    if u64_at(24) != data_len {
        return Err(format!("describes {} data bytes, the segment has {data_len}", u64_at(24)));
    }
    let crc = u32::from_le_bytes([map[4], map[5], map[6], map[7]]);
    if crc != crc32c::crc32c(&map[8..]) {
        return Err("checksum mismatch".into());
    }
    let entries = Entries::Sealed { map, n };
    // Positions must increase and stay inside the data file; offsets and the
    // running max timestamp must not decrease. Checked once here so lookups
    // can trust them.
    let mut previous: Option<IndexEntry> = None;
    for i in 0..n {
        let e = entries.get(i);
        if e.position >= data_len {
            return Err(format!("entry {i} points past the data"));
        }
        if let Some(p) = previous {
            if e.position <= p.position || e.base_offset < p.base_offset || e.term < p.term {
                return Err(format!("entry {i} goes backwards"));
            }
            if e.max_timestamp_so_far < p.max_timestamp_so_far {
                return Err(format!("entry {i} timestamp goes backwards"));
            }
        }
        previous = Some(e);
    }
    Ok(entries)
}
