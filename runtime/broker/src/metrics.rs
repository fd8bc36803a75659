//! Prometheus metrics. Names follow Prometheus conventions: `quiver_` prefix, base
//! units, `_total` counters. Labels are bounded: per API, per error code, per topic —
//! never per partition or per client. Hot paths record once per batch; everything that
//! can be read off the broker's state (log offsets and sizes, replica health, disk
//! space) is sampled at scrape time in [`Metrics::render`] instead of being counted.

use std::path::Path;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets from 50 µs to 10 s.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// Every metric the broker exports.
pub struct Metrics {
    /// `false` when the operator turned metrics off (`metrics = false`): hot paths
    /// record nothing and `/metrics` answers 404.
    pub enabled: bool,
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_errors: IntCounterVec,
    pub request_duration: HistogramVec,
    pub produce_records: IntCounterVec,
    pub produce_bytes: IntCounterVec,
    pub produce_batches: IntCounterVec,
    pub fetch_bytes: IntCounterVec,
    pub fetch_batches: IntCounterVec,
    pub flush_duration: Histogram,
    pub connections_open: IntGauge,
    pub requests_in_flight: IntGauge,
    /// Connections refused before their handshake, by the limit that refused them.
    pub connections_refused: IntCounterVec,
    /// Streams reset because a request did not arrive, or an answer was not taken, in
    /// time (`phase` = read | write).
    pub streams_timed_out: IntCounterVec,
    /// Bytes of requests being received or handled (`request_bytes_in_flight_max`).
    pub request_bytes_in_flight: IntGauge,
    /// Fetches answered early because their plugins spent `fetch_plugin_time_max_ms`.
    pub fetch_plugin_budget_spent: IntCounterVec,
    /// Clients whose credentials were refused, by mechanism.
    pub authentication_failures: IntCounterVec,
    /// Requests refused by the ACLs, by operation and resource type.
    pub authorization_denials: IntCounterVec,
    /// Seconds answers were held back by client quotas, by principal and quota.
    pub throttle_seconds: prometheus::CounterVec,
    log_end_offset: IntGaugeVec,
    log_start_offset: IntGaugeVec,
    high_watermark: IntGaugeVec,
    log_size: IntGaugeVec,
    log_segments: IntGaugeVec,
    partitions: IntGaugeVec,
    under_replicated_partitions: IntGaugeVec,
    offline_partitions: IntGaugeVec,
    storage_failed_partitions: IntGaugeVec,
    data_dir_bytes_free: IntGauge,
    data_dir_bytes_total: IntGauge,
    broker_info: IntGaugeVec,
    group_lag: IntGaugeVec,
    group_members: IntGaugeVec,
    pub plugin_calls: IntCounterVec,
    pub plugin_errors: IntCounterVec,
    pub plugin_call_duration: HistogramVec,
    pub plugin_records_in: IntCounterVec,
    pub plugin_records_out: IntCounterVec,
    pub plugin_batches_skipped: IntCounterVec,
    pub plugin_dead_letter_records: IntCounterVec,
    plugin_memory: IntGaugeVec,
    plugin_loads: IntCounterVec,
    plugins_registered: IntGauge,
}

/// Facts about this broker that a scrape reports besides its topics.
#[derive(Debug, Clone)]
pub struct BrokerFacts<'a> {
    pub node_id: u32,
    /// `(group, topic, lag)`: records not yet committed by the group, per topic.
    pub group_lag: Vec<(String, String, u64)>,
    /// `(group, members)` for every group with members or committed offsets.
    pub group_members: Vec<(String, u32)>,
    /// The data directory, whose file system's free and total bytes are exported.
    pub data_dir: &'a Path,
    /// Plugins registered, and how many were loaded from the compile cache and how
    /// many compiled since start.
    pub plugins_registered: usize,
    pub plugin_loads_from_cache: u64,
    pub plugin_loads_compiled: u64,
    /// Bytes of requests being received or handled now.
    pub request_bytes_in_flight: usize,
    /// Per topic, the partitions this broker reports as under-replicated or offline
    /// ([`ReplicaHealth::of_partitions`]); topics not named report zero.
    pub replica_health: std::collections::BTreeMap<String, ReplicaHealth>,
}

