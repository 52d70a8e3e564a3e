//! The node-to-node transport: every Raft group between two nodes shares
//! one gRPC bidirectional stream (`proto/raft.proto`), multiplexed by group
//! id and request id.
//!
//! - `peer`: the sending side, one lazily made connection per peer node;
//! - `server`: the receiving side, routing requests to the group's Raft;
//! - `client`: openraft's `RaftNetworkV2` for one group over a peer;
//! - `convert`: protobuf ↔ openraft types, one function per type;
//! - `faults`: seeded fault injection on the sending side, for tests;
//! - `tls`: mutual TLS between nodes, when configured.

pub(crate) mod client;
pub(crate) mod convert;
pub mod faults;
pub(crate) mod peer;
pub(crate) mod server;
pub mod tls;
