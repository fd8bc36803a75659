//! The leader-epoch history of one replica's log (Kafka's leader-epoch cache,
//! KIP-101): for each leader epoch that wrote data, the offset of its first record.
//! It answers "where does epoch E end in this log?", which is how a follower finds
//! where its log stops agreeing with the leader's.

use crate::config::EPOCH_ENTRIES_MAX;
use crate::error::EpochHistoryError;

/// The first offset written in a leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub leader_epoch: u32,
    pub start_offset: u64,
}

/// The answer to "where does an epoch end": the largest epoch at or below the one asked
/// about that this log knows, and the offset one past its last record (the start of the
/// next epoch, or the log end offset for the newest epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEndOffset {
    pub leader_epoch: u32,
    pub end_offset: u64,
}

/// Leader epochs and their start offsets, ascending in both. A replica keeps one in
/// memory next to its log; after a restart the broker rebuilds it from the batch
/// headers with [`LeaderEpochCache::record`].
///
/// At most [`EPOCH_ENTRIES_MAX`] entries are kept. When one more is needed the oldest
/// is forgotten, and questions about epochs older than every kept entry are answered
/// with the start offset of the oldest entry ever recorded: never later than the true
/// end, so a follower may truncate and fetch again more than it needed to, but never
/// keeps records it should have removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
    /// Start offset of the oldest entry ever recorded, set once entries are forgotten.
    forgotten_from: Option<u64>,
}

impl LeaderEpochCache {
    /// An empty history: the log holds no records.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the log holds a batch written in `leader_epoch` starting at
    /// `base_offset`. Call it for every batch in offset order when rebuilding from the
    /// log; batches of an epoch already recorded change nothing.
    pub fn record(&mut self, leader_epoch: u32, base_offset: u64) -> Result<(), EpochHistoryError> {
        if let Some(latest) = self.entries.last() {
            if leader_epoch < latest.leader_epoch {
                return Err(EpochHistoryError::EpochRegression {
                    latest: latest.leader_epoch,
                    received: leader_epoch,
                });
            }
            if base_offset < latest.start_offset {
                return Err(EpochHistoryError::OffsetRegression {
                    latest_start_offset: latest.start_offset,
                    received: base_offset,
                });
            }
        }
        self.assign(leader_epoch, base_offset);
        Ok(())
    }

    /// Starts `leader_epoch` at `start_offset` unless it is already the newest epoch.
    /// The caller has checked that both are at least the newest entry's.
    pub(crate) fn assign(&mut self, leader_epoch: u32, start_offset: u64) {
        if let Some(latest) = self.entries.last() {
            debug_assert!(leader_epoch >= latest.leader_epoch);
            debug_assert!(start_offset >= latest.start_offset);
            if latest.leader_epoch == leader_epoch {
                return;
            }
            // An entry with no records after it (a leader that wrote nothing in its
            // epoch) is replaced, keeping start offsets strictly increasing.
            if latest.start_offset == start_offset {
                self.entries.pop();
            }
        }
        self.entries.push(EpochEntry {
            leader_epoch,
            start_offset,
        });
        if self.entries.len() > EPOCH_ENTRIES_MAX {
            let oldest = self.entries.remove(0);
            self.forgotten_from.get_or_insert(oldest.start_offset);
        }
    }

    /// The newest epoch, the one the last record was written in (or, for a leader that
    /// has not written yet, its own epoch). `None` for an empty log.
    pub fn latest_epoch(&self) -> Option<u32> {
        self.entries.last().map(|e| e.leader_epoch)
    }

    /// Where `leader_epoch` ends in a log whose end offset is `log_end_offset`: the
    /// largest known epoch at or below it and the start of the next known epoch (or the
    /// log end). For an epoch older than every known one, the answer keeps the epoch
    /// asked about and ends where the known history starts, as Kafka does. `None` for an
    /// empty history.
    pub fn end_offset_for_epoch(
        &self,
        leader_epoch: u32,
        log_end_offset: u64,
    ) -> Option<EpochEndOffset> {
        let first = self.entries.first()?;
        let known = self
            .entries
            .partition_point(|e| e.leader_epoch <= leader_epoch);
        let Some(floor) = known.checked_sub(1).and_then(|i| self.entries.get(i)) else {
            let end_offset = self
                .forgotten_from
                .map_or(first.start_offset, |f| f.min(first.start_offset));
            return Some(EpochEndOffset {
                leader_epoch,
                end_offset,
            });
        };
        let end_offset = self
            .entries
            .get(known)
            .map_or(log_end_offset, |next| next.start_offset);
        Some(EpochEndOffset {
            leader_epoch: floor.leader_epoch,
            end_offset,
        })
    }

