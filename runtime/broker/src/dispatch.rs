//! Request handling: one decoded request in, one answer out. Every failure becomes a
//! [`RequestError`] with a wire error code; nothing here panics on what a client sends,
//! and a request that fails changes no stored data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quiver_log::{AppendError, ReadError};
use quiver_wire::batch::{
    BatchBuilder, BatchError, BatchHeader, ProducerStamp, Record, decode_records, stamp,
};
use quiver_wire::codec::DecodeError;
use quiver_wire::frame::RequestFrame;
use quiver_wire::message::*;
use quiver_wire::topic::validate_topic_name;
use quiver_wire::{ApiKey, ErrorCode};

use crate::group::{GroupCoordinator, GroupError, Heartbeat, validate_group_id};
use crate::offsets::OffsetView;
use crate::partition::{DurabilityError, Partition, PartitionAppendError};
use crate::server::{BrokerState, now_ms};
use crate::topic::TopicError;
use quiver_wire::group::{
    DescribeGroupRequest, DescribeGroupResponse, GroupHeartbeatRequest, GroupHeartbeatResponse,
    ListGroupsResponse, OffsetCommitRequest, OffsetFetchRequest, OffsetFetchResponse,
};

/// What goes back on the stream.
pub enum Outgoing {
    /// One encoded frame.
    Frame(Bytes),
    /// A frame head followed by stored batches, written without copying them.
    Chunks(Vec<Bytes>),
    /// Nothing: an `acks = none` produce.
    Nothing,
}

/// A request that failed, with the code the client sees.
#[derive(Debug)]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
    /// The client vanished before the request was read; there is nobody to answer.
    pub disconnected: bool,
}

impl RequestError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            disconnected: false,
        }
    }

    pub fn disconnected(err: quinn::ReadExactError) -> Self {
        Self {
            code: ErrorCode::MalformedFrame,
            message: err.to_string(),
            disconnected: true,
        }
    }
}

impl From<DecodeError> for RequestError {
    fn from(err: DecodeError) -> Self {
        let code = match &err {
            DecodeError::UnknownApi(_) => ErrorCode::UnknownApi,
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            DecodeError::TooLong { what: "batch", .. } => ErrorCode::BatchTooLarge,
            _ => ErrorCode::MalformedFrame,
        };
        Self::new(code, err.to_string())
    }
}

impl From<TopicError> for RequestError {
    fn from(err: TopicError) -> Self {
        let code = match &err {
            TopicError::AlreadyExists(_) => ErrorCode::TopicAlreadyExists,
            TopicError::Unknown(_) => ErrorCode::UnknownTopic,
            TopicError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            TopicError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            TopicError::Open { .. } | TopicError::Io { .. } | TopicError::Corrupt { .. } => {
                ErrorCode::StorageError
            }
        };
        Self::new(code, err.to_string())
    }
}

impl From<PartitionAppendError> for RequestError {
    fn from(err: PartitionAppendError) -> Self {
        let code = match &err {
            PartitionAppendError::Log(AppendError::InvalidBatch(batch)) => match batch {
                BatchError::TooLarge { .. } => ErrorCode::BatchTooLarge,
                BatchError::UnsupportedCompression(_) => ErrorCode::UnsupportedCompression,
                _ => ErrorCode::CorruptBatch,
            },
            PartitionAppendError::Log(AppendError::OutOfOrderSequence { .. }) => {
                ErrorCode::OutOfOrderSequence
            }
            PartitionAppendError::Log(AppendError::ProducerFenced { .. }) => {
                ErrorCode::InvalidProducerEpoch
            }
            PartitionAppendError::Log(_) | PartitionAppendError::StorageFailed => {
                ErrorCode::StorageError
            }
            PartitionAppendError::Closed => ErrorCode::UnknownTopic,
            PartitionAppendError::Diverged { .. } | PartitionAppendError::Truncate(_) => {
                ErrorCode::StorageError
            }
        };
        Self::new(code, err.to_string())
    }
}

impl From<ReadError> for RequestError {
    fn from(err: ReadError) -> Self {
        let code = match &err {
            ReadError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            _ => ErrorCode::StorageError,
        };
        Self::new(code, err.to_string())
    }
}

type Handled = Result<(ApiKey, Outgoing), (Option<ApiKey>, RequestError)>;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A client: no certificate.
    Client,
    /// Another broker of the cluster: a certificate from the cluster's CA.
    Broker,
}

