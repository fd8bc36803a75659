//! [`Admin`]: managing a cluster, like Kafka's `Admin` client. Topics (create from a
//! [`NewTopic`], delete, list, describe, add partitions, describe and alter configs),
//! consumer groups (list, describe, delete, list, alter and reset committed offsets),
//! plugins, ACLs, SCRAM users and client quotas.
//!
//! Every call is one request (or, for group offset resets, a few) to the cluster; a
//! refusal comes back as [`RequestError::Broker`] with a stable
//! [`ErrorCode`](crate::ErrorCode) (`TOPIC_AUTHORIZATION_FAILED`, `INVALID_CONFIG`,
//! `INVALID_PARTITIONS`, `GROUP_NOT_EMPTY`, ...), and a refused change changes nothing.
//! What each call needs permission for, with `authorization = "acl"`, is written on it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use quiver_sdk::{Admin, AlterConfigOp, ClientConfig, NewTopic};
//! let admin = Admin::connect(ClientConfig::new("127.0.0.1:7420", "quiver-data/tls/ca.pem")).await?;
//! admin
//!     .create_topic(NewTopic::new("events", 3, 1).config("retention.ms", "86400000"))
//!     .await?;
//! admin.create_partitions("events", 6).await?;
//! admin
//!     .alter_topic_configs("events", &[AlterConfigOp::set("max.message.bytes", "65536")])
//!     .await?;
//! for topic in admin.list_topics().await? {
//!     println!("{} ({} partitions)", topic.name, topic.partitions.len());
//! }
//! # Ok(()) }
//! ```

// Every public item of the admin surface says what it does.
#![warn(missing_docs)]

use bytes::Bytes;
use quiver_wire::acl::{AclBinding, AclCreateRequest, AclDeleteRequest, AclDescribeRequest};
use quiver_wire::cluster::{ClusterStatusRequest, ClusterStatusResponse};
use quiver_wire::group::{
    CommittedOffset, DeleteGroupRequest, DescribeGroupRequest, ListGroupsRequest, NO_MEMBER_EPOCH,
    OffsetCommitRequest, OffsetFetchRequest,
};
use quiver_wire::message::{
    AlterTopicConfigsRequest, CreatePartitionsRequest, CreateTopicRequest, DeleteTopicRequest,
    MetadataRequest, OffsetSpec, TopicInfo,
};
use quiver_wire::plugin::{
    Attachment, PLUGIN_MODULE_BYTES_MAX, PluginAttachRequest, PluginDeleteRequest,
    PluginDetachRequest, PluginInfo, PluginListRequest, PluginUploadRequest, validate_params,
    validate_plugin_name,
};
use quiver_wire::quota::{Quota, QuotaListRequest, QuotaSetRequest};
use quiver_wire::sasl::{StoredCredential, UserDeleteRequest, UserListRequest, UserUpsertRequest};
use quiver_wire::topic::validate_topic_name;
use std::sync::Arc;

pub use quiver_wire::group::{GroupMember, TopicPartitions};

use crate::client::{Client, ClientConfig};
use crate::error::{ConnectError, RequestError};

