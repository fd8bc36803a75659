//! WebAssembly plugins in the request path: the admin requests (upload, list, attach,
//! detach), the produce stage (a topic's plugins rewrite a batch before it is
//! appended) and the fetch stage (they rewrite what one consumer receives, leaving the
//! log as it is). The sandbox, registry and chain live in `quiver-plugin-host`; this
//! module connects them to partitions, metrics and error codes.
//!
//! Plugin calls are CPU work of up to the per-call bound (100 ms by default), so they
//! run through `blocking` and never stall an async worker.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quiver_log::{AppendInfo, SequenceCheck};
use quiver_plugin_host::chain::{
    ChainOutcome, dead_letter_records, fetch_batches, produce_batch, run_chain,
};
use quiver_plugin_host::{RegistryError, Step};
use quiver_wire::ErrorCode;
use quiver_wire::batch::{
    BatchBuilder, BatchHeader, DecodedRecord, ProducerStamp, Record, decode_records, validate,
};
use quiver_wire::message::{Empty, ResponseBody};
use quiver_wire::plugin::{
    OnError, PluginAttachRequest, PluginDetachRequest, PluginListResponse, PluginStage,
    PluginUploadRequest,
};

use crate::dispatch::{Outgoing, RequestError, blocking};
use crate::partition::Partition;
use crate::server::{BrokerState, now_ms};

impl From<RegistryError> for RequestError {
    fn from(err: RegistryError) -> Self {
        let code = match &err {
            RegistryError::InvalidName(_) | RegistryError::InvalidParams(_) => {
                ErrorCode::InvalidRequest
            }
            RegistryError::UnknownPlugin(_) | RegistryError::NotAttached { .. } => {
                ErrorCode::UnknownPlugin
            }
            RegistryError::TooManyAttachments { .. }
            | RegistryError::TooManyPlugins
            | RegistryError::DeadLetterLoop(_) => ErrorCode::InvalidRequest,
            RegistryError::Plugin(_) => ErrorCode::InvalidPlugin,
            RegistryError::Io { .. } | RegistryError::Corrupt { .. } => ErrorCode::StorageError,
        };
        Self::new(code, err.to_string())
    }
}

pub async fn upload(
    req: PluginUploadRequest,
    state: &BrokerState,
) -> Result<Outgoing, RequestError> {
    // Compiling a module takes tens of milliseconds to seconds.
    let info = blocking(|| state.plugins.upload(&req.name, &req.module, now_ms()))?;
    tracing::info!(plugin = %info.name, version = %info.version, kind = %info.kind, size = info.size, "plugin uploaded");
    Ok(Outgoing::Frame(info.encode_frame()))
}

pub fn list(state: &BrokerState) -> Result<Outgoing, RequestError> {
    let (plugins, attachments) = state.plugins.list();
    Ok(Outgoing::Frame(
        PluginListResponse {
            plugins,
            attachments,
        }
        .encode_frame(),
    ))
}

pub async fn attach(
    req: PluginAttachRequest,
    state: &BrokerState,
) -> Result<Outgoing, RequestError> {
    let attachment = req.attachment;
    if state.topics.get(&attachment.topic).is_none() {
        return Err(RequestError::new(
            ErrorCode::UnknownTopic,
            format!("topic `{}` does not exist", attachment.topic),
        ));
    }
    if let OnError::DeadLetter(topic) = &attachment.on_error
        && state.topics.get(topic).is_none()
    {
        return Err(RequestError::new(
            ErrorCode::UnknownTopic,
            format!("dead-letter topic `{topic}` does not exist: create it first"),
        ));
    }
    let (topic, plugin, stage) = (
        attachment.topic.clone(),
        attachment.plugin.clone(),
        attachment.stage,
    );
    blocking(|| state.plugins.attach(attachment))?;
    tracing::info!(%topic, %plugin, %stage, "plugin attached");
    Ok(Outgoing::Frame(Empty.encode_frame()))
}

pub fn detach(req: PluginDetachRequest, state: &BrokerState) -> Result<Outgoing, RequestError> {
    state.plugins.detach(&req.topic, &req.plugin)?;
    tracing::info!(topic = %req.topic, plugin = %req.plugin, "plugin detached");
    Ok(Outgoing::Frame(Empty.encode_frame()))
}

fn corrupt(err: impl std::fmt::Display) -> RequestError {
    RequestError::new(ErrorCode::CorruptBatch, err.to_string())
}

