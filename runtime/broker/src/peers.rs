//! Connections from this broker to the other brokers of its cluster: one pool, one
//! cached SDK client per broker and [`Lane`], connecting with the cluster's CA and
//! this broker's own certificate (which the broker-to-broker APIs require), and one
//! rule for a broken connection ([`PeerClients::call`]). [`PeerHealth`] remembers
//! which peers this broker could not reach and why, for `quiver cluster status`, and
//! says so in one warning line per peer rather than a flood.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quiver_sdk::{Client, ClientConfig, ConnectError, RequestError};
use quiver_wire::message::Rpc;

use crate::BrokerConfig;
use crate::clock::Clock;

/// How long connecting to another broker may take before it counts as unreachable.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The SDK client's own bound on a request; each call sets a shorter one of its own.
const PEER_REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(30);

/// Which connection to a peer a request takes. The controller's RPCs get one of their
/// own, as Kafka gives KRaft its own listener: replication moves megabytes per fetch,
/// and a heartbeat queued behind them on one connection's flow and congestion control
/// could cost a controller election.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Raft RPCs of the controller quorum.
    Control,
    /// Replica fetches and plugin modules.
    Data,
}

/// One cached connection per other broker and lane, with the address it was opened to.
pub struct PeerClients {
    broker: BrokerConfig,
    clients: tokio::sync::Mutex<HashMap<(u32, Lane), (String, Client)>>,
    health: Arc<PeerHealth>,
    clock: Arc<dyn Clock>,
}

impl PeerClients {
    /// Clients that connect as `broker` configures, recording in `health` which peers
    /// could not be reached, and when by `clock`.
    pub fn new(broker: BrokerConfig, health: Arc<PeerHealth>, clock: Arc<dyn Clock>) -> Self {
        Self {
            broker,
            clients: tokio::sync::Mutex::new(HashMap::new()),
            health,
            clock,
        }
    }

    /// Sends `request` to broker `id` at `addr` on `lane` and waits at most `timeout`
    /// for its answer. The one rule for a broken connection: any failure but the
    /// peer's own answer (a connection lost, no answer in time, no connection) drops
    /// the cached connection, so the next call opens another rather than wait on a
    /// connection whose retransmission timers backed off during an outage.
    pub async fn call<R: Rpc>(
        &self,
        id: u32,
        addr: &str,
        lane: Lane,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, RequestError> {
        self.with_client(id, addr, lane, timeout, |client| async move {
            client.call(request).await
        })
        .await
    }

    /// Runs `requests` with the connection to broker `id` at `addr` on `lane`, for at
    /// most `timeout` in all, under [`PeerClients::call`]'s rule for a broken
    /// connection: for requests the SDK makes itself (a produce to a dead-letter
    /// topic's leader).
    pub async fn with_client<T, F>(
        &self,
        id: u32,
        addr: &str,
        lane: Lane,
        timeout: Duration,
        requests: impl FnOnce(Client) -> F,
    ) -> Result<T, RequestError>
    where
        F: std::future::Future<Output = Result<T, RequestError>>,
    {
        let mut used = None;
        let answer = match tokio::time::timeout(timeout, async {
            let client = self.get(id, addr, lane).await?;
            used = Some(client.clone());
            requests(client).await
        })
        .await
        {
            Ok(answer) => answer,
            Err(_) => Err(RequestError::Timeout(timeout)),
        };
        if let Err(err) = &answer
            && !matches!(err, RequestError::Broker(_))
            && let Some(used) = used
        {
            self.forget(id, lane, &used).await;
        }
        answer
    }

    /// The connection to broker `id` at `addr` on `lane`, opened on first use and
    /// again when the broker moved to another address (a restart with another
    /// `--listen`).
    async fn get(&self, id: u32, addr: &str, lane: Lane) -> Result<Client, ConnectError> {
        if let Some((opened_to, client)) = self.clients.lock().await.get(&(id, lane))
            && opened_to == addr
        {
            return Ok(client.clone());
        }
        let mut config = client_config(&self.broker, addr);
        config.connect_timeout = PEER_CONNECT_TIMEOUT;
        config.request_timeout = PEER_REQUEST_TIMEOUT_MAX;
        let client = match Client::connect(config).await {
            Ok(client) => client,
            Err(err) => {
                let reason = unreachable_reason(&err, addr);
                self.health.failed(id, addr, &reason, self.clock.now_ms());
                return Err(err);
            }
        };
        self.health.reached(id, addr);
        self.clients
            .lock()
            .await
            .insert((id, lane), (addr.to_owned(), client.clone()));
        Ok(client)
    }

    /// Drops the broken connection `used`; the next call opens another. Only if it
    /// is still the cached one: many requests share a connection, and those that
    /// failed on it must not drop the one a later call opened.
    async fn forget(&self, id: u32, lane: Lane, used: &Client) {
        let mut clients = self.clients.lock().await;
        if clients
            .get(&(id, lane))
            .is_some_and(|(_, cached)| cached.same_client(used))
        {
            clients.remove(&(id, lane));
        }
    }
}

/// The CA that signs the other brokers' certificates.
pub fn peer_ca(config: &BrokerConfig) -> std::path::PathBuf {
    config
        .tls_ca
        .clone()
        .unwrap_or_else(|| crate::tls::GeneratedPaths::in_data_dir(&config.data_dir).ca_cert)
}

/// How this broker connects to another: trusting the cluster's CA, and presenting its
/// own certificate.
fn client_config(config: &BrokerConfig, addr: &str) -> ClientConfig {
    let mut client = ClientConfig::new(addr, peer_ca(config));
    client.client_cert = Some(match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let generated = crate::tls::GeneratedPaths::in_data_dir(&config.data_dir);
            (generated.server_cert, generated.server_key)
        }
    });
    client
}

