//! Connections from this broker to the other brokers of its cluster: one cached SDK
//! client per broker id, connecting with the cluster's CA and this broker's own
//! certificate (which the broker-to-broker APIs require).

use std::collections::HashMap;
use std::time::Duration;

use quiver_sdk::{Client, ClientConfig};

use crate::BrokerConfig;

/// How long connecting to another broker may take before it counts as unreachable.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One cached connection per other broker, with the address it was opened to.
pub struct PeerClients {
    broker: BrokerConfig,
    request_timeout: Duration,
    clients: tokio::sync::Mutex<HashMap<u32, (String, Client)>>,
}

impl PeerClients {
    /// Clients that connect as `broker` configures and give each request
    /// `request_timeout`.
    pub fn new(broker: BrokerConfig, request_timeout: Duration) -> Self {
        Self {
            broker,
            request_timeout,
            clients: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The connection to broker `id` at `addr`, opened on first use and again when
    /// the broker moved to another address (a restart with another `--listen`).
    pub async fn get(&self, id: u32, addr: &str) -> Result<Client, String> {
        if let Some((opened_to, client)) = self.clients.lock().await.get(&id)
            && opened_to == addr
        {
            return Ok(client.clone());
        }
        let mut config = client_config(&self.broker, addr);
        config.connect_timeout = PEER_CONNECT_TIMEOUT;
        config.request_timeout = self.request_timeout;
        let client = Client::connect(config).await.map_err(|e| e.to_string())?;
        self.clients
            .lock()
            .await
            .insert(id, (addr.to_owned(), client.clone()));
        Ok(client)
    }

    /// Drops a broken connection; the next [`PeerClients::get`] opens another.
    pub async fn forget(&self, id: u32) {
        self.clients.lock().await.remove(&id);
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
