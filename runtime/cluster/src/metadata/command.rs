//! What can change cluster metadata, and what each change answers.
//!
//! Commands are entries of the Raft log: they are serialised with serde, replayed on
//! every controller, and must therefore carry every input the change depends on.
//! Time comes in as `now_ms` from the proposer; the state machine never reads a clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BrokerId, PartitionRecord};

/// A change to cluster metadata, proposed through the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// A broker process announces itself. `incarnation` is new each time the process
    /// starts: repeating a registration with the same incarnation and address is a
    /// retry and answers the same epoch. A new incarnation gets a new broker epoch and
    /// leaves the broker unfenced.
    RegisterBroker {
        broker_id: BrokerId,
        incarnation: u64,
        address: String,
        now_ms: u64,
    },
    /// The broker is alive. It must carry the epoch its registration answered; a
    /// fenced broker that heartbeats with its current epoch is unfenced.
    BrokerHeartbeat {
        broker_id: BrokerId,
        broker_epoch: u64,
        now_ms: u64,
    },
    /// The broker is presumed dead: it leaves every ISR it is in (unless it is the last
    /// member) and every partition it led elects a new leader.
    FenceBroker { broker_id: BrokerId },
    /// The broker is back: leaderless partitions that can elect it do.
    UnfenceBroker { broker_id: BrokerId },
    /// Creates a topic and assigns its replicas round-robin over unfenced brokers.
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u16,
        configs: BTreeMap<String, String>,
    },
    /// Deletes a topic, its plugin attachments and its committed offsets.
    DeleteTopic { name: String },
    /// Changes a topic's configs (Kafka's IncrementalAlterConfigs): sets `set`,
    /// removes `delete` (back to the brokers' defaults), all or none. Every broker
    /// applies the new configs to its partitions' logs.
    AlterTopicConfigs {
        name: String,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
    /// Grows a topic to `partitions` in total (Kafka's CreatePartitions). The new
    /// partitions' replicas are assigned round-robin over unfenced brokers, as at
    /// topic creation, with the topic's replication factor.
    CreatePartitions { name: String, partitions: u32 },
    /// Forgets every committed offset of a group (Kafka's DeleteGroups). The
    /// coordinator checks first that the group has no active members.
    DeleteGroup { group: String },
    /// Creates a topic whose partitions already hold data on a single node (a data
    /// directory from before it ran a controller): replication factor 1, and each
    /// partition's leader epoch starts at the given one, newer than any epoch its log
    /// holds, so the replica can lead it.
    AdoptTopic {
        name: String,
        configs: BTreeMap<String, String>,
        /// One per partition.
        leader_epochs: Vec<u32>,
    },
    /// A partition leader changes its ISR (Kafka's AlterPartition; `quiver-repl`'s
    /// `IsrProposal`).
    AlterIsr {
        /// The broker sending the request: it must be the partition's leader.
        broker_id: BrokerId,
        topic: String,
        partition: u32,
        /// The leader epoch the sender leads in; any other is refused.
        leader_epoch: u32,
        /// The ISR version the proposal replaces; any other is refused.
        isr_version: u32,
        /// The new ISR. It must hold the leader, and brokers it adds must be unfenced.
        isr: Vec<BrokerId>,
    },
    /// Elects the partition's preferred leader: the first replica, in assignment
    /// order, that is in the ISR and unfenced (or, with unclean election enabled on
    /// the topic, the first unfenced replica when no ISR member is).
    ElectLeader { topic: String, partition: u32 },
    /// Registers a plugin version, replacing the previous version of that name.
    UploadPlugin {
        name: String,
        /// Content hash of the module, which names the version.
        version: String,
        /// `filter`, `map`, `filter_map`, ...: whatever the module exports.
        kind: String,
        size_bytes: u64,
        uploaded_ms: u64,
    },
    /// Attaches a plugin to a topic, after the topic's existing attachments. The
    /// same plugin may be attached more than once (with other parameters, at another
    /// stage); an attachment identical to an existing one changes nothing.
    AttachPlugin {
        topic: String,
        plugin: String,
        /// `produce` or `fetch`.
        stage: String,
        params: Vec<(String, String)>,
        /// `fail`, `skip`, `pass` or `dead-letter:TOPIC`.
        on_error: String,
    },
    /// Removes every attachment of the plugin to the topic.
    DetachPlugin { topic: String, plugin: String },
    /// Forgets a plugin no topic has attached.
    DeletePlugin { name: String },
    /// Stores a consumer group's committed offsets, all or none.
    CommitOffsets {
        group: String,
        offsets: Vec<OffsetCommit>,
        /// When the coordinator took the commit; retention counts from it.
        #[serde(default)]
        now_ms: u64,
    },
    /// Kafka's `offsets.retention.minutes`: forgets the offsets committed before
    /// `before_ms` by groups not in `keep_groups` (the groups with live members,
    /// which the coordinator knows).
    ExpireOffsets {
        before_ms: u64,
        keep_groups: Vec<String>,
    },
    /// Adds access control rules; rules that exist already change nothing.
    CreateAcls {
        bindings: Vec<quiver_wire::acl::AclBinding>,
    },
    /// Removes access control rules matched exactly.
    DeleteAcls {
        bindings: Vec<quiver_wire::acl::AclBinding>,
    },
    /// Records that a producer id was issued to an authenticated principal: only that
    /// principal may produce under it.
    ClaimProducerId { producer_id: u64, principal: String },
    /// Creates or replaces a SCRAM user's credential.
    UpsertUser {
        name: String,
        record: super::UserRecord,
    },
    /// Forgets a SCRAM user.
    DeleteUser { name: String },
    /// Sets a principal's client quota; one without limits removes it.
    SetQuota {
        principal: String,
        record: super::QuotaRecord,
    },
}

