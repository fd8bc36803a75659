//! How a node joins the cluster with a join token (`crate::join`): the CA certificate
//! for anyone who asks, and a broker certificate for a node that proves the join
//! secret on its connection. Both are bounded by the broker's join gate.

use bytes::Bytes;
use quiver_wire::ErrorCode;
use quiver_wire::join::{JoinCaRequest, JoinCaResponse, JoinClusterRequest, JoinClusterResponse};
use quiver_wire::message::ResponseBody;

use super::{Call, Outgoing, RequestError};

/// Refuses the request when the broker answered its share of joins this minute.
fn admitted(call: &Call<'_>) -> Result<(), RequestError> {
    if call.state.join_gate.admit(call.state.clock.now_ms()) {
        return Ok(());
    }
    Err(RequestError::new(
        ErrorCode::Timeout,
        format!(
            "this broker answers at most {} join requests a minute: try again shortly",
            crate::join::JOIN_REQUESTS_PER_MINUTE_MAX
        ),
    ))
}

/// The cluster's CA certificate: public, and what a joining node checks against its
/// token's fingerprint.
pub(super) async fn ca(_req: JoinCaRequest, call: &Call<'_>) -> Result<Outgoing, RequestError> {
    admitted(call)?;
    let path = crate::peers::peer_ca(&call.state.config);
    let der = crate::tls::first_certificate(&path)
        .map_err(|e| RequestError::new(ErrorCode::StorageError, e.to_string()))?;
    Ok(Outgoing::Frame(
        JoinCaResponse {
            ca_cert: Bytes::from(der.to_vec()),
        }
        .encode_frame(),
    ))
}

/// A broker certificate for the node that proved the join secret on this connection.
pub(super) async fn join(
    req: JoinClusterRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    admitted(call)?;
    let state = call.state;
    let live = if req.node_id == state.config.node_id {
        Some(format!("{} (the broker answering)", state.config.listen))
    } else {
        let metadata = state.cluster.controller.metadata();
        metadata
            .broker(req.node_id)
            .filter(|b| !b.fenced)
            .map(|b| b.address.clone())
    };
    let data_dir = state.config.data_dir.clone();
    let binding = call.connection.channel_binding();
    let node_id = req.node_id;
    let issued = crate::worker::blocking(|| {
        crate::join::issue(&data_dir, binding.as_ref().map(|b| &b[..]), &req, live)
    });
    match issued {
        Ok(der) => {
            tracing::info!(
                target: "quiver::audit",
                principal = %call.principal,
                action = "join",
                outcome = "done",
                "issued a broker certificate for node {node_id} naming {:?}",
                req.addresses
            );
            Ok(Outgoing::Frame(
                JoinClusterResponse {
                    certificate: Bytes::from(der),
                }
                .encode_frame(),
            ))
        }
        Err(refusal) => {
            if state.join_gate.refusals.due(state.clock.now_ms()).is_some() {
                tracing::warn!(
                    node_id,
                    code = refusal.code.name(),
                    "join refused: {}",
                    refusal.message
                );
            }
            Err(RequestError::new(refusal.code, refusal.message))
        }
    }
}
