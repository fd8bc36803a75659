//! Topics, replica assignment, ISR changes and leader election.

use std::collections::BTreeMap;

use super::limits::{
    CONFIG_KEY_BYTES_MAX, CONFIG_VALUE_BYTES_MAX, PARTITIONS_MAX, PARTITIONS_PER_TOPIC_MAX,
    REPLICATION_FACTOR_MAX, TOPIC_CONFIGS_MAX, TOPIC_NAME_BYTES_MAX, TOPICS_MAX,
};
use super::{
    BrokerId, BrokerRecord, CommandError, MetadataResponse, MetadataState, PartitionRecord,
    TopicRecord,
};

/// Topic config that lets a partition elect a replica outside the ISR when no ISR
/// member is available (`true` or `false`; off when absent), as in Kafka. Such an
/// election may lose acknowledged records.
pub const UNCLEAN_LEADER_ELECTION_CONFIG: &str = "unclean.leader.election.enable";

/// Names with this prefix belong to the broker; they cannot be deleted.
const INTERNAL_TOPIC_PREFIX: &str = "__";

impl MetadataState {
    /// [`MetadataCommand::AdoptTopic`](super::MetadataCommand::AdoptTopic): a topic of
    /// replication factor 1 whose partitions start at the given leader epochs.
    pub(super) fn adopt_topic(
        &mut self,
        name: &str,
        configs: &BTreeMap<String, String>,
        leader_epochs: &[u32],
    ) -> Result<MetadataResponse, CommandError> {
        let partitions = u32::try_from(leader_epochs.len()).map_err(|_| {
            CommandError::InvalidPartitionCount {
                given: u32::MAX,
                max: PARTITIONS_PER_TOPIC_MAX,
            }
        })?;
        let answer = self.create_topic(name, partitions, 1, configs)?;
        if let Some(topic) = self.topics.get_mut(name) {
            for (p, epoch) in topic.partitions.iter_mut().zip(leader_epochs) {
                p.leader_epoch = p.leader_epoch.max(*epoch);
            }
        }
        Ok(answer)
    }

