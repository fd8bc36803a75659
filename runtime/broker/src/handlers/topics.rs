//! Topic administration: create, delete, alter configs and add partitions, through
//! the controller.

use std::collections::BTreeMap;

use quiver_wire::ErrorCode;
use quiver_wire::message::{
    AlterTopicConfigsRequest, CreatePartitionsRequest, CreateTopicRequest, DeleteTopicRequest,
    PARTITIONS_MAX,
};
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
    let member = &*state.cluster;
    // Checked here so that a config the brokers cannot apply never reaches the
    // cluster metadata.
    crate::topic::log_config_for(&state.config.log, &configs)?;
    crate::cluster::create_topic(
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
    let member = &*state.cluster;
    crate::cluster::delete_topic(member, req.name).await
}

/// Refuses changes to the broker's internal topics, which it manages itself.
fn refuse_internal(name: &str, change: &str) -> Result<(), RequestError> {
    if name.starts_with(quiver_wire::topic::INTERNAL_TOPIC_PREFIX) {
        return Err(RequestError::new(
            ErrorCode::InvalidRequest,
            format!("`{name}` is an internal topic: its {change} cannot be changed"),
        ));
    }
    Ok(())
}

pub(super) async fn alter_topic_configs(
    req: AlterTopicConfigsRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let set: Vec<String> = req.set.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let what = format!(
        "topic `{}`: set [{}], remove [{}]",
        req.name,
        set.join(", "),
        req.delete.join(", ")
    );
    call.audited("topic_alter_configs", &what, alter_configs(req, call).await)
}

async fn alter_configs(
    req: AlterTopicConfigsRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let state = call.state;
    validate_topic_name(&req.name)
        .map_err(|e| RequestError::new(ErrorCode::InvalidTopicName, e.to_string()))?;
    refuse_internal(&req.name, "configs")?;
    let invalid = |message: String| RequestError::new(ErrorCode::InvalidConfig, message);
    if req.set.is_empty() && req.delete.is_empty() {
        return Err(invalid("no config to set or remove".to_owned()));
    }
    let mut set = BTreeMap::new();
    for (key, value) in req.set {
        if set.insert(key.clone(), value).is_some() {
            return Err(invalid(format!("config `{key}` given twice")));
        }
    }
    let mut delete = Vec::with_capacity(req.delete.len());
    for key in req.delete {
        if !crate::topic::TOPIC_CONFIG_KEYS.contains(&key.as_str()) {
            return Err(invalid(format!(
                "unknown topic config `{key}`; known: {}",
                crate::topic::TOPIC_CONFIG_KEYS.join(", ")
            )));
        }
        if set.contains_key(&key) || delete.contains(&key) {
            return Err(invalid(format!(
                "config `{key}` given twice (set or removed once only)"
            )));
        }
        delete.push(key);
    }
    let member = &*state.cluster;
    let metadata = member.controller.metadata();
    let topic = metadata.topic(&req.name).ok_or_else(|| {
        RequestError::new(
            ErrorCode::UnknownTopic,
            format!("topic `{}` does not exist", req.name),
        )
    })?;
    // The topic's configs as they would be, checked with topic creation's rules so
    // that a config the brokers cannot apply never reaches the cluster metadata.
    let mut configs = topic.configs.clone();
    for key in &delete {
        configs.remove(key);
    }
    configs.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
    crate::topic::log_config_for(&state.config.log, &configs)?;
    crate::cluster::alter_topic_configs(member, req.name, set, delete).await
}

pub(super) async fn create_partitions(
    req: CreatePartitionsRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let what = format!("topic `{}` to {} partitions", req.name, req.partitions);
    call.audited(
        "topic_add_partitions",
        &what,
        add_partitions(req, call).await,
    )
}

async fn add_partitions(
    req: CreatePartitionsRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let state = call.state;
    validate_topic_name(&req.name)
        .map_err(|e| RequestError::new(ErrorCode::InvalidTopicName, e.to_string()))?;
    refuse_internal(&req.name, "partition count")?;
    let member = &*state.cluster;
    let current = member
        .controller
        .metadata()
        .topic(&req.name)
        .map(|t| t.partitions.len())
        .ok_or_else(|| {
            RequestError::new(
                ErrorCode::UnknownTopic,
                format!("topic `{}` does not exist", req.name),
            )
        })?;
    if req.partitions as usize <= current {
        return Err(RequestError::new(
            ErrorCode::InvalidPartitions,
            format!(
                "topic `{}` has {current} partitions: the new count must be larger than that (partitions are never removed), not {}",
                req.name, req.partitions
            ),
        ));
    }
    if req.partitions > PARTITIONS_MAX {
        return Err(RequestError::new(
            ErrorCode::InvalidPartitions,
            format!(
                "{} partitions: a topic has at most {PARTITIONS_MAX}",
                req.partitions
            ),
        ));
    }
    // The controller checks the count again (another change may have raced this one:
    // `PARTITION_COUNT_NOT_INCREASED` becomes `INVALID_PARTITIONS`) and the cluster's
    // total partition limit.
    crate::cluster::create_partitions(member, req.name, req.partitions).await
}
