//! `strata-proto`: the protobuf messages and gRPC services of Strata,
//! generated at build time from `proto/*.proto`, the codec they encode
//! with (`codec`), and the calls that carry batches without copying them
//! (`chained`: Produce, Fetch and the peers' stream; `api_paths` names the
//! client calls it carries).
//!
//! **Architecture Invariant:** protobuf types stop at the edge. The crates
//! that speak these protocols convert them to their own types in one place
//! per type (`strata-raft`'s `network/convert.rs`, `strata-broker`'s and `strata-client`'s `convert.rs`).

pub mod chained;
pub mod codec;

/// Node-to-node Raft transport (`raft.proto`).
#[allow(missing_docs, clippy::all)]
pub mod raft {
    tonic::include_proto!("strata.raft.v1");
}

/// The client API (`api.proto`): produce, fetch, offsets, metadata, admin.
#[allow(missing_docs, clippy::all)]
pub mod api {
    tonic::include_proto!("strata.api.v1");
}

/// The gRPC paths of the client API calls that the client sends and the
/// broker serves with [`chained`] instead of tonic's generated code.
pub mod api_paths {
    /// `Strata/Produce` (`api.proto`).
    pub const PRODUCE: &str = "/strata.api.v1.Strata/Produce";
    /// `Strata/Fetch` (`api.proto`).
    pub const FETCH: &str = "/strata.api.v1.Strata/Fetch";
}