/// Replica health of one topic, counted over its partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaHealth {
    /// Partitions with fewer in-sync replicas than assigned ones.
    pub under_replicated: u64,
    /// Partitions with no in-sync replica, hence no leader to serve them.
    pub offline: u64,
}

impl ReplicaHealth {
    /// Counts what broker `node` should report for a topic's partitions, given each
    /// one's `(leader, assigned replicas, in-sync replicas)` from the controller's
    /// metadata. As in Kafka, a partition counts as under-replicated only on its
    /// leader, and as offline (no leader) only on the controller leader, so that a sum
    /// over the cluster's brokers is the cluster's figure.
    pub fn of_partitions(
        node: u32,
        controller_leader: bool,
        partitions: impl IntoIterator<Item = (Option<u32>, usize, usize)>,
    ) -> Self {
        let mut health = Self::default();
        for (leader, assigned, in_sync) in partitions {
            match leader {
                Some(leader) if leader == node && in_sync < assigned => {
                    health.under_replicated += 1;
                }
                Some(_) => {}
                None if controller_leader => health.offline += 1,
                None => {}
            }
        }
        health
    }
}

/// Free (available to this unprivileged process) and total bytes of the file system
/// holding `path`, from statvfs(3).
pub fn file_system_bytes(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `stat`
    // points to writable memory the size of a `statvfs`.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct (it was zeroed before anyway).
    let stat = unsafe { stat.assume_init() };
    let fragment = widen(stat.f_frsize);
    // `f_bavail`, not `f_bfree`: blocks reserved for root are no use to the broker.
    let free = widen(stat.f_bavail).saturating_mul(fragment);
    let total = widen(stat.f_blocks).saturating_mul(fragment);
    Ok((free, total))
}

/// statvfs field types differ between targets (`c_ulong`, `fsblkcnt_t`); none is signed
/// or wider than 64 bits, so the fallback never applies in practice.
fn widen<T: TryInto<u64>>(value: T) -> u64 {
    value.try_into().unwrap_or(u64::MAX)
}

/// Clamps a count to the gauge's range.
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn must<T>(result: prometheus::Result<T>) -> T {
    // Metric definitions are constants; a failure is a programming error found by the
    // first test that builds a broker.
    result.expect("metric definitions are valid and registered once")
}

