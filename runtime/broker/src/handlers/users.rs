//! SCRAM-SHA-256 authentication of a connection, and the users the controller keeps.
//!
//! A failed exchange answers `AUTHENTICATION_FAILED` with one message whatever went
//! wrong (unknown user, wrong password, malformed message), so the answer tells an
//! attacker nothing about which users exist; the server-first message of an unknown
//! user looks like a known one's. After
//! [`SCRAM_FAILURES_PER_CONNECTION_MAX`](crate::security::SCRAM_FAILURES_PER_CONNECTION_MAX)
//! failures a connection's further attempts are refused unread.

use quiver_cluster::metadata::{MetadataCommand, MetadataResponse, UserRecord};
use quiver_wire::ErrorCode;
use quiver_wire::message::{Empty, ResponseBody};
use quiver_wire::sasl::{
    SCRAM_SHA_256, SaslAuthenticateRequest, SaslAuthenticateResponse, UserDeleteRequest,
    UserListRequest, UserListResponse, UserUpsertRequest,
};
use quiver_wire::scram::ScramCredential;

use super::{Call, Outgoing, RequestError};
use crate::security::{Principal, SCRAM_FAILURES_PER_CONNECTION_MAX, ScramProgress};

fn failed(call: &Call<'_>) -> RequestError {
    call.state.metrics.authentication_failed("scram");
    RequestError::new(ErrorCode::AuthenticationFailed, "authentication failed")
}

fn stored(record: &UserRecord) -> Option<ScramCredential> {
    Some(ScramCredential {
        salt: record.salt.clone(),
        iterations: record.iterations,
        stored_key: record.stored_key.as_slice().try_into().ok()?,
        server_key: record.server_key.as_slice().try_into().ok()?,
    })
}

pub(super) async fn authenticate(
    req: SaslAuthenticateRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    if !call.state.config.authentication.scram {
        return Err(RequestError::new(
            ErrorCode::InvalidRequest,
            "this broker does not take SCRAM (authentication does not include \"scram\")",
        ));
    }
    if req.mechanism != SCRAM_SHA_256 {
        return Err(RequestError::new(
            ErrorCode::InvalidRequest,
            format!(
                "mechanism `{}` is not supported: use {SCRAM_SHA_256}",
                req.mechanism
            ),
        ));
    }
    if *call.principal != Principal::Anonymous {
        return Err(RequestError::new(
            ErrorCode::InvalidRequest,
            format!(
                "this connection is authenticated already, as {}",
                call.principal
            ),
        ));
    }
    let member = &*call.state.cluster;
    let metadata = member.controller.metadata();
    let mut progress = call.connection.scram();
    let current = std::mem::replace(&mut *progress, ScramProgress::Idle { failures: 0 });
    match current {
        ScramProgress::Idle { failures } if failures >= SCRAM_FAILURES_PER_CONNECTION_MAX => {
            *progress = ScramProgress::Idle { failures };
            Err(failed(call))
        }
        ScramProgress::Idle { failures } => {
            let lookup = |user: &str| metadata.users().get(user).and_then(stored);
            match call.state.scram.handle_client_first(&req.message, lookup) {
                Ok((first, message)) => {
                    *progress = ScramProgress::Challenged(Box::new(first), failures);
                    Ok(Outgoing::Frame(
                        SaslAuthenticateResponse { message }.encode_frame(),
                    ))
                }
                Err(_) => {
                    *progress = ScramProgress::Idle {
                        failures: failures + 1,
                    };
                    Err(failed(call))
                }
            }
        }
        ScramProgress::Challenged(first, failures) => {
            let claimed = first.username().to_owned();
            match first.handle_client_final(&req.message) {
                Ok((user, message)) => {
                    call.connection
                        .authenticated(Principal::User(format!("User:{user}")));
                    Ok(Outgoing::Frame(
                        SaslAuthenticateResponse { message }.encode_frame(),
                    ))
                }
                Err(_) => {
                    *progress = ScramProgress::Idle {
                        failures: failures + 1,
                    };
                    tracing::info!(
                        target: "quiver::audit",
                        principal = %format!("User:{claimed}"),
                        action = "authenticate",
                        outcome = "AUTHENTICATION_FAILED",
                        "SCRAM-SHA-256"
                    );
                    Err(failed(call))
                }
            }
        }
    }
}

pub(super) async fn upsert(
    req: UserUpsertRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let what = format!("user `{}`", req.name);
    let outcome = async {
        let member = &*call.state.cluster;
        let command = MetadataCommand::UpsertUser {
            name: req.name,
            record: UserRecord {
                salt: req.credential.salt.to_vec(),
                iterations: req.credential.iterations,
                stored_key: req.credential.stored_key.to_vec(),
                server_key: req.credential.server_key.to_vec(),
            },
        };
        match crate::cluster::propose_change(member, command).await? {
            MetadataResponse::UserUpserted { .. } => Ok(Outgoing::Frame(Empty.encode_frame())),
            other => Err(crate::cluster::unexpected(&other)),
        }
    }
    .await;
    call.audited("user_upsert", &what, outcome)
}

pub(super) async fn delete(
    req: UserDeleteRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let what = format!("user `{}`", req.name);
    let outcome = async {
        let member = &*call.state.cluster;
        let command = MetadataCommand::DeleteUser { name: req.name };
        match crate::cluster::propose_change(member, command).await? {
            MetadataResponse::UserDeleted => Ok(Outgoing::Frame(Empty.encode_frame())),
            other => Err(crate::cluster::unexpected(&other)),
        }
    }
    .await;
    call.audited("user_delete", &what, outcome)
}

pub(super) async fn list(_req: UserListRequest, call: &Call<'_>) -> Result<Outgoing, RequestError> {
    let member = &*call.state.cluster;
    let users = member
        .controller
        .metadata()
        .users()
        .iter()
        .map(|(name, record)| (name.clone(), record.iterations))
        .collect();
    Ok(Outgoing::Frame(UserListResponse { users }.encode_frame()))
}
