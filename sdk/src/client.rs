//! The connection to a broker and the requests it can send. Every request opens its own
//! QUIC stream on one shared connection, so slow requests (a long-poll fetch) never
//! hold up others. A lost connection is replaced on the next request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quiver_wire::batch::{
    BatchBuilder, BatchHeader, BatchSplitter, DecodedRecord, ProducerStamp, Record, decode_records,
};
use quiver_wire::frame::{FRAME_LENGTH_BYTES, RESPONSE_HEAD_BYTES, frame_length, parse_response};
use quiver_wire::message::*;
pub use quiver_wire::plugin::PluginCall;

use crate::error::{ConnectError, RequestError};

/// How to reach and trust a broker: `ClientConfig::new(broker, ca)` and the setters
/// named as the fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// `HOST:PORT` of the broker's QUIC listener, or several separated by commas, tried
    /// in order until one answers.
    pub broker: String,
    /// PEM file of the CA that signed the broker's certificate.
    pub ca_cert: Option<PathBuf>,
    /// The name checked against the broker's certificate; defaults to the host part of
    /// `broker`.
    pub server_name: Option<String>,
    /// Client certificate chain and key (PEM) for brokers that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// A user and password for brokers that authenticate with SCRAM-SHA-256; every
    /// connection authenticates before its first request.
    pub scram: Option<ScramLogin>,
    /// How long the QUIC and TLS handshake may take.
    pub connect_timeout: Duration,
    /// How long a request may take beyond any wait it asks the broker for.
    pub request_timeout: Duration,
}

config_setters!(ClientConfig {
    broker: String => into,
    ca_cert: PathBuf => some_into,
    server_name: String => some_into,
    client_cert: (PathBuf, PathBuf) => opt,
    scram: ScramLogin => opt,
    connect_timeout: Duration => set,
    request_timeout: Duration => set,
});

impl ClientConfig {
    /// A config for `broker` trusting the CA at `ca_cert`.
    pub fn new(broker: impl Into<String>, ca_cert: impl Into<PathBuf>) -> Self {
        Self {
            broker: broker.into(),
            ca_cert: Some(ca_cert.into()),
            server_name: None,
            client_cert: None,
            scram: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A SCRAM-SHA-256 user and password. The password stays in memory for reconnects and
/// is never printed.
#[derive(Clone)]
pub struct ScramLogin {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for ScramLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramLogin")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Options of one fetch: `FetchOptions::default()` and the setters named as the
/// fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FetchOptions {
    /// How long the broker may wait for `min_bytes` to arrive.
    pub max_wait: Duration,
    /// Bytes the broker waits for (up to `max_wait`) before it answers.
    pub min_bytes: u32,
    /// A soft cap; the first batch comes whole even if larger.
    pub max_bytes: u32,
    /// A registered plugin the broker runs over this fetch's records (after the
    /// topic's own fetch-stage plugins), with the parameters its `init` gets.
    pub plugin: Option<PluginCall>,
}

config_setters!(FetchOptions {
    max_wait: Duration => set,
    min_bytes: u32 => set,
    max_bytes: u32 => set,
    plugin: PluginCall => opt,
});

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 4 * 1024 * 1024,
            plugin: None,
        }
    }
}

/// Stored batches as the broker sent them, not decoded.
#[derive(Debug, Clone)]
pub struct FetchedBatches {
    /// The partition's high watermark: the end of what consumers may read.
    pub high_watermark: u64,
    /// The partition's first stored offset (older records were removed by retention).
    pub log_start_offset: u64,
    /// The offset the partition's next record will get.
    pub log_end_offset: u64,
    /// How long the broker throttles this client for (client quotas; 0 when not). The
    /// client sends that broker nothing more until it has passed.
    pub throttle_time_ms: u32,
    /// Back-to-back batches; split with [`quiver_wire::batch::BatchSplitter`].
    pub batches: Bytes,
}

/// Records from one fetch.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The partition's high watermark: the end of what consumers may read.
    pub high_watermark: u64,
    /// The partition's first stored offset (older records were removed by retention).
    pub log_start_offset: u64,
    /// The offset the partition's next record will get.
    pub log_end_offset: u64,
    /// Records at or after the requested offset, in offset order.
    pub records: Vec<DecodedRecord>,
    /// Where the next fetch should start.
    pub next_offset: u64,
}

