//! The QUIC endpoint: accepts connections, reads one request frame per stream, hands it
//! to [`crate::handlers`], and writes the answer back on the same stream.
//!
//! Bidirectional streams carry requests that expect an answer; unidirectional streams
//! carry `acks = none` produces, which get none.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quiver_wire::ErrorCode;
use quiver_wire::frame::{
    ErrorResponse, FRAME_LENGTH_BYTES, FrameError, REQUEST_HEAD_BYTES, RequestFrame, frame_length,
};
use tokio::sync::watch;

use crate::admission::{ConnectionTicket, RequestSlot};
use crate::clock::{Clock, SystemClock};
use crate::config::BrokerConfig;
use crate::handlers::{self, Outgoing, RequestError};
use crate::metrics::Metrics;
use crate::state::{BrokerState, StateParts};
use crate::tls;
use crate::topic::{TopicError, TopicRegistry};

/// QUIC application close code sent when the broker stops.
pub const CLOSE_SHUTDOWN: u32 = 0;
/// QUIC stream reset / stop code for a request the broker refused to read.
pub const STREAM_REFUSED: u32 = 1;
/// QUIC stream stop / reset code for a request that did not arrive whole within
/// `request_read_timeout_ms`, or an answer not taken within `response_write_timeout_ms`.
pub const STREAM_TIMED_OUT: u32 = 2;
/// QUIC application close code for a connection idle past `connection_idle_max_ms`.
pub const CLOSE_IDLE: u32 = 3;
/// QUIC application close code for a connection whose credentials name nobody.
pub const CLOSE_UNAUTHENTICATED: u32 = 4;
/// Request bytes are taken from the budgets at most this many at a time, so a stalled
/// sender holds no more than it sent plus this.
pub const READ_CHUNK_BYTES_MAX: usize = 64 * 1024;
/// How long shutdown waits for the background tasks to end before it aborts them.
const TASKS_JOIN_MAX: Duration = Duration::from_secs(5);
/// How long shutdown waits for in-flight requests before closing connections.
pub const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(10);
/// How long shutdown then waits for written answers to be acknowledged: a live client
/// acknowledges within a round trip; one that vanished never does.
pub const SHUTDOWN_ACK_WAIT_MAX: Duration = Duration::from_secs(1);
/// A connection with no traffic for this long is closed; clients send keep-alives.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another broker")]
    Locked(std::path::PathBuf),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot recover topics: {0}")]
    Topics(#[from] TopicError),
    #[error("cannot listen for QUIC on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for admin HTTP on {addr}: {source}")]
    AdminListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    ProducerIds(#[from] crate::producer_id::ProducerIdError),
    #[error(transparent)]
    Offsets(#[from] crate::offsets::OffsetsError),
    #[error("cannot start the controller: {0}")]
    Controller(String),
    #[error("cannot open the plugin registry: {0}")]
    Plugins(#[from] quiver_plugin_host::RegistryError),
    #[error("cannot join the cluster: {0}")]
    Join(#[from] crate::join::JoinError),
}

/// A started broker.
pub struct RunningBroker {
    pub quic_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    state: Arc<BrokerState>,
    endpoint: quinn::Endpoint,
    accept_task: tokio::task::JoinHandle<()>,
    admin_task: tokio::task::JoinHandle<()>,
    _lock: DataDirLock,
}

/// An exclusive `flock` on `DATA_DIR/.lock`, so two brokers never share a directory.
struct DataDirLock(
    #[allow(dead_code, reason = "held for its flock until the broker stops")] std::fs::File,
);

impl DataDirLock {
    fn acquire(data_dir: &std::path::Path) -> Result<Self, StartError> {
        use std::os::fd::AsRawFd;
        let path = data_dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StartError::DataDir {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock on a descriptor we own; it has no memory effects.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(StartError::Locked(data_dir.to_owned()));
        }
        Ok(Self(file))
    }
}

/// What a broker recovers from its data directory before anything else: the topics'
/// logs (with the internal offsets topic an earlier build kept), the producer ids
/// handed out, and the uploaded plugins.
pub(crate) struct Stores {
    pub(crate) topics: Arc<TopicRegistry>,
    pub(crate) offsets: crate::offsets::OffsetStore,
    pub(crate) producer_ids: crate::producer_id::ProducerIdAllocator,
    pub(crate) plugins: quiver_plugin_host::Registry,
}

/// Recovers the broker's [`Stores`] from `config.data_dir`, off the async workers.
pub(crate) async fn open_stores(
    config: &BrokerConfig,
    metrics: &Arc<Metrics>,
    clock: &Arc<dyn Clock>,
) -> Result<Stores, StartError> {
    let data_dir = config.data_dir.clone();
    let log_defaults = config.log.clone();
    let flush = config.flush;
    let recovery_metrics = Arc::clone(metrics);
    let recovery_clock = Arc::clone(clock);
    // Recovery reads and fsyncs files: keep it off the async workers.
    let topics = tokio::task::spawn_blocking(move || {
        let topics = TopicRegistry::open(
            &data_dir,
            log_defaults,
            flush,
            recovery_metrics,
            recovery_clock.now_ms(),
        )?;
        if topics.get(crate::offsets::OFFSETS_TOPIC).is_none() {
            topics.create(
                crate::offsets::OFFSETS_TOPIC,
                1,
                1,
                Default::default(),
                1,
                recovery_clock.now_ms(),
            )?;
        }
        let offsets_partition = topics
            .get(crate::offsets::OFFSETS_TOPIC)
            .and_then(|t| t.partitions.first().cloned())
            .ok_or_else(|| TopicError::Unknown(crate::offsets::OFFSETS_TOPIC.to_owned()))?;
        Ok::<_, TopicError>((Arc::new(topics), offsets_partition))
    })
    .await
    .map_err(|e| {
        StartError::Topics(TopicError::Io {
            path: config.data_dir.clone(),
            source: std::io::Error::other(e),
        })
    })??;

    let (topics, offsets_partition) = topics;
    let offsets = crate::offsets::OffsetStore::load(&offsets_partition)?;
    let producer_ids = crate::producer_id::ProducerIdAllocator::open(&config.data_dir)?;
    let plugin_dir = config.data_dir.join("plugins");
    let plugin_limits = config.plugins;
    // Loading plugins reads the compile cache (or compiles): blocking work.
    let plugins = tokio::task::spawn_blocking(move || {
        let engine = quiver_plugin_host::PluginEngine::new(plugin_limits)?;
        quiver_plugin_host::Registry::open(&plugin_dir, engine)
    })
    .await
    .map_err(|e| {
        StartError::Plugins(quiver_plugin_host::RegistryError::Io {
            path: config.data_dir.join("plugins"),
            source: std::io::Error::other(e),
        })
    })??;
    Ok(Stores {
        topics,
        offsets,
        producer_ids,
        plugins,
    })
}

/// Starts a broker: recovers the data directory, then opens the QUIC endpoint and the
/// admin listener. Returns once both accept.
pub async fn start(config: BrokerConfig) -> Result<RunningBroker, StartError> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let lock = DataDirLock::acquire(&config.data_dir)?;

    if let Some(token) = &config.join_token {
        crate::join::prepare(&config, token).await?;
    }
    let identity = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => tls::load_identity(cert, key)?,
        _ => tls::ensure_generated(&config.data_dir, &crate::join::own_addresses(&config))?,
    };
    // Other brokers present a certificate from the cluster's CA; clients need none.
    let peer_ca = crate::peers::peer_ca(&config);
    let crypto = tls::server_crypto(
        identity,
        peer_ca.exists().then_some(peer_ca.as_path()),
        config.authentication.certificate_required(),
    )?;
    if !config.authentication.is_required() && !config.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.listen,
            "allow_anonymous: clients without credentials may do anything on a routable address"
        );
    }

    // The admin listener comes up first so /health answers during recovery.
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .map_err(|source| StartError::AdminListen {
            addr: config.admin_listen,
            source,
        })?;
    let admin_addr = admin
        .local_addr()
        .map_err(|source| StartError::AdminListen {
            addr: config.admin_listen,
            source,
        })?;

    let metrics = Arc::new(if config.metrics {
        Metrics::new()
    } else {
        Metrics::disabled()
    });
    let (shutdown, _) = watch::channel(false);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let Stores {
        topics,
        offsets,
        producer_ids,
        plugins,
    } = open_stores(&config, &metrics, &clock).await?;
    let quic_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto).map_err(|e| {
        StartError::Tls(tls::TlsError::Rustls(rustls::Error::General(e.to_string())))
    })?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_crypto));
    server_config.transport_config(Arc::new(transport_config(&config)));
    let reset_key = tls::reset_key(&config.data_dir)?;
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key.clone()));
    // Connection ids a restarted broker still recognises, so it resets its
    // predecessor's connections at once instead of letting them time out.
    endpoint_config.cid_generator(move || Box::new(tls::connection_ids(&reset_key)));
    let listen = config.listen;
    let socket = quiver_sdk::transport::bind_udp(listen).map_err(|source| StartError::Listen {
        addr: listen,
        source,
    })?;
    let endpoint = quinn::Endpoint::new(
        endpoint_config,
        Some(server_config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| StartError::Listen {
        addr: listen,
        source,
    })?;
    let quic_addr = endpoint.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;

    // The controller and this broker's part in the cluster come before the services
    // that depend on them, and before the endpoint accepts (see
    // `cluster::start_member`): nothing below ever sees a broker without them.
    let services = crate::cluster::MemberServices::new(
        config.clone(),
        Arc::clone(&topics),
        Arc::clone(&metrics),
        Arc::clone(&clock),
        shutdown.subscribe(),
    );
    let (tasks, groups, peer_health) = (
        Arc::clone(&services.tasks),
        Arc::clone(&services.groups),
        Arc::clone(&services.peer_health),
    );
    let (member, advertised) = crate::cluster::start_member(services, quic_addr)
        .await
        .map_err(StartError::Controller)?;
    let state = Arc::new(BrokerState::new(StateParts {
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
        cluster: Arc::clone(&member),
        peer_health,
    })?);
    let admin_task = tokio::spawn(crate::admin::serve(admin, Arc::clone(&state)));

    // A single node registers with its one-member quorum (and adopts what an
    // earlier build left in its data directory) before it accepts clients, so the
    // first request finds the metadata ready. A cluster node registers from its
    // membership loop once a quorum answers, which needs this listener.
    let incarnation = if crate::cluster::is_single_node(&member) {
        let incarnation = crate::cluster::register_single_node(&member, &advertised)
            .await
            .map_err(StartError::Controller)?;
        crate::adopt::adopt_unmanaged_state(&state, &member)
            .await
            .map_err(StartError::Controller)?;
        crate::cluster::reconcile(&member).await;
        Some(incarnation)
    } else {
        None
    };
    let accept_task = tokio::spawn(accept_loop(endpoint.clone(), Arc::clone(&state)));
    crate::cluster::run(&member, advertised, incarnation).map_err(StartError::Controller)?;
    state.tasks.spawn(
        "plugin sync",
        crate::plugins::sync_loop(Arc::clone(&state.plugins)),
    );
    state
        .tasks
        .spawn("retention", retention_loop(Arc::clone(&state)));
    state
        .tasks
        .spawn("group sessions", session_loop(Arc::clone(&state)));
    state
        .tasks
        .spawn("memory trim", trim_loop(Arc::clone(&state)));
    state.ready.store(true, Ordering::Release);
    tracing::info!(%quic_addr, %admin_addr, data_dir = %state.config.data_dir.display(), "broker ready");
    Ok(RunningBroker {
        quic_addr,
        admin_addr,
        state,
        endpoint,
        accept_task,
        admin_task,
        _lock: lock,
    })
}

