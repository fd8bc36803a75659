//! Flags every client command shares, and the connection they describe.

use std::path::PathBuf;

use anyhow::Context;
use quiver_sdk::{Admin, Client, ClientConfig};

/// Where the embedded broker writes its CA; used when `--ca-cert` is not given.
const DEFAULT_CA_CERT: &str = "./quiver-data/tls/ca.pem";

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Broker QUIC address, or several separated by commas (tried in order).
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
    /// SCRAM-SHA-256 user for brokers that authenticate with passwords; the password
    /// comes from QUIVER_PASSWORD or --password-file, never from a flag.
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// File whose first line is the password of --user.
    #[arg(long, requires = "user", global = true)]
    pub password_file: Option<PathBuf>,
}

/// Reads a password: the first line of `file`, else `QUIVER_PASSWORD`.
pub fn password(file: Option<&std::path::Path>, what: &str) -> anyhow::Result<String> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the password file {}", path.display()))?,
        None => std::env::var("QUIVER_PASSWORD").map_err(|_| {
            anyhow::anyhow!("{what}: give the password in QUIVER_PASSWORD or --password-file")
        })?,
    };
    let password = text.lines().next().unwrap_or_default().to_owned();
    if password.is_empty() {
        anyhow::bail!("{what}: the password is empty");
    }
    Ok(password)
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
        if let Some(user) = &self.user {
            config.scram = Some(quiver_sdk::ScramLogin {
                user: user.clone(),
                password: password(self.password_file.as_deref(), &format!("--user {user}"))?,
            });
        }
        Client::connect(config)
            .await
            .with_context(|| format!("cannot reach broker {}", self.broker))
    }

    /// [`ConnectArgs::connect`], for administration.
    pub async fn admin(&self) -> anyhow::Result<Admin> {
        self.connect().await.map(Admin::from_client)
    }
}
