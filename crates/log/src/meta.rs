//! The metadata file: Raft's vote, the committed log id and the last purged
//! log id, in one small checksummed file replaced atomically.
//!
//! Layout (little-endian; the format is Strata's own):
//!
//! ```text
//! off len
//!   0   4 magic "SMT1"
//!   4   4 CRC-32C of bytes 8..end
//!   8   1 flags: bit 0 committed present, bit 1 last purged present
//!   9  16 committed: term u64, index u64 (zero when absent)
//!  25  16 last purged: term u64, index u64 (zero when absent)
//!  41   8 offset after the last purged entry (zero when absent)
//!  49   2 vote length n (<= 256)
//!  51   n vote, opaque to the engine (the Raft layer encodes it)
//! ```
//!
//! Replacement protocol: write `meta.tmp`, fdatasync it, rename it over
//! `meta`, fsync the directory. A crash at any step leaves either the old or
//! the new file under the name `meta`; a leftover `meta.tmp` is removed on open.

use crate::error::{LogError, Result};
use crate::io::Dir;
use crate::limits::VOTE_BYTES_MAX;
use crate::types::{LogId, Offset, RaftIndex, Term};

pub(crate) const META_FILE: &str = "meta";
pub(crate) const META_TMP_FILE: &str = "meta.tmp";
const MAGIC: &[u8; 4] = b"SMT1";
const FIXED_BYTES: usize = 51;

/// The durable Raft metadata of one log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// The last vote, encoded by the caller; empty when none was cast.
    pub vote: Vec<u8>,
    /// The last committed log id the caller saved.
    pub committed: Option<LogId>,
    /// The last log id removed by purge, with the offset of the first
    /// record after it (the log start offset when nothing else is stored).
    pub last_purged: Option<(LogId, Offset)>,
}

impl Meta {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        if self.vote.len() > VOTE_BYTES_MAX {
            return Err(LogError::InvalidArgument(format!(
                "vote of {} bytes exceeds {VOTE_BYTES_MAX}",
                self.vote.len()
            )));
        }
        let mut out = Vec::with_capacity(FIXED_BYTES + self.vote.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[0; 4]);
        let flags = u8::from(self.committed.is_some()) | (u8::from(self.last_purged.is_some()) << 1);
        out.push(flags);
        for id in [self.committed, self.last_purged.map(|(id, _)| id)] {
            let id = id.unwrap_or_default();
            out.extend_from_slice(&id.term.0.to_le_bytes());
            out.extend_from_slice(&id.index.0.to_le_bytes());
        }
        out.extend_from_slice(&self.last_purged.map_or(0, |(_, o)| o.0).to_le_bytes());
        out.extend_from_slice(&(self.vote.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.vote);
        let crc = crc32c::crc32c(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    pub(crate) fn decode(buf: &[u8]) -> std::result::Result<Meta, String> {
        if buf.len() < FIXED_BYTES {
            return Err(format!("{} bytes, shorter than the {FIXED_BYTES}-byte header", buf.len()));
        }
        if &buf[0..4] != MAGIC {
            return Err("bad magic".into());
        }
        let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if crc != crc32c::crc32c(&buf[8..]) {
            return Err("checksum mismatch".into());
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let id_at = |at: usize| LogId { term: Term(u64_at(at)), index: RaftIndex(u64_at(at + 8)) };
        let flags = buf[8];
        let vote_len = u16::from_le_bytes([buf[49], buf[50]]) as usize;
        if vote_len > VOTE_BYTES_MAX || buf.len() != FIXED_BYTES + vote_len {
            return Err(format!("vote length {vote_len} does not match the file"));
        }
        Ok(Meta {
            vote: buf[FIXED_BYTES..].to_vec(),
            committed: (flags & 1 != 0).then(|| id_at(9)),
            last_purged: (flags & 2 != 0).then(|| (id_at(25), Offset(u64_at(41)))),
        })
    }

    /// Reads the metadata file; a missing file is an empty `Meta`.
    pub(crate) fn load(dir: &dyn Dir) -> Result<Meta> {
        let names = dir.list().map_err(LogError::io(|| "list partition directory"))?;
        if names.iter().any(|n| n == META_TMP_FILE) {
            dir.remove(META_TMP_FILE).map_err(LogError::io(|| "remove leftover meta.tmp"))?;
        }
        if !names.iter().any(|n| n == META_FILE) {
            return Ok(Meta::default());
        }
        let file = dir.open(META_FILE).map_err(LogError::io(|| "open meta"))?;
        let len = file.len().map_err(LogError::io(|| "stat meta"))?;
        if len as usize > FIXED_BYTES + VOTE_BYTES_MAX {
            return Err(corrupt(format!("{len} bytes is too long")));
        }
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0).map_err(LogError::io(|| "read meta"))?;
        Meta::decode(&buf).map_err(corrupt)
    }

    /// Replaces the metadata file atomically and durably.
    pub(crate) fn store(&self, dir: &dyn Dir) -> Result<()> {
        let bytes = self.encode()?;
        let _ = dir.remove(META_TMP_FILE);
        let tmp = dir.create(META_TMP_FILE).map_err(LogError::io(|| "create meta.tmp"))?;
        tmp.write_all_at(&bytes, 0).map_err(LogError::io(|| "write meta.tmp"))?;
        tmp.sync_data().map_err(LogError::io(|| "sync meta.tmp"))?;
        dir.rename(META_TMP_FILE, META_FILE).map_err(LogError::io(|| "rename meta.tmp to meta"))?;
        dir.sync_dir().map_err(LogError::io(|| "sync partition directory after meta rename"))
    }
}

fn corrupt(reason: String) -> LogError {
    LogError::Corrupt { file: META_FILE.into(), position: 0, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sim::{CrashMode, SimDisk};

    #[test]
    fn meta_round_trips_and_survives_a_crash_after_store() {
        let disk = SimDisk::new();
        let meta = Meta {
            vote: b"term 3 node 2".to_vec(),
            committed: Some(LogId { term: Term(3), index: RaftIndex(17) }),
            last_purged: None,
        };
        meta.store(&disk).expect("store");
        let after = disk.crash(CrashMode::SyncedOnly);
        assert_eq!(Meta::load(&after).expect("load"), meta);
    }

    #[test]
    fn damaged_meta_is_an_error_not_a_default() {
        let meta = Meta { vote: vec![1, 2, 3], ..Meta::default() };
        let bytes = meta.encode().expect("encode");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(Meta::decode(&bad).is_err(), "flip at {i}");
        }
        assert!(Meta::decode(&bytes[..10]).is_err());
    }

    #[test]
    fn oversized_vote_is_refused() {
        let meta = Meta { vote: vec![0; VOTE_BYTES_MAX + 1], ..Meta::default() };
        assert!(meta.encode().is_err());
    }
}
