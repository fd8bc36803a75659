//! Request handling: one decoded request in, one answer out, routed by the API table
//! below. Every failure becomes a [`RequestError`] with a wire error code; nothing here
//! panics on what a client sends, and a request that fails changes no stored data.
//!
//! The table is the one place that lists every API with who may call it, what it needs
//! permission for when `authorization = "acl"`, and the handler that serves it (one
//! file per API family). It is exhaustive over [`ApiKey`]: an API added to the wire
//! crate without a row here does not compile, and a client row cannot leave out its
//! needs. The router checks them before the handler runs, so a refused request never
//! reaches it. Listing APIs whose row needs nothing (metadata, group list) filter what
//! they answer by `describe` instead, so a principal learns nothing of resources it
//! may not describe.
//!
//! Handlers of broker-peer APIs take a [`PeerProof`], which only the router can make
//! and only for a connection whose certificate carries the broker identity, so such a
//! handler cannot be reached from a client connection, certificate or not.

mod acls;
mod controller;
mod fetch;
mod groups;
#[cfg(test)]
mod in_process;
mod join;
mod metadata;
mod plugins;
mod produce;
mod producer_ids;
mod quotas;
mod replicas;
mod topics;
mod users;

use std::sync::Arc;

use quiver_wire::acl::Operation::{Alter, Create, Delete, Describe, IdempotentWrite, Read, Write};
use quiver_wire::frame::RequestFrame;
use quiver_wire::message::Request;
use quiver_wire::{ApiKey, ErrorCode};

use crate::partition::Partition;
pub use crate::reply::{Outgoing, RequestError};
use crate::security::{ConnectionIdentity, Need, Principal};
use crate::state::BrokerState;

/// Who may call an API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any client that reached the listener (and authenticated, when that is on).
    AnyClient,
    /// Only another broker of the cluster: the controller's Raft RPCs (which could add
    /// a voter or depose a leader), replica fetches and plugin module transfers.
    BrokerPeer,
}

/// Proof that a request came from another broker of the cluster. Only [`peer_proof`]
/// makes one; broker-peer handlers take it as an argument.
#[derive(Debug, Clone, Copy)]
pub struct PeerProof(());

/// The proof that `caller` is a broker peer, or the refusal a client gets.
fn peer_proof(caller: &Principal, api: ApiKey) -> Result<PeerProof, RequestError> {
    match caller {
        Principal::Broker => Ok(PeerProof(())),
        Principal::Anonymous | Principal::User(_) => Err(RequestError::new(
            ErrorCode::ClusterAuthorizationFailed,
            format!(
                "`{}` is for the cluster's brokers: connect with a broker certificate from the cluster's CA",
                api.name()
            ),
        )),
    }
}

/// One request's surroundings: the broker's services and who sent the request.
pub struct Call<'a> {
    pub state: &'a Arc<BrokerState>,
    /// False on a unidirectional stream: nobody waits for an answer.
    pub answered: bool,
    /// The sender's principal when the request arrived.
    pub principal: &'a Principal,
    /// The sender's connection, which a SCRAM exchange authenticates.
    pub connection: &'a ConnectionIdentity,
    /// The version of the request's API, which the answer follows.
    pub version: u16,
}

impl Call<'_> {
    /// Refuses the request unless the ACLs allow every one of `needs`.
    fn authorize(&self, needs: &[Need]) -> Result<(), RequestError> {
        let member = &*self.state.cluster;
        let metadata = member.controller.metadata();
        for need in needs {
            if !self
                .state
                .authorizer
                .allows(metadata.acls(), self.principal, need)
            {
                self.state
                    .metrics
                    .authorization_denied(need.operation.name(), need.resource_type.name());
                return Err(need.denied(self.principal));
            }
        }
        Ok(())
    }

    /// Whether the ACLs allow `need`: for listings, which leave out what the principal
    /// may not see rather than refuse.
    fn may(&self, need: &Need) -> bool {
        if !self.state.authorizer.acl {
            return true;
        }
        let metadata = self.state.cluster.controller.metadata();
        self.state
            .authorizer
            .allows(metadata.acls(), self.principal, need)
    }

    /// Charges `amount` of `kind` to the principal's client quota and returns the
    /// throttle time its answer carries, in milliseconds (0 without a quota). Its next
    /// requests are held back that long.
    fn charge_quota(&self, kind: crate::quota::QuotaKind, amount: usize) -> u32 {
        let throttle = charge_quota(self.state, self.principal, kind, amount as f64);
        u32::try_from(throttle.as_millis()).unwrap_or(u32::MAX)
    }

    /// Passes on the outcome of an administrative change (`action` on `what`), logging
    /// it in one line under the `quiver::audit` target with the principal.
    fn audited(
        &self,
        action: &str,
        what: &str,
        outcome: Result<Outgoing, RequestError>,
    ) -> Result<Outgoing, RequestError> {
        match &outcome {
            Ok(_) => tracing::info!(
                target: "quiver::audit",
                principal = %self.principal,
                action,
                outcome = "done",
                "{what}"
            ),
            Err(err) => tracing::info!(
                target: "quiver::audit",
                principal = %self.principal,
                action,
                outcome = err.code.name(),
                "{what}: {}",
                err.message
            ),
        }
        outcome
    }
}

