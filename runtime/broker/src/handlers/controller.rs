//! The controller's Raft RPCs between brokers, and the cluster status a client asks for.

use quiver_wire::cluster::{ClusterStatusRequest, ControllerRpcRequest};

use super::{Call, Outgoing, PeerProof, RequestError};

/// A Raft RPC from another controller of the quorum.
pub(super) async fn rpc(
    req: ControllerRpcRequest,
    call: &Call<'_>,
    _peer: PeerProof,
) -> Result<Outgoing, RequestError> {
    crate::cluster::handle_rpc(req, &call.state.cluster).await
}

pub(super) async fn status(
    _req: ClusterStatusRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    crate::cluster::status(&call.state.cluster, &call.state.peer_health, call.version)
}
