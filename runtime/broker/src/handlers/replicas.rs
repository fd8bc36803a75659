//! A follower's fetch from this broker's leader replica.

use quiver_wire::cluster::ReplicaFetchRequest;

use super::{Call, Outgoing, PeerProof, RequestError};

pub(super) async fn replica_fetch(
    req: ReplicaFetchRequest,
    call: &Call<'_>,
    _peer: PeerProof,
) -> Result<Outgoing, RequestError> {
    let member = &*call.state.cluster;
    crate::replication::handle_replica_fetch(req, &member.replicas).await
}