    pub(super) fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: &BTreeMap<String, String>,
    ) -> Result<MetadataResponse, CommandError> {
        validate_topic_name(name)?;
        if self.topics.contains_key(name) {
            return Err(CommandError::TopicExists(name.to_owned()));
        }
        if self.topics.len() >= TOPICS_MAX {
            return Err(CommandError::TooManyTopics { max: TOPICS_MAX });
        }
        if partitions == 0 || partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(CommandError::InvalidPartitionCount {
                given: partitions,
                max: PARTITIONS_PER_TOPIC_MAX,
            });
        }
        if replication_factor == 0 || replication_factor > REPLICATION_FACTOR_MAX {
            return Err(CommandError::InvalidReplicationFactor {
                given: replication_factor,
                max: REPLICATION_FACTOR_MAX,
            });
        }
        validate_configs(configs)?;
        if self.partition_count() + u64::from(partitions) > PARTITIONS_MAX {
            return Err(CommandError::TooManyPartitions {
                requested: u64::from(partitions),
                max: PARTITIONS_MAX,
            });
        }
        let records = self.assign(0..partitions, replication_factor)?;
        self.topics.insert(
            name.to_owned(),
            TopicRecord {
                partitions: records.clone(),
                replication_factor,
                configs: configs.clone(),
            },
        );
        Ok(MetadataResponse::TopicCreated {
            partitions: records,
        })
    }

    /// Replicas for partitions `range` of a topic: round-robin over the unfenced
    /// brokers, partition p's replicas being the brokers after p (plus a cursor that
    /// moves per call), so leaders, the first replicas, spread evenly. Moves the
    /// cursor; refuses, changing nothing, when too few brokers are unfenced.
    fn assign(
        &mut self,
        range: std::ops::Range<u32>,
        replication_factor: u16,
    ) -> Result<Vec<PartitionRecord>, CommandError> {
        let unfenced: Vec<BrokerId> = self
            .brokers
            .iter()
            .filter(|(_, b)| !b.fenced)
            .map(|(id, _)| *id)
            .collect();
        if unfenced.len() < usize::from(replication_factor) {
            return Err(CommandError::NotEnoughBrokers {
                needed: replication_factor,
                available: unfenced.len(),
            });
        }
        let start = self.assignment_cursor as usize;
        let records = range
            .map(|p| {
                let replicas: Vec<BrokerId> = (0..usize::from(replication_factor))
                    .map(|r| unfenced[(start + p as usize + r) % unfenced.len()])
                    .collect();
                PartitionRecord {
                    leader: replicas.first().copied(),
                    leader_epoch: 0,
                    isr_version: 0,
                    isr: replicas.clone(),
                    replicas,
                }
            })
            .collect();
        self.assignment_cursor = self.assignment_cursor.wrapping_add(1);
        Ok(records)
    }

    /// [`MetadataCommand::AlterTopicConfigs`](super::MetadataCommand::AlterTopicConfigs).
    pub(super) fn alter_topic_configs(
        &mut self,
        name: &str,
        set: &BTreeMap<String, String>,
        delete: &[String],
    ) -> Result<MetadataResponse, CommandError> {
        let topic = self
            .topics
            .get_mut(name)
            .ok_or_else(|| CommandError::UnknownTopic(name.to_owned()))?;
        if let Some(key) = delete.iter().find(|k| set.contains_key(*k)) {
            return Err(CommandError::InvalidConfig {
                key: key.chars().take(CONFIG_KEY_BYTES_MAX).collect(),
                reason: "both set and removed".to_owned(),
            });
        }
        if delete.len() > TOPIC_CONFIGS_MAX {
            return Err(CommandError::InvalidConfig {
                key: String::new(),
                reason: format!("{} removals, more than {TOPIC_CONFIGS_MAX}", delete.len()),
            });
        }
        let mut configs = topic.configs.clone();
        for key in delete {
            configs.remove(key);
        }
        configs.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        validate_configs(&configs)?;
        topic.configs = configs.clone();
        Ok(MetadataResponse::TopicConfigsAltered { configs })
    }

    /// [`MetadataCommand::CreatePartitions`](super::MetadataCommand::CreatePartitions).
    pub(super) fn create_partitions(
        &mut self,
        name: &str,
        partitions: u32,
    ) -> Result<MetadataResponse, CommandError> {
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| CommandError::UnknownTopic(name.to_owned()))?;
        let current = u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX);
        let replication_factor = topic.replication_factor;
        if partitions <= current {
            return Err(CommandError::PartitionCountNotIncreased {
                topic: name.to_owned(),
                current,
                given: partitions,
            });
        }
        if partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(CommandError::InvalidPartitionCount {
                given: partitions,
                max: PARTITIONS_PER_TOPIC_MAX,
            });
        }
        let added = u64::from(partitions - current);
        if self.partition_count() + added > PARTITIONS_MAX {
            return Err(CommandError::TooManyPartitions {
                requested: added,
                max: PARTITIONS_MAX,
            });
        }
        let records = self.assign(current..partitions, replication_factor)?;
        if let Some(topic) = self.topics.get_mut(name) {
            topic.partitions.extend(records.iter().cloned());
        }
        Ok(MetadataResponse::PartitionsCreated {
            partitions: records,
        })
    }

    pub(super) fn delete_topic(&mut self, name: &str) -> Result<MetadataResponse, CommandError> {
        if !self.topics.contains_key(name) {
            return Err(CommandError::UnknownTopic(name.to_owned()));
        }
        if name.starts_with(INTERNAL_TOPIC_PREFIX) {
            return Err(CommandError::InternalTopic(name.to_owned()));
        }
        self.topics.remove(name);
        self.attachments.retain(|a| a.topic != name);
        self.offsets.retain(|k, _| k.topic != name);
        Ok(MetadataResponse::TopicDeleted)
    }

    /// Kafka's AlterPartition, with `quiver-repl`'s versions: only the current leader,
    /// in its current epoch, proposing against the current ISR version, changes the
    /// ISR. Any other request is refused and changes nothing.
    ///
    /// A request that passes those checks but cannot be applied (the ISR lacks the
    /// leader, names a non-replica, or adds a fenced broker) is answered by committing
    /// the unchanged ISR as the next version, with the reason in the answer: the
    /// leader learns the outcome, and no delayed copy of the request can apply later,
    /// since its base version is gone.
    pub(super) fn alter_isr(
        &mut self,
        broker_id: BrokerId,
        topic: &str,
        partition: u32,
        leader_epoch: u32,
        isr_version: u32,
        isr: &[BrokerId],
    ) -> Result<MetadataResponse, CommandError> {
        let brokers = &self.brokers;
        let p = partition_mut(&mut self.topics, topic, partition)?;
        if leader_epoch < p.leader_epoch {
            return Err(CommandError::FencedLeaderEpoch {
                current: p.leader_epoch,
                given: leader_epoch,
            });
        }
        if leader_epoch > p.leader_epoch {
            return Err(CommandError::UnknownLeaderEpoch {
                current: p.leader_epoch,
                given: leader_epoch,
            });
        }
        if p.leader != Some(broker_id) {
            return Err(CommandError::NotLeader {
                broker: broker_id,
                leader: p.leader,
            });
        }
        if isr_version != p.isr_version {
            return Err(CommandError::StaleIsrVersion {
                current: p.isr_version,
                given: isr_version,
            });
        }
        let refusal = check_isr(p, brokers, broker_id, isr).err();
        if refusal.is_none() {
            // Kept in assignment order, so equal sets compare equal.
            p.isr = p
                .replicas
                .iter()
                .copied()
                .filter(|r| isr.contains(r))
                .collect();
        }
        p.isr_version = p.isr_version.saturating_add(1);
        Ok(MetadataResponse::IsrAltered {
            partition: p.clone(),
            refusal,
        })
    }

    pub(super) fn elect_leader(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<MetadataResponse, CommandError> {
        let unclean = self
            .topics
            .get(topic)
            .is_some_and(|t| unclean_election_enabled(&t.configs));
        let brokers = &self.brokers;
        let p = partition_mut(&mut self.topics, topic, partition)?;
        let changed = elect(p, brokers, unclean);
        Ok(MetadataResponse::LeaderElected {
            partition: p.clone(),
            changed,
        })
    }
}