/// APIs only other brokers may call: the controller's Raft RPCs (which could add a
/// voter or depose a leader), replica fetches and plugin module transfers.
fn broker_only(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::ControllerRpc | ApiKey::ReplicaFetch | ApiKey::PluginModule
    )
}

/// Decodes and handles one request. `answered` is false for unidirectional streams.
pub async fn handle(
    frame: RequestFrame,
    state: &Arc<BrokerState>,
    answered: bool,
    caller: Caller,
) -> Handled {
    let api = ApiKey::from_code(frame.api_key);
    let request = Request::decode(frame).map_err(|e| (api, RequestError::from(e)))?;
    let api = request.api_key();
    if broker_only(api) && caller != Caller::Broker {
        return Err((
            Some(api),
            RequestError::new(
                ErrorCode::ClusterAuthorizationFailed,
                format!(
                    "`{}` is for the cluster's brokers: connect with a certificate from the cluster's CA",
                    api.name()
                ),
            ),
        ));
    }
    let result = match request {
        Request::Produce(req) => produce(req, state, answered).await,
        Request::Fetch(req) => fetch(req, state).await,
        Request::ListOffsets(req) => list_offsets(req, state),
        Request::Metadata(req) => metadata(req, state),
        Request::CreateTopic(req) => create_topic(req, state).await,
        Request::DeleteTopic(req) => delete_topic(req, state).await,
        Request::ApiVersions(_) => Ok(Outgoing::Frame(
            ApiVersionsResponse::current().encode_frame(),
        )),
        Request::InitProducerId(_) => init_producer_id(state).await,
        Request::OffsetCommit(req) => offset_commit(req, state).await,
        Request::OffsetFetch(req) => offset_fetch(req, state).await,
        Request::GroupHeartbeat(req) => group_heartbeat(req, state).await,
        Request::ListGroups(_) => list_groups(state).await,
        Request::DescribeGroup(req) => describe_group(req, state),
        Request::PluginUpload(req) => crate::plugins::upload(req, state).await,
        Request::PluginList(_) => crate::plugins::list(state),
        Request::PluginAttach(req) => crate::plugins::attach(req, state).await,
        Request::PluginDetach(req) => crate::plugins::detach(req, state).await,
        Request::PluginModule(req) => crate::plugins::module(req, state),
        Request::ControllerRpc(req) => crate::cluster::handle_rpc(req, state).await,
        Request::ClusterStatus(_) => crate::cluster::status(state),
        Request::ReplicaFetch(req) => crate::replication::handle_replica_fetch(req, state).await,
    };
    result.map(|out| (api, out)).map_err(|e| (Some(api), e))
}

fn partition(state: &BrokerState, topic: &str, index: u32) -> Result<Arc<Partition>, RequestError> {
    let found = state.topics.get(topic).ok_or_else(|| {
        RequestError::new(
            ErrorCode::UnknownTopic,
            format!("topic `{topic}` does not exist"),
        )
    })?;
    found
        .partitions
        .get(index as usize)
        .cloned()
        .ok_or_else(|| {
            RequestError::new(
                ErrorCode::UnknownPartition,
                format!(
                    "topic `{topic}` has partitions 0..{}, not {index}",
                    found.partitions.len()
                ),
            )
        })
}

/// Runs short blocking work (a write to the page cache, a segment roll) without
/// stalling other tasks on this worker.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

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

