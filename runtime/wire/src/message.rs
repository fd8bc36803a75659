//! Request and response bodies. Each request type names its API and its response type
//! through [`Rpc`], so a client call is typed end to end.
//!
//! Field layouts are written above each type; strings are `[length:2][utf8]`, arrays
//! `[count:4][elements]`, byte fields `[length:4][bytes]`, integers big-endian.

use bytes::{BufMut, Bytes, BytesMut};

use crate::api::ApiKey;
use crate::batch::BATCH_BYTES_MAX;
use crate::codec::{DecodeError, Reader, WriteExt, take_bytes, take_bytes_mut};
use crate::frame::{FRAME_BYTES_MAX, RequestFrame, begin_request, begin_response, seal_frame};

/// The most bytes one fetch may ask for; larger asks are clamped by the broker.
pub const FETCH_BYTES_MAX: u32 = 50 * 1024 * 1024;
/// The longest a fetch may wait for `min_bytes` to arrive.
pub const FETCH_WAIT_MS_MAX: u32 = 60_000;
/// The longest a produce may wait for its acknowledgement.
pub const PRODUCE_TIMEOUT_MS_MAX: u32 = 300_000;
/// Partitions one topic may have.
pub const PARTITIONS_MAX: u32 = 10_000;
/// Config entries one topic may carry.
pub const TOPIC_CONFIGS_MAX: usize = 64;

const _: () = assert!((FETCH_BYTES_MAX as usize) + 64 < FRAME_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_MAX + 1024 < FRAME_BYTES_MAX);

/// A request body: its API, how it encodes, and what it gets back.
pub trait Rpc: Sized {
    const API: ApiKey;
    type Response: ResponseBody;
    fn encode_body(&self, buf: &mut BytesMut);
    fn decode_body(body: BytesMut) -> Result<Self, DecodeError>;

    /// The whole request frame, length prefix included.
    fn encode_frame(&self) -> Bytes {
        let mut buf = begin_request(Self::API, Self::API.versions().1, 64);
        self.encode_body(&mut buf);
        seal_frame(&mut buf, 0);
        buf.freeze()
    }
}

/// A successful response body.
pub trait ResponseBody: Sized {
    fn encode_body(&self, buf: &mut BytesMut);
    fn decode_body(body: Bytes) -> Result<Self, DecodeError>;

    /// The whole response frame, length prefix and success status included.
    fn encode_frame(&self) -> Bytes {
        let mut buf = begin_response(64);
        self.encode_body(&mut buf);
        seal_frame(&mut buf, 0);
        buf.freeze()
    }
}

/// How much acknowledgement a producer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Acks {
    /// No answer at all: the request travels on a unidirectional stream.
    None,
    /// Answer once the leader appended the batch.
    Leader,
    /// Answer once the batch is durable per the flush policy and replicated to the ISR.
    #[default]
    All,
}

impl Acks {
    pub const fn code(self) -> u8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            2 => Some(Acks::All),
            _ => None,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" | "0" => Ok(Acks::None),
            "leader" | "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(format!(
                "unknown acks `{other}`: expected none, leader or all"
            )),
        }
    }
}

/// `[topic:string][partition:4][acks:1][timeout_ms:4][batch:bytes]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub topic: String,
    pub partition: u32,
    pub acks: Acks,
    pub timeout_ms: u32,
    /// One record batch; mutable so the broker stamps offsets in place.
    pub batch: BytesMut,
}

impl ProduceRequest {
    /// The frame up to and including the batch's length, so a client can send the
    /// batch after it as a separate chunk instead of copying it in.
    pub fn encode_head(
        topic: &str,
        partition: u32,
        acks: Acks,
        timeout_ms: u32,
        batch_len: usize,
    ) -> Bytes {
        let mut buf = begin_request(
            ApiKey::Produce,
            ApiKey::Produce.versions().1,
            32 + topic.len(),
        );
        buf.put_string(topic);
        buf.put_u32(partition);
        buf.put_u8(acks.code());
        buf.put_u32(timeout_ms);
        buf.put_u32(batch_len as u32);
        seal_frame(&mut buf, batch_len);
        buf.freeze()
    }
}

