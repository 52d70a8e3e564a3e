//! `strata-proto`: the protobuf messages and gRPC services of Strata,
//! generated at build time from `proto/*.proto`, the codec they encode
//! with (`codec`), and the calls that carry batches without copying them
//! (`chained`: Produce, Fetch and the peers' stream; `api_paths` names the
//! client calls it carries), and [`error_chain`], which puts a transport
//! error's causes into words.
//!
//! **Architecture Invariant:** protobuf types stop at the edge. The crates
//! that speak these protocols convert them to their own types in one place
//! per type (`strata-raft`'s `network/convert.rs`, `strata-broker`'s and `strata-client`'s `convert.rs`).

pub mod chained;
pub mod codec;

/// An error and its sources, `a: b: c`, each cause said once: tonic's
/// transport errors say little alone ("transport error"), their sources
/// say why (refused, a certificate not trusted, no certificate given).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

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
