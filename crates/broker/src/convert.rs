//! The broker's errors as protobuf, in one place.

use strata_proto::api as pb;

use crate::error::{ApiError, Code};

/// The wire code of an error code.
pub fn code_to_pb(code: Code) -> pb::ErrorCode {
    match code {
        Code::Unknown => pb::ErrorCode::Unknown,
        Code::NotLeader => pb::ErrorCode::NotLeader,
        Code::UnknownTopic => pb::ErrorCode::UnknownTopic,
        Code::UnknownPartition => pb::ErrorCode::UnknownPartition,
        Code::OffsetOutOfRange => pb::ErrorCode::OffsetOutOfRange,
        Code::MessageTooLarge => pb::ErrorCode::MessageTooLarge,
        Code::CorruptBatch => pb::ErrorCode::CorruptBatch,
        Code::OutOfOrderSequence => pb::ErrorCode::OutOfOrderSequence,
        Code::ProducerFenced => pb::ErrorCode::ProducerFenced,
        Code::Throttled => pb::ErrorCode::Throttled,
        Code::InvalidConfig => pb::ErrorCode::InvalidConfig,
        Code::TopicAlreadyExists => pb::ErrorCode::TopicAlreadyExists,
        Code::InvalidRequest => pb::ErrorCode::InvalidRequest,
        Code::RequestTooLarge => pb::ErrorCode::RequestTooLarge,
        Code::Timeout => pb::ErrorCode::Timeout,
        Code::Unavailable => pb::ErrorCode::Unavailable,
        Code::NotCoordinator => pb::ErrorCode::NotCoordinator,
        Code::CoordinatorLoadInProgress => pb::ErrorCode::CoordinatorLoadInProgress,
        Code::UnknownMemberId => pb::ErrorCode::UnknownMemberId,
        Code::FencedMemberEpoch => pb::ErrorCode::FencedMemberEpoch,
        Code::GroupNotEmpty => pb::ErrorCode::GroupNotEmpty,
        Code::UnknownGroup => pb::ErrorCode::UnknownGroup,
    }
}

/// An error as sent to a client.
pub fn error_to_pb(error: &ApiError) -> pb::Error {
    let (leader_id, leader_address) = match &error.leader {
        Some((id, addr)) => (Some(*id), addr.clone()),
        None => (None, String::new()),
    };
    pb::Error {
        code: code_to_pb(error.code).into(),
        retriable: error.code.retriable(),
        message: error.message.clone(),
        retry_after_ms: error.retry_after.map_or(0, |d| d.as_millis() as u64),
        leader_id,
        leader_address,
    }
}

/// `None` for success, the error otherwise.
pub fn ok_or_error(result: Result<(), ApiError>) -> Option<pb::Error> {
    result.err().as_ref().map(error_to_pb)
}