impl Rpc for ProduceRequest {
    const API: ApiKey = ApiKey::Produce;
    type Response = ProduceResponse;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.topic);
        buf.put_u32(self.partition);
        buf.put_u8(self.acks.code());
        buf.put_u32(self.timeout_ms);
        buf.put_u32(self.batch.len() as u32);
        buf.put_slice(&self.batch);
    }

    fn decode_body(mut body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let topic = r.string("topic")?;
        let partition = r.u32("partition")?;
        let acks_code = r.u8("acks")?;
        let acks = Acks::from_code(acks_code).ok_or(DecodeError::InvalidValue {
            what: "acks",
            value: acks_code.into(),
        })?;
        let timeout_ms = r.u32("timeout_ms")?;
        let consumed = r.consumed();
        let _ = body.split_to(consumed);
        let batch = take_bytes_mut(&mut body, "batch", BATCH_BYTES_MAX)?;
        if !body.is_empty() {
            return Err(DecodeError::TrailingBytes(body.len()));
        }
        Ok(Self {
            topic,
            partition,
            acks,
            timeout_ms,
            batch,
        })
    }
}

/// `[base_offset:8][log_append_time:8][log_start_offset:8]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceResponse {
    /// The offset of the batch's first record.
    pub base_offset: u64,
    /// Broker time at append, milliseconds since the Unix epoch.
    pub log_append_time: i64,
    pub log_start_offset: u64,
    /// How long the client should send nothing more to this broker: it is over its
    /// client quota (0 when not). The broker holds back its next requests that long
    /// anyway. Version 1 on.
    pub throttle_time_ms: u32,
}

/// The version of Produce whose answer carries `throttle_time_ms`.
pub const PRODUCE_THROTTLE_VERSION: u16 = 1;
/// The version of Fetch whose answer carries `throttle_time_ms`.
pub const FETCH_THROTTLE_VERSION: u16 = 2;

impl ProduceResponse {
    /// The answer frame for a request of `version`: without the throttle time before
    /// version 1, for clients of earlier builds.
    pub fn encode_frame_for(&self, version: u16) -> Bytes {
        let mut buf = begin_response(32);
        buf.put_u64(self.base_offset);
        buf.put_i64(self.log_append_time);
        buf.put_u64(self.log_start_offset);
        if version >= PRODUCE_THROTTLE_VERSION {
            buf.put_u32(self.throttle_time_ms);
        }
        seal_frame(&mut buf, 0);
        buf.freeze()
    }
}

/// `[base_offset:8][log_append_time:8][log_start_offset:8][throttle_time_ms:4]` (the
/// layout of the current version; see [`ProduceResponse::encode_frame_for`]).
impl ResponseBody for ProduceResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u64(self.base_offset);
        buf.put_i64(self.log_append_time);
        buf.put_u64(self.log_start_offset);
        buf.put_u32(self.throttle_time_ms);
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let out = Self {
            base_offset: r.u64("base_offset")?,
            log_append_time: r.i64("log_append_time")?,
            log_start_offset: r.u64("log_start_offset")?,
            throttle_time_ms: r.u32("throttle_time_ms")?,
        };
        r.finish()?;
        Ok(out)
    }
}

/// `[topic:string][partition:4][offset:8][max_wait_ms:4][min_bytes:4][max_bytes:4]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub topic: String,
    pub partition: u32,
    /// The first offset wanted; the answer starts with the batch holding it.
    pub offset: u64,
    /// How long the broker may hold the request waiting for `min_bytes`.
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    /// A soft cap: the first batch is sent whole even if larger, so consumers progress.
    pub max_bytes: u32,
    /// A registered plugin to run over this fetch's batches, after the topic's own
    /// fetch-stage plugins (version 1).
    pub plugin: Option<crate::plugin::PluginCall>,
}

impl FetchRequest {
    /// Decodes a body of the given version: v0 ends after `max_bytes`; v1 adds
    /// `[plugin:string][params:array<[key:string][value:string]>]`, an empty plugin
    /// name meaning none.
    pub fn decode_versioned(body: BytesMut, version: u16) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let mut out = Self {
            topic: r.string("topic")?,
            partition: r.u32("partition")?,
            offset: r.u64("offset")?,
            max_wait_ms: r.u32("max_wait_ms")?,
            min_bytes: r.u32("min_bytes")?,
            max_bytes: r.u32("max_bytes")?,
            plugin: None,
        };
        if version >= 1 {
            let name = r.string("plugin")?;
            let params = crate::plugin::read_params(&mut r)?;
            if !name.is_empty() {
                out.plugin = Some(crate::plugin::PluginCall { name, params });
            }
        }
        r.finish()?;
        Ok(out)
    }
}