async fn produce(
    req: ProduceRequest,
    state: &Arc<BrokerState>,
    answered: bool,
) -> Result<Outgoing, RequestError> {
    crate::cluster::require_leader(state, &req.topic, req.partition)?;
    let partition = partition(state, &req.topic, req.partition)?;
    if let Ok(header) = BatchHeader::parse(&req.batch) {
        wait_for_predecessors(&partition, &header).await;
    }
    let now = now_ms();
    let wait = Duration::from_millis(u64::from(req.timeout_ms.min(PRODUCE_TIMEOUT_MS_MAX)));
    // One deadline for the replication wait and the flush wait together.
    let deadline = tokio::time::Instant::now() + wait;
    let batch = req.batch;
    let (topic, index) = (req.topic.as_str(), req.partition);
    let append = async || -> Result<quiver_log::AppendInfo, RequestError> {
        if state
            .plugins
            .has_chain(topic, quiver_wire::plugin::PluginStage::Produce)
        {
            let steps = state
                .plugins
                .chain(topic, quiver_wire::plugin::PluginStage::Produce)?;
            crate::plugins::produce_through(state, &partition, topic, index, steps, batch, now)
                .await
        } else {
            Ok(blocking(|| partition.append(batch, now))?)
        }
    };
    let replicated = state
        .cluster
        .get()
        .and_then(|m| m.replication.slot(&req.topic, req.partition));
    let info = match &replicated {
        Some(slot) => {
            crate::replication::produce(state, slot, req.acks == Acks::All, wait, append).await?
        }
        None => append().await?,
    };
    // A duplicate stored nothing new: count it as a request, not as data.
    let (records, bytes) = if info.duplicate {
        (0, 0)
    } else {
        (info.last_offset - info.base_offset + 1, info.bytes)
    };
    state.metrics.produced(&req.topic, records, bytes as u64);
    if !answered || req.acks == Acks::None {
        return Ok(Outgoing::Nothing);
    }
    // acks=all: replicated to the ISR (waited for above) and, per the flush policy,
    // on this broker's disk.
    if req.acks == Acks::All {
        match tokio::time::timeout_at(deadline, partition.wait_durable(info.last_offset + 1)).await
        {
            Ok(Ok(())) => {}
            Ok(Err(DurabilityError::StorageFailed)) => {
                return Err(RequestError::new(
                    ErrorCode::StorageError,
                    DurabilityError::StorageFailed.to_string(),
                ));
            }
            Ok(Err(DurabilityError::Closed)) => {
                return Err(RequestError::new(
                    ErrorCode::BrokerShuttingDown,
                    DurabilityError::Closed.to_string(),
                ));
            }
            Err(_) => {
                return Err(RequestError::new(
                    ErrorCode::Timeout,
                    format!(
                        "batch at offset {} appended but not flushed within {wait:?}",
                        info.base_offset
                    ),
                ));
            }
        }
    }
    let log_start_offset = partition.log().log_start_offset();
    Ok(Outgoing::Frame(
        ProduceResponse {
            base_offset: info.base_offset,
            log_append_time: now,
            log_start_offset,
        }
        .encode_frame(),
    ))
}

