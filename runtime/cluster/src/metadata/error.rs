//! Why the state machine refused a command. A refused command changes nothing.

use serde::{Deserialize, Serialize};

use super::BrokerId;

/// Why a [`MetadataCommand`](super::MetadataCommand) was refused. Each variant has a
/// stable [`name`](CommandError::name) that the broker can put on the wire; names are
/// never reused for another meaning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
    #[error("broker address `{0}` is not host:port")]
    InvalidBrokerAddress(String),
    #[error("broker {broker} is at epoch {current}, the request carried {given}")]
    StaleBrokerEpoch {
        broker: BrokerId,
        current: u64,
        given: u64,
    },
    #[error("{max} brokers are registered already")]
    TooManyBrokers { max: usize },

    #[error("topic name `{name}` is invalid: {reason}")]
    InvalidTopicName { name: String, reason: String },
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    #[error("topic `{0}` is internal and cannot be deleted")]
    InternalTopic(String),
    #[error("{given} partitions: a topic has 1 to {max}")]
    InvalidPartitionCount { given: u32, max: u32 },
    #[error("replication factor {given}: it must be 1 to {max}")]
    InvalidReplicationFactor { given: u16, max: u16 },
    #[error("replication factor {needed} needs as many unfenced brokers, {available} are")]
    NotEnoughBrokers { needed: u16, available: usize },
    #[error("{max} topics exist already")]
    TooManyTopics { max: usize },
    #[error("{requested} more partitions would pass the cluster's limit of {max}")]
    TooManyPartitions { requested: u64, max: u64 },
    #[error("topic config `{key}` is invalid: {reason}")]
    InvalidConfig { key: String, reason: String },
    #[error("topic `{topic}` has {current} partitions: a new count must be larger, not {given}")]
    PartitionCountNotIncreased {
        topic: String,
        current: u32,
        given: u32,
    },
    #[error("group `{0}` has no committed offsets")]
    UnknownGroup(String),

    #[error("topic `{topic}` has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("leader epoch {given} is stale, the partition is at {current}")]
    FencedLeaderEpoch { current: u32, given: u32 },
    #[error("leader epoch {given} is newer than the partition's {current}")]
    UnknownLeaderEpoch { current: u32, given: u32 },
    #[error("ISR version {given} is not the partition's {current}")]
    StaleIsrVersion { current: u32, given: u32 },
    #[error("broker {broker} is not the partition's leader (leader: {leader:?})")]
    NotLeader {
        broker: BrokerId,
        leader: Option<BrokerId>,
    },
    #[error("ISR is invalid: {0}")]
    InvalidIsr(String),
    #[error("broker {0} cannot join the ISR: it is fenced or not registered")]
    IneligibleReplica(BrokerId),

    #[error("plugin is invalid: {0}")]
    InvalidPlugin(String),
    #[error("plugin `{0}` is not registered")]
    UnknownPlugin(String),
    #[error("{max} plugins are registered already")]
    TooManyPlugins { max: usize },
    #[error("plugin attachment is invalid: {0}")]
    InvalidAttachment(String),
    #[error("topic `{topic}` has {max} attachments already, or the cluster reached its limit")]
    TooManyAttachments { topic: String, max: usize },
    #[error("plugin `{plugin}` is not attached to topic `{topic}`")]
    NotAttached { topic: String, plugin: String },
    #[error("plugin `{plugin}` is attached to {topics}: detach it first")]
    PluginAttached { plugin: String, topics: String },
    #[error(
        "dead-letter topic `{target}` leads back to `{topic}` through produce-stage dead-letter attachments: a cycle could stall both topics"
    )]
    DeadLetterCycle { topic: String, target: String },

    #[error("offset commit is invalid: {0}")]
    InvalidOffsetCommit(String),
    #[error("committing would keep more than {max} offsets")]
    TooManyOffsets { max: usize },

    #[error("ACL is invalid: {0}")]
    InvalidAcl(String),
    #[error("the cluster keeps at most {max} ACLs")]
    TooManyAcls { max: usize },
    #[error("producer id {0} was issued to another principal")]
    ProducerIdClaimed(u64),
    #[error("the cluster remembers at most {max} producer ids of authenticated clients")]
    TooManyProducerClaims { max: usize },
    #[error("user is invalid: {0}")]
    InvalidUser(String),
    #[error("user `{0}` does not exist")]
    UnknownUser(String),
    #[error("the cluster keeps at most {max} users")]
    TooManyUsers { max: usize },
    #[error("quota is invalid: {0}")]
    InvalidQuota(String),
}