fn plugin_failed(
    plugin: &str,
    topic: &str,
    partition: u32,
    error: impl std::fmt::Display,
) -> RequestError {
    RequestError::new(
        ErrorCode::PluginFailed,
        format!("plugin `{plugin}` failed on a batch of {topic}/{partition}: {error}"),
    )
}

/// Runs the chain over one batch's records and records its metrics.
fn run(
    state: &BrokerState,
    steps: &[Step],
    stage: PluginStage,
    records: Vec<DecodedRecord>,
) -> ChainOutcome {
    let run = blocking(|| run_chain(&state.plugins, steps, stage, records));
    for report in &run.reports {
        state.metrics.plugin_call(stage.name(), report);
    }
    run.outcome
}

/// Appends `records` to the dead-letter topic, in as many batches as the topic's batch
/// limit needs, and waits until they are as durable as the caller's data would be.
async fn dead_letter(
    state: &BrokerState,
    dlq_topic: &str,
    source_partition: u32,
    records: Vec<Record>,
) -> Result<(), RequestError> {
    let topic = state.topics.get(dlq_topic).ok_or_else(|| {
        RequestError::new(
            ErrorCode::UnknownTopic,
            format!("dead-letter topic `{dlq_topic}` does not exist"),
        )
    })?;
    let count = topic.partitions.len().max(1);
    let partition = topic
        .partitions
        .get(source_partition as usize % count)
        .cloned()
        .ok_or_else(|| {
            RequestError::new(
                ErrorCode::UnknownTopic,
                "dead-letter topic has no partitions",
            )
        })?;
    let limit = partition.log().config().batch_bytes_effective();
    let mut batches = Vec::new();
    let mut builder = BatchBuilder::new(ProducerStamp::NONE);
    for record in &records {
        if builder.record_count() > 0 && builder.encoded_len_with(record) > limit {
            let full = std::mem::replace(&mut builder, BatchBuilder::new(ProducerStamp::NONE));
            batches.extend(full.finish());
        }
        builder.push(record);
    }
    batches.extend(builder.finish());
    let mut last = 0;
    for batch in batches {
        let info = blocking(|| partition.append(BytesMut::from(batch), now_ms()))?;
        state.metrics.produced(
            dlq_topic,
            info.last_offset - info.base_offset + 1,
            info.bytes as u64,
        );
        last = info.last_offset + 1;
    }
    tokio::time::timeout(Duration::from_secs(30), partition.wait_durable(last))
        .await
        .map_err(|_| {
            RequestError::new(
                ErrorCode::Timeout,
                "dead-letter records not flushed in time",
            )
        })?
        .map_err(|e| RequestError::new(ErrorCode::StorageError, e.to_string()))?;
    Ok(())
}

/// Sends a batch a plugin failed on to the attachment's dead-letter topic, with the
/// failure's headers, and counts it. `failure` is a [`ChainOutcome::DeadLetter`].
/// The batch is decoded again here, on this rare path, so that the common one hands
/// its records to the chain without keeping a copy.
async fn dead_letter_batch(
    state: &BrokerState,
    failure: ChainOutcome,
    batch: &Bytes,
    topic: &str,
    index: u32,
    stage: PluginStage,
) -> Result<(), RequestError> {
    let ChainOutcome::DeadLetter {
        topic: dlq,
        plugin,
        error,
        headers,
    } = failure
    else {
        return Ok(());
    };
    tracing::warn!(%plugin, %topic, partition = index, %stage, %error, dead_letter = %dlq, "plugin failed; batch dead-lettered");
    let records = decode_records(batch).map_err(corrupt)?;
    let count = records.len() as u64;
    dead_letter(
        state,
        &dlq,
        index,
        dead_letter_records(records, &headers, topic, index, stage),
    )
    .await?;
    state
        .metrics
        .plugin_dead_lettered(&plugin, stage.name(), count);
    Ok(())
}

