//! Produce: appends a batch to a partition this broker leads, through the topic's
//! produce-stage plugins, and answers once the acks level is met.

use std::time::Duration;

use quiver_wire::batch::BatchHeader;
use quiver_wire::message::{Acks, PRODUCE_TIMEOUT_MS_MAX, ProduceRequest, ProduceResponse};

use super::{Call, Outgoing, RequestError, partition};
use crate::partition::Partition;

/// How long an idempotent batch that arrived ahead of its predecessor waits for it.
/// Requests travel on separate streams, so a producer's pipelined batches can reach the
/// broker in another order than they were sent; a short wait keeps them in order
/// without a round trip.
pub const SEQUENCE_GAP_WAIT: Duration = Duration::from_millis(250);

/// Waits while `header`'s batch is ahead of the partition's next expected sequence,
/// until the gap closes or [`SEQUENCE_GAP_WAIT`] passes. The append that follows checks
/// again and has the last word.
async fn wait_for_predecessors(partition: &Partition, header: &BatchHeader) {
    if header.producer_id == quiver_wire::batch::NO_PRODUCER_ID {
        return;
    }
    let deadline = tokio::time::Instant::now() + SEQUENCE_GAP_WAIT;
    let mut appended = partition.watch_log_end();
    loop {
        match partition.check_sequence(header) {
            quiver_log::SequenceCheck::OutOfOrder { expected, received }
                if received.wrapping_sub(expected) < u32::MAX / 2 => {}
            _ => return,
        }
        tokio::select! {
            changed = appended.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

pub(super) async fn produce(
    req: ProduceRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let (state, answered) = (call.state, call.answered);
    crate::cluster::require_leader(&state.cluster, &req.topic, req.partition)?;
    let partition = partition(state, &req.topic, req.partition)?;
    if let Ok(header) = BatchHeader::parse(&req.batch) {
        if header.producer_id != quiver_wire::batch::NO_PRODUCER_ID {
            super::producer_ids::ensure_owned(call, header.producer_id).await?;
        }
        wait_for_predecessors(&partition, &header).await;
    }
    let now = call.state.clock.now_ms();
    let wait = Duration::from_millis(u64::from(req.timeout_ms.min(PRODUCE_TIMEOUT_MS_MAX)));
    let batch = req.batch;
    let batch_bytes = batch.len();
    let (topic, index) = (req.topic.as_str(), req.partition);
    // The topic's produce-stage plugins run here, before the replica's lock: see
    // `prepare_produce`.
    let prepared = if state
        .plugins
        .registry
        .has_chain(topic, quiver_wire::plugin::PluginStage::Produce)
    {
        let steps = state
            .plugins
            .registry
            .chain(topic, quiver_wire::plugin::PluginStage::Produce)?;
        crate::plugins::prepare_produce(&state.plugins, &partition, topic, index, steps, batch)
            .await?
    } else {
        crate::partition::PreparedBatch::Original(batch)
    };
    let replicas = &state.cluster.replicas;
    let info =
        crate::replication::append_acked(replicas, &partition, req.acks, wait, prepared, now)
            .await?;
    if !answered || req.acks == Acks::None {
        return Ok(Outgoing::Nothing);
    }
    let log_start_offset = partition.log().log_start_offset();
    let throttle_time_ms = call.charge_quota(crate::quota::QuotaKind::ProduceBytes, batch_bytes);
    Ok(Outgoing::Frame(
        ProduceResponse {
            base_offset: info.base_offset,
            log_append_time: now,
            log_start_offset,
            throttle_time_ms,
        }
        .encode_frame_for(call.version),
    ))
}
