//! The controller facade the broker uses: start, propose, read, watch, stop.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::liveness::Liveness;
use crate::metadata::limits::COMMAND_BYTES_MAX;
use crate::metadata::{BrokerId, CommandError, MetadataCommand, MetadataResponse, MetadataState};
use crate::network::{
    DynTransport, NetworkFactory, RaftRpc, RaftRpcReply, RaftTransport, RpcHandler,
    SNAPSHOT_CHUNK_BYTES, TransportError,
};
use crate::storage::{AppliedView, DirLock, LogStore, StateMachineStore};
use crate::type_config::{ControllerNode, ControllerRaft, NodeId};

/// How a controller runs. [`ControllerConfig::new`] gives production defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    pub node_id: NodeId,
    /// The controller's own directory (the broker passes `DATA_DIR/controller`).
    pub data_dir: PathBuf,
    /// The founding controllers, `(id, "host:port")`, this one included; empty for a
    /// single node. Like Kafka's `controller.quorum.voters`.
    pub seeds: Vec<(NodeId, String)>,
    /// This controller's address as the others reach it; defaults to its seed entry.
    pub advertised_addr: Option<String>,
    /// How often the leader heartbeats its followers.
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for a random time in this range stands for
    /// election.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// A snapshot is built once this many entries were applied since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot, so a follower that lags a little
    /// catches up from the log instead of a whole snapshot.
    pub entries_kept_after_snapshot: u64,
    /// How long a proposal may wait to be committed before the caller hears
    /// [`ProposeError::Timeout`].
    pub propose_timeout: Duration,
}

impl ControllerConfig {
    pub fn new(
        node_id: NodeId,
        data_dir: impl Into<PathBuf>,
        seeds: Vec<(NodeId, String)>,
    ) -> Self {
        Self {
            node_id,
            data_dir: data_dir.into(),
            seeds,
            advertised_addr: None,
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1_000),
            election_timeout_max: Duration::from_millis(2_000),
            snapshot_after_entries: 4_096,
            entries_kept_after_snapshot: 512,
            propose_timeout: Duration::from_secs(10),
        }
    }

    fn raft_config(&self) -> Result<Config, StartError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Config {
            cluster_name: "quiver-controller".to_owned(),
            heartbeat_interval: ms(self.heartbeat_interval),
            election_timeout_min: ms(self.election_timeout_min),
            election_timeout_max: ms(self.election_timeout_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_after_entries),
            max_in_snapshot_log_to_keep: self.entries_kept_after_snapshot,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES as u64,
            ..Config::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))
    }

    /// This controller's address: the advertised one, else its seed entry, else
    /// nothing (a single node that nobody else has to reach).
    fn own_addr(&self) -> String {
        self.advertised_addr
            .clone()
            .or_else(|| {
                self.seeds
                    .iter()
                    .find(|(id, _)| *id == self.node_id)
                    .map(|(_, addr)| addr.clone())
            })
            .unwrap_or_default()
    }

    /// The membership this node founds the cluster with, if it is the founder: the
    /// lowest id among the seeds, or a node with no seeds but itself.
    fn founding_members(&self) -> Result<Option<BTreeMap<NodeId, ControllerNode>>, StartError> {
        let mut members = BTreeMap::new();
        for (id, addr) in &self.seeds {
            if addr.is_empty() {
                return Err(StartError::Config(format!("seed {id} has no address")));
            }
            if members
                .insert(*id, ControllerNode::new(addr.clone()))
                .is_some()
            {
                return Err(StartError::Config(format!("seed {id} appears twice")));
            }
        }
        if members.is_empty() {
            members.insert(self.node_id, ControllerNode::new(self.own_addr()));
            return Ok(Some(members));
        }
        if !members.contains_key(&self.node_id) {
            // Not a founder: it waits for a member to add it.
            return Ok(None);
        }
        let lowest = members.keys().next().copied();
        Ok((lowest == Some(self.node_id)).then_some(members))
    }
}

/// Why a controller did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("controller configuration is invalid: {0}")]
    Config(String),
    #[error("controller storage in {dir}: {source}")]
    Storage { dir: PathBuf, source: io::Error },
    #[error("controller Raft failed to start: {0}")]
    Raft(String),
}

