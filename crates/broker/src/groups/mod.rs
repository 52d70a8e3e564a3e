//! Consumer groups: server-side assignment (KIP-848 style) and committed
//! offsets in `__consumer_offsets`.
//!
//! - `assign.rs`: the assignors (range, round-robin, sticky), pure;
//! - `state.rs`: one group's members, epochs and reconciliation, pure;
//! - `coordinator.rs`: the shards of `__consumer_offsets` this node leads,
//!   their loading after a failover, and every write.

pub mod assign;
pub mod coordinator;
pub mod state;

pub use coordinator::{Committed, Coordinator, GroupDescription, OFFSETS_TOPIC};
