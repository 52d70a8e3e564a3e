//! `strata-proto`: the protobuf messages and gRPC services of Strata,
//! generated at build time from `proto/*.proto`.
//!
//! **Architecture Invariant:** protobuf types stop at the edge. The crates
//! that speak these protocols convert them to their own types in one place
//! per type (e.g. `strata-raft`'s `network/convert.rs`).

/// Node-to-node Raft transport (`raft.proto`).
#[allow(missing_docs, clippy::all)]
pub mod raft {
    tonic::include_proto!("strata.raft.v1");
}