/// Why a proposal did not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ProposeError {
    /// This controller is not the leader and could not forward the command: retry
    /// with the leader, when one is known. Nothing was applied.
    #[error("this controller is not the leader (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    /// The command was committed and refused by the state machine; nothing changed.
    #[error("metadata command refused: {0}")]
    Rejected(CommandError),
    /// The command is larger than a log entry may be.
    #[error("metadata command is {bytes} bytes, more than {COMMAND_BYTES_MAX}")]
    TooLarge { bytes: usize },
    /// No answer in time: the command may or may not be applied.
    #[error("no answer from the controller in time; the command may have applied")]
    Timeout,
    /// The controller is shutting down or failed; the command may have applied if
    /// it was forwarded.
    #[error("controller unavailable: {0}")]
    Unavailable(String),
}

impl ProposeError {
    /// A stable name for the wire and for logs.
    pub const fn name(&self) -> &'static str {
        match self {
            ProposeError::NotLeader { .. } => "NOT_CONTROLLER",
            ProposeError::Rejected(e) => e.name(),
            ProposeError::TooLarge { .. } => "COMMAND_TOO_LARGE",
            ProposeError::Timeout => "CONTROLLER_TIMEOUT",
            ProposeError::Unavailable(_) => "CONTROLLER_UNAVAILABLE",
        }
    }

    /// Whether trying again (after finding the leader) can help.
    pub const fn retriable(&self) -> bool {
        match self {
            ProposeError::NotLeader { .. }
            | ProposeError::Timeout
            | ProposeError::Unavailable(_) => true,
            ProposeError::Rejected(e) => e.retriable(),
            ProposeError::TooLarge { .. } => false,
        }
    }
}

/// Why a controller could not be added to the voters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MembershipError {
    #[error("this controller is not the leader (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    #[error("controller address is empty")]
    NoAddress,
    #[error("membership change failed: {0}")]
    Failed(String),
    #[error("membership change did not finish in time")]
    Timeout,
    #[error("no seed added this controller: {0}")]
    NoSeed(String),
}

/// Why a shutdown did not finish cleanly.
#[derive(Debug, thiserror::Error)]
#[error("controller shutdown: {0}")]
pub struct ShutdownError(String);

/// What `quiver cluster status` shows about the controller quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerStatus {
    pub node_id: NodeId,
    pub leader: Option<(NodeId, String)>,
    pub term: u64,
    /// The applied version: last applied index plus one.
    pub applied_version: u64,
    pub voters: Vec<(NodeId, String)>,
    pub learners: Vec<(NodeId, String)>,
}

/// One controller of the cluster metadata quorum. Cheap to clone; all clones share
/// the controller, and [`Controller::shutdown`] stops it for all of them.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    raft: ControllerRaft,
    view: Arc<AppliedView>,
    transport: Arc<dyn DynTransport>,
    propose_timeout: Duration,
    dir: PathBuf,
    lock: Mutex<Option<Arc<DirLock>>>,
    /// Whom this controller, while it leads, has heard from.
    liveness: Arc<Mutex<Liveness>>,
}

/// How long a shutdown waits for storage tasks (a snapshot being written) to let go
/// of the directory.
const RELEASE_WAIT: Duration = Duration::from_secs(30);

impl Controller {
    /// Starts controller `node_id` on `data_dir` with production settings.
    ///
    /// On its first start, the node with the lowest id among `seeds` founds the
    /// cluster with all of them; with no seeds (or only itself) a node founds a
    /// single-node cluster. Other seeds wait to hear from the founder, and a node
    /// missing from `seeds` waits for a member to call [`Controller::add_voter`].
    /// Starting again on the same directory resumes from the log and snapshot.
    pub async fn start<T: RaftTransport>(
        node_id: NodeId,
        data_dir: impl AsRef<Path>,
        seeds: Vec<(NodeId, String)>,
        transport: T,
    ) -> Result<Controller, StartError> {
        Self::start_with(
            ControllerConfig::new(node_id, data_dir.as_ref(), seeds),
            transport,
        )
        .await
    }

