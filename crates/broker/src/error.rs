//! The errors a client sees: a typed code, whether a retry may succeed, a
//! message, and for some codes a hint (the leader, a retry-after).

use std::time::Duration;

use strata_raft::{ClusterError, ProduceError};

/// What went wrong, as a client can act on it (mirrors `ErrorCode` in
/// `proto/api.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Unexpected.
    Unknown,
    /// Another broker leads the partition.
    NotLeader,
    /// No such topic.
    UnknownTopic,
    /// No such partition.
    UnknownPartition,
    /// Offset outside the log.
    OffsetOutOfRange,
    /// Batch above max.message.bytes.
    MessageTooLarge,
    /// Batch damaged or not RecordBatch v2.
    CorruptBatch,
    /// Sequence gap of an idempotent producer.
    OutOfOrderSequence,
    /// Producer epoch superseded.
    ProducerFenced,
    /// Broker at a limit; retry later.
    Throttled,
    /// Bad config key or value.
    InvalidConfig,
    /// Topic exists.
    TopicAlreadyExists,
    /// Bad request field.
    InvalidRequest,
    /// Request too large.
    RequestTooLarge,
    /// No answer in time.
    Timeout,
    /// No leader or replication failing; retry.
    Unavailable,
    /// This broker does not coordinate the group.
    NotCoordinator,
    /// The coordinator is loading; retry.
    CoordinatorLoadInProgress,
    /// Not a member of the group.
    UnknownMemberId,
    /// A stale member epoch: fenced.
    FencedMemberEpoch,
    /// The group has active members.
    GroupNotEmpty,
    /// No such group.
    UnknownGroup,
    /// The client's principal may not do this (`authorization.enabled`).
    NotAuthorized,
}

impl Code {
    /// Whether retrying the same request may succeed. As in Kafka, an
    /// unknown topic or partition is retriable: a broker that just
    /// restarted may not have caught up with the metadata yet.
    pub fn retriable(self) -> bool {
        matches!(
            self,
            Code::NotLeader
                | Code::UnknownTopic
                | Code::UnknownPartition
                | Code::Throttled
                | Code::Timeout
                | Code::Unavailable
                | Code::NotCoordinator
                | Code::CoordinatorLoadInProgress
        )
    }
}

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What went wrong.
    pub code: Code,
    /// In words.
    pub message: String,
    /// NOT_LEADER: the leader's id and client address, if known.
    pub leader: Option<(u64, String)>,
    /// THROTTLED: when to retry.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), leader: None, retry_after: None }
    }

    /// THROTTLED, retry after `after`.
    pub fn throttled(message: impl Into<String>, after: Duration) -> ApiError {
        ApiError { retry_after: Some(after), ..ApiError::new(Code::Throttled, message) }
    }

    /// NOT_LEADER, naming the leader when known.
    pub fn not_leader(what: &str, leader: Option<(u64, String)>) -> ApiError {
        let message = match &leader {
            Some((id, addr)) => format!("this broker does not lead {what}; broker {id} at {addr} does"),
            None => format!("this broker does not lead {what}; its leader is not known here"),
        };
        ApiError { leader, ..ApiError::new(Code::NotLeader, message) }
    }

    /// A produce failure on a partition; `leader_addr` resolves a leader id.
    pub fn from_produce(err: ProduceError, what: &str, leader_addr: impl Fn(u64) -> Option<String>) -> ApiError {
        match err {
            ProduceError::NotLeader { leader } => {
                ApiError::not_leader(what, leader.and_then(|id| leader_addr(id).map(|a| (id, a))))
            }
            ProduceError::InvalidBatch(message) => ApiError::new(Code::CorruptBatch, message),
            e @ ProduceError::OutOfOrderSequence { .. } => ApiError::new(Code::OutOfOrderSequence, e.to_string()),
            e @ ProduceError::ProducerFenced { .. } => ApiError::new(Code::ProducerFenced, e.to_string()),
            e @ (ProduceError::Raft(_) | ProduceError::Unavailable(_)) => {
                ApiError::new(Code::Unavailable, e.to_string())
            }
        }
    }

    /// A failure of a metadata change.
    pub fn from_cluster(err: ClusterError) -> ApiError {
        match err {
            ClusterError::Produce(ProduceError::NotLeader { .. }) => {
                ApiError::new(Code::Unavailable, "the controller has no reachable leader; retry")
            }
            ClusterError::Produce(e) => ApiError::from_produce(e, "the controller", |_| None),
            ClusterError::Invalid(message) => ApiError::new(Code::InvalidRequest, message),
            // As Kafka's REQUEST_TIMED_OUT after a change: it may be done.
            ClusterError::NotAppliedYet(message) => ApiError::new(Code::Timeout, message),
            ClusterError::Node(e) => ApiError::new(Code::Unavailable, e.to_string()),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_change_not_yet_applied_is_a_timeout_not_a_bad_request() {
        let err = ApiError::from_cluster(ClusterError::NotAppliedYet("later".into()));
        assert_eq!(err.code, Code::Timeout);
        assert!(err.code.retriable());
        assert_eq!(ApiError::from_cluster(ClusterError::Invalid("no".into())).code, Code::InvalidRequest);
    }
}
