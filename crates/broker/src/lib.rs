//! `strata-broker`: a Strata node as clients and operators see it.
//!
//! - [`Server`]: binds the client gRPC, peer Raft and HTTP listeners, starts
//!   the cluster node (`strata_raft::ClusterNode`) and stops gracefully.
//! - [`service::Broker`]: every RPC of `proto/api.proto`, answered from this
//!   node's replicas and its copy of the metadata.
//! - [`config`]: the server's settings from TOML, environment and flags.
//! - `retention`: the per-node retention and compaction scheduler.
//! - `cpus_awake`: the CPU latency request of `runtime.keep_cpus_awake`.
//! - [`metrics`]: counters and gauges served at `/metrics` (Prometheus).
//!
//! **Architecture Invariant:** the broker holds no partition data of its
//! own: records stay in the logs, read as slices; the broker checks,
//! routes and answers. Protobuf types are converted in `service.rs` and
//! `convert.rs` only.

pub mod auth;
pub mod config;
mod convert;
mod cpus_awake;
pub mod disk;
pub mod error;
pub mod groups;
mod http;
pub mod limits;
pub mod metrics;
mod open_files;
mod retention;
mod server;
pub mod service;
pub mod topic_config;

pub use config::{ConfigBuilder, ConfigError, ServerConfig, TlsConfig};
pub use error::{ApiError, Code};
pub use http::readiness;
pub use server::{Listeners, Server, ServerError, wait_for_signal};
pub use service::PARTITION_SPAN_TARGET;
