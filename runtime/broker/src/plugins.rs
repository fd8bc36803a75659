//! WebAssembly plugins in the request path: the admin requests (upload, list, attach,
//! detach), the produce stage (a topic's plugins rewrite a batch before it is
//! appended) and the fetch stage (they rewrite what one consumer receives, leaving the
//! log as it is). The sandbox, registry and chain live in `quiver-plugin-host`; this
//! module connects them to partitions, metrics and error codes.
//!
//! Plugin calls are CPU work of up to the per-call bound (100 ms by default), so they
//! run through `blocking` and never stall an async worker.

use std::collections::BTreeMap;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quiver_cluster::MetadataCommand;
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
    OnError, PluginAttachRequest, PluginDetachRequest, PluginListRequest, PluginListResponse,
    PluginModuleRequest, PluginModuleResponse, PluginStage, PluginUploadRequest,
};

use crate::clock::Clock;
use crate::cluster::ClusterMember;
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::peers::Lane;
use crate::reply::{Outgoing, RequestError};
use crate::topic::TopicRegistry;
use crate::worker::blocking;

/// The plugin stage: the registry of uploaded plugins and what running them takes,
/// named (the cluster member that commits registry changes, serves modules to peers
/// and leads dead-letter partitions; the topics' logs; metrics; the clock).
pub struct Plugins {
    pub(crate) registry: quiver_plugin_host::Registry,
    member: std::sync::Arc<ClusterMember>,
    topics: std::sync::Arc<TopicRegistry>,
    metrics: std::sync::Arc<Metrics>,
    clock: std::sync::Arc<dyn Clock>,
    /// Plugin failures a fetch skipped past, logged at most once per interval.
    failure_log: LogLimit,
    /// The time a fetch may spend in plugins before it answers with what it has.
    fetch_plugin_time_max_ms: u64,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Plugins {
    pub(crate) fn new(
        registry: quiver_plugin_host::Registry,
        member: std::sync::Arc<ClusterMember>,
        topics: std::sync::Arc<TopicRegistry>,
        metrics: std::sync::Arc<Metrics>,
        clock: std::sync::Arc<dyn Clock>,
        fetch_plugin_time_max_ms: u64,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            registry,
            member,
            topics,
            metrics,
            clock,
            failure_log: LogLimit::default(),
            fetch_plugin_time_max_ms,
            shutdown,
        }
    }
}

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
            // Other uploads held the compiler: the same upload can succeed later.
            RegistryError::Plugin(quiver_plugin_host::PluginError::CompileBusy(_)) => {
                ErrorCode::PluginUnavailable
            }
            RegistryError::Plugin(_) => ErrorCode::InvalidPlugin,
            RegistryError::Io { .. } | RegistryError::Corrupt { .. } => ErrorCode::StorageError,
            RegistryError::VersionMismatch { .. } => ErrorCode::InvalidPlugin,
            RegistryError::NotInstalled(_) => ErrorCode::PluginUnavailable,
        };
        Self::new(code, err.to_string())
    }
}

/// Registers an uploaded module here, then proposes its version to the controller;
/// the other brokers of a cluster fetch the module from this one, and the upload is
/// answered once one of them holds it, so losing this broker loses no acknowledged
/// module.
pub async fn upload(
    req: PluginUploadRequest,
    plugin_stage: &Plugins,
) -> Result<Outgoing, RequestError> {
    let member = &*plugin_stage.member;
    // Registered here before the controller commits it: the sync with the controller
    // would take it for a plugin the controller dropped and remove it (files and
    // all), so it waits until the commit is in.
    let info = {
        let _sync_waits = member.plugin_sync.lock().await;
        // Compiling a module takes tens of milliseconds to seconds.
        let info = blocking(|| plugin_stage.registry.upload(&req.name, &req.module, plugin_stage.clock.now_ms()))
            .inspect_err(|err| {
                tracing::warn!(plugin = %req.name, size = req.module.len(), %err, "plugin upload refused");
            })?;
        crate::cluster::propose_plugin_change(member, upload_command(&info)).await?;
        info
    };
    await_second_copy(member, &info.name, &info.version).await?;
    tracing::info!(plugin = %info.name, version = %info.version, kind = %info.kind, size = info.size, "plugin uploaded");
    Ok(Outgoing::Frame(info.encode_frame()))
}

