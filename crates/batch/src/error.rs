//! The one error type of the batch codec.

/// Why batch bytes were refused. Every variant says what was expected, so that
/// the broker can return it to a client as a `CORRUPT_BATCH` message as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The buffer ends before the batch or field it must hold.
    #[error("batch truncated: needs {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the batch or field needs.
        needed: usize,
        /// Bytes the buffer holds.
        available: usize,
    },
    /// `batch_length` is outside what a batch can be.
    #[error("batch length field {0} is invalid")]
    BadLength(i32),
    /// The buffer holds more than the one batch its length field names.
    #[error("batch length field says {declared} bytes but the buffer holds {actual}")]
    LengthMismatch {
        /// Total length the header declares.
        declared: usize,
        /// Bytes given.
        actual: usize,
    },
    /// Only magic 2 (RecordBatch v2) is accepted.
    #[error("unsupported batch magic {0} (only 2 is supported)")]
    BadMagic(i8),
    /// The CRC-32C over attributes..end does not match the header.
    #[error("batch CRC mismatch: header says {expected:#010x}, data has {actual:#010x}")]
    BadCrc {
        /// CRC stored in the header.
        expected: u32,
        /// CRC computed over the bytes.
        actual: u32,
    },
    /// A header field is out of range or inconsistent with another.
    #[error("invalid batch header: {0}")]
    BadHeader(&'static str),
    /// The compression codec is not one Strata can read.
    #[error("unsupported compression codec {0}")]
    UnsupportedCompression(u8),
    /// The compressed records did not decompress.
    #[error("records do not decompress: {0}")]
    Decompress(String),
    /// A record inside the batch is malformed.
    #[error("invalid record {index}: {reason}")]
    BadRecord {
        /// Position of the record in the batch.
        index: usize,
        /// What was wrong with it.
        reason: &'static str,
    },
}