impl Metrics {
    /// Metrics that record nothing, for `metrics = false`.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::new()
        }
    }

    /// One request handled.
    pub fn request(&self, api: &str) {
        if self.enabled {
            self.requests.with_label_values(&[api]).inc();
        }
    }

    /// One request answered with an error.
    pub fn request_error(&self, api: &str, code: &str) {
        if self.enabled {
            self.request_errors.with_label_values(&[api, code]).inc();
        }
    }

    pub fn request_duration(&self, api: &str, seconds: f64) {
        if self.enabled {
            self.request_duration
                .with_label_values(&[api])
                .observe(seconds);
        }
    }

    pub fn in_flight(&self, delta: i64) {
        if self.enabled {
            self.requests_in_flight.add(delta);
        }
    }

    /// A connection refused by `reason`'s limit.
    pub fn connection_refused(&self, reason: &str) {
        if self.enabled {
            self.connections_refused.with_label_values(&[reason]).inc();
        }
    }

    /// A client whose credentials `mechanism` refused.
    pub fn authentication_failed(&self, mechanism: &str) {
        if self.enabled {
            self.authentication_failures
                .with_label_values(&[mechanism])
                .inc();
        }
    }

    /// An answer held back `seconds` by `principal`'s `quota`.
    pub fn throttled(&self, principal: &str, quota: &str, seconds: f64) {
        if self.enabled {
            self.throttle_seconds
                .with_label_values(&[principal, quota])
                .inc_by(seconds);
        }
    }

    /// A request the ACLs refused.
    pub fn authorization_denied(&self, operation: &str, resource_type: &str) {
        if self.enabled {
            self.authorization_denials
                .with_label_values(&[operation, resource_type])
                .inc();
        }
    }

    /// A request stream reset for taking too long in `phase` (read or write).
    pub fn stream_timed_out(&self, phase: &str) {
        if self.enabled {
            self.streams_timed_out.with_label_values(&[phase]).inc();
        }
    }

    /// A fetch answered early: its plugins spent their time budget.
    pub fn fetch_plugin_budget_spent(&self, topic: &str) {
        if self.enabled {
            self.fetch_plugin_budget_spent
                .with_label_values(&[topic])
                .inc();
        }
    }

    pub fn connection(&self, delta: i64) {
        if self.enabled {
            self.connections_open.add(delta);
        }
    }

    /// One batch appended (records and bytes are 0 for a duplicate).
    pub fn produced(&self, topic: &str, records: u64, bytes: u64) {
        if self.enabled {
            let label = [topic];
            self.produce_records
                .with_label_values(&label)
                .inc_by(records);
            self.produce_bytes.with_label_values(&label).inc_by(bytes);
            self.produce_batches.with_label_values(&label).inc();
        }
    }

    /// One fetch answered.
    pub fn fetched(&self, topic: &str, batches: u64, bytes: u64) {
        if self.enabled {
            let label = [topic];
            self.fetch_batches.with_label_values(&label).inc_by(batches);
            self.fetch_bytes.with_label_values(&label).inc_by(bytes);
        }
    }

    /// One plugin call over one batch.
    pub fn plugin_call(&self, stage: &str, report: &quiver_plugin_host::StepReport) {
        if !self.enabled {
            return;
        }
        let labels = [report.plugin.as_str(), stage];
        self.plugin_calls.with_label_values(&labels).inc();
        self.plugin_call_duration
            .with_label_values(&labels)
            .observe(report.elapsed.as_secs_f64());
        self.plugin_records_in
            .with_label_values(&labels)
            .inc_by(report.records_in as u64);
        match report.error {
            Some(kind) => self
                .plugin_errors
                .with_label_values(&[report.plugin.as_str(), stage, kind])
                .inc(),
            None => {
                self.plugin_records_out
                    .with_label_values(&labels)
                    .inc_by(report.records_out as u64);
                self.plugin_memory
                    .with_label_values(&[report.plugin.as_str()])
                    .set(gauge_value(report.memory_bytes as u64));
            }
        }
    }

    /// A batch a failing plugin's `skip` policy dropped.
    pub fn plugin_skipped(&self, plugin: &str, stage: &str) {
        if self.enabled {
            self.plugin_batches_skipped
                .with_label_values(&[plugin, stage])
                .inc();
        }
    }

    /// Records a failing plugin's `dead-letter` policy sent to its topic.
    pub fn plugin_dead_lettered(&self, plugin: &str, stage: &str, records: u64) {
        if self.enabled {
            self.plugin_dead_letter_records
                .with_label_values(&[plugin, stage])
                .inc_by(records);
        }
    }

    /// One group-commit fdatasync.
    pub fn flushed(&self, seconds: f64) {
        if self.enabled {
            self.flush_duration.observe(seconds);
        }
    }

    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = must(IntGaugeVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let requests = counter(
            "quiver_requests_total",
            "Requests handled, by API.",
            &["api"],
        );
        let request_errors = counter(
            "quiver_request_errors_total",
            "Requests answered with an error, by API and code.",
            &["api", "code"],
        );
        let request_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "quiver_request_duration_seconds",
                "Time from request read to response written, by API.",
            )
            .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
            &["api"],
        ));
        must(registry.register(Box::new(request_duration.clone())));
        let flush_duration = must(Histogram::with_opts(
            HistogramOpts::new(
                "quiver_flush_duration_seconds",
                "Duration of one group-commit fdatasync.",
            )
            .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
        ));
        must(registry.register(Box::new(flush_duration.clone())));
        let plugin_call_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "quiver_plugin_call_duration_seconds",
                "Time one plugin call over one batch took, by plugin and stage.",
            )
            .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
            &["plugin", "stage"],
        ));
        must(registry.register(Box::new(plugin_call_duration.clone())));
        let plugins_registered = must(IntGauge::new(
            "quiver_plugins_registered",
            "Plugins registered on this broker.",
        ));
        must(registry.register(Box::new(plugins_registered.clone())));
        let connections_open = must(IntGauge::new(
            "quiver_connections_open",
            "Open QUIC connections.",
        ));
        must(registry.register(Box::new(connections_open.clone())));
        let requests_in_flight = must(IntGauge::new(
            "quiver_requests_in_flight",
            "Requests being handled (one stream each).",
        ));
        must(registry.register(Box::new(requests_in_flight.clone())));
        let request_bytes_in_flight = must(IntGauge::new(
            "quiver_request_bytes_in_flight",
            "Bytes of requests being received or handled, held against request_bytes_in_flight_max.",
        ));
        must(registry.register(Box::new(request_bytes_in_flight.clone())));
        let data_dir_bytes_free = must(IntGauge::new(
            "quiver_data_dir_bytes_free",
            "Bytes available to the broker on the data directory's file system.",
        ));
        must(registry.register(Box::new(data_dir_bytes_free.clone())));
        let data_dir_bytes_total = must(IntGauge::new(
            "quiver_data_dir_bytes_total",
            "Size in bytes of the data directory's file system.",
        ));
        must(registry.register(Box::new(data_dir_bytes_total.clone())));
        #[cfg(target_os = "linux")]
        must(registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));
        Self {
            enabled: true,
            requests,
            request_errors,
            request_duration,
            produce_records: counter(
                "quiver_produce_records_total",
                "Records appended, by topic.",
                &["topic"],
            ),
            produce_bytes: counter(
                "quiver_produce_bytes_total",
                "Batch bytes appended, by topic.",
                &["topic"],
            ),
            produce_batches: counter(
                "quiver_produce_batches_total",
                "Batches appended, by topic.",
                &["topic"],
            ),
            fetch_bytes: counter(
                "quiver_fetch_bytes_total",
                "Batch bytes sent to consumers, by topic.",
                &["topic"],
            ),
            fetch_batches: counter(
                "quiver_fetch_batches_total",
                "Batches sent to consumers, by topic.",
                &["topic"],
            ),
            flush_duration,
            connections_open,
            requests_in_flight,
            connections_refused: counter(
                "quiver_connections_refused_total",
                "Connections refused before their handshake, by the limit that refused them.",
                &["reason"],
            ),
            streams_timed_out: counter(
                "quiver_streams_timed_out_total",
                "Request streams reset because the request did not arrive (read) or the answer was not taken (write) in time.",
                &["phase"],
            ),
            request_bytes_in_flight,
            authentication_failures: counter(
                "quiver_authentication_failures_total",
                "Clients whose credentials were refused (missing, from another CA, naming nobody), by mechanism.",
                &["mechanism"],
            ),
            throttle_seconds: {
                let vec = must(prometheus::CounterVec::new(
                    Opts::new(
                        "quiver_throttle_seconds_total",
                        "Seconds answers were held back because a principal was over its client quota, by principal and quota (produce, fetch, request).",
                    ),
                    &["principal", "quota"],
                ));
                must(registry.register(Box::new(vec.clone())));
                vec
            },
            authorization_denials: counter(
                "quiver_authorization_denials_total",
                "Requests refused by the ACLs, by operation and resource type.",
                &["operation", "resource_type"],
            ),
            fetch_plugin_budget_spent: counter(
                "quiver_fetch_plugin_budget_spent_total",
                "Fetches answered with part of their batches because the topic's plugins spent fetch_plugin_time_max_ms, by topic.",
                &["topic"],
            ),
            log_end_offset: gauge(
                "quiver_log_end_offset",
                "Sum of partition log end offsets, by topic.",
                &["topic"],
            ),
            log_start_offset: gauge(
                "quiver_log_start_offset",
                "Sum of partition log start offsets, by topic.",
                &["topic"],
            ),
            high_watermark: gauge(
                "quiver_high_watermark",
                "Sum of partition high watermarks, by topic.",
                &["topic"],
            ),
            log_size: gauge(
                "quiver_log_size_bytes",
                "Bytes in segment files, by topic.",
                &["topic"],
            ),
            log_segments: gauge(
                "quiver_log_segments",
                "Segment files, by topic.",
                &["topic"],
            ),
            partitions: gauge("quiver_partitions", "Partitions, by topic.", &["topic"]),
            under_replicated_partitions: gauge(
                "quiver_under_replicated_partitions",
                "Partitions with fewer in-sync replicas than assigned replicas, by topic.",
                &["topic"],
            ),
            offline_partitions: gauge(
                "quiver_offline_partitions",
                "Partitions without an in-sync replica to lead them, by topic.",
                &["topic"],
            ),
            storage_failed_partitions: gauge(
                "quiver_storage_failed_partitions",
                "Partitions this broker took out of service after a failed fsync, by topic: \
                 they refuse writes until the broker restarts and recovers them from disk.",
                &["topic"],
            ),
            data_dir_bytes_free,
            data_dir_bytes_total,
            broker_info: gauge(
                "quiver_broker_info",
                "Always 1; labels name this broker's node id and version.",
                &["node_id", "version"],
            ),
            group_lag: gauge(
                "quiver_consumer_group_lag",
                "Records between a group's committed offsets and the high watermarks, summed per topic.",
                &["group", "topic"],
            ),
            group_members: gauge(
                "quiver_consumer_group_members",
                "Members of a consumer group.",
                &["group"],
            ),
            plugin_calls: counter(
                "quiver_plugin_calls_total",
                "Plugin calls, one per batch, by plugin and stage.",
                &["plugin", "stage"],
            ),
            plugin_errors: counter(
                "quiver_plugin_errors_total",
                "Plugin calls that failed, by plugin, stage and kind (trap, timeout, memory, answer, guest, init, engine).",
                &["plugin", "stage", "kind"],
            ),
            plugin_call_duration,
            plugin_records_in: counter(
                "quiver_plugin_records_in_total",
                "Records passed to plugins, by plugin and stage.",
                &["plugin", "stage"],
            ),
            plugin_records_out: counter(
                "quiver_plugin_records_out_total",
                "Records plugins kept or produced, by plugin and stage.",
                &["plugin", "stage"],
            ),
            plugin_batches_skipped: counter(
                "quiver_plugin_batches_skipped_total",
                "Batches dropped because a plugin failed and its on_error is skip.",
                &["plugin", "stage"],
            ),
            plugin_dead_letter_records: counter(
                "quiver_plugin_dead_letter_records_total",
                "Records sent to a dead-letter topic because a plugin failed on their batch.",
                &["plugin", "stage"],
            ),
            plugin_memory: gauge(
                "quiver_plugin_memory_bytes",
                "Linear memory of a plugin's instance after its latest call, by plugin.",
                &["plugin"],
            ),
            plugin_loads: counter(
                "quiver_plugin_loads_total",
                "Plugin versions made ready since start, by source: cache (compile cache on disk) or compile.",
                &["source"],
            ),
            plugins_registered,
            registry,
        }
    }

    /// Drops a deleted topic's series so label cardinality does not grow with churn.
    pub fn forget_topic(&self, topic: &str) {
        for vec in [
            &self.produce_records,
            &self.produce_bytes,
            &self.produce_batches,
            &self.fetch_bytes,
            &self.fetch_batches,
        ] {
            let _ = vec.remove_label_values(&[topic]);
        }
        for vec in [
            &self.log_end_offset,
            &self.log_start_offset,
            &self.high_watermark,
            &self.log_size,
            &self.log_segments,
            &self.partitions,
            &self.under_replicated_partitions,
            &self.offline_partitions,
            &self.storage_failed_partitions,
        ] {
            let _ = vec.remove_label_values(&[topic]);
        }
    }

    /// Renders the text exposition, sampling the gauges first: log offsets and sizes,
    /// replica health and disk space are read at scrape time rather than updated on
    /// every append.
    pub fn render(&self, topics: &[TopicSample], broker: BrokerFacts<'_>) -> String {
        self.broker_info
            .with_label_values(&[
                broker.node_id.to_string().as_str(),
                env!("CARGO_PKG_VERSION"),
            ])
            .set(1);
        self.plugins_registered
            .set(gauge_value(broker.plugins_registered as u64));
        self.request_bytes_in_flight
            .set(gauge_value(broker.request_bytes_in_flight as u64));
        for (source, total) in [
            ("cache", broker.plugin_loads_from_cache),
            ("compile", broker.plugin_loads_compiled),
        ] {
            let counter = self.plugin_loads.with_label_values(&[source]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        // Rebuilt each scrape so groups that vanished leave no stale series.
        self.group_lag.reset();
        for (group, topic, lag) in &broker.group_lag {
            self.group_lag
                .with_label_values(&[group.as_str(), topic.as_str()])
                .set(gauge_value(*lag));
        }
        self.group_members.reset();
        for (group, members) in &broker.group_members {
            self.group_members
                .with_label_values(&[group.as_str()])
                .set(i64::from(*members));
        }
        match file_system_bytes(broker.data_dir) {
            Ok((free, total)) => {
                self.data_dir_bytes_free.set(gauge_value(free));
                self.data_dir_bytes_total.set(gauge_value(total));
            }
            // Left at their last values: a scrape should not fail for want of one gauge.
            Err(err) => {
                let dir = broker.data_dir.display();
                tracing::warn!(%err, %dir, "statvfs of the data directory failed");
            }
        }
        for topic in topics {
            let label = [topic.name.as_ref()];
            self.log_end_offset
                .with_label_values(&label)
                .set(gauge_value(topic.log_end_offset));
            self.log_start_offset
                .with_label_values(&label)
                .set(gauge_value(topic.log_start_offset));
            self.high_watermark
                .with_label_values(&label)
                .set(gauge_value(topic.high_watermark));
            self.log_size
                .with_label_values(&label)
                .set(gauge_value(topic.size_bytes));
            self.log_segments
                .with_label_values(&label)
                .set(gauge_value(topic.segments));
            self.partitions
                .with_label_values(&label)
                .set(gauge_value(topic.partitions));
            let health = broker
                .replica_health
                .get(topic.name.as_ref())
                .copied()
                .unwrap_or_default();
            self.under_replicated_partitions
                .with_label_values(&label)
                .set(gauge_value(health.under_replicated));
            self.offline_partitions
                .with_label_values(&label)
                .set(gauge_value(health.offline));
            self.storage_failed_partitions
                .with_label_values(&label)
                .set(gauge_value(topic.storage_failed));
        }
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(%err, "metrics encoding failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// One topic's log gauges, sampled at scrape time by what holds the logs
/// (`Topic::sample`), summed over its partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicSample {
    pub name: std::sync::Arc<str>,
    pub partitions: u64,
    pub log_end_offset: u64,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub size_bytes: u64,
    pub segments: u64,
    /// Partitions taken out of service by a failed fsync.
    pub storage_failed: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn under_replicated_partitions_count_on_their_leader_and_offline_ones_on_the_controller() {
        // (leader, assigned, in sync): healthy, under-replicated led here,
        // under-replicated led elsewhere, offline.
        let partitions = [
            (Some(1), 3, 3),
            (Some(1), 3, 2),
            (Some(2), 3, 1),
            (None, 3, 1),
        ];
        assert_eq!(
            ReplicaHealth::of_partitions(1, false, partitions),
            ReplicaHealth {
                under_replicated: 1,
                offline: 0
            }
        );
        assert_eq!(
            ReplicaHealth::of_partitions(2, true, partitions),
            ReplicaHealth {
                under_replicated: 1,
                offline: 1
            }
        );
        let healthy = [(Some(1), 3, 3), (Some(2), 3, 3), (Some(3), 3, 3)];
        for node in 1..=3 {
            assert_eq!(
                ReplicaHealth::of_partitions(node, node == 1, healthy),
                ReplicaHealth::default(),
                "a healthy replication-factor-3 topic reads 0 on node {node}"
            );
        }
    }

    #[test]
    fn partitions_whose_fsync_failed_are_counted_by_topic() {
        let dir = tempfile::tempdir().expect("temp dir");
        let partitions: Vec<Arc<crate::partition::Partition>> = (0..3)
            .map(|index| {
                let (log, _) = quiver_log::PartitionLog::open(
                    &dir.path().join(format!("t-{index}")),
                    quiver_log::LogConfig::default(),
                    0,
                )
                .expect("log opens");
                Arc::new(crate::partition::Partition::new(
                    "t".into(),
                    index,
                    log,
                    quiver_log::FlushPolicy::Always,
                ))
            })
            .collect();
        let topic = Arc::new(crate::topic::Topic {
            name: "t".into(),
            partitions,
            replication_factor: 1,
            configs: Default::default(),
        });
        let facts = || BrokerFacts {
            node_id: 1,
            group_lag: Vec::new(),
            group_members: Vec::new(),
            data_dir: dir.path(),
            plugins_registered: 0,
            plugin_loads_from_cache: 0,
            plugin_loads_compiled: 0,
            request_bytes_in_flight: 0,
            replica_health: Default::default(),
        };
        let metrics = Metrics::new();
        let healthy = metrics.render(&[topic.sample()], facts());
        assert!(
            healthy.contains("quiver_storage_failed_partitions{topic=\"t\"} 0"),
            "{healthy}"
        );
        topic.partitions[1].take_out_of_service();
        let failed = metrics.render(&[topic.sample()], facts());
        assert!(
            failed.contains("quiver_storage_failed_partitions{topic=\"t\"} 1"),
            "{failed}"
        );
        let refused = topic.partitions[1].append(bytes::BytesMut::new(), 0);
        assert!(
            matches!(
                refused,
                Err(crate::partition::PartitionAppendError::StorageFailed)
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn file_system_bytes_reports_the_data_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (free, total) = file_system_bytes(dir.path()).expect("statvfs of a temp dir");
        assert!(total > 0 && free <= total, "free {free} of total {total}");
        assert!(file_system_bytes(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn render_exports_broker_info_and_disk_space() {
        let dir = tempfile::tempdir().expect("temp dir");
        let facts = BrokerFacts {
            node_id: 7,
            group_lag: vec![("g".into(), "t".into(), 5)],
            group_members: vec![("g".into(), 2)],
            data_dir: dir.path(),
            plugins_registered: 0,
            plugin_loads_from_cache: 0,
            plugin_loads_compiled: 0,
            request_bytes_in_flight: 0,
            replica_health: Default::default(),
        };
        let text = Metrics::new().render(&[], facts);
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!(
                "quiver_broker_info{{node_id=\"7\",version=\"{version}\"}} 1"
            )),
            "{text}"
        );
        assert!(
            text.contains("quiver_consumer_group_lag{group=\"g\",topic=\"t\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("quiver_consumer_group_members{group=\"g\"} 2"),
            "{text}"
        );
        for name in [
            "quiver_data_dir_bytes_free ",
            "quiver_data_dir_bytes_total ",
        ] {
            let value: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} missing from {text}"));
            assert!(value > 0, "{name}{value}");
        }
    }
}