/// Appends a produced batch through the topic's produce-stage plugins. The producer's
/// sequence is judged on the batch it sent: a retry of a stored batch is answered as a
/// duplicate without running any plugin, and whatever the plugins make of a new batch
/// is stored as one batch ending on the same sequence (a control marker when no record
/// is left), so idempotence holds across plugins and restarts.
pub async fn produce_through(
    state: &BrokerState,
    partition: &Partition,
    topic: &str,
    index: u32,
    steps: Vec<Step>,
    batch: BytesMut,
    now: i64,
) -> Result<AppendInfo, RequestError> {
    let limit = partition.log().config().batch_bytes_effective();
    let header = validate(&batch, limit).map_err(|e| {
        RequestError::from(crate::partition::PartitionAppendError::Log(
            quiver_log::AppendError::InvalidBatch(e),
        ))
    })?;
    if partition.check_sequence(&header) != SequenceCheck::Append {
        // A duplicate, a gap or a fenced producer: the log answers as it would without
        // plugins, storing nothing new.
        return Ok(blocking(|| partition.append(batch, now))?);
    }
    let original = batch.freeze();
    let records = decode_records(&original).map_err(corrupt)?;
    let stage = PluginStage::Produce;
    let rewritten = match run(state, &steps, stage, records) {
        ChainOutcome::Unchanged => {
            return Ok(blocking(|| {
                partition.append(BytesMut::from(original), now)
            })?);
        }
        ChainOutcome::Records(out) => produce_batch(&header, out, limit)
            .map_err(|e| RequestError::new(ErrorCode::BatchTooLarge, e.to_string()))?,
        ChainOutcome::Failed { plugin, error } => {
            return Err(plugin_failed(&plugin, topic, index, error));
        }
        ChainOutcome::Skipped { plugin, error } => {
            tracing::warn!(%plugin, %topic, partition = index, %error, "plugin failed; batch skipped");
            state.metrics.plugin_skipped(&plugin, stage.name());
            produce_batch(&header, Vec::new(), limit).map_err(corrupt)?
        }
        failure @ ChainOutcome::DeadLetter { .. } => {
            dead_letter_batch(state, failure, &original, topic, index, stage).await?;
            produce_batch(&header, Vec::new(), limit).map_err(corrupt)?
        }
    };
    Ok(blocking(|| {
        partition.append_transformed(BytesMut::from(rewritten), &header, now)
    })?)
}

/// The plugins a fetch runs: the topic's fetch-stage attachments, then the one the
/// consumer named, if any.
pub fn fetch_steps(
    state: &BrokerState,
    topic: &str,
    call: Option<&quiver_wire::plugin::PluginCall>,
) -> Result<Vec<Step>, RequestError> {
    let mut steps = if state.plugins.has_chain(topic, PluginStage::Fetch) {
        state.plugins.chain(topic, PluginStage::Fetch)
    } else {
        Vec::new()
    };
    if let Some(call) = call {
        steps.push(state.plugins.resolve(call)?);
    }
    Ok(steps)
}

/// Passes stored batches through the fetch-stage plugins. A batch every plugin kept
/// whole goes out as the stored bytes; others are rebuilt with the survivors at their
/// stored offsets. When a plugin fails with `on_error = fail`, the batches before the
/// failing one still go out (so the consumer moves up to it) and the error comes when
/// the failing batch is first in a fetch.
pub async fn fetch_through(
    state: &BrokerState,
    topic: &str,
    index: u32,
    steps: &[Step],
    batches: Vec<Bytes>,
) -> Result<Vec<Bytes>, RequestError> {
    let stage = PluginStage::Fetch;
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let header = BatchHeader::parse(&batch).map_err(corrupt)?;
        if header.is_control() {
            out.push(batch);
            continue;
        }
        let records = decode_records(&batch).map_err(|e| {
            RequestError::new(
                ErrorCode::StorageError,
                format!("stored batch unreadable: {e}"),
            )
        })?;
        match run(state, steps, stage, records) {
            ChainOutcome::Unchanged => out.push(batch),
            ChainOutcome::Records(kept) => out.extend(fetch_batches(&header, kept)),
            ChainOutcome::Failed { plugin, error } => {
                if out.is_empty() {
                    return Err(plugin_failed(&plugin, topic, index, error));
                }
                break;
            }
            ChainOutcome::Skipped { plugin, error } => {
                tracing::warn!(%plugin, %topic, partition = index, %error, "plugin failed; batch skipped for this fetch");
                state.metrics.plugin_skipped(&plugin, stage.name());
                out.extend(fetch_batches(&header, Vec::new()));
            }
            failure @ ChainOutcome::DeadLetter { .. } => {
                dead_letter_batch(state, failure, &batch, topic, index, stage).await?;
                out.extend(fetch_batches(&header, Vec::new()));
            }
        }
    }
    Ok(out)
}
