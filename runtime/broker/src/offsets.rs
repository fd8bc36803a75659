//! Committed consumer offsets.
//!
//! They live in the controller's metadata ([`OffsetView`] reads them), committed
//! through the controller by the group coordinator. Brokers of earlier builds kept
//! them in the internal topic `__consumer_offsets`; [`OffsetStore`] still reads that
//! topic at start so that `crate::adopt` can carry its commits into the metadata.
//!
//! Each commit there was one batch: a record per offset, keyed by (group, topic,
//! partition), the latest record per key winning.
//!
//! ```text
//! key:   [version:1][group:string][topic:string][partition:4]
//! value: [offset:8][metadata:string]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use quiver_wire::batch::{BatchSplitter, decode_records};
use quiver_wire::codec::Reader;
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

/// Committed offsets as one request reads them: the cluster's, from the controller's
/// metadata.
pub struct OffsetView(pub std::sync::Arc<quiver_cluster::MetadataState>);

impl OffsetView {
    pub fn get(&self, group: &str, topic: &str, partition: u32) -> Option<CommittedOffset> {
        self.0
            .committed_offset(group, topic, partition)
            .map(|c| CommittedOffset {
                topic: topic.to_owned(),
                partition,
                offset: c.offset,
                metadata: c.metadata.clone(),
            })
    }

    /// Every offset a group committed, by topic and partition.
    pub fn of_group(&self, group: &str) -> Vec<CommittedOffset> {
        self.0
            .group_offsets(group)
            .map(|(key, c)| CommittedOffset {
                topic: key.topic.clone(),
                partition: key.partition,
                offset: c.offset,
                metadata: c.metadata.clone(),
            })
            .collect()
    }

    /// Groups that committed something, sorted.
    pub fn groups(&self) -> Vec<String> {
        let groups: std::collections::BTreeSet<&String> =
            self.0.offsets().keys().map(|k| &k.group).collect();
        groups.into_iter().cloned().collect()
    }
}