    /// Forgets every epoch starting at or after `end_offset`, for a log cut there.
    /// Returns where the log must actually be cut: lower than asked only when the cut
    /// would leave records whose epoch was forgotten, which the history could then no
    /// longer describe.
    pub(crate) fn truncate_from_end(&mut self, end_offset: u64) -> u64 {
        let kept = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        self.entries.truncate(kept);
        let mut cut = end_offset;
        if let Some(forgotten_from) = self.forgotten_from {
            if self.entries.is_empty() {
                cut = cut.min(forgotten_from);
            }
            if cut <= forgotten_from {
                self.forgotten_from = None;
            }
        }
        cut
    }

    /// The kept entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(u32, u64)]) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::new();
        for &(epoch, start) in entries {
            cache.record(epoch, start).expect("ascending test entries");
        }
        cache
    }

    fn end(epoch: u32, end_offset: u64) -> Option<EpochEndOffset> {
        Some(EpochEndOffset {
            leader_epoch: epoch,
            end_offset,
        })
    }

    #[test]
    fn empty_history_knows_no_epoch() {
        let cache = LeaderEpochCache::new();
        assert_eq!(cache.latest_epoch(), None);
        assert_eq!(cache.end_offset_for_epoch(3, 0), None);
    }

    #[test]
    fn end_offset_is_the_start_of_the_next_known_epoch() {
        let cache = cache(&[(1, 0), (3, 10), (6, 25)]);
        assert_eq!(cache.end_offset_for_epoch(1, 40), end(1, 10));
        // Epoch 2 was never written here: the floor is 1, ending where 3 starts.
        assert_eq!(cache.end_offset_for_epoch(2, 40), end(1, 10));
        assert_eq!(cache.end_offset_for_epoch(3, 40), end(3, 25));
        assert_eq!(cache.end_offset_for_epoch(6, 40), end(6, 40));
        // Newer than anything known: the newest epoch, ending at the log end.
        assert_eq!(cache.end_offset_for_epoch(9, 40), end(6, 40));
    }

    #[test]
    fn epoch_older_than_history_ends_where_history_starts() {
        let cache = cache(&[(4, 7), (5, 9)]);
        assert_eq!(cache.end_offset_for_epoch(2, 12), end(2, 7));
    }

    #[test]
    fn recording_batches_of_the_same_epoch_adds_nothing() {
        let cache = cache(&[(1, 0), (1, 3), (1, 8), (2, 9), (2, 15)]);
        assert_eq!(
            cache.entries(),
            &[
                EpochEntry {
                    leader_epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    leader_epoch: 2,
                    start_offset: 9
                }
            ]
        );
    }

    #[test]
    fn record_refuses_regressions() {
        let mut cache = cache(&[(3, 10)]);
        assert_eq!(
            cache.record(2, 11),
            Err(EpochHistoryError::EpochRegression {
                latest: 3,
                received: 2
            })
        );
        assert_eq!(
            cache.record(4, 9),
            Err(EpochHistoryError::OffsetRegression {
                latest_start_offset: 10,
                received: 9
            })
        );
    }

    #[test]
    fn an_epoch_that_wrote_nothing_is_replaced() {
        let mut cache = cache(&[(1, 0)]);
        cache.assign(2, 5);
        cache.assign(3, 5);
        assert_eq!(cache.end_offset_for_epoch(1, 5), end(1, 5));
        assert_eq!(cache.entries().len(), 2);
        assert_eq!(cache.latest_epoch(), Some(3));
    }

    #[test]
    fn truncation_forgets_epochs_starting_at_or_after_the_cut() {
        let mut cache = cache(&[(1, 0), (3, 10), (6, 25)]);
        assert_eq!(cache.truncate_from_end(25), 25);
        assert_eq!(cache.latest_epoch(), Some(3));
        assert_eq!(cache.truncate_from_end(12), 12);
        assert_eq!(cache.latest_epoch(), Some(3));
        assert_eq!(cache.truncate_from_end(0), 0);
        assert_eq!(cache.latest_epoch(), None);
    }

    #[test]
    fn history_is_bounded_and_forgets_conservatively() {
        let mut cache = LeaderEpochCache::new();
        let total = EPOCH_ENTRIES_MAX as u32 + 10;
        for epoch in 0..total {
            cache
                .record(epoch + 100, u64::from(epoch) * 10 + 5)
                .expect("ascending");
        }
        assert_eq!(cache.entries().len(), EPOCH_ENTRIES_MAX);
        // Epoch 101 ended at 25, but it is forgotten: the answer is the start of the
        // oldest entry ever recorded, which is no later than the truth.
        let answer = cache
            .end_offset_for_epoch(101, 1_000_000)
            .expect("non-empty");
        assert_eq!(answer.end_offset, 5);
        // Kept epochs are still exact.
        let newest = total + 99;
        assert_eq!(
            cache.end_offset_for_epoch(newest - 1, 1_000_000),
            end(newest - 1, u64::from(newest - 100) * 10 + 5)
        );
        // Cutting below every kept entry would leave records of forgotten epochs: the
        // cut moves down to where the history started.
        let first_kept = cache.entries()[0].start_offset;
        assert_eq!(cache.truncate_from_end(first_kept - 1), 5);
        assert_eq!(cache.latest_epoch(), None);
    }
}
