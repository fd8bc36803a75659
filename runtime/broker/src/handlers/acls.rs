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

pub(super) async fn create(
    req: AclCreateRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let what = listed(&req.bindings);
    let outcome = async {
        checked(&req.bindings)?;
        let member = crate::cluster::member(call.state)?;
        let command = MetadataCommand::CreateAcls {
            bindings: req.bindings,
        };
        match crate::cluster::propose_change(member, command).await? {
            MetadataResponse::AclsCreated { .. } => Ok(Outgoing::Frame(Empty.encode_frame())),
            other => Err(crate::cluster::unexpected(&other)),
        }
    }
    .await;
    call.audited("acl_create", &what, outcome)
}

pub(super) async fn delete(
    req: AclDeleteRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let what = listed(&req.bindings);
    let outcome = async {
        checked(&req.bindings)?;
        let member = crate::cluster::member(call.state)?;
        let command = MetadataCommand::DeleteAcls {
            bindings: req.bindings,
        };
        match crate::cluster::propose_change(member, command).await? {
            MetadataResponse::AclsDeleted { removed } => Ok(Outgoing::Frame(
                AclDeleteResponse { removed }.encode_frame(),
            )),
            other => Err(crate::cluster::unexpected(&other)),
        }
    }
    .await;
    call.audited("acl_delete", &what, outcome)
}

pub(super) async fn describe(
    req: AclDescribeRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let member = crate::cluster::member(call.state)?;
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
