//! Request handling: one decoded request in, one answer out, routed by the API table
//! below. Every failure becomes a [`RequestError`] with a wire error code; nothing here
//! panics on what a client sends, and a request that fails changes no stored data.
//!
//! The table is the one place that lists every API with who may call it and the
//! handler that serves it (one file per API family). It is exhaustive over
//! [`ApiKey`]: an API added to the wire crate without a row here does not compile.
//! Handlers of broker-peer APIs take a [`PeerProof`], which only the router can make
//! and only for a connection that presented a broker certificate, so such a handler
//! cannot be reached from a client connection by mistake.

mod controller;
mod fetch;
mod groups;
mod metadata;
mod plugins;
mod produce;
mod producer_ids;
mod replicas;
mod topics;

use std::sync::Arc;

use quiver_wire::frame::RequestFrame;
use quiver_wire::message::Request;
use quiver_wire::{ApiKey, ErrorCode};

use crate::partition::Partition;
pub use crate::reply::{Outgoing, RequestError};
use crate::server::BrokerState;

pub use produce::SEQUENCE_GAP_WAIT;

/// Who may call an API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any client that reached the listener.
    AnyClient,
    /// Only another broker of the cluster: the controller's Raft RPCs (which could add
    /// a voter or depose a leader), replica fetches and plugin module transfers.
    BrokerPeer,
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A client: no certificate.
    Client,
    /// Another broker of the cluster: a certificate from the cluster's CA.
    Broker,
}

/// Proof that a request came from another broker of the cluster. Only
/// [`Caller::peer_proof`] makes one; broker-peer handlers take it as an argument.
#[derive(Debug, Clone, Copy)]
pub struct PeerProof(());

impl Caller {
    /// The proof that this caller is a broker peer, or the refusal a client gets.
    fn peer_proof(self, api: ApiKey) -> Result<PeerProof, RequestError> {
        match self {
            Caller::Broker => Ok(PeerProof(())),
            Caller::Client => Err(RequestError::new(
                ErrorCode::ClusterAuthorizationFailed,
                format!(
                    "`{}` is for the cluster's brokers: connect with a certificate from the cluster's CA",
                    api.name()
                ),
            )),
        }
    }
}

/// One request's surroundings: the broker's services and how the request arrived.
pub struct Call<'a> {
    pub state: &'a Arc<BrokerState>,
    /// False on a unidirectional stream: nobody waits for an answer.
    pub answered: bool,
}

/// The API table. `any_client` rows may be called by every connection; `broker_peer`
/// rows only with a [`PeerProof`].
macro_rules! api_table {
    (
        any_client { $( $c_api:ident => $c_handler:path, )* }
        broker_peer { $( $p_api:ident => $p_handler:path, )* }
    ) => {
        /// Who may call `api`.
        pub const fn access(api: ApiKey) -> Access {
            match api {
                $( ApiKey::$c_api => Access::AnyClient, )*
                $( ApiKey::$p_api => Access::BrokerPeer, )*
            }
        }

        async fn route(
            request: Request,
            call: &Call<'_>,
            caller: Caller,
        ) -> Result<Outgoing, RequestError> {
            match request {
                $( Request::$c_api(req) => $c_handler(req, call).await, )*
                $( Request::$p_api(req) => {
                    let proof = caller.peer_proof(ApiKey::$p_api)?;
                    $p_handler(req, call, proof).await
                } )*
            }
        }
    };
}

api_table! {
    any_client {
        ApiVersions => metadata::api_versions,
        Metadata => metadata::metadata,
        Produce => produce::produce,
        Fetch => fetch::fetch,
        ListOffsets => fetch::list_offsets,
        CreateTopic => topics::create_topic,
        DeleteTopic => topics::delete_topic,
        InitProducerId => producer_ids::init_producer_id,
        OffsetCommit => groups::offset_commit,
        OffsetFetch => groups::offset_fetch,
        GroupHeartbeat => groups::group_heartbeat,
        ListGroups => groups::list_groups,
        DescribeGroup => groups::describe_group,
        PluginUpload => plugins::upload,
        PluginList => plugins::list,
        PluginAttach => plugins::attach,
        PluginDetach => plugins::detach,
        PluginDelete => plugins::delete,
        ClusterStatus => controller::status,
    }
    broker_peer {
        ControllerRpc => controller::rpc,
        ReplicaFetch => replicas::replica_fetch,
        PluginModule => plugins::module,
    }
}

/// What [`handle`] returns: the API (when the frame named a known one) with the answer
/// or the error.
pub type Handled = Result<(ApiKey, Outgoing), (Option<ApiKey>, RequestError)>;

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
    let call = Call { state, answered };
    route(request, &call, caller)
        .await
        .map(|out| (api, out))
        .map_err(|e| (Some(api), e))
}

/// The partition `topic`/`index` as this broker holds it.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_brokers_own_apis_are_for_peers() {
        let peers: Vec<ApiKey> = ApiKey::ALL
            .into_iter()
            .filter(|api| access(*api) == Access::BrokerPeer)
            .collect();
        assert_eq!(
            peers,
            [
                ApiKey::ControllerRpc,
                ApiKey::ReplicaFetch,
                ApiKey::PluginModule
            ]
        );
    }

    #[test]
    fn a_client_gets_no_peer_proof() {
        let refused = Caller::Client
            .peer_proof(ApiKey::ControllerRpc)
            .expect_err("a client is not a peer");
        assert_eq!(refused.code, ErrorCode::ClusterAuthorizationFailed);
        assert!(
            refused.message.contains("ControllerRpc") || refused.message.contains("controller")
        );
        assert!(Caller::Broker.peer_proof(ApiKey::ReplicaFetch).is_ok());
    }
}
