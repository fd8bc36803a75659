//! Access control lists: add, remove and list rules, through the controller.

use quiver_cluster::metadata::{MetadataCommand, MetadataResponse};
use quiver_wire::ErrorCode;
use quiver_wire::acl::{
    ACL_BINDINGS_PER_REQUEST_MAX, AclBinding, AclCreateRequest, AclDeleteRequest,
    AclDeleteResponse, AclDescribeRequest, AclDescribeResponse,
};
use quiver_wire::message::{Empty, ResponseBody};

use super::{Call, Outgoing, RequestError};

fn checked(bindings: &[AclBinding]) -> Result<(), RequestError> {
    if bindings.is_empty() || bindings.len() > ACL_BINDINGS_PER_REQUEST_MAX {
        return Err(RequestError::new(
            ErrorCode::InvalidRequest,
            format!(
                "{} rules: a request carries 1 to {ACL_BINDINGS_PER_REQUEST_MAX}",
                bindings.len()
            ),
        ));
    }
    for binding in bindings {
        binding
            .validate()
            .map_err(|e| RequestError::new(ErrorCode::InvalidRequest, format!("{binding}: {e}")))?;
    }
    Ok(())
}

fn listed(bindings: &[AclBinding]) -> String {
    bindings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks `bindings`, commits `command` of them through the controller and answers
/// with `answer` of the controller's reply; audited as `action`.
async fn change(
    call: &Call<'_>,
    action: &str,
    bindings: Vec<AclBinding>,
    command: fn(Vec<AclBinding>) -> MetadataCommand,
    answer: fn(&MetadataResponse) -> Option<Outgoing>,
) -> Result<Outgoing, RequestError> {
    let what = listed(&bindings);
    let outcome = async {
        checked(&bindings)?;
        let member = &*call.state.cluster;
        let reply = crate::cluster::propose_change(member, command(bindings)).await?;
        answer(&reply).ok_or_else(|| crate::cluster::unexpected(&reply))
    }
    .await;
    call.audited(action, &what, outcome)
}

pub(super) async fn create(
    req: AclCreateRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    change(
        call,
        "acl_create",
        req.bindings,
        |bindings| MetadataCommand::CreateAcls { bindings },
        |reply| {
            matches!(reply, MetadataResponse::AclsCreated { .. })
                .then(|| Outgoing::Frame(Empty.encode_frame()))
        },
    )
    .await
}

pub(super) async fn delete(
    req: AclDeleteRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    change(
        call,
        "acl_delete",
        req.bindings,
        |bindings| MetadataCommand::DeleteAcls { bindings },
        |reply| match reply {
            MetadataResponse::AclsDeleted { removed } => Some(Outgoing::Frame(
                AclDeleteResponse { removed: *removed }.encode_frame(),
            )),
            _ => None,
        },
    )
    .await
}

pub(super) async fn describe(
    req: AclDescribeRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let member = &*call.state.cluster;
    let metadata = member.controller.metadata();
    let bindings = metadata
        .acls()
        .filter(|b| req.selects(b))
        .cloned()
        .collect();
    Ok(Outgoing::Frame(
        AclDescribeResponse { bindings }.encode_frame(),
    ))
}
