//! Runs a topic's chain of plugins over one batch, and turns what comes out back into
//! batches: for the log (produce stage) or for one consumer (fetch stage).
//!
//! Records keep the offset of the input record they came from all along the chain, so
//! the fetch stage can send survivors at their stored offsets.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quiver_wire::batch::{
    BatchBuilder, BatchHeader, Compression, DecodedRecord, NO_PRODUCER_ID, ProducerStamp, RawBatch,
    Record, RecordHeader, RecordView, stamp,
};
use quiver_wire::plugin::{OnError, PluginStage, dead_letter_header};

use crate::registry::{Registry, Step};
use crate::sandbox::{Outcome, PluginError};

/// What one plugin did to one batch, for metrics.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub plugin: String,
    pub elapsed: Duration,
    pub records_in: usize,
    pub records_out: usize,
    /// The error's kind (`PluginError::kind`) when the call failed.
    pub error: Option<&'static str>,
    /// Linear memory of the instance after the call.
    pub memory_bytes: usize,
}

/// How a chain ended for one batch.
#[derive(Debug)]
pub enum ChainOutcome {
    /// Every plugin kept every record as it was: the stored bytes stand.
    Unchanged,
    /// The records that come out, each with the offset of the record it came from.
    Records(Vec<DecodedRecord>),
    /// Only filters changed the batch: these input records stay, each as it was, in
    /// input order. A fetch can send them as their stored bytes.
    Kept(Vec<DecodedRecord>),
    /// A plugin failed and its policy is `skip`: the batch is dropped.
    Skipped { plugin: String, error: PluginError },
    /// A plugin failed and its policy is `fail`.
    Failed { plugin: String, error: PluginError },
    /// A plugin failed and its policy is `dead-letter`: the batch's records (as they
    /// entered the chain) go to `topic`, marked with `headers`.
    DeadLetter {
        topic: String,
        plugin: String,
        error: PluginError,
        headers: Vec<RecordHeader>,
    },
}

/// The chain's outcome and a report per plugin call.
#[derive(Debug)]
pub struct ChainRun {
    pub outcome: ChainOutcome,
    pub reports: Vec<StepReport>,
}

fn call(
    registry: &Registry,
    step: &Step,
    records: &ChainInput,
) -> Result<(Outcome, usize), PluginError> {
    let mut instance = registry.checkout(step)?;
    let outcome = match records {
        ChainInput::Decoded(records) => instance.run(records)?,
        ChainInput::Stored { batch, kept } => {
            let views: Vec<RecordView<'_>> = kept.iter().map(|&i| batch.view(i)).collect();
            instance.run(&views)?
        }
    };
    let memory = instance.memory_bytes();
    registry.checkin(step, instance);
    Ok((outcome, memory))
}

/// The records a chain works on: decoded, or (at the fetch stage) still in their
/// stored batch, which filters only narrow down. Plugins read stored records straight
/// from the batch's bytes; they are decoded only when a plugin rewrites them or the
/// chain ends with records to hand on.
#[derive(Debug)]
pub enum ChainInput {
    Decoded(Vec<DecodedRecord>),
    /// The records of `batch` at the indices `kept`, in order.
    Stored {
        batch: RawBatch,
        kept: Vec<usize>,
    },
}

impl From<Vec<DecodedRecord>> for ChainInput {
    fn from(records: Vec<DecodedRecord>) -> Self {
        Self::Decoded(records)
    }
}

impl From<RawBatch> for ChainInput {
    fn from(batch: RawBatch) -> Self {
        let kept = (0..batch.len()).collect();
        Self::Stored { batch, kept }
    }
}

impl ChainInput {
    fn len(&self) -> usize {
        match self {
            Self::Decoded(records) => records.len(),
            Self::Stored { kept, .. } => kept.len(),
        }
    }

    fn offset(&self, index: usize) -> Option<u64> {
        match self {
            Self::Decoded(records) => records.get(index).map(|r| r.offset),
            Self::Stored { batch, kept } => kept.get(index).map(|&i| batch.offset(i)),
        }
    }

    /// The records, decoded.
    fn into_records(self) -> Vec<DecodedRecord> {
        match self {
            Self::Decoded(records) => records,
            Self::Stored { batch, kept } => kept.into_iter().map(|i| batch.decoded(i)).collect(),
        }
    }
}

