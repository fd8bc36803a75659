//! Producer ids for idempotent producers.

use std::sync::Arc;

use quiver_wire::ErrorCode;
use quiver_wire::message::ResponseBody;
use quiver_wire::message::{InitProducerIdRequest, InitProducerIdResponse};

use super::{Call, Outgoing, RequestError};

pub(super) async fn init_producer_id(
    _req: InitProducerIdRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let state = call.state;
    let worker = Arc::clone(state);
    let producer_id = tokio::task::spawn_blocking(move || worker.producer_ids.allocate())
        .await
        .map_err(|e| RequestError::new(ErrorCode::Unknown, e.to_string()))?
        .map_err(|e| RequestError::new(ErrorCode::StorageError, e.to_string()))?;
    let producer_id = crate::producer_id::cluster_unique(state.config.node_id, producer_id)
        .map_err(|e| RequestError::new(ErrorCode::StorageError, e.to_string()))?;
    Ok(Outgoing::Frame(
        InitProducerIdResponse {
            producer_id,
            producer_epoch: 0,
        }
        .encode_frame(),
    ))
}
