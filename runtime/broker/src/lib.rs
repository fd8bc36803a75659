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

pub mod admin;
pub mod admission;
pub mod adopt;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod group;
pub mod handlers;
pub mod join;
pub mod log_limit;
pub mod metrics;
pub mod offsets;
pub mod partition;
pub mod peers;
pub(crate) mod plugin_plan;
pub mod plugins;
pub mod producer_id;
pub mod quota;
pub(crate) mod replica_plan;
pub mod replication;
pub mod reply;
pub mod security;
pub mod server;
pub mod state;
pub mod tasks;
pub mod tls;
pub mod topic;
pub mod worker;

pub use config::BrokerConfig;
pub use server::{RunningBroker, StartError, start};
