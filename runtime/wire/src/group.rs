//! Consumer group and committed offset messages.
//!
//! Layouts as in [`crate::message`]: strings `[length:2][utf8]`, arrays
//! `[count:4][elements]`, integers big-endian; an `i32` travels as its two's-complement
//! `u32`. A partition list is `[topic:string][partitions:array<4>]`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::api::ApiKey;
use crate::codec::{DecodeError, Reader, WriteExt};
use crate::message::{Empty, ResponseBody, Rpc};

/// Offsets one commit may carry.
pub const COMMIT_OFFSETS_MAX: usize = 10_000;
/// Members one group may have.
pub const GROUP_MEMBERS_MAX: usize = 1_000;
/// Longest committed-offset metadata string.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// `member_epoch` a member sends to leave its group.
pub const LEAVE_GROUP_EPOCH: i32 = -1;
/// `member_epoch` of a commit from outside any membership (a manually assigned consumer
/// or an admin tool); accepted only while the group has no members.
pub const NO_MEMBER_EPOCH: i32 = -1;

/// A topic and the partitions of it that someone holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<u32>,
}

fn put_assignment(buf: &mut BytesMut, assignment: &[TopicPartitions]) {
    buf.put_array_len(assignment.len());
    for tp in assignment {
        buf.put_string(&tp.topic);
        buf.put_array_len(tp.partitions.len());
        for p in &tp.partitions {
            buf.put_u32(*p);
        }
    }
}

fn read_assignment(r: &mut Reader<'_>) -> Result<Vec<TopicPartitions>, DecodeError> {
    let n = r.array_len("assignment", 10_000, 6)?;
    (0..n)
        .map(|_| {
            let topic = r.string("topic")?;
            let np = r.array_len("partitions", crate::message::PARTITIONS_MAX as usize, 4)?;
            let partitions = (0..np)
                .map(|_| r.u32("partition"))
                .collect::<Result<_, _>>()?;
            Ok(TopicPartitions { topic, partitions })
        })
        .collect()
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: u32,
    /// The offset of the next record to read.
    pub offset: u64,
    pub metadata: String,
}

/// `[group:string][member_id:string][member_epoch:i32][offsets:array<[topic:string][partition:4][offset:8][metadata:string]>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    pub group: String,
    /// Empty with [`NO_MEMBER_EPOCH`] for a commit from outside the membership.
    pub member_id: String,
    pub member_epoch: i32,
    pub offsets: Vec<CommittedOffset>,
}

impl Rpc for OffsetCommitRequest {
    const API: ApiKey = ApiKey::OffsetCommit;
    type Response = Empty;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.group);
        buf.put_string(&self.member_id);
        buf.put_u32(self.member_epoch as u32);
        buf.put_array_len(self.offsets.len());
        for o in &self.offsets {
            buf.put_string(&o.topic);
            buf.put_u32(o.partition);
            buf.put_u64(o.offset);
            buf.put_string(&o.metadata);
        }
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let group = r.string("group")?;
        let member_id = r.string("member_id")?;
        let member_epoch = r.u32("member_epoch")? as i32;
        let n = r.array_len("offsets", COMMIT_OFFSETS_MAX, 16)?;
        let mut offsets = Vec::with_capacity(n);
        for _ in 0..n {
            let topic = r.string("topic")?;
            let partition = r.u32("partition")?;
            let offset = r.u64("offset")?;
            let metadata = r.string("metadata")?;
            if metadata.len() > OFFSET_METADATA_BYTES_MAX {
                return Err(DecodeError::TooLong {
                    what: "metadata",
                    len: metadata.len(),
                    max: OFFSET_METADATA_BYTES_MAX,
                });
            }
            offsets.push(CommittedOffset {
                topic,
                partition,
                offset,
                metadata,
            });
        }
        r.finish()?;
        Ok(Self {
            group,
            member_id,
            member_epoch,
            offsets,
        })
    }
}

/// `[group:string][all:1][partitions:array<TopicPartitions>]`: `all` asks for every
/// offset the group committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchRequest {
    pub group: String,
    /// `None` for every committed offset of the group.
    pub partitions: Option<Vec<TopicPartitions>>,
}

