//! One error type per operation of [`crate::PartitionLog`].

use std::io;
use std::path::PathBuf;

use quiver_wire::batch::BatchError;

/// Why [`crate::PartitionLog::open`] failed. Nothing here is retried by the log: a torn
/// tail of the active segment is repaired, not reported; what is left is the disk
/// refusing or a sealed segment (fsync'd when sealed) that no longer checks out.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("sealed segment {path} is corrupt at byte {position}: {source}")]
    CorruptSegment {
        path: PathBuf,
        position: u64,
        source: BatchFault,
    },
    #[error(
        "sealed segment {path} ends at offset {found}, but the next segment starts at {expected}"
    )]
    Discontinuity {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
}

/// Why [`crate::PartitionLog::append`] failed. On every error the log is as it was
/// before the call.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The file system holding the log has no space left (or the quota is used up).
    /// Like every append error it leaves the log as it was, so appends succeed again
    /// once space returns.
    #[error("{path}: no space left for the batch: {source}")]
    StorageFull { path: PathBuf, source: io::Error },
    /// An idempotent producer's batch skips sequence numbers; the missing batch may
    /// still arrive.
    #[error("out of order sequence: expected {expected}, received {received}")]
    OutOfOrderSequence { expected: u32, received: u32 },
    /// An idempotent producer's epoch is older than the partition's.
    #[error("producer epoch {received} is fenced by epoch {current}")]
    ProducerFenced { current: u16, received: u16 },
}

impl AppendError {
    /// The error for an I/O failure on `path`: [`AppendError::StorageFull`] when the
    /// file system is out of space, else [`AppendError::Io`].
    pub fn io(path: PathBuf, source: io::Error) -> Self {
        if is_storage_full(&source) {
            Self::StorageFull { path, source }
        } else {
            Self::Io { path, source }
        }
    }
}

/// Whether an I/O error says the file system has no space (or quota) left.
pub fn is_storage_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Why [`crate::PartitionLog::read`] or [`crate::PartitionLog::offset_for_timestamp`]
/// failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Kafka's OFFSET_OUT_OF_RANGE: the consumer should reset to one of the bounds.
    #[error("offset {requested} is outside the log [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        requested: u64,
        log_start: u64,
        log_end: u64,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Stored bytes do not parse where the log's own bookkeeping says a batch is.
    #[error("segment {path} is corrupt at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: &'static str,
    },
    /// A stored batch failed to decode while looking for a timestamp.
    #[error("segment {path} holds an invalid batch at byte {position}: {source}")]
    InvalidBatch {
        path: PathBuf,
        position: u64,
        source: BatchError,
    },
}

/// Why retention or deleting the log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Why a recovery scan stopped at a batch. In the active segment this marks where the
/// torn tail starts; in a sealed segment it is corruption.
#[derive(Debug, thiserror::Error)]
pub enum BatchFault {
    #[error(transparent)]
    Invalid(#[from] BatchError),
    #[error("batch runs past the end of the segment")]
    Torn,
    #[error("batch starts at offset {found}, expected {expected}")]
    OutOfSequence { expected: u64, found: u64 },
    #[error("batch does not fit the segment's 32-bit relative offsets and positions")]
    OutOfSpan,
}

/// Why [`crate::PartitionLog::truncate_to`] failed. A refusal (below the log start, not
/// a batch boundary) changes nothing; an I/O error may leave the files cut while the
/// log in memory is not: the caller must stop using the log and reopen it, which
/// recovers whatever state the files are in.
#[derive(Debug, thiserror::Error)]
pub enum TruncateError {
    #[error("cannot truncate to offset {offset}: the log starts at {log_start}")]
    BelowLogStart { offset: u64, log_start: u64 },
    #[error(
        "offset {offset} is inside the batch at {batch_base}; truncation cuts at batch boundaries"
    )]
    NotBatchBoundary { offset: u64, batch_base: u64 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Reopen(#[from] OpenError),
}
