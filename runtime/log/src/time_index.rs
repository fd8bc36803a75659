//! The sparse time index of one segment: `.timeindex`.
//!
//! ```text
//! [max_timestamp_so_far:8][relative_offset:4]   repeated, big-endian
//! ```
//! An entry `(t, r)` says: no batch of this segment up to and including the batch at
//! relative offset `r` has a record newer than `t`. Entries are written next to offset
//! index entries when the segment's maximum timestamp grew since the previous entry, and
//! once more when the segment is sealed, pointing at its last batch: so a sealed
//! segment's last entry carries its maximum timestamp (what time-based retention needs),
//! and recovery can tell a time index that lost that entry. Like `.index`, a cache that
//! recovery rebuilds.

use crate::entry_file::{EntryFile, IndexRecord};

/// Bytes of one `.timeindex` entry.
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;

/// One entry; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub max_timestamp: i64,
    pub relative_offset: u32,
}

impl TimeEntry {
    fn encode(self) -> [u8; TIME_INDEX_ENTRY_BYTES] {
        let mut out = [0u8; TIME_INDEX_ENTRY_BYTES];
        out[..8].copy_from_slice(&self.max_timestamp.to_be_bytes());
        out[8..].copy_from_slice(&self.relative_offset.to_be_bytes());
        out
    }

    fn decode(raw: &[u8; TIME_INDEX_ENTRY_BYTES]) -> Self {
        let [a, b, c, d, e, f, g, h, i, j, k, l] = *raw;
        Self {
            max_timestamp: i64::from_be_bytes([a, b, c, d, e, f, g, h]),
            relative_offset: u32::from_be_bytes([i, j, k, l]),
        }
    }
}

impl IndexRecord for TimeEntry {
    const BYTES: usize = TIME_INDEX_ENTRY_BYTES;

    fn encode_into(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.encode());
    }

    fn decode_from(raw: &[u8]) -> Self {
        let mut fixed = [0u8; TIME_INDEX_ENTRY_BYTES];
        fixed.copy_from_slice(raw);
        Self::decode(&fixed)
    }

    /// Timestamps never go backwards; offsets strictly increase.
    fn may_follow(self, prev: Option<Self>) -> bool {
        prev.is_none_or(|prev| {
            self.max_timestamp >= prev.max_timestamp && self.relative_offset > prev.relative_offset
        })
    }
}

/// The entries of one segment's time index, held in memory.
pub type TimeIndex = EntryFile<TimeEntry>;

impl EntryFile<TimeEntry> {
    /// The last entry whose timestamp is below `timestamp`: every batch up to its offset
    /// is older than `timestamp`, so a search for `timestamp` may start there.
    pub fn last_below(&self, timestamp: i64) -> Option<TimeEntry> {
        let after = self
            .entries
            .partition_point(|e| e.max_timestamp < timestamp);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// Whether `max_timestamp` is news, worth an entry.
    pub fn would_grow(&self, max_timestamp: i64) -> bool {
        self.last()
            .is_none_or(|last| max_timestamp > last.max_timestamp)
    }

    /// The entry that seals a segment whose last batch is at `relative_offset` and whose
    /// maximum timestamp is `max_timestamp`, unless the last entry already is that.
    pub fn sealing_entry(&self, max_timestamp: i64, relative_offset: u32) -> Option<TimeEntry> {
        let entry = TimeEntry {
            max_timestamp,
            relative_offset,
        };
        (self.last() != Some(entry)).then_some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(max_timestamp: i64, relative_offset: u32) -> TimeEntry {
        TimeEntry {
            max_timestamp,
            relative_offset,
        }
    }

    #[test]
    fn round_trips_and_finds_the_last_entry_below() {
        let mut index = TimeIndex::default();
        for e in [entry(100, 0), entry(200, 7), entry(300, 9)] {
            index.push(e);
        }
        assert_eq!(TimeIndex::decode(&index.encode()), Some(index.clone()));
        assert_eq!(index.last_below(100), None);
        assert_eq!(index.last_below(101), Some(entry(100, 0)));
        assert_eq!(index.last_below(300), Some(entry(200, 7)));
        assert_eq!(index.last_below(i64::MAX), Some(entry(300, 9)));
        assert!(index.would_grow(301));
        assert!(!index.would_grow(300));
    }

    #[test]
    fn rejects_torn_or_unordered_files() {
        let mut index = TimeIndex::default();
        index.push(entry(100, 0));
        index.push(entry(90, 3));
        assert!(TimeIndex::decode(&index.encode()).is_none());
        let mut same_offset = TimeIndex::default();
        same_offset.push(entry(100, 3));
        same_offset.push(entry(200, 3));
        assert!(TimeIndex::decode(&same_offset.encode()).is_none());
        // A sealing entry repeats the maximum at a later offset.
        let mut sealed = TimeIndex::default();
        sealed.push(entry(100, 0));
        sealed.push(entry(100, 3));
        assert!(TimeIndex::decode(&sealed.encode()).is_some());
        let mut ok = TimeIndex::default();
        ok.push(entry(100, 0));
        let raw = ok.encode();
        assert!(TimeIndex::decode(&raw[..5]).is_none());
    }
}