impl Rpc for OffsetFetchRequest {
    const API: ApiKey = ApiKey::OffsetFetch;
    type Response = OffsetFetchResponse;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.group);
        buf.put_bool(self.partitions.is_none());
        put_assignment(buf, self.partitions.as_deref().unwrap_or_default());
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let group = r.string("group")?;
        let all = r.bool("all")?;
        let partitions = read_assignment(&mut r)?;
        r.finish()?;
        Ok(Self {
            group,
            partitions: if all { None } else { Some(partitions) },
        })
    }
}

/// `[offsets:array<[topic:string][partition:4][found:1][offset:8][metadata:string]>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchResponse {
    /// Per asked partition; `None` where the group committed nothing.
    pub offsets: Vec<(String, u32, Option<CommittedOffset>)>,
}

impl ResponseBody for OffsetFetchResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_array_len(self.offsets.len());
        for (topic, partition, committed) in &self.offsets {
            buf.put_string(topic);
            buf.put_u32(*partition);
            buf.put_bool(committed.is_some());
            buf.put_u64(committed.as_ref().map_or(0, |c| c.offset));
            buf.put_string(committed.as_ref().map_or("", |c| c.metadata.as_str()));
        }
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let n = r.array_len("offsets", COMMIT_OFFSETS_MAX * 10, 17)?;
        let mut offsets = Vec::with_capacity(n);
        for _ in 0..n {
            let topic = r.string("topic")?;
            let partition = r.u32("partition")?;
            let found = r.bool("found")?;
            let offset = r.u64("offset")?;
            let metadata = r.string("metadata")?;
            let committed = found.then(|| CommittedOffset {
                topic: topic.clone(),
                partition,
                offset,
                metadata,
            });
            offsets.push((topic, partition, committed));
        }
        r.finish()?;
        Ok(Self { offsets })
    }
}

/// `[group:string][member_id:string][member_epoch:i32][session_timeout_ms:4]`
/// `[has_subscription:1][subscription:array<string>][owned:array<TopicPartitions>]`
///
/// A new member sends an empty `member_id` and epoch 0; a leaving one sends
/// [`LEAVE_GROUP_EPOCH`]. `owned` lists what the member holds now, so the coordinator
/// hands a partition to another member only after its owner let it go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHeartbeatRequest {
    pub group: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub session_timeout_ms: u32,
    /// `None` when unchanged since the last heartbeat.
    pub subscription: Option<Vec<String>>,
    pub owned: Vec<TopicPartitions>,
}

impl Rpc for GroupHeartbeatRequest {
    const API: ApiKey = ApiKey::GroupHeartbeat;
    type Response = GroupHeartbeatResponse;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.group);
        buf.put_string(&self.member_id);
        buf.put_u32(self.member_epoch as u32);
        buf.put_u32(self.session_timeout_ms);
        buf.put_bool(self.subscription.is_some());
        let topics = self.subscription.as_deref().unwrap_or_default();
        buf.put_array_len(topics.len());
        for t in topics {
            buf.put_string(t);
        }
        put_assignment(buf, &self.owned);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let group = r.string("group")?;
        let member_id = r.string("member_id")?;
        let member_epoch = r.u32("member_epoch")? as i32;
        let session_timeout_ms = r.u32("session_timeout_ms")?;
        let has_subscription = r.bool("has_subscription")?;
        let n = r.array_len("subscription", 10_000, 2)?;
        let topics = (0..n)
            .map(|_| r.string("topic"))
            .collect::<Result<Vec<_>, _>>()?;
        let owned = read_assignment(&mut r)?;
        r.finish()?;
        Ok(Self {
            group,
            member_id,
            member_epoch,
            session_timeout_ms,
            subscription: has_subscription.then_some(topics),
            owned,
        })
    }
}

/// `[member_id:string][member_epoch:i32][heartbeat_interval_ms:4][assignment:array<TopicPartitions>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHeartbeatResponse {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: u32,
    /// What the member may own now.
    pub assignment: Vec<TopicPartitions>,
}

