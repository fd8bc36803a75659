//! The cluster metadata state machine: brokers, topics and their partition
//! assignments, plugins and their attachments, committed consumer offsets.
//!
//! Pure and deterministic: [`MetadataState::apply`] takes a command and returns its
//! answer, reading no clock and doing no I/O, so every controller that applies the same
//! log reaches the same state. Every command is validated in full before anything
//! changes: a refused command (`Err`) leaves the state exactly as it was. One answer
//! records a refusal on purpose: an `AlterIsr` from the right leader, epoch and ISR
//! version whose ISR breaks a rule is answered `IsrAltered { refusal: Some(..) }` and
//! takes the next ISR version with the ISR unchanged, so a delayed copy of it can never
//! apply (`quiver-repl`'s contract). Maps are `BTreeMap`s so iteration (round-robin
//! assignment, elections) is the same everywhere.
//!
//! Partition leadership follows Kafka's controller rules: every leader change bumps the
//! leader epoch, leaders come from the ISR unless the topic enables unclean election,
//! and an ISR never becomes empty (its last member stays so it can lead again).

mod broker;
mod command;
mod error;
pub mod limits;
mod offsets;
mod plugin;
mod security;
mod topic;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use command::{MetadataCommand, MetadataResponse, OffsetCommit};
pub use error::CommandError;
pub use security::{
    ProducerClaim, QUOTA_REQUEST_PERCENT_MAX, QuotaRecord, USER_ITERATIONS_MAX,
    USER_ITERATIONS_MIN, UserRecord,
};
pub use topic::UNCLEAN_LEADER_ELECTION_CONFIG;

/// A broker's id. Brokers and controllers share ids: broker `n` runs controller `n`.
pub type BrokerId = u32;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    /// Where clients and other brokers reach it over QUIC, `host:port`.
    pub address: String,
    /// The process incarnation that registered last.
    pub incarnation: u64,
    /// Bumped by every new registration (Kafka's broker epoch); heartbeats carry it.
    pub epoch: u64,
    /// A fenced broker leads nothing and joins no ISR until it heartbeats again.
    pub fenced: bool,
    /// The proposer's wall clock at the last registration or logged heartbeat, in
    /// ms: informational only. Fencing is timed on the controller leader's monotonic
    /// clock ([`crate::liveness`]), and most heartbeats never reach the log.
    pub last_heartbeat_ms: u64,
    /// Whether a heartbeat of this registration was accepted. A process heartbeats
    /// only once its registration is answered, so a registration that repeats this
    /// incarnation afterwards is no retry: it is another process that drew the same.
    #[serde(default)]
    pub heartbeated: bool,
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Indexed by partition number.
    pub partitions: Vec<PartitionRecord>,
    pub replication_factor: u16,
    pub configs: BTreeMap<String, String>,
}

/// One partition's replicas and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// Assigned replicas, preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// `None` while no eligible replica is available.
    pub leader: Option<BrokerId>,
    /// Bumped by every leader change, including to `None`.
    pub leader_epoch: u32,
    /// Counts ISR decisions within the leader epoch: 0 at every leader change, plus
    /// one for every AlterIsr answered and every ISR change the controller makes on
    /// its own (fencing). `quiver-repl`'s `IsrCommit::version`.
    pub isr_version: u32,
    /// In-sync replicas, in assignment order; never empty.
    pub isr: Vec<BrokerId>,
}

/// A registered plugin version. The module's bytes live with the brokers; the
/// metadata names the version (its content hash) that every broker must run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub version: String,
    pub kind: String,
    pub size_bytes: u64,
    pub uploaded_ms: u64,
}

/// A plugin attached to a topic. A topic's attachments run in the order they were
/// attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginAttachment {
    pub topic: String,
    pub plugin: String,
    /// `produce` or `fetch`.
    pub stage: String,
    pub params: Vec<(String, String)>,
    /// `fail`, `skip`, `pass` or `dead-letter:TOPIC`.
    pub on_error: String,
}

/// Whose committed offset: a group's, for one partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: u32,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: u64,
    pub metadata: String,
    /// When it was committed (the coordinator's clock); 0 for commits from before
    /// this was recorded, which expire at the first retention check.
    #[serde(default)]
    pub committed_ms: u64,
}

