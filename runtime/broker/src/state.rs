//! The broker's services as one running broker holds them: what the network layer
//! and the handlers reach the layers below through. Defined apart from the endpoint
//! (`crate::server`) so that the admin listener and the handlers depend on the
//! services, not on the endpoint that serves them.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::{Semaphore, watch};

use crate::admission::Admission;
use crate::clock::Clock;
use crate::config::BrokerConfig;
use crate::log_limit::RefusalLog;
use crate::metrics::Metrics;
use crate::topic::TopicRegistry;

/// Shared state of a running broker.
pub struct BrokerState {
    pub config: BrokerConfig,
    pub topics: Arc<TopicRegistry>,
    pub metrics: Arc<Metrics>,
    pub producer_ids: crate::producer_id::ProducerIdAllocator,
    /// Consumer group membership (soft state).
    pub groups: Arc<std::sync::Mutex<crate::group::GroupCoordinator>>,
    /// Committed offsets an earlier build kept in the internal offsets topic, read at
    /// start for `crate::adopt`; offsets live in the controller's metadata.
    pub offsets: crate::offsets::OffsetStore,
    /// Uploaded WebAssembly plugins, their attachments to topics, and running them.
    pub plugins: Arc<crate::plugins::Plugins>,
    /// This broker's controller and membership (a single node is a one-member
    /// cluster), started before everything that depends on it.
    pub cluster: Arc<crate::cluster::ClusterMember>,
    /// `true` once the broker is stopping.
    pub shutdown: watch::Sender<bool>,
    /// Background tasks, which shutdown joins.
    pub tasks: Arc<crate::tasks::TaskSet>,
    /// Recovery done and the endpoint accepting.
    pub ready: AtomicBool,
    pub(crate) in_flight: Arc<Semaphore>,
    /// Answers written but not yet acknowledged by their client. Shutdown waits for
    /// them only briefly: a client that vanished never acknowledges.
    pub(crate) unacknowledged: Arc<Semaphore>,
    /// Connection, request and request-byte budgets (see [`crate::admission`]).
    pub admission: Arc<Admission>,
    /// Whether and how requests are checked against the ACLs.
    pub authorizer: crate::security::Authorizer,
    /// Each principal's rates against its client quota.
    pub quota_meter: crate::quota::QuotaMeter,
    /// The server side of SCRAM exchanges (keys that make unknown users' answers look
    /// like known ones').
    pub scram: quiver_wire::scram::ScramServer,
    /// Refusals and timeouts, logged at most once per interval each.
    pub(crate) refusal_log: RefusalLog,
    /// Which other brokers this one could not reach, and why.
    pub peer_health: Arc<crate::peers::PeerHealth>,
    /// The bound on join requests this broker answers.
    pub join_gate: crate::join::JoinGate,
    /// Where the broker reads the time.
    pub clock: Arc<dyn Clock>,
}

/// What [`BrokerState::new`] is made of: the services started before it.
pub(crate) struct StateParts {
    pub(crate) config: BrokerConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) tasks: Arc<crate::tasks::TaskSet>,
    pub(crate) topics: Arc<TopicRegistry>,
    pub(crate) groups: Arc<std::sync::Mutex<crate::group::GroupCoordinator>>,
    pub(crate) producer_ids: crate::producer_id::ProducerIdAllocator,
    pub(crate) offsets: crate::offsets::OffsetStore,
    pub(crate) plugins: quiver_plugin_host::Registry,
    pub(crate) cluster: Arc<crate::cluster::ClusterMember>,
    pub(crate) peer_health: Arc<crate::peers::PeerHealth>,
}

impl BrokerState {
    /// The broker's services from `parts`, with the request budgets, authorisation
    /// and SCRAM keys its configuration asks for.
    pub(crate) fn new(parts: StateParts) -> Result<Self, crate::tls::TlsError> {
        let StateParts {
            config,
            clock,
            metrics,
            shutdown,
            tasks,
            topics,
            groups,
            producer_ids,
            offsets,
            plugins,
            cluster,
            peer_health,
        } = parts;
        let admission_limits = crate::admission::AdmissionLimits {
            connections_max: config.connections_max,
            connections_max_per_ip: config.connections_max_per_ip,
            requests_per_address_max: config.requests_per_address_max,
            request_bytes_in_flight_max: config.request_bytes_in_flight_max,
            request_bytes_per_address_max: config.request_bytes_per_address_max,
            requests_per_principal_max: config.requests_per_principal_max,
        };
        let scram = crate::tls::scram_server(&config.data_dir)?;
        let plugins = Arc::new(crate::plugins::Plugins::new(
            plugins,
            Arc::clone(&cluster),
            Arc::clone(&topics),
            Arc::clone(&metrics),
            Arc::clone(&clock),
            config.fetch_plugin_time_max_ms,
            shutdown.subscribe(),
        ));
        let authorizer = crate::security::Authorizer {
            acl: config.authorization_acl,
            super_users: config.super_users.clone(),
        };
        Ok(Self {
            plugins,
            cluster,
            producer_ids,
            groups,
            offsets,
            in_flight: Arc::new(Semaphore::new(config.requests_in_flight_max)),
            unacknowledged: Arc::new(Semaphore::new(config.requests_in_flight_max)),
            topics,
            metrics,
            shutdown,
            tasks,
            ready: AtomicBool::new(false),
            admission: Admission::new(admission_limits),
            authorizer,
            scram,
            quota_meter: crate::quota::QuotaMeter::default(),
            refusal_log: RefusalLog::new(Arc::clone(&clock)),
            peer_health,
            join_gate: crate::join::JoinGate::default(),
            clock,
            config,
        })
    }
}