fn partition_mut<'a>(
    topics: &'a mut BTreeMap<String, TopicRecord>,
    topic: &str,
    partition: u32,
) -> Result<&'a mut PartitionRecord, CommandError> {
    let t = topics
        .get_mut(topic)
        .ok_or_else(|| CommandError::UnknownTopic(topic.to_owned()))?;
    usize::try_from(partition)
        .ok()
        .and_then(|i| t.partitions.get_mut(i))
        .ok_or_else(|| CommandError::UnknownPartition {
            topic: topic.to_owned(),
            partition,
        })
}

/// The rules a proposed ISR must follow: non-empty, no repeats, replicas only, the
/// leader in it, and every broker it adds unfenced.
fn check_isr(
    p: &PartitionRecord,
    brokers: &BTreeMap<BrokerId, BrokerRecord>,
    leader: BrokerId,
    isr: &[BrokerId],
) -> Result<(), CommandError> {
    if isr.is_empty() {
        return Err(CommandError::InvalidIsr("empty".to_owned()));
    }
    if super::has_duplicates(isr) {
        return Err(CommandError::InvalidIsr(
            "a broker appears twice".to_owned(),
        ));
    }
    if let Some(r) = isr.iter().find(|r| !p.replicas.contains(r)) {
        return Err(CommandError::InvalidIsr(format!(
            "broker {r} is not a replica"
        )));
    }
    if !isr.contains(&leader) {
        return Err(CommandError::InvalidIsr(format!(
            "it must contain the leader {leader}"
        )));
    }
    if let Some(r) = isr
        .iter()
        .find(|r| !p.isr.contains(r) && !is_unfenced(brokers, **r))
    {
        return Err(CommandError::IneligibleReplica(*r));
    }
    Ok(())
}