/// Where a produced batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceReceipt {
    /// The partition the batch was stored in.
    pub partition: u32,
    /// Offset of the batch's first record; record `i` of the batch has `base_offset + i`.
    pub base_offset: u64,
    /// Records in the batch.
    pub record_count: u32,
    /// When the broker stored the batch, in milliseconds since the epoch.
    pub log_append_time: i64,
}

/// How long a metadata refresh waits for more brokers' answers after the first, to
/// weigh their leader epochs. A broker slower than this is not waited for.
const METADATA_GRACE: Duration = Duration::from_millis(300);

/// Per partition (topic, index), the leader named in the newest leader epoch among
/// `answers`; partitions without a leader in any answer are left out.
fn newest_leaders(answers: &[MetadataResponse]) -> std::collections::HashMap<(String, u32), u32> {
    let mut newest: std::collections::HashMap<(String, u32), (u32, u32)> =
        std::collections::HashMap::new();
    for metadata in answers {
        for t in &metadata.topics {
            for p in &t.partitions {
                if p.leader == u32::MAX {
                    continue;
                }
                let entry = newest
                    .entry((t.name.clone(), p.partition))
                    .or_insert((p.leader_epoch, p.leader));
                if p.leader_epoch > entry.0 {
                    *entry = (p.leader_epoch, p.leader);
                }
            }
        }
    }
    newest
        .into_iter()
        .map(|(key, (_, leader))| (key, leader))
        .collect()
}

/// How many times a group request looks for a moved coordinator before failing.
const COORDINATOR_ATTEMPTS: u32 = 6;
/// The wait before looking again, times the attempt number.
const COORDINATOR_BACKOFF: Duration = Duration::from_millis(250);

/// The APIs a consumer group coordinator serves.
fn is_group_api(api: quiver_wire::ApiKey) -> bool {
    use quiver_wire::ApiKey;
    matches!(
        api,
        ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::GroupHeartbeat
            | ApiKey::ListGroups
            | ApiKey::DescribeGroup
            | ApiKey::DeleteGroup
    )
}

/// A connection to one broker. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

type Routes = std::collections::HashMap<String, std::collections::HashMap<u32, SocketAddr>>;

struct Inner {
    config: ClientConfig,
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    server_name: String,
    connection: tokio::sync::Mutex<Option<quinn::Connection>>,
    /// In a cluster: the broker leading each partition this client produced to or
    /// fetched from, learned from metadata and forgotten on `NOT_LEADER` or a lost
    /// connection.
    /// By topic, then partition, so a lookup by `&str` allocates nothing.
    routes: std::sync::Mutex<Routes>,
    /// Every broker the last metadata named, to ask when the bootstrap broker is gone.
    known_brokers: std::sync::Mutex<Vec<SocketAddr>>,
    /// The broker coordinating consumer groups (in a cluster, the controller leader);
    /// `None` sends group requests to the bootstrap broker, as a standalone broker
    /// coordinates its own groups.
    coordinator: std::sync::Mutex<Option<SocketAddr>>,
    /// Connections to brokers other than the bootstrap one.
    others: tokio::sync::Mutex<std::collections::HashMap<SocketAddr, quinn::Connection>>,
    /// Until when a broker asked this client to send it nothing (client quotas: the
    /// throttle time of its last produce or fetch answer), by route.
    throttled_until:
        std::sync::Mutex<std::collections::HashMap<Option<SocketAddr>, tokio::time::Instant>>,
}

