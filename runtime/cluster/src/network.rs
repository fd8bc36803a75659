//! Raft messages between controllers, over a transport the broker provides.
//!
//! The controller does no networking itself. A [`RaftTransport`] carries one
//! [`RaftRpc`] to a peer and brings back its [`RaftRpcReply`]; the broker implements
//! it over its QUIC connections (one bidirectional stream per RPC, the bytes from
//! [`RaftRpc::encode`]), and on the receiving side hands the decoded RPC to
//! [`RpcHandler::handle`]. [`crate::MemoryNetwork`] is the in-process transport the
//! tests use.
//!
//! Besides openraft's three RPCs (append entries, vote, install a snapshot chunk)
//! there are three of Quiver's own: `Propose`, which a follower uses to forward a
//! metadata command to the leader; `AddVoter`, which a node that was not a founding
//! seed sends to join the quorum; and `Heartbeat`, a broker's heartbeat forwarded to
//! the leader's failure detector.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::RPCTypes;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::controller::{
    MembershipError, ProposeError, add_voter_local, heartbeat_local, propose_local,
};
use crate::liveness::Liveness;
use crate::metadata::{BrokerId, MetadataCommand, MetadataResponse};
use crate::storage::{AppliedView, ENTRY_BYTES_MAX};
use crate::type_config::{ControllerNode, ControllerRaft, NodeId, TypeConfig};

/// The largest encoded RPC or reply. An append that would be larger is split by
/// openraft (it retries with fewer entries); one entry always fits.
pub const RPC_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Snapshot bytes per install-snapshot RPC. JSON writes bytes as numbers, up to four
/// characters each, so a chunk's RPC stays under [`RPC_BYTES_MAX`].
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

const _: () = assert!(ENTRY_BYTES_MAX + 64 * 1024 < RPC_BYTES_MAX);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES * 4 + 64 * 1024 < RPC_BYTES_MAX);

/// A request from one controller to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RaftRpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A metadata command a follower forwards to the leader.
    Propose(MetadataCommand),
    /// A node that was not a founding seed asks the leader to add it to the voters.
    AddVoter {
        node_id: NodeId,
        addr: String,
    },
    /// A broker's heartbeat, forwarded to the leader's failure detector. Answered
    /// from memory unless it changes the metadata (see [`crate::liveness`]).
    Heartbeat {
        broker_id: BrokerId,
        broker_epoch: u64,
    },
}

/// The answer to a [`RaftRpc`], of the same variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpcReply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Propose(Result<MetadataResponse, ProposeError>),
    AddVoter(Result<(), MembershipError>),
    Heartbeat(Result<MetadataResponse, ProposeError>),
}

/// Why bytes are not an RPC, or an RPC cannot become bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcCodecError {
    #[error("RPC is {bytes} bytes, more than {RPC_BYTES_MAX}")]
    TooLarge { bytes: usize },
    #[error("RPC is not valid JSON for its type: {0}")]
    Malformed(String),
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RpcCodecError> {
    let bytes = serde_json::to_vec(value).map_err(|e| RpcCodecError::Malformed(e.to_string()))?;
    if bytes.len() > RPC_BYTES_MAX {
        return Err(RpcCodecError::TooLarge { bytes: bytes.len() });
    }
    Ok(bytes)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, RpcCodecError> {
    if bytes.len() > RPC_BYTES_MAX {
        return Err(RpcCodecError::TooLarge { bytes: bytes.len() });
    }
    serde_json::from_slice(bytes).map_err(|e| RpcCodecError::Malformed(e.to_string()))
}

impl RaftRpc {
    /// The RPC as JSON, at most [`RPC_BYTES_MAX`] bytes.
    pub fn encode(&self) -> Result<Vec<u8>, RpcCodecError> {
        encode(self)
    }

    /// Reads an RPC, refusing more than [`RPC_BYTES_MAX`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, RpcCodecError> {
        decode(bytes)
    }

    fn action(&self) -> RPCTypes {
        match self {
            RaftRpc::AppendEntries(_)
            | RaftRpc::Propose(_)
            | RaftRpc::AddVoter { .. }
            | RaftRpc::Heartbeat { .. } => RPCTypes::AppendEntries,
            RaftRpc::Vote(_) => RPCTypes::Vote,
            RaftRpc::InstallSnapshot(_) => RPCTypes::InstallSnapshot,
        }
    }
}

impl RaftRpcReply {
    /// The reply as JSON, at most [`RPC_BYTES_MAX`] bytes.
    pub fn encode(&self) -> Result<Vec<u8>, RpcCodecError> {
        encode(self)
    }

    /// Reads a reply, refusing more than [`RPC_BYTES_MAX`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, RpcCodecError> {
        decode(bytes)
    }
}

