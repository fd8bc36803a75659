//! Committed consumer offsets, kept in the internal topic `__consumer_offsets` so they
//! are as durable as any data (and, with replication, fail over like it).
//!
//! Each commit appends one batch: a record per offset, keyed by (group, topic,
//! partition). The latest record per key wins; the table in memory is rebuilt by
//! reading the topic at start. The topic keeps its records for the broker's retention
//! (7 days by default), like Kafka's `offsets.retention.minutes`: a group that has not
//! committed for longer loses its offsets.
//!
//! ```text
//! key:   [version:1][group:string][topic:string][partition:4]
//! value: [offset:8][metadata:string]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::{BufMut, Bytes, BytesMut};
use quiver_wire::batch::{BatchBuilder, BatchSplitter, ProducerStamp, Record, decode_records};
use quiver_wire::codec::{Reader, WriteExt};
use quiver_wire::group::CommittedOffset;

use crate::partition::Partition;

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
const RECORD_VERSION: u8 = 1;
/// Bytes read per step while replaying the topic at start.
const REPLAY_READ_BYTES: usize = 16 * 1024 * 1024;

/// Why the committed offsets could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("cannot read {OFFSETS_TOPIC}: {0}")]
    Read(String),
}

type Key = (String, String, u32);

/// The committed offsets of every group.
#[derive(Debug, Default)]
pub struct OffsetStore {
    committed: Mutex<HashMap<Key, CommittedOffset>>,
}

fn encode_key(group: &str, topic: &str, partition: u32) -> Bytes {
    let mut key = BytesMut::with_capacity(8 + group.len() + topic.len());
    key.put_u8(RECORD_VERSION);
    key.put_string(group);
    key.put_string(topic);
    key.put_u32(partition);
    key.freeze()
}

fn decode_entry(key: &[u8], value: &[u8]) -> Option<(Key, CommittedOffset)> {
    let mut k = Reader::new(key);
    if k.u8("version").ok()? != RECORD_VERSION {
        return None;
    }
    let group = k.string("group").ok()?;
    let topic = k.string("topic").ok()?;
    let partition = k.u32("partition").ok()?;
    let mut v = Reader::new(value);
    let offset = v.u64("offset").ok()?;
    let metadata = v.string("metadata").ok()?;
    Some((
        (group, topic.clone(), partition),
        CommittedOffset {
            topic,
            partition,
            offset,
            metadata,
        },
    ))
}

impl OffsetStore {
    /// Rebuilds the table from the internal topic's partition.
    pub fn load(partition: &Partition) -> Result<Self, OffsetsError> {
        let store = Self::default();
        let log = partition.log();
        let (mut offset, end) = (log.log_start_offset(), partition.high_watermark());
        let mut table = HashMap::new();
        while offset < end {
            let slice = log
                .read(offset, REPLAY_READ_BYTES, end)
                .map_err(|e| OffsetsError::Read(e.to_string()))?;
            if slice.batches.is_empty() {
                break;
            }
            for batch in slice
                .batches
                .iter()
                .flat_map(|b| BatchSplitter::new(b.clone()))
            {
                let batch = batch.map_err(|e| OffsetsError::Read(e.to_string()))?;
                for record in
                    decode_records(&batch).map_err(|e| OffsetsError::Read(e.to_string()))?
                {
                    offset = record.offset + 1;
                    let (Some(key), Some(value)) = (&record.key, &record.value) else {
                        continue;
                    };
                    if let Some((k, v)) = decode_entry(key, value) {
                        table.insert(k, v);
                    }
                }
            }
        }
        *store
            .committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = table;
        Ok(store)
    }

    /// The batch that records a commit.
    pub fn encode_commit(group: &str, offsets: &[CommittedOffset], now_ms: i64) -> Option<Bytes> {
        let mut builder = BatchBuilder::new(ProducerStamp::NONE);
        for o in offsets {
            let mut value = BytesMut::with_capacity(10 + o.metadata.len());
            value.put_u64(o.offset);
            value.put_string(&o.metadata);
            builder.push(&Record {
                key: Some(encode_key(group, &o.topic, o.partition)),
                value: Some(value.freeze()),
                headers: Vec::new(),
                timestamp: now_ms,
            });
        }
        builder.finish()
    }

    /// Makes a durable commit visible.
    pub fn apply(&self, group: &str, offsets: &[CommittedOffset]) {
        let mut table = self
            .committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for o in offsets {
            table.insert((group.to_owned(), o.topic.clone(), o.partition), o.clone());
        }
    }

    pub fn get(&self, group: &str, topic: &str, partition: u32) -> Option<CommittedOffset> {
        let table = self
            .committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table
            .get(&(group.to_owned(), topic.to_owned(), partition))
            .cloned()
    }

    /// Every offset a group committed, by topic and partition.
    pub fn of_group(&self, group: &str) -> Vec<CommittedOffset> {
        let table = self
            .committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: BTreeMap<(String, u32), CommittedOffset> = BTreeMap::new();
        for ((g, topic, partition), offset) in table.iter() {
            if g == group {
                out.insert((topic.clone(), *partition), offset.clone());
            }
        }
        out.into_values().collect()
    }

    /// Groups that committed something.
    pub fn groups(&self) -> Vec<String> {
        let table = self
            .committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut groups: Vec<String> = table.keys().map(|(g, _, _)| g.clone()).collect();
        groups.sort();
        groups.dedup();
        groups
    }
}

/// Committed offsets as one request reads them: this broker's own table, or a
/// cluster's, from the controller's metadata.
pub enum OffsetView<'a> {
    Local(&'a OffsetStore),
    Cluster(std::sync::Arc<quiver_cluster::MetadataState>),
}

impl OffsetView<'_> {
    pub fn get(&self, group: &str, topic: &str, partition: u32) -> Option<CommittedOffset> {
        match self {
            OffsetView::Local(store) => store.get(group, topic, partition),
            OffsetView::Cluster(metadata) => metadata
                .committed_offset(group, topic, partition)
                .map(|c| CommittedOffset {
                    topic: topic.to_owned(),
                    partition,
                    offset: c.offset,
                    metadata: c.metadata.clone(),
                }),
        }
    }

    /// Every offset a group committed, by topic and partition.
    pub fn of_group(&self, group: &str) -> Vec<CommittedOffset> {
        match self {
            OffsetView::Local(store) => store.of_group(group),
            OffsetView::Cluster(metadata) => metadata
                .group_offsets(group)
                .map(|(key, c)| CommittedOffset {
                    topic: key.topic.clone(),
                    partition: key.partition,
                    offset: c.offset,
                    metadata: c.metadata.clone(),
                })
                .collect(),
        }
    }

    /// Groups that committed something, sorted.
    pub fn groups(&self) -> Vec<String> {
        match self {
            OffsetView::Local(store) => store.groups(),
            OffsetView::Cluster(metadata) => {
                let groups: std::collections::BTreeSet<&String> =
                    metadata.offsets().keys().map(|k| &k.group).collect();
                groups.into_iter().cloned().collect()
            }
        }
    }
}
