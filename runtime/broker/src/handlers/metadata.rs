//! Metadata and API versions: what a client asks before anything else.

use std::collections::BTreeMap;
use std::sync::Arc;

use quiver_wire::ErrorCode;
use quiver_wire::message::ResponseBody;
use quiver_wire::message::{
    ApiVersionsRequest, ApiVersionsResponse, BrokerInfo, MetadataRequest, MetadataResponse,
    PartitionInfo, TopicInfo,
};

use quiver_wire::acl::Operation::Describe;

use super::{Call, Outgoing, RequestError};
use crate::security::Need;

pub(super) async fn api_versions(
    _req: ApiVersionsRequest,
    _call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    Ok(Outgoing::Frame(
        ApiVersionsResponse::current().encode_frame(),
    ))
}

/// The topic's explicit configs plus the effective `max.message.bytes`, which
/// producers need to refuse an oversized record before it takes a sequence number.
fn effective_configs(topic: &crate::topic::Topic) -> Vec<(String, String)> {
    let mut configs: BTreeMap<String, String> = topic.configs.clone();
    if let Some(p) = topic.partitions.first() {
        configs.insert(
            "max.message.bytes".into(),
            p.log().config().batch_bytes_effective().to_string(),
        );
    }
    configs.into_iter().collect()
}

pub(super) async fn metadata(
    req: MetadataRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let state = call.state;
    let topics: Vec<Arc<crate::topic::Topic>> = match req.topics {
        // Internal topics (`__consumer_offsets`) answer only when named, as Kafka's
        // tools hide them from listings.
        None => state
            .topics
            .all()
            .into_iter()
            .filter(|t| {
                !t.name
                    .starts_with(quiver_wire::topic::INTERNAL_TOPIC_PREFIX)
                    && call.may(&Need::topic(Describe, &t.name))
            })
            .collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                // Checked before existence, so the answer says nothing about a topic
                // the principal may not describe.
                let need = Need::topic(Describe, n);
                if !call.may(&need) {
                    return Err(need.denied(call.principal));
                }
                state.topics.get(n).ok_or_else(|| {
                    RequestError::new(
                        ErrorCode::UnknownTopic,
                        format!("topic `{n}` does not exist"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let node = state.config.node_id;
    let metadata = state.cluster.controller.metadata();
    let controller_leader = state
        .cluster
        .controller
        .leader()
        .and_then(|(id, _)| u32::try_from(id).ok());
    // Leaders, replicas and the ISR come from the controller; the offsets are this
    // broker's own view of its replica. The broker's internal topics are its own.
    let placement = |topic: &str, index: u32| {
        metadata
            .topic(topic)
            .and_then(|t| t.partitions.get(index as usize).cloned())
    };
    let brokers = metadata
        .brokers()
        .iter()
        .filter(|(_, b)| !b.fenced)
        .filter_map(|(id, b)| {
            let addr: std::net::SocketAddr = b.address.parse().ok()?;
            Some(BrokerInfo {
                node_id: *id,
                host: addr.ip().to_string(),
                port: addr.port(),
            })
        })
        .collect();
    let response = MetadataResponse {
        controller: controller_leader.unwrap_or(node),
        brokers,
        topics: topics
            .iter()
            .map(|t| TopicInfo {
                name: t.name.to_string(),
                configs: effective_configs(t),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| {
                        let log = p.log();
                        let (leader, leader_epoch, replicas, isr) =
                            match placement(&t.name, p.index) {
                                // No leader: u32::MAX, which names no broker.
                                Some(r) => (
                                    r.leader.unwrap_or(u32::MAX),
                                    r.leader_epoch,
                                    r.replicas,
                                    r.isr,
                                ),
                                None => (node, 0, vec![node], vec![node]),
                            };
                        PartitionInfo {
                            partition: p.index,
                            leader,
                            leader_epoch,
                            replicas,
                            isr,
                            log_start_offset: log.log_start_offset(),
                            high_watermark: p.high_watermark(),
                            log_end_offset: log.log_end_offset(),
                        }
                    })
                    .collect(),
            })
            .collect(),
    };
    Ok(Outgoing::Frame(response.encode_frame()))
}
