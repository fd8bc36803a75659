//! One error type per operation of [`crate::Replica`] and [`crate::LeaderEpochCache`].
//!
//! None of these leave the state machine half-changed: an operation that fails changed
//! nothing, except that a follower whose fetch failed forgets that fetch and backs off.

/// Why a [`crate::ReplicaConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} must be greater than zero")]
    Zero { name: &'static str },
    #[error("min_insync_replicas is {value}; it must be between 1 and {max}")]
    MinInsyncReplicas { value: usize, max: usize },
}

/// Why [`crate::LeaderEpochCache::record`] refused a batch: the log's epochs or offsets
/// go backwards, which a log written by this protocol never does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochHistoryError {
    #[error("leader epoch {received} follows the newer epoch {latest}")]
    EpochRegression { latest: u32, received: u32 },
    #[error("offset {received} is below the start {latest_start_offset} of the newest epoch")]
    OffsetRegression {
        latest_start_offset: u64,
        received: u64,
    },
}

/// Why [`crate::Replica::new`] refused a recovered log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoverError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("high watermark {high_watermark} is beyond the log end offset {log_end_offset}")]
    HighWatermarkBeyondLogEnd {
        high_watermark: u64,
        log_end_offset: u64,
    },
    /// The history says an epoch starts where the log has no records.
    #[error(
        "epoch {leader_epoch} starts at {start_offset}, at or beyond the log end offset {log_end_offset}"
    )]
    EpochBeyondLogEnd {
        leader_epoch: u32,
        start_offset: u64,
        log_end_offset: u64,
    },
    /// Records but no epoch: nothing could tell where this log diverges.
    #[error("the log ends at {log_end_offset} but its epoch history is empty")]
    MissingEpochHistory { log_end_offset: u64 },
}

/// Why a replica set or ISR handed over by the controller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    #[error("{count} replicas exceed the limit of {max}")]
    TooManyReplicas { count: usize, max: usize },
    #[error("replica {replica} is listed twice")]
    DuplicateReplica { replica: u32 },
    #[error("this replica ({replica}) is not in the replica set")]
    SelfNotAReplica { replica: u32 },
    #[error("the leader ({leader}) is not in the ISR")]
    LeaderNotInIsr { leader: u32 },
    #[error("ISR member {replica} is not in the replica set")]
    IsrMemberNotAReplica { replica: u32 },
}

/// Why [`crate::Replica::become_leader`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BecomeLeaderError {
    /// A delayed or repeated decision of the controller: ignore it.
    #[error("leader epoch {received} is not newer than {current}")]
    StaleLeaderEpoch { current: u32, received: u32 },
    #[error(transparent)]
    Assignment(#[from] AssignmentError),
}

/// Why [`crate::Replica::become_follower`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BecomeFollowerError {
    /// A delayed or repeated decision of the controller: ignore it.
    #[error("leader epoch {received} is not newer than {current}")]
    StaleLeaderEpoch { current: u32, received: u32 },
    #[error("replica {replica} cannot follow itself")]
    SelfAsLeader { replica: u32 },
}

/// Why [`crate::Replica::handle_local_append`] was refused. Each is a broker bug: the
/// broker appends only as leader, stamps batches with the leader epoch, and reports
/// every append in order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalAppendError {
    #[error("not the leader")]
    NotLeader,
    #[error("batch stamped with epoch {batch_epoch}, but the leader epoch is {leader_epoch}")]
    EpochMismatch { leader_epoch: u32, batch_epoch: u32 },
    #[error("batch starts at {base_offset}, but the log ends at {log_end_offset}")]
    NotAtLogEnd {
        base_offset: u64,
        log_end_offset: u64,
    },
    #[error("batch range {base_offset}..={last_offset} is empty")]
    EmptyRange { base_offset: u64, last_offset: u64 },
}