async fn fetch(req: FetchRequest, state: &Arc<BrokerState>) -> Result<Outgoing, RequestError> {
    crate::cluster::require_leader(state, &req.topic, req.partition)?;
    let partition = partition(state, &req.topic, req.partition)?;
    // Resolved once per request: a plugin replaced meanwhile serves the next fetch.
    let steps = crate::plugins::fetch_steps(state, &req.topic, req.plugin.as_ref())?;
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
                    state,
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
            chunks.push(FetchResponse::encode_head(hw, log_start, log_end, total));
            chunks.extend(batches);
            return Ok(Outgoing::Chunks(chunks));
        }
        tokio::select! {
            _ = high_watermark.changed() => {}
            _ = tokio::time::sleep_until(deadline.into()) => {}
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

fn list_offsets(req: ListOffsetsRequest, state: &BrokerState) -> Result<Outgoing, RequestError> {
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

fn metadata(req: MetadataRequest, state: &BrokerState) -> Result<Outgoing, RequestError> {
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
            })
            .collect(),
        Some(names) => names
            .iter()
            .map(|n| {
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
    let cluster = state.cluster.get().map(|m| {
        (
            m.controller.metadata(),
            m.controller
                .leader()
                .and_then(|(id, _)| u32::try_from(id).ok()),
        )
    });
    // In cluster mode leaders, replicas and the ISR come from the controller; the
    // offsets are this broker's own view of its replica.
    let placement = |topic: &str, index: u32| {
        cluster.as_ref().and_then(|(metadata, _)| {
            metadata
                .topic(topic)
                .and_then(|t| t.partitions.get(index as usize).cloned())
        })
    };
    let brokers = match &cluster {
        Some((metadata, _)) => metadata
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
            .collect(),
        None => vec![BrokerInfo {
            node_id: node,
            host: state.config.listen.ip().to_string(),
            port: state.config.listen.port(),
        }],
    };
    let response = MetadataResponse {
        controller: cluster.as_ref().and_then(|(_, l)| *l).unwrap_or(node),
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

async fn create_topic(
    req: CreateTopicRequest,
    state: &Arc<BrokerState>,
) -> Result<Outgoing, RequestError> {
    validate_topic_name(&req.name)
        .map_err(|e| RequestError::new(ErrorCode::InvalidTopicName, e.to_string()))?;
    let mut configs = BTreeMap::new();
    for (key, value) in req.configs {
        if configs.insert(key.clone(), value).is_some() {
            return Err(RequestError::new(
                ErrorCode::InvalidConfig,
                format!("config `{key}` given twice"),
            ));
        }
    }
    let member = crate::cluster::member(state)?;
    // Checked here so that a config the brokers cannot apply never reaches the
    // cluster metadata.
    crate::topic::log_config_for(&state.config.log, &configs)?;
    crate::cluster::create_topic(
        state,
        member,
        req.name,
        req.partitions,
        req.replication_factor,
        configs,
    )
    .await
}

async fn init_producer_id(state: &Arc<BrokerState>) -> Result<Outgoing, RequestError> {
    let worker = Arc::clone(state);
    let producer_id = tokio::task::spawn_blocking(move || worker.producer_ids.allocate())
        .await
        .map_err(|e| RequestError::new(ErrorCode::Unknown, e.to_string()))?
        .map_err(|e| RequestError::new(ErrorCode::StorageError, e.to_string()))?;
    let producer_id = crate::producer_id::cluster_unique(state.config.node_id, producer_id)
        .map_err(|e| RequestError::new(ErrorCode::StorageError, e.to_string()))?;
    Ok(Outgoing::Frame(
        InitProducerIdResponse {
            producer_id,
            producer_epoch: 0,
        }
        .encode_frame(),
    ))
}

async fn delete_topic(
    req: DeleteTopicRequest,
    state: &Arc<BrokerState>,
) -> Result<Outgoing, RequestError> {
    if req
        .name
        .starts_with(quiver_wire::topic::INTERNAL_TOPIC_PREFIX)
    {
        return Err(RequestError::new(
            ErrorCode::InvalidRequest,
            format!("`{}` is an internal topic and cannot be deleted", req.name),
        ));
    }
    let member = crate::cluster::member(state)?;
    crate::cluster::delete_topic(state, member, req.name).await
}

impl From<GroupError> for RequestError {
    fn from(err: GroupError) -> Self {
        let code = match &err {
            GroupError::UnknownMember { .. } => ErrorCode::UnknownMemberId,
            GroupError::StaleEpoch { .. } => ErrorCode::StaleMemberEpoch,
            GroupError::NotEmpty(_) => ErrorCode::GroupNotEmpty,
            GroupError::InvalidGroup(_) => ErrorCode::InvalidGroupId,
            GroupError::Full { .. } | GroupError::TooManyGroups => ErrorCode::InvalidRequest,
        };
        Self::new(code, err.to_string())
    }
}

fn coordinator(state: &BrokerState) -> std::sync::MutexGuard<'_, GroupCoordinator> {
    state
        .groups
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Commits offsets: checks the member, then commits them through the controller; they
/// are visible once a quorum holds them.
async fn offset_commit(
    req: OffsetCommitRequest,
    state: &Arc<BrokerState>,
) -> Result<Outgoing, RequestError> {
    let member = crate::cluster::group_coordinator(state)?;
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
    let member = crate::cluster::group_coordinator(state)?;
    Ok(OffsetView(crate::cluster::current_metadata(member).await?))
}

async fn offset_fetch(
    req: OffsetFetchRequest,
    state: &BrokerState,
) -> Result<Outgoing, RequestError> {
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

async fn group_heartbeat(
    req: GroupHeartbeatRequest,
    state: &BrokerState,
) -> Result<Outgoing, RequestError> {
    // Confirmed with a quorum: a controller cut off from the others must not go on
    // granting partitions that the new leader grants too.
    let member = crate::cluster::group_coordinator(state)?;
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
        now_ms(),
    )?;
    let response = GroupHeartbeatResponse {
        member_id: outcome.member_id,
        member_epoch: outcome.member_epoch,
        heartbeat_interval_ms: outcome.heartbeat_interval_ms,
        assignment: outcome.assignment,
    };
    Ok(Outgoing::Frame(response.encode_frame()))
}

async fn list_groups(state: &BrokerState) -> Result<Outgoing, RequestError> {
    let mut groups: BTreeMap<String, u32> = committed_offsets(state)
        .await?
        .groups()
        .into_iter()
        .map(|g| (g, 0))
        .collect();
    for (group, members) in coordinator(state).list() {
        groups.insert(group, members);
    }
    Ok(Outgoing::Frame(
        ListGroupsResponse {
            groups: groups.into_iter().collect(),
        }
        .encode_frame(),
    ))
}

fn describe_group(
    req: DescribeGroupRequest,
    state: &BrokerState,
) -> Result<Outgoing, RequestError> {
    validate_group_id(&req.group)?;
    crate::cluster::group_coordinator(state)?;
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