/// What one call did to the batch, as far as the chain's outcome cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    None,
    /// Records removed, none rewritten.
    Removed,
    /// Records rewritten or made.
    Rewritten,
}

/// Applies one call's outcome to the records that went in.
fn apply(records: ChainInput, outcome: Outcome) -> (ChainInput, Change) {
    match outcome {
        Outcome::Keep(keep) if keep.iter().all(|k| *k) => (records, Change::None),
        Outcome::Keep(keep) => {
            let narrowed = match records {
                ChainInput::Decoded(records) => ChainInput::Decoded(
                    records
                        .into_iter()
                        .zip(keep)
                        .filter_map(|(r, k)| k.then_some(r))
                        .collect(),
                ),
                ChainInput::Stored { batch, kept } => ChainInput::Stored {
                    batch,
                    kept: kept
                        .into_iter()
                        .zip(keep)
                        .filter_map(|(i, k)| k.then_some(i))
                        .collect(),
                },
            };
            (narrowed, Change::Removed)
        }
        Outcome::Records(out) => (
            ChainInput::Decoded(
                out.into_iter()
                    .filter_map(|o| {
                        // The ABI parser already checked `source` against the input count.
                        let offset = records.offset(o.source as usize)?;
                        Some(DecodedRecord {
                            offset,
                            timestamp: o.timestamp,
                            key: o.key,
                            value: o.value,
                            headers: o.headers,
                        })
                    })
                    .collect(),
            ),
            Change::Rewritten,
        ),
    }
}

/// Runs `steps` in order over one batch's records. Blocking: call it off the async
/// workers. A plugin that fails is handled by its attachment's `on_error`.
pub fn run_chain(
    registry: &Registry,
    steps: &[Step],
    stage: PluginStage,
    records: impl Into<ChainInput>,
) -> ChainRun {
    let mut reports = Vec::with_capacity(steps.len());
    let mut current: ChainInput = records.into();
    let mut changed = Change::None;
    for step in steps {
        if current.len() == 0 {
            break;
        }
        let started = Instant::now();
        let result = call(registry, step, &current);
        let mut report = StepReport {
            plugin: step.name.clone(),
            elapsed: started.elapsed(),
            records_in: current.len(),
            records_out: 0,
            error: None,
            memory_bytes: 0,
        };
        match result {
            Ok((outcome, memory)) => {
                let (next, change) = apply(current, outcome);
                changed = changed.max(change);
                current = next;
                report.records_out = current.len();
                report.memory_bytes = memory;
                reports.push(report);
            }
            Err(error) => {
                report.error = Some(error.kind());
                report.records_out = current.len();
                reports.push(report);
                let plugin = step.name.clone();
                let outcome = match &step.on_error {
                    OnError::Pass => continue,
                    OnError::Fail => ChainOutcome::Failed { plugin, error },
                    OnError::Skip => ChainOutcome::Skipped { plugin, error },
                    OnError::DeadLetter(topic) => {
                        let headers = vec![
                            text_header(dead_letter_header::PLUGIN, &step.name),
                            text_header(dead_letter_header::VERSION, &step.version),
                            text_header(dead_letter_header::ERROR, &error.to_string()),
                            text_header(dead_letter_header::STAGE, stage.name()),
                        ];
                        ChainOutcome::DeadLetter {
                            topic: topic.clone(),
                            plugin,
                            error,
                            headers,
                        }
                    }
                };
                return ChainRun { outcome, reports };
            }
        }
    }
    let outcome = match changed {
        Change::None => ChainOutcome::Unchanged,
        Change::Removed => ChainOutcome::Kept(current.into_records()),
        Change::Rewritten => ChainOutcome::Records(current.into_records()),
    };
    ChainRun { outcome, reports }
}

/// A header with a UTF-8 value.
pub fn text_header(key: &str, value: &str) -> RecordHeader {
    RecordHeader {
        key: key.to_owned(),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
    }
}

fn to_record(r: DecodedRecord) -> Record {
    Record {
        key: r.key,
        value: r.value,
        headers: r.headers,
        timestamp: r.timestamp,
    }
}