/// Why the leader refused a follower's fetch ([`crate::Replica::handle_follower_fetch`]).
/// The broker sends these back as fetch errors; the follower backs off and retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowerFetchError {
    /// Kafka's NOT_LEADER_OR_FOLLOWER: the follower's metadata is stale or ours is.
    #[error("not the leader")]
    NotLeader,
    /// Kafka's FENCED_LEADER_EPOCH: the follower has not heard of this epoch yet.
    #[error("fetch for leader epoch {received}, but the current epoch is {current}")]
    FencedLeaderEpoch { current: u32, received: u32 },
    /// Kafka's UNKNOWN_LEADER_EPOCH: this leader has not heard of a newer epoch yet.
    #[error("fetch for leader epoch {received}, newer than the current epoch {current}")]
    UnknownLeaderEpoch { current: u32, received: u32 },
    #[error("replica {replica} is not a follower of this partition")]
    UnknownReplica { replica: u32 },
    /// A fetch without a last fetched epoch (an empty log) beyond the log end.
    #[error("fetch offset {fetch_offset} is beyond the log end offset {log_end_offset}")]
    OffsetOutOfRange {
        fetch_offset: u64,
        log_end_offset: u64,
    },
}

/// Why a follower refused a fetch response ([`crate::Replica::handle_fetch_response`],
/// [`crate::Replica::handle_fetch_error`]). Nothing of the response was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchResponseError {
    /// The response answers a fetch that is no longer in flight (it timed out, or the
    /// role changed since). Expected now and then; ignore it.
    #[error("response to a fetch that is no longer in flight")]
    Stale,
    #[error("batch starts at {base_offset}, but the log ends at {expected}")]
    NotContiguous { expected: u64, base_offset: u64 },
    #[error("batch range {base_offset}..={last_offset} is empty")]
    EmptyRange { base_offset: u64, last_offset: u64 },
    #[error("batch of epoch {received} follows records of the newer epoch {latest}")]
    EpochRegression { latest: u32, received: u32 },
    #[error("epoch {received} is newer than the leader's epoch {leader_epoch}")]
    EpochAheadOfLeader { leader_epoch: u32, received: u32 },
    /// The leader reported a divergence, but by our own history nothing needs to be
    /// removed. Acting on it again would loop.
    #[error(
        "diverging epoch {leader_epoch} ending at {end_offset} removes nothing from a log ending at {log_end_offset}"
    )]
    NoDivergence {
        leader_epoch: u32,
        end_offset: u64,
        log_end_offset: u64,
    },
}

/// Why [`crate::Replica::handle_isr_committed`] ignored an ISR from the controller.
/// `NotLeader`, `LeaderEpochMismatch` and `StaleVersion` are expected (delayed
/// messages); the others mean the controller broke its contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsrUpdateError {
    #[error("not the leader")]
    NotLeader,
    #[error("ISR for leader epoch {received}, but the current epoch is {current}")]
    LeaderEpochMismatch { current: u32, received: u32 },
    #[error("ISR version {received} is not newer than {current}")]
    StaleVersion { current: u32, received: u32 },
    #[error(transparent)]
    Assignment(#[from] AssignmentError),
}

/// Why a produce with acks=all cannot be (or could not be) acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcksAllError {
    /// Kafka's NOT_LEADER_OR_FOLLOWER: this replica does not lead. Retriable.
    #[error("not the leader")]
    NotLeader,
    /// Kafka's NOT_LEADER_OR_FOLLOWER for a waiting produce: the epoch it was appended
    /// in is over, and its records may have been replaced since. Retriable.
    #[error("leader epoch {leader_epoch} is over")]
    LeaderEpochEnded { leader_epoch: u32 },
    /// Kafka's NOT_ENOUGH_REPLICAS (before the append) or NOT_ENOUGH_REPLICAS_AFTER_APPEND
    /// (once the high watermark passed it). Retriable.
    #[error("{isr_size} in-sync replicas, fewer than min_insync_replicas = {min_insync_replicas}")]
    NotEnoughReplicas {
        isr_size: usize,
        min_insync_replicas: usize,
    },
    /// The high watermark did not pass the batch before the produce's deadline: it is
    /// stored on the leader and may still be replicated (an idempotent retry finds
    /// it). Kafka's REQUEST_TIMED_OUT. Retriable.
    #[error("the batch ending at offset {last_offset} was not replicated to the ISR in time")]
    Timeout { last_offset: u64 },
    /// The replica holds [`crate::ACK_TICKETS_MAX`] waiting produces already.
    /// Retriable.
    #[error("{max} acks=all produces are waiting already")]
    TooManyWaiting { max: usize },
}
