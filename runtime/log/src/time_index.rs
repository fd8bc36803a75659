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

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

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

/// The entries of one segment's time index, held in memory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Decodes a `.timeindex` file's bytes. `None` when the size is not a whole number of
    /// entries, when timestamps go backwards or when offsets do not strictly increase.
    pub fn decode(raw: &[u8]) -> Option<Self> {
        if !raw.len().is_multiple_of(TIME_INDEX_ENTRY_BYTES) {
            return None;
        }
        let mut entries: Vec<TimeEntry> = Vec::with_capacity(raw.len() / TIME_INDEX_ENTRY_BYTES);
        for chunk in raw.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
            let entry = TimeEntry::decode(chunk.try_into().ok()?);
            if let Some(prev) = entries.last()
                && (entry.max_timestamp < prev.max_timestamp
                    || entry.relative_offset <= prev.relative_offset)
            {
                return None;
            }
            entries.push(entry);
        }
        Some(Self { entries })
    }

    /// Encodes every entry, in order, as the file holds them.
    pub fn encode(&self) -> Vec<u8> {
        self.entries.iter().flat_map(|e| e.encode()).collect()
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<TimeEntry> {
        self.entries.last().copied()
    }

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

    /// Adds an entry in memory and writes it at its place in `file`; on a failed write the
    /// file is cut back and the entry is not added.
    pub fn append(&mut self, entry: TimeEntry, file: &File) -> io::Result<()> {
        let at = (self.entries.len() * TIME_INDEX_ENTRY_BYTES) as u64;
        if let Err(e) = file.write_all_at(&entry.encode(), at) {
            let _ = file.set_len(at);
            return Err(e);
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Removes entries past the first `len`, in memory and in `file`.
    pub fn truncate(&mut self, len: usize, file: &File) -> io::Result<()> {
        if len < self.entries.len() {
            self.entries.truncate(len);
            file.set_len((len * TIME_INDEX_ENTRY_BYTES) as u64)?;
        }
        Ok(())
    }

    /// Adds an entry in memory only, for rebuilding from a scan.
    pub fn push(&mut self, entry: TimeEntry) {
        self.entries.push(entry);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
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
