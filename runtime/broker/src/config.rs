//! Broker configuration: embedded defaults, a TOML file, command-line flags, and
//! `QUIVER_*` environment variables, in rising precedence (the CLI contract).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quiver_log::{FlushPolicy, LogConfig};

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
    /// Concurrent streams one connection may open (advertised as QUIC stream limits).
    pub streams_per_connection_max: u32,
    /// A request must arrive whole within this long of its stream opening, or the
    /// stream is reset with `REQUEST_TIMED_OUT` (a stalled sender holds nothing longer).
    pub request_read_timeout_ms: u64,
    /// Bytes of requests being received or handled, across all connections (Kafka's
    /// `queued.max.request.bytes`). Taken as bytes arrive; when it is spent the broker
    /// stops reading and QUIC flow control holds the senders back.
    pub request_bytes_in_flight_max: usize,
    /// Bytes of requests being received or handled from one client address: a share
    /// of `request_bytes_in_flight_max`, so one client cannot spend all of it.
    pub request_bytes_per_address_max: usize,
    /// An answer must be taken by the client within this long, or its stream is reset
    /// (a slow reader of a large fetch holds its request slot no longer).
    pub response_write_timeout_ms: u64,
    /// A fetch through plugins answers with the batches processed within this long
    /// (at least one), so a slow or failing plugin delays consumers but never silences
    /// them.
    pub fetch_plugin_time_max_ms: u64,
    /// Requests being read or handled at once from one client address, over all of its
    /// connections, so that one client's flood leaves room for others.
    pub requests_per_address_max: usize,
    /// Requests being read or handled at once from one authenticated principal, over
    /// all the addresses it connects from.
    pub requests_per_principal_max: usize,
    /// Open connections from one client address (Kafka's `max.connections.per.ip`).
    pub connections_max_per_ip: usize,
    /// A connection with no request for this long is closed, keep-alives or not
    /// (Kafka's `connections.max.idle.ms`).
    pub connection_idle_max_ms: u64,
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
    /// How clients prove who they are (`authentication`).
    pub authentication: Authentication,
    /// `authorization = "acl"`: every request is checked against the cluster's ACLs.
    pub authorization_acl: bool,
    /// Principals (`User:NAME`) that no ACL applies to.
    pub super_users: Vec<String>,
    /// Accept clients without credentials on a listener that is not loopback.
    pub allow_anonymous: bool,
    /// A join token from `quiver cluster init`: a node without the cluster's CA gets
    /// it and a broker certificate from a seed (`crate::join`).
    pub join_token: Option<crate::join_token::JoinToken>,
}

/// `authentication`: which credentials a client must present. With neither mechanism
/// every client is accepted (one that presents a certificate from the cluster's CA is
/// named by it, the others are `User:ANONYMOUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Authentication {
    /// A client certificate signed by the cluster's CA, naming `User:<common name>`.
    pub mtls: bool,
    /// SCRAM-SHA-256 inside the TLS connection, for users the controller stores.
    pub scram: bool,
}

impl Authentication {
    /// `authentication = "none"`.
    pub const NONE: Authentication = Authentication {
        mtls: false,
        scram: false,
    };