impl Rpc for FetchRequest {
    const API: ApiKey = ApiKey::Fetch;
    type Response = FetchResponse;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.topic);
        buf.put_u32(self.partition);
        buf.put_u64(self.offset);
        buf.put_u32(self.max_wait_ms);
        buf.put_u32(self.min_bytes);
        buf.put_u32(self.max_bytes);
        let (name, params) = match &self.plugin {
            Some(call) => (call.name.as_str(), call.params.as_slice()),
            None => ("", &[][..]),
        };
        buf.put_string(name);
        crate::plugin::put_params(buf, params);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        Self::decode_versioned(body, ApiKey::Fetch.versions().1)
    }
}

/// `[high_watermark:8][log_start_offset:8][log_end_offset:8][throttle_time_ms:4][batches:bytes]`
/// (version 2; earlier versions have no `throttle_time_ms`).
///
/// `batches` are stored batches back to back, exactly as the log holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    /// As in [`ProduceResponse::throttle_time_ms`].
    pub throttle_time_ms: u32,
    pub batches: Bytes,
}

impl FetchResponse {
    /// The frame up to the batches, for a request of `version`, so the broker sends
    /// stored batches after it as separate chunks, never copying them.
    pub fn encode_head(
        version: u16,
        high_watermark: u64,
        log_start_offset: u64,
        log_end_offset: u64,
        throttle_time_ms: u32,
        batches_len: usize,
    ) -> Bytes {
        let mut buf = begin_response(32);
        buf.put_u64(high_watermark);
        buf.put_u64(log_start_offset);
        buf.put_u64(log_end_offset);
        if version >= FETCH_THROTTLE_VERSION {
            buf.put_u32(throttle_time_ms);
        }
        buf.put_u32(batches_len as u32);
        seal_frame(&mut buf, batches_len);
        buf.freeze()
    }
}

impl ResponseBody for FetchResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u64(self.high_watermark);
        buf.put_u64(self.log_start_offset);
        buf.put_u64(self.log_end_offset);
        buf.put_u32(self.throttle_time_ms);
        buf.put_u32(self.batches.len() as u32);
        buf.put_slice(&self.batches);
    }

    fn decode_body(mut body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let high_watermark = r.u64("high_watermark")?;
        let log_start_offset = r.u64("log_start_offset")?;
        let log_end_offset = r.u64("log_end_offset")?;
        let throttle_time_ms = r.u32("throttle_time_ms")?;
        let consumed = r.consumed();
        let _ = body.split_to(consumed);
        let batches = take_bytes(&mut body, "batches", FRAME_BYTES_MAX)?;
        if !body.is_empty() {
            return Err(DecodeError::TrailingBytes(body.len()));
        }
        Ok(Self {
            high_watermark,
            log_start_offset,
            log_end_offset,
            throttle_time_ms,
            batches,
        })
    }
}

/// Which offset a [`ListOffsetsRequest`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset: the offset the next record will get.
    Latest,
    /// The first record whose timestamp is at or after this, in milliseconds.
    Timestamp(i64),
}

/// `[topic:string][partition:4][spec:1][timestamp:8]` (spec 0 earliest, 1 latest,
/// 2 timestamp; the timestamp is 0 unless spec is 2)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    pub topic: String,
    pub partition: u32,
    pub spec: OffsetSpec,
}

impl Rpc for ListOffsetsRequest {
    const API: ApiKey = ApiKey::ListOffsets;
    type Response = ListOffsetsResponse;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.topic);
        buf.put_u32(self.partition);
        let (kind, ts) = match self.spec {
            OffsetSpec::Earliest => (0, 0),
            OffsetSpec::Latest => (1, 0),
            OffsetSpec::Timestamp(ts) => (2, ts),
        };
        buf.put_u8(kind);
        buf.put_i64(ts);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let topic = r.string("topic")?;
        let partition = r.u32("partition")?;
        let kind = r.u8("spec")?;
        let ts = r.i64("timestamp")?;
        let spec = match kind {
            0 => OffsetSpec::Earliest,
            1 => OffsetSpec::Latest,
            2 => OffsetSpec::Timestamp(ts),
            other => {
                return Err(DecodeError::InvalidValue {
                    what: "spec",
                    value: other.into(),
                });
            }
        };
        r.finish()?;
        Ok(Self {
            topic,
            partition,
            spec,
        })
    }
}