/// Why a transport could not deliver an RPC or bring back its reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection to the peer: openraft backs off before trying again.
    #[error("controller {target} is unreachable: {reason}")]
    Unreachable { target: NodeId, reason: String },
    /// The connection failed during the call: openraft retries at once.
    #[error("RPC to controller {target} failed: {reason}")]
    Failed { target: NodeId, reason: String },
    /// The RPC does not fit [`RPC_BYTES_MAX`]; openraft sends fewer entries.
    #[error("RPC is too large to send: {0}")]
    TooLarge(RpcCodecError),
}

/// Carries RPCs to other controllers.
///
/// # Contract
/// - `send` delivers `rpc` to the controller `target`, reachable at `addr` (its
///   broker's QUIC address, from the cluster membership), hands it to that
///   controller's [`RpcHandler::handle`], and returns the reply.
/// - Encode with [`RaftRpc::encode`] / [`RaftRpcReply::encode`] (JSON) and decode
///   with the matching `decode`, so both sides enforce [`RPC_BYTES_MAX`]; map a
///   [`RpcCodecError::TooLarge`] on sending to [`TransportError::TooLarge`].
/// - It need not time out: the caller bounds every call with openraft's TTL.
/// - Calls may run concurrently, to the same target too.
pub trait RaftTransport: Send + Sync + 'static {
    fn send(
        &self,
        target: NodeId,
        addr: &str,
        rpc: RaftRpc,
    ) -> impl Future<Output = Result<RaftRpcReply, TransportError>> + Send;
}

/// [`RaftTransport`] behind a pointer, so the controller is not generic over it.
pub(crate) trait DynTransport: Send + Sync + 'static {
    fn send_boxed<'a>(
        &'a self,
        target: NodeId,
        addr: &'a str,
        rpc: RaftRpc,
    ) -> Pin<Box<dyn Future<Output = Result<RaftRpcReply, TransportError>> + Send + 'a>>;
}

impl<T: RaftTransport> DynTransport for T {
    fn send_boxed<'a>(
        &'a self,
        target: NodeId,
        addr: &'a str,
        rpc: RaftRpc,
    ) -> Pin<Box<dyn Future<Output = Result<RaftRpcReply, TransportError>> + Send + 'a>> {
        Box::pin(self.send(target, addr, rpc))
    }
}

/// Serves RPCs addressed to one controller. Cheap to clone.
#[derive(Clone)]
pub struct RpcHandler {
    raft: ControllerRaft,
    view: Arc<AppliedView>,
    liveness: Arc<Mutex<Liveness>>,
    propose_timeout: Duration,
}

impl RpcHandler {
    pub(crate) fn new(
        raft: ControllerRaft,
        view: Arc<AppliedView>,
        liveness: Arc<Mutex<Liveness>>,
        propose_timeout: Duration,
    ) -> Self {
        Self {
            raft,
            view,
            liveness,
            propose_timeout,
        }
    }

    /// Handles one RPC from another controller and answers it.
    pub async fn handle(&self, rpc: RaftRpc) -> RaftRpcReply {
        match rpc {
            RaftRpc::AppendEntries(request) => {
                RaftRpcReply::AppendEntries(self.raft.append_entries(request).await)
            }
            RaftRpc::Vote(request) => RaftRpcReply::Vote(self.raft.vote(request).await),
            RaftRpc::InstallSnapshot(request) => {
                RaftRpcReply::InstallSnapshot(self.raft.install_snapshot(request).await)
            }
            // Forwarded once only: a node that is not the leader answers NotLeader
            // rather than forwarding again, so a stale view cannot loop.
            RaftRpc::Propose(command) => RaftRpcReply::Propose(
                propose_local(&self.raft, command, self.propose_timeout).await,
            ),
            RaftRpc::AddVoter { node_id, addr } => RaftRpcReply::AddVoter(
                add_voter_local(&self.raft, node_id, addr, self.propose_timeout).await,
            ),
            RaftRpc::Heartbeat {
                broker_id,
                broker_epoch,
            } => RaftRpcReply::Heartbeat(
                heartbeat_local(
                    &self.raft,
                    &self.view,
                    &self.liveness,
                    broker_id,
                    broker_epoch,
                    self.propose_timeout,
                )
                .await,
            ),
        }
    }
}

/// Gives openraft a [`Connection`] per peer.
pub(crate) struct NetworkFactory {
    pub(crate) from: NodeId,
    pub(crate) transport: Arc<dyn DynTransport>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &ControllerNode) -> Connection {
        Connection {
            from: self.from,
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
        }
    }
}

/// openraft's view of one peer: every call goes through the transport.
pub(crate) struct Connection {
    from: NodeId,
    target: NodeId,
    addr: String,
    transport: Arc<dyn DynTransport>,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, ControllerNode, RaftError<NodeId, E>>>;

impl Connection {
    async fn call<E: std::error::Error>(
        &self,
        rpc: RaftRpc,
        option: &RPCOption,
        entries: u64,
    ) -> Result<RaftRpcReply, RPCError<NodeId, ControllerNode, RaftError<NodeId, E>>> {
        let action = rpc.action();
        let ttl = option.hard_ttl();
        let sent = self.transport.send_boxed(self.target, &self.addr, rpc);
        match tokio::time::timeout(ttl, sent).await {
            Err(_) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.from,
                target: self.target,
                timeout: ttl,
            })),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e @ TransportError::Unreachable { .. })) => {
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Ok(Err(TransportError::TooLarge(_))) if entries > 1 => Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            )),
            Ok(Err(e)) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, ControllerNode, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