fn is_unfenced(brokers: &BTreeMap<BrokerId, BrokerRecord>, id: BrokerId) -> bool {
    brokers.get(&id).is_some_and(|b| !b.fenced)
}

pub(super) fn unclean_election_enabled(configs: &BTreeMap<String, String>) -> bool {
    configs
        .get(UNCLEAN_LEADER_ELECTION_CONFIG)
        .is_some_and(|v| v == "true")
}

/// Elects the partition's leader: the first replica in assignment order that is in
/// the ISR and unfenced; failing that, with `unclean`, the first unfenced replica
/// (which becomes the whole ISR); failing that, none. Returns whether the leader
/// changed; every change bumps the leader epoch.
pub(super) fn elect(
    p: &mut PartitionRecord,
    brokers: &BTreeMap<BrokerId, BrokerRecord>,
    unclean: bool,
) -> bool {
    let clean = p
        .replicas
        .iter()
        .copied()
        .find(|r| p.isr.contains(r) && is_unfenced(brokers, *r));
    let (leader, isr) = match clean {
        Some(leader) => (Some(leader), None),
        None if unclean => match p
            .replicas
            .iter()
            .copied()
            .find(|r| is_unfenced(brokers, *r))
        {
            Some(leader) => (Some(leader), Some(vec![leader])),
            None => (None, None),
        },
        None => (None, None),
    };
    if leader == p.leader && isr.as_ref().is_none_or(|isr| *isr == p.isr) {
        return false;
    }
    p.leader = leader;
    if let Some(isr) = isr {
        p.isr = isr;
    }
    // 2^32 elections of one partition do not happen; saturating keeps epochs monotonic.
    p.leader_epoch = p.leader_epoch.saturating_add(1);
    p.isr_version = 0;
    true
}

/// 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`. Internal (`__`) names are allowed
/// here: the broker creates its own internal topics through the controller and keeps
/// users from naming them.
fn validate_topic_name(name: &str) -> Result<(), CommandError> {
    let invalid = |reason: &str| CommandError::InvalidTopicName {
        name: name.chars().take(TOPIC_NAME_BYTES_MAX).collect(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(invalid("longer than 249 bytes"));
    }
    if name == "." || name == ".." {
        return Err(invalid("reserved"));
    }
    if !is_topic_name_chars(name) {
        return Err(invalid("use only ASCII letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

pub(super) fn is_topic_name_chars(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn validate_configs(configs: &BTreeMap<String, String>) -> Result<(), CommandError> {
    if configs.len() > TOPIC_CONFIGS_MAX {
        return Err(CommandError::InvalidConfig {
            key: String::new(),
            reason: format!("{} entries, more than {TOPIC_CONFIGS_MAX}", configs.len()),
        });
    }
    for (key, value) in configs {
        let invalid = |reason: String| CommandError::InvalidConfig {
            key: key.chars().take(CONFIG_KEY_BYTES_MAX).collect(),
            reason,
        };
        if key.is_empty() || key.len() > CONFIG_KEY_BYTES_MAX {
            return Err(invalid(format!(
                "keys are 1 to {CONFIG_KEY_BYTES_MAX} bytes"
            )));
        }
        if value.len() > CONFIG_VALUE_BYTES_MAX {
            return Err(invalid(format!(
                "values are at most {CONFIG_VALUE_BYTES_MAX} bytes"
            )));
        }
        if key == UNCLEAN_LEADER_ELECTION_CONFIG && value != "true" && value != "false" {
            return Err(invalid("must be true or false".to_owned()));
        }
    }
    Ok(())
}
