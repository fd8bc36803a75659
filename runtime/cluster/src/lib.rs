//! Quiver's controller: cluster metadata (brokers, topics, partition assignments and
//! leadership, plugins, committed offsets) as a replicated state machine on openraft,
//! with its Raft log, vote and snapshots on disk.
//!
//! One controller runs inside each broker. A single node is a one-member quorum on
//! the same code path as a cluster; three controllers tolerate the loss of one.
//!
//! - [`metadata`]: the state machine itself, pure and deterministic, with its
//!   commands, answers, errors and limits.
//! - [`storage`]: the Raft log (segment files with a CRC per entry), the vote and the
//!   snapshots in the controller's directory.
//! - [`network`]: Raft RPCs over a [`RaftTransport`] the broker provides (QUIC);
//!   [`MemoryNetwork`] carries them in-process for tests.
//! - [`Controller`]: start, propose, read, watch, stop.
//!
//! - [`liveness`]: the leader's failure detector. Brokers' heartbeats reach the leader
//!   ([`Controller::heartbeat`]) and are answered from memory, timed on the leader's
//!   monotonic clock; only a heartbeat that changes the metadata (the first of a
//!   registration, or one that unfences) is written to the log.
//!
//! What it does not do: open sockets, read clocks for the state machine, run the
//! fencing timer (the broker's calls [`Controller::brokers_to_fence`] and proposes
//! the fencing), or store plugin modules (only their versions).

mod controller;
pub mod liveness;
mod memory_transport;
pub mod metadata;
pub mod network;
pub mod storage;
mod type_config;

pub use controller::{
    Controller, ControllerConfig, ControllerStatus, MembershipError, ProposeError, ShutdownError,
    StartError,
};
pub use memory_transport::{MemoryNetwork, MemoryTransport};
pub use metadata::{CommandError, MetadataCommand, MetadataResponse, MetadataState};
pub use network::{RaftRpc, RaftRpcReply, RaftTransport, RpcHandler, TransportError};
pub use type_config::{ControllerNode, ControllerRaft, LogEntry, LogId, NodeId, TypeConfig};