/// `[found:1][offset:8][log_start_offset:8][log_end_offset:8]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOffsetsResponse {
    /// `None` when a timestamp lookup finds no record at or after the timestamp.
    pub offset: Option<u64>,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
}

impl ResponseBody for ListOffsetsResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_bool(self.offset.is_some());
        buf.put_u64(self.offset.unwrap_or(0));
        buf.put_u64(self.log_start_offset);
        buf.put_u64(self.log_end_offset);
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let found = r.bool("found")?;
        let offset = r.u64("offset")?;
        let out = Self {
            offset: found.then_some(offset),
            log_start_offset: r.u64("log_start_offset")?,
            log_end_offset: r.u64("log_end_offset")?,
        };
        r.finish()?;
        Ok(out)
    }
}

/// `[all:1][topics:array<string>]`: `all` = 1 asks for every topic and ignores the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRequest {
    /// `None` for every topic.
    pub topics: Option<Vec<String>>,
}

impl Rpc for MetadataRequest {
    const API: ApiKey = ApiKey::Metadata;
    type Response = MetadataResponse;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_bool(self.topics.is_none());
        let topics = self.topics.as_deref().unwrap_or_default();
        buf.put_array_len(topics.len());
        for t in topics {
            buf.put_string(t);
        }
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let all = r.bool("all")?;
        let n = r.array_len("topics", 10_000, 2)?;
        let mut topics = Vec::with_capacity(n);
        for _ in 0..n {
            topics.push(r.string("topic")?);
        }
        r.finish()?;
        Ok(Self {
            topics: if all { None } else { Some(topics) },
        })
    }
}

/// `[node_id:4][host:string][port:2]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: u32,
    pub host: String,
    pub port: u16,
}

/// `[partition:4][leader:4][leader_epoch:4][replicas:array<4>][isr:array<4>]`
/// `[log_start_offset:8][high_watermark:8][log_end_offset:8]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    pub leader: u32,
    pub leader_epoch: u32,
    pub replicas: Vec<u32>,
    pub isr: Vec<u32>,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub log_end_offset: u64,
}

/// `[name:string][partitions:array<PartitionInfo>][configs:array<[key:string][value:string]>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
    /// The topic's explicit configuration, sorted by key.
    pub configs: Vec<(String, String)>,
}

/// `[controller:4][brokers:array<BrokerInfo>][topics:array<TopicInfo>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataResponse {
    pub controller: u32,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicInfo>,
}

fn put_u32_array(buf: &mut BytesMut, items: &[u32]) {
    buf.put_array_len(items.len());
    for i in items {
        buf.put_u32(*i);
    }
}

