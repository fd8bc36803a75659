//! Idempotent producers: per producer id, the epoch and the last few batches' sequence
//! ranges and offsets, so a retried batch is recognised and answered with the offsets
//! it got the first time instead of being stored twice.
//!
//! The state is a function of the log: every batch carries its producer id, epoch and
//! base sequence, so [`crate::PartitionLog::open`] rebuilds the table by reading batch
//! headers. Nothing extra is written, and the table stays right after recovery
//! truncates a torn tail.

use std::collections::{HashMap, VecDeque};

use quiver_wire::batch::{BatchHeader, NO_PRODUCER_ID};

/// Batches remembered per producer, as in Kafka: a producer with up to this many
/// batches in flight has every retry recognised.
pub const PRODUCER_BATCHES_KEPT: usize = 5;
/// Producers remembered per partition; past this the one that wrote least recently is
/// forgotten (its next batch is then accepted as from a new producer).
pub const PRODUCERS_MAX: usize = 10_000;

/// One remembered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchSequence {
    last_sequence: u32,
    base_offset: u64,
    last_offset: u64,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: u16,
    batches: VecDeque<BatchSequence>,
    last_offset: u64,
}

/// What a new batch is, given what the partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it: no producer id, a new producer's first batch, or the next sequence.
    Append,
    /// A retry of a stored batch: answer with its offsets, store nothing.
    Duplicate { base_offset: u64, last_offset: u64 },
    /// A batch is missing before this one.
    OutOfOrder { expected: u32, received: u32 },
    /// An older epoch than the partition has seen: a zombie producer instance.
    Fenced { current: u16, received: u16 },
}

/// The producers of one partition.
#[derive(Debug, Default, Clone)]
pub struct ProducerStateTable {
    producers: HashMap<u64, ProducerEntry>,
}

fn last_sequence(header: &BatchHeader) -> u32 {
    header
        .base_sequence
        .wrapping_add(header.record_count.saturating_sub(1))
}

impl ProducerStateTable {
    /// Classifies a batch before it is appended.
    pub fn check(&self, header: &BatchHeader) -> SequenceCheck {
        if header.producer_id == NO_PRODUCER_ID {
            return SequenceCheck::Append;
        }
        // A producer's first batch starts at sequence 0. Anything else from an unknown
        // producer is a later batch that overtook the first on another stream (or one
        // whose predecessors retention deleted): storing it would break the order.
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return if header.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder {
                    expected: 0,
                    received: header.base_sequence,
                }
            };
        };
        if header.producer_epoch < entry.epoch {
            return SequenceCheck::Fenced {
                current: entry.epoch,
                received: header.producer_epoch,
            };
        }
        if header.producer_epoch > entry.epoch {
            return if header.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder {
                    expected: 0,
                    received: header.base_sequence,
                }
            };
        }
        // A retry is recognised by its last sequence alone: sequences only grow within
        // an epoch, and a batch a produce-stage plugin rewrote is stored with another
        // first sequence (see `PartitionLog::append_transformed`).
        let last = last_sequence(header);
        if let Some(stored) = entry.batches.iter().find(|b| b.last_sequence == last) {
            return SequenceCheck::Duplicate {
                base_offset: stored.base_offset,
                last_offset: stored.last_offset,
            };
        }
        let expected = entry
            .batches
            .back()
            .map_or(0, |b| b.last_sequence.wrapping_add(1));
        if header.base_sequence == expected {
            SequenceCheck::Append
        } else {
            SequenceCheck::OutOfOrder {
                expected,
                received: header.base_sequence,
            }
        }
    }

    /// Records a batch that was appended (its header carries the assigned offsets).
    pub fn record(&mut self, header: &BatchHeader) {
        if header.producer_id == NO_PRODUCER_ID {
            return;
        }
        if !self.producers.contains_key(&header.producer_id)
            && self.producers.len() >= PRODUCERS_MAX
        {
            self.forget_least_recent();
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                batches: VecDeque::with_capacity(PRODUCER_BATCHES_KEPT),
                last_offset: 0,
            });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == PRODUCER_BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchSequence {
            last_sequence: last_sequence(header),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
        entry.last_offset = header.last_offset();
    }

    fn forget_least_recent(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(_, e)| e.last_offset)
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.producers.remove(&id);
        }
    }

    /// Producers remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_wire::batch::{BATCH_MAGIC, NO_PRODUCER_EPOCH, NO_SEQUENCE};

    fn header(
        producer_id: u64,
        epoch: u16,
        base_sequence: u32,
        count: u32,
        base_offset: u64,
    ) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 0,
            leader_epoch: 0,
            magic: BATCH_MAGIC,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            first_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: count,
        }
    }

    #[test]
    fn sequences_duplicates_gaps_and_fencing() {
        let mut table = ProducerStateTable::default();
        let first = header(7, 0, 0, 3, 100);
        assert_eq!(table.check(&first), SequenceCheck::Append);
        table.record(&first);
        assert_eq!(
            table.check(&first),
            SequenceCheck::Duplicate {
                base_offset: 100,
                last_offset: 102
            }
        );
        assert_eq!(
            table.check(&header(7, 0, 5, 1, 0)),
            SequenceCheck::OutOfOrder {
                expected: 3,
                received: 5
            }
        );
        let second = header(7, 0, 3, 2, 103);
        assert_eq!(table.check(&second), SequenceCheck::Append);
        table.record(&second);
        assert_eq!(
            table.check(&header(7, 1, 0, 1, 0)),
            SequenceCheck::Append,
            "a new epoch starts at 0"
        );
        table.record(&header(7, 1, 0, 1, 105));
        assert_eq!(
            table.check(&header(7, 0, 5, 1, 0)),
            SequenceCheck::Fenced {
                current: 1,
                received: 0
            }
        );
        assert_eq!(
            table.check(&header(8, 0, 40, 1, 0)),
            SequenceCheck::OutOfOrder {
                expected: 0,
                received: 40
            },
            "an unknown producer starts at 0"
        );
        let anonymous = header(NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE, 1, 0);
        assert_eq!(table.check(&anonymous), SequenceCheck::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_recognised() {
        let mut table = ProducerStateTable::default();
        for i in 0..7u32 {
            table.record(&header(1, 0, i, 1, u64::from(i)));
        }
        assert_eq!(
            table.check(&header(1, 0, 6, 1, 0)),
            SequenceCheck::Duplicate {
                base_offset: 6,
                last_offset: 6
            }
        );
        assert_eq!(
            table.check(&header(1, 0, 2, 1, 0)),
            SequenceCheck::Duplicate {
                base_offset: 2,
                last_offset: 2
            }
        );
        assert!(matches!(
            table.check(&header(1, 0, 1, 1, 0)),
            SequenceCheck::OutOfOrder { .. }
        ));
    }

    #[test]
    fn producer_count_is_bounded() {
        let mut table = ProducerStateTable::default();
        for id in 0..(PRODUCERS_MAX as u64 + 10) {
            table.record(&header(id, 0, 0, 1, id));
        }
        assert_eq!(table.len(), PRODUCERS_MAX);
        assert_eq!(
            table.check(&header(0, 0, 0, 1, 0)),
            SequenceCheck::Append,
            "the oldest was forgotten"
        );
    }
}
