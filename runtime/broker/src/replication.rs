//! Partition replication in cluster mode: one `quiver-repl` state machine per replica
//! this broker holds, driven by the controller's metadata (roles, ISR), by follower
//! fetches (API `replica_fetch`) and by local appends. This module does the I/O the
//! state machine asks for: it appends fetched batches, truncates, publishes the high
//! watermark, and sends ISR proposals to the controller.
//!
//! The leader stamps its epoch on every batch it appends; followers append the
//! leader's batches as they are, so replicas hold byte-identical logs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quiver_cluster::{MetadataCommand, MetadataResponse};
use quiver_repl::{
    BatchRange, EpochEndOffset, FetchReply, FetchRequest, FetchResponse, IsrCommit,
    LeaderEpochCache, Output, RecoveredLog, Replica, ReplicaConfig, Role,
};
use quiver_wire::ErrorCode;
use quiver_wire::batch::{BatchHeader, BatchSplitter};
use quiver_wire::cluster::{ReplicaFetchRequest, ReplicaFetchResponse};
use quiver_wire::message::ResponseBody;

use quiver_cluster::Controller;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::partition::{Partition, PreparedBatch};
use crate::peers::{Lane, PeerClients};
use crate::replica_plan::{self, ReplicaKey, RoleStep};
use crate::reply::{Outgoing, RequestError};
use crate::tasks::TaskSet;
use crate::topic::TopicRegistry;
use crate::worker::blocking;

/// How long a leader holds a follower's fetch that found nothing new.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// How long a follower waits for the answer to one fetch before it drops the
/// connection and opens another. The leader answers within `FETCH_WAIT` when the link
/// works; after a brief outage an in-flight request on the old connection waits for
/// QUIC's retransmission timer, which has backed off to seconds by then, while a fresh
/// connection is answered in one round trip. So a follower whose link flapped catches
/// up within this of the link's return instead of several seconds later.
const REPLICA_FETCH_TIMEOUT: Duration = Duration::from_millis(2_000);
/// Bytes one follower fetch asks for.
const FETCH_BYTES: u32 = 4 * 1024 * 1024;
/// How long past its deadline an acks=all produce waits for its ticket before it
/// gives up on its own: the replica's timer settles it at the deadline, but a replica
/// that stopped being driven (its topic deleted) settles nothing.
const ACK_TICKET_GRACE: Duration = Duration::from_secs(2);

/// The outcome of one acks=all ticket.
type AckOutcome = Result<(), quiver_repl::AcksAllError>;

/// One replica this broker holds.
pub struct ReplicaSlot {
    pub topic: String,
    pub index: u32,
    pub partition: Arc<Partition>,
    pub replica: tokio::sync::Mutex<Replica>,
    /// Woken on role changes so the follower loop notices at once.
    wake: tokio::sync::Notify,
    /// The ISR version last handed to the state machine.
    isr_version: Mutex<Option<(u32, u32)>>,
    closed: std::sync::atomic::AtomicBool,
    /// Where each waiting acks=all produce hears its outcome, by ticket.
    ack_tickets: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<AckOutcome>>>,
    next_ticket: std::sync::atomic::AtomicU64,
    /// The leader epoch this replica leads in, once it took the role and published
    /// its high watermark; [`NOT_LEADING`] otherwise. Read without the replica's
    /// lock by the produce and fetch paths' leadership check.
    leading_epoch: std::sync::atomic::AtomicU64,
}

/// `ReplicaSlot::leading_epoch` of a replica that does not lead.
const NOT_LEADING: u64 = u64::MAX;

