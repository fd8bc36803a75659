//! Log lines that a flood could repeat thousands of times a second (refused
//! connections, reset streams, failing plugins) are written at most once per interval,
//! each with the count of those left out since the last.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::admission::ConnectionRefused;
use crate::clock::Clock;

/// How often one kind of flood-prone line is written at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One kind of rate-limited log line.
#[derive(Debug, Default)]
pub struct LogLimit {
    /// When the last line was written (ms on the caller's clock); 0 before the first.
    last_ms: AtomicI64,
    unlogged: AtomicU64,
}

impl LogLimit {
    /// `Some(lines left out since the last one)` when a line is due at `now_ms`;
    /// `None` (and one more left out) otherwise.
    pub fn due(&self, now_ms: i64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Acquire);
        let interval = LOG_INTERVAL.as_millis() as i64;
        if (last == 0 || now_ms - last >= interval)
            && self
                .last_ms
                .compare_exchange(last, now_ms.max(1), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            Some(self.unlogged.swap(0, Ordering::AcqRel))
        } else {
            self.unlogged.fetch_add(1, Ordering::AcqRel);
            None
        }
    }
}

/// Flood-prone refusals and timeouts, each logged at most once per
/// [`crate::log_limit::LOG_INTERVAL`].
pub(crate) struct RefusalLog {
    connections: LogLimit,
    timeouts: LogLimit,
    authentication: LogLimit,
    clock: Arc<dyn Clock>,
}

impl RefusalLog {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            connections: LogLimit::default(),
            timeouts: LogLimit::default(),
            authentication: LogLimit::default(),
            clock,
        }
    }

    pub(crate) fn connection_refused(&self, from: SocketAddr, refused: ConnectionRefused) {
        if let Some(unlogged) = self.connections.due(self.clock.now_ms()) {
            tracing::warn!(%from, reason = refused.reason(), unlogged, "connection refused: {refused}");
        }
    }

    pub(crate) fn authentication_failed(&self, from: SocketAddr, why: &str) {
        if let Some(unlogged) = self.authentication.due(self.clock.now_ms()) {
            tracing::warn!(%from, mechanism = "mtls", unlogged, "authentication failed: {why}");
        }
    }

    pub(crate) fn stream_timed_out(&self, from: SocketAddr, phase: &str, limit_ms: u64) {
        if let Some(unlogged) = self.timeouts.due(self.clock.now_ms()) {
            tracing::warn!(%from, phase, limit_ms, unlogged, "request stream reset: not {phase} within its time limit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let limit = LogLimit::default();
        assert_eq!(limit.due(1_000), Some(0), "the first line is written");
        assert_eq!(limit.due(1_001), None);
        assert_eq!(limit.due(5_000), None);
        let interval = LOG_INTERVAL.as_millis() as i64;
        assert_eq!(limit.due(1_000 + interval), Some(2), "two were left out");
        assert_eq!(limit.due(1_000 + interval), None);
    }
}