impl ResponseBody for GroupHeartbeatResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.member_id);
        buf.put_u32(self.member_epoch as u32);
        buf.put_u32(self.heartbeat_interval_ms);
        put_assignment(buf, &self.assignment);
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let out = Self {
            member_id: r.string("member_id")?,
            member_epoch: r.u32("member_epoch")? as i32,
            heartbeat_interval_ms: r.u32("heartbeat_interval_ms")?,
            assignment: read_assignment(&mut r)?,
        };
        r.finish()?;
        Ok(out)
    }
}

/// An empty body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListGroupsRequest;

impl Rpc for ListGroupsRequest {
    const API: ApiKey = ApiKey::ListGroups;
    type Response = ListGroupsResponse;
    fn encode_body(&self, _buf: &mut BytesMut) {}
    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        Reader::new(&body).finish()?;
        Ok(ListGroupsRequest)
    }
}

/// `[groups:array<[group:string][members:4]>]`: every group with members or
/// committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListGroupsResponse {
    pub groups: Vec<(String, u32)>,
}

impl ResponseBody for ListGroupsResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_array_len(self.groups.len());
        for (g, members) in &self.groups {
            buf.put_string(g);
            buf.put_u32(*members);
        }
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let n = r.array_len("groups", 1_000_000, 6)?;
        let groups = (0..n)
            .map(|_| Ok((r.string("group")?, r.u32("members")?)))
            .collect::<Result<_, DecodeError>>()?;
        r.finish()?;
        Ok(Self { groups })
    }
}

/// `[group:string]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupRequest {
    pub group: String,
}

impl Rpc for DescribeGroupRequest {
    const API: ApiKey = ApiKey::DescribeGroup;
    type Response = DescribeGroupResponse;
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.group);
    }
    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let out = Self {
            group: r.string("group")?,
        };
        r.finish()?;
        Ok(out)
    }
}

/// Kafka's DeleteGroups for one group: forgets its committed offsets. Refused with
/// `GROUP_NOT_EMPTY` while the group has active members.
///
/// `[group:string]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteGroupRequest {
    pub group: String,
}

impl Rpc for DeleteGroupRequest {
    const API: ApiKey = ApiKey::DeleteGroup;
    type Response = crate::message::Empty;
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.group);
    }
    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let out = Self {
            group: r.string("group")?,
        };
        r.finish()?;
        Ok(out)
    }
}

/// One member as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub member_epoch: i32,
    pub subscription: Vec<String>,
    /// What the coordinator assigned to it.
    pub assignment: Vec<TopicPartitions>,
}

/// `[group:string][group_epoch:4][members:array<[member_id:string][member_epoch:i32]`
/// `[subscription:array<string>][assignment:array<TopicPartitions>]>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupResponse {
    pub group: String,
    pub group_epoch: u32,
    pub members: Vec<GroupMember>,
}

impl ResponseBody for DescribeGroupResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.group);
        buf.put_u32(self.group_epoch);
        buf.put_array_len(self.members.len());
        for m in &self.members {
            buf.put_string(&m.member_id);
            buf.put_u32(m.member_epoch as u32);
            buf.put_array_len(m.subscription.len());
            for t in &m.subscription {
                buf.put_string(t);
            }
            put_assignment(buf, &m.assignment);
        }
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let group = r.string("group")?;
        let group_epoch = r.u32("group_epoch")?;
        let n = r.array_len("members", GROUP_MEMBERS_MAX, 14)?;
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let member_id = r.string("member_id")?;
            let member_epoch = r.u32("member_epoch")? as i32;
            let ns = r.array_len("subscription", 10_000, 2)?;
            let subscription = (0..ns)
                .map(|_| r.string("topic"))
                .collect::<Result<_, _>>()?;
            let assignment = read_assignment(&mut r)?;
            members.push(GroupMember {
                member_id,
                member_epoch,
                subscription,
                assignment,
            });
        }
        r.finish()?;
        Ok(Self {
            group,
            group_epoch,
            members,
        })
    }
}