/// How long a peer's unreachability is not repeated in the log when nothing changed.
pub const PEER_WARNING_REPEAT: Duration = Duration::from_secs(10 * 60);
/// The least time between two warnings about one peer, so a peer whose failure
/// alternates between reasons does not flood the log either.
pub const PEER_WARNING_GAP: Duration = Duration::from_secs(30);
/// How long a failure to reach a peer is reported after the last attempt: a broker
/// that stopped trying (a follower whose election ended) says nothing stale.
pub const PEER_FAILURE_FRESH: Duration = Duration::from_secs(60);
/// Peers whose state one broker keeps (a cluster's brokers, with room).
pub const PEERS_TRACKED_MAX: usize = 10_000;

/// What this broker knows of reaching each other broker.
#[derive(Default)]
pub struct PeerHealth {
    peers: std::sync::Mutex<HashMap<u32, PeerState>>,
}

#[derive(Default)]
struct PeerState {
    address: String,
    /// Why the last connection attempt failed, and when (ms); `None` once one
    /// succeeded.
    failure: Option<(String, i64)>,
    /// The reason last written in a warning, and when (ms).
    warned: Option<(String, i64)>,
}

impl PeerHealth {
    /// Records that connecting to broker `id` at `addr` failed for `reason`; writes
    /// one warning line naming the peer when the reason is new for it (at most one per
    /// [`PEER_WARNING_GAP`]), or once per [`PEER_WARNING_REPEAT`] while it lasts.
    pub fn failed(&self, id: u32, addr: &str, reason: &str, now_ms: i64) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= PEERS_TRACKED_MAX && !peers.contains_key(&id) {
            return;
        }
        let peer = peers.entry(id).or_default();
        peer.address = addr.to_owned();
        peer.failure = Some((reason.to_owned(), now_ms));
        let due = match &peer.warned {
            None => true,
            Some((said, at)) => {
                let since = now_ms.saturating_sub(*at);
                (said != reason && since >= PEER_WARNING_GAP.as_millis() as i64)
                    || since >= PEER_WARNING_REPEAT.as_millis() as i64
            }
        };
        if due {
            peer.warned = Some((reason.to_owned(), now_ms));
            tracing::warn!(
                peer = id,
                address = addr,
                "cannot reach node {id} at {addr}: {reason}"
            );
        }
    }

    /// Records that broker `id` at `addr` answered.
    pub fn reached(&self, id: u32, addr: &str) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(peer) = peers.get_mut(&id)
            && peer.failure.take().is_some()
        {
            peer.warned = None;
            tracing::info!(
                peer = id,
                address = addr,
                "node {id} at {addr} is reachable again"
            );
        }
    }

    /// The peers whose last connection attempt failed within [`PEER_FAILURE_FRESH`]
    /// of `now_ms`: `(id, address, reason)`, by id.
    pub fn unreachable(&self, now_ms: i64) -> Vec<(u32, String, String)> {
        let fresh = PEER_FAILURE_FRESH.as_millis() as i64;
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(u32, String, String)> = peers
            .iter()
            .filter_map(|(id, peer)| {
                peer.failure
                    .as_ref()
                    .filter(|(_, at)| now_ms.saturating_sub(*at) <= fresh)
                    .map(|(reason, _)| (*id, peer.address.clone(), reason.clone()))
            })
            .collect();
        out.sort();
        out
    }
}

/// Why connecting to a peer at `addr` failed, in the words an operator needs: a
/// certificate from another CA, one that does not name the address, or no answer.
pub fn unreachable_reason(err: &quiver_sdk::ConnectError, addr: &str) -> String {
    let text = err.to_string();
    if matches!(err, quiver_sdk::ConnectError::Timeout { .. }) {
        return "connection timed out (nothing answered)".to_owned();
    }
    // rustls names its verdict in the message; a peer's refusal of this broker's
    // certificate arrives as a TLS alert number (48: unknown CA, 42: bad certificate).
    let has = |needle: &str| text.contains(needle);
    if has("UnknownIssuer") || has("BadSignature") || has("error 48") || has("UnknownCA") {
        "certificate signed by a different CA (this node and that one were not given the same cluster CA)".to_owned()
    } else if has("NotValidForName") || has("not valid for name") {
        format!(
            "its certificate does not name {addr} (each broker needs a certificate naming its own addresses: join with a join token)"
        )
    } else if has("Expired") || has("error 45") {
        "certificate expired".to_owned()
    } else if has("error 42") || has("error 46") || has("error 116") {
        "it refused this broker's certificate".to_owned()
    } else if has("ConnectionRefused") || has("refused") {
        "connection refused".to_owned()
    } else {
        let mut text = text;
        text.truncate(300);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_reported_while_failing_and_forgotten_once_reached() {
        let health = PeerHealth::default();
        health.failed(
            3,
            "10.0.0.3:7420",
            "certificate signed by a different CA",
            1_000,
        );
        health.failed(
            3,
            "10.0.0.3:7420",
            "certificate signed by a different CA",
            2_000,
        );
        assert_eq!(
            health.unreachable(2_000),
            [(
                3,
                "10.0.0.3:7420".to_owned(),
                "certificate signed by a different CA".to_owned()
            )]
        );
        let stale = 2_000 + PEER_FAILURE_FRESH.as_millis() as i64 + 1;
        assert!(
            health.unreachable(stale).is_empty(),
            "no attempt for a while"
        );
        health.reached(3, "10.0.0.3:7420");
        assert!(health.unreachable(2_000).is_empty());
    }
}
