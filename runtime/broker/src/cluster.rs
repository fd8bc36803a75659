//! Cluster membership: the broker's controller (quiver-cluster, openraft) reached over
//! the broker's own QUIC listener, broker registration, heartbeats, and fencing of
//! brokers that stop heartbeating.
//!
//! A broker runs in cluster mode when `--seeds` names other nodes. It then starts its
//! controller on `DATA_DIR/controller`, serves the controllers' Raft RPCs on API
//! `controller_rpc`, registers itself, heartbeats every [`HEARTBEAT_INTERVAL`], and,
//! while its controller leads, fences every broker silent for longer than
//! `broker_session_timeout_ms` (6 s by default). Topics are created and deleted
//! through the controller and materialised on every broker ([`reconcile_loop`]), as
//! are plugin versions and attachments (`crate::plugins::sync_with_controller`);
//! produce and fetch are served by the partition leader ([`require_leader`]);
//! replication itself is `crate::replication`. Consumer groups are coordinated by
//! the controller leader, which commits their offsets through the controller
//! ([`group_coordinator`]). A node that was not a founding seed joins with
//! [`join_loop`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use quiver_cluster::network::RPC_BYTES_MAX;
use quiver_cluster::{
    Controller, MetadataCommand, MetadataResponse, ProposeError, RaftRpc, RaftRpcReply,
    RaftTransport, TransportError,
};
use quiver_wire::ErrorCode;
use quiver_wire::cluster::{
    BrokerStatus, ClusterStatusResponse, ControllerRpcRequest, ControllerRpcResponse,
    UnreachablePeer,
};
use quiver_wire::message::ResponseBody;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::group::GroupCoordinator;
use crate::peers::{Lane, PeerClients, PeerHealth};
use crate::replication::{ReplicaServices, Replicas};
use crate::reply::{Outgoing, RequestError};
use crate::tasks::TaskSet;
use crate::topic::TopicRegistry;

/// How often a broker tells the controller it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// The longest one heartbeat may take: a heartbeat that found no leader in time gives
/// up, and the next one (which may know a new leader) goes out at the next interval.
/// A third of the session at most, so that two may fail while a controller leader is
/// replaced and the third still arrives in time.
const HEARTBEAT_TIMEOUT_MAX: Duration = Duration::from_secs(2);

/// [`HEARTBEAT_TIMEOUT_MAX`], or a third of a shorter session.
fn heartbeat_timeout(session_timeout_ms: u64) -> Duration {
    HEARTBEAT_TIMEOUT_MAX.min(Duration::from_millis(session_timeout_ms / 3))
}

/// `broker_epoch` before the controller accepted this broker's registration (epochs
/// start at 0).
const UNREGISTERED: u64 = u64::MAX;

/// This broker's part in the cluster.
pub struct ClusterMember {
    pub controller: Controller,
    pub broker_id: u32,
    /// Connections to the other brokers: the one pool every broker-to-broker request
    /// goes through.
    pub peers: Arc<crate::peers::PeerClients>,
    /// The partition replicas this broker holds.
    pub replicas: Arc<crate::replication::Replicas>,
    /// The epoch the controller gave this broker's registration; [`UNREGISTERED`]
    /// until it answered.
    broker_epoch: AtomicU64,
    /// One plugin registry sync at a time, each from the metadata as it is when it
    /// starts, so an older view never undoes a newer one.
    pub plugin_sync: tokio::sync::Mutex<()>,
    /// The controller term in which this broker last coordinated groups.
    coordinator_term: AtomicU64,
    /// How long ago the controller quorum last heard from this broker.
    lease: Lease,
    /// Where this broker reads the time.
    clock: Arc<dyn Clock>,
    /// The topics' logs, which follow the controller's metadata.
    topics: Arc<TopicRegistry>,
    /// Consumer group membership, coordinated here while this controller leads.
    groups: Arc<std::sync::Mutex<GroupCoordinator>>,
    /// Background loops, joined at shutdown.
    tasks: Arc<TaskSet>,
    shutdown: watch::Receiver<bool>,
    settings: MemberSettings,
}

/// The configuration the cluster member acts on.
#[derive(Debug, Clone)]
pub struct MemberSettings {
    /// The controller's other nodes and this one, by id (`--seeds`).
    pub seeds: Vec<(u32, String)>,
    /// Whether this node joins a running cluster rather than founding one.
    pub joins_cluster: bool,
    pub broker_session_timeout_ms: u64,
    pub offsets_retention_ms: u64,
}

/// What [`start_member`] builds the cluster member from: the services below the
/// control layer, made before it.
pub struct MemberServices {
    pub config: crate::config::BrokerConfig,
    pub topics: Arc<TopicRegistry>,
    pub groups: Arc<std::sync::Mutex<GroupCoordinator>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub clock: Arc<dyn Clock>,
    pub tasks: Arc<TaskSet>,
    pub shutdown: watch::Receiver<bool>,
    pub peer_health: Arc<PeerHealth>,
}

