//! Broker configuration: embedded defaults, a TOML file, command-line flags, and
//! `QUIVER_*` environment variables, in rising precedence (the CLI contract).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quiver_log::{FlushPolicy, LogConfig};
use serde::Deserialize;

/// Default QUIC listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";
/// Default admin HTTP listen address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7421";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./quiver-data";

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// Every setting of a broker. Field names are the TOML keys; `QUIVER_<KEY>` in upper
/// case overrides each.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub node_id: u32,
    /// Founding members as `(node_id, quic address)`; empty for a lone node.
    pub seeds: Vec<(u32, SocketAddr)>,
    /// When appended batches reach the disk.
    pub flush: FlushPolicy,
    /// Defaults for every partition log; topics override them with their configs.
    pub log: LogConfig,
    /// How often retention runs over every partition.
    pub retention_check_interval: Duration,
    /// Operator-provided certificate chain and key (PEM); generated when absent.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The CA that signed the other brokers' certificates, for connections between
    /// brokers; default `DATA_DIR/tls/ca.pem`.
    pub tls_ca: Option<PathBuf>,
    /// Open QUIC connections at once.
    pub connections_max: usize,
    /// Requests in flight across all connections at once.
    pub requests_in_flight_max: usize,
    /// Concurrent streams one connection may open.
    pub streams_per_connection_max: u32,
    /// Send stored batches to consumers as they are (`true`), or decode and re-encode
    /// them (`false`). Only benchmarks turn this off, to measure what zero-copy saves.
    pub fetch_zero_copy: bool,
    /// Export Prometheus metrics (`/metrics`) and record them on hot paths.
    pub metrics: bool,
    /// Bounds on WebAssembly plugins: upload size, memory per instance, CPU per batch.
    pub plugins: quiver_plugin_host::Limits,
    /// A follower that has not caught up with its leader for this long leaves the ISR
    /// (cluster mode; Kafka's `replica.lag.time.max.ms`).
    pub replica_lag_max_ms: u64,
    /// A broker silent for this long is fenced by the controller leader (cluster mode).
    pub broker_session_timeout_ms: u64,
    /// Committed offsets of a group without members are forgotten this long after
    /// their commit (Kafka's `offsets.retention.minutes`).
    pub offsets_retention_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: DEFAULT_LISTEN.parse().expect("constant address parses"),
            admin_listen: DEFAULT_ADMIN_LISTEN
                .parse()
                .expect("constant address parses"),
            node_id: 1,
            seeds: Vec::new(),
            flush: FlushPolicy::Always,
            log: LogConfig::default(),
            retention_check_interval: Duration::from_secs(60),
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            connections_max: 10_000,
            requests_in_flight_max: 65_536,
            streams_per_connection_max: 1_024,
            fetch_zero_copy: true,
            metrics: true,
            plugins: quiver_plugin_host::Limits::default(),
            replica_lag_max_ms: 10_000,
            broker_session_timeout_ms: 6_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
        }
    }
}

/// The TOML file's shape: every key optional, unknown keys refused by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub node_id: Option<u32>,
    pub seeds: Option<String>,
    pub flush: Option<String>,
    pub segment_bytes: Option<u64>,
    pub segment_ms: Option<u64>,
    pub retention_bytes: Option<i64>,
    pub retention_ms: Option<i64>,
    pub max_message_bytes: Option<usize>,
    pub retention_check_interval_ms: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub connections_max: Option<usize>,
    pub requests_in_flight_max: Option<usize>,
    pub streams_per_connection_max: Option<u32>,
    pub fetch_zero_copy: Option<bool>,
    pub metrics: Option<bool>,
    pub plugin_module_bytes_max: Option<usize>,
    pub plugin_memory_bytes_max: Option<usize>,
    pub plugin_call_ms_max: Option<u64>,
    pub replica_lag_max_ms: Option<u64>,
    pub broker_session_timeout_ms: Option<u64>,
    pub offsets_retention_ms: Option<u64>,
}

