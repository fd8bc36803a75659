//! `quiver serve`: run a broker until SIGTERM or Ctrl-C, then stop gracefully.

use std::path::PathBuf;

use anyhow::Context;
use quiver_broker::BrokerConfig;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TOML config file; flags override it, QUIVER_* variables override both.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory [default: ./quiver-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// QUIC listen address [default: 127.0.0.1:7420]
    #[arg(long)]
    listen: Option<String>,
    /// Admin HTTP listen address (/metrics, /health, /ready) [default: 127.0.0.1:7421]
    #[arg(long)]
    admin_listen: Option<String>,
    /// This broker's node id [default: 1]
    #[arg(long)]
    node_id: Option<u32>,
    /// Founding members as ID@HOST:PORT,... (QUIC addresses, this node included)
    #[arg(long)]
    seeds: Option<String>,
    /// Accept clients without credentials on a listener that is not loopback
    /// (config allow_anonymous); refused otherwise while authentication = "none".
    #[arg(long)]
    allow_anonymous: bool,
    /// Join token from `quiver cluster init`: without the cluster's CA in its data
    /// directory, this node fetches it from a seed, checks it against the token, and
    /// gets a broker certificate for its node id (config join_token)
    #[arg(long)]
    join_token: Option<String>,
    /// Log lines as text for people or JSON (one object a line) for log shippers.
    #[arg(long, env = "QUIVER_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// Builds the configuration: defaults, then the file, then flags, then environment.
fn configure(args: &ServeArgs) -> anyhow::Result<BrokerConfig> {
    let mut config = BrokerConfig::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        config.apply_toml(path, &text)?;
    }
    let flags = [
        (
            "data_dir",
            args.data_dir.as_ref().map(|p| p.display().to_string()),
        ),
        ("listen", args.listen.clone()),
        ("admin_listen", args.admin_listen.clone()),
        ("node_id", args.node_id.map(|n| n.to_string())),
        ("seeds", args.seeds.clone()),
        (
            "allow_anonymous",
            args.allow_anonymous.then(|| "true".to_owned()),
        ),
        ("join_token", args.join_token.clone()),
    ];
    for (key, value) in flags {
        if let Some(value) = value {
            config.set(key, &value)?;
        }
    }
    config.apply_env(|name| std::env::var(name).ok())?;
    config.validate()?;
    Ok(config)
}

/// The log filter when neither QUIVER_LOG nor RUST_LOG is set.
const DEFAULT_LOG_FILTER: &str = "warn,quiver=info,quiver_broker=info,quiver_cluster=info,quiver_log=info,quiver_repl=info,quiver_plugin_host=info";

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // QUIVER_LOG (CLI.md), else RUST_LOG; by default Quiver's own events at info and
    // dependencies' internals (openraft, quinn) only at warn and above.
    let filter = ["QUIVER_LOG", "RUST_LOG"]
        .iter()
        .find_map(|var| tracing_subscriber::EnvFilter::try_from_env(var).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).with_ansi(false).init(),
    }
    let config = configure(&args)?;
    let broker = quiver_broker::start(config).await?;
    eprintln!(
        "quiver broker listening on {} (QUIC), admin on http://{}; CA certificate: {}",
        broker.quic_addr,
        broker.admin_addr,
        broker
            .state()
            .config
            .data_dir
            .join("tls")
            .join("ca.pem")
            .display()
    );
    wait_for_signal().await?;
    broker.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        ctrl_c = tokio::signal::ctrl_c() => {
            ctrl_c.context("cannot listen for Ctrl-C")?;
            tracing::info!("Ctrl-C: stopping");
        }
    }
    Ok(())
}