    /// Starts a controller with explicit settings.
    pub async fn start_with<T: RaftTransport>(
        config: ControllerConfig,
        transport: T,
    ) -> Result<Controller, StartError> {
        let raft_config = Arc::new(config.raft_config()?);
        let founders = config.founding_members()?;
        let dir = config.data_dir.clone();
        let storage_error = |source| StartError::Storage {
            dir: config.data_dir.clone(),
            source,
        };
        let (lock, log, recovery, sm) = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || -> io::Result<_> {
                let lock = Arc::new(DirLock::acquire(&dir)?);
                let (log, recovery) = LogStore::open(&dir, lock.clone())?;
                let sm = StateMachineStore::open(&dir, lock.clone())?;
                Ok((lock, log, recovery, sm))
            }
        })
        .await
        .map_err(|e| StartError::Raft(format!("storage open task failed: {e}")))?
        .map_err(storage_error)?;
        if recovery.torn_bytes_cut > 0 {
            tracing::warn!(
                bytes = recovery.torn_bytes_cut,
                "controller log: cut a torn tail"
            );
        }
        let view = sm.view();
        let transport: Arc<dyn DynTransport> = Arc::new(transport);
        let network = NetworkFactory {
            from: config.node_id,
            transport: transport.clone(),
        };
        let raft = ControllerRaft::new(config.node_id, raft_config, network, log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized && let Some(members) = founders {
            tracing::info!(
                node = config.node_id,
                members = ?members.keys().collect::<Vec<_>>(),
                "founding the controller quorum"
            );
            match raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(StartError::Raft(e.to_string())),
            }
        }
        tracing::info!(
            node = config.node_id,
            version = view.version(),
            "controller started"
        );
        Ok(Controller {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                raft,
                view,
                transport,
                propose_timeout: config.propose_timeout,
                dir,
                lock: Mutex::new(Some(lock)),
                liveness: Arc::new(Mutex::new(Liveness::new())),
            }),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// Proposes a metadata change and waits until it is applied. A follower forwards
    /// the command to the leader once; when that is not possible the error names the
    /// leader, if one is known.
    ///
    /// A retry after [`ProposeError::Timeout`] may apply a command twice; commands are
    /// built so that a repeat is refused or harmless (a topic exists already, the
    /// same registration answers the same epoch, an offset is stored again).
    pub async fn propose(
        &self,
        command: MetadataCommand,
    ) -> Result<MetadataResponse, ProposeError> {
        check_size(&command)?;
        match propose_local(
            &self.inner.raft,
            command.clone(),
            self.inner.propose_timeout,
        )
        .await
        {
            Err(ProposeError::NotLeader {
                leader_id: Some(leader),
                leader_addr: Some(addr),
            }) if leader != self.inner.node_id => self.forward(leader, addr, command).await,
            answer => answer,
        }
    }

    /// Proposes on this controller only, never forwarding: for a caller whose right
    /// to propose comes from leading (the group coordinator), so that a command
    /// checked while leading is not applied by a leader that did not check it.
    pub async fn propose_here(
        &self,
        command: MetadataCommand,
    ) -> Result<MetadataResponse, ProposeError> {
        check_size(&command)?;
        propose_local(&self.inner.raft, command, self.inner.propose_timeout).await
    }

    /// Broker `broker_id`, registered as `broker_epoch`, is alive. Sent to the
    /// leader (forwarded once, as [`Controller::propose`] does), which confirms with
    /// a quorum that it still leads and answers from memory; it writes a
    /// `BrokerHeartbeat` to the log only when that changes the metadata: the first
    /// heartbeat of a registration, or one from a fenced broker, which unfences it.
    /// A heartbeat of another registration than the current one is refused
    /// (`STALE_BROKER_EPOCH`): the broker must register again.
    ///
    /// The whole exchange takes at most `timeout`, which should be well under the
    /// session: a heartbeat stuck on a leader that is gone (its address still the
    /// one this node knows) must give up in time for the next to find the new one.
    pub async fn heartbeat(
        &self,
        broker_id: BrokerId,
        broker_epoch: u64,
        timeout: Duration,
    ) -> Result<MetadataResponse, ProposeError> {
        let inner = &self.inner;
        let answer = heartbeat_local(
            &inner.raft,
            &inner.view,
            &inner.liveness,
            broker_id,
            broker_epoch,
            timeout,
        )
        .await;
        match answer {
            Err(ProposeError::NotLeader {
                leader_id: Some(leader),
                leader_addr: Some(addr),
            }) if leader != inner.node_id => {
                let rpc = RaftRpc::Heartbeat {
                    broker_id,
                    broker_epoch,
                };
                match self.send_to_leader(leader, addr, rpc, timeout).await? {
                    RaftRpcReply::Heartbeat(answer) => answer,
                    _ => Err(ProposeError::Unavailable(
                        "the leader answered another RPC".to_owned(),
                    )),
                }
            }
            answer => answer,
        }
    }

    /// While this controller leads: the unfenced brokers it has not heard from for
    /// longer than `session_timeout`, timed on its own monotonic clock. A controller
    /// that has just become leader names no one for one session. Empty on a follower.
    pub fn brokers_to_fence(&self, session_timeout: Duration) -> Vec<BrokerId> {
        if !self.is_leader() {
            return Vec::new();
        }
        let term = self.term();
        let metadata = self.metadata();
        lock_liveness(&self.inner.liveness).silent(term, &metadata, Instant::now(), session_timeout)
    }

    async fn send_to_leader(
        &self,
        leader: NodeId,
        addr: String,
        rpc: RaftRpc,
        timeout: Duration,
    ) -> Result<RaftRpcReply, ProposeError> {
        let sent = self.inner.transport.send_boxed(leader, &addr, rpc);
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => Err(ProposeError::Timeout),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(TransportError::Unreachable { .. })) => Err(ProposeError::NotLeader {
                leader_id: Some(leader),
                leader_addr: Some(addr),
            }),
            Ok(Err(e)) => Err(ProposeError::Unavailable(e.to_string())),
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        addr: String,
        command: MetadataCommand,
    ) -> Result<MetadataResponse, ProposeError> {
        match self
            .send_to_leader(
                leader,
                addr,
                RaftRpc::Propose(command),
                self.inner.propose_timeout,
            )
            .await?
        {
            RaftRpcReply::Propose(answer) => answer,
            _ => Err(ProposeError::Unavailable(
                "the leader answered another RPC".to_owned(),
            )),
        }
    }

    /// The metadata this controller has applied. It may lag the leader by the
    /// entries in flight; use [`Controller::watch`] to wait for a version.
    pub fn metadata(&self) -> Arc<MetadataState> {
        self.inner.view.state()
    }

    /// The metadata as of now, linearizably: confirms with a quorum that this
    /// controller still leads and waits until it applied everything committed before
    /// the call. For reads that must see every earlier write (committed offsets), on
    /// the leader only.
    pub async fn linearizable_metadata(&self) -> Result<Arc<MetadataState>, ProposeError> {
        let confirmed = tokio::time::timeout(
            self.inner.propose_timeout,
            self.inner.raft.ensure_linearizable(),
        )
        .await
        .map_err(|_| ProposeError::Timeout)?;
        match confirmed {
            Ok(_) => Ok(self.metadata()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader_id: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.addr),
                })
            }
            Err(e) => Err(ProposeError::Unavailable(e.to_string())),
        }
    }

    /// The applied version: the index of the last applied log entry plus one.
    pub fn version(&self) -> u64 {
        self.inner.view.version()
    }

    /// Changes whenever the applied version moves.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.inner.view.subscribe()
    }

    /// Whether this controller is the leader, as far as it knows.
    pub fn is_leader(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == ServerState::Leader && metrics.current_leader == Some(self.inner.node_id)
    }

    /// The Raft term this controller is in.
    pub fn term(&self) -> u64 {
        self.inner.raft.metrics().borrow().current_term
    }

    /// The current leader's id and address, as far as this controller knows.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        Some((leader, addr))
    }

    /// The quorum as this controller sees it.
    pub fn status(&self) -> ControllerStatus {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut voters = Vec::new();
        let mut learners = Vec::new();
        for (id, node) in membership.nodes() {
            let entry = (*id, node.addr.clone());
            if voter_ids.contains(id) {
                voters.push(entry);
            } else {
                learners.push(entry);
            }
        }
        let leader = metrics.current_leader.map(|id| {
            let addr = membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            (id, addr)
        });
        ControllerStatus {
            node_id: self.inner.node_id,
            leader,
            term: metrics.current_term,
            applied_version: self.inner.view.version(),
            voters,
            learners,
        }
    }

    /// What the transport hands incoming RPCs to.
    pub fn rpc_handler(&self) -> RpcHandler {
        RpcHandler::new(
            self.inner.raft.clone(),
            self.inner.view.clone(),
            self.inner.liveness.clone(),
            self.inner.propose_timeout,
        )
    }

    /// Adds a controller to the voters (on the leader): it first catches up as a
    /// learner, then joins the quorum. Adding a voter again changes nothing.
    pub async fn add_voter(&self, node_id: NodeId, addr: String) -> Result<(), MembershipError> {
        add_voter_local(&self.inner.raft, node_id, addr, self.inner.propose_timeout).await
    }

    /// On the leader: points the quorum at the addresses brokers registered last. A
    /// node restarted on another address registers that address (its registration
    /// reaches the leader through a forwarded proposal), but the membership still
    /// names the old one, where the leader's Raft RPCs would go unanswered. Returns the
    /// nodes whose address changed; nothing when this controller does not lead.
    pub async fn follow_moved_members(&self) -> Result<Vec<NodeId>, MembershipError> {
        if !self.is_leader() {
            return Ok(Vec::new());
        }
        let metadata = self.metadata();
        let moved: BTreeMap<NodeId, ControllerNode> = {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow();
            metrics
                .membership_config
                .membership()
                .nodes()
                .filter_map(|(id, node)| {
                    let broker = metadata.broker(u32::try_from(*id).ok()?)?;
                    // Only a live registration: a fenced record may hold the address of
                    // a process that is gone (a node since re-joined elsewhere).
                    (!broker.fenced && !broker.address.is_empty() && broker.address != node.addr)
                        .then(|| (*id, ControllerNode::new(broker.address.clone())))
                })
                .collect()
        };
        if moved.is_empty() {
            return Ok(Vec::new());
        }
        let ids = moved.keys().copied().collect();
        // SetNodes replaces a node's address in place: the same controller, with the
        // same log and vote, reached elsewhere (openraft's "update node").
        tokio::time::timeout(
            self.inner.propose_timeout,
            self.inner
                .raft
                .change_membership(ChangeMembers::SetNodes(moved), false),
        )
        .await
        .map_err(|_| MembershipError::Timeout)?
        .map_err(membership_error)?;
        Ok(ids)
    }

    /// Whether this controller is a voter of the quorum it knows.
    pub fn is_voter(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == self.inner.node_id)
    }

    /// Asks a running cluster to add this controller, reachable at `addr`, to its
    /// voters: tries each seed in turn, and follows a seed that names the leader.
    /// For a node that was not among the founding seeds; a retry after it joined
    /// changes nothing.
    pub async fn join(
        &self,
        seeds: &[(NodeId, String)],
        addr: &str,
    ) -> Result<(), MembershipError> {
        if addr.is_empty() {
            return Err(MembershipError::NoAddress);
        }
        let mut targets: Vec<(NodeId, String)> = seeds.iter().rev().cloned().collect();
        let mut failures = Vec::new();
        let mut hops = 0;
        while let Some((target, target_addr)) = targets.pop() {
            let rpc = RaftRpc::AddVoter {
                node_id: self.inner.node_id,
                addr: addr.to_owned(),
            };
            let sent = self.inner.transport.send_boxed(target, &target_addr, rpc);
            // Catching up may take a snapshot: the leader bounds its own wait.
            match tokio::time::timeout(self.inner.propose_timeout * 7, sent).await {
                Ok(Ok(RaftRpcReply::AddVoter(Ok(())))) => return Ok(()),
                Ok(Ok(RaftRpcReply::AddVoter(Err(MembershipError::NotLeader {
                    leader_id: Some(leader),
                    leader_addr: Some(leader_addr),
                }))))
                    if hops <= seeds.len() =>
                {
                    hops += 1;
                    targets.push((leader, leader_addr));
                }
                Ok(Ok(RaftRpcReply::AddVoter(Err(e)))) => {
                    failures.push(format!("{target}: {e}"));
                }
                Ok(Ok(_)) => failures.push(format!("{target}: answered another RPC")),
                Ok(Err(e)) => failures.push(format!("{target}: {e}")),
                Err(_) => failures.push(format!("{target}: no answer in time")),
            }
        }
        Err(MembershipError::NoSeed(failures.join("; ")))
    }

    /// Stops the controller and waits until its directory is released, so that a
    /// controller can start on it again in this process. Idempotent.
    pub async fn shutdown(&self) -> Result<(), ShutdownError> {
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| ShutdownError(e.to_string()))?;
        let held = self
            .inner
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some(held) = held else {
            return Ok(());
        };
        let released: Weak<DirLock> = Arc::downgrade(&held);
        drop(held);
        // openraft stops its state machine worker and snapshot tasks shortly after
        // the core; they hold the directory until then.
        let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
        while released.strong_count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return Err(ShutdownError(format!(
                    "storage tasks still hold {}",
                    self.inner.dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(node = self.inner.node_id, "controller stopped");
        Ok(())
    }
}

fn membership_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, ControllerNode>>,
) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MembershipError::NotLeader {
            leader_id: f.leader_id,
            leader_addr: f.leader_node.map(|n| n.addr),
        },
        other => MembershipError::Failed(other.to_string()),
    }
}

