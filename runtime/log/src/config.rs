//! Per-partition log settings and the limits they are held to.

use quiver_wire::batch::BATCH_BYTES_MAX;

/// Default size at which a segment rolls: 128 MiB.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 128 * 1024 * 1024;
/// The largest segment the format can address: `.index` positions are `u32`.
pub const SEGMENT_BYTES_CEILING: u64 = u32::MAX as u64;
/// Default age at which a segment rolls and after which data is deleted: 7 days.
pub const SEVEN_DAYS_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Default batch limit, Kafka's `max.message.bytes`: 1 MiB.
pub const BATCH_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Default bytes between two sparse index entries.
pub const INDEX_INTERVAL_BYTES_DEFAULT: u32 = 4096;
/// Default bytes of the active segment's newest batches kept in memory.
pub const TAIL_CACHE_BYTES_DEFAULT: usize = 4 * 1024 * 1024;

const _: () = assert!(SEGMENT_BYTES_MAX_DEFAULT <= SEGMENT_BYTES_CEILING);
const _: () = assert!(BATCH_BYTES_MAX_DEFAULT <= BATCH_BYTES_MAX);
// A batch the wire format accepts always fits in an empty segment.
const _: () = assert!((BATCH_BYTES_MAX as u64) < SEGMENT_BYTES_CEILING);

/// Settings of one partition's log. They may change while the log is open
/// ([`crate::PartitionLog::set_config`]); a change applies from the next append or
/// retention pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll before an append that would take a non-empty active segment past this size.
    /// Values above [`SEGMENT_BYTES_CEILING`] act as the ceiling.
    pub segment_bytes_max: u64,
    /// Roll before an append when the active segment's first append is older than this.
    pub segment_age_max_ms: Option<u64>,
    /// Delete the oldest sealed segments while the log stays at least this big without them.
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest record is older than this.
    pub retention_ms: Option<u64>,
    /// The largest batch an append accepts; capped by [`BATCH_BYTES_MAX`].
    pub batch_bytes_max: usize,
    /// Bytes appended between two sparse index entries.
    pub index_interval_bytes: u32,
    /// Bytes of the active segment's newest batches kept in memory for reads.
    pub tail_cache_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            segment_age_max_ms: Some(SEVEN_DAYS_MS),
            retention_bytes: None,
            retention_ms: Some(SEVEN_DAYS_MS),
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            tail_cache_bytes: TAIL_CACHE_BYTES_DEFAULT,
        }
    }
}

impl LogConfig {
    /// The segment size limit actually applied.
    pub fn segment_bytes_effective(&self) -> u64 {
        self.segment_bytes_max.min(SEGMENT_BYTES_CEILING)
    }

    /// The batch size limit actually applied.
    pub fn batch_bytes_effective(&self) -> usize {
        self.batch_bytes_max.min(BATCH_BYTES_MAX)
    }
}