/// Charges `amount` of `kind` (bytes, or milliseconds of handling) to `principal`'s
/// client quota and returns how long it is throttled for; zero for brokers and without
/// a quota. The one place quotas are looked up, charged and counted.
pub fn charge_quota(
    state: &BrokerState,
    principal: &Principal,
    kind: crate::quota::QuotaKind,
    amount: f64,
) -> std::time::Duration {
    use crate::quota::QuotaKind;
    let none = std::time::Duration::ZERO;
    if *principal == Principal::Broker {
        return none;
    }
    let metadata = state.cluster.controller.metadata();
    let Some(quota) = metadata.quota_of(principal.name()) else {
        return none;
    };
    let per_sec = match kind {
        QuotaKind::ProduceBytes => quota.produce_bytes_per_sec,
        QuotaKind::FetchBytes => quota.fetch_bytes_per_sec,
        // Percent of one core: 25 allows 250 ms of handling per second.
        QuotaKind::RequestTime => quota.request_percent.map(|p| p.saturating_mul(10)),
    };
    let Some(per_sec) = per_sec else {
        return none;
    };
    let now = state.clock.now_ms_u64();
    let throttle =
        state
            .quota_meter
            .charge(principal.name(), kind, amount, Some(per_sec as f64), now);
    if !throttle.is_zero() {
        state
            .metrics
            .throttled(principal.name(), kind.name(), throttle.as_secs_f64());
    }
    throttle
}

/// The API table. `any_client` rows may be called by every connection, once the ACLs
/// allow what the row says it needs (`needs(r)`: the request is `r`); `broker_peer`
/// rows only with a [`PeerProof`].
macro_rules! api_table {
    (
        any_client { $( $c_api:ident => $c_handler:path, needs($c_req:pat) $c_needs:expr, )* }
        broker_peer { $( $p_api:ident => $p_handler:path, )* }
    ) => {
        /// Who may call `api`.
        pub const fn access(api: ApiKey) -> Access {
            match api {
                $( ApiKey::$c_api => Access::AnyClient, )*
                $( ApiKey::$p_api => Access::BrokerPeer, )*
            }
        }

        /// What `request` needs permission for.
        pub fn needs(request: &Request) -> Vec<Need> {
            match request {
                $( Request::$c_api($c_req) => $c_needs, )*
                $( Request::$p_api(_) => Vec::new(), )*
            }
        }

        async fn route(request: Request, call: &Call<'_>) -> Result<Outgoing, RequestError> {
            // Under SCRAM, a connection without a certificate may only say hello,
            // authenticate, or join the cluster (a joining node has no credentials
            // yet; its join secret is its proof) until it has.
            if call.state.config.authentication.scram
                && *call.principal == Principal::Anonymous
                && !matches!(
                    request,
                    Request::ApiVersions(_)
                        | Request::SaslAuthenticate(_)
                        | Request::JoinCa(_)
                        | Request::JoinCluster(_)
                )
            {
                return Err(RequestError::new(
                    ErrorCode::AuthenticationFailed,
                    "authenticate first: SCRAM-SHA-256 (a user and password) or a client certificate",
                ));
            }
            if call.state.authorizer.acl && access(request.api_key()) == Access::AnyClient {
                call.authorize(&needs(&request))?;
            }
            match request {
                $( Request::$c_api(req) => $c_handler(req, call).await, )*
                $( Request::$p_api(req) => {
                    let proof = peer_proof(call.principal, ApiKey::$p_api)?;
                    $p_handler(req, call, proof).await
                } )*
            }
        }
    };
}

