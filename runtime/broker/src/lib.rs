//! The Quiver broker: a QUIC endpoint (quinn + rustls) in front of partition logs.
//!
//! What it does: accepts connections, answers one request per stream, stores produced
//! batches as they arrive (stamping offsets only), hands stored batches to consumers
//! without decoding them, applies the flush policy with group commit and retention on
//! a timer, persists topic metadata, and serves `/metrics`, `/health` and `/ready` on
//! the admin listener; consumer groups and committed offsets; WebAssembly plugins at
//! the produce and fetch stages; the controller (a one-member quorum on a single node,
//! the same code path as a cluster), topic placement and partition replication, with
//! committed offsets and the plugin registry in the controller's metadata.

pub(crate) mod admin;
pub(crate) mod admission;
pub(crate) mod adopt;
pub(crate) mod clock;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod group;
pub(crate) mod handlers;
pub mod join;
pub mod join_token;
pub(crate) mod log_limit;
pub(crate) mod metrics;
pub(crate) mod offsets;
pub(crate) mod partition;
pub(crate) mod peers;
pub(crate) mod plugin_plan;
pub(crate) mod plugins;
pub(crate) mod producer_id;
pub(crate) mod quota;
pub(crate) mod replica_plan;
pub(crate) mod replication;
pub(crate) mod reply;
pub(crate) mod security;
pub mod server;
pub(crate) mod state;
pub(crate) mod tasks;
#[cfg(test)]
pub(crate) mod testing;
pub mod tls;
pub(crate) mod topic;
pub(crate) mod worker;

pub use config::BrokerConfig;
pub use server::{RunningBroker, StartError, start};