/// Every key the file and the environment know, for `QUIVER_*` lookups.
pub const CONFIG_KEYS: &[&str] = &[
    "data_dir",
    "listen",
    "admin_listen",
    "node_id",
    "seeds",
    "flush",
    "segment_bytes",
    "segment_ms",
    "retention_bytes",
    "retention_ms",
    "max_message_bytes",
    "retention_check_interval_ms",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "connections_max",
    "requests_in_flight_max",
    "streams_per_connection_max",
    "fetch_zero_copy",
    "metrics",
    "plugin_module_bytes_max",
    "plugin_memory_bytes_max",
    "plugin_call_ms_max",
    "replica_lag_max_ms",
    "broker_session_timeout_ms",
    "offsets_retention_ms",
];

impl BrokerConfig {
    /// Applies a TOML document on top of `self`.
    pub fn apply_toml(&mut self, path: &std::path::Path, text: &str) -> Result<(), ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        let mut set = |key: &str, value: Option<String>| match value {
            Some(v) => self.set(key, &v),
            None => Ok(()),
        };
        set("data_dir", file.data_dir.map(|p| p.display().to_string()))?;
        set("listen", file.listen)?;
        set("admin_listen", file.admin_listen)?;
        set("node_id", file.node_id.map(|v| v.to_string()))?;
        set("seeds", file.seeds)?;
        set("flush", file.flush)?;
        set("segment_bytes", file.segment_bytes.map(|v| v.to_string()))?;
        set("segment_ms", file.segment_ms.map(|v| v.to_string()))?;
        set(
            "retention_bytes",
            file.retention_bytes.map(|v| v.to_string()),
        )?;
        set("retention_ms", file.retention_ms.map(|v| v.to_string()))?;
        set(
            "max_message_bytes",
            file.max_message_bytes.map(|v| v.to_string()),
        )?;
        set(
            "retention_check_interval_ms",
            file.retention_check_interval_ms.map(|v| v.to_string()),
        )?;
        set("tls_cert", file.tls_cert.map(|p| p.display().to_string()))?;
        set("tls_key", file.tls_key.map(|p| p.display().to_string()))?;
        set("tls_ca", file.tls_ca.map(|p| p.display().to_string()))?;
        set(
            "connections_max",
            file.connections_max.map(|v| v.to_string()),
        )?;
        set(
            "requests_in_flight_max",
            file.requests_in_flight_max.map(|v| v.to_string()),
        )?;
        set(
            "streams_per_connection_max",
            file.streams_per_connection_max.map(|v| v.to_string()),
        )?;
        set(
            "fetch_zero_copy",
            file.fetch_zero_copy.map(|v| v.to_string()),
        )?;
        set("metrics", file.metrics.map(|v| v.to_string()))?;
        set(
            "plugin_module_bytes_max",
            file.plugin_module_bytes_max.map(|v| v.to_string()),
        )?;
        set(
            "plugin_memory_bytes_max",
            file.plugin_memory_bytes_max.map(|v| v.to_string()),
        )?;
        set(
            "plugin_call_ms_max",
            file.plugin_call_ms_max.map(|v| v.to_string()),
        )?;
        set(
            "replica_lag_max_ms",
            file.replica_lag_max_ms.map(|v| v.to_string()),
        )?;
        set(
            "broker_session_timeout_ms",
            file.broker_session_timeout_ms.map(|v| v.to_string()),
        )?;
        set(
            "offsets_retention_ms",
            file.offsets_retention_ms.map(|v| v.to_string()),
        )?;
        Ok(())
    }

    /// Applies every `QUIVER_<KEY>` variable present in `vars`.
    pub fn apply_env(&mut self, vars: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for key in CONFIG_KEYS {
            if let Some(value) = vars(&format!("QUIVER_{}", key.to_ascii_uppercase())) {
                self.set(key, &value)?;
            }
        }
        Ok(())
    }

    /// Sets one key from its text form, as a file, flag or variable gives it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            key: key.to_owned(),
            message,
        };
        let addr = |v: &str| {
            v.parse::<SocketAddr>()
                .map_err(|e| invalid(format!("`{v}` is not HOST:PORT: {e}")))
        };
        let int = |v: &str| v.parse::<u64>().map_err(|e| invalid(format!("`{v}`: {e}")));
        // -1 means "no limit", as in Kafka's retention settings.
        let limit = |v: &str| match v.parse::<i64>() {
            Ok(-1) => Ok(None),
            Ok(n) if n >= 0 => Ok(Some(n as u64)),
            _ => Err(invalid(format!(
                "`{v}` is neither -1 nor a non-negative integer"
            ))),
        };
        match key {
            "data_dir" => self.data_dir = PathBuf::from(value),
            "listen" => self.listen = addr(value)?,
            "admin_listen" => self.admin_listen = addr(value)?,
            "node_id" => {
                self.node_id = value
                    .parse()
                    .map_err(|e| invalid(format!("`{value}`: {e}")))?;
            }
            "seeds" => self.seeds = parse_seeds(value).map_err(invalid)?,
            "flush" => self.flush = value.parse().map_err(|e| invalid(format!("{e}")))?,
            "segment_bytes" => {
                let v = int(value)?;
                if v < 4096 {
                    return Err(invalid(format!("{v} is below the minimum of 4096")));
                }
                self.log.segment_bytes_max = v;
            }
            "segment_ms" => self.log.segment_age_max_ms = limit(value)?,
            "retention_bytes" => self.log.retention_bytes = limit(value)?,
            "retention_ms" => self.log.retention_ms = limit(value)?,
            "max_message_bytes" => {
                let v = int(value)? as usize;
                if v > quiver_wire::batch::BATCH_BYTES_MAX {
                    return Err(invalid(format!(
                        "{v} exceeds the hard limit of {} bytes",
                        quiver_wire::batch::BATCH_BYTES_MAX
                    )));
                }
                self.log.batch_bytes_max = v;
            }
            "retention_check_interval_ms" => {
                self.retention_check_interval = Duration::from_millis(int(value)?.max(10));
            }
            "tls_cert" => self.tls_cert = Some(PathBuf::from(value)),
            "tls_key" => self.tls_key = Some(PathBuf::from(value)),
            "tls_ca" => self.tls_ca = Some(PathBuf::from(value)),
            "connections_max" => self.connections_max = int(value)?.max(1) as usize,
            "requests_in_flight_max" => self.requests_in_flight_max = int(value)?.max(1) as usize,
            "streams_per_connection_max" => {
                self.streams_per_connection_max =
                    u32::try_from(int(value)?.max(1)).map_err(|e| invalid(e.to_string()))?;
            }
            "metrics" => {
                self.metrics = value
                    .parse()
                    .map_err(|_| invalid(format!("`{value}` is not true or false")))?;
            }
            "fetch_zero_copy" => {
                self.fetch_zero_copy = value
                    .parse()
                    .map_err(|_| invalid(format!("`{value}` is not true or false")))?;
            }
            "plugin_module_bytes_max" => {
                let v = int(value)? as usize;
                let hard = quiver_wire::plugin::PLUGIN_MODULE_BYTES_MAX;
                if v == 0 || v > hard {
                    return Err(invalid(format!("{v} is not between 1 and {hard} bytes")));
                }
                self.plugins.module_bytes_max = v;
            }
            "plugin_memory_bytes_max" => {
                let v = int(value)? as usize;
                // One WebAssembly page is 64 KiB; 4 GiB is all a wasm32 guest can address.
                if !(64 * 1024..=4 << 30).contains(&v) {
                    return Err(invalid(format!("{v} is not between 64 KiB and 4 GiB")));
                }
                self.plugins.memory_bytes_max = v;
            }
            "broker_session_timeout_ms" => {
                let v = int(value)?;
                // At least two heartbeat intervals, so one late heartbeat fences nobody.
                if !(2_000..=600_000).contains(&v) {
                    return Err(invalid(format!("{v} is not between 2000 and 600000 ms")));
                }
                self.broker_session_timeout_ms = v;
            }
            "offsets_retention_ms" => {
                let v = int(value)?;
                // A second at least (tests use a few), a year at most.
                if !(1_000..=365 * 24 * 60 * 60 * 1000).contains(&v) {
                    return Err(invalid(format!("{v} is not between 1000 ms and 365 days")));
                }
                self.offsets_retention_ms = v;
            }
            "replica_lag_max_ms" => {
                let v = int(value)?;
                if !(100..=600_000).contains(&v) {
                    return Err(invalid(format!("{v} is not between 100 and 600000 ms")));
                }
                self.replica_lag_max_ms = v;
            }
            "plugin_call_ms_max" => {
                let v = int(value)?;
                if !(1..=60_000).contains(&v) {
                    return Err(invalid(format!("{v} is not between 1 and 60000 ms")));
                }
                self.plugins.call_time_max = Duration::from_millis(v);
            }
            other => {
                return Err(ConfigError::Invalid {
                    key: other.to_owned(),
                    message: "unknown key".into(),
                });
            }
        }
        Ok(())
    }

    /// Whether this node joins a running cluster: `seeds` name other nodes but not
    /// this one (a founding node is among its seeds).
    pub fn joins_cluster(&self) -> bool {
        !self.seeds.is_empty() && !self.seeds.iter().any(|(id, _)| *id == self.node_id)
    }

    /// Checks relations between settings that each parsed on its own.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid {
                key: "tls_cert".into(),
                message: "tls_cert and tls_key must be given together".into(),
            });
        }
        if self.joins_cluster() && self.listen.ip().is_unspecified() {
            // A joining node tells the cluster where to reach it: its listen address.
            return Err(ConfigError::Invalid {
                key: "listen".into(),
                message: format!(
                    "node {} joins a running cluster (it is not among the seeds), so it must listen on an address the others can reach, not {}",
                    self.node_id, self.listen
                ),
            });
        }
        let mut ids: Vec<u32> = self.seeds.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(ConfigError::Invalid {
                key: "seeds".into(),
                message: "a node id appears twice".into(),
            });
        }
        Ok(())
    }
}

