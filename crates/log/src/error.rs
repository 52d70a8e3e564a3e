//! The storage engine's error type.

use std::path::PathBuf;

use crate::types::{Offset, RaftIndex};

/// Errors of the storage engine. [`LogError::kind`] tells callers what to do.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The operating system refused an I/O operation.
    #[error("{context}: {source}")]
    Io {
        /// What the engine was doing, as a verb phrase.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A batch handed to `append` is not valid.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] strata_batch::BatchError),
    /// Stored data failed its checks; it is never served.
    #[error("corrupt data in {file} at byte {position}: {reason}")]
    Corrupt {
        /// The file, relative to the partition directory.
        file: PathBuf,
        /// Byte position of the damage.
        position: u64,
        /// What check failed.
        reason: String,
    },
    /// An index outside the stored range was asked for.
    #[error("raft index {index} is outside the log [{first}, {last_plus_one})")]
    IndexOutOfRange {
        /// What was asked.
        index: RaftIndex,
        /// First stored index.
        first: RaftIndex,
        /// One past the last stored index.
        last_plus_one: RaftIndex,
    },
    /// An offset below the log start or above the log end was asked for.
    #[error("offset {offset} is outside the log [{log_start}, {log_end})")]
    OffsetOutOfRange {
        /// What was asked.
        offset: Offset,
        /// First stored offset.
        log_start: Offset,
        /// Next offset to be written.
        log_end: Offset,
    },
    /// A call broke the API's contract (e.g. a term going backwards).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An earlier write, sync or check failed; the log refuses writes until
    /// reopened (after a failed fsync the kernel may have dropped the dirty
    /// pages, see "fsyncgate"; after a failed write the file's tail is
    /// unknown), and recovery on open sorts it out.
    #[error("log refuses writes after an earlier failure: {0}")]
    Poisoned(String),
}

/// What a caller can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The disk or OS failed; the node should stop serving this partition.
    Io,
    /// The caller's input is wrong; nothing was written.
    BadInput,
    /// Stored data is damaged; recover it from a replica.
    Corrupt,
    /// Asked for something outside the log.
    OutOfRange,
}

impl LogError {
    /// The category of the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LogError::Io { .. } | LogError::Poisoned(_) => ErrorKind::Io,
            LogError::InvalidBatch(_) | LogError::InvalidArgument(_) => ErrorKind::BadInput,
            LogError::Corrupt { .. } => ErrorKind::Corrupt,
            LogError::IndexOutOfRange { .. } | LogError::OffsetOutOfRange { .. } => ErrorKind::OutOfRange,
        }
    }

    /// Wraps an I/O error with what was being done. The context is built
    /// only if the call failed: these wrap every append, read and sync, and
    /// a `format!` there would cost an allocation each time.
    pub(crate) fn io<C: Into<String>>(context: impl FnOnce() -> C) -> impl FnOnce(std::io::Error) -> LogError {
        move |source| LogError::Io { context: context().into(), source }
    }
}

/// Result alias of the engine.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