/// A topic to create: name, partition count, replication factor and configs (Kafka's
/// `NewTopic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    name: String,
    partitions: u32,
    replication_factor: u16,
    configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic `name` with `partitions` partitions, each on `replication_factor`
    /// brokers, and the brokers' default configs.
    pub fn new(name: impl Into<String>, partitions: u32, replication_factor: u16) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication_factor,
            configs: Vec::new(),
        }
    }

    /// Sets the partition count.
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Sets the replication factor.
    pub fn replication_factor(mut self, replication_factor: u16) -> Self {
        self.replication_factor = replication_factor;
        self
    }

    /// Adds a topic config, a Kafka-style key such as `retention.ms` or
    /// `max.message.bytes`.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.push((key.into(), value.into()));
        self
    }

    /// Adds several topic configs.
    pub fn configs<K: Into<String>, V: Into<String>>(
        mut self,
        configs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.configs
            .extend(configs.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One change to a topic's configs (Kafka's `AlterConfigOp`, SET and DELETE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterConfigOp {
    /// Sets `key` to `value`.
    Set {
        /// The config key, such as `retention.ms`.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Removes `key`: the topic takes the brokers' default again.
    Delete {
        /// The config key.
        key: String,
    },
}

impl AlterConfigOp {
    /// Sets `key` to `value`.
    pub fn set(key: impl Into<String>, value: impl Into<String>) -> Self {
        AlterConfigOp::Set {
            key: key.into(),
            value: value.into(),
        }
    }

    /// Removes `key`, back to the brokers' default.
    pub fn delete(key: impl Into<String>) -> Self {
        AlterConfigOp::Delete { key: key.into() }
    }
}

/// A consumer group as [`Admin::list_groups`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group id.
    pub group: String,
    /// Active members; 0 for a group known only by its committed offsets.
    pub members: u32,
}

/// A consumer group's members and what each is assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group: String,
    /// Grows with every membership change.
    pub epoch: u32,
    /// Active members; empty for a group without any.
    pub members: Vec<GroupMember>,
}

/// A group's committed offset for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    /// The topic, the same type as a [`TopicPartition`](crate::TopicPartition)'s.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The next offset the group reads.
    pub offset: u64,
    /// Free text stored with the offset.
    pub metadata: String,
}

impl GroupOffset {
    /// An offset with no metadata.
    pub fn new(topic: impl Into<Arc<str>>, partition: u32, offset: u64) -> Self {
        Self {
            topic: topic.into(),
            partition,
            offset,
            metadata: String::new(),
        }
    }
}

/// Where [`Admin::reset_group_offsets`] moves a group's offsets, per partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetResetTarget {
    /// The oldest stored record.
    Earliest,
    /// After the last committed record (the high watermark).
    Latest,
    /// This offset, which every partition must hold (from its log start offset to
    /// its high watermark).
    Offset(u64),
    /// The first record at or after this timestamp (milliseconds since the epoch);
    /// the high watermark for a partition without one.
    Timestamp(i64),
}