    fn parse(text: &str) -> Result<Self, String> {
        let mut out = Authentication::NONE;
        for part in text.split(',').map(str::trim) {
            match part {
                "none" if text.trim() == "none" => {}
                "mtls" => out.mtls = true,
                "scram" => out.scram = true,
                _ => {
                    return Err(format!(
                        "`{text}` is not \"none\", \"mtls\", \"scram\" or \"mtls,scram\""
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Whether clients must prove who they are.
    pub const fn is_required(self) -> bool {
        self.mtls || self.scram
    }

    /// Whether the TLS handshake refuses a client without a certificate: under mTLS
    /// alone (with SCRAM too, such a client may authenticate with a password instead).
    pub const fn certificate_required(self) -> bool {
        self.mtls && !self.scram
    }
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
            request_read_timeout_ms: 30_000,
            request_bytes_in_flight_max: 512 * 1024 * 1024,
            request_bytes_per_address_max: 128 * 1024 * 1024,
            response_write_timeout_ms: 30_000,
            fetch_plugin_time_max_ms: 500,
            requests_per_address_max: 4_096,
            requests_per_principal_max: 4_096,
            connections_max_per_ip: 1_000,
            connection_idle_max_ms: 10 * 60 * 1000,
            fetch_zero_copy: true,
            metrics: true,
            plugins: quiver_plugin_host::Limits::default(),
            replica_lag_max_ms: 10_000,
            broker_session_timeout_ms: 6_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            authentication: Authentication::NONE,
            authorization_acl: false,
            super_users: Vec::new(),
            allow_anonymous: false,
            join_token: None,
        }
    }
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
    "plugin_call_wall_ms_max",
    "replica_lag_max_ms",
    "broker_session_timeout_ms",
    "offsets_retention_ms",
    "request_read_timeout_ms",
    "request_bytes_in_flight_max",
    "request_bytes_per_address_max",
    "response_write_timeout_ms",
    "fetch_plugin_time_max_ms",
    "requests_per_address_max",
    "requests_per_principal_max",
    "connections_max_per_ip",
    "connection_idle_max_ms",
    "authentication",
    "authorization",
    "super_users",
    "allow_anonymous",
    "join_token",
];

impl BrokerConfig {
    /// Applies a TOML document on top of `self`: every top-level key must be one of
    /// [`CONFIG_KEYS`], and its value (a string, integer or boolean) is read as the
    /// same text a flag or variable would give.
    pub fn apply_toml(&mut self, path: &std::path::Path, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        for (key, value) in table {
            if !CONFIG_KEYS.contains(&key.as_str()) {
                return Err(ConfigError::Parse {
                    path: path.to_owned(),
                    message: format!("unknown key `{key}`"),
                });
            }
            let text = match value {
                toml::Value::String(v) => v,
                toml::Value::Integer(v) => v.to_string(),
                toml::Value::Boolean(v) => v.to_string(),
                // A list of strings (`super_users`) reads as the comma-separated text a
                // flag or variable gives.
                toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => items
                    .iter()
                    .filter_map(toml::Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                other => {
                    return Err(ConfigError::Invalid {
                        key,
                        message: format!(
                            "expected a string, integer or boolean, not {}",
                            other.type_str()
                        ),
                    });
                }
            };
            self.set(&key, &text)?;
        }
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
            "join_token" => {
                self.join_token = if value.trim().is_empty() {
                    None
                } else {
                    Some(
                        value
                            .parse()
                            .map_err(|e: crate::join_token::InvalidJoinToken| {
                                invalid(e.to_string())
                            })?,
                    )
                };
            }
            "connections_max" => self.connections_max = int(value)?.max(1) as usize,
            "requests_in_flight_max" => self.requests_in_flight_max = int(value)?.max(1) as usize,
            "streams_per_connection_max" => {
                self.streams_per_connection_max =
                    u32::try_from(int(value)?.max(1)).map_err(|e| invalid(e.to_string()))?;
            }
            "request_read_timeout_ms" => self.request_read_timeout_ms = int(value)?.max(1),
            "request_bytes_in_flight_max" => {
                let v = int(value)? as usize;
                if v < quiver_wire::frame::FRAME_BYTES_MAX {
                    return Err(invalid(format!(
                        "{v} is below the largest request frame ({} bytes), which could then never be read",
                        quiver_wire::frame::FRAME_BYTES_MAX
                    )));
                }
                self.request_bytes_in_flight_max = v;
            }
            "request_bytes_per_address_max" => {
                let v = int(value)? as usize;
                if v < quiver_wire::frame::FRAME_BYTES_MAX {
                    return Err(invalid(format!(
                        "{v} is below the largest request frame ({} bytes), which could then never be read",
                        quiver_wire::frame::FRAME_BYTES_MAX
                    )));
                }
                self.request_bytes_per_address_max = v;
            }
            "response_write_timeout_ms" => self.response_write_timeout_ms = int(value)?.max(1),
            "fetch_plugin_time_max_ms" => self.fetch_plugin_time_max_ms = int(value)?.max(1),
            "requests_per_address_max" => {
                self.requests_per_address_max = int(value)?.max(1) as usize;
            }
            "requests_per_principal_max" => {
                self.requests_per_principal_max = int(value)?.max(1) as usize;
            }
            "connections_max_per_ip" => self.connections_max_per_ip = int(value)?.max(1) as usize,
            "connection_idle_max_ms" => self.connection_idle_max_ms = int(value)?.max(1),
            "authentication" => {
                self.authentication = Authentication::parse(value).map_err(invalid)?
            }
            "authorization" => {
                self.authorization_acl = match value.trim() {
                    "off" => false,
                    "acl" => true,
                    other => return Err(invalid(format!("`{other}` is not \"off\" or \"acl\""))),
                };
            }
            "super_users" => {
                self.super_users = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| match s.strip_prefix("User:") {
                        Some(name) if !name.is_empty() => Ok(s.to_owned()),
                        _ => Err(invalid(format!("`{s}` is not User:NAME"))),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "allow_anonymous" => {
                self.allow_anonymous = value
                    .parse()
                    .map_err(|_| invalid(format!("`{value}` is not true or false")))?;
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
            "plugin_call_wall_ms_max" => {
                let v = int(value)?;
                if !(1..=600_000).contains(&v) {
                    return Err(invalid(format!("{v} is not between 1 and 600000 ms")));
                }
                self.plugins.call_wall_time_max = Duration::from_millis(v);
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
        if self.join_token.is_some() && self.tls_cert.is_some() {
            return Err(ConfigError::Invalid {
                key: "join_token".into(),
                message: "a join token gets this broker a certificate from the cluster's CA; with tls_cert the operator gives one: use one or the other".into(),
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
        if !self.authentication.is_required()
            && !self.listen.ip().is_loopback()
            && !self.allow_anonymous
        {
            return Err(ConfigError::Invalid {
                key: "authentication".into(),
                message: format!(
                    "the listener {} is not a loopback address, and authentication = \"none\" would let anyone who reaches it do anything: set authentication (\"mtls\", \"scram\"), or allow_anonymous = true (--allow-anonymous) if that is meant",
                    self.listen
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
        config.set("allow_anonymous", "true").expect("parses");
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

    #[test]
    fn a_routable_listener_needs_authentication_or_an_explicit_allow() {
        let mut config = BrokerConfig::default();
        assert!(
            config.validate().is_ok(),
            "the loopback default needs nothing"
        );
        config.set("listen", "10.1.2.3:7420").expect("parses");
        let refused = config
            .validate()
            .expect_err("anonymous on a routable address");
        let message = refused.to_string();
        assert!(message.contains("`authentication`"), "{message}");
        assert!(message.contains("allow_anonymous"), "{message}");
        config.set("allow_anonymous", "true").expect("parses");
        assert!(config.validate().is_ok());
        config.set("allow_anonymous", "false").expect("parses");
        config.set("authentication", "mtls").expect("parses");
        assert!(config.validate().is_ok());
        config.set("authentication", "mtls,scram").expect("parses");
        assert!(config.authentication.mtls && config.authentication.scram);
        assert!(!config.authentication.certificate_required());
        config.set("authentication", "scram").expect("parses");
        assert!(config.validate().is_ok());
        assert!(config.set("authentication", "kerberos").is_err());
        assert!(config.set("authentication", "none,mtls").is_err());
    }

    #[test]
    fn security_settings_read_from_a_file() {
        let mut config = BrokerConfig::default();
        config
            .apply_toml(
                std::path::Path::new("q.toml"),
                "authentication = \"mtls\"\nauthorization = \"acl\"\nsuper_users = [\"User:admin\", \"User:ops\"]\n",
            )
            .expect("valid file");
        assert_eq!(
            config.authentication,
            Authentication {
                mtls: true,
                scram: false
            }
        );
        assert!(config.authorization_acl);
        assert_eq!(config.super_users, ["User:admin", "User:ops"]);
        assert!(config.set("super_users", "admin").is_err());
        assert!(config.set("authorization", "rbac").is_err());
    }
}