impl MetadataCommand {
    /// A short name for logs and metrics.
    pub const fn kind(&self) -> &'static str {
        match self {
            MetadataCommand::RegisterBroker { .. } => "register_broker",
            MetadataCommand::BrokerHeartbeat { .. } => "broker_heartbeat",
            MetadataCommand::FenceBroker { .. } => "fence_broker",
            MetadataCommand::UnfenceBroker { .. } => "unfence_broker",
            MetadataCommand::CreateTopic { .. } => "create_topic",
            MetadataCommand::DeleteTopic { .. } => "delete_topic",
            MetadataCommand::AlterTopicConfigs { .. } => "alter_topic_configs",
            MetadataCommand::CreatePartitions { .. } => "create_partitions",
            MetadataCommand::DeleteGroup { .. } => "delete_group",
            MetadataCommand::AdoptTopic { .. } => "adopt_topic",
            MetadataCommand::AlterIsr { .. } => "alter_isr",
            MetadataCommand::ElectLeader { .. } => "elect_leader",
            MetadataCommand::UploadPlugin { .. } => "upload_plugin",
            MetadataCommand::AttachPlugin { .. } => "attach_plugin",
            MetadataCommand::DetachPlugin { .. } => "detach_plugin",
            MetadataCommand::DeletePlugin { .. } => "delete_plugin",
            MetadataCommand::CommitOffsets { .. } => "commit_offsets",
            MetadataCommand::ExpireOffsets { .. } => "expire_offsets",
            MetadataCommand::CreateAcls { .. } => "create_acls",
            MetadataCommand::DeleteAcls { .. } => "delete_acls",
            MetadataCommand::ClaimProducerId { .. } => "claim_producer_id",
            MetadataCommand::UpsertUser { .. } => "upsert_user",
            MetadataCommand::DeleteUser { .. } => "delete_user",
            MetadataCommand::SetQuota { .. } => "set_quota",
        }
    }
}

/// One partition's offset in a [`MetadataCommand::CommitOffsets`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: u32,
    /// The next offset the group will read.
    pub offset: u64,
    /// Free text the consumer stores with the offset.
    pub metadata: String,
}

/// What an applied entry of the controller's log answered.
///
/// [`Controller::propose`](crate::Controller::propose) returns a refusal as
/// `Err(ProposeError::Rejected(..))`, never as `Ok(Rejected(..))`: the `Rejected`
/// variant exists because the Raft log records an answer for every entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataResponse {
    /// A Raft-internal entry (blank or membership change): no command was applied.
    Noop,
    /// The command was refused and changed nothing.
    Rejected(super::CommandError),
    BrokerRegistered {
        broker_epoch: u64,
        /// Partitions that elected a leader because this broker came back.
        leaders_elected: u32,
    },
    HeartbeatAccepted {
        /// Whether this heartbeat unfenced the broker.
        unfenced: bool,
        leaders_elected: u32,
    },
    BrokerFenced {
        /// Partitions this broker led that changed leader (possibly to none).
        leaders_changed: u32,
        /// ISRs the broker was removed from.
        isrs_shrunk: u32,
    },
    BrokerUnfenced {
        leaders_elected: u32,
    },
    TopicCreated {
        partitions: Vec<PartitionRecord>,
    },
    TopicDeleted,
    /// The topic's configs after the change.
    TopicConfigsAltered {
        configs: BTreeMap<String, String>,
    },
    /// The partitions added, in partition order after the existing ones.
    PartitionsCreated {
        partitions: Vec<PartitionRecord>,
    },
    GroupDeleted {
        /// Committed offsets forgotten.
        offsets: u32,
    },
    /// The ISR decision, committed as the partition's next `isr_version`. With a
    /// `refusal`, the proposed ISR broke a rule and the ISR is unchanged.
    IsrAltered {
        partition: PartitionRecord,
        refusal: Option<super::CommandError>,
    },
    LeaderElected {
        partition: PartitionRecord,
        /// Whether the leader changed (and so the leader epoch went up).
        changed: bool,
    },
    PluginUploaded {
        /// The version this upload replaced, if the name was registered.
        previous_version: Option<String>,
    },
    PluginAttached,
    PluginDetached {
        removed: u32,
    },
    PluginDeleted,
    OffsetsCommitted {
        count: u32,
    },
    OffsetsExpired {
        count: u32,
    },
    AclsCreated {
        added: u32,
    },
    AclsDeleted {
        removed: u32,
    },
    ProducerIdClaimed {
        /// The principal's oldest claim, forgotten to make room.
        evicted: Option<u64>,
    },
    UserUpserted {
        /// False when an existing user's credential was replaced.
        created: bool,
    },
    UserDeleted,
    QuotaSet {
        /// Whether a quota without limits removed one that existed.
        removed: bool,
    },
}