fn parse_seeds(text: &str) -> Result<Vec<(u32, SocketAddr)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|seed| {
            let (id, addr) = seed
                .split_once('@')
                .ok_or_else(|| format!("seed `{seed}` is not ID@HOST:PORT"))?;
            let id = id
                .parse()
                .map_err(|_| format!("seed `{seed}` has a bad node id"))?;
            let addr = addr
                .parse()
                .map_err(|_| format!("seed `{seed}` has a bad address"))?;
            Ok((id, addr))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env_layering() {
        let mut config = BrokerConfig::default();
        config
            .apply_toml(
                std::path::Path::new("q.toml"),
                "listen = \"127.0.0.1:9000\"\nflush = \"os\"\nretention_ms = -1\n",
            )
            .expect("valid file");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.flush, FlushPolicy::Os);
        assert_eq!(config.log.retention_ms, None);
        config
            .apply_env(|k| (k == "QUIVER_LISTEN").then(|| "127.0.0.1:9100".to_owned()))
            .expect("valid env");
        assert_eq!(config.listen.port(), 9100);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = BrokerConfig::default()
            .apply_toml(std::path::Path::new("q.toml"), "lisen = \"x\"")
            .expect_err("unknown key");
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let mut config = BrokerConfig::default();
        assert!(config.set("listen", "nowhere").is_err());
        assert!(config.set("flush", "sometimes").is_err());
        assert!(config.set("retention_bytes", "-7").is_err());
        assert!(config.set("seeds", "1@127.0.0.1:7420,two@x").is_err());
        config
            .set("seeds", "1@127.0.0.1:7420,2@127.0.0.1:7430")
            .expect("parses");
        assert!(config.validate().is_ok(), "founding seeds with this node");
        config
            .set("seeds", "2@127.0.0.1:7430,3@127.0.0.1:7440")
            .expect("parses");
        assert!(
            config.validate().is_ok(),
            "seeds that leave this node out: it joins their cluster"
        );
        config.set("listen", "0.0.0.0:7420").expect("parses");
        assert!(
            config.validate().is_err(),
            "a joining node must listen on an address the others can reach"
        );
        config.set("listen", "127.0.0.1:7420").expect("parses");
        config
            .set("seeds", "1@127.0.0.1:7420,1@127.0.0.1:7430")
            .expect("parses");
        assert!(config.validate().is_err(), "a repeated id is refused");
    }
}
