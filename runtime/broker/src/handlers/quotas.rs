//! Client quotas: set and list, through the controller.

use quiver_cluster::metadata::{MetadataCommand, MetadataResponse, QuotaRecord};
use quiver_wire::message::{Empty, ResponseBody};
use quiver_wire::quota::{Quota, QuotaListRequest, QuotaListResponse, QuotaSetRequest};

use super::{Call, Outgoing, RequestError};

pub(super) async fn set(req: QuotaSetRequest, call: &Call<'_>) -> Result<Outgoing, RequestError> {
    let q = req.quota;
    let what = format!(
        "quota of {}: produce {:?} B/s, fetch {:?} B/s, request {:?} %",
        req.principal, q.produce_bytes_per_sec, q.fetch_bytes_per_sec, q.request_percent
    );
    let outcome = async {
        let member = &*call.state.cluster;
        let command = MetadataCommand::SetQuota {
            principal: req.principal,
            record: QuotaRecord {
                produce_bytes_per_sec: q.produce_bytes_per_sec,
                fetch_bytes_per_sec: q.fetch_bytes_per_sec,
                request_percent: q.request_percent,
            },
        };
        match crate::cluster::propose_change(member, command).await? {
            MetadataResponse::QuotaSet { .. } => Ok(Outgoing::Frame(Empty.encode_frame())),
            other => Err(crate::cluster::unexpected(&other)),
        }
    }
    .await;
    call.audited("quota_set", &what, outcome)
}

pub(super) async fn list(
    _req: QuotaListRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let member = &*call.state.cluster;
    let quotas = member
        .controller
        .metadata()
        .quotas()
        .iter()
        .map(|(principal, q)| {
            (
                principal.clone(),
                Quota {
                    produce_bytes_per_sec: q.produce_bytes_per_sec,
                    fetch_bytes_per_sec: q.fetch_bytes_per_sec,
                    request_percent: q.request_percent,
                },
            )
        })
        .collect();
    Ok(Outgoing::Frame(QuotaListResponse { quotas }.encode_frame()))
}