fn read_u32_array(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<u32>, DecodeError> {
    let n = r.array_len(what, 1_000, 4)?;
    (0..n).map(|_| r.u32(what)).collect()
}

fn put_configs(buf: &mut BytesMut, configs: &[(String, String)]) {
    buf.put_array_len(configs.len());
    for (k, v) in configs {
        buf.put_string(k);
        buf.put_string(v);
    }
}

fn read_configs(r: &mut Reader<'_>) -> Result<Vec<(String, String)>, DecodeError> {
    let n = r.array_len("configs", TOPIC_CONFIGS_MAX, 4)?;
    (0..n)
        .map(|_| Ok((r.string("config key")?, r.string("config value")?)))
        .collect()
}

impl ResponseBody for MetadataResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u32(self.controller);
        buf.put_array_len(self.brokers.len());
        for b in &self.brokers {
            buf.put_u32(b.node_id);
            buf.put_string(&b.host);
            buf.put_u16(b.port);
        }
        buf.put_array_len(self.topics.len());
        for t in &self.topics {
            buf.put_string(&t.name);
            buf.put_array_len(t.partitions.len());
            for p in &t.partitions {
                buf.put_u32(p.partition);
                buf.put_u32(p.leader);
                buf.put_u32(p.leader_epoch);
                put_u32_array(buf, &p.replicas);
                put_u32_array(buf, &p.isr);
                buf.put_u64(p.log_start_offset);
                buf.put_u64(p.high_watermark);
                buf.put_u64(p.log_end_offset);
            }
            put_configs(buf, &t.configs);
        }
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let controller = r.u32("controller")?;
        let n = r.array_len("brokers", 10_000, 8)?;
        let mut brokers = Vec::with_capacity(n);
        for _ in 0..n {
            brokers.push(BrokerInfo {
                node_id: r.u32("node_id")?,
                host: r.string("host")?,
                port: r.u16("port")?,
            });
        }
        let n = r.array_len("topics", 100_000, 10)?;
        let mut topics = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.string("topic")?;
            let np = r.array_len("partitions", PARTITIONS_MAX as usize, 44)?;
            let mut partitions = Vec::with_capacity(np);
            for _ in 0..np {
                partitions.push(PartitionInfo {
                    partition: r.u32("partition")?,
                    leader: r.u32("leader")?,
                    leader_epoch: r.u32("leader_epoch")?,
                    replicas: read_u32_array(&mut r, "replicas")?,
                    isr: read_u32_array(&mut r, "isr")?,
                    log_start_offset: r.u64("log_start_offset")?,
                    high_watermark: r.u64("high_watermark")?,
                    log_end_offset: r.u64("log_end_offset")?,
                });
            }
            let configs = read_configs(&mut r)?;
            topics.push(TopicInfo {
                name,
                partitions,
                configs,
            });
        }
        r.finish()?;
        Ok(Self {
            controller,
            brokers,
            topics,
        })
    }
}

/// `[name:string][partitions:4][replication_factor:2][configs:array<[key:string][value:string]>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicRequest {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub configs: Vec<(String, String)>,
}

impl Rpc for CreateTopicRequest {
    const API: ApiKey = ApiKey::CreateTopic;
    type Response = Empty;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.name);
        buf.put_u32(self.partitions);
        buf.put_u16(self.replication_factor);
        put_configs(buf, &self.configs);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let out = Self {
            name: r.string("name")?,
            partitions: r.u32("partitions")?,
            replication_factor: r.u16("replication_factor")?,
            configs: read_configs(&mut r)?,
        };
        r.finish()?;
        Ok(out)
    }
}

/// `[name:string]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicRequest {
    pub name: String,
}

impl Rpc for DeleteTopicRequest {
    const API: ApiKey = ApiKey::DeleteTopic;
    type Response = Empty;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.name);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let out = Self {
            name: r.string("name")?,
        };
        r.finish()?;
        Ok(out)
    }
}

/// Kafka's IncrementalAlterConfigs for one topic: sets the `set` entries and removes
/// the `delete` keys (back to the broker's default), all or none. Keys and values
/// follow the rules of [`CreateTopicRequest`]'s configs.
///
/// `[name:string][set:array<[key:string][value:string]>][delete:array<key:string>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterTopicConfigsRequest {
    pub name: String,
    pub set: Vec<(String, String)>,
    pub delete: Vec<String>,
}

impl Rpc for AlterTopicConfigsRequest {
    const API: ApiKey = ApiKey::AlterTopicConfigs;
    type Response = Empty;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.name);
        put_configs(buf, &self.set);
        buf.put_array_len(self.delete.len());
        for key in &self.delete {
            buf.put_string(key);
        }
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let name = r.string("name")?;
        let set = read_configs(&mut r)?;
        let n = r.array_len("delete", TOPIC_CONFIGS_MAX, 2)?;
        let delete = (0..n)
            .map(|_| r.string("config key"))
            .collect::<Result<_, _>>()?;
        r.finish()?;
        Ok(Self { name, set, delete })
    }
}

/// Kafka's CreatePartitions: grows a topic to `partitions` in total (never shrinks it).
/// New partitions get replicas like a new topic's, with the topic's replication factor.
///
/// `[name:string][partitions:4]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePartitionsRequest {
    pub name: String,
    /// The partition count the topic should have afterwards.
    pub partitions: u32,
}

impl Rpc for CreatePartitionsRequest {
    const API: ApiKey = ApiKey::CreatePartitions;
    type Response = Empty;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.name);
        buf.put_u32(self.partitions);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let out = Self {
            name: r.string("name")?,
            partitions: r.u32("partitions")?,
        };
        r.finish()?;
        Ok(out)
    }
}

