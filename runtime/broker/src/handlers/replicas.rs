//! A follower's fetch from this broker's leader replica.

use quiver_wire::cluster::ReplicaFetchRequest;

use super::{Call, Outgoing, PeerProof, RequestError};

pub(super) async fn replica_fetch(
    req: ReplicaFetchRequest,
    call: &Call<'_>,
    _peer: PeerProof,
) -> Result<Outgoing, RequestError> {
    crate::replication::handle_replica_fetch(req, call.state).await
}