/// Refuses a command larger than a log entry may be.
fn check_size(command: &MetadataCommand) -> Result<(), ProposeError> {
    let bytes = serde_json::to_vec(command)
        .map_err(|e| ProposeError::Unavailable(format!("command does not serialise: {e}")))?
        .len();
    if bytes > COMMAND_BYTES_MAX {
        return Err(ProposeError::TooLarge { bytes });
    }
    Ok(())
}

/// Adds a voter on this node, when it leads: first as a learner that catches up,
/// then as a voter.
pub(crate) async fn add_voter_local(
    raft: &ControllerRaft,
    node_id: NodeId,
    addr: String,
    timeout: Duration,
) -> Result<(), MembershipError> {
    if addr.is_empty() {
        return Err(MembershipError::NoAddress);
    }
    let work = async {
        raft.add_learner(node_id, ControllerNode::new(addr), true)
            .await
            .map_err(membership_error)?;
        let mut voters = BTreeSet::new();
        voters.insert(node_id);
        raft.change_membership(ChangeMembers::AddVoterIds(voters), false)
            .await
            .map_err(membership_error)?;
        Ok(())
    };
    // Catching up may take a snapshot transfer: give it several proposal times.
    tokio::time::timeout(timeout * 6, work)
        .await
        .map_err(|_| MembershipError::Timeout)?
}

