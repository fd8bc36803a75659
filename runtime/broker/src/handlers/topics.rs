//! Topic administration: create and delete, through the controller.

use std::collections::BTreeMap;

use quiver_wire::ErrorCode;
use quiver_wire::message::{CreateTopicRequest, DeleteTopicRequest};
use quiver_wire::topic::validate_topic_name;

use super::{Call, Outgoing, RequestError};

pub(super) async fn create_topic(
    req: CreateTopicRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let what = format!(
        "topic `{}` ({} partitions, replication factor {})",
        req.name, req.partitions, req.replication_factor
    );
    call.audited("topic_create", &what, create(req, call).await)
}

async fn create(req: CreateTopicRequest, call: &Call<'_>) -> Result<Outgoing, RequestError> {
    let state = call.state;
    validate_topic_name(&req.name)
        .map_err(|e| RequestError::new(ErrorCode::InvalidTopicName, e.to_string()))?;
    let mut configs = BTreeMap::new();
    for (key, value) in req.configs {
        if configs.insert(key.clone(), value).is_some() {
            return Err(RequestError::new(
                ErrorCode::InvalidConfig,
                format!("config `{key}` given twice"),
            ));
        }
    }
    let member = crate::cluster::member(state)?;
    // Checked here so that a config the brokers cannot apply never reaches the
    // cluster metadata.
    crate::topic::log_config_for(&state.config.log, &configs)?;
    crate::cluster::create_topic(
        state,
        member,
        req.name,
        req.partitions,
        req.replication_factor,
        configs,
    )
    .await
}

pub(super) async fn delete_topic(
    req: DeleteTopicRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let what = format!("topic `{}`", req.name);
    call.audited("topic_delete", &what, delete(req, call).await)
}

async fn delete(req: DeleteTopicRequest, call: &Call<'_>) -> Result<Outgoing, RequestError> {
    let state = call.state;
    if req
        .name
        .starts_with(quiver_wire::topic::INTERNAL_TOPIC_PREFIX)
    {
        return Err(RequestError::new(
            ErrorCode::InvalidRequest,
            format!("`{}` is an internal topic and cannot be deleted", req.name),
        ));
    }
    let member = crate::cluster::member(state)?;
    crate::cluster::delete_topic(state, member, req.name).await
}