api_table! {
    any_client {
        ApiVersions => metadata::api_versions, needs(_) vec![],
        // Answers only the topics the principal may describe.
        Metadata => metadata::metadata, needs(_) vec![],
        Produce => produce::produce, needs(r) vec![Need::topic(Write, &r.topic)],
        Fetch => fetch::fetch, needs(r) {
            let mut needs = vec![Need::topic(Read, &r.topic)];
            needs.extend(r.plugin.iter().map(|p| Need::plugin(Read, &p.name)));
            needs
        },
        ListOffsets => fetch::list_offsets, needs(r) vec![Need::topic(Describe, &r.topic)],
        CreateTopic => topics::create_topic, needs(r) vec![Need::topic(Create, &r.name)],
        DeleteTopic => topics::delete_topic, needs(r) vec![Need::topic(Delete, &r.name)],
        InitProducerId => producer_ids::init_producer_id, needs(_) vec![Need::cluster(IdempotentWrite)],
        OffsetCommit => groups::offset_commit, needs(r) {
            let mut needs = vec![Need::group(Read, &r.group)];
            needs.extend(r.offsets.iter().map(|o| Need::topic(Read, &o.topic)));
            needs
        },
        OffsetFetch => groups::offset_fetch, needs(r) vec![Need::group(Describe, &r.group)],
        GroupHeartbeat => groups::group_heartbeat, needs(r) vec![Need::group(Read, &r.group)],
        // Answers only the groups the principal may describe.
        ListGroups => groups::list_groups, needs(_) vec![],
        DescribeGroup => groups::describe_group, needs(r) vec![Need::group(Describe, &r.group)],
        PluginUpload => plugins::upload, needs(_) vec![Need::cluster(Alter)],
        PluginList => plugins::list, needs(_) vec![Need::cluster(Describe)],
        PluginAttach => plugins::attach, needs(r) vec![Need::topic(Alter, &r.attachment.topic)],
        PluginDetach => plugins::detach, needs(r) vec![Need::topic(Alter, &r.topic)],
        PluginDelete => plugins::delete, needs(_) vec![Need::cluster(Alter)],
        // Brokers and the controller leader, as metadata names them: clients need it to
        // find the group coordinator.
        ClusterStatus => controller::status, needs(_) vec![],
        AclCreate => acls::create, needs(_) vec![Need::cluster(Alter)],
        AclDelete => acls::delete, needs(_) vec![Need::cluster(Alter)],
        AclDescribe => acls::describe, needs(_) vec![Need::cluster(Describe)],
        // Authentication itself: no principal yet to check.
        SaslAuthenticate => users::authenticate, needs(_) vec![],
        UserUpsert => users::upsert, needs(_) vec![Need::cluster(Alter)],
        UserDelete => users::delete, needs(_) vec![Need::cluster(Alter)],
        UserList => users::list, needs(_) vec![Need::cluster(Describe)],
        QuotaSet => quotas::set, needs(_) vec![Need::cluster(Alter)],
        QuotaList => quotas::list, needs(_) vec![Need::cluster(Describe)],
        // Kafka's model: AlterConfigs and CreatePartitions need `alter` on the topic;
        // its configs are described through metadata (`describe`), DeleteGroups needs
        // `delete` on the group.
        AlterTopicConfigs => topics::alter_topic_configs, needs(r) vec![Need::topic(Alter, &r.name)],
        CreatePartitions => topics::create_partitions, needs(r) vec![Need::topic(Alter, &r.name)],
        DeleteGroup => groups::delete_group, needs(r) vec![Need::group(Delete, &r.group)],
        // How a node joins: it has no credentials yet. The CA certificate is public;
        // a broker certificate is issued only for a proof of the join secret bound
        // to the caller's connection, for a node id no live broker holds, at most
        // `JOIN_REQUESTS_PER_MINUTE_MAX` requests a minute.
        JoinCa => join::ca, needs(_) vec![],
        JoinCluster => join::join, needs(_) vec![],
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

/// Decodes and handles one request from `connection`. `answered` is false for
/// unidirectional streams.
pub async fn handle(
    frame: RequestFrame,
    state: &Arc<BrokerState>,
    answered: bool,
    connection: &ConnectionIdentity,
) -> Handled {
    let api = ApiKey::from_code(frame.api_key);
    let version = frame.api_version;
    let request = Request::decode(frame).map_err(|e| (api, RequestError::from(e)))?;
    let api = request.api_key();
    let principal = connection.principal();
    let call = Call {
        state,
        answered,
        principal: &principal,
        connection,
        version,
    };
    route(request, &call)
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
    fn a_client_gets_no_peer_proof_certificate_or_not() {
        for client in [
            Principal::Anonymous,
            Principal::User("User:quiver broker".into()),
        ] {
            let refused = peer_proof(&client, ApiKey::ControllerRpc).expect_err("not a peer");
            assert_eq!(refused.code, ErrorCode::ClusterAuthorizationFailed);
            assert!(
                refused.message.contains("controller"),
                "{}",
                refused.message
            );
        }
        assert!(peer_proof(&Principal::Broker, ApiKey::ReplicaFetch).is_ok());
    }

    #[test]
    fn administrative_apis_need_the_cluster_or_the_topic() {
        use quiver_wire::acl::ResourceType;
        let upload = Request::PluginUpload(quiver_wire::plugin::PluginUploadRequest {
            name: "p".into(),
            module: bytes::Bytes::new(),
        });
        assert_eq!(needs(&upload), [Need::cluster(Alter)]);
        let detach = Request::PluginDetach(quiver_wire::plugin::PluginDetachRequest {
            topic: "orders".into(),
            plugin: "p".into(),
        });
        assert_eq!(needs(&detach), [Need::topic(Alter, "orders")]);
        let fetch = Request::Fetch(quiver_wire::message::FetchRequest {
            topic: "orders".into(),
            partition: 0,
            offset: 0,
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1,
            plugin: Some(quiver_wire::plugin::PluginCall {
                name: "only-eu".into(),
                params: Vec::new(),
            }),
        });
        let fetch_needs = needs(&fetch);
        assert_eq!(fetch_needs[0], Need::topic(Read, "orders"));
        assert_eq!(fetch_needs[1].resource_type, ResourceType::Plugin);
    }
}