/// An empty body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Empty;

impl ResponseBody for Empty {
    fn encode_body(&self, _buf: &mut BytesMut) {}
    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        Reader::new(&body).finish()?;
        Ok(Empty)
    }
}

/// An empty body: asks which APIs and versions the broker speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApiVersionsRequest;

impl Rpc for ApiVersionsRequest {
    const API: ApiKey = ApiKey::ApiVersions;
    type Response = ApiVersionsResponse;
    fn encode_body(&self, _buf: &mut BytesMut) {}
    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        Reader::new(&body).finish()?;
        Ok(ApiVersionsRequest)
    }
}

/// `[apis:array<[api_key:2][min_version:2][max_version:2]>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionsResponse {
    pub apis: Vec<(u16, u16, u16)>,
}

impl ApiVersionsResponse {
    /// What this build speaks.
    pub fn current() -> Self {
        Self {
            apis: ApiKey::ALL
                .iter()
                .map(|k| {
                    let (min, max) = k.versions();
                    (k.code(), min, max)
                })
                .collect(),
        }
    }
}

impl ResponseBody for ApiVersionsResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_array_len(self.apis.len());
        for (k, min, max) in &self.apis {
            buf.put_u16(*k);
            buf.put_u16(*min);
            buf.put_u16(*max);
        }
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let n = r.array_len("apis", 1_000, 6)?;
        let apis = (0..n)
            .map(|_| {
                Ok((
                    r.u16("api_key")?,
                    r.u16("min_version")?,
                    r.u16("max_version")?,
                ))
            })
            .collect::<Result<_, DecodeError>>()?;
        r.finish()?;
        Ok(Self { apis })
    }
}

/// An empty body: asks the broker for a new idempotent producer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InitProducerIdRequest;

impl Rpc for InitProducerIdRequest {
    const API: ApiKey = ApiKey::InitProducerId;
    type Response = InitProducerIdResponse;
    fn encode_body(&self, _buf: &mut BytesMut) {}
    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        Reader::new(&body).finish()?;
        Ok(InitProducerIdRequest)
    }
}

/// `[producer_id:8][producer_epoch:2]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitProducerIdResponse {
    pub producer_id: u64,
    pub producer_epoch: u16,
}

impl ResponseBody for InitProducerIdResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u64(self.producer_id);
        buf.put_u16(self.producer_epoch);
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let out = Self {
            producer_id: r.u64("producer_id")?,
            producer_epoch: r.u16("producer_epoch")?,
        };
        r.finish()?;
        Ok(out)
    }
}

/// Any request, as the broker sees it.
#[derive(Debug)]
pub enum Request {
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    Metadata(MetadataRequest),
    CreateTopic(CreateTopicRequest),
    DeleteTopic(DeleteTopicRequest),
    ApiVersions(ApiVersionsRequest),
    InitProducerId(InitProducerIdRequest),
    OffsetCommit(crate::group::OffsetCommitRequest),
    OffsetFetch(crate::group::OffsetFetchRequest),
    GroupHeartbeat(crate::group::GroupHeartbeatRequest),
    ListGroups(crate::group::ListGroupsRequest),
    DescribeGroup(crate::group::DescribeGroupRequest),
    PluginUpload(crate::plugin::PluginUploadRequest),
    PluginList(crate::plugin::PluginListRequest),
    PluginAttach(crate::plugin::PluginAttachRequest),
    PluginDetach(crate::plugin::PluginDetachRequest),
    ControllerRpc(crate::cluster::ControllerRpcRequest),
    ClusterStatus(crate::cluster::ClusterStatusRequest),
    ReplicaFetch(crate::cluster::ReplicaFetchRequest),
    PluginModule(crate::plugin::PluginModuleRequest),
    PluginDelete(crate::plugin::PluginDeleteRequest),
    AclCreate(crate::acl::AclCreateRequest),
    AclDelete(crate::acl::AclDeleteRequest),
    AclDescribe(crate::acl::AclDescribeRequest),
    SaslAuthenticate(crate::sasl::SaslAuthenticateRequest),
    UserUpsert(crate::sasl::UserUpsertRequest),
    UserDelete(crate::sasl::UserDeleteRequest),
    UserList(crate::sasl::UserListRequest),
    QuotaSet(crate::quota::QuotaSetRequest),
    QuotaList(crate::quota::QuotaListRequest),
    AlterTopicConfigs(AlterTopicConfigsRequest),
    CreatePartitions(CreatePartitionsRequest),
    DeleteGroup(crate::group::DeleteGroupRequest),
    JoinCa(crate::join::JoinCaRequest),
    JoinCluster(crate::join::JoinClusterRequest),
}

