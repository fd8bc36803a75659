//! Prometheus metrics. Names follow Prometheus conventions: `quiver_` prefix, base
//! units, `_total` counters. Labels are bounded: per API, per error code, per topic —
//! never per partition or per client. Hot paths record once per batch.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::topic::Topic;

/// Latency buckets from 50 µs to 10 s.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// Every metric the broker exports.
pub struct Metrics {
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
    log_end_offset: IntGaugeVec,
    log_start_offset: IntGaugeVec,
    high_watermark: IntGaugeVec,
    log_size: IntGaugeVec,
    log_segments: IntGaugeVec,
    partitions: IntGaugeVec,
}

fn must<T>(result: prometheus::Result<T>) -> T {
    // Metric definitions are constants; a failure is a programming error found by the
    // first test that builds a broker.
    result.expect("metric definitions are valid and registered once")
}

impl Metrics {
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
        #[cfg(target_os = "linux")]
        must(registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));
        Self {
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
        ] {
            let _ = vec.remove_label_values(&[topic]);
        }
    }

    /// Renders the text exposition, sampling the log gauges first: they are read at
    /// scrape time rather than updated on every append.
    pub fn render(&self, topics: &[std::sync::Arc<Topic>]) -> String {
        for topic in topics {
            let (mut end, mut start, mut hw, mut size, mut segments) =
                (0u64, 0u64, 0u64, 0u64, 0usize);
            for partition in &topic.partitions {
                let log = partition.log();
                end += log.log_end_offset();
                start += log.log_start_offset();
                size += log.size_bytes();
                segments += log.segment_count();
                drop(log);
                hw += partition.high_watermark();
            }
            let label = [topic.name.as_ref()];
            self.log_end_offset
                .with_label_values(&label)
                .set(end as i64);
            self.log_start_offset
                .with_label_values(&label)
                .set(start as i64);
            self.high_watermark.with_label_values(&label).set(hw as i64);
            self.log_size.with_label_values(&label).set(size as i64);
            self.log_segments
                .with_label_values(&label)
                .set(segments as i64);
            self.partitions
                .with_label_values(&label)
                .set(topic.partitions.len() as i64);
        }
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(%err, "metrics encoding failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