/// All cluster metadata. Cheap to read, changed only through [`MetadataState::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    brokers: BTreeMap<BrokerId, BrokerRecord>,
    topics: BTreeMap<String, TopicRecord>,
    plugins: BTreeMap<String, PluginRecord>,
    attachments: Vec<PluginAttachment>,
    /// JSON maps need string keys, so this one is stored as a list of pairs.
    #[serde(with = "pairs")]
    offsets: BTreeMap<OffsetKey, CommittedOffset>,
    /// The epoch the next registration gets.
    next_broker_epoch: u64,
    /// Where the next topic's round-robin assignment starts, so that leaders of
    /// successive topics spread over the brokers.
    assignment_cursor: u32,
    /// Access control rules (`authorization = "acl"`).
    #[serde(default)]
    acls: BTreeSet<quiver_wire::acl::AclBinding>,
    /// Producer ids issued to authenticated principals, by id.
    #[serde(default)]
    producer_claims: BTreeMap<u64, ProducerClaim>,
    #[serde(default)]
    next_claim_sequence: u64,
    /// SCRAM users, by name.
    #[serde(default)]
    users: BTreeMap<String, UserRecord>,
    /// Client quotas, by principal.
    #[serde(default)]
    quotas: BTreeMap<String, QuotaRecord>,
}

