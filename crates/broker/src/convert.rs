//! The broker's errors as protobuf, in one place.

use strata_proto::api as pb;
use strata_raft::acl::{AclBinding, AclFilter, PatternType, ResourceType};

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
        Code::NotAuthorized => pb::ErrorCode::NotAuthorized,
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

/// An access control binding from the wire, each word checked; an empty
/// pattern type is literal, and the cluster's resource name is always
/// Kafka's `kafka-cluster`.
pub fn acl_from_pb(acl: &pb::Acl) -> Result<AclBinding, ApiError> {
    let invalid = |e: String| ApiError::new(Code::InvalidRequest, e);
    let resource_type: ResourceType = acl.resource_type.parse().map_err(invalid)?;
    let pattern = match acl.pattern_type.trim() {
        "" => PatternType::Literal,
        word => word.parse().map_err(invalid)?,
    };
    let resource_name =
        if resource_type == ResourceType::Cluster { "kafka-cluster".to_string() } else { acl.resource_name.clone() };
    let binding = AclBinding {
        principal: acl.principal.trim().to_string(),
        resource_type,
        resource_name,
        pattern: if resource_type == ResourceType::Cluster { PatternType::Literal } else { pattern },
        operation: acl.operation.parse().map_err(invalid)?,
        permission: acl.permission.parse().map_err(invalid)?,
    };
    binding.validate().map_err(invalid)?;
    Ok(binding)
}

/// A binding for the wire.
pub fn acl_to_pb(acl: &AclBinding) -> pb::Acl {
    pb::Acl {
        principal: acl.principal.clone(),
        resource_type: acl.resource_type.to_string(),
        resource_name: acl.resource_name.clone(),
        pattern_type: acl.pattern.to_string(),
        operation: acl.operation.to_string(),
        permission: acl.permission.to_string(),
    }
}

/// A filter from the wire (absent: every binding), each word checked.
pub fn acl_filter_from_pb(filter: Option<pb::AclFilter>) -> Result<AclFilter, ApiError> {
    let Some(f) = filter else { return Ok(AclFilter::default()) };
    fn word<T: std::str::FromStr<Err = String>>(w: Option<String>) -> Result<Option<T>, ApiError> {
        w.map(|w| w.parse().map_err(|e| ApiError::new(Code::InvalidRequest, e))).transpose()
    }
    Ok(AclFilter {
        principal: f.principal,
        resource_type: word(f.resource_type)?,
        resource_name: f.resource_name,
        pattern: word(f.pattern_type)?,
        operation: word(f.operation)?,
        permission: word(f.permission)?,
    })
}