/// Administration of a Quiver cluster. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Admin {
    client: Client,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("broker", &self.client.broker_addr())
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// Connects as [`Client::connect`] does.
    pub async fn connect(config: ClientConfig) -> Result<Self, ConnectError> {
        Client::connect(config).await.map(Self::from_client)
    }

    /// Administers through an existing client's connection.
    pub fn from_client(client: Client) -> Self {
        Self { client }
    }

    /// The client under this admin.
    pub fn client(&self) -> &Client {
        &self.client
    }

    // Topics.

    /// Creates a topic. Needs `create` on the topic. Refusals: `TOPIC_ALREADY_EXISTS`,
    /// `INVALID_TOPIC_NAME`, `INVALID_CONFIG` (an unknown key or a bad value),
    /// `INVALID_REQUEST` (a partition count or replication factor out of range).
    pub async fn create_topic(&self, topic: NewTopic) -> Result<(), RequestError> {
        validate_topic_name(&topic.name)
            .map_err(|e| RequestError::InvalidArgument(e.to_string()))?;
        self.client
            .rpc(&CreateTopicRequest {
                name: topic.name,
                partitions: topic.partitions,
                replication_factor: topic.replication_factor,
                configs: topic.configs,
            })
            .await
            .map(drop)
    }

    /// Deletes a topic and its data. Needs `delete` on the topic.
    pub async fn delete_topic(&self, name: &str) -> Result<(), RequestError> {
        self.client
            .rpc(&DeleteTopicRequest {
                name: name.to_owned(),
            })
            .await
            .map(drop)
    }

    /// Every topic this principal may describe, with its partitions and configs.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, RequestError> {
        Ok(self
            .client
            .rpc(&MetadataRequest { topics: None })
            .await?
            .topics)
    }

    /// One topic: partitions (leader, replicas, ISR, offsets) and configs. Needs
    /// `describe` on the topic.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo, RequestError> {
        self.client.describe_topic(name).await
    }

    /// Grows topic `name` to `partitions` partitions in total (Kafka's
    /// `createPartitions` with `NewPartitions.increaseTo`). Records with a key may map
    /// to another partition afterwards. Needs `alter` on the topic. Refusals:
    /// `INVALID_PARTITIONS` (not more than today, or above the limit),
    /// `UNKNOWN_TOPIC`.
    pub async fn create_partitions(&self, name: &str, partitions: u32) -> Result<(), RequestError> {
        self.client
            .rpc(&CreatePartitionsRequest {
                name: name.to_owned(),
                partitions,
            })
            .await
            .map(drop)
    }

    /// A topic's explicit configs and its effective `max.message.bytes` (which
    /// producers need), sorted by key; keys not listed take the brokers' defaults.
    /// Needs `describe` on the topic.
    pub async fn describe_topic_configs(
        &self,
        name: &str,
    ) -> Result<Vec<(String, String)>, RequestError> {
        Ok(self.describe_topic(name).await?.configs)
    }

    /// Changes a topic's configs, all or none (Kafka's `incrementalAlterConfigs`);
    /// every broker applies them to the topic's partitions. Keys and values follow
    /// topic creation's rules. Needs `alter` on the topic. Refusals: `INVALID_CONFIG`
    /// (an unknown key, a bad value, a key given twice), `UNKNOWN_TOPIC`.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        ops: &[AlterConfigOp],
    ) -> Result<(), RequestError> {
        let mut request = AlterTopicConfigsRequest {
            name: name.to_owned(),
            set: Vec::new(),
            delete: Vec::new(),
        };
        for op in ops {
            match op {
                AlterConfigOp::Set { key, value } => request.set.push((key.clone(), value.clone())),
                AlterConfigOp::Delete { key } => request.delete.push(key.clone()),
            }
        }
        self.client.rpc(&request).await.map(drop)
    }

    /// What the broker knows of its cluster: the controller leader, voters, brokers
    /// and whether each is fenced.
    pub async fn describe_cluster(&self) -> Result<ClusterStatusResponse, RequestError> {
        self.client.rpc(&ClusterStatusRequest).await
    }

    // Consumer groups.

    /// Groups with members or committed offsets that this principal may describe.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, RequestError> {
        Ok(self
            .client
            .rpc(&ListGroupsRequest)
            .await?
            .groups
            .into_iter()
            .map(|(group, members)| GroupListing { group, members })
            .collect())
    }

    /// A group's members and their assignments. Needs `describe` on the group.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, RequestError> {
        let answer = self
            .client
            .rpc(&DescribeGroupRequest {
                group: group.to_owned(),
            })
            .await?;
        Ok(GroupDescription {
            group: answer.group,
            epoch: answer.group_epoch,
            members: answer.members,
        })
    }

    /// Deletes a group: its committed offsets are forgotten. Needs `delete` on the
    /// group. Refusals: `GROUP_NOT_EMPTY` while it has active members,
    /// `GROUP_ID_NOT_FOUND` for a group without members or offsets.
    pub async fn delete_group(&self, group: &str) -> Result<(), RequestError> {
        self.client
            .rpc(&DeleteGroupRequest {
                group: group.to_owned(),
            })
            .await
            .map(drop)
    }

    /// A group's committed offsets, by topic and partition. Needs `describe` on the
    /// group.
    pub async fn list_group_offsets(&self, group: &str) -> Result<Vec<GroupOffset>, RequestError> {
        let answer = self
            .client
            .rpc(&OffsetFetchRequest {
                group: group.to_owned(),
                partitions: None,
            })
            .await?;
        Ok(answer
            .offsets
            .into_iter()
            .filter_map(|(_, _, committed)| committed)
            .map(|c| GroupOffset {
                topic: c.topic.into(),
                partition: c.partition,
                offset: c.offset,
                metadata: c.metadata,
            })
            .collect())
    }

    /// Sets a group's committed offsets, all or none (Kafka's
    /// `alterConsumerGroupOffsets`). Needs `read` on the group and on each topic.
    /// Refused with `GROUP_NOT_EMPTY` while the group has active members: they would
    /// commit over the change.
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &[GroupOffset],
    ) -> Result<(), RequestError> {
        self.client
            .rpc(&OffsetCommitRequest {
                group: group.to_owned(),
                member_id: String::new(),
                member_epoch: NO_MEMBER_EPOCH,
                offsets: offsets
                    .iter()
                    .map(|o| CommittedOffset {
                        topic: o.topic.to_string(),
                        partition: o.partition,
                        offset: o.offset,
                        metadata: o.metadata.clone(),
                    })
                    .collect(),
            })
            .await
            .map(drop)
    }

    /// Moves a group's committed offsets on every partition of `topic` to `target`
    /// and answers the offsets set (`quiver group reset-offsets`). As
    /// [`Admin::alter_group_offsets`], refused while the group has active members.
    pub async fn reset_group_offsets(
        &self,
        group: &str,
        topic: &str,
        target: OffsetResetTarget,
    ) -> Result<Vec<GroupOffset>, RequestError> {
        let info = self.describe_topic(topic).await?;
        let mut offsets = Vec::with_capacity(info.partitions.len());
        for p in &info.partitions {
            let offset = match target {
                OffsetResetTarget::Earliest => p.log_start_offset,
                OffsetResetTarget::Latest => p.high_watermark,
                OffsetResetTarget::Offset(n) => {
                    if n < p.log_start_offset || n > p.high_watermark {
                        return Err(RequestError::InvalidArgument(format!(
                            "offset {n} is out of range for {topic}/{}: stored offsets are {}..{}",
                            p.partition, p.log_start_offset, p.high_watermark
                        )));
                    }
                    n
                }
                OffsetResetTarget::Timestamp(ms) => self
                    .client
                    .list_offsets(topic, p.partition, OffsetSpec::Timestamp(ms))
                    .await?
                    .offset
                    .map_or(p.high_watermark, |o| o.min(p.high_watermark)),
            };
            offsets.push(GroupOffset::new(topic, p.partition, offset));
        }
        self.alter_group_offsets(group, &offsets).await?;
        Ok(offsets)
    }

    // Plugins.

    /// Registers a WebAssembly plugin under `name` (replacing the name's current
    /// version for every attachment, from the next batch on). The broker checks the
    /// module against the plugin ABI and compiles it before answering. Needs `alter`
    /// on the cluster.
    pub async fn upload_plugin(
        &self,
        name: &str,
        module: impl Into<Bytes>,
    ) -> Result<PluginInfo, RequestError> {
        validate_plugin_name(name).map_err(|e| RequestError::InvalidArgument(e.to_string()))?;
        let module = module.into();
        if module.len() > PLUGIN_MODULE_BYTES_MAX {
            return Err(RequestError::InvalidArgument(format!(
                "module of {} bytes exceeds the wire limit of {PLUGIN_MODULE_BYTES_MAX} bytes",
                module.len()
            )));
        }
        self.client
            .rpc(&PluginUploadRequest {
                name: name.to_owned(),
                module,
            })
            .await
    }

    /// Every registered plugin, and every attachment of a plugin to a topic. Needs
    /// `describe` on the cluster.
    pub async fn list_plugins(&self) -> Result<(Vec<PluginInfo>, Vec<Attachment>), RequestError> {
        let response = self.client.rpc(&PluginListRequest).await?;
        Ok((response.plugins, response.attachments))
    }

    /// Attaches a registered plugin to a topic's produce or fetch stage, after the
    /// stage's existing plugins. The broker initialises the plugin with `params` once
    /// to check them. Needs `alter` on the topic.
    pub async fn attach_plugin(&self, attachment: Attachment) -> Result<(), RequestError> {
        validate_params(&attachment.params).map_err(RequestError::InvalidArgument)?;
        self.client
            .rpc(&PluginAttachRequest { attachment })
            .await
            .map(drop)
    }

    /// Detaches every attachment of `plugin` from `topic`. Needs `alter` on the topic.
    pub async fn detach_plugin(&self, topic: &str, plugin: &str) -> Result<(), RequestError> {
        self.client
            .rpc(&PluginDetachRequest {
                topic: topic.to_owned(),
                plugin: plugin.to_owned(),
            })
            .await
            .map(drop)
    }

    /// Deletes plugin `name` and its stored versions; refused with `PLUGIN_IN_USE`
    /// while a topic has it attached. Needs `alter` on the cluster.
    pub async fn delete_plugin(&self, name: &str) -> Result<(), RequestError> {
        self.client
            .rpc(&PluginDeleteRequest {
                name: name.to_owned(),
            })
            .await
            .map(drop)
    }

    // Access control, users and quotas.

    /// Adds access control rules (`authorization = "acl"`); rules that exist already
    /// change nothing. Needs `alter` on the cluster.
    pub async fn create_acls(&self, bindings: Vec<AclBinding>) -> Result<(), RequestError> {
        self.client
            .rpc(&AclCreateRequest { bindings })
            .await
            .map(drop)
    }

    /// Removes access control rules matched exactly; answers how many existed. Needs
    /// `alter` on the cluster.
    pub async fn delete_acls(&self, bindings: Vec<AclBinding>) -> Result<u32, RequestError> {
        self.client
            .rpc(&AclDeleteRequest { bindings })
            .await
            .map(|answer| answer.removed)
    }

    /// The access control rules `filter` selects. Needs `describe` on the cluster.
    pub async fn describe_acls(
        &self,
        filter: AclDescribeRequest,
    ) -> Result<Vec<AclBinding>, RequestError> {
        self.client.rpc(&filter).await.map(|answer| answer.bindings)
    }

    /// Creates user `name` for SCRAM-SHA-256, or replaces its password. The salted,
    /// iterated keys are derived here; the password never leaves this process. Needs
    /// `alter` on the cluster.
    pub async fn upsert_user(
        &self,
        name: &str,
        password: &str,
        iterations: u32,
    ) -> Result<(), RequestError> {
        let credential = quiver_wire::scram::ScramCredential::new(password, iterations)
            .map_err(|e| RequestError::InvalidArgument(e.to_string()))?;
        self.client
            .rpc(&UserUpsertRequest {
                name: name.to_owned(),
                credential: StoredCredential {
                    salt: Bytes::from(credential.salt.clone()),
                    iterations: credential.iterations,
                    stored_key: Bytes::copy_from_slice(&credential.stored_key),
                    server_key: Bytes::copy_from_slice(&credential.server_key),
                },
            })
            .await
            .map(drop)
    }

    /// Deletes SCRAM user `name`. Needs `alter` on the cluster.
    pub async fn delete_user(&self, name: &str) -> Result<(), RequestError> {
        self.client
            .rpc(&UserDeleteRequest {
                name: name.to_owned(),
            })
            .await
            .map(drop)
    }

    /// SCRAM users and their iteration counts. Needs `describe` on the cluster.
    pub async fn list_users(&self) -> Result<Vec<(String, u32)>, RequestError> {
        self.client
            .rpc(&UserListRequest)
            .await
            .map(|answer| answer.users)
    }

    /// Sets `principal`'s client quota (`User:*` for the default); a quota without
    /// limits removes it. Needs `alter` on the cluster.
    pub async fn set_quota(&self, principal: &str, quota: Quota) -> Result<(), RequestError> {
        self.client
            .rpc(&QuotaSetRequest {
                principal: principal.to_owned(),
                quota,
            })
            .await
            .map(drop)
    }

    /// Every client quota, by principal. Needs `describe` on the cluster.
    pub async fn list_quotas(&self) -> Result<Vec<(String, Quota)>, RequestError> {
        self.client
            .rpc(&QuotaListRequest)
            .await
            .map(|answer| answer.quotas)
    }

    /// Closes the connection, as [`Client::close`].
    pub async fn close(&self) {
        self.client.close().await;
    }
}
