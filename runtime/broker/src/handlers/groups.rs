//! Consumer groups and committed offsets: heartbeats, commits and reads of committed
//! offsets, listings. Served by the group coordinator (the controller leader).

use std::collections::BTreeMap;

use quiver_wire::ErrorCode;
use quiver_wire::group::{
    DeleteGroupRequest, DescribeGroupRequest, DescribeGroupResponse, GroupHeartbeatRequest,
    GroupHeartbeatResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetFetchRequest, OffsetFetchResponse,
};
use quiver_wire::message::Empty;
use quiver_wire::message::ResponseBody;

use quiver_wire::acl::Operation::Describe;

use super::{Call, Outgoing, RequestError, partition};
use crate::group::{GroupCoordinator, Heartbeat, validate_group_id};
use crate::offsets::OffsetView;
use crate::security::Need;
use crate::state::BrokerState;

fn coordinator(state: &BrokerState) -> std::sync::MutexGuard<'_, GroupCoordinator> {
    state
        .groups
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Commits offsets: checks the member, then commits them through the controller; they
/// are visible once a quorum holds them.
pub(super) async fn offset_commit(
    req: OffsetCommitRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    // A commit outside any membership is an administrator moving the group's offsets
    // (`quiver group reset-offsets`): audited. Members' own commits are not.
    if req.member_id.is_empty() {
        let what = format!(
            "group `{}`: {}",
            req.group,
            req.offsets
                .iter()
                .map(|o| format!("{}/{} to {}", o.topic, o.partition, o.offset))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return call.audited("group_offsets_reset", &what, commit(req, call).await);
    }
    commit(req, call).await
}

async fn commit(req: OffsetCommitRequest, call: &Call<'_>) -> Result<Outgoing, RequestError> {
    let state = call.state;
    let member = crate::cluster::group_coordinator(&state.cluster)?;
    coordinator(state).check_commit(&req.group, &req.member_id, req.member_epoch)?;
    for o in &req.offsets {
        partition(state, &o.topic, o.partition)?;
    }
    crate::cluster::commit_offsets(member, &req.group, &req.offsets).await?;
    Ok(Outgoing::Frame(Empty.encode_frame()))
}

/// The committed offsets as of now, from the controller's metadata on the
/// coordinator.
async fn committed_offsets(state: &BrokerState) -> Result<OffsetView, RequestError> {
    let member = crate::cluster::group_coordinator(&state.cluster)?;
    Ok(OffsetView(crate::cluster::current_metadata(member).await?))
}

pub(super) async fn offset_fetch(
    req: OffsetFetchRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let state = call.state;
    validate_group_id(&req.group)?;
    let view = committed_offsets(state).await?;
    let offsets = match req.partitions {
        None => view
            .of_group(&req.group)
            .into_iter()
            .map(|c| (c.topic.clone(), c.partition, Some(c)))
            .collect(),
        Some(wanted) => wanted
            .iter()
            .flat_map(|tp| tp.partitions.iter().map(move |p| (tp.topic.clone(), *p)))
            .map(|(topic, p)| {
                let committed = view.get(&req.group, &topic, p);
                (topic, p, committed)
            })
            .collect(),
    };
    Ok(Outgoing::Frame(
        OffsetFetchResponse { offsets }.encode_frame(),
    ))
}

pub(super) async fn group_heartbeat(
    req: GroupHeartbeatRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let state = call.state;
    // Confirmed with a quorum: a controller cut off from the others must not go on
    // granting partitions that the new leader grants too.
    let member = crate::cluster::group_coordinator(&state.cluster)?;
    crate::cluster::current_metadata(member).await?;
    if let Some(topics) = &req.subscription {
        for t in topics {
            if state.topics.get(t).is_none() {
                return Err(RequestError::new(
                    ErrorCode::UnknownTopic,
                    format!("topic `{t}` does not exist"),
                ));
            }
        }
    }
    let partitions_of = |topic: &str| state.topics.get(topic).map(|t| t.partitions.len() as u32);
    let outcome = coordinator(state).handle_heartbeat(
        Heartbeat {
            group: &req.group,
            member_id: &req.member_id,
            member_epoch: req.member_epoch,
            session_timeout_ms: req.session_timeout_ms,
            subscription: req.subscription.as_deref(),
            owned: &req.owned,
        },
        &partitions_of,
        state.clock.now_ms(),
    )?;
    let response = GroupHeartbeatResponse {
        member_id: outcome.member_id,
        member_epoch: outcome.member_epoch,
        heartbeat_interval_ms: outcome.heartbeat_interval_ms,
        assignment: outcome.assignment,
    };
    Ok(Outgoing::Frame(response.encode_frame()))
}

pub(super) async fn list_groups(
    _req: ListGroupsRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let state = call.state;
    let mut groups: BTreeMap<String, u32> = committed_offsets(state)
        .await?
        .groups()
        .into_iter()
        .map(|g| (g, 0))
        .collect();
    for (group, members) in coordinator(state).list() {
        groups.insert(group, members);
    }
    groups.retain(|group, _| call.may(&Need::group(Describe, group)));
    Ok(Outgoing::Frame(
        ListGroupsResponse {
            groups: groups.into_iter().collect(),
        }
        .encode_frame(),
    ))
}

pub(super) async fn describe_group(
    req: DescribeGroupRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let state = call.state;
    validate_group_id(&req.group)?;
    crate::cluster::group_coordinator(&state.cluster)?;
    let (group_epoch, members) = coordinator(state).describe(&req.group);
    Ok(Outgoing::Frame(
        DescribeGroupResponse {
            group: req.group,
            group_epoch,
            members,
        }
        .encode_frame(),
    ))
}

/// Kafka's DeleteGroups: forgets a group's committed offsets, refused with
/// `GROUP_NOT_EMPTY` while it has active members.
pub(super) async fn delete_group(
    req: DeleteGroupRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let what = format!("group `{}`", req.group);
    call.audited("group_delete", &what, delete(req, call).await)
}

async fn delete(req: DeleteGroupRequest, call: &Call<'_>) -> Result<Outgoing, RequestError> {
    let state = call.state;
    validate_group_id(&req.group)?;
    let member = crate::cluster::group_coordinator(&state.cluster)?;
    // The check an administrator's offset commit passes: no member in the group.
    coordinator(state).check_commit(&req.group, "", quiver_wire::group::NO_MEMBER_EPOCH)?;
    crate::cluster::delete_group(member, &req.group)
        .await
        .map_err(|mut err| {
            if err.code == ErrorCode::GroupIdNotFound {
                err.message = format!(
                    "group `{}` has neither members nor committed offsets",
                    req.group
                );
            }
            err
        })?;
    coordinator(state).forget_if_empty(&req.group);
    Ok(Outgoing::Frame(Empty.encode_frame()))
}