/// A broker's lease on its leaderships: when (on this broker's monotonic clock) it
/// sent the last registration or heartbeat the controller leader accepted. The leader
/// confirms its leadership with a quorum before it answers a heartbeat, and fences a
/// broker only after a session of silence on its own monotonic clock, counted from a
/// receipt that came after the sending; a new leader first waits a whole session. So
/// a broker that lets its partitions go when its own lease runs out has let go before
/// the controller can elect another leader for them, whatever the hosts' wall clocks
/// say.
#[derive(Debug)]
struct Lease {
    /// Monotonic ms at the sending of the newest accepted heartbeat, or `None`.
    sent_ms: AtomicU64,
}

/// `Lease::sent_ms` before any heartbeat was accepted.
const NEVER: u64 = u64::MAX;

impl Default for Lease {
    fn default() -> Self {
        Self {
            sent_ms: AtomicU64::new(NEVER),
        }
    }
}

impl Lease {
    /// The leader accepted a heartbeat (or the registration) sent at `sent_ms`.
    fn renew(&self, sent_ms: u64) {
        let _ = self
            .sent_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held == NEVER || sent_ms > held).then_some(sent_ms)
            });
    }

    /// Whether the leader heard from this broker within `session_timeout_ms` of
    /// `now_ms` (monotonic).
    fn holds(&self, now_ms: u64, session_timeout_ms: u64) -> bool {
        match self.sent_ms.load(Ordering::Acquire) {
            NEVER => false,
            sent_ms => now_ms.saturating_sub(sent_ms) <= session_timeout_ms,
        }
    }
}

impl ClusterMember {
    /// Records that the controller leader accepted a heartbeat (or the
    /// registration) this broker sent at `sent_ms` (monotonic).
    fn renew_lease(&self, sent_ms: u64) {
        self.lease.renew(sent_ms);
    }

    /// Whether the controller leader heard from this broker within
    /// `session_timeout_ms`. A broker out of contact for longer has been (or is about
    /// to be) fenced by the majority, which moves its leaderships to other replicas in
    /// a new epoch: it must stop acting as a leader, even though nothing can tell it
    /// so while it is cut off.
    pub fn in_contact(&self, session_timeout_ms: u64) -> bool {
        self.lease
            .holds(self.clock.monotonic_ms(), session_timeout_ms)
    }

    pub fn broker_epoch(&self) -> u64 {
        self.broker_epoch.load(Ordering::Acquire)
    }

    /// Whether the controller took this process's registration.
    pub fn is_registered(&self) -> bool {
        self.broker_epoch() != UNREGISTERED
    }
}

/// How long a controller RPC to another broker may take; Raft has its own timers, so
/// a peer that does not answer is soon treated as unreachable.
const RAFT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Carries controller RPCs to other brokers over QUIC, one request stream per RPC, with
/// one cached connection per peer.
pub struct QuicRaftTransport {
    peers: Arc<crate::peers::PeerClients>,
}

impl QuicRaftTransport {
    /// Sends through `peers`, on their control lane.
    pub fn new(peers: Arc<crate::peers::PeerClients>) -> Self {
        Self { peers }
    }
}

impl RaftTransport for QuicRaftTransport {
    async fn send(
        &self,
        target: u64,
        addr: &str,
        rpc: RaftRpc,
    ) -> Result<RaftRpcReply, TransportError> {
        let payload = rpc.encode().map_err(TransportError::TooLarge)?;
        let id = u32::try_from(target).map_err(|_| TransportError::Unreachable {
            target,
            reason: "not a broker id".into(),
        })?;
        let request = ControllerRpcRequest {
            payload: Bytes::from(payload),
        };
        match self
            .peers
            .call(id, addr, Lane::Control, &request, RAFT_REQUEST_TIMEOUT)
            .await
        {
            Ok(response) => {
                RaftRpcReply::decode(&response.payload).map_err(|e| TransportError::Failed {
                    target,
                    reason: e.to_string(),
                })
            }
            Err(quiver_sdk::RequestError::Connect(err)) => Err(TransportError::Unreachable {
                target,
                reason: err.to_string(),
            }),
            Err(err) => Err(TransportError::Failed {
                target,
                reason: err.to_string(),
            }),
        }
    }
}

/// Serves one controller RPC from another broker.
pub async fn handle_rpc(
    req: ControllerRpcRequest,
    member: &ClusterMember,
) -> Result<Outgoing, RequestError> {
    if req.payload.len() > RPC_BYTES_MAX {
        return Err(RequestError::new(
            ErrorCode::InvalidRequest,
            format!("controller RPC of {} bytes", req.payload.len()),
        ));
    }
    let rpc = RaftRpc::decode(&req.payload)
        .map_err(|e| RequestError::new(ErrorCode::InvalidRequest, e.to_string()))?;
    let reply = member.controller.rpc_handler().handle(rpc).await;
    let payload = reply
        .encode()
        .map_err(|e| RequestError::new(ErrorCode::Unknown, e.to_string()))?;
    Ok(Outgoing::Frame(
        ControllerRpcResponse {
            payload: Bytes::from(payload),
        }
        .encode_frame(),
    ))
}