/// Every replica this broker holds, and what driving them takes: the replica layer's
/// collaborators, named (the partitions' logs, the peer connections follower fetches
/// use, the controller that commits ISR changes, the clock the state machines' timers
/// read), so nothing here reaches up into the broker around it.
pub struct Replicas {
    /// By topic, then partition, so a request finds its replica without allocating.
    slots: Mutex<HashMap<String, HashMap<u32, Arc<ReplicaSlot>>>>,
    /// This broker's id: the replica id its state machines run as.
    broker_id: u32,
    /// Commits ISR changes and names each partition leader's address.
    controller: Controller,
    /// Follower fetches go through the broker's one pool of peer connections.
    peers: Arc<PeerClients>,
    topics: Arc<TopicRegistry>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// Follower loops and ISR proposals, joined at shutdown.
    tasks: Arc<TaskSet>,
    shutdown: watch::Receiver<bool>,
    /// How long a follower may lag before it leaves the ISR.
    replica_lag_max_ms: u64,
}

/// What [`Replicas::new`] is built from.
pub struct ReplicaServices {
    pub broker_id: u32,
    pub controller: Controller,
    pub peers: Arc<PeerClients>,
    pub topics: Arc<TopicRegistry>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub tasks: Arc<TaskSet>,
    pub shutdown: watch::Receiver<bool>,
    pub replica_lag_max_ms: u64,
}

impl Replicas {
    pub fn new(services: ReplicaServices) -> Self {
        let ReplicaServices {
            broker_id,
            controller,
            peers,
            topics,
            metrics,
            clock,
            tasks,
            shutdown,
            replica_lag_max_ms,
        } = services;
        Self {
            slots: Mutex::new(HashMap::new()),
            broker_id,
            controller,
            peers,
            topics,
            metrics,
            clock,
            tasks,
            shutdown,
            replica_lag_max_ms,
        }
    }

    /// The monotonic milliseconds the state machines' timers run on.
    fn now_ms(&self) -> u64 {
        self.clock.monotonic_ms()
    }

    /// Whether this broker's replica of `topic`/`index` has taken the leadership of
    /// `leader_epoch`: become leader and published its high watermark. Between the
    /// controller naming it and that, its log's readable end is not yet known (a
    /// restarted broker's high watermark reads 0), so requests must wait.
    pub fn leads(&self, topic: &str, index: u32, leader_epoch: u32) -> bool {
        self.slot(topic, index).is_some_and(|slot| {
            slot.leading_epoch
                .load(std::sync::atomic::Ordering::Acquire)
                == u64::from(leader_epoch)
        })
    }

    pub fn slot(&self, topic: &str, index: u32) -> Option<Arc<ReplicaSlot>> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .and_then(|partitions| partitions.get(&index))
            .cloned()
    }
}

/// The replication settings of a topic.
fn replica_config(
    replica_lag_max_ms: u64,
    configs: &std::collections::BTreeMap<String, String>,
) -> ReplicaConfig {
    let lag = replica_lag_max_ms;
    ReplicaConfig {
        replica_lag_max_ms: lag,
        fetch_timeout_ms: 5_000,
        fetch_backoff_ms: 200,
        isr_proposal_retry_ms: 2_000,
        min_insync_replicas: configs
            .get("min.insync.replicas")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    }
}

/// The replica's view of its log at start: offsets and the epoch history from the
/// stored batch headers.
pub(crate) fn recovered(partition: &Partition) -> Result<RecoveredLog, String> {
    let log = partition.log();
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    let mut epochs = LeaderEpochCache::new();
    let mut offset = start;
    while offset < end {
        let slice = log
            .read(offset, 64 * 1024 * 1024, end)
            .map_err(|e| e.to_string())?;
        if slice.batches.is_empty() {
            break;
        }
        for batch in slice.batches {
            let header = BatchHeader::parse(&batch).map_err(|e| e.to_string())?;
            epochs
                .record(header.leader_epoch, header.base_offset)
                .map_err(|e| e.to_string())?;
            offset = header.next_offset();
        }
    }
    Ok(RecoveredLog {
        log_start_offset: start,
        log_end_offset: end,
        epochs,
        high_watermark: 0,
    })
}

