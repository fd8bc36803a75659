//! Fetch and list offsets: stored batches go out as the same bytes (zero-copy), through
//! the fetch-stage plugins when a topic or the consumer names some.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quiver_wire::ErrorCode;
use quiver_wire::batch::{
    BatchBuilder, BatchError, BatchHeader, ProducerStamp, Record, decode_records, stamp,
};
use quiver_wire::message::ResponseBody;
use quiver_wire::message::{
    FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX, FetchRequest, FetchResponse, ListOffsetsRequest,
    ListOffsetsResponse, OffsetSpec,
};
use tokio::time::Instant;

use super::{Call, Outgoing, RequestError, partition};

pub(super) async fn fetch(req: FetchRequest, call: &Call<'_>) -> Result<Outgoing, RequestError> {
    let state = call.state;
    crate::cluster::require_leader(&state.cluster, &req.topic, req.partition)?;
    let partition = partition(state, &req.topic, req.partition)?;
    // Resolved once per request: a plugin replaced meanwhile serves the next fetch.
    let steps = crate::plugins::fetch_steps(&state.plugins, &req.topic, req.plugin.as_ref())?;
    let max_bytes = req.max_bytes.clamp(1, FETCH_BYTES_MAX) as usize;
    let deadline =
        Instant::now() + Duration::from_millis(u64::from(req.max_wait_ms.min(FETCH_WAIT_MS_MAX)));
    let mut high_watermark = partition.watch_high_watermark();
    let mut shutdown = state.shutdown.subscribe();
    loop {
        let hw = *high_watermark.borrow_and_update();
        let (slice, log_start, log_end) = {
            let log = partition.log();
            let slice = log.read(req.offset, max_bytes, hw)?;
            (slice, log.log_start_offset(), log.log_end_offset())
        };
        let stopping = *shutdown.borrow_and_update();
        if slice.bytes >= req.min_bytes as usize || Instant::now() >= deadline || stopping {
            let mut batches = slice.batches;
            if !steps.is_empty() {
                batches = crate::plugins::fetch_through(
                    &state.plugins,
                    &req.topic,
                    req.partition,
                    &steps,
                    batches,
                )
                .await?;
            }
            let batch_count = batches.len() as u64;
            if !state.config.fetch_zero_copy {
                batches = reencode(batches)?;
            }
            let total: usize = batches.iter().map(Bytes::len).sum();
            state.metrics.fetched(&req.topic, batch_count, total as u64);
            let mut chunks = Vec::with_capacity(batches.len() + 1);
            let throttle = call.charge_quota(crate::quota::QuotaKind::FetchBytes, total);
            chunks.push(FetchResponse::encode_head(
                call.version,
                hw,
                log_start,
                log_end,
                throttle,
                total,
            ));
            chunks.extend(batches);
            return Ok(Outgoing::Chunks(chunks));
        }
        tokio::select! {
            _ = high_watermark.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The path zero-copy avoids: decode every record and encode the batch again. Kept
/// only so benchmarks can measure the difference.
fn reencode(batches: Vec<Bytes>) -> Result<Vec<Bytes>, RequestError> {
    let corrupt = |e: BatchError| {
        RequestError::new(
            ErrorCode::StorageError,
            format!("stored batch unreadable: {e}"),
        )
    };
    batches
        .into_iter()
        .map(|batch| {
            let header = BatchHeader::parse(&batch).map_err(corrupt)?;
            let mut builder = BatchBuilder::new(ProducerStamp {
                producer_id: header.producer_id,
                producer_epoch: header.producer_epoch,
                base_sequence: header.base_sequence,
            });
            for r in decode_records(&batch).map_err(corrupt)? {
                builder.push(&Record {
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                    timestamp: r.timestamp,
                });
            }
            let rebuilt = builder.finish().ok_or_else(|| corrupt(BatchError::Empty))?;
            let mut rebuilt = BytesMut::from(rebuilt);
            stamp(&mut rebuilt, header.base_offset, header.leader_epoch);
            Ok(rebuilt.freeze())
        })
        .collect()
}

pub(super) async fn list_offsets(
    req: ListOffsetsRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let state = call.state;
    let partition = partition(state, &req.topic, req.partition)?;
    let hw = partition.high_watermark();
    let log = partition.log();
    let offset = match req.spec {
        OffsetSpec::Earliest => Some(log.log_start_offset()),
        OffsetSpec::Latest => Some(hw),
        OffsetSpec::Timestamp(ts) => log.offset_for_timestamp(ts)?.filter(|&o| o < hw),
    };
    let response = ListOffsetsResponse {
        offset,
        log_start_offset: log.log_start_offset(),
        log_end_offset: hw,
    };
    Ok(Outgoing::Frame(response.encode_frame()))
}
