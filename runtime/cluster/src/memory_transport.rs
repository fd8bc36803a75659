//! An in-process [`RaftTransport`] for tests: controllers in one process, with a way
//! to cut a node off or move it to another address.
//!
//! Every RPC and reply goes through the same JSON encoding a real transport uses, so
//! tests also prove that what openraft sends survives the trip.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::network::{
    RaftRpc, RaftRpcReply, RaftTransport, RpcCodecError, RpcHandler, TransportError,
};
use crate::type_config::NodeId;

/// The switchboard: which controllers are reachable, and which are cut off.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<Switchboard>>,
}

#[derive(Default)]
struct Switchboard {
    handlers: BTreeMap<NodeId, RpcHandler>,
    isolated: BTreeSet<NodeId>,
    /// Where a moved node listens now; a node not in here answers at any address.
    addresses: BTreeMap<NodeId, String>,
}

impl MemoryNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    /// The transport controller `from` sends with.
    pub fn transport(&self, from: NodeId) -> MemoryTransport {
        MemoryTransport {
            from,
            network: self.clone(),
        }
    }

    /// Makes controller `id` reachable through `handler`.
    pub fn register(&self, id: NodeId, handler: RpcHandler) {
        self.board().handlers.insert(id, handler);
    }

    /// Makes controller `id` unreachable, as if its process were gone.
    pub fn unregister(&self, id: NodeId) {
        self.board().handlers.remove(&id);
    }

    /// Cuts `id` off: nothing it sends arrives, nothing sent to it arrives.
    pub fn isolate(&self, id: NodeId) {
        self.board().isolated.insert(id);
    }

    /// Makes controller `id` answer only RPCs sent to `addr`, as a process restarted
    /// on another port would.
    pub fn move_to(&self, id: NodeId, addr: &str) {
        self.board().addresses.insert(id, addr.to_owned());
    }

    /// Reconnects a node cut off with [`MemoryNetwork::isolate`].
    pub fn heal(&self, id: NodeId) {
        self.board().isolated.remove(&id);
    }

    fn board(&self) -> MutexGuard<'_, Switchboard> {
        // Nothing panics while holding this lock; recover the map if a test did.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cut(&self, from: NodeId, to: NodeId) -> bool {
        let board = self.board();
        board.isolated.contains(&from) || board.isolated.contains(&to)
    }
}

/// One controller's end of a [`MemoryNetwork`].
#[derive(Clone)]
pub struct MemoryTransport {
    from: NodeId,
    network: MemoryNetwork,
}

impl RaftTransport for MemoryTransport {
    async fn send(
        &self,
        target: NodeId,
        addr: &str,
        rpc: RaftRpc,
    ) -> Result<RaftRpcReply, TransportError> {
        let unreachable = |reason: &str| TransportError::Unreachable {
            target,
            reason: reason.to_owned(),
        };
        if self.network.cut(self.from, target) {
            return Err(unreachable("cut off"));
        }
        let handler = {
            let board = self.network.board();
            if board.addresses.get(&target).is_some_and(|at| at != addr) {
                return Err(unreachable("nothing listens at that address"));
            }
            board
                .handlers
                .get(&target)
                .cloned()
                .ok_or_else(|| unreachable("not running"))?
        };
        let bytes = rpc.encode().map_err(|e| match e {
            RpcCodecError::TooLarge { .. } => TransportError::TooLarge(e),
            other => failed(target, other),
        })?;
        let rpc = RaftRpc::decode(&bytes).map_err(|e| failed(target, e))?;
        let reply = handler.handle(rpc).await;
        // A node cut off while the call ran loses the reply.
        if self.network.cut(self.from, target) {
            return Err(failed(target, "cut off"));
        }
        let bytes = reply.encode().map_err(|e| failed(target, e))?;
        RaftRpcReply::decode(&bytes).map_err(|e| failed(target, e))
    }
}

fn failed(target: NodeId, reason: impl ToString) -> TransportError {
    TransportError::Failed {
        target,
        reason: reason.to_string(),
    }
}