/// The controller's record of an uploaded version.
pub fn upload_command(info: &quiver_wire::plugin::PluginInfo) -> MetadataCommand {
    MetadataCommand::UploadPlugin {
        name: info.name.clone(),
        version: info.version.clone(),
        kind: info.kind.clone(),
        size_bytes: info.size,
        uploaded_ms: u64::try_from(info.uploaded_ms).unwrap_or(0),
    }
}

/// The controller's record of an attachment.
pub fn attach_command(attachment: &quiver_wire::plugin::Attachment) -> MetadataCommand {
    MetadataCommand::AttachPlugin {
        topic: attachment.topic.clone(),
        plugin: attachment.plugin.clone(),
        stage: attachment.stage.name().to_owned(),
        params: attachment.params.clone(),
        on_error: attachment.on_error.to_string(),
    }
}

pub fn list(plugin_stage: &Plugins) -> Result<Outgoing, RequestError> {
    let (plugins, attachments) = plugin_stage.registry.list();
    Ok(Outgoing::Frame(
        PluginListResponse {
            plugins,
            attachments,
        }
        .encode_frame(),
    ))
}

/// Attaches a plugin to a topic: checked here, committed through the controller, and
/// applied on this broker before the answer.
pub async fn attach(
    req: PluginAttachRequest,
    plugin_stage: &Plugins,
) -> Result<Outgoing, RequestError> {
    let attachment = req.attachment;
    if plugin_stage.topics.get(&attachment.topic).is_none() {
        return Err(RequestError::new(
            ErrorCode::UnknownTopic,
            format!("topic `{}` does not exist", attachment.topic),
        ));
    }
    if let OnError::DeadLetter(topic) = &attachment.on_error
        && plugin_stage.topics.get(topic).is_none()
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
    let member = &*plugin_stage.member;
    refuse_dead_letter_cycle(member, &attachment)?;
    await_installed(plugin_stage, member, &attachment.plugin).await;
    blocking(|| plugin_stage.registry.check_attachment(&attachment))?;
    crate::cluster::propose_plugin_change(member, attach_command(&attachment)).await?;
    sync_with_controller(plugin_stage, member).await;
    tracing::info!(%topic, %plugin, %stage, "plugin attached");
    Ok(Outgoing::Frame(Empty.encode_frame()))
}

pub async fn detach(
    req: PluginDetachRequest,
    plugin_stage: &Plugins,
) -> Result<Outgoing, RequestError> {
    let member = &*plugin_stage.member;
    let command = MetadataCommand::DetachPlugin {
        topic: req.topic.clone(),
        plugin: req.plugin.clone(),
    };
    crate::cluster::propose_plugin_change(member, command).await?;
    sync_with_controller(plugin_stage, member).await;
    tracing::info!(topic = %req.topic, plugin = %req.plugin, "plugin detached");
    Ok(Outgoing::Frame(Empty.encode_frame()))
}

/// Deletes a plugin no topic has attached, through the controller; every broker then
/// removes it and its files when it follows the controller's registry.
pub async fn delete(
    req: quiver_wire::plugin::PluginDeleteRequest,
    plugin_stage: &Plugins,
) -> Result<Outgoing, RequestError> {
    let member = &*plugin_stage.member;
    let command = MetadataCommand::DeletePlugin {
        name: req.name.clone(),
    };
    crate::cluster::propose_plugin_change(member, command).await?;
    sync_with_controller(plugin_stage, member).await;
    tracing::info!(plugin = %req.name, "plugin deleted");
    Ok(Outgoing::Frame(Empty.encode_frame()))
}

/// Refuses a produce-stage attachment whose dead-letter topic leads back, through
/// other produce-stage dead-letter attachments, to its own topic. A produce-stage dead
/// letter is written while the source partition's replica is locked; in a cycle two
/// failing batches could each hold one partition and wait for the other's. This is
/// the quick answer from this broker's view; the controller checks again when it
/// applies the attachment, in log order.
fn refuse_dead_letter_cycle(
    member: &ClusterMember,
    attachment: &quiver_wire::plugin::Attachment,
) -> Result<(), RequestError> {
    let OnError::DeadLetter(target) = &attachment.on_error else {
        return Ok(());
    };
    if attachment.stage != PluginStage::Produce {
        return Ok(());
    }
    if member
        .controller
        .metadata()
        .dead_letter_leads_back(&attachment.topic, target)
    {
        return Err(crate::cluster::rejected(
            &quiver_cluster::CommandError::DeadLetterCycle {
                topic: attachment.topic.clone(),
                target: target.clone(),
            },
        ));
    }
    Ok(())
}