impl CommandError {
    /// The error's stable name, in Kafka's style. Never reused for another meaning.
    pub const fn name(&self) -> &'static str {
        match self {
            CommandError::UnknownBroker(_) => "UNKNOWN_BROKER",
            CommandError::InvalidBrokerAddress(_) => "INVALID_BROKER_ADDRESS",
            CommandError::StaleBrokerEpoch { .. } => "STALE_BROKER_EPOCH",
            CommandError::TooManyBrokers { .. } => "TOO_MANY_BROKERS",
            CommandError::InvalidTopicName { .. } => "INVALID_TOPIC_NAME",
            CommandError::TopicExists(_) => "TOPIC_ALREADY_EXISTS",
            CommandError::UnknownTopic(_) => "UNKNOWN_TOPIC",
            CommandError::InternalTopic(_) => "INTERNAL_TOPIC",
            CommandError::InvalidPartitionCount { .. } => "INVALID_PARTITIONS",
            CommandError::InvalidReplicationFactor { .. } => "INVALID_REPLICATION_FACTOR",
            CommandError::NotEnoughBrokers { .. } => "NOT_ENOUGH_BROKERS",
            CommandError::TooManyTopics { .. } => "TOO_MANY_TOPICS",
            CommandError::TooManyPartitions { .. } => "TOO_MANY_PARTITIONS",
            CommandError::InvalidConfig { .. } => "INVALID_CONFIG",
            CommandError::PartitionCountNotIncreased { .. } => "PARTITION_COUNT_NOT_INCREASED",
            CommandError::UnknownGroup(_) => "GROUP_ID_NOT_FOUND",
            CommandError::UnknownPartition { .. } => "UNKNOWN_TOPIC_OR_PARTITION",
            CommandError::FencedLeaderEpoch { .. } => "FENCED_LEADER_EPOCH",
            CommandError::UnknownLeaderEpoch { .. } => "UNKNOWN_LEADER_EPOCH",
            CommandError::StaleIsrVersion { .. } => "INVALID_UPDATE_VERSION",
            CommandError::NotLeader { .. } => "NOT_LEADER_OR_FOLLOWER",
            CommandError::InvalidIsr(_) => "INVALID_ISR",
            CommandError::IneligibleReplica(_) => "INELIGIBLE_REPLICA",
            CommandError::InvalidPlugin(_) => "INVALID_PLUGIN",
            CommandError::UnknownPlugin(_) => "UNKNOWN_PLUGIN",
            CommandError::TooManyPlugins { .. } => "TOO_MANY_PLUGINS",
            CommandError::InvalidAttachment(_) => "INVALID_ATTACHMENT",
            CommandError::TooManyAttachments { .. } => "TOO_MANY_ATTACHMENTS",
            CommandError::NotAttached { .. } => "NOT_ATTACHED",
            CommandError::PluginAttached { .. } => "PLUGIN_ATTACHED",
            CommandError::DeadLetterCycle { .. } => "DEAD_LETTER_CYCLE",
            CommandError::InvalidOffsetCommit(_) => "INVALID_OFFSET_COMMIT",
            CommandError::TooManyOffsets { .. } => "TOO_MANY_OFFSETS",
            CommandError::InvalidAcl(_) => "INVALID_ACL",
            CommandError::TooManyAcls { .. } => "TOO_MANY_ACLS",
            CommandError::ProducerIdClaimed(_) => "PRODUCER_ID_NOT_OWNED",
            CommandError::TooManyProducerClaims { .. } => "TOO_MANY_PRODUCER_CLAIMS",
            CommandError::InvalidUser(_) => "INVALID_USER",
            CommandError::UnknownUser(_) => "UNKNOWN_USER",
            CommandError::TooManyUsers { .. } => "TOO_MANY_USERS",
            CommandError::InvalidQuota(_) => "INVALID_QUOTA",
        }
    }

    /// Whether the same command can succeed later without being changed: the cluster
    /// may gain brokers, a leader may be elected, a fenced broker may come back.
    pub const fn retriable(&self) -> bool {
        matches!(
            self,
            CommandError::NotEnoughBrokers { .. }
                | CommandError::NotLeader { .. }
                | CommandError::UnknownLeaderEpoch { .. }
                | CommandError::IneligibleReplica(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are part of the wire contract: this pins every one of them.
    #[test]
    fn names_are_stable_and_distinct() {
        let all = [
            (CommandError::UnknownBroker(1), "UNKNOWN_BROKER"),
            (
                CommandError::InvalidBrokerAddress(String::new()),
                "INVALID_BROKER_ADDRESS",
            ),
            (
                CommandError::StaleBrokerEpoch {
                    broker: 1,
                    current: 2,
                    given: 1,
                },
                "STALE_BROKER_EPOCH",
            ),
            (CommandError::TooManyBrokers { max: 1 }, "TOO_MANY_BROKERS"),
            (
                CommandError::InvalidTopicName {
                    name: String::new(),
                    reason: String::new(),
                },
                "INVALID_TOPIC_NAME",
            ),
            (
                CommandError::TopicExists(String::new()),
                "TOPIC_ALREADY_EXISTS",
            ),
            (CommandError::UnknownTopic(String::new()), "UNKNOWN_TOPIC"),
            (CommandError::InternalTopic(String::new()), "INTERNAL_TOPIC"),
            (
                CommandError::InvalidPartitionCount { given: 0, max: 1 },
                "INVALID_PARTITIONS",
            ),
            (
                CommandError::InvalidReplicationFactor { given: 0, max: 1 },
                "INVALID_REPLICATION_FACTOR",
            ),
            (
                CommandError::NotEnoughBrokers {
                    needed: 3,
                    available: 1,
                },
                "NOT_ENOUGH_BROKERS",
            ),
            (CommandError::TooManyTopics { max: 1 }, "TOO_MANY_TOPICS"),
            (
                CommandError::TooManyPartitions {
                    requested: 1,
                    max: 1,
                },
                "TOO_MANY_PARTITIONS",
            ),
            (
                CommandError::InvalidConfig {
                    key: String::new(),
                    reason: String::new(),
                },
                "INVALID_CONFIG",
            ),
            (
                CommandError::PartitionCountNotIncreased {
                    topic: String::new(),
                    current: 2,
                    given: 2,
                },
                "PARTITION_COUNT_NOT_INCREASED",
            ),
            (
                CommandError::UnknownGroup(String::new()),
                "GROUP_ID_NOT_FOUND",
            ),
            (
                CommandError::UnknownPartition {
                    topic: String::new(),
                    partition: 0,
                },
                "UNKNOWN_TOPIC_OR_PARTITION",
            ),
            (
                CommandError::FencedLeaderEpoch {
                    current: 1,
                    given: 0,
                },
                "FENCED_LEADER_EPOCH",
            ),
            (
                CommandError::UnknownLeaderEpoch {
                    current: 0,
                    given: 1,
                },
                "UNKNOWN_LEADER_EPOCH",
            ),
            (
                CommandError::NotLeader {
                    broker: 1,
                    leader: None,
                },
                "NOT_LEADER_OR_FOLLOWER",
            ),
            (
                CommandError::StaleIsrVersion {
                    current: 1,
                    given: 0,
                },
                "INVALID_UPDATE_VERSION",
            ),
            (CommandError::InvalidIsr(String::new()), "INVALID_ISR"),
            (CommandError::IneligibleReplica(1), "INELIGIBLE_REPLICA"),
            (CommandError::InvalidPlugin(String::new()), "INVALID_PLUGIN"),
            (CommandError::UnknownPlugin(String::new()), "UNKNOWN_PLUGIN"),
            (CommandError::TooManyPlugins { max: 1 }, "TOO_MANY_PLUGINS"),
            (
                CommandError::InvalidAttachment(String::new()),
                "INVALID_ATTACHMENT",
            ),
            (
                CommandError::TooManyAttachments {
                    topic: String::new(),
                    max: 1,
                },
                "TOO_MANY_ATTACHMENTS",
            ),
            (
                CommandError::NotAttached {
                    topic: String::new(),
                    plugin: String::new(),
                },
                "NOT_ATTACHED",
            ),
            (
                CommandError::PluginAttached {
                    plugin: String::new(),
                    topics: String::new(),
                },
                "PLUGIN_ATTACHED",
            ),
            (
                CommandError::DeadLetterCycle {
                    topic: String::new(),
                    target: String::new(),
                },
                "DEAD_LETTER_CYCLE",
            ),
            (
                CommandError::InvalidOffsetCommit(String::new()),
                "INVALID_OFFSET_COMMIT",
            ),
            (CommandError::TooManyOffsets { max: 1 }, "TOO_MANY_OFFSETS"),
            (CommandError::InvalidAcl(String::new()), "INVALID_ACL"),
            (CommandError::TooManyAcls { max: 1 }, "TOO_MANY_ACLS"),
            (CommandError::ProducerIdClaimed(1), "PRODUCER_ID_NOT_OWNED"),
            (
                CommandError::TooManyProducerClaims { max: 1 },
                "TOO_MANY_PRODUCER_CLAIMS",
            ),
            (CommandError::InvalidUser(String::new()), "INVALID_USER"),
            (CommandError::UnknownUser(String::new()), "UNKNOWN_USER"),
            (CommandError::TooManyUsers { max: 1 }, "TOO_MANY_USERS"),
            (CommandError::InvalidQuota(String::new()), "INVALID_QUOTA"),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (error, name) in &all {
            assert_eq!(error.name(), *name, "{error:?}");
            assert!(seen.insert(*name), "{name} used twice");
        }
    }
}