/// Performs the state machine's outputs, in order. `fetched` holds the batches of the
/// fetch response being applied, by base offset.
fn apply_outputs(
    replicas: &Arc<Replicas>,
    slot: &Arc<ReplicaSlot>,
    replica: &mut Replica,
    fetched: Option<&HashMap<u64, Bytes>>,
) {
    while let Some(output) = replica.poll_output() {
        match output {
            Output::Truncate { to } => {
                if let Err(err) = blocking(|| slot.partition.truncate(to, replicas.clock.now_ms()))
                {
                    tracing::error!(topic = %slot.topic, partition = slot.index, %err, "truncation failed");
                } else {
                    tracing::info!(topic = %slot.topic, partition = slot.index, to, "log truncated to the leader's");
                }
            }
            Output::Append(range) => {
                let Some(batch) = fetched.and_then(|m| m.get(&range.base_offset)) else {
                    tracing::error!(topic = %slot.topic, partition = slot.index, ?range, "accepted batch missing from the response");
                    continue;
                };
                let batch = BytesMut::from(batch.as_ref());
                if let Err(err) = blocking(|| {
                    slot.partition
                        .append_replica(batch, replicas.clock.now_ms())
                }) {
                    // The log is as it was: fetch the batch again after a backoff (a
                    // full disk may get space back; a failed one stays failed).
                    tracing::error!(topic = %slot.topic, partition = slot.index, %err, "replicated append failed");
                    replica.handle_append_failed(range.base_offset, replicas.now_ms());
                }
            }
            Output::ProposeIsr(proposal) => {
                let task = propose_isr(Arc::clone(replicas), Arc::clone(slot), proposal);
                replicas.tasks.spawn("ISR proposal", task);
            }
            Output::HighWatermark(hw) => slot.partition.set_high_watermark(hw),
        }
    }
    // After the high watermark is published: a produce is answered only once its
    // records can be read.
    while let Some((ticket, outcome)) = replica.poll_acks_all() {
        let waiter = slot
            .ack_tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ticket);
        if let Some(waiter) = waiter {
            // The producer may have gone: nobody to tell.
            let _ = waiter.send(outcome);
        }
    }
}

async fn propose_isr(
    replicas: Arc<Replicas>,
    slot: Arc<ReplicaSlot>,
    proposal: quiver_repl::IsrProposal,
) {
    let command = MetadataCommand::AlterIsr {
        broker_id: replicas.broker_id,
        topic: slot.topic.clone(),
        partition: slot.index,
        leader_epoch: proposal.leader_epoch,
        isr_version: proposal.base_version,
        isr: proposal.isr.clone(),
    };
    match replicas.controller.propose(command).await {
        Ok(MetadataResponse::IsrAltered { partition, refusal }) => {
            if let Some(refusal) = refusal {
                tracing::info!(topic = %slot.topic, partition = slot.index, %refusal, "ISR change refused");
            }
            commit_isr(
                &replicas,
                &slot,
                partition.leader_epoch,
                partition.isr_version,
                partition.isr,
            )
            .await;
        }
        Ok(other) => tracing::debug!(?other, "ISR proposal answered"),
        // The state machine proposes again after its retry interval.
        Err(err) => tracing::debug!(%err, "ISR proposal not committed"),
    }
}

async fn commit_isr(
    replicas: &Arc<Replicas>,
    slot: &Arc<ReplicaSlot>,
    leader_epoch: u32,
    version: u32,
    isr: Vec<u32>,
) {
    {
        let mut seen = slot.isr_version.lock().unwrap_or_else(|p| p.into_inner());
        if seen.is_some_and(|(e, v)| (e, v) >= (leader_epoch, version)) {
            return;
        }
        *seen = Some((leader_epoch, version));
    }
    let mut replica = slot.replica.lock().await;
    let commit = IsrCommit {
        leader_epoch,
        version,
        isr,
    };
    if let Err(err) = replica.handle_isr_committed(&commit, replicas.now_ms()) {
        tracing::debug!(topic = %slot.topic, partition = slot.index, %err, "ISR commit not applied");
    }
    apply_outputs(replicas, slot, &mut replica, None);
}