/// What this broker knows of its cluster, encoded for a request of `version`.
pub fn status(
    member: &ClusterMember,
    peer_health: &PeerHealth,
    version: u16,
) -> Result<Outgoing, RequestError> {
    let unreachable: Vec<UnreachablePeer> = peer_health
        .unreachable(member.clock.now_ms())
        .into_iter()
        .map(|(id, address, reason)| UnreachablePeer {
            id,
            address,
            reason,
        })
        .collect();
    let status = member.controller.status();
    let metadata = member.controller.metadata();
    let response = ClusterStatusResponse {
        node_id: member.broker_id,
        mode: "cluster".into(),
        controller_leader: status.leader.as_ref().map(|(id, _)| *id),
        controller_leader_address: status.leader.map(|(_, addr)| addr).unwrap_or_default(),
        term: status.term,
        voters: status
            .voters
            .iter()
            .filter_map(|(id, _)| u32::try_from(*id).ok())
            .collect(),
        brokers: metadata
            .brokers()
            .iter()
            .map(|(id, b)| BrokerStatus {
                id: *id,
                address: b.address.clone(),
                fenced: b.fenced,
                broker_epoch: b.epoch,
            })
            .collect(),
        under_replicated_partitions: u32::try_from(metadata.under_replicated_partitions())
            .unwrap_or(u32::MAX),
        unreachable,
    };
    Ok(Outgoing::Frame(response.encode_frame_for(version)))
}

/// A number new to each process start, so that the controller tells a restart from a
/// retry of the same registration: 64 bits from the OS's generator (Kafka's
/// incarnation id is a random UUID). Clock and pid do not do: `ms ^ pid` of two starts
/// coincide whenever the milliseconds and the pids between them differ by XOR-equal
/// amounts, which a loaded machine's process churn makes likely enough.
fn new_incarnation() -> Result<u64, String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no random bytes for this broker's incarnation".to_owned())?;
    Ok(u64::from_le_bytes(bytes))
}

/// Registers this broker with the controller under `incarnation` (new per process
/// start, so the controller tells a restart from a retry).
async fn register(
    member: &ClusterMember,
    advertised: &str,
    incarnation: u64,
) -> Result<(), String> {
    let sent_ms = member.clock.monotonic_ms();
    let command = MetadataCommand::RegisterBroker {
        broker_id: member.broker_id,
        incarnation,
        address: advertised.to_owned(),
        now_ms: member.clock.now_ms_u64(),
    };
    match member.controller.propose(command).await {
        Ok(MetadataResponse::BrokerRegistered { broker_epoch, .. }) => {
            member.renew_lease(sent_ms);
            member.broker_epoch.store(broker_epoch, Ordering::Release);
            tracing::info!(broker_epoch, "registered with the controller");
            Ok(())
        }
        Ok(other) => Err(format!("unexpected answer to a registration: {other:?}")),
        Err(err) => Err(err.to_string()),
    }
}

/// How long a single node waits at start for its one-member quorum to elect it and
/// take its registration.
const SINGLE_NODE_START_WAIT: Duration = Duration::from_secs(30);

/// Starts this broker's controller and its part in the cluster, before the broker's
/// other services that depend on it exist and before the endpoint accepts: the
/// controller's storage opens and a founder writes the first membership here, with no
/// network round trip, so peers' RPCs that come before the endpoint accepts are
/// simply retried by Raft. `quic_addr` is the endpoint's bound address, advertised
/// when `--seeds` does not name this node's.
pub async fn start_member(
    services: MemberServices,
    quic_addr: std::net::SocketAddr,
) -> Result<(Arc<ClusterMember>, String), String> {
    let peers = Arc::new(PeerClients::new(
        services.config.clone(),
        Arc::clone(&services.peer_health),
        Arc::clone(&services.clock),
    ));
    let transport = QuicRaftTransport::new(Arc::clone(&peers));
    start_member_on(services, quic_addr, peers, transport).await
}

/// [`start_member`] with the controller's RPCs carried by `transport` (tests use an
/// in-process one).
pub(crate) async fn start_member_on<T: RaftTransport>(
    services: MemberServices,
    quic_addr: std::net::SocketAddr,
    peers: Arc<PeerClients>,
    transport: T,
) -> Result<(Arc<ClusterMember>, String), String> {
    let MemberServices {
        config,
        topics,
        groups,
        metrics,
        clock,
        tasks,
        shutdown,
        peer_health: _,
    } = services;
    let seeds: Vec<(u64, String)> = config
        .seeds
        .iter()
        .map(|(id, addr)| (u64::from(*id), addr.to_string()))
        .collect();
    let advertised = config
        .seeds
        .iter()
        .find(|(id, _)| *id == config.node_id)
        .map_or_else(|| quic_addr.to_string(), |(_, addr)| addr.to_string());
    let mut controller_config = quiver_cluster::ControllerConfig::new(
        u64::from(config.node_id),
        config.data_dir.join("controller"),
        seeds,
    );
    controller_config.advertised_addr = Some(advertised.clone());
    let controller = Controller::start_with(controller_config, transport)
        .await
        .map_err(|e| e.to_string())?;
    let replicas = Arc::new(Replicas::new(ReplicaServices {
        broker_id: config.node_id,
        controller: controller.clone(),
        peers: Arc::clone(&peers),
        topics: Arc::clone(&topics),
        metrics,
        clock: Arc::clone(&clock),
        tasks: Arc::clone(&tasks),
        shutdown: shutdown.clone(),
        replica_lag_max_ms: config.replica_lag_max_ms,
    }));
    let settings = MemberSettings {
        seeds: config
            .seeds
            .iter()
            .map(|(id, addr)| (*id, addr.to_string()))
            .collect(),
        joins_cluster: config.joins_cluster(),
        broker_session_timeout_ms: config.broker_session_timeout_ms,
        offsets_retention_ms: config.offsets_retention_ms,
    };
    let member = Arc::new(ClusterMember {
        controller,
        broker_id: config.node_id,
        peers,
        replicas,
        broker_epoch: AtomicU64::new(UNREGISTERED),
        plugin_sync: tokio::sync::Mutex::new(()),
        coordinator_term: AtomicU64::new(u64::MAX),
        lease: Lease::default(),
        clock,
        topics,
        groups,
        tasks,
        shutdown,
        settings,
    });
    Ok((member, advertised))
}