impl MetadataState {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one command. On `Err` nothing changed.
    pub fn apply(&mut self, command: &MetadataCommand) -> Result<MetadataResponse, CommandError> {
        match command {
            MetadataCommand::RegisterBroker {
                broker_id,
                incarnation,
                address,
                now_ms,
            } => self.register_broker(*broker_id, *incarnation, address, *now_ms),
            MetadataCommand::BrokerHeartbeat {
                broker_id,
                broker_epoch,
                now_ms,
            } => self.broker_heartbeat(*broker_id, *broker_epoch, *now_ms),
            MetadataCommand::FenceBroker { broker_id } => self.fence_broker(*broker_id),
            MetadataCommand::UnfenceBroker { broker_id } => self.unfence_broker(*broker_id),
            MetadataCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
            } => self.create_topic(name, *partitions, *replication_factor, configs),
            MetadataCommand::DeleteTopic { name } => self.delete_topic(name),
            MetadataCommand::AlterTopicConfigs { name, set, delete } => {
                self.alter_topic_configs(name, set, delete)
            }
            MetadataCommand::CreatePartitions { name, partitions } => {
                self.create_partitions(name, *partitions)
            }
            MetadataCommand::DeleteGroup { group } => self.delete_group(group),
            MetadataCommand::AdoptTopic {
                name,
                configs,
                leader_epochs,
            } => self.adopt_topic(name, configs, leader_epochs),
            MetadataCommand::AlterIsr {
                broker_id,
                topic,
                partition,
                leader_epoch,
                isr_version,
                isr,
            } => self.alter_isr(
                *broker_id,
                topic,
                *partition,
                *leader_epoch,
                *isr_version,
                isr,
            ),
            MetadataCommand::ElectLeader { topic, partition } => {
                self.elect_leader(topic, *partition)
            }
            MetadataCommand::UploadPlugin {
                name,
                version,
                kind,
                size_bytes,
                uploaded_ms,
            } => self.upload_plugin(name, version, kind, *size_bytes, *uploaded_ms),
            MetadataCommand::AttachPlugin {
                topic,
                plugin,
                stage,
                params,
                on_error,
            } => self.attach_plugin(topic, plugin, stage, params, on_error),
            MetadataCommand::DetachPlugin { topic, plugin } => self.detach_plugin(topic, plugin),
            MetadataCommand::DeletePlugin { name } => self.delete_plugin(name),
            MetadataCommand::CommitOffsets {
                group,
                offsets,
                now_ms,
            } => self.commit_offsets(group, offsets, *now_ms),
            MetadataCommand::ExpireOffsets {
                before_ms,
                keep_groups,
            } => Ok(self.expire_offsets(*before_ms, keep_groups)),
            MetadataCommand::CreateAcls { bindings } => self.create_acls(bindings),
            MetadataCommand::DeleteAcls { bindings } => self.delete_acls(bindings),
            MetadataCommand::ClaimProducerId {
                producer_id,
                principal,
            } => self.claim_producer_id(*producer_id, principal),
            MetadataCommand::UpsertUser { name, record } => self.upsert_user(name, record),
            MetadataCommand::DeleteUser { name } => self.delete_user(name),
            MetadataCommand::SetQuota { principal, record } => self.set_quota(principal, record),
        }
    }

    /// Every registered broker.
    pub fn brokers(&self) -> &BTreeMap<BrokerId, BrokerRecord> {
        &self.brokers
    }

    pub fn broker(&self, id: BrokerId) -> Option<&BrokerRecord> {
        self.brokers.get(&id)
    }

    /// Every topic, internal ones included.
    pub fn topics(&self) -> &BTreeMap<String, TopicRecord> {
        &self.topics
    }

    pub fn topic(&self, name: &str) -> Option<&TopicRecord> {
        self.topics.get(name)
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionRecord> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)
    }

    /// Every registered plugin, by name.
    pub fn plugins(&self) -> &BTreeMap<String, PluginRecord> {
        &self.plugins
    }

    /// Every attachment, each topic's in the order they run.
    pub fn attachments(&self) -> &[PluginAttachment] {
        &self.attachments
    }

    /// One topic's attachments, in the order they run.
    pub fn attachments_of<'a>(
        &'a self,
        topic: &'a str,
    ) -> impl Iterator<Item = &'a PluginAttachment> + 'a {
        self.attachments.iter().filter(move |a| a.topic == topic)
    }

    /// Every committed offset.
    pub fn offsets(&self) -> &BTreeMap<OffsetKey, CommittedOffset> {
        &self.offsets
    }

    pub fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Option<&CommittedOffset> {
        self.offsets.get(&OffsetKey {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
        })
    }

    /// One group's committed offsets, ordered by topic and partition.
    pub fn group_offsets<'a>(
        &'a self,
        group: &'a str,
    ) -> impl Iterator<Item = (&'a OffsetKey, &'a CommittedOffset)> + 'a {
        let start = OffsetKey {
            group: group.to_owned(),
            topic: String::new(),
            partition: 0,
        };
        self.offsets
            .range(start..)
            .take_while(move |(k, _)| k.group == group)
    }

    /// Partitions whose ISR is smaller than their replica set.
    pub fn under_replicated_partitions(&self) -> usize {
        self.topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.isr.len() < p.replicas.len())
            .count()
    }

    /// Partitions over all topics.
    pub fn partition_count(&self) -> u64 {
        self.topics
            .values()
            .map(|t| t.partitions.len() as u64)
            .sum()
    }

    /// Checks what every command preserves; a snapshot read from disk or the network
    /// is checked with it before it replaces the state.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.brokers.len() > limits::BROKERS_MAX {
            return Err(format!("{} brokers", self.brokers.len()));
        }
        if self.topics.len() > limits::TOPICS_MAX {
            return Err(format!("{} topics", self.topics.len()));
        }
        for (name, topic) in &self.topics {
            if topic.partitions.is_empty() {
                return Err(format!("topic {name} has no partitions"));
            }
            for (index, p) in topic.partitions.iter().enumerate() {
                let at = || format!("{name}/{index}");
                if p.replicas.len() != usize::from(topic.replication_factor) {
                    return Err(format!("{}: replicas differ from the factor", at()));
                }
                if p.isr.is_empty() {
                    return Err(format!("{}: empty ISR", at()));
                }
                if let Some(r) = p.isr.iter().find(|r| !p.replicas.contains(r)) {
                    return Err(format!("{}: ISR member {r} is not a replica", at()));
                }
                if has_duplicates(&p.isr) || has_duplicates(&p.replicas) {
                    return Err(format!("{}: duplicate broker", at()));
                }
                if let Some(leader) = p.leader {
                    if !p.isr.contains(&leader) {
                        return Err(format!("{}: leader {leader} is not in the ISR", at()));
                    }
                    if self.brokers.get(&leader).is_none_or(|b| b.fenced) {
                        return Err(format!("{}: leader {leader} is fenced", at()));
                    }
                }
            }
        }
        if self.partition_count() > limits::PARTITIONS_MAX {
            return Err(format!("{} partitions", self.partition_count()));
        }
        if self.plugins.len() > limits::PLUGINS_MAX {
            return Err(format!("{} plugins", self.plugins.len()));
        }
        if self.attachments.len() > limits::ATTACHMENTS_MAX {
            return Err(format!("{} attachments", self.attachments.len()));
        }
        for a in &self.attachments {
            if !self.topics.contains_key(&a.topic) || !self.plugins.contains_key(&a.plugin) {
                return Err(format!("dangling attachment {}/{}", a.topic, a.plugin));
            }
        }
        if self.offsets.len() > limits::OFFSETS_MAX {
            return Err(format!("{} offsets", self.offsets.len()));
        }
        if self.acls.len() > quiver_wire::acl::ACLS_MAX {
            return Err(format!("{} ACLs", self.acls.len()));
        }
        if let Some(bad) = self.acls.iter().find(|b| b.validate().is_err()) {
            return Err(format!("invalid ACL {bad}"));
        }
        if self.users.len() > quiver_wire::sasl::USERS_MAX {
            return Err(format!("{} users", self.users.len()));
        }
        if self.producer_claims.len() > limits::PRODUCER_CLAIMS_MAX {
            return Err(format!("{} producer id claims", self.producer_claims.len()));
        }
        Ok(())
    }
}

fn has_duplicates(ids: &[BrokerId]) -> bool {
    ids.iter().enumerate().any(|(i, id)| ids[..i].contains(id))
}

/// Serialises a map as a sequence of `(key, value)` pairs, for keys JSON cannot use.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S, K, V>(map: &BTreeMap<K, V>, serializer: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        K: Serialize,
        V: Serialize,
    {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        let pairs = Vec::<(K, V)>::deserialize(deserializer)?;
        Ok(pairs.into_iter().collect())
    }
}

#[cfg(test)]
mod tests;