/// Applies a topic's changed configs to the replicas of it this broker holds (the
/// in-sync minimum acks=all needs).
pub async fn apply_topic_configs(
    replicas: &Arc<Replicas>,
    topic: &str,
    configs: &std::collections::BTreeMap<String, String>,
) {
    let slots: Vec<Arc<ReplicaSlot>> = replicas
        .slots
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(topic)
        .map(|partitions| partitions.values().cloned().collect())
        .unwrap_or_default();
    for slot in slots {
        let mut replica = slot.replica.lock().await;
        if let Err(err) = replica.set_config(replica_config(replicas.replica_lag_max_ms, configs)) {
            tracing::warn!(topic, partition = slot.index, %err, "cannot apply the topic's configs to the replica");
        }
    }
}

/// Brings the replicas this broker holds in line with the controller's metadata:
/// creates state machines for new ones, applies roles and ISR changes, and drops the
/// replicas of deleted topics. What to do is [`replica_plan::plan`]'s decision; this
/// gathers its inputs and carries its steps out.
///
/// `registered`: whether the controller took this process's registration (a leader
/// waits for it before it leads).
pub async fn reconcile(replicas: &Arc<Replicas>, registered: bool) {
    let metadata = replicas.controller.metadata();
    let me = replicas.broker_id;
    let mut stored: BTreeSet<ReplicaKey> = BTreeSet::new();
    for (name, topic) in metadata.topics() {
        let local = replicas.topics.get(name).map_or(0, |l| l.partitions.len());
        let count = topic.partitions.len().min(local);
        stored.extend((0..count as u32).map(|index| (name.clone(), index)));
    }
    let slots: Vec<Arc<ReplicaSlot>> = replicas
        .slots
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .flat_map(|partitions| partitions.values().cloned())
        .collect();
    let mut running = BTreeMap::new();
    for slot in slots {
        let role = slot.replica.lock().await.role();
        running.insert((slot.topic.clone(), slot.index), role);
    }
    let partitions = metadata.topics().iter().flat_map(|(name, topic)| {
        topic
            .partitions
            .iter()
            .enumerate()
            .map(move |(index, record)| (name.as_str(), index as u32, record))
    });
    let plan = replica_plan::plan(me, registered, partitions, &stored, &running);

    for step in plan.steps {
        let (name, index) = &step.key;
        let slot = if step.create {
            let Some(topic) = metadata.topic(name) else {
                continue;
            };
            match start_replica(replicas, name, *index, &topic.configs) {
                Some(slot) => slot,
                None => continue,
            }
        } else {
            match replicas.slot(name, *index) {
                Some(slot) => slot,
                None => continue,
            }
        };
        apply_role_step(replicas, &slot, step.role).await;
    }
    let remove: BTreeSet<ReplicaKey> = plan.remove.into_iter().collect();
    if remove.is_empty() {
        return;
    }
    let mut slots = replicas.slots.lock().unwrap_or_else(|p| p.into_inner());
    for (name, partitions) in slots.iter_mut() {
        partitions.retain(|index, slot| {
            let keep = !remove.contains(&(name.clone(), *index));
            if !keep {
                slot.closed
                    .store(true, std::sync::atomic::Ordering::Release);
                slot.wake.notify_one();
            }
            keep
        });
    }
    slots.retain(|_, partitions| !partitions.is_empty());
}