/// How long an attach on one broker waits for a version uploaded on another to reach
/// it (the controller's commit, then the module).
const INSTALL_WAIT: Duration = Duration::from_secs(10);

/// How long an upload waits for another broker to hold the module.
const SECOND_COPY_WAIT: Duration = Duration::from_secs(15);

/// Waits until another active broker runs `version` of `name` (it fetches the module
/// from this one once it applies the version). With no other active broker this copy
/// is the only one there can be, as with an ISR of one. On timeout the version stays
/// proposed and installs wherever the module can be fetched; the answer is a
/// retriable `NOT_ENOUGH_REPLICAS`, and uploading the same module again is harmless
/// (its version is its hash).
async fn await_second_copy(
    member: &ClusterMember,
    name: &str,
    version: &str,
) -> Result<(), RequestError> {
    let deadline = tokio::time::Instant::now() + SECOND_COPY_WAIT;
    // This broker's metadata may not have applied the proposal yet when it commits:
    // only a change after this version showed up here means another replaced it.
    let mut seen_here = false;
    loop {
        let metadata = member.controller.metadata();
        let current = metadata.plugins().get(name).map(|p| p.version.as_str());
        if current == Some(version) {
            seen_here = true;
        } else if seen_here {
            // A later upload (or a removal) replaced this version: no broker will
            // install it, and nothing of it needs keeping.
            return Ok(());
        }
        let others = active_peers(member, &metadata);
        if others.is_empty() {
            return Ok(());
        }
        for (id, address) in &others {
            // Each question is bounded by what is left of the wait, so an unreachable
            // broker cannot hold the answer past it.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let listed = member
                .peers
                .call(*id, address, Lane::Data, &PluginListRequest, left)
                .await;
            if let Ok(listed) = listed
                && listed
                    .plugins
                    .iter()
                    .any(|p| p.name == name && p.version == version)
            {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(RequestError::new(
                ErrorCode::NotEnoughReplicas,
                format!(
                    "plugin {name} version {version} is held by this broker only: no other broker installed it within {} s; upload it again",
                    SECOND_COPY_WAIT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until this broker runs the version of `name` its controller holds, so an
/// attach right after an upload elsewhere checks the new version. Gives up quietly
/// after [`INSTALL_WAIT`]: the check that follows then names what is missing.
async fn await_installed(plugin_stage: &Plugins, member: &ClusterMember, name: &str) {
    let deadline = tokio::time::Instant::now() + INSTALL_WAIT;
    loop {
        let wanted = member
            .controller
            .metadata()
            .plugins()
            .get(name)
            .map(|p| p.version.clone());
        if let Some(version) = &wanted {
            if plugin_stage.registry.version(name).as_ref() == Some(version) {
                return;
            }
            sync_with_controller(plugin_stage, member).await;
            if plugin_stage.registry.version(name).as_ref() == Some(version) {
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Serves a stored module to another broker of the cluster.
pub fn module(req: PluginModuleRequest, plugin_stage: &Plugins) -> Result<Outgoing, RequestError> {
    match blocking(|| plugin_stage.registry.module(&req.version))? {
        Some(module) => Ok(Outgoing::Frame(
            PluginModuleResponse {
                module: Bytes::from(module),
            }
            .encode_frame(),
        )),
        None => Err(RequestError::new(
            ErrorCode::UnknownPlugin,
            format!("this broker holds no module of version {}", req.version),
        )),
    }
}

/// Makes this broker's registry follow the controller's: installs the versions it
/// names (fetching modules it lacks from the other brokers), removes plugins it
/// dropped, and takes its attachments in order. Returns whether every version is
/// installed; the caller tries again later when not.
pub async fn sync_with_controller(plugin_stage: &Plugins, member: &ClusterMember) -> bool {
    let _one_at_a_time = member.plugin_sync.lock().await;
    let metadata = member.controller.metadata();
    let wanted: BTreeMap<String, String> = metadata
        .plugins()
        .iter()
        .map(|(name, record)| (name.clone(), record.version.clone()))
        .collect();
    let installed: BTreeMap<String, String> = plugin_stage
        .registry
        .list()
        .0
        .into_iter()
        .map(|info| (info.name, info.version))
        .collect();
    let plan = crate::plugin_plan::plan(&wanted, &installed);
    let mut complete = true;
    for (name, version) in &plan.install {
        let Some(record) = metadata.plugins().get(name) else {
            continue;
        };
        match install(plugin_stage, member, &metadata, name, record).await {
            Ok(()) => {
                tracing::info!(plugin = %name, %version, "plugin installed from the controller's metadata");
            }
            Err(err) => {
                complete = false;
                tracing::warn!(plugin = %name, %version, %err, "cannot install a plugin version yet");
            }
        }
    }
    for name in &plan.remove {
        if let Err(err) = plugin_stage.registry.remove(name) {
            complete = false;
            tracing::error!(plugin = %name, %err, "cannot remove a plugin the controller dropped");
        }
    }
    let mut attachments = Vec::with_capacity(metadata.attachments().len());
    for a in metadata.attachments() {
        match wire_attachment(a) {
            Ok(attachment) => attachments.push(attachment),
            Err(err) => {
                tracing::error!(topic = %a.topic, plugin = %a.plugin, %err, "controller attachment unreadable");
            }
        }
    }
    if let Err(err) = plugin_stage.registry.set_attachments(attachments) {
        complete = false;
        tracing::error!(%err, "cannot store the controller's plugin attachments");
    }
    complete
}

fn wire_attachment(
    a: &quiver_cluster::metadata::PluginAttachment,
) -> Result<quiver_wire::plugin::Attachment, String> {
    Ok(quiver_wire::plugin::Attachment {
        topic: a.topic.clone(),
        plugin: a.plugin.clone(),
        stage: a.stage.parse()?,
        params: a.params.clone(),
        on_error: a.on_error.parse()?,
    })
}

/// Installs one version: from this broker's own modules when it has them, else
/// fetched from a broker that does.
async fn install(
    plugin_stage: &Plugins,
    member: &ClusterMember,
    metadata: &quiver_cluster::MetadataState,
    name: &str,
    record: &quiver_cluster::metadata::PluginRecord,
) -> Result<(), String> {
    let module = match blocking(|| plugin_stage.registry.module(&record.version))
        .map_err(|e| e.to_string())?
    {
        Some(module) => module,
        None => fetch_module(member, metadata, &record.version).await?,
    };
    let uploaded_ms = i64::try_from(record.uploaded_ms).unwrap_or(i64::MAX);
    blocking(|| {
        plugin_stage
            .registry
            .install(name, &module, uploaded_ms, &record.version)
    })
    .map(|_| ())
    .map_err(|e| e.to_string())
}

async fn fetch_module(
    member: &ClusterMember,
    metadata: &quiver_cluster::MetadataState,
    version: &str,
) -> Result<Vec<u8>, String> {
    let mut failures = Vec::new();
    for (id, address) in active_peers(member, metadata) {
        let request = PluginModuleRequest {
            version: version.to_owned(),
        };
        match member
            .peers
            .call(id, &address, Lane::Data, &request, MODULE_FETCH_TIMEOUT)
            .await
        {
            Ok(response) => return Ok(response.module.to_vec()),
            Err(err) => failures.push(format!("node {id}: {err}")),
        }
    }
    Err(format!(
        "no broker served module {version}: {}",
        if failures.is_empty() {
            "no other broker is active".to_owned()
        } else {
            failures.join("; ")
        }
    ))
}

/// The other brokers that are not fenced, with their addresses.
fn active_peers(
    member: &ClusterMember,
    metadata: &quiver_cluster::MetadataState,
) -> Vec<(u32, String)> {
    metadata
        .brokers()
        .iter()
        .filter(|(id, b)| **id != member.broker_id && !b.fenced)
        .map(|(id, b)| (*id, b.address.clone()))
        .collect()
}

/// How long forwarding dead-letter batches to their topic's leader may take in all.
const DEAD_LETTER_FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long fetching a plugin module from another broker may take.
const MODULE_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

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
    plugin_stage: &Plugins,
    steps: &[Step],
    stage: PluginStage,
    records: impl Into<quiver_plugin_host::chain::ChainInput>,
) -> ChainOutcome {
    let records = records.into();
    let run = blocking(|| run_chain(&plugin_stage.registry, steps, stage, records));
    for report in &run.reports {
        plugin_stage.metrics.plugin_call(stage.name(), report);
    }
    run.outcome
}

/// How long dead-lettered records may take to be stored.
const DEAD_LETTER_WAIT: Duration = Duration::from_secs(30);

/// Appends `records` to the dead-letter topic, in as many batches as the topic's batch
/// limit needs, on the dead-letter partition's leader and durable there per the flush
/// policy (replication follows as for any append). The partition is the source
/// partition modulo the dead-letter topic's partitions; when another broker leads it,
/// the records go there.
///
/// It does not wait for the dead-letter partition's ISR: a produce-stage dead letter
/// is written while the source partition's replica is locked, and two topics that
/// dead-letter into each other would then wait on each other's followers.
async fn dead_letter(
    plugin_stage: &Plugins,
    dlq_topic: &str,
    source_partition: u32,
    records: Vec<Record>,
) -> Result<(), RequestError> {
    let topic = plugin_stage.topics.get(dlq_topic).ok_or_else(|| {
        RequestError::new(
            ErrorCode::UnknownTopic,
            format!("dead-letter topic `{dlq_topic}` does not exist"),
        )
    })?;
    let count = topic.partitions.len().max(1);
    let index = source_partition % u32::try_from(count).unwrap_or(u32::MAX);
    let partition = topic
        .partitions
        .get(index as usize)
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
    let member = &*plugin_stage.member;
    if let Err(not_here) = crate::cluster::require_leader(&plugin_stage.member, dlq_topic, index) {
        return dead_letter_remotely(member, dlq_topic, index, batches, not_here).await;
    }
    let slot = member.replicas.slot(dlq_topic, index);
    let mut last = 0;
    for batch in batches {
        let append = async || -> Result<AppendInfo, RequestError> {
            Ok(blocking(|| {
                partition.append(BytesMut::from(batch.as_ref()), plugin_stage.clock.now_ms())
            })?)
        };
        let info = match &slot {
            Some(slot) => {
                crate::replication::produce(&member.replicas, slot, false, DEAD_LETTER_WAIT, append)
                    .await?
            }
            None => append().await?,
        };
        plugin_stage.metrics.produced(
            dlq_topic,
            info.last_offset - info.base_offset + 1,
            info.bytes as u64,
        );
        last = info.last_offset + 1;
    }
    tokio::time::timeout(DEAD_LETTER_WAIT, partition.wait_durable(last))
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

/// Sends dead-lettered batches to the broker leading their partition (acks=leader, for
/// the reason [`dead_letter`] gives).
async fn dead_letter_remotely(
    member: &ClusterMember,
    dlq_topic: &str,
    index: u32,
    batches: Vec<Bytes>,
    not_here: RequestError,
) -> Result<(), RequestError> {
    let metadata = member.controller.metadata();
    let leader = metadata
        .partition(dlq_topic, index)
        .and_then(|p| p.leader)
        .and_then(|id| metadata.broker(id).map(|b| (id, b.address.clone())));
    let Some((leader, address)) = leader else {
        return Err(not_here);
    };
    member
        .peers
        .with_client(
            leader,
            &address,
            Lane::Data,
            DEAD_LETTER_FORWARD_TIMEOUT,
            |client| async move {
                for batch in batches {
                    client
                        .produce_batch(dlq_topic, index, quiver_wire::message::Acks::Leader, batch)
                        .await?;
                }
                Ok(())
            },
        )
        .await
        .map_err(|e| {
            let code = match &e {
                quiver_sdk::RequestError::Connect(_) => ErrorCode::NotLeader,
                e => e.code().unwrap_or(ErrorCode::Timeout),
            };
            RequestError::new(code, format!("dead-letter records to node {leader}: {e}"))
        })?;
    Ok(())
}

/// Sends a batch a plugin failed on to the attachment's dead-letter topic, with the
/// failure's headers, and counts it. `failure` is a [`ChainOutcome::DeadLetter`].
/// The batch is decoded again here, on this rare path, so that the common one hands
/// its records to the chain without keeping a copy.
async fn dead_letter_batch(
    plugin_stage: &Plugins,
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
        plugin_stage,
        &dlq,
        index,
        dead_letter_records(records, &headers, topic, index, stage),
    )
    .await?;
    plugin_stage
        .metrics
        .plugin_dead_lettered(&plugin, stage.name(), count);
    Ok(())
}

/// Runs a produced batch through the topic's produce-stage plugins. The producer's
/// sequence is judged on the batch it sent: a retry of a stored batch is answered as a
/// duplicate without running any plugin, and whatever the plugins make of a new batch
/// is stored as one batch ending on the same sequence (a control marker when no record
/// is left), so idempotence holds across plugins and restarts; the log checks the
/// sequence again when it appends.
///
/// It runs the chain `steps` before any partition or replica lock is taken: a slow plugin then delays only its own
/// producer, never a follower's fetch or another produce's append, and a failure's
/// dead letters go to their topic (perhaps a partition of this broker) without a lock
/// held. A dead letter is therefore written at least once: a produce refused after its
/// chain ran (a leadership change, a full disk) writes it again when retried.
pub async fn prepare_produce(
    plugin_stage: &Plugins,
    partition: &Partition,
    topic: &str,
    index: u32,
    steps: Vec<Step>,
    batch: BytesMut,
) -> Result<crate::partition::PreparedBatch, RequestError> {
    let limit = partition.log().config().batch_bytes_effective();
    let header = validate(&batch, limit).map_err(|e| {
        RequestError::from(crate::partition::PartitionAppendError::Log(
            quiver_log::AppendError::InvalidBatch(e),
        ))
    })?;
    if partition.check_sequence(&header) != SequenceCheck::Append {
        return Ok(crate::partition::PreparedBatch::Original(batch));
    }
    let original = batch.freeze();
    let records = decode_records(&original).map_err(corrupt)?;
    let stage = PluginStage::Produce;
    let rewritten = match run(plugin_stage, &steps, stage, records) {
        ChainOutcome::Unchanged => {
            return Ok(crate::partition::PreparedBatch::Original(BytesMut::from(
                original,
            )));
        }
        ChainOutcome::Records(out) | ChainOutcome::Kept(out) => produce_batch(&header, out, limit)
            .map_err(|e| RequestError::new(ErrorCode::BatchTooLarge, e.to_string()))?,
        ChainOutcome::Failed { plugin, error } => {
            return Err(plugin_failed(&plugin, topic, index, error));
        }
        ChainOutcome::Skipped { plugin, error } => {
            tracing::warn!(%plugin, %topic, partition = index, %error, "plugin failed; batch skipped");
            plugin_stage.metrics.plugin_skipped(&plugin, stage.name());
            produce_batch(&header, Vec::new(), limit).map_err(corrupt)?
        }
        failure @ ChainOutcome::DeadLetter { .. } => {
            dead_letter_batch(plugin_stage, failure, &original, topic, index, stage).await?;
            produce_batch(&header, Vec::new(), limit).map_err(corrupt)?
        }
    };
    Ok(crate::partition::PreparedBatch::Transformed {
        batch: BytesMut::from(rewritten),
        original: header,
    })
}

/// The plugins a fetch runs: the topic's fetch-stage attachments, then the one the
/// consumer named, if any.
pub fn fetch_steps(
    plugin_stage: &Plugins,
    topic: &str,
    call: Option<&quiver_wire::plugin::PluginCall>,
) -> Result<Vec<Step>, RequestError> {
    let mut steps = if plugin_stage.registry.has_chain(topic, PluginStage::Fetch) {
        plugin_stage.registry.chain(topic, PluginStage::Fetch)?
    } else {
        Vec::new()
    };
    if let Some(call) = call {
        steps.push(plugin_stage.registry.resolve(call)?);
    }
    Ok(steps)
}

/// What a consumer receives of a stored batch when filters kept `kept` (in offset
/// order): the kept records' stored bytes under one header with gaps.
fn kept_batch(
    stored: &Bytes,
    header: &BatchHeader,
    kept: &[DecodedRecord],
) -> Result<Bytes, RequestError> {
    let mut wanted = kept.iter().map(|r| r.offset).peekable();
    let sent =
        quiver_wire::batch::retain_records(stored, |offset| wanted.next_if_eq(&offset).is_some())
            .map_err(corrupt)?;
    // Filters that kept nothing: the marker stands for the removed records, so the
    // consumer's next fetch starts after them.
    Ok(sent.unwrap_or_else(|| {
        quiver_plugin_host::chain::removed_marker(
            header.last_offset(),
            header.leader_epoch,
            header.max_timestamp,
            0,
            quiver_wire::batch::ProducerStamp::NONE,
        )
    }))
}

/// Passes stored batches through the fetch-stage plugins. A batch every plugin kept
/// whole goes out as the stored bytes; others are rebuilt with the survivors at their
/// stored offsets. When a plugin fails with `on_error = fail`, the batches before the
/// failing one still go out (so the consumer moves up to it) and the error comes when
/// the failing batch is first in a fetch.
pub async fn fetch_through(
    plugin_stage: &Plugins,
    topic: &str,
    index: u32,
    steps: &[Step],
    batches: Vec<Bytes>,
) -> Result<Vec<Bytes>, RequestError> {
    let stage = PluginStage::Fetch;
    let mut out = Vec::with_capacity(batches.len());
    // A fetch answers with what its plugins processed within the budget: a slow or
    // failing plugin costs the consumer latency, never silence. At least one batch is
    // always processed, so the consumer progresses.
    let clock = &plugin_stage.clock;
    let started_ms = clock.monotonic_ms();
    for batch in batches {
        let spent_ms = clock.monotonic_ms().saturating_sub(started_ms);
        if !out.is_empty() && spent_ms >= plugin_stage.fetch_plugin_time_max_ms {
            plugin_stage.metrics.fetch_plugin_budget_spent(topic);
            break;
        }
        let header = BatchHeader::parse(&batch).map_err(corrupt)?;
        if header.is_control() {
            out.push(batch);
            continue;
        }
        // Plugins read the stored records where they lie; only records a plugin
        // rewrites, or the survivors, are decoded.
        let records = quiver_wire::batch::RawBatch::open(&batch).map_err(|e| {
            RequestError::new(
                ErrorCode::StorageError,
                format!("stored batch unreadable: {e}"),
            )
        })?;
        match run(plugin_stage, steps, stage, records) {
            ChainOutcome::Unchanged => out.push(batch),
            ChainOutcome::Records(made) => out.extend(fetch_batches(&header, made)),
            ChainOutcome::Kept(kept) => out.push(kept_batch(&batch, &header, &kept)?),
            ChainOutcome::Failed { plugin, error } => {
                if out.is_empty() {
                    return Err(plugin_failed(&plugin, topic, index, error));
                }
                break;
            }
            ChainOutcome::Skipped { plugin, error } => {
                if let Some(unlogged) = plugin_stage.failure_log.due(plugin_stage.clock.now_ms()) {
                    tracing::warn!(%plugin, %topic, partition = index, %error, unlogged, "plugin failed; batch skipped for this fetch");
                }
                plugin_stage.metrics.plugin_skipped(&plugin, stage.name());
                out.extend(fetch_batches(&header, Vec::new()));
            }
            failure @ ChainOutcome::DeadLetter { .. } => {
                dead_letter_batch(plugin_stage, failure, &batch, topic, index, stage).await?;
                out.extend(fetch_batches(&header, Vec::new()));
            }
        }
    }
    Ok(out)
}

/// How soon a broker tries again to install a plugin version it could not fetch.
const PLUGIN_SYNC_RETRY: Duration = std::time::Duration::from_secs(1);

/// Keeps this broker's plugin registry in line with the controller's metadata, on its
/// own task so that fetching or compiling a module never delays taking over
/// partitions.
pub async fn sync_loop(plugin_stage: std::sync::Arc<Plugins>) {
    let member = &*plugin_stage.member;
    let mut versions = member.controller.watch();
    let mut shutdown = plugin_stage.shutdown.clone();
    loop {
        // A plugin version whose module no broker served yet is tried again soon.
        let complete = sync_with_controller(&plugin_stage, member).await;
        tokio::select! {
            changed = versions.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(PLUGIN_SYNC_RETRY), if !complete => {}
            _ = shutdown.changed() => return,
        }
    }
}