/// The failure detector, even if a thread panicked holding it: its sessions are
/// plain instants, never left half-written.
fn lock_liveness(liveness: &Mutex<Liveness>) -> std::sync::MutexGuard<'_, Liveness> {
    liveness
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A broker's heartbeat, on this node only: answered if this node leads (confirmed
/// with a quorum, so that a deposed leader cannot keep a broker's lease alive), or
/// where the leader is.
pub(crate) async fn heartbeat_local(
    raft: &ControllerRaft,
    view: &AppliedView,
    liveness: &Mutex<Liveness>,
    broker_id: BrokerId,
    broker_epoch: u64,
    timeout: Duration,
) -> Result<MetadataResponse, ProposeError> {
    match tokio::time::timeout(timeout, raft.ensure_linearizable()).await {
        Err(_) => return Err(ProposeError::Timeout),
        Ok(Ok(_)) => {}
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
            return Err(ProposeError::NotLeader {
                leader_id: f.leader_id,
                leader_addr: f.leader_node.map(|n| n.addr),
            });
        }
        Ok(Err(e)) => return Err(ProposeError::Unavailable(e.to_string())),
    }
    let term = raft.metrics().borrow().current_term;
    let metadata = view.state();
    let record =
        metadata
            .broker(broker_id)
            .ok_or(ProposeError::Rejected(CommandError::UnknownBroker(
                broker_id,
            )))?;
    if record.epoch != broker_epoch {
        return Err(ProposeError::Rejected(CommandError::StaleBrokerEpoch {
            broker: broker_id,
            current: record.epoch,
            given: broker_epoch,
        }));
    }
    let answer = if record.fenced || !record.heartbeated {
        // A change to the metadata: through the log. The time is the proposer's and
        // only informational; fencing is timed by `liveness`, never by it.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let command = MetadataCommand::BrokerHeartbeat {
            broker_id,
            broker_epoch,
            now_ms,
        };
        propose_local(raft, command, timeout).await?
    } else {
        MetadataResponse::HeartbeatAccepted {
            unfenced: false,
            leaders_elected: 0,
        }
    };
    lock_liveness(liveness).heard(term, broker_id, broker_epoch, Instant::now());
    Ok(answer)
}

/// Proposes on this node only: the answer, or where the leader is.
pub(crate) async fn propose_local(
    raft: &ControllerRaft,
    command: MetadataCommand,
    timeout: Duration,
) -> Result<MetadataResponse, ProposeError> {
    let kind = command.kind();
    match tokio::time::timeout(timeout, raft.client_write(command)).await {
        Err(_) => Err(ProposeError::Timeout),
        Ok(Ok(written)) => match written.data {
            MetadataResponse::Rejected(refusal) => Err(ProposeError::Rejected(refusal)),
            answer => {
                tracing::debug!(
                    command = kind,
                    index = written.log_id.index,
                    "metadata command applied"
                );
                Ok(answer)
            }
        },
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(ProposeError::NotLeader {
                leader_id: f.leader_id,
                leader_addr: f.leader_node.map(|n| n.addr),
            })
        }
        Ok(Err(e)) => Err(ProposeError::Unavailable(e.to_string())),
    }
}