impl Client {
    /// Resolves the broker, sets up TLS and connects once, so a wrong address or CA
    /// fails here rather than on the first request. `broker` may list several
    /// bootstrap addresses separated by commas (Kafka's `bootstrap.servers`): they are
    /// tried in order, and the first that answers is this client's bootstrap broker.
    pub async fn connect(config: ClientConfig) -> Result<Self, ConnectError> {
        let addresses: Vec<String> = config
            .broker
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        let mut last = ConnectError::InvalidAddress(config.broker.clone());
        for address in addresses {
            let mut one = config.clone();
            one.broker = address;
            match Self::connect_to_bootstrap(one).await {
                Ok(client) => return Ok(client),
                // A certificate or credential problem is the same on every broker.
                Err(
                    err @ (ConnectError::CaCert { .. }
                    | ConnectError::ClientCert { .. }
                    | ConnectError::NoCaCert
                    | ConnectError::Tls(_)
                    | ConnectError::Authentication(_)),
                ) => return Err(err),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// [`Client::connect`] to one bootstrap address.
    async fn connect_to_bootstrap(config: ClientConfig) -> Result<Self, ConnectError> {
        let (host, _) = config
            .broker
            .rsplit_once(':')
            .ok_or_else(|| ConnectError::InvalidAddress(config.broker.clone()))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addr = tokio::net::lookup_host(config.broker.as_str())
            .await
            .map_err(|e| ConnectError::Resolve {
                host: host.clone(),
                message: e.to_string(),
            })?
            .next()
            .ok_or_else(|| ConnectError::Resolve {
                host: host.clone(),
                message: "no addresses".into(),
            })?;
        let client_config = crate::tls::quic_client_config(&config)?;
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .expect("constant address parses");
        let mut endpoint = crate::transport::client_endpoint(bind)
            .map_err(|e| ConnectError::Endpoint(e.to_string()))?;
        endpoint.set_default_client_config(client_config);
        let server_name = config.server_name.clone().unwrap_or(host);
        let client = Self {
            inner: Arc::new(Inner {
                config,
                endpoint,
                addr,
                server_name,
                connection: tokio::sync::Mutex::new(None),
                routes: std::sync::Mutex::new(std::collections::HashMap::new()),
                known_brokers: std::sync::Mutex::new(Vec::new()),
                coordinator: std::sync::Mutex::new(None),
                others: tokio::sync::Mutex::new(std::collections::HashMap::new()),
                throttled_until: std::sync::Mutex::new(std::collections::HashMap::new()),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    /// The broker address this client talks to.
    pub fn broker_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    async fn connection(&self) -> Result<quinn::Connection, ConnectError> {
        let mut slot = self.inner.connection.lock().await;
        if let Some(conn) = slot.as_ref()
            && conn.close_reason().is_none()
        {
            return Ok(conn.clone());
        }
        let conn = self.open(self.inner.addr, &self.inner.server_name).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Opens a QUIC connection to `addr`, checking its certificate against
    /// `server_name`, within the connect timeout.
    async fn open(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<quinn::Connection, ConnectError> {
        let text = addr.to_string();
        let connecting = self
            .inner
            .endpoint
            .connect(addr, server_name)
            .map_err(|e| ConnectError::Connect {
                addr: text.clone(),
                message: e.to_string(),
            })?;
        let after = self.inner.config.connect_timeout;
        let connection = tokio::time::timeout(after, connecting)
            .await
            .map_err(|_| ConnectError::Timeout {
                addr: text.clone(),
                after,
            })?
            .map_err(|e| ConnectError::Connect {
                addr: text.clone(),
                message: e.to_string(),
            })?;
        if let Some(login) = &self.inner.config.scram {
            tokio::time::timeout(after, self.authenticate(&connection, login))
                .await
                .map_err(|_| ConnectError::Timeout {
                    addr: text.clone(),
                    after,
                })??;
        }
        Ok(connection)
    }

    /// Runs a SCRAM-SHA-256 exchange on a new connection (RFC 5802): client-first,
    /// server-first, client-final, server-final, whose signature proves the broker
    /// knows the user's credential.
    async fn authenticate(
        &self,
        connection: &quinn::Connection,
        login: &ScramLogin,
    ) -> Result<(), ConnectError> {
        use quiver_wire::sasl::{SCRAM_SHA_256, SaslAuthenticateRequest, SaslAuthenticateResponse};
        let failed = |message: String| ConnectError::Authentication(message);
        let step = |message: String| async move {
            let frame = SaslAuthenticateRequest {
                mechanism: SCRAM_SHA_256.to_owned(),
                message,
            }
            .encode_frame();
            let body = exchange(connection, &mut [frame])
                .await
                .map_err(|e| match e {
                    RequestError::Broker(answer) => failed(answer.message),
                    other => ConnectError::Connect {
                        addr: connection.remote_address().to_string(),
                        message: other.to_string(),
                    },
                })?;
            SaslAuthenticateResponse::decode_body(body)
                .map(|answer| answer.message)
                .map_err(|e| failed(e.to_string()))
        };
        let (client, first) = quiver_wire::scram::ScramClient::new(&login.user, &login.password)
            .map_err(|e| failed(e.to_string()))?;
        let server_first = step(first).await?;
        let (client, last) = client
            .handle_server_first(&server_first)
            .map_err(|e| failed(e.to_string()))?;
        let server_final = step(last).await?;
        client
            .handle_server_final(&server_final)
            .map_err(|e| failed(e.to_string()))
    }

    /// A connection to `addr`: the bootstrap connection, or one to another broker of
    /// the cluster, opened on first use.
    async fn connection_to(
        &self,
        addr: Option<SocketAddr>,
    ) -> Result<quinn::Connection, ConnectError> {
        let Some(addr) = addr.filter(|a| *a != self.inner.addr) else {
            return self.connection().await;
        };
        let mut others = self.inner.others.lock().await;
        if let Some(conn) = others.get(&addr)
            && conn.close_reason().is_none()
        {
            return Ok(conn.clone());
        }
        let name = self
            .inner
            .config
            .server_name
            .clone()
            .unwrap_or_else(|| addr.ip().to_string());
        let conn = self.open(addr, &name).await?;
        others.insert(addr, conn.clone());
        Ok(conn)
    }

    /// The broker to send a partition's produce or fetch to: its leader when this
    /// client knows it (from cluster metadata), else the bootstrap broker.
    async fn route(&self, topic: &str, partition: u32) -> Option<SocketAddr> {
        let known = |client: &Self| {
            client
                .inner
                .routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(topic)
                .and_then(|partitions| partitions.get(&partition))
                .copied()
        };
        if let Some(addr) = known(self) {
            return Some(addr);
        }
        self.refresh_routes(topic).await;
        known(self)
    }

    /// The brokers to ask for metadata, in order: the bootstrap broker (`None`), then
    /// every broker the last metadata named.
    fn candidates(&self) -> Vec<Option<SocketAddr>> {
        let mut candidates = vec![None];
        candidates.extend(
            self.inner
                .known_brokers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|a| Some(*a)),
        );
        candidates
    }

    /// Learns `topic`'s partition leaders. Every broker this client knows is asked at
    /// once, and for each partition the answer naming the newest leader epoch wins: a
    /// broker cut off from the controller (the bootstrap broker, say) keeps answering
    /// with the leader it last knew, and a client that believed the first answer would
    /// keep sending to a deposed leader until the network healed. Answers arriving
    /// within [`METADATA_GRACE`] of the first are weighed; a broker that says nothing
    /// in that time does not hold the others up. A lone broker (one broker in the
    /// metadata) serves everything itself.
    async fn refresh_routes(&self, topic: &str) {
        use futures_util::StreamExt;
        let request = MetadataRequest {
            topics: Some(vec![topic.to_owned()]),
        };
        let frame = request.encode_frame();
        // The bootstrap broker once, not again under its address.
        let bootstrap = self.inner.addr;
        let mut asked: futures_util::stream::FuturesUnordered<_> = self
            .candidates()
            .into_iter()
            .filter(|candidate| *candidate != Some(bootstrap))
            .map(|candidate| {
                let mut chunks = [frame.clone()];
                async move {
                    let body = self
                        .round_trip_to(candidate, &mut chunks, Duration::ZERO)
                        .await
                        .ok()?;
                    MetadataResponse::decode_body(body).ok()
                }
            })
            .collect();
        let mut answers: Vec<MetadataResponse> = Vec::new();
        while let Some(answer) = asked.next().await {
            if let Some(metadata) = answer {
                answers.push(metadata);
                break;
            }
        }
        if answers.is_empty() {
            return;
        }
        let grace = tokio::time::sleep(METADATA_GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                answer = asked.next() => match answer {
                    Some(Some(metadata)) => answers.push(metadata),
                    Some(None) => {}
                    None => break,
                },
                _ = &mut grace => break,
            }
        }
        drop(asked);
        if answers.iter().any(|m| m.brokers.len() <= 1) {
            // A lone broker: every partition goes to the bootstrap connection.
            let mut routes = self.inner.routes.lock().unwrap_or_else(|p| p.into_inner());
            for metadata in answers.iter().filter(|m| m.brokers.len() <= 1) {
                for t in &metadata.topics {
                    for p in &t.partitions {
                        routes
                            .entry(t.name.clone())
                            .or_default()
                            .insert(p.partition, self.inner.addr);
                    }
                }
            }
            return;
        }
        let mut addrs: std::collections::HashMap<u32, SocketAddr> =
            std::collections::HashMap::new();
        for metadata in &answers {
            for b in &metadata.brokers {
                if let Ok(ip) = b.host.parse::<std::net::IpAddr>() {
                    addrs
                        .entry(b.node_id)
                        .or_insert(SocketAddr::new(ip, b.port));
                }
            }
        }
        *self
            .inner
            .known_brokers
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = addrs.values().copied().collect();
        let newest = newest_leaders(&answers);
        let mut routes = self.inner.routes.lock().unwrap_or_else(|p| p.into_inner());
        for ((name, partition), leader) in newest {
            if let Some(addr) = addrs.get(&leader) {
                routes.entry(name).or_default().insert(partition, *addr);
            }
        }
    }

    /// Forgets a partition's leader after an answer that says it moved.
    fn forget_route(&self, topic: &str, partition: u32, err: &RequestError) {
        // Not only NOT_LEADER: a leader cut off from its followers (and from the
        // controller) answers nothing in time, or that it could not replicate, while
        // another broker may already lead in a newer epoch.
        let moved = matches!(
            err,
            RequestError::ConnectionLost(_) | RequestError::Timeout(_) | RequestError::Connect(_)
        ) || matches!(
            err.code(),
            Some(
                quiver_wire::ErrorCode::NotLeader
                    | quiver_wire::ErrorCode::Timeout
                    | quiver_wire::ErrorCode::NotEnoughReplicas
                    | quiver_wire::ErrorCode::NotEnoughReplicasAfterAppend
            )
        );
        if moved {
            self.inner
                .routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(topic)
                .map(|partitions| partitions.remove(&partition));
        }
    }

    /// Sends one request frame (as chunks) to the bootstrap broker and returns the
    /// success body.
    async fn round_trip(
        &self,
        chunks: &mut [Bytes],
        extra_wait: Duration,
    ) -> Result<Bytes, RequestError> {
        self.round_trip_to(None, chunks, extra_wait).await
    }

    /// As [`Client::round_trip`], to `addr` (the bootstrap broker when `None`).
    async fn round_trip_to(
        &self,
        addr: Option<SocketAddr>,
        chunks: &mut [Bytes],
        extra_wait: Duration,
    ) -> Result<Bytes, RequestError> {
        self.wait_out_throttle(addr).await;
        let limit = self.inner.config.request_timeout + extra_wait;
        tokio::time::timeout(limit, async {
            let conn = self.connection_to(addr).await?;
            exchange(&conn, chunks).await
        })
        .await
        .map_err(|_| RequestError::Timeout(limit))?
    }

    /// Waits until the broker at `addr` stops throttling this client (Kafka's clients
    /// likewise send nothing to a broker for the throttle time it answered).
    async fn wait_out_throttle(&self, addr: Option<SocketAddr>) {
        let until = self
            .inner
            .throttled_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .copied();
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    /// Records a throttle time a broker answered: nothing more goes to it until it
    /// has passed.
    fn throttled(&self, addr: Option<SocketAddr>, throttle_time_ms: u32) {
        let mut throttled = self
            .inner
            .throttled_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        throttled.retain(|_, until| *until > now);
        if throttle_time_ms > 0 {
            let until = now + Duration::from_millis(u64::from(throttle_time_ms));
            let entry = throttled.entry(addr).or_insert(until);
            *entry = (*entry).max(until);
        }
    }

    /// Sends a pre-encoded request frame (length prefix included) and returns the body
    /// of a successful answer. Wire-level: only with the `internal` feature, for the
    /// broker's own peer connections and the project's tests; not a stable API.
    #[cfg(feature = "internal")]
    #[doc(hidden)]
    pub async fn send_frame(&self, frame: Bytes) -> Result<Bytes, RequestError> {
        self.round_trip(&mut [frame], Duration::ZERO).await
    }

    /// Whether `self` and `other` are clones of one client (one connection pool).
    /// Only with the `internal` feature, as [`Client::send_frame`].
    #[cfg(feature = "internal")]
    #[doc(hidden)]
    pub fn same_client(&self, other: &Client) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Sends any request and decodes its typed response. Wire-level, as
    /// [`Client::send_frame`]: only with the `internal` feature.
    #[cfg(feature = "internal")]
    #[doc(hidden)]
    pub async fn call<R: Rpc>(&self, request: &R) -> Result<R::Response, RequestError> {
        self.rpc(request).await
    }

    /// Sends any request and decodes its typed response. Consumer group requests go
    /// to the group coordinator.
    pub(crate) async fn rpc<R: Rpc>(&self, request: &R) -> Result<R::Response, RequestError> {
        let frame = request.encode_frame();
        let body = if is_group_api(R::API) {
            self.coordinator_round_trip(frame).await?
        } else {
            self.round_trip(&mut [frame], Duration::ZERO).await?
        };
        R::Response::decode_body(body).map_err(|e| RequestError::Protocol(e.to_string()))
    }

    /// Sends a group request to the coordinator this client knows, finding it again
    /// (and retrying, a bounded number of times) when the broker answers
    /// `NOT_COORDINATOR` or cannot be reached.
    async fn coordinator_round_trip(&self, frame: Bytes) -> Result<Bytes, RequestError> {
        let mut attempt = 0u32;
        loop {
            let addr = *self
                .inner
                .coordinator
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Sending consumes the chunks: each attempt sends its own copy (a cheap
            // reference to the same bytes).
            let sent = self
                .round_trip_to(addr, &mut [frame.clone()], Duration::ZERO)
                .await;
            let err = match sent {
                Ok(body) => return Ok(body),
                Err(err) => err,
            };
            let moved = err.code() == Some(quiver_wire::ErrorCode::NotCoordinator)
                || matches!(
                    err,
                    RequestError::ConnectionLost(_) | RequestError::Connect(_)
                );
            if !moved || attempt >= COORDINATOR_ATTEMPTS {
                return Err(err);
            }
            attempt += 1;
            let found = self.find_coordinator().await;
            if found.is_none() || found == addr {
                // An election in progress: give it time.
                tokio::time::sleep(COORDINATOR_BACKOFF * attempt).await;
            }
            *self
                .inner
                .coordinator
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = found;
        }
    }

    /// Asks the bootstrap broker, then the others this client knows, where groups
    /// are coordinated: `None` for a standalone broker or when nobody knows yet.
    async fn find_coordinator(&self) -> Option<SocketAddr> {
        let candidates = self.candidates();
        let request = quiver_wire::cluster::ClusterStatusRequest.encode_frame();
        for candidate in candidates {
            let Ok(body) = self
                .round_trip_to(candidate, &mut [request.clone()], Duration::ZERO)
                .await
            else {
                continue;
            };
            let Ok(status) = quiver_wire::cluster::ClusterStatusResponse::decode_body(body) else {
                continue;
            };
            // Brokers of earlier builds ran without a controller and coordinated
            // their own groups.
            if status.mode == "standalone" {
                return None;
            }
            let Some(leader) = status.controller_leader else {
                continue;
            };
            // The broker that answered leads: the address this client reached it at
            // is the one to use (its own view of its address may not be reachable
            // from here).
            if leader == u64::from(status.node_id) {
                return candidate;
            }
            // Else the leader's broker address, as it registered it.
            let Some(address) = status
                .brokers
                .iter()
                .find(|b| u64::from(b.id) == leader)
                .map(|b| b.address.clone())
            else {
                continue;
            };
            let resolved = tokio::net::lookup_host(address.as_str())
                .await
                .ok()
                .and_then(|mut addrs| addrs.next());
            if resolved.is_some() {
                return resolved;
            }
        }
        None
    }

    /// One topic with its partitions and configs (the producer's partition count and
    /// batch limit; [`crate::Admin::describe_topic`] for applications).
    pub(crate) async fn describe_topic(&self, name: &str) -> Result<TopicInfo, RequestError> {
        let response = self
            .rpc(&MetadataRequest {
                topics: Some(vec![name.to_owned()]),
            })
            .await?;
        response
            .topics
            .into_iter()
            .next()
            .ok_or_else(|| RequestError::Protocol("metadata without the topic".into()))
    }

    /// Cluster metadata: brokers, controller and the given topics (all if `None`).
    pub async fn metadata(
        &self,
        topics: Option<Vec<String>>,
    ) -> Result<MetadataResponse, RequestError> {
        self.rpc(&MetadataRequest { topics }).await
    }

    /// Sends one already-encoded batch. With `Acks::None` the broker answers nothing and
    /// the result is `None` once the broker's QUIC stack has received the bytes.
    pub async fn produce_batch(
        &self,
        topic: &str,
        partition: u32,
        acks: Acks,
        batch: Bytes,
    ) -> Result<Option<ProduceResponse>, RequestError> {
        let timeout_ms =
            u32::try_from(self.inner.config.request_timeout.as_millis()).unwrap_or(u32::MAX);
        let head = ProduceRequest::encode_head(
            topic,
            partition,
            acks,
            timeout_ms.min(PRODUCE_TIMEOUT_MS_MAX),
            batch.len(),
        );
        let mut chunks = [head, batch];
        let leader = self.route(topic, partition).await;
        if acks == Acks::None {
            self.wait_out_throttle(leader).await;
            let limit = self.inner.config.request_timeout;
            return tokio::time::timeout(limit, async {
                let conn = self.connection_to(leader).await?;
                let lost = |e: &dyn std::fmt::Display| RequestError::ConnectionLost(e.to_string());
                let mut send = conn.open_uni().await.map_err(|e| lost(&e))?;
                send.write_all_chunks(&mut chunks)
                    .await
                    .map_err(|e| lost(&e))?;
                let _ = send.finish();
                send.stopped().await.map_err(|e| lost(&e))?;
                Ok(None)
            })
            .await
            .map_err(|_| RequestError::Timeout(limit))?;
        }
        let body = self
            .round_trip_to(leader, &mut chunks, Duration::ZERO)
            .await
            .inspect_err(|e| self.forget_route(topic, partition, e))?;
        let answer = ProduceResponse::decode_body(body)
            .map_err(|e| RequestError::Protocol(e.to_string()))?;
        self.throttled(leader, answer.throttle_time_ms);
        Ok(Some(answer))
    }

    /// Encodes `records` as one batch and sends it. Returns `None` for `Acks::None`.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        acks: Acks,
        records: &[Record],
    ) -> Result<Option<ProduceReceipt>, RequestError> {
        let mut builder = BatchBuilder::new(ProducerStamp::NONE);
        for record in records {
            builder.push(record);
        }
        let record_count = builder.record_count();
        let batch = builder
            .finish()
            .ok_or_else(|| RequestError::InvalidArgument("no records to produce".into()))?;
        let response = self.produce_batch(topic, partition, acks, batch).await?;
        Ok(response.map(|r| ProduceReceipt {
            partition,
            base_offset: r.base_offset,
            record_count,
            log_append_time: r.log_append_time,
        }))
    }

    /// Fetches stored batches as they are, without decoding them.
    pub async fn fetch_batches(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        options: &FetchOptions,
    ) -> Result<FetchedBatches, RequestError> {
        let request = FetchRequest {
            topic: topic.to_owned(),
            partition,
            offset,
            max_wait_ms: u32::try_from(options.max_wait.as_millis())
                .unwrap_or(u32::MAX)
                .min(FETCH_WAIT_MS_MAX),
            min_bytes: options.min_bytes,
            max_bytes: options.max_bytes,
            plugin: options.plugin.clone(),
        };
        let leader = self.route(topic, partition).await;
        let body = self
            .round_trip_to(leader, &mut [request.encode_frame()], options.max_wait)
            .await
            .inspect_err(|e| self.forget_route(topic, partition, e))?;
        let response =
            FetchResponse::decode_body(body).map_err(|e| RequestError::Protocol(e.to_string()))?;
        self.throttled(leader, response.throttle_time_ms);
        Ok(FetchedBatches {
            high_watermark: response.high_watermark,
            log_start_offset: response.log_start_offset,
            log_end_offset: response.log_end_offset,
            throttle_time_ms: response.throttle_time_ms,
            batches: response.batches,
        })
    }

    /// Fetches and decodes records from `offset` on.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        options: &FetchOptions,
    ) -> Result<Fetched, RequestError> {
        let fetched = self
            .fetch_batches(topic, partition, offset, options)
            .await?;
        let mut records = Vec::new();
        let mut next_offset = offset;
        for batch in BatchSplitter::new(fetched.batches) {
            let batch = batch.map_err(|e| RequestError::Protocol(e.to_string()))?;
            let header =
                BatchHeader::parse(&batch).map_err(|e| RequestError::Protocol(e.to_string()))?;
            // A batch covers its offsets whether or not its records all came: a
            // fetch-stage plugin may have removed some (gaps, or a removed tail that
            // the batch still spans), and a control marker stands for removed records.
            next_offset = next_offset.max(header.next_offset());
            if header.is_control() {
                continue;
            }
            for record in
                decode_records(&batch).map_err(|e| RequestError::Protocol(e.to_string()))?
            {
                if record.offset >= offset {
                    records.push(record);
                }
            }
        }
        Ok(Fetched {
            high_watermark: fetched.high_watermark,
            log_start_offset: fetched.log_start_offset,
            log_end_offset: fetched.log_end_offset,
            records,
            next_offset,
        })
    }

    /// Looks up an offset: earliest, latest (the high watermark), or the first record at
    /// or after a timestamp.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<ListOffsetsResponse, RequestError> {
        self.rpc(&ListOffsetsRequest {
            topic: topic.to_owned(),
            partition,
            spec,
        })
        .await
    }

    /// Closes the connection after in-flight streams are acknowledged.
    pub async fn close(&self) {
        if let Some(conn) = self.inner.connection.lock().await.take() {
            conn.close(0u32.into(), b"client closed");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.endpoint.wait_idle()).await;
    }
}

/// Sends one request on `connection` and returns the body of a successful answer.
async fn exchange(
    connection: &quinn::Connection,
    chunks: &mut [Bytes],
) -> Result<Bytes, RequestError> {
    let lost = |e: &dyn std::fmt::Display| RequestError::ConnectionLost(e.to_string());
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| lost(&e))?;
    send.write_all_chunks(chunks).await.map_err(|e| lost(&e))?;
    let _ = send.finish();
    let mut prefix = [0u8; FRAME_LENGTH_BYTES];
    recv.read_exact(&mut prefix).await.map_err(|e| lost(&e))?;
    let len = frame_length(prefix, RESPONSE_HEAD_BYTES)
        .map_err(|e| RequestError::Protocol(e.to_string()))?;
    let mut body = BytesMut::zeroed(len);
    recv.read_exact(&mut body).await.map_err(|e| lost(&e))?;
    match parse_response(body.freeze()) {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(broker)) => Err(RequestError::Broker(broker)),
        Err(e) => Err(RequestError::Protocol(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(partitions: &[(u32, u32, u32)]) -> MetadataResponse {
        MetadataResponse {
            controller: 1,
            brokers: Vec::new(),
            topics: vec![TopicInfo {
                name: "t".into(),
                partitions: partitions
                    .iter()
                    .map(|&(partition, leader, leader_epoch)| PartitionInfo {
                        partition,
                        leader,
                        leader_epoch,
                        replicas: vec![1, 2, 3],
                        isr: vec![1, 2, 3],
                        log_start_offset: 0,
                        high_watermark: 0,
                        log_end_offset: 0,
                    })
                    .collect(),
                configs: Vec::new(),
            }],
        }
    }

    /// A broker cut off from the controller answers with the leader it last knew; the
    /// client goes to the leader of the newest epoch any broker named, whichever
    /// answered first.
    #[test]
    fn the_newest_leader_epoch_wins_over_a_stale_answer() {
        let stale = answer(&[(0, 1, 4), (1, 2, 7)]);
        let current = answer(&[(0, 3, 5), (1, 2, 7)]);
        for answers in [
            vec![stale.clone(), current.clone()],
            vec![current.clone(), stale.clone()],
        ] {
            let leaders = newest_leaders(&answers);
            assert_eq!(leaders.get(&("t".to_owned(), 0)), Some(&3));
            assert_eq!(leaders.get(&("t".to_owned(), 1)), Some(&2));
        }
        // No leader in the newest answer (an election under way): the last known one.
        let leaderless = answer(&[(0, u32::MAX, 6)]);
        let leaders = newest_leaders(&[stale, leaderless]);
        assert_eq!(leaders.get(&("t".to_owned(), 0)), Some(&1));
    }
}
