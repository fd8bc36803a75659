//! Producer ids for idempotent producers, and who may write under them: an id issued
//! to an authenticated principal belongs to it, so a client that read another's id
//! from a fetched batch header cannot write under it (its batches would be taken for
//! the victim's, and the victim's next batch acknowledged as a duplicate and lost).

use std::sync::Arc;
use std::time::Duration;

use quiver_cluster::metadata::{MetadataCommand, MetadataResponse};
use quiver_wire::ErrorCode;
use quiver_wire::message::ResponseBody;
use quiver_wire::message::{InitProducerIdRequest, InitProducerIdResponse};

use super::{Call, Outgoing, RequestError};
use crate::security::Principal;

/// How long a produce under an id this broker has no owner for waits for the claim to
/// arrive with the controller's metadata: the id may have been issued by another
/// broker a moment ago.
const CLAIM_ARRIVAL_WAIT: Duration = Duration::from_secs(2);

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
    if let Principal::User(name) = call.principal {
        let member = &*state.cluster;
        let command = MetadataCommand::ClaimProducerId {
            producer_id,
            principal: name.clone(),
        };
        match crate::cluster::propose_change(member, command).await? {
            MetadataResponse::ProducerIdClaimed { .. } => {}
            other => return Err(crate::cluster::unexpected(&other)),
        }
    }
    Ok(Outgoing::Frame(
        InitProducerIdResponse {
            producer_id,
            producer_epoch: 0,
        }
        .encode_frame(),
    ))
}

/// Refuses a produce under `producer_id` unless it was issued to the caller. An id
/// nobody claimed belongs to anonymous clients (issued while authentication was off);
/// an authenticated client must write under one of its own.
pub(super) async fn ensure_owned(call: &Call<'_>, producer_id: u64) -> Result<(), RequestError> {
    let principal = call.principal;
    if *principal == Principal::Broker {
        return Ok(());
    }
    let member = &*call.state.cluster;
    let mut changes = member.controller.watch();
    let deadline = tokio::time::Instant::now() + CLAIM_ARRIVAL_WAIT;
    loop {
        let metadata = member.controller.metadata();
        match metadata.producer_owner(producer_id) {
            Some(owner) if owner == principal.name() => return Ok(()),
            Some(_) => return Err(not_owned(principal, producer_id)),
            None if !principal.is_authenticated() => return Ok(()),
            None => {}
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() {
                return Err(not_owned(principal, producer_id));
            },
            _ = tokio::time::sleep_until(deadline) => return Err(not_owned(principal, producer_id)),
        }
    }
}

fn not_owned(principal: &Principal, producer_id: u64) -> RequestError {
    RequestError::new(
        ErrorCode::ProducerIdNotOwned,
        format!(
            "producer id {producer_id} was not issued to {principal}: ask for one (InitProducerId) and write under it"
        ),
    )
}
