//! The client's errors: the broker's typed codes, and what can go wrong on
//! the way to it.

use std::time::Duration;

use strata_proto::api as pb;
use strata_proto::error_chain;

/// A broker's error code (see `ErrorCode` in `proto/api.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ErrorCode {
    Unknown,
    NotLeader,
    UnknownTopic,
    UnknownPartition,
    OffsetOutOfRange,
    MessageTooLarge,
    CorruptBatch,
    OutOfOrderSequence,
    ProducerFenced,
    Throttled,
    InvalidConfig,
    TopicAlreadyExists,
    InvalidRequest,
    RequestTooLarge,
    Timeout,
    Unavailable,
    NotCoordinator,
    CoordinatorLoadInProgress,
    UnknownMemberId,
    FencedMemberEpoch,
    GroupNotEmpty,
    UnknownGroup,
    NotAuthorized,
}

/// Errors of the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The broker refused or failed the request.
    #[error("{code:?}: {message}")]
    Api {
        /// What went wrong.
        code: ErrorCode,
        /// Whether the same request may succeed later.
        retriable: bool,
        /// In words.
        message: String,
        /// THROTTLED: when to retry.
        retry_after: Option<Duration>,
        /// NOT_LEADER: the leader's id and address, when known.
        leader: Option<(u64, String)>,
    },
    /// The broker could not be reached or the connection broke.
    #[error("transport: {0}")]
    Transport(String),
    /// The caller asked for something that cannot be done.
    #[error("{0}")]
    Invalid(String),
    /// The producer or consumer was closed.
    #[error("closed")]
    Closed,
}

impl Error {
    /// The broker's error code, if the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// THROTTLED: how long the broker asked us to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether retrying may succeed (broken connections included).
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Api { retriable, .. } => *retriable,
            Error::Transport(_) => true,
            Error::Invalid(_) | Error::Closed => false,
        }
    }

    pub(crate) fn api(code: ErrorCode, message: impl Into<String>) -> Error {
        let retriable = matches!(
            code,
            ErrorCode::NotLeader
                | ErrorCode::UnknownTopic
                | ErrorCode::UnknownPartition
                | ErrorCode::Throttled
                | ErrorCode::Timeout
                | ErrorCode::Unavailable
                | ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorLoadInProgress
        );
        Error::Api { code, retriable, message: message.into(), retry_after: None, leader: None }
    }

    /// A gRPC status: the broker's own limits map to their codes, the rest
    /// is the transport failing.
    pub(crate) fn from_status(status: tonic::Status) -> Error {
        match status.code() {
            // tonic refuses a message over the server's decoding limit so.
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted if status.message().contains("too large") => {
                Error::api(ErrorCode::RequestTooLarge, status.message())
            }
            tonic::Code::InvalidArgument => Error::api(ErrorCode::InvalidRequest, status.message()),
            // A broker with authorization.enabled refusing the whole call.
            tonic::Code::PermissionDenied => Error::api(ErrorCode::NotAuthorized, status.message()),
            // A connection that failed says why in its sources (refused,
            // a certificate not trusted, no certificate given).
            _ => {
                let mut text = status.message().to_string();
                if let Some(source) = std::error::Error::source(&status) {
                    let why = error_chain(source);
                    if why.contains(&text) {
                        text = why;
                    } else if !text.contains(&why) {
                        text = format!("{text}: {why}");
                    }
                }
                // A TLS handshake refused by either side (a certificate
                // not trusted, none given) fails the same way every time.
                if text.contains("invalid peer certificate") || text.contains("received fatal alert") {
                    return Error::Invalid(format!("TLS handshake refused: {text}"));
                }
                Error::Transport(format!("{}: {text}", status.code()))
            }
        }
    }

    /// An error from the wire, `None` when it says success.
    pub(crate) fn from_pb(error: Option<pb::Error>) -> Option<Error> {
        let e = error?;
        let code = match e.code() {
            pb::ErrorCode::None => return None,
            pb::ErrorCode::Unknown => ErrorCode::Unknown,
            pb::ErrorCode::NotLeader => ErrorCode::NotLeader,
            pb::ErrorCode::UnknownTopic => ErrorCode::UnknownTopic,
            pb::ErrorCode::UnknownPartition => ErrorCode::UnknownPartition,
            pb::ErrorCode::OffsetOutOfRange => ErrorCode::OffsetOutOfRange,
            pb::ErrorCode::MessageTooLarge => ErrorCode::MessageTooLarge,
            pb::ErrorCode::CorruptBatch => ErrorCode::CorruptBatch,
            pb::ErrorCode::OutOfOrderSequence => ErrorCode::OutOfOrderSequence,
            pb::ErrorCode::ProducerFenced => ErrorCode::ProducerFenced,
            pb::ErrorCode::Throttled => ErrorCode::Throttled,
            pb::ErrorCode::InvalidConfig => ErrorCode::InvalidConfig,
            pb::ErrorCode::TopicAlreadyExists => ErrorCode::TopicAlreadyExists,
            pb::ErrorCode::InvalidRequest => ErrorCode::InvalidRequest,
            pb::ErrorCode::RequestTooLarge => ErrorCode::RequestTooLarge,
            pb::ErrorCode::Timeout => ErrorCode::Timeout,
            pb::ErrorCode::Unavailable => ErrorCode::Unavailable,
            pb::ErrorCode::NotCoordinator => ErrorCode::NotCoordinator,
            pb::ErrorCode::CoordinatorLoadInProgress => ErrorCode::CoordinatorLoadInProgress,
            pb::ErrorCode::UnknownMemberId => ErrorCode::UnknownMemberId,
            pb::ErrorCode::FencedMemberEpoch => ErrorCode::FencedMemberEpoch,
            pb::ErrorCode::GroupNotEmpty => ErrorCode::GroupNotEmpty,
            pb::ErrorCode::UnknownGroup => ErrorCode::UnknownGroup,
            pb::ErrorCode::NotAuthorized => ErrorCode::NotAuthorized,
        };
        let leader = e.leader_id.filter(|_| !e.leader_address.is_empty()).map(|id| (id, e.leader_address.clone()));
        Some(Error::Api {
            code,
            retriable: e.retriable,
            message: e.message,
            retry_after: (e.retry_after_ms > 0).then(|| Duration::from_millis(e.retry_after_ms)),
            leader,
        })
    }
}

/// The client's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
