//! Settings of one replica's state machine, and the fixed limits it works within.

use crate::error::ConfigError;

/// Replicas one partition may have (leader included). Kafka has no hard limit, but a
/// replication factor above a handful buys nothing and costs a fetch stream per
/// follower; the bound keeps the leader's per-follower table small and fixed.
pub const REPLICAS_MAX: usize = 16;

/// Entries the leader-epoch history keeps. An entry is added only when a leader of a
/// new epoch writes, so this is the number of leadership changes that wrote data and
/// are still remembered; older ones are forgotten conservatively (see
/// [`crate::LeaderEpochCache`]).
pub const EPOCH_ENTRIES_MAX: usize = 1024;

/// Batches of one fetch response a follower takes. The rest of a larger response is
/// not appended (no [`crate::Output::Append`] is emitted for it) and is fetched again.
pub const FETCH_RESPONSE_BATCHES_MAX: usize = 4096;

/// Outputs waiting to be drained: one response's appends, one truncation, one ISR
/// proposal and one high-watermark change. Proposals and high-watermark changes are
/// coalesced and a follower sends no new fetch while log operations wait, so the queue
/// never holds more.
pub const OUTPUTS_MAX: usize = FETCH_RESPONSE_BATCHES_MAX + 3;

// Forgetting the oldest epoch entry must leave at least one entry with data after a
// leader's own (possibly empty) entry is dropped.
const _: () = assert!(EPOCH_ENTRIES_MAX >= 2);
const _: () = assert!(REPLICAS_MAX >= 1 && REPLICAS_MAX <= u8::MAX as usize);
const _: () = assert!(OUTPUTS_MAX > FETCH_RESPONSE_BATCHES_MAX);

/// How one replica behaves. Times are milliseconds of the caller's monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// A follower in the ISR that has not caught up to the leader's log end offset for
    /// longer than this is proposed for removal (Kafka's `replica.lag.time.max.ms`).
    pub replica_lag_max_ms: u64,
    /// A fetch with no answer after this long is given up and retried. It must exceed
    /// the leader's long-poll wait, or every idle fetch times out.
    pub fetch_timeout_ms: u64,
    /// Wait after a failed or timed-out fetch before the next one.
    pub fetch_backoff_ms: u64,
    /// An ISR proposal the controller has not answered after this long is sent again.
    pub isr_proposal_retry_ms: u64,
    /// acks=all needs at least this many replicas in the committed ISR.
    pub min_insync_replicas: usize,
}

impl Default for ReplicaConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        Self {
            replica_lag_max_ms: 30_000,
            fetch_timeout_ms: 30_000,
            fetch_backoff_ms: 1_000,
            isr_proposal_retry_ms: 5_000,
            min_insync_replicas: 1,
        }
    }
}

impl ReplicaConfig {
    /// Checks the settings against each other and the limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("replica_lag_max_ms", self.replica_lag_max_ms),
            ("fetch_timeout_ms", self.fetch_timeout_ms),
            ("isr_proposal_retry_ms", self.isr_proposal_retry_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { name });
            }
        }
        if self.min_insync_replicas == 0 || self.min_insync_replicas > REPLICAS_MAX {
            return Err(ConfigError::MinInsyncReplicas {
                value: self.min_insync_replicas,
                max: REPLICAS_MAX,
            });
        }
        Ok(())
    }
}
