//! Quiver's partition log: the storage of one partition as a directory of segment
//! files, with sparse offset and time indexes, crash recovery and retention.
//!
//! What it does:
//! - appends validated record batches ([`quiver_wire::batch`], the same bytes on the
//!   wire and on disk), stamping each with its base offset and leader epoch;
//! - rolls segments by size and age, and seals them durably (fdatasync) before mapping;
//! - reads whole batches without copying: sealed segments are mmap'd once and served as
//!   [`bytes::Bytes`] slices of the mapping; the active segment's newest batches are
//!   served from memory;
//! - finds offsets by timestamp;
//! - recovers after a crash by scanning the active segment, cutting a torn tail, and
//!   rebuilding missing or invalid indexes;
//! - deletes whole sealed segments by age and size.
//!
//! What it does not do: networking, locking, timers or threads. Time comes in as
//! `now_ms` arguments; the flush policy ([`FlushPolicy`]) is applied by the broker, which
//! takes a [`SyncTarget`] under its lock and syncs outside it. Replication, high
//! watermarks, leader epoch history and divergent-log truncation belong to the
//! replication layer; compaction and compression are not implemented.

mod config;
mod durability;
mod entry_file;
mod error;
mod index;
mod partition;
mod producer_state;
mod recovery;
mod retention;
mod segment;
mod time_index;

pub use config::{
    BATCH_BYTES_MAX_DEFAULT, INDEX_INTERVAL_BYTES_DEFAULT, LogConfig, SEGMENT_BYTES_CEILING,
    SEGMENT_BYTES_MAX_DEFAULT, SEVEN_DAYS_MS, TAIL_CACHE_BYTES_DEFAULT,
};
pub use durability::{FlushPolicy, FlushPolicyParseError, SyncTarget};
pub use error::{
    AppendError, BatchFault, LogError, OpenError, ReadError, TruncateError, is_storage_full,
};
pub use index::INDEX_ENTRY_BYTES;
pub use partition::{AppendInfo, PartitionLog, ReadSlice};
pub use producer_state::{PRODUCER_BATCHES_KEPT, PRODUCERS_MAX, ProducerStateTable, SequenceCheck};
pub use recovery::RecoveryReport;
pub use retention::RetentionReport;
pub use time_index::TIME_INDEX_ENTRY_BYTES;