impl Request {
    /// Decodes a request frame, refusing unknown APIs and unsupported versions.
    pub fn decode(frame: RequestFrame) -> Result<Self, DecodeError> {
        let api = ApiKey::from_code(frame.api_key).ok_or(DecodeError::UnknownApi(frame.api_key))?;
        if !api.supports(frame.api_version) {
            return Err(DecodeError::UnsupportedVersion {
                api: frame.api_key,
                version: frame.api_version,
            });
        }
        let body = frame.body;
        Ok(match api {
            ApiKey::Produce => Request::Produce(ProduceRequest::decode_body(body)?),
            ApiKey::Fetch => {
                Request::Fetch(FetchRequest::decode_versioned(body, frame.api_version)?)
            }
            ApiKey::ListOffsets => Request::ListOffsets(ListOffsetsRequest::decode_body(body)?),
            ApiKey::Metadata => Request::Metadata(MetadataRequest::decode_body(body)?),
            ApiKey::CreateTopic => Request::CreateTopic(CreateTopicRequest::decode_body(body)?),
            ApiKey::DeleteTopic => Request::DeleteTopic(DeleteTopicRequest::decode_body(body)?),
            ApiKey::ApiVersions => Request::ApiVersions(ApiVersionsRequest::decode_body(body)?),
            ApiKey::InitProducerId => {
                Request::InitProducerId(InitProducerIdRequest::decode_body(body)?)
            }
            ApiKey::OffsetCommit => {
                Request::OffsetCommit(crate::group::OffsetCommitRequest::decode_body(body)?)
            }
            ApiKey::OffsetFetch => {
                Request::OffsetFetch(crate::group::OffsetFetchRequest::decode_body(body)?)
            }
            ApiKey::GroupHeartbeat => {
                Request::GroupHeartbeat(crate::group::GroupHeartbeatRequest::decode_body(body)?)
            }
            ApiKey::ListGroups => {
                Request::ListGroups(crate::group::ListGroupsRequest::decode_body(body)?)
            }
            ApiKey::DescribeGroup => {
                Request::DescribeGroup(crate::group::DescribeGroupRequest::decode_body(body)?)
            }
            ApiKey::PluginUpload => {
                Request::PluginUpload(crate::plugin::PluginUploadRequest::decode_body(body)?)
            }
            ApiKey::PluginList => {
                Request::PluginList(crate::plugin::PluginListRequest::decode_body(body)?)
            }
            ApiKey::PluginAttach => {
                Request::PluginAttach(crate::plugin::PluginAttachRequest::decode_body(body)?)
            }
            ApiKey::PluginDetach => {
                Request::PluginDetach(crate::plugin::PluginDetachRequest::decode_body(body)?)
            }
            ApiKey::ControllerRpc => {
                Request::ControllerRpc(crate::cluster::ControllerRpcRequest::decode_body(body)?)
            }
            ApiKey::ClusterStatus => {
                Request::ClusterStatus(crate::cluster::ClusterStatusRequest::decode_body(body)?)
            }
            ApiKey::ReplicaFetch => {
                Request::ReplicaFetch(crate::cluster::ReplicaFetchRequest::decode_body(body)?)
            }
            ApiKey::PluginModule => {
                Request::PluginModule(crate::plugin::PluginModuleRequest::decode_body(body)?)
            }
            ApiKey::PluginDelete => {
                Request::PluginDelete(crate::plugin::PluginDeleteRequest::decode_body(body)?)
            }
            ApiKey::AclCreate => {
                Request::AclCreate(crate::acl::AclCreateRequest::decode_body(body)?)
            }
            ApiKey::AclDelete => {
                Request::AclDelete(crate::acl::AclDeleteRequest::decode_body(body)?)
            }
            ApiKey::AclDescribe => {
                Request::AclDescribe(crate::acl::AclDescribeRequest::decode_body(body)?)
            }
            ApiKey::SaslAuthenticate => {
                Request::SaslAuthenticate(crate::sasl::SaslAuthenticateRequest::decode_body(body)?)
            }
            ApiKey::UserUpsert => {
                Request::UserUpsert(crate::sasl::UserUpsertRequest::decode_body(body)?)
            }
            ApiKey::UserDelete => {
                Request::UserDelete(crate::sasl::UserDeleteRequest::decode_body(body)?)
            }
            ApiKey::UserList => Request::UserList(crate::sasl::UserListRequest::decode_body(body)?),
            ApiKey::QuotaSet => {
                Request::QuotaSet(crate::quota::QuotaSetRequest::decode_body(body)?)
            }
            ApiKey::QuotaList => {
                Request::QuotaList(crate::quota::QuotaListRequest::decode_body(body)?)
            }
            ApiKey::AlterTopicConfigs => {
                Request::AlterTopicConfigs(AlterTopicConfigsRequest::decode_body(body)?)
            }
            ApiKey::CreatePartitions => {
                Request::CreatePartitions(CreatePartitionsRequest::decode_body(body)?)
            }
            ApiKey::DeleteGroup => {
                Request::DeleteGroup(crate::group::DeleteGroupRequest::decode_body(body)?)
            }
            ApiKey::JoinCa => Request::JoinCa(crate::join::JoinCaRequest::decode_body(body)?),
            ApiKey::JoinCluster => {
                Request::JoinCluster(crate::join::JoinClusterRequest::decode_body(body)?)
            }
        })
    }