/// Starts the state machine of replica `index` of topic `name` from its log, and its
/// follower loop; `None` (logged) when the log cannot be read.
fn start_replica(
    replicas: &Arc<Replicas>,
    name: &str,
    index: u32,
    configs: &std::collections::BTreeMap<String, String>,
) -> Option<Arc<ReplicaSlot>> {
    let partition = replicas
        .topics
        .get(name)?
        .partitions
        .get(index as usize)
        .cloned()?;
    let log = match recovered(&partition) {
        Ok(log) => log,
        Err(err) => {
            tracing::error!(topic = %name, partition = index, %err, "cannot read the replica's log");
            return None;
        }
    };
    let replica = match Replica::new(
        replicas.broker_id,
        replica_config(replicas.replica_lag_max_ms, configs),
        log,
    ) {
        Ok(r) => r,
        Err(err) => {
            tracing::error!(topic = %name, partition = index, %err, "cannot start the replica");
            return None;
        }
    };
    partition.set_replicated(0);
    let slot = Arc::new(ReplicaSlot {
        topic: name.to_owned(),
        index,
        partition,
        replica: tokio::sync::Mutex::new(replica),
        wake: tokio::sync::Notify::new(),
        isr_version: Mutex::new(None),
        closed: std::sync::atomic::AtomicBool::new(false),
        ack_tickets: Mutex::new(HashMap::new()),
        next_ticket: std::sync::atomic::AtomicU64::new(0),
        leading_epoch: std::sync::atomic::AtomicU64::new(NOT_LEADING),
    });
    replicas
        .slots
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(name.to_owned())
        .or_default()
        .insert(index, Arc::clone(&slot));
    replicas.tasks.spawn(
        "replica fetch",
        follower_loop(Arc::clone(replicas), Arc::clone(&slot)),
    );
    Some(slot)
}

/// Carries out one replica's role step.
async fn apply_role_step(replicas: &Arc<Replicas>, slot: &Arc<ReplicaSlot>, step: RoleStep) {
    let (name, index) = (&slot.topic, slot.index);
    match step {
        RoleStep::Keep => {}
        RoleStep::AwaitRegistration => return,
        RoleStep::CommitIsr {
            leader_epoch,
            isr_version,
            isr,
        } => {
            commit_isr(replicas, slot, leader_epoch, isr_version, isr).await;
            return;
        }
        RoleStep::Lead {
            leader_epoch,
            isr_version,
            isr,
            replicas: assigned,
        } => {
            let mut replica = slot.replica.lock().await;
            slot.partition.set_leader_epoch(leader_epoch);
            slot.leading_epoch
                .store(NOT_LEADING, std::sync::atomic::Ordering::Release);
            match replica.become_leader(leader_epoch, &isr, &assigned, replicas.now_ms()) {
                Ok(()) => {
                    *slot.isr_version.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((leader_epoch, isr_version));
                    tracing::info!(topic = %name, partition = index, epoch = leader_epoch, "leading");
                }
                Err(err) => {
                    tracing::warn!(topic = %name, partition = index, %err, "cannot lead")
                }
            }
            apply_outputs(replicas, slot, &mut replica, None);
            if matches!(replica.role(), Role::Leader { leader_epoch: e } if e == leader_epoch) {
                slot.leading_epoch.store(
                    u64::from(leader_epoch),
                    std::sync::atomic::Ordering::Release,
                );
            }
        }
        RoleStep::Follow {
            leader,
            leader_epoch,
        } => {
            let mut replica = slot.replica.lock().await;
            slot.leading_epoch
                .store(NOT_LEADING, std::sync::atomic::Ordering::Release);
            match replica.become_follower(leader, leader_epoch, replicas.now_ms()) {
                Ok(()) => {
                    tracing::info!(topic = %name, partition = index, leader, epoch = leader_epoch, "following")
                }
                Err(err) => {
                    tracing::warn!(topic = %name, partition = index, %err, "cannot follow")
                }
            }
            apply_outputs(replicas, slot, &mut replica, None);
        }
    }
    slot.wake.notify_one();
}