impl MemberServices {
    /// The services a member starts from, with the task set, group coordinator and
    /// peer health it shares with the rest of the broker made here.
    pub fn new(
        config: crate::config::BrokerConfig,
        topics: Arc<TopicRegistry>,
        metrics: Arc<crate::metrics::Metrics>,
        clock: Arc<dyn Clock>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            config,
            topics,
            groups: Arc::default(),
            metrics,
            clock,
            tasks: Arc::default(),
            shutdown,
            peer_health: Arc::default(),
        }
    }
}

/// Whether this node is alone in its cluster (no other node among the seeds).
pub fn is_single_node(member: &ClusterMember) -> bool {
    member
        .settings
        .seeds
        .iter()
        .all(|(id, _)| *id == member.broker_id)
}

/// A single node's registration with its one-member quorum, awaited so that the
/// first request finds the metadata ready.
pub async fn register_single_node(member: &ClusterMember, advertised: &str) -> Result<u64, String> {
    let incarnation = new_incarnation()?;
    let deadline = tokio::time::Instant::now() + SINGLE_NODE_START_WAIT;
    loop {
        match register(member, advertised, incarnation).await {
            Ok(()) => return Ok(incarnation),
            Err(err) if tokio::time::Instant::now() >= deadline => {
                return Err(format!(
                    "the one-member controller quorum did not take this broker's registration: {err}"
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Starts the member's loops: joining the quorum (a node that was not a founding
/// seed), registration and heartbeats, and following the controller's topics and
/// replicas. `incarnation` is the one a single node registered with, if it did.
pub fn run(
    member: &Arc<ClusterMember>,
    advertised: String,
    incarnation: Option<u64>,
) -> Result<(), String> {
    let incarnation = match incarnation {
        Some(incarnation) => incarnation,
        None => new_incarnation()?,
    };
    if member.settings.joins_cluster {
        member.tasks.spawn(
            "cluster join",
            join_loop(Arc::clone(member), advertised.clone()),
        );
    }
    member.tasks.spawn(
        "membership",
        membership_loop(Arc::clone(member), advertised, incarnation),
    );
    member
        .tasks
        .spawn("reconcile", reconcile_loop(Arc::clone(member)));
    Ok(())
}

/// How often a joining node asks the cluster again to add it.
const JOIN_RETRY: Duration = Duration::from_secs(2);

/// For a node that was not a founding seed: asks the seeds' cluster to add this
/// node's controller to the voters, until it is one. A node that joined before and
/// restarts is a voter already and asks nothing.
pub async fn join_loop(member: Arc<ClusterMember>, advertised: String) {
    let seeds: Vec<(u64, String)> = member
        .settings
        .seeds
        .iter()
        .map(|(id, addr)| (u64::from(*id), addr.clone()))
        .collect();
    let mut shutdown = member.shutdown.clone();
    loop {
        if member.controller.is_voter() {
            tracing::info!("this node's controller is a voter of the cluster");
            return;
        }
        match member.controller.join(&seeds, &advertised).await {
            Ok(()) => {
                tracing::info!(address = %advertised, "joined the cluster's controller quorum");
                return;
            }
            Err(err) => tracing::warn!(%err, "cannot join the cluster yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(JOIN_RETRY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Registers this broker, then heartbeats until shutdown; while this broker's
/// controller leads, fences brokers whose heartbeats stopped.
pub async fn membership_loop(member: Arc<ClusterMember>, advertised: String, incarnation: u64) {
    let member = &*member;
    let mut shutdown = member.shutdown.clone();
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if member.broker_epoch() == UNREGISTERED {
            if let Err(err) = register(member, &advertised, incarnation).await {
                tracing::debug!(%err, "registration not accepted yet");
            }
            continue;
        }
        let sent_ms = member.clock.monotonic_ms();
        let timeout = heartbeat_timeout(member.settings.broker_session_timeout_ms);
        match member
            .controller
            .heartbeat(member.broker_id, member.broker_epoch(), timeout)
            .await
        {
            Ok(_) => member.renew_lease(sent_ms),
            Err(ProposeError::Rejected(err)) => {
                // Another registration (a restart elsewhere with this id) replaced
                // ours: register again.
                tracing::warn!(%err, "heartbeat refused; registering again");
                member.broker_epoch.store(UNREGISTERED, Ordering::Release);
            }
            Err(err) => tracing::debug!(%err, "heartbeat not delivered"),
        }
        if member.controller.is_leader() {
            match member.controller.follow_moved_members().await {
                Ok(moved) if !moved.is_empty() => {
                    tracing::info!(
                        ?moved,
                        "controller quorum follows brokers registered at new addresses"
                    );
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(%err, "membership addresses not updated yet"),
            }
            expire_offsets(member).await;
            let session = Duration::from_millis(member.settings.broker_session_timeout_ms);
            for broker_id in member.controller.brokers_to_fence(session) {
                match member
                    .controller
                    .propose(MetadataCommand::FenceBroker { broker_id })
                    .await
                {
                    Ok(response) => {
                        tracing::warn!(
                            broker_id,
                            ?response,
                            "fenced a broker that stopped heartbeating"
                        );
                    }
                    Err(err) => tracing::debug!(broker_id, %err, "fencing not committed"),
                }
            }
        }
    }
}

/// On the controller leader (the group coordinator): forgets the committed offsets of
/// groups without members that are older than `offsets_retention_ms`.
async fn expire_offsets(member: &ClusterMember) {
    let before_ms = member
        .clock
        .now_ms_u64()
        .saturating_sub(member.settings.offsets_retention_ms);
    let live: Vec<String> = member
        .groups
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .list()
        .into_iter()
        .filter(|(_, members)| *members > 0)
        .map(|(group, _)| group)
        .collect();
    if !member
        .controller
        .metadata()
        .offsets_expire_before(before_ms, &live)
    {
        return;
    }
    let command = MetadataCommand::ExpireOffsets {
        before_ms,
        keep_groups: live,
    };
    match member.controller.propose_here(command).await {
        Ok(MetadataResponse::OffsetsExpired { count }) => {
            tracing::info!(
                count,
                "expired the committed offsets of groups without members"
            );
        }
        Ok(_) => {}
        Err(err) => tracing::debug!(%err, "offset expiry not committed"),
    }
}

/// How long a topic request waits for this broker to apply the controller's decision
/// locally before answering.
const APPLY_WAIT: Duration = Duration::from_secs(15);

fn propose_error(err: quiver_cluster::ProposeError) -> RequestError {
    use quiver_cluster::ProposeError;
    if let ProposeError::Rejected(refusal) = &err {
        return rejected(refusal);
    }
    let code = match &err {
        ProposeError::NotLeader { .. } | ProposeError::Unavailable(_) => ErrorCode::NotLeader,
        ProposeError::Timeout => ErrorCode::Timeout,
        _ => ErrorCode::InvalidRequest,
    };
    RequestError::new(code, format!("controller: {err}"))
}

pub(crate) fn rejected(err: &quiver_cluster::CommandError) -> RequestError {
    RequestError::from(err)
}

/// A controller answer of the wrong kind for the command: a defect, reported as such.
pub(crate) fn unexpected(answer: &MetadataResponse) -> RequestError {
    RequestError::new(
        ErrorCode::Unknown,
        format!("unexpected controller answer {answer:?}"),
    )
}

/// Proposes `command` and returns the controller's answer; a refusal becomes the
/// matching wire error.
pub(crate) async fn propose_change(
    member: &ClusterMember,
    command: MetadataCommand,
) -> Result<MetadataResponse, RequestError> {
    propose_accepted(member, command, propose_error).await
}

/// Waits until the local topic registry agrees with `present` for `name`.
async fn applied(member: &ClusterMember, name: &str, present: bool) -> Result<(), RequestError> {
    let deadline = tokio::time::Instant::now() + APPLY_WAIT;
    while member.topics.get(name).is_some() != present {
        if tokio::time::Instant::now() >= deadline {
            return Err(RequestError::new(
                ErrorCode::Timeout,
                format!(
                    "topic `{name}` committed by the controller but not yet applied on this broker"
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Creates a topic through the controller, which places its replicas; answers once
/// this broker holds it too.
pub async fn create_topic(
    member: &ClusterMember,
    name: String,
    partitions: u32,
    replication_factor: u16,
    configs: std::collections::BTreeMap<String, String>,
) -> Result<Outgoing, RequestError> {
    let command = MetadataCommand::CreateTopic {
        name: name.clone(),
        partitions,
        replication_factor,
        configs,
    };
    match member
        .controller
        .propose(command)
        .await
        .map_err(propose_error)?
    {
        MetadataResponse::Rejected(err) => return Err(rejected(&err)),
        MetadataResponse::TopicCreated { .. } => {}
        other => {
            return Err(RequestError::new(
                ErrorCode::Unknown,
                format!("unexpected controller answer {other:?}"),
            ));
        }
    }
    applied(member, &name, true).await?;
    Ok(Outgoing::Frame(quiver_wire::message::Empty.encode_frame()))
}

/// Deletes a topic through the controller; answers once this broker dropped it.
pub async fn delete_topic(member: &ClusterMember, name: String) -> Result<Outgoing, RequestError> {
    let command = MetadataCommand::DeleteTopic { name: name.clone() };
    propose_accepted(member, command, propose_error).await?;
    applied(member, &name, false).await?;
    Ok(Outgoing::Frame(quiver_wire::message::Empty.encode_frame()))
}

/// Waits until `done` holds for this broker's copy of topic `name`.
async fn applied_when(
    member: &ClusterMember,
    name: &str,
    done: impl Fn(&crate::topic::Topic) -> bool,
) -> Result<(), RequestError> {
    let deadline = tokio::time::Instant::now() + APPLY_WAIT;
    while !member.topics.get(name).is_some_and(|t| done(&t)) {
        if tokio::time::Instant::now() >= deadline {
            return Err(RequestError::new(
                ErrorCode::Timeout,
                format!(
                    "the change to topic `{name}` is committed by the controller but not yet applied on this broker"
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Changes a topic's configs through the controller; every broker applies them to its
/// partitions' logs. Answers once this broker has.
pub async fn alter_topic_configs(
    member: &ClusterMember,
    name: String,
    set: std::collections::BTreeMap<String, String>,
    delete: Vec<String>,
) -> Result<Outgoing, RequestError> {
    let command = MetadataCommand::AlterTopicConfigs {
        name: name.clone(),
        set,
        delete,
    };
    let configs = match propose_accepted(member, command, propose_error).await? {
        MetadataResponse::TopicConfigsAltered { configs } => configs,
        other => return Err(unexpected(&other)),
    };
    applied_when(member, &name, |t| t.configs == configs).await?;
    Ok(Outgoing::Frame(quiver_wire::message::Empty.encode_frame()))
}

/// Grows a topic to `partitions` through the controller, which places the new
/// partitions' replicas; answers once this broker holds them.
pub async fn create_partitions(
    member: &ClusterMember,
    name: String,
    partitions: u32,
) -> Result<Outgoing, RequestError> {
    let command = MetadataCommand::CreatePartitions {
        name: name.clone(),
        partitions,
    };
    match propose_accepted(member, command, propose_error).await? {
        MetadataResponse::PartitionsCreated { .. } => {}
        other => return Err(unexpected(&other)),
    }
    applied_when(member, &name, |t| t.partitions.len() >= partitions as usize).await?;
    Ok(Outgoing::Frame(quiver_wire::message::Empty.encode_frame()))
}

/// Forgets a group's committed offsets through the controller, on the coordinator
/// (which checked that the group has no members).
pub async fn delete_group(member: &ClusterMember, group: &str) -> Result<u32, RequestError> {
    let command = MetadataCommand::DeleteGroup {
        group: group.to_owned(),
    };
    match member
        .controller
        .propose_here(command)
        .await
        .map_err(coordinator_error)?
    {
        MetadataResponse::GroupDeleted { offsets } => Ok(offsets),
        MetadataResponse::Rejected(err) => Err(rejected(&err)),
        other => Err(unexpected(&other)),
    }
}

/// In cluster mode, refuses a produce or fetch for a partition this broker does not
/// lead, naming the leader so the client can go there. Topics the controller does not
/// know (the broker's internal ones) are served locally.
pub fn require_leader(
    member: &ClusterMember,
    topic: &str,
    partition: u32,
) -> Result<(), RequestError> {
    if topic.starts_with(quiver_wire::topic::INTERNAL_TOPIC_PREFIX) {
        return Ok(());
    }
    let session_timeout_ms = member.settings.broker_session_timeout_ms;
    let metadata = member.controller.metadata();
    let Some(record) = metadata
        .topic(topic)
        .and_then(|t| t.partitions.get(partition as usize))
    else {
        return Ok(());
    };
    match record.leader {
        // Alone in its cluster a broker has nobody to hand its partitions to, and
        // nobody fences it.
        Some(leader)
            if leader == member.broker_id
                && member.is_registered()
                && metadata.brokers().len() > 1
                && !member.in_contact(session_timeout_ms) =>
        {
            Err(RequestError::new(
                ErrorCode::NotLeader,
                format!(
                    "{topic}/{partition}: this broker has not reached the controller quorum for over {session_timeout_ms} ms, so its leadership may have moved; ask another broker"
                ),
            ))
        }
        Some(leader)
            if leader == member.broker_id
                && member.is_registered()
                && !member.replicas.leads(topic, partition, record.leader_epoch) =>
        {
            Err(RequestError::new(
                ErrorCode::NotLeader,
                format!(
                    "{topic}/{partition}: this broker is taking over as its leader in epoch {}; retry",
                    record.leader_epoch
                ),
            ))
        }
        Some(leader) if leader == member.broker_id && member.is_registered() => Ok(()),
        Some(_) if record.leader == Some(member.broker_id) => Err(RequestError::new(
            ErrorCode::NotLeader,
            format!("{topic}/{partition}: this broker restarted and is registering again"),
        )),
        Some(leader) => {
            let address = metadata
                .broker(leader)
                .map(|b| b.address.clone())
                .unwrap_or_default();
            Err(RequestError::new(
                ErrorCode::NotLeader,
                format!("{topic}/{partition} is led by node {leader} at {address}"),
            ))
        }
        None => Err(RequestError::new(
            ErrorCode::NotLeader,
            format!("{topic}/{partition} has no leader: no in-sync replica is available"),
        )),
    }
}

/// Keeps this broker's topics in line with the controller's metadata: creates the
/// topics it does not hold yet and deletes those the controller deleted; then its
/// replicas (`crate::plugins::sync_loop` follows the plugin registry). The broker's
/// internal topics are its own and left alone.
pub async fn reconcile_loop(member: Arc<ClusterMember>) {
    let mut versions = member.controller.watch();
    let mut shutdown = member.shutdown.clone();
    loop {
        reconcile(&member).await;
        tokio::select! {
            changed = versions.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// One pass of [`reconcile_loop`]: topics, then replicas, as the controller's
/// metadata is now. A single node makes one before it accepts clients, so the first
/// request finds its partitions led.
pub async fn reconcile(member: &ClusterMember) {
    let metadata = member.controller.metadata();
    for (name, topic) in metadata.topics() {
        if name.starts_with(quiver_wire::topic::INTERNAL_TOPIC_PREFIX)
            || member.topics.get(name).is_some()
        {
            continue;
        }
        let created = crate::worker::blocking(|| {
            member.topics.create(
                name,
                u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX),
                topic.replication_factor,
                topic.configs.clone(),
                topic.replication_factor,
                member.clock.now_ms(),
            )
        });
        match created {
            Ok(_) => {
                tracing::info!(topic = %name, "topic created from the controller's metadata")
            }
            Err(err) => {
                tracing::error!(topic = %name, %err, "cannot create a topic the controller holds")
            }
        }
    }
    apply_topic_changes(member, &metadata).await;
    for local in member.topics.all() {
        if local
            .name
            .starts_with(quiver_wire::topic::INTERNAL_TOPIC_PREFIX)
            || metadata.topic(&local.name).is_some()
        {
            continue;
        }
        let name = local.name.to_string();
        drop(local);
        match crate::worker::blocking(|| member.topics.delete(&name)) {
            Ok(()) => {
                tracing::info!(topic = %name, "topic deleted after the controller's metadata")
            }
            Err(err) => {
                tracing::error!(topic = %name, %err, "cannot delete a topic the controller dropped")
            }
        }
    }
    crate::replication::reconcile(&member.replicas, member.is_registered()).await;
}

/// Brings the topics this broker holds in line with the controller's changes to
/// existing topics: partitions added (opened here; [`crate::replication::reconcile`]
/// then leads or follows them) and configs altered (applied to every partition's log
/// and to the replicas' in-sync minimum).
async fn apply_topic_changes(member: &ClusterMember, metadata: &quiver_cluster::MetadataState) {
    for (name, topic) in metadata.topics() {
        if name.starts_with(quiver_wire::topic::INTERNAL_TOPIC_PREFIX) {
            continue;
        }
        let Some(local) = member.topics.get(name) else {
            continue;
        };
        if local.partitions.len() < topic.partitions.len() {
            let partitions = u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX);
            match crate::worker::blocking(|| {
                member
                    .topics
                    .add_partitions(name, partitions, member.clock.now_ms())
            }) {
                Ok(_) => {
                    tracing::info!(topic = %name, partitions, "partitions added from the controller's metadata")
                }
                Err(err) => {
                    tracing::error!(topic = %name, %err, "cannot add partitions the controller holds")
                }
            }
        }
        if local.configs != topic.configs {
            match crate::worker::blocking(|| {
                member.topics.alter_configs(name, topic.configs.clone())
            }) {
                Ok(()) => {
                    crate::replication::apply_topic_configs(&member.replicas, name, &topic.configs)
                        .await;
                    tracing::info!(topic = %name, "topic configs applied from the controller's metadata")
                }
                Err(err) => {
                    tracing::error!(topic = %name, %err, "cannot apply topic configs the controller holds")
                }
            }
        }
    }
}

/// Consumer groups are coordinated by the controller leader (on a single node, the
/// node itself): group membership lives in one place, committed offsets are proposed
/// to the controller there and read back linearizably. Returns the member when this
/// broker's controller leads, and `NOT_COORDINATOR` naming the leader otherwise.
pub fn group_coordinator(member: &ClusterMember) -> Result<&ClusterMember, RequestError> {
    if member.controller.is_leader() {
        // Leading in a new term: the members this broker knew from an earlier
        // leadership may have moved to another coordinator meanwhile; they join again.
        let term = member.controller.term();
        if member.coordinator_term.swap(term, Ordering::AcqRel) != term {
            *member
                .groups
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                crate::group::GroupCoordinator::default();
        }
        return Ok(member);
    }
    let message = match member.controller.leader() {
        Some((id, addr)) => {
            format!("consumer groups are coordinated by the controller leader, node {id} at {addr}")
        }
        None => "consumer groups are coordinated by the controller leader, and none is elected yet"
            .to_owned(),
    };
    Err(RequestError::new(ErrorCode::NotCoordinator, message))
}

/// Stores a group's committed offsets through the controller, answered once committed
/// by a quorum and applied. A commit larger than one controller entry takes
/// ([`OFFSETS_PER_COMMIT_MAX`](quiver_cluster::metadata::limits::OFFSETS_PER_COMMIT_MAX))
/// goes in several; each is all or none, and on an error the earlier ones stay
/// committed (a retry commits the same offsets again).
pub async fn commit_offsets(
    member: &ClusterMember,
    group: &str,
    offsets: &[quiver_wire::group::CommittedOffset],
) -> Result<(), RequestError> {
    use quiver_cluster::metadata::limits::OFFSETS_PER_COMMIT_MAX;
    for chunk in offsets.chunks(OFFSETS_PER_COMMIT_MAX) {
        let command = MetadataCommand::CommitOffsets {
            now_ms: member.clock.now_ms_u64(),
            group: group.to_owned(),
            offsets: chunk
                .iter()
                .map(|o| quiver_cluster::metadata::OffsetCommit {
                    topic: o.topic.clone(),
                    partition: o.partition,
                    offset: o.offset,
                    metadata: o.metadata.clone(),
                })
                .collect(),
        };
        // Here only: the member was checked while this controller led; forwarded
        // to a new leader, the commit would skip that check (a zombie's commit).
        if let MetadataResponse::Rejected(err) = member
            .controller
            .propose_here(command)
            .await
            .map_err(coordinator_error)?
        {
            return Err(rejected(&err));
        }
    }
    Ok(())
}

/// The controller's metadata as of now, for reads of committed offsets that must see
/// every earlier commit.
pub async fn current_metadata(
    member: &ClusterMember,
) -> Result<Arc<quiver_cluster::MetadataState>, RequestError> {
    member
        .controller
        .linearizable_metadata()
        .await
        .map_err(coordinator_error)
}

/// A controller that stopped leading mid-request is no longer the coordinator.
fn coordinator_error(err: quiver_cluster::ProposeError) -> RequestError {
    match err {
        quiver_cluster::ProposeError::NotLeader { .. } => RequestError::new(
            ErrorCode::NotCoordinator,
            format!("this broker stopped coordinating groups: {err}"),
        ),
        other => propose_error(other),
    }
}

/// Commits a plugin registry change (upload, attach, detach) through the controller.
pub async fn propose_plugin_change(
    member: &ClusterMember,
    command: MetadataCommand,
) -> Result<(), RequestError> {
    propose_accepted(member, command, propose_error)
        .await
        .map(drop)
}

/// Proposes `command` and returns the controller's answer, a refusal as the matching
/// wire error and a failure to commit as `on_failure` maps it.
async fn propose_accepted(
    member: &ClusterMember,
    command: MetadataCommand,
    on_failure: fn(quiver_cluster::ProposeError) -> RequestError,
) -> Result<MetadataResponse, RequestError> {
    match member
        .controller
        .propose(command)
        .await
        .map_err(on_failure)?
    {
        MetadataResponse::Rejected(err) => Err(rejected(&err)),
        answer => Ok(answer),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Lease, new_incarnation};
    use crate::clock::ManualClock;

    /// The lease a broker holds its leaderships by is timed on its monotonic clock:
    /// a wall clock set back an hour (or forward) changes nothing, a session of
    /// monotonic time without an accepted heartbeat ends it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_leadership_lease_runs_on_monotonic_time_whatever_the_wall_clock_does() {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let state = crate::testing::in_process_broker(dir.path(), clock.clone(), |_| {}).await;
        let member = &state.cluster;
        assert!(
            member.in_contact(6_000),
            "registered: a heartbeat was accepted"
        );
        clock.set_wall_ms(1_800_000_000_000 - 3_600_000);
        assert!(member.in_contact(6_000), "the wall clock went back an hour");
        clock.set_wall_ms(1_800_000_000_000 + 3_600_000);
        assert!(
            member.in_contact(6_000),
            "the wall clock went forward an hour"
        );
        clock.advance_ms(6_000);
        assert!(member.in_contact(6_000), "exactly a session");
        clock.advance_ms(1);
        assert!(!member.in_contact(6_000), "a session and a millisecond");
        member
            .controller
            .shutdown()
            .await
            .expect("controller stops");
    }

    /// A broker's lease runs out a session after the sending of the newest accepted
    /// heartbeat, and an older one accepted late never shortens it.
    #[test]
    fn a_lease_runs_out_a_session_after_the_newest_committed_heartbeat() {
        let lease = Lease::default();
        assert!(!lease.holds(100_000, 6_000), "no heartbeat committed yet");
        lease.renew(100_000);
        assert!(lease.holds(106_000, 6_000));
        assert!(!lease.holds(106_001, 6_000));
        lease.renew(99_000);
        assert!(
            lease.holds(106_000, 6_000),
            "an older stamp changes nothing"
        );
        lease.renew(107_000);
        assert!(lease.holds(113_000, 6_000));
    }

    /// Two processes of one broker must never register under the same incarnation:
    /// the controller would take the second's registration for a retry of the
    /// first's, fence nothing and elect nothing. (`ms ^ pid` repeats within a
    /// millisecond here, the degenerate case of two starts that drew the same.)
    #[test]
    fn incarnations_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let incarnation = new_incarnation().expect("random bytes");
            assert!(seen.insert(incarnation), "{incarnation} drawn twice");
        }
    }
}