    pub fn api_key(&self) -> ApiKey {
        match self {
            Request::Produce(_) => ApiKey::Produce,
            Request::Fetch(_) => ApiKey::Fetch,
            Request::ListOffsets(_) => ApiKey::ListOffsets,
            Request::Metadata(_) => ApiKey::Metadata,
            Request::CreateTopic(_) => ApiKey::CreateTopic,
            Request::DeleteTopic(_) => ApiKey::DeleteTopic,
            Request::ApiVersions(_) => ApiKey::ApiVersions,
            Request::InitProducerId(_) => ApiKey::InitProducerId,
            Request::OffsetCommit(_) => ApiKey::OffsetCommit,
            Request::OffsetFetch(_) => ApiKey::OffsetFetch,
            Request::GroupHeartbeat(_) => ApiKey::GroupHeartbeat,
            Request::ListGroups(_) => ApiKey::ListGroups,
            Request::DescribeGroup(_) => ApiKey::DescribeGroup,
            Request::PluginUpload(_) => ApiKey::PluginUpload,
            Request::PluginList(_) => ApiKey::PluginList,
            Request::PluginAttach(_) => ApiKey::PluginAttach,
            Request::PluginDetach(_) => ApiKey::PluginDetach,
            Request::ControllerRpc(_) => ApiKey::ControllerRpc,
            Request::ClusterStatus(_) => ApiKey::ClusterStatus,
            Request::ReplicaFetch(_) => ApiKey::ReplicaFetch,
            Request::PluginModule(_) => ApiKey::PluginModule,
            Request::PluginDelete(_) => ApiKey::PluginDelete,
            Request::AclCreate(_) => ApiKey::AclCreate,
            Request::AclDelete(_) => ApiKey::AclDelete,
            Request::AclDescribe(_) => ApiKey::AclDescribe,
            Request::SaslAuthenticate(_) => ApiKey::SaslAuthenticate,
            Request::UserUpsert(_) => ApiKey::UserUpsert,
            Request::UserDelete(_) => ApiKey::UserDelete,
            Request::UserList(_) => ApiKey::UserList,
            Request::QuotaSet(_) => ApiKey::QuotaSet,
            Request::QuotaList(_) => ApiKey::QuotaList,
            Request::AlterTopicConfigs(_) => ApiKey::AlterTopicConfigs,
            Request::CreatePartitions(_) => ApiKey::CreatePartitions,
            Request::DeleteGroup(_) => ApiKey::DeleteGroup,
            Request::JoinCa(_) => ApiKey::JoinCa,
            Request::JoinCluster(_) => ApiKey::JoinCluster,
        }
    }
}