/// Why plugin output could not become a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebuildError {
    #[error("plugin output of {bytes} bytes does not fit a batch of at most {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
}

/// The key of the marker record in a control batch that stands for removed records.
pub const REMOVED_MARKER_KEY: &[u8] = b"quiver.plugin.removed";

/// A control batch at `offset` standing for `removed` records a plugin took out. It
/// keeps the log's offsets moving (and, at the produce stage, the producer's sequence);
/// consumers step over it.
pub fn removed_marker(
    offset: u64,
    leader_epoch: u32,
    timestamp: i64,
    removed: usize,
    producer: ProducerStamp,
) -> Bytes {
    let mut builder = BatchBuilder::new(producer);
    builder.push(&Record {
        key: Some(Bytes::from_static(REMOVED_MARKER_KEY)),
        value: Some(Bytes::from(removed.to_string())),
        headers: Vec::new(),
        timestamp,
    });
    // A builder holding one record always seals.
    let batch = builder.finish_control().unwrap_or_default();
    let mut batch = BytesMut::from(batch);
    stamp(&mut batch, offset, leader_epoch);
    batch.freeze()
}

/// The producer stamp a rewritten batch of `count` records carries so that it ends on
/// the original's last sequence (see `PartitionLog::append_transformed`).
fn rewritten_producer(original: &BatchHeader, count: u32) -> ProducerStamp {
    if original.producer_id == NO_PRODUCER_ID {
        return ProducerStamp::NONE;
    }
    let last = original
        .base_sequence
        .wrapping_add(original.record_count.saturating_sub(1));
    ProducerStamp {
        producer_id: original.producer_id,
        producer_epoch: original.producer_epoch,
        base_sequence: last.wrapping_sub(count.saturating_sub(1)),
    }
}

/// The batch to append in place of `original` at the produce stage: the chain's
/// records with new dense offsets, compressed as the original was; or, when no record
/// is left, a control marker. Offsets are assigned by the log at append.
pub fn produce_batch(
    original: &BatchHeader,
    records: Vec<DecodedRecord>,
    batch_bytes_max: usize,
) -> Result<Bytes, RebuildError> {
    if records.is_empty() {
        return Ok(removed_marker(
            0,
            0,
            original.max_timestamp,
            original.record_count as usize,
            rewritten_producer(original, 1),
        ));
    }
    let mut builder = BatchBuilder::new(rewritten_producer(original, records.len() as u32));
    for r in records {
        builder.push(&to_record(r));
    }
    let codec = original.compression().unwrap_or(Compression::None);
    let batch = builder.finish_compressed(codec).unwrap_or_default();
    if batch.len() > batch_bytes_max {
        return Err(RebuildError::TooLarge {
            bytes: batch.len(),
            limit: batch_bytes_max,
        });
    }
    Ok(batch)
}

/// The batches one consumer receives in place of `original` at the fetch stage.
///
/// The survivors go out as one batch at the original's base offset, each record at its
/// stored offset delta, the gaps left where records were removed (as Kafka's compacted
/// batches carry them), and spanning to the original's last offset so the consumer's
/// next fetch starts after the batch even when its last records were removed. So a
/// filter costs the survivors' own bytes plus one header per stored batch. Records that
/// share an offset (an `array_map` at the fetch stage) cannot share a batch, whose
/// deltas increase: each repeat starts a new batch. Nothing left is one control marker
/// at the original's last offset.
pub fn fetch_batches(original: &BatchHeader, records: Vec<DecodedRecord>) -> Vec<Bytes> {
    let Some(last_kept) = records.last().map(|r| r.offset) else {
        return vec![removed_marker(
            original.last_offset(),
            original.leader_epoch,
            original.max_timestamp,
            0,
            ProducerStamp::NONE,
        )];
    };
    let mut out = Vec::new();
    // The open batch: its base offset, the last offset pushed, the builder.
    let mut open: Option<(u64, u64, BatchBuilder)> = None;
    let seal = |base: u64, mut builder: BatchBuilder, span_end: u64, out: &mut Vec<Bytes>| {
        builder.span_to(delta(base, span_end));
        if let Some(batch) = builder.finish() {
            let mut batch = BytesMut::from(batch);
            stamp(&mut batch, base, original.leader_epoch);
            out.push(batch.freeze());
        }
    };
    for r in records {
        let offset = r.offset;
        let (base, mut builder) = match open.take() {
            Some((base, previous, builder)) if offset > previous => (base, builder),
            previous => {
                if let Some((base, previous, builder)) = previous {
                    seal(base, builder, previous, &mut out);
                }
                let base = if out.is_empty() {
                    original.base_offset
                } else {
                    offset
                };
                (base, BatchBuilder::new(ProducerStamp::NONE))
            }
        };
        builder.push_at(&to_record(r), delta(base, offset));
        open = Some((base, offset, builder));
    }
    if let Some((base, _, builder)) = open {
        seal(
            base,
            builder,
            original.last_offset().max(last_kept),
            &mut out,
        );
    }
    out
}