/// Flow-control windows sized for a loopback or LAN bandwidth-delay product with room
/// for a 16 MiB batch in flight per stream.
pub fn transport_config(config: &BrokerConfig) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(config.streams_per_connection_max.into());
    transport.max_concurrent_uni_streams(config.streams_per_connection_max.into());
    // Sized to the bandwidth-delay product of a data-centre path with room for bursts
    // (16 MiB per connection covers 16 GB/s at 1 ms RTT). Larger windows only let a
    // sender queue more than the path holds: on loopback 32/128 MiB measured 5-6%
    // slower than these (docs/benchmarks.md, optimisation pass, second round).
    transport.stream_receive_window(quinn::VarInt::from_u32(4 * 1024 * 1024));
    transport.receive_window(quinn::VarInt::from_u32(16 * 1024 * 1024));
    transport.send_window(16 * 1024 * 1024);
    if let Ok(idle) = IDLE_TIMEOUT.try_into() {
        transport.max_idle_timeout(Some(idle));
    }
    transport
}

impl RunningBroker {
    pub fn state(&self) -> &Arc<BrokerState> {
        &self.state
    }

    /// Stops gracefully: stop accepting, let in-flight requests finish (long polls are
    /// woken to answer now), flush every partition, close connections.
    pub async fn shutdown(self) {
        let state = &self.state;
        state.ready.store(false, Ordering::Release);
        state.shutdown.send_replace(true);
        self.accept_task.abort();
        // Waiting for every permit means every in-flight request has answered.
        let all = u32::try_from(state.config.requests_in_flight_max).unwrap_or(u32::MAX);
        if tokio::time::timeout(SHUTDOWN_DRAIN_MAX, state.in_flight.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish within {SHUTDOWN_DRAIN_MAX:?}");
        }
        if tokio::time::timeout(
            SHUTDOWN_ACK_WAIT_MAX,
            state.unacknowledged.acquire_many(all),
        )
        .await
        .is_err()
        {
            tracing::debug!("some answers were not acknowledged within {SHUTDOWN_ACK_WAIT_MAX:?}");
        }
        // Every background loop ends on the shutdown signal; they are joined before
        // the controller they may be calling stops.
        state.tasks.join(TASKS_JOIN_MAX).await;
        if let Err(err) = state.cluster.controller.shutdown().await {
            tracing::warn!(%err, "controller shutdown");
        }
        let flush_state = Arc::clone(state);
        let flushed = tokio::task::spawn_blocking(move || {
            for topic in flush_state.topics.all() {
                for partition in &topic.partitions {
                    if let Err(err) = partition.sync_now(&flush_state.metrics) {
                        tracing::error!(topic = %topic.name, partition = partition.index, %err, "final flush failed");
                    }
                }
            }
            flush_state.topics.close_all();
        })
        .await;
        if let Err(err) = flushed {
            tracing::error!(%err, "final flush task failed");
        }
        self.endpoint
            .close(CLOSE_SHUTDOWN.into(), b"broker shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.admin_task.abort();
        tracing::info!("broker stopped");
    }
}

/// The TLS alert of a handshake the broker refused over the client's certificate
/// (missing under mTLS, from another CA, expired), if that is why it failed.
fn certificate_refusal(err: &quinn::ConnectionError) -> Option<&'static str> {
    let quinn::ConnectionError::TransportError(transport) = err else {
        return None;
    };
    // TLS alerts travel as QUIC crypto errors: 0x100 plus the alert number.
    let code = u64::from(transport.code);
    let alert = code.checked_sub(0x100).filter(|a| *a < 0x100)?;
    match alert {
        42 => Some("bad certificate"),
        43 => Some("unsupported certificate"),
        44 => Some("certificate revoked"),
        45 => Some("certificate expired"),
        46 => Some("certificate unknown"),
        48 => Some("certificate from an unknown CA"),
        116 => Some("no client certificate (authentication = \"mtls\")"),
        _ => None,
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, state: Arc<BrokerState>) {
    while let Some(incoming) = endpoint.accept().await {
        // Counted now, before the handshake, so handshakes in progress count too.
        let from = incoming.remote_address();
        let ticket = match state.admission.admit(from.ip()) {
            Ok(ticket) => ticket,
            Err(refused) => {
                state.metrics.connection_refused(refused.reason());
                state.refusal_log.connection_refused(from, refused);
                incoming.refuse();
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let connection = match incoming.await {
                Ok(c) => c,
                Err(err) => {
                    if let Some(alert) = certificate_refusal(&err) {
                        state.metrics.authentication_failed("mtls");
                        state.refusal_log.authentication_failed(from, alert);
                    }
                    tracing::debug!(%err, "handshake failed");
                    return;
                }
            };
            state.metrics.connection(1);
            serve_connection(connection, &state, Arc::new(ticket)).await;
            state.metrics.connection(-1);
        });
    }
}

async fn serve_connection(
    connection: quinn::Connection,
    state: &Arc<BrokerState>,
    ticket: Arc<ConnectionTicket>,
) {
    let mut shutdown = state.shutdown.subscribe();
    let from = connection.remote_address();
    // rustls verified a presented certificate against the cluster's CA (and, under
    // mTLS, refused the handshake without one): it names the principal.
    let presented = connection.peer_identity().and_then(|any| {
        any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()
    });
    let principal = match presented.as_deref().map(|chain| chain.first()) {
        None => crate::security::Principal::Anonymous,
        Some(leaf) => {
            match leaf.and_then(|leaf| crate::security::Principal::from_certificate(leaf)) {
                Some(principal) => principal,
                None => {
                    state.metrics.authentication_failed("mtls");
                    state.refusal_log.authentication_failed(
                        from,
                        "a certificate that names no user (no common name)",
                    );
                    connection.close(
                        CLOSE_UNAUTHENTICATED.into(),
                        b"the certificate names no user",
                    );
                    return;
                }
            }
        }
    };
    // Under SCRAM alone a certificate names nobody (other than a broker's): the client
    // authenticates with its password.
    let principal = match principal {
        crate::security::Principal::User(_)
            if state.config.authentication.scram && !state.config.authentication.mtls =>
        {
            crate::security::Principal::Anonymous
        }
        other => other,
    };
    let caller = Arc::new(
        crate::security::ConnectionIdentity::new(principal)
            .with_channel_binding(crate::join::channel_binding(&connection)),
    );
    let idle_max = Duration::from_millis(state.config.connection_idle_max_ms);
    // Requests of this connection not yet answered: an idle connection has none.
    let open_requests = Arc::new(AtomicUsize::new(0));
    let mut idle_deadline = tokio::time::Instant::now() + idle_max;
    loop {
        let stream = tokio::select! {
            bi = connection.accept_bi() => match bi {
                Ok((send, recv)) => Stream::Answered(send, recv),
                Err(_) => return,
            },
            uni = connection.accept_uni() => match uni {
                Ok(recv) => Stream::Unanswered(recv),
                Err(_) => return,
            },
            _ = tokio::time::sleep_until(idle_deadline) => {
                if open_requests.load(Ordering::Acquire) == 0 {
                    tracing::debug!(%from, "closing an idle connection");
                    connection.close(CLOSE_IDLE.into(), b"idle for connection_idle_max_ms");
                    return;
                }
                idle_deadline = tokio::time::Instant::now() + idle_max;
                continue;
            }
            _ = shutdown.wait_for(|stopping| *stopping) => {
                // Streams already accepted finish; new ones are not taken.
                return;
            }
        };
        idle_deadline = tokio::time::Instant::now() + idle_max;
        let request = IncomingRequest {
            state: Arc::clone(state),
            ticket: Arc::clone(&ticket),
            open_requests: OpenRequest::new(&open_requests),
            caller: Arc::clone(&caller),
            from,
        };
        tokio::spawn(request.serve(stream));
    }
}

/// One accepted request stream.
enum Stream {
    /// A bidirectional stream: the client waits for an answer.
    Answered(quinn::SendStream, quinn::RecvStream),
    /// A unidirectional stream: an `acks = none` produce.
    Unanswered(quinn::RecvStream),
}

/// Counts a request among its connection's open ones until dropped.
struct OpenRequest(Arc<AtomicUsize>);

impl OpenRequest {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct IncomingRequest {
    state: Arc<BrokerState>,
    ticket: Arc<ConnectionTicket>,
    open_requests: OpenRequest,
    caller: Arc<crate::security::ConnectionIdentity>,
    from: SocketAddr,
}

/// How a request's read ended.
enum Read {
    Frame(RequestFrame, RequestSlot),
    Failed(RequestError),
    /// Not whole within `request_read_timeout_ms`.
    TimedOut,
}

impl IncomingRequest {
    async fn serve(self, stream: Stream) {
        let _open = &self.open_requests;
        let state = &self.state;
        let (mut send, mut recv) = match stream {
            Stream::Answered(send, recv) => (Some(send), recv),
            Stream::Unanswered(recv) => (None, recv),
        };
        let answered = send.is_some();
        let read_limit_ms = state.config.request_read_timeout_ms;
        // The deadline covers waiting for a request slot too: a stream that cannot be
        // read in time is reset whatever held it back.
        let read = tokio::time::timeout(Duration::from_millis(read_limit_ms), async {
            let stopping = || {
                Read::Failed(RequestError::new(
                    ErrorCode::BrokerShuttingDown,
                    "the broker is stopping",
                ))
            };
            let principal = self.caller.principal();
            let principal_slot = match &*principal {
                crate::security::Principal::User(name) => {
                    match state.admission.principal_slot(name).await {
                        Some(slot) => Some(slot),
                        None => return stopping(),
                    }
                }
                crate::security::Principal::Anonymous | crate::security::Principal::Broker => None,
            };
            let Some(mut slot) = self
                .ticket
                .request_slot(state.admission.broker_bytes())
                .await
            else {
                return stopping();
            };
            slot.principal = principal_slot;
            match read_frame(&mut recv, &mut slot).await {
                Ok(frame) => Read::Frame(frame, slot),
                Err(err) => Read::Failed(err),
            }
        })
        .await
        .unwrap_or(Read::TimedOut);
        let (frame, slot) = match read {
            Read::Frame(frame, slot) => (frame, slot),
            Read::TimedOut => {
                state.metrics.stream_timed_out("read");
                state
                    .refusal_log
                    .stream_timed_out(self.from, "read", read_limit_ms);
                let _ = recv.stop(STREAM_TIMED_OUT.into());
                if let Some(mut send) = send {
                    let _ = send.reset(STREAM_TIMED_OUT.into());
                }
                return;
            }
            Read::Failed(err) => {
                if err.disconnected {
                    return;
                }
                state.metrics.request_error("unknown", err.code.name());
                let _ = recv.stop(STREAM_REFUSED.into());
                if let Some(send) = send.as_mut() {
                    let Ok(permit) = state.in_flight.acquire().await else {
                        return;
                    };
                    self.answer(send, Err(err), permit).await;
                }
                return;
            }
        };
        // Handling has its own broker-wide bound; reading did not hold it, so streams
        // that stall before their request is whole cannot take it from others.
        let Ok(permit) = state.in_flight.acquire().await else {
            return;
        };
        state.metrics.in_flight(1);
        // A principal over its client quota waits out its throttle before its next
        // request is handled, whether or not its client honoured the time it was told.
        let held = state
            .quota_meter
            .held_for(self.caller.principal().name(), state.clock.now_ms_u64());
        if !held.is_zero() {
            tokio::time::sleep(held).await;
        }
        let started = Instant::now();
        let outcome = handlers::handle(frame, state, answered, &self.caller).await;
        let api_name = match &outcome {
            Ok((api, _)) => api.name(),
            Err((api, _)) => api.map_or("unknown", |a| a.name()),
        };
        state.metrics.request(api_name);
        handlers::charge_quota(
            state,
            &self.caller.principal(),
            crate::quota::QuotaKind::RequestTime,
            started.elapsed().as_secs_f64() * 1_000.0,
        );
        let answer = match outcome {
            Ok((_, outgoing)) => Ok(outgoing),
            Err((_, err)) => {
                state.metrics.request_error(api_name, err.code.name());
                Err(err)
            }
        };

        match send.as_mut() {
            Some(send) => {
                if answer.is_err() {
                    let _ = recv.stop(STREAM_REFUSED.into());
                }
                self.answer(send, answer, permit).await;
            }
            None => {
                if let Err(err) = answer {
                    tracing::debug!(code = %err.code, message = %err.message, "unanswered request failed");
                }
            }
        }
        state
            .metrics
            .request_duration(api_name, started.elapsed().as_secs_f64());
        state.metrics.in_flight(-1);
        drop(slot);
    }

