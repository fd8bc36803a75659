//! Error codes a client sees. Each has a stable number, a stable name, and says whether
//! retrying the same request can succeed. A code is never reused once retired: the
//! `codes_are_stable` test pins every number to its name.

/// A wire-visible error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The broker failed in a way it did not classify; the message says how.
    Unknown,
    UnknownTopic,
    InvalidTopicName,
    UnknownPartition,
    BatchTooLarge,
    CorruptBatch,
    MalformedFrame,
    UnsupportedVersion,
    UnknownApi,
    OffsetOutOfRange,
    TopicAlreadyExists,
    InvalidRequest,
    NotEnoughReplicas,
    StorageError,
    Timeout,
    BrokerShuttingDown,
    InvalidConfig,
    NotLeader,
    UnsupportedCompression,
    /// An idempotent producer's batch does not follow the last one stored: an earlier
    /// batch is missing. Retriable: the earlier batch may still arrive.
    OutOfOrderSequence,
    /// An idempotent producer's epoch is older than the one the broker knows: a newer
    /// instance of the producer exists.
    InvalidProducerEpoch,
    /// The consumer group member is not (or no longer) in the group: its session
    /// expired or it left. It must join again.
    UnknownMemberId,
    /// The member's epoch is behind the coordinator's: it must heartbeat to learn its
    /// current assignment and epoch, then retry.
    StaleMemberEpoch,
    /// The operation needs a group without active members.
    GroupNotEmpty,
    InvalidGroupId,
    /// No plugin of that name is registered, or it is not attached to that topic.
    UnknownPlugin,
    /// An uploaded module breaks the plugin ABI or its limits; the message names what.
    InvalidPlugin,
    /// A plugin failed on this batch (trap, CPU or memory bound, malformed answer) and
    /// its attachment's `on_error` is `fail`.
    PluginFailed,
    /// This broker does not coordinate consumer groups: in a cluster the controller
    /// leader does. The client finds it (cluster status) and sends the request there.
    NotCoordinator,
    /// A plugin attached to the topic is not installed on this broker yet (its module
    /// is still being fetched from another broker of the cluster). Retriable.
    PluginUnavailable,
    /// An acks=all batch was appended on the leader, but fewer than
    /// `min.insync.replicas` replicas stayed in sync before it was replicated. It may
    /// still be committed: an idempotent retry finds it, a plain retry may store it
    /// twice. Retriable.
    NotEnoughReplicasAfterAppend,
    /// A broker-to-broker API called without a certificate from the cluster's CA.
    ClusterAuthorizationFailed,
    /// A plugin that topics still have attached cannot be deleted: detach it first.
    PluginInUse,
    /// The principal may not perform the operation on the topic (or, with the topic
    /// hidden from it, the topic is reported as not authorised rather than missing).
    TopicAuthorizationFailed,
    /// The principal may not perform the operation on the consumer group.
    GroupAuthorizationFailed,
    /// The principal may not read the plugin it named in its fetch.
    PluginAuthorizationFailed,
    /// The producer id was issued to another principal: a client may write only under
    /// the ids it was given. Nothing was appended.
    ProducerIdNotOwned,
    /// The client could not be authenticated (no or unknown credentials, wrong
    /// password); the message never says which.
    AuthenticationFailed,
    /// The broker's data directory has no space left: nothing of the request was
    /// stored. Retriable: space may return (retention, an operator), or another broker
    /// may take over the partition.
    StorageFull,
    /// A topic's partition count can only grow, and only up to the partition limit:
    /// the count asked for is not larger than the current one, or too large.
    InvalidPartitions,
    /// The consumer group has neither active members nor committed offsets.
    GroupIdNotFound,
    /// A join request whose proof of the cluster's join secret is wrong (a wrong,
    /// replayed or missing token), or a broker that accepts no joins. Nothing was
    /// issued.
    InvalidJoinToken,
    /// A join request for a node id that a live broker of the cluster holds. Nothing
    /// was issued.
    NodeIdInUse,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 43] = [
        ErrorCode::Unknown,
        ErrorCode::UnknownTopic,
        ErrorCode::InvalidTopicName,
        ErrorCode::UnknownPartition,
        ErrorCode::BatchTooLarge,
        ErrorCode::CorruptBatch,
        ErrorCode::MalformedFrame,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownApi,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidRequest,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::StorageError,
        ErrorCode::Timeout,
        ErrorCode::BrokerShuttingDown,
        ErrorCode::InvalidConfig,
        ErrorCode::NotLeader,
        ErrorCode::UnsupportedCompression,
        ErrorCode::OutOfOrderSequence,
        ErrorCode::InvalidProducerEpoch,
        ErrorCode::UnknownMemberId,
        ErrorCode::StaleMemberEpoch,
        ErrorCode::GroupNotEmpty,
        ErrorCode::InvalidGroupId,
        ErrorCode::UnknownPlugin,
        ErrorCode::InvalidPlugin,
        ErrorCode::PluginFailed,
        ErrorCode::NotCoordinator,
        ErrorCode::PluginUnavailable,
        ErrorCode::NotEnoughReplicasAfterAppend,
        ErrorCode::ClusterAuthorizationFailed,
        ErrorCode::PluginInUse,
        ErrorCode::TopicAuthorizationFailed,
        ErrorCode::GroupAuthorizationFailed,
        ErrorCode::PluginAuthorizationFailed,
        ErrorCode::ProducerIdNotOwned,
        ErrorCode::AuthenticationFailed,
        ErrorCode::StorageFull,
        ErrorCode::InvalidPartitions,
        ErrorCode::GroupIdNotFound,
        ErrorCode::InvalidJoinToken,
        ErrorCode::NodeIdInUse,
    ];

    /// The number on the wire. 0 means success and is not an error code.
    pub const fn code(self) -> u16 {
        match self {
            ErrorCode::Unknown => 1,
            ErrorCode::UnknownTopic => 2,
            ErrorCode::InvalidTopicName => 3,
            ErrorCode::UnknownPartition => 4,
            ErrorCode::BatchTooLarge => 5,
            ErrorCode::CorruptBatch => 6,
            ErrorCode::MalformedFrame => 7,
            ErrorCode::UnsupportedVersion => 8,
            ErrorCode::UnknownApi => 9,
            ErrorCode::OffsetOutOfRange => 10,
            ErrorCode::TopicAlreadyExists => 11,
            ErrorCode::InvalidRequest => 12,
            ErrorCode::NotEnoughReplicas => 13,
            ErrorCode::StorageError => 14,
            ErrorCode::Timeout => 15,
            ErrorCode::BrokerShuttingDown => 16,
            ErrorCode::InvalidConfig => 17,
            ErrorCode::NotLeader => 18,
            ErrorCode::UnsupportedCompression => 19,
            ErrorCode::OutOfOrderSequence => 20,
            ErrorCode::InvalidProducerEpoch => 21,
            ErrorCode::UnknownMemberId => 22,
            ErrorCode::StaleMemberEpoch => 23,
            ErrorCode::GroupNotEmpty => 24,
            ErrorCode::InvalidGroupId => 25,
            ErrorCode::UnknownPlugin => 26,
            ErrorCode::InvalidPlugin => 27,
            ErrorCode::PluginFailed => 28,
            ErrorCode::NotCoordinator => 29,
            ErrorCode::PluginUnavailable => 30,
            ErrorCode::NotEnoughReplicasAfterAppend => 31,
            ErrorCode::ClusterAuthorizationFailed => 32,
            ErrorCode::PluginInUse => 33,
            ErrorCode::TopicAuthorizationFailed => 34,
            ErrorCode::GroupAuthorizationFailed => 35,
            ErrorCode::PluginAuthorizationFailed => 36,
            ErrorCode::ProducerIdNotOwned => 37,
            ErrorCode::AuthenticationFailed => 38,
            ErrorCode::StorageFull => 39,
            ErrorCode::InvalidPartitions => 40,
            ErrorCode::GroupIdNotFound => 41,
            ErrorCode::InvalidJoinToken => 42,
            ErrorCode::NodeIdInUse => 43,
        }
    }

    /// The code for a number read off the wire, if this version knows it.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.code() == code)
    }

    /// The stable upper-snake name, as logs and metrics label it.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::Unknown => "UNKNOWN",
            ErrorCode::UnknownTopic => "UNKNOWN_TOPIC",
            ErrorCode::InvalidTopicName => "INVALID_TOPIC_NAME",
            ErrorCode::UnknownPartition => "UNKNOWN_PARTITION",
            ErrorCode::BatchTooLarge => "BATCH_TOO_LARGE",
            ErrorCode::CorruptBatch => "CORRUPT_BATCH",
            ErrorCode::MalformedFrame => "MALFORMED_FRAME",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::UnknownApi => "UNKNOWN_API",
            ErrorCode::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            ErrorCode::TopicAlreadyExists => "TOPIC_ALREADY_EXISTS",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::NotEnoughReplicas => "NOT_ENOUGH_REPLICAS",
            ErrorCode::StorageError => "STORAGE_ERROR",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::BrokerShuttingDown => "BROKER_SHUTTING_DOWN",
            ErrorCode::InvalidConfig => "INVALID_CONFIG",
            ErrorCode::NotLeader => "NOT_LEADER",
            ErrorCode::UnsupportedCompression => "UNSUPPORTED_COMPRESSION",
            ErrorCode::OutOfOrderSequence => "OUT_OF_ORDER_SEQUENCE",
            ErrorCode::InvalidProducerEpoch => "INVALID_PRODUCER_EPOCH",
            ErrorCode::UnknownMemberId => "UNKNOWN_MEMBER_ID",
            ErrorCode::StaleMemberEpoch => "STALE_MEMBER_EPOCH",
            ErrorCode::GroupNotEmpty => "GROUP_NOT_EMPTY",
            ErrorCode::InvalidGroupId => "INVALID_GROUP_ID",
            ErrorCode::UnknownPlugin => "UNKNOWN_PLUGIN",
            ErrorCode::InvalidPlugin => "INVALID_PLUGIN",
            ErrorCode::PluginFailed => "PLUGIN_FAILED",
            ErrorCode::NotCoordinator => "NOT_COORDINATOR",
            ErrorCode::PluginUnavailable => "PLUGIN_UNAVAILABLE",
            ErrorCode::NotEnoughReplicasAfterAppend => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
            ErrorCode::ClusterAuthorizationFailed => "CLUSTER_AUTHORIZATION_FAILED",
            ErrorCode::PluginInUse => "PLUGIN_IN_USE",
            ErrorCode::TopicAuthorizationFailed => "TOPIC_AUTHORIZATION_FAILED",
            ErrorCode::GroupAuthorizationFailed => "GROUP_AUTHORIZATION_FAILED",
            ErrorCode::PluginAuthorizationFailed => "PLUGIN_AUTHORIZATION_FAILED",
            ErrorCode::ProducerIdNotOwned => "PRODUCER_ID_NOT_OWNED",
            ErrorCode::AuthenticationFailed => "AUTHENTICATION_FAILED",
            ErrorCode::StorageFull => "STORAGE_FULL",
            ErrorCode::InvalidPartitions => "INVALID_PARTITIONS",
            ErrorCode::GroupIdNotFound => "GROUP_ID_NOT_FOUND",
            ErrorCode::InvalidJoinToken => "INVALID_JOIN_TOKEN",
            ErrorCode::NodeIdInUse => "NODE_ID_IN_USE",
        }
    }

    /// Whether the same request, sent again later, can succeed.
    pub const fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::NotEnoughReplicas
                | ErrorCode::StorageError
                | ErrorCode::Timeout
                | ErrorCode::BrokerShuttingDown
                | ErrorCode::NotLeader
                | ErrorCode::OutOfOrderSequence
                | ErrorCode::StaleMemberEpoch
                | ErrorCode::NotCoordinator
                | ErrorCode::PluginUnavailable
                | ErrorCode::NotEnoughReplicasAfterAppend
                | ErrorCode::StorageFull
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins every code to its number and name. Changing a line here breaks clients in
    /// the field: retire a code by leaving its number unused, never by reusing it.
    #[test]
    fn codes_are_stable() {
        let pinned: &[(u16, &str, bool)] = &[
            (1, "UNKNOWN", false),
            (2, "UNKNOWN_TOPIC", false),
            (3, "INVALID_TOPIC_NAME", false),
            (4, "UNKNOWN_PARTITION", false),
            (5, "BATCH_TOO_LARGE", false),
            (6, "CORRUPT_BATCH", false),
            (7, "MALFORMED_FRAME", false),
            (8, "UNSUPPORTED_VERSION", false),
            (9, "UNKNOWN_API", false),
            (10, "OFFSET_OUT_OF_RANGE", false),
            (11, "TOPIC_ALREADY_EXISTS", false),
            (12, "INVALID_REQUEST", false),
            (13, "NOT_ENOUGH_REPLICAS", true),
            (14, "STORAGE_ERROR", true),
            (15, "TIMEOUT", true),
            (16, "BROKER_SHUTTING_DOWN", true),
            (17, "INVALID_CONFIG", false),
            (18, "NOT_LEADER", true),
            (19, "UNSUPPORTED_COMPRESSION", false),
            (20, "OUT_OF_ORDER_SEQUENCE", true),
            (21, "INVALID_PRODUCER_EPOCH", false),
            (22, "UNKNOWN_MEMBER_ID", false),
            (23, "STALE_MEMBER_EPOCH", true),
            (24, "GROUP_NOT_EMPTY", false),
            (25, "INVALID_GROUP_ID", false),
            (26, "UNKNOWN_PLUGIN", false),
            (27, "INVALID_PLUGIN", false),
            (28, "PLUGIN_FAILED", false),
            (29, "NOT_COORDINATOR", true),
            (30, "PLUGIN_UNAVAILABLE", true),
            (31, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", true),
            (32, "CLUSTER_AUTHORIZATION_FAILED", false),
            (33, "PLUGIN_IN_USE", false),
            (34, "TOPIC_AUTHORIZATION_FAILED", false),
            (35, "GROUP_AUTHORIZATION_FAILED", false),
            (36, "PLUGIN_AUTHORIZATION_FAILED", false),
            (37, "PRODUCER_ID_NOT_OWNED", false),
            (38, "AUTHENTICATION_FAILED", false),
            (39, "STORAGE_FULL", true),
            (40, "INVALID_PARTITIONS", false),
            (41, "GROUP_ID_NOT_FOUND", false),
            (42, "INVALID_JOIN_TOKEN", false),
            (43, "NODE_ID_IN_USE", false),
        ];
        assert_eq!(pinned.len(), ErrorCode::ALL.len());
        for (code, (number, name, retriable)) in ErrorCode::ALL.iter().zip(pinned) {
            assert_eq!(code.code(), *number);
            assert_eq!(code.name(), *name);
            assert_eq!(code.is_retriable(), *retriable, "{name}");
            assert_eq!(ErrorCode::from_code(*number), Some(*code));
        }
        assert_eq!(ErrorCode::from_code(0), None);
    }
}