/// `offset`'s delta from `base`. Both come from one stored batch, whose deltas are u32.
fn delta(base: u64, offset: u64) -> u32 {
    u32::try_from(offset.saturating_sub(base)).unwrap_or(u32::MAX)
}

/// The records of a dead-lettered batch: each as it entered the chain, with the
/// failure's headers and where it came from added.
pub fn dead_letter_records(
    records: Vec<DecodedRecord>,
    headers: &[RecordHeader],
    source_topic: &str,
    source_partition: u32,
    stage: PluginStage,
) -> Vec<Record> {
    records
        .into_iter()
        .map(|r| {
            let mut all = r.headers.clone();
            all.extend_from_slice(headers);
            all.push(text_header(dead_letter_header::SOURCE_TOPIC, source_topic));
            all.push(text_header(
                dead_letter_header::SOURCE_PARTITION,
                &source_partition.to_string(),
            ));
            if stage == PluginStage::Fetch {
                all.push(text_header(
                    dead_letter_header::SOURCE_OFFSET,
                    &r.offset.to_string(),
                ));
            }
            Record {
                key: r.key,
                value: r.value,
                headers: all,
                timestamp: r.timestamp,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_wire::batch::{BatchSplitter, decode_records};

    fn stored_batch(base: u64, values: &[&str]) -> (BatchHeader, Vec<DecodedRecord>) {
        let mut builder = BatchBuilder::new(ProducerStamp::NONE);
        for (i, v) in values.iter().enumerate() {
            builder.push(&Record::from_value(
                Bytes::copy_from_slice(v.as_bytes()),
                1000 + i as i64,
            ));
        }
        let mut batch = BytesMut::from(builder.finish().expect("records"));
        stamp(&mut batch, base, 3);
        let batch = batch.freeze();
        let header = BatchHeader::parse(&batch).expect("header");
        (header, decode_records(&batch).expect("decodes"))
    }

    fn delivered(batches: &[Bytes]) -> (Vec<(u64, String)>, u64) {
        let mut out = Vec::new();
        let mut next = 0;
        for batch in batches {
            let header = BatchHeader::parse(batch).expect("header");
            assert_eq!(header.leader_epoch, 3);
            next = next.max(header.next_offset());
            if header.is_control() {
                continue;
            }
            for r in decode_records(batch).expect("valid batch") {
                let value = r.value.map(|v| String::from_utf8_lossy(&v).into_owned());
                out.push((r.offset, value.unwrap_or_default()));
            }
        }
        (out, next)
    }

    #[test]
    fn fetch_view_keeps_offsets_and_covers_removed_tail() {
        let (header, records) = stored_batch(100, &["a", "b", "c", "d", "e"]);
        let kept: Vec<_> = records
            .into_iter()
            .filter(|r| r.offset != 102 && r.offset != 104)
            .collect();
        let batches = fetch_batches(&header, kept);
        // One batch at the stored base with gaps at 102 and 104, spanning to 104.
        assert_eq!(batches.len(), 1);
        let sent = BatchHeader::parse(&batches[0]).expect("header");
        assert_eq!(
            (sent.base_offset, sent.last_offset_delta, sent.record_count),
            (100, 4, 3)
        );
        let (records, next) = delivered(&batches);
        assert_eq!(
            records,
            vec![(100, "a".into()), (101, "b".into()), (103, "d".into())]
        );
        assert_eq!(next, 105);
    }

    #[test]
    fn fetch_view_costs_the_survivors_plus_one_header() {
        let values: Vec<String> = (0..100).map(|i| format!("record number {i:04}")).collect();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let (header, records) = stored_batch(0, &values);
        let kept: Vec<_> = records.into_iter().filter(|r| r.offset % 2 == 1).collect();
        let batches = fetch_batches(&header, kept);
        assert_eq!(batches.len(), 1, "every other record kept: still one batch");
        let sent: usize = batches.iter().map(Bytes::len).sum();
        assert!(
            sent < header.total_bytes() / 2 + 64,
            "{sent} bytes sent for half of a {}-byte batch",
            header.total_bytes()
        );
        let (records, next) = delivered(&batches);
        assert_eq!(records.len(), 50);
        assert!(records.iter().all(|(offset, value)| {
            offset % 2 == 1 && *value == format!("record number {offset:04}")
        }));
        assert_eq!(next, 100);
    }

    #[test]
    fn fetch_view_without_the_first_records_starts_at_the_stored_base() {
        let (header, records) = stored_batch(50, &["a", "b", "c"]);
        let batches = fetch_batches(&header, records[2..].to_vec());
        let sent = BatchHeader::parse(&batches[0]).expect("header");
        assert_eq!((sent.base_offset, sent.last_offset_delta), (50, 2));
        assert_eq!(delivered(&batches), (vec![(52, "c".into())], 53));
    }

    #[test]
    fn fetch_view_of_nothing_is_one_marker() {
        let (header, _) = stored_batch(7, &["a", "b"]);
        let batches = fetch_batches(&header, Vec::new());
        let (records, next) = delivered(&batches);
        assert!(records.is_empty());
        assert_eq!(next, 9);
    }

    #[test]
    fn fetch_view_of_split_records_shares_offsets() {
        let (header, records) = stored_batch(10, &["x", "y"]);
        let mut split = Vec::new();
        for r in records {
            for part in ["1", "2"] {
                split.push(DecodedRecord {
                    value: Some(Bytes::from(format!("{}{part}", r.offset))),
                    ..r.clone()
                });
            }
        }
        let (records, next) = delivered(&fetch_batches(&header, split));
        assert_eq!(
            records,
            vec![
                (10, "101".into()),
                (10, "102".into()),
                (11, "111".into()),
                (11, "112".into())
            ]
        );
        assert_eq!(next, 12);
    }

    #[test]
    fn produce_batch_ends_on_the_original_sequence() {
        let mut builder = BatchBuilder::new(ProducerStamp {
            producer_id: 9,
            producer_epoch: 1,
            base_sequence: 20,
        });
        for v in ["a", "b", "c"] {
            builder.push(&Record::from_value(Bytes::from(v), 5));
        }
        let original = builder.finish().expect("records");
        let header = BatchHeader::parse(&original).expect("header");
        let records = decode_records(&original).expect("decodes");
        let one = produce_batch(&header, records[..1].to_vec(), 1 << 20).expect("fits");
        let h = BatchHeader::parse(&one).expect("header");
        assert_eq!((h.producer_id, h.base_sequence, h.record_count), (9, 22, 1));
        let five: Vec<_> = records.iter().chain(&records[..2]).cloned().collect();
        let h = BatchHeader::parse(&produce_batch(&header, five, 1 << 20).expect("fits"))
            .expect("header");
        assert_eq!(h.base_sequence.wrapping_add(h.record_count - 1), 22);
        let marker = produce_batch(&header, Vec::new(), 1 << 20).expect("fits");
        let h = BatchHeader::parse(&marker).expect("header");
        assert!(h.is_control());
        assert_eq!((h.base_sequence, h.record_count), (22, 1));
        assert!(quiver_wire::batch::validate(&marker, 1 << 20).is_ok());
        assert!(matches!(
            produce_batch(&header, records, 70),
            Err(RebuildError::TooLarge { .. })
        ));
        // Splitting the produced batch back gives the same records.
        let again = produce_batch(
            &header,
            decode_records(&original).expect("decodes"),
            1 << 20,
        )
        .expect("fits");
        assert_eq!(BatchSplitter::new(again).count(), 1);
    }
}
