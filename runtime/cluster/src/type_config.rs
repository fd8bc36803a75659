//! The controller's openraft type configuration.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::metadata::{MetadataCommand, MetadataResponse};
use crate::storage::SnapshotBytes;

/// A controller's Raft id. Equal to its broker's id.
pub type NodeId = u64;

/// What the cluster membership records about a controller: where to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerNode {
    /// The broker's QUIC address, `host:port`; the broker carries Raft RPCs there.
    pub addr: String,
}

impl ControllerNode {
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into() }
    }
}

impl fmt::Display for ControllerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

openraft::declare_raft_types!(
    /// Types of Quiver's controller Raft group.
    pub TypeConfig:
        D = MetadataCommand,
        R = MetadataResponse,
        NodeId = NodeId,
        Node = ControllerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotBytes,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

/// A Raft log entry of the controller.
pub type LogEntry = openraft::Entry<TypeConfig>;
/// A Raft log id of the controller.
pub type LogId = openraft::LogId<NodeId>;
/// The controller's Raft handle.
pub type ControllerRaft = openraft::Raft<TypeConfig>;