/// Fetches from the leader while this replica follows; idles while it leads.
async fn follower_loop(replicas: Arc<Replicas>, slot: Arc<ReplicaSlot>) {
    let mut shutdown = replicas.shutdown.clone();
    loop {
        if slot.closed.load(std::sync::atomic::Ordering::Acquire) || *shutdown.borrow() {
            return;
        }
        let (request, next_timer) = {
            let mut replica = slot.replica.lock().await;
            let now = replicas.now_ms();
            if replica.poll_timeout().is_some_and(|t| t <= now) {
                replica.handle_timeout(now);
            }
            apply_outputs(&replicas, &slot, &mut replica, None);
            (replica.poll_fetch(now), replica.poll_timeout())
        };
        let Some(request) = request else {
            let wait = next_timer
                .map(|t| Duration::from_millis(t.saturating_sub(replicas.now_ms()).clamp(1, 1_000)))
                .unwrap_or(Duration::from_secs(1));
            tokio::select! {
                _ = slot.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        };
        let address = replicas
            .controller
            .metadata()
            .broker(request.leader)
            .map(|b| b.address.clone());
        let response = match address {
            Some(address) => {
                let wire = ReplicaFetchRequest {
                    topic: slot.topic.clone(),
                    partition: slot.index,
                    replica_id: replicas.broker_id,
                    leader_epoch: request.leader_epoch,
                    fetch_offset: request.fetch_offset,
                    last_fetched_epoch: request.last_fetched_epoch,
                    max_bytes: FETCH_BYTES,
                    max_wait_ms: u32::try_from(FETCH_WAIT.as_millis()).unwrap_or(500),
                };
                replicas
                    .peers
                    .call(
                        request.leader,
                        &address,
                        Lane::Data,
                        &wire,
                        REPLICA_FETCH_TIMEOUT,
                    )
                    .await
                    .map_err(|e| e.to_string())
            }
            None => Err(format!("leader {} has no known address", request.leader)),
        };
        let mut replica = slot.replica.lock().await;
        let now = replicas.now_ms();
        match response {
            Ok(ReplicaFetchResponse::Records {
                high_watermark,
                batches,
                ..
            }) => {
                let mut ranges = Vec::new();
                let mut by_base = HashMap::new();
                for batch in BatchSplitter::new(batches) {
                    let Ok(batch) = batch else { break };
                    let Ok(header) = BatchHeader::parse(&batch) else {
                        break;
                    };
                    ranges.push(BatchRange {
                        base_offset: header.base_offset,
                        last_offset: header.last_offset(),
                        leader_epoch: header.leader_epoch,
                    });
                    by_base.insert(header.base_offset, batch);
                }
                let answer = FetchResponse::Records {
                    high_watermark,
                    batches: &ranges,
                };
                if let Err(err) = replica.handle_fetch_response(&request, answer, now) {
                    tracing::debug!(topic = %slot.topic, partition = slot.index, %err, "fetch response refused");
                }
                apply_outputs(&replicas, &slot, &mut replica, Some(&by_base));
            }
            Ok(ReplicaFetchResponse::Diverging {
                leader_epoch,
                end_offset,
                high_watermark,
            }) => {
                let answer = FetchResponse::Diverging {
                    diverging: EpochEndOffset {
                        leader_epoch,
                        end_offset,
                    },
                    high_watermark,
                };
                if let Err(err) = replica.handle_fetch_response(&request, answer, now) {
                    tracing::debug!(topic = %slot.topic, partition = slot.index, %err, "divergence refused");
                }
                apply_outputs(&replicas, &slot, &mut replica, None);
            }
            Err(err) => {
                tracing::debug!(topic = %slot.topic, partition = slot.index, %err, "fetch from the leader failed");
                let _ = replica.handle_fetch_error(&request, now);
                apply_outputs(&replicas, &slot, &mut replica, None);
            }
        }
    }
}

/// The leader's side of a follower's fetch.
pub async fn handle_replica_fetch(
    req: ReplicaFetchRequest,
    replicas: &Arc<Replicas>,
) -> Result<Outgoing, RequestError> {
    let slot = replicas.slot(&req.topic, req.partition).ok_or_else(|| {
        RequestError::new(
            ErrorCode::NotLeader,
            format!("{}/{} has no replica here", req.topic, req.partition),
        )
    })?;
    let request = FetchRequest {
        replica_id: req.replica_id,
        leader: replicas.broker_id,
        leader_epoch: req.leader_epoch,
        fetch_offset: req.fetch_offset,
        last_fetched_epoch: req.last_fetched_epoch,
        fetch_id: 0,
    };
    let wait = Duration::from_millis(u64::from(req.max_wait_ms)).min(FETCH_WAIT);
    let mut log_end = slot.partition.watch_log_end();
    let mut waited = false;
    loop {
        let reply = {
            let mut replica = slot.replica.lock().await;
            let reply = replica.handle_follower_fetch(&request, replicas.now_ms());
            apply_outputs(replicas, &slot, &mut replica, None);
            reply.map_err(|e| RequestError::new(ErrorCode::NotLeader, e.to_string()))?
        };
        match reply {
            FetchReply::Records {
                fetch_offset,
                log_end_offset,
                high_watermark,
            } => {
                if fetch_offset >= log_end_offset && !waited {
                    // Nothing new: hold the fetch until an append or the wait ends.
                    waited = true;
                    let _ = tokio::time::timeout(wait, log_end.changed()).await;
                    continue;
                }
                let slice = slot.partition.log().read(
                    fetch_offset,
                    req.max_bytes.max(1) as usize,
                    log_end_offset,
                )?;
                // Stored batches go out as slices of the log, as for consumers.
                let mut chunks = Vec::with_capacity(slice.batches.len() + 1);
                chunks.push(ReplicaFetchResponse::encode_records_head(
                    high_watermark,
                    log_end_offset,
                    slice.bytes,
                ));
                chunks.extend(slice.batches);
                return Ok(Outgoing::Chunks(chunks));
            }
            FetchReply::Diverging {
                diverging,
                high_watermark,
            } => {
                return Ok(Outgoing::Frame(
                    ReplicaFetchResponse::Diverging {
                        leader_epoch: diverging.leader_epoch,
                        end_offset: diverging.end_offset,
                        high_watermark,
                    }
                    .encode_frame(),
                ));
            }
        }
    }
}

/// Appends a produced batch to `partition`, which this broker leads, and returns once
/// `acks` is met, within `timeout` in all: at once for none and leader; for all, once
/// the ISR has the batch (through the replica's ack ticket, when the partition is
/// replicated) and it is on this broker's disk as the flush policy requires. The one
/// wait a produce makes.
pub async fn append_acked(
    replicas: &Arc<Replicas>,
    partition: &Arc<Partition>,
    acks: quiver_wire::message::Acks,
    timeout: Duration,
    prepared: PreparedBatch,
    now: i64,
) -> Result<quiver_log::AppendInfo, RequestError> {
    use quiver_wire::message::Acks;
    let deadline = tokio::time::Instant::now() + timeout;
    let topic: &str = &partition.topic;
    let append = async || {
        let info = prepared.append(partition, now)?;
        // A duplicate stored nothing new: count it as a batch, not as data.
        let (records, bytes) = if info.duplicate {
            (0, 0)
        } else {
            (info.last_offset - info.base_offset + 1, info.bytes as u64)
        };
        replicas.metrics.produced(topic, records, bytes);
        Ok(info)
    };
    let slot = replicas.slot(topic, partition.index);
    let info = match &slot {
        Some(slot) => produce(replicas, slot, acks == Acks::All, timeout, append).await?,
        None => append().await?,
    };
    if acks != Acks::All {
        return Ok(info);
    }
    match tokio::time::timeout_at(deadline, partition.wait_durable(info.last_offset + 1)).await {
        Ok(Ok(())) => Ok(info),
        Ok(Err(err)) => {
            let code = match err {
                crate::partition::DurabilityError::StorageFailed => ErrorCode::StorageError,
                crate::partition::DurabilityError::Deleted => ErrorCode::UnknownTopic,
                crate::partition::DurabilityError::Stopping => ErrorCode::BrokerShuttingDown,
            };
            Err(RequestError::new(code, err.to_string()))
        }
        Err(_) => Err(RequestError::new(
            ErrorCode::Timeout,
            format!(
                "batch at offset {} appended but not flushed within {timeout:?}",
                info.base_offset
            ),
        )),
    }
}

/// A produce on a replicated partition: refuses acks=all without enough in-sync
/// replicas, appends under the replica's lock (so the state machine sees appends in
/// log order), reports the append, and for acks=all hands the replica a ticket and
/// awaits it: the replica settles it when the high watermark passes the batch, or
/// fails it (deposed, too few live replicas, the deadline), with no polling here.
pub async fn produce<F>(
    replicas: &Arc<Replicas>,
    slot: &Arc<ReplicaSlot>,
    acks_all: bool,
    timeout: Duration,
    append: F,
) -> Result<quiver_log::AppendInfo, RequestError>
where
    F: AsyncFnOnce() -> Result<quiver_log::AppendInfo, RequestError>,
{
    let (info, ticket) = {
        let mut replica = slot.replica.lock().await;
        let Some(epoch) = (match replica.role() {
            Role::Leader { leader_epoch } => Some(leader_epoch),
            _ => None,
        }) else {
            return Err(RequestError::new(
                ErrorCode::NotLeader,
                "not the partition leader",
            ));
        };
        if acks_all {
            replica
                .can_accept_acks_all(replicas.now_ms())
                .map_err(|e| RequestError::new(ErrorCode::NotEnoughReplicas, e.to_string()))?;
        }
        let info = append().await?;
        if !info.duplicate {
            let range = BatchRange {
                base_offset: info.base_offset,
                last_offset: info.last_offset,
                leader_epoch: epoch,
            };
            if let Err(err) = replica.handle_local_append(range) {
                tracing::error!(topic = %slot.topic, partition = slot.index, %err, "append not accepted by replication");
            }
        }
        let ticket = acks_all.then(|| {
            let ticket = slot
                .next_ticket
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (tx, rx) = tokio::sync::oneshot::channel();
            slot.ack_tickets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ticket, tx);
            let now = replicas.now_ms();
            let deadline =
                now.saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
            replica.handle_acks_all(ticket, epoch, info.last_offset, deadline, now);
            (ticket, rx)
        });
        apply_outputs(replicas, slot, &mut replica, None);
        (info, ticket)
    };
    let Some((ticket, outcome)) = ticket else {
        return Ok(info);
    };
    // The follower loop runs the replica's timers; wake it so it sees this deadline.
    slot.wake.notify_one();
    let outcome = match tokio::time::timeout(timeout + ACK_TICKET_GRACE, outcome).await {
        Ok(Ok(outcome)) => outcome,
        // The replica was dropped with the ticket (its topic deleted), or it stopped
        // being driven: no leader will answer for this batch.
        Ok(Err(_)) | Err(_) => {
            slot.ack_tickets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&ticket);
            return Err(RequestError::new(
                ErrorCode::NotLeader,
                format!(
                    "batch at offset {} appended, but this replica stopped leading before it was replicated",
                    info.base_offset
                ),
            ));
        }
    };
    match outcome {
        Ok(()) => Ok(info),
        Err(quiver_repl::AcksAllError::NotEnoughReplicas { .. }) => Err(RequestError::new(
            ErrorCode::NotEnoughReplicasAfterAppend,
            "fewer in-sync replicas than min.insync.replicas are live: the batch was appended on the leader but not replicated (an idempotent retry finds it)",
        )),
        Err(quiver_repl::AcksAllError::Timeout { .. }) => Err(RequestError::new(
            ErrorCode::Timeout,
            format!(
                "batch at offset {} appended but not replicated in time",
                info.base_offset
            ),
        )),
        Err(err @ quiver_repl::AcksAllError::TooManyWaiting { .. }) => {
            Err(RequestError::new(ErrorCode::Timeout, err.to_string()))
        }
        Err(err) => Err(RequestError::new(ErrorCode::NotLeader, err.to_string())),
    }
}