fn mismatched<E: std::error::Error>() -> RPCError<NodeId, ControllerNode, RaftError<NodeId, E>> {
    let e = std::io::Error::other("the reply does not match the request");
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let entries = rpc.entries.len() as u64;
        match self
            .call(RaftRpc::AppendEntries(rpc), &option, entries)
            .await?
        {
            RaftRpcReply::AppendEntries(reply) => reply.map_err(|e| self.remote(e)),
            _ => Err(mismatched()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.call(RaftRpc::InstallSnapshot(rpc), &option, 0).await? {
            RaftRpcReply::InstallSnapshot(reply) => reply.map_err(|e| self.remote(e)),
            _ => Err(mismatched()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(RaftRpc::Vote(rpc), &option, 0).await? {
            RaftRpcReply::Vote(reply) => reply.map_err(|e| self.remote(e)),
            _ => Err(mismatched()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    use super::*;

    #[test]
    fn rpcs_round_trip_and_oversized_bytes_are_refused() {
        let rpc = RaftRpc::Propose(MetadataCommand::CreateTopic {
            name: "orders".to_owned(),
            partitions: 3,
            replication_factor: 1,
            configs: BTreeMap::new(),
        });
        let bytes = rpc.encode().expect("encodes");
        let RaftRpc::Propose(command) = RaftRpc::decode(&bytes).expect("decodes") else {
            panic!("wrong variant");
        };
        assert_eq!(command.kind(), "create_topic");
        let reply = RaftRpcReply::Propose(Err(ProposeError::NotLeader {
            leader_id: Some(2),
            leader_addr: Some("h:1".to_owned()),
        }));
        let back = RaftRpcReply::decode(&reply.encode().expect("encodes")).expect("decodes");
        assert!(matches!(
            back,
            RaftRpcReply::Propose(Err(ProposeError::NotLeader {
                leader_id: Some(2),
                ..
            }))
        ));

        let oversized = vec![b' '; RPC_BYTES_MAX + 1];
        assert_eq!(
            RaftRpc::decode(&oversized).err(),
            Some(RpcCodecError::TooLarge {
                bytes: RPC_BYTES_MAX + 1
            })
        );
        assert!(matches!(
            RaftRpc::decode(b"{}"),
            Err(RpcCodecError::Malformed(_))
        ));
    }

    /// A transport that always fails the same way, or never answers.
    struct Failing(Option<TransportError>);

    impl RaftTransport for Failing {
        async fn send(
            &self,
            _target: NodeId,
            _addr: &str,
            _rpc: RaftRpc,
        ) -> Result<RaftRpcReply, TransportError> {
            match &self.0 {
                Some(e) => Err(e.clone()),
                None => std::future::pending().await,
            }
        }
    }

    fn connection(error: Option<TransportError>) -> Connection {
        Connection {
            from: 1,
            target: 2,
            addr: "h:2".to_owned(),
            transport: Arc::new(Failing(error)),
        }
    }

    fn append(entries: u64) -> AppendEntriesRequest<TypeConfig> {
        let log_id = |index| LogId::new(CommittedLeaderId::new(1, 1), index);
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: (0..entries)
                .map(|i| Entry {
                    log_id: log_id(i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn transport_failures_become_the_errors_openraft_acts_on() {
        let option = RPCOption::new(Duration::from_millis(50));
        let unreachable = TransportError::Unreachable {
            target: 2,
            reason: "down".to_owned(),
        };
        let error = connection(Some(unreachable))
            .append_entries(append(1), option.clone())
            .await
            .expect_err("fails");
        assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");

        let failed = TransportError::Failed {
            target: 2,
            reason: "reset".to_owned(),
        };
        let error = connection(Some(failed))
            .append_entries(append(1), option.clone())
            .await
            .expect_err("fails");
        assert!(matches!(error, RPCError::Network(_)), "{error:?}");

        // Too large: openraft is asked to send half the entries.
        let too_large = TransportError::TooLarge(RpcCodecError::TooLarge { bytes: 1 });
        let error = connection(Some(too_large))
            .append_entries(append(8), option.clone())
            .await
            .expect_err("fails");
        let RPCError::PayloadTooLarge(hint) = error else {
            panic!("{error:?}");
        };
        assert_eq!(hint.entries_hint(), 4);

        let error = connection(None)
            .append_entries(append(1), option)
            .await
            .expect_err("times out");
        assert!(matches!(error, RPCError::Timeout(_)), "{error:?}");
    }
}
