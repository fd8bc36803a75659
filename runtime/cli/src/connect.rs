//! Flags every client command shares, and the connection they describe.

use std::path::PathBuf;

use anyhow::Context;
use quiver_sdk::{Client, ClientConfig};

/// Where the embedded broker writes its CA; used when `--ca-cert` is not given.
const DEFAULT_CA_CERT: &str = "./quiver-data/tls/ca.pem";

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Broker QUIC address.
    #[arg(
        long,
        env = "QUIVER_BROKER",
        default_value = "127.0.0.1:7420",
        global = true
    )]
    pub broker: String,
    /// CA certificate (PEM) that signed the broker's certificate
    /// [default: ./quiver-data/tls/ca.pem when that file exists]
    #[arg(long, env = "QUIVER_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that require mTLS.
    #[arg(long, requires = "client_key", global = true)]
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for `--client-cert`.
    #[arg(long, requires = "client_cert", global = true)]
    pub client_key: Option<PathBuf>,
}

impl ConnectArgs {
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let ca_cert = self.ca_cert.clone().or_else(|| {
            let default = PathBuf::from(DEFAULT_CA_CERT);
            default.exists().then_some(default)
        });
        let mut config = ClientConfig::new(self.broker.clone(), PathBuf::new());
        config.ca_cert = ca_cert;
        config.client_cert = self.client_cert.clone().zip(self.client_key.clone());
        Client::connect(config)
            .await
            .with_context(|| format!("cannot reach broker {}", self.broker))
    }
}