    /// Writes an answer and waits until the client took it (so shutdown does not cut
    /// it off), within `response_write_timeout_ms`; a slower reader's stream is reset.
    /// The request stops counting as in flight once its answer is written: waiting for
    /// the acknowledgement counts among the unacknowledged answers instead.
    async fn answer(
        &self,
        send: &mut quinn::SendStream,
        answer: Result<Outgoing, RequestError>,
        in_flight: tokio::sync::SemaphorePermit<'_>,
    ) {
        let state = &self.state;
        let limit_ms = state.config.response_write_timeout_ms;
        let written = tokio::time::timeout(Duration::from_millis(limit_ms), async {
            let written = match answer {
                Ok(Outgoing::Frame(frame)) => send.write_all(&frame).await,
                Ok(Outgoing::Chunks(mut chunks)) => send.write_all_chunks(&mut chunks).await,
                Ok(Outgoing::Nothing) => Ok(()),
                Err(err) => {
                    let frame: Bytes = ErrorResponse::encode(err.code, &err.message);
                    send.write_all(&frame).await
                }
            };
            match written {
                Ok(()) => {
                    let _ = send.finish();
                    let Ok(_unacknowledged) = state.unacknowledged.acquire().await else {
                        return;
                    };
                    drop(in_flight);
                    let _ = send.stopped().await;
                }
                Err(err) => tracing::debug!(%err, "could not write response"),
            }
        })
        .await;
        if written.is_err() {
            state.metrics.stream_timed_out("write");
            state
                .refusal_log
                .stream_timed_out(self.from, "written", limit_ms);
            let _ = send.reset(STREAM_TIMED_OUT.into());
        }
    }
}

/// Reads one length-prefixed request frame. Its memory grows as its bytes arrive, each
/// part taken from the request byte budgets first; the length prefix alone allocates
/// nothing.
async fn read_frame(
    recv: &mut quinn::RecvStream,
    slot: &mut RequestSlot,
) -> Result<RequestFrame, RequestError> {
    // A stream the client finished early is a malformed request from a client still
    // waiting for the answer; a reset or lost connection leaves nobody to answer.
    let short = |err: quinn::ReadExactError, expected: usize| match err {
        quinn::ReadExactError::FinishedEarly(got) => RequestError::new(
            ErrorCode::MalformedFrame,
            format!("request stream ended after {got} of {expected} bytes"),
        ),
        other => RequestError::disconnected(other),
    };
    let mut prefix = [0u8; FRAME_LENGTH_BYTES];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| short(e, FRAME_LENGTH_BYTES))?;
    let len = frame_length(prefix, REQUEST_HEAD_BYTES).map_err(|e| match e {
        FrameError::TooLarge(_) => RequestError::new(ErrorCode::BatchTooLarge, e.to_string()),
        FrameError::TooShort { .. } => RequestError::new(ErrorCode::MalformedFrame, e.to_string()),
    })?;
    // The chunks as quinn hands them over; joined once the frame is whole.
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received = 0;
    while received < len {
        if received == slot.held_bytes() {
            let more = (len - received).min(READ_CHUNK_BYTES_MAX);
            slot.take_bytes(more).await.ok_or_else(|| {
                RequestError::new(ErrorCode::BrokerShuttingDown, "the broker is stopping")
            })?;
        }
        match recv.read_chunk(slot.held_bytes() - received, true).await {
            Ok(Some(chunk)) => {
                received += chunk.bytes.len();
                chunks.push(chunk.bytes);
            }
            Ok(None) => return Err(short(quinn::ReadExactError::FinishedEarly(received), len)),
            Err(err) => {
                return Err(RequestError::disconnected(
                    quinn::ReadExactError::ReadError(err),
                ));
            }
        }
    }
    let mut body = BytesMut::with_capacity(len);
    for chunk in chunks {
        body.extend_from_slice(&chunk);
    }
    RequestFrame::parse(body)
        .map_err(|e| RequestError::new(ErrorCode::MalformedFrame, e.to_string()))
}

/// How often the broker checks whether a burst of requests ended.
pub const TRIM_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Request bytes held at some check that make the next quiet check give memory back.
pub const TRIM_AFTER_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// Gives memory back to the system once a burst of requests has ended. The allocator
/// (glibc's) keeps freed memory in its arenas for reuse, so after a flood of large
/// requests the broker's resident memory stayed at its peak (205 MiB after a 64 MiB
/// half-sent-frame flood, against 24 MiB before); `malloc_trim` returns the free
/// pages of every arena. It runs only after a burst, when nothing large is in flight.
async fn trim_loop(state: Arc<BrokerState>) {
    let mut tick = tokio::time::interval(TRIM_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut burst = false;
    let mut shutdown = state.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let held = state.admission.request_bytes();
        if held >= TRIM_AFTER_REQUEST_BYTES {
            burst = true;
        } else if burst && held < TRIM_AFTER_REQUEST_BYTES / 8 {
            burst = false;
            let trimmed = tokio::task::spawn_blocking(|| {
                // SAFETY: malloc_trim only returns free memory to the system; it
                // touches no memory the program holds.
                unsafe { libc::malloc_trim(0) }
            })
            .await;
            tracing::debug!(?trimmed, "memory given back after a burst of requests");
        }
    }
}

/// How often group sessions are checked for expiry.
pub const SESSION_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Expires consumer group members that stopped heartbeating.
async fn session_loop(state: Arc<BrokerState>) {
    let mut tick = tokio::time::interval(SESSION_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = state.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let partitions_of =
            |topic: &str| state.topics.get(topic).map(|t| t.partitions.len() as u32);
        let expired = state
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .poll_expired(state.clock.now_ms(), &partitions_of);
        for (group, member) in expired {
            tracing::info!(%group, %member, "group member's session expired; its partitions move");
        }
    }
}

/// Applies retention to every partition, once per `retention_check_interval`.
async fn retention_loop(state: Arc<BrokerState>) {
    let mut tick = tokio::time::interval(state.config.retention_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = state.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let worker = Arc::clone(&state);
        let swept = tokio::task::spawn_blocking(move || {
            for topic in worker.topics.all() {
                for partition in &topic.partitions {
                    match partition.enforce_retention(worker.clock.now_ms()) {
                        Ok(report) if report.segments_deleted > 0 => tracing::info!(
                            topic = %topic.name, partition = partition.index,
                            segments = report.segments_deleted, bytes = report.bytes_deleted,
                            "retention deleted segments"),
                        Ok(_) => {}
                        Err(err) => tracing::warn!(topic = %topic.name, partition = partition.index, %err, "retention failed"),
                    }
                }
            }
        })
        .await;
        if let Err(err) = swept {
            tracing::error!(%err, "retention task failed");
        }
    }
}
