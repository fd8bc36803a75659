//! The sparse offset index of one segment: `.index`.
//!
//! ```text
//! [relative_offset:4][position:4]   repeated, big-endian
//! ```
//! `relative_offset` is a batch's base offset minus the segment's base offset and
//! `position` is where that batch starts in the `.log`. The first batch of a segment
//! always has an entry; after that one whenever `index_interval_bytes` were written
//! since the previous entry. The file is a cache: it is never fsync'd and recovery
//! rebuilds it from the `.log` when it is missing or does not check out.

use crate::entry_file::{EntryFile, IndexRecord};

/// Bytes of one `.index` entry.
pub const INDEX_ENTRY_BYTES: usize = 8;

/// One entry: the batch at `relative_offset` starts at byte `position` of the `.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl IndexEntry {
    fn encode(self) -> [u8; INDEX_ENTRY_BYTES] {
        let mut out = [0u8; INDEX_ENTRY_BYTES];
        out[..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        out[4..].copy_from_slice(&self.position.to_be_bytes());
        out
    }

    fn decode(raw: &[u8; INDEX_ENTRY_BYTES]) -> Self {
        let [a, b, c, d, e, f, g, h] = *raw;
        Self {
            relative_offset: u32::from_be_bytes([a, b, c, d]),
            position: u32::from_be_bytes([e, f, g, h]),
        }
    }
}

impl IndexRecord for IndexEntry {
    const BYTES: usize = INDEX_ENTRY_BYTES;

    fn encode_into(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.encode());
    }

    fn decode_from(raw: &[u8]) -> Self {
        let mut fixed = [0u8; INDEX_ENTRY_BYTES];
        fixed.copy_from_slice(raw);
        Self::decode(&fixed)
    }

    /// Both fields strictly increase, and the first entry is the segment's first batch
    /// at position 0.
    fn may_follow(self, prev: Option<Self>) -> bool {
        match prev {
            Some(prev) => {
                self.relative_offset > prev.relative_offset && self.position > prev.position
            }
            None => {
                self == (IndexEntry {
                    relative_offset: 0,
                    position: 0,
                })
            }
        }
    }
}

/// The entries of one segment's offset index, held in memory. Lookups never touch the
/// file; the file only lets a restart skip a scan.
pub type OffsetIndex = EntryFile<IndexEntry>;

impl EntryFile<IndexEntry> {
    /// The last entry whose relative offset is at most `relative_offset`: where a scan
    /// for that offset starts.
    pub fn floor(&self, relative_offset: u32) -> Option<IndexEntry> {
        let after = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        after.checked_sub(1).map(|i| self.entries[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(relative_offset: u32, position: u32) -> IndexEntry {
        IndexEntry {
            relative_offset,
            position,
        }
    }

    #[test]
    fn round_trips_and_finds_the_floor() {
        let mut index = OffsetIndex::default();
        for e in [entry(0, 0), entry(10, 4100), entry(25, 8300)] {
            index.push(e);
        }
        let decoded = OffsetIndex::decode(&index.encode()).expect("valid index");
        assert_eq!(decoded, index);
        assert_eq!(index.floor(0), Some(entry(0, 0)));
        assert_eq!(index.floor(9), Some(entry(0, 0)));
        assert_eq!(index.floor(10), Some(entry(10, 4100)));
        assert_eq!(index.floor(u32::MAX), Some(entry(25, 8300)));
        assert_eq!(OffsetIndex::default().floor(3), None);
    }

    #[test]
    fn rejects_torn_or_unordered_files() {
        let mut index = OffsetIndex::default();
        index.push(entry(0, 0));
        index.push(entry(5, 100));
        let raw = index.encode();
        assert!(OffsetIndex::decode(&raw[..raw.len() - 1]).is_none());
        let mut swapped = OffsetIndex::default();
        swapped.push(entry(0, 0));
        swapped.push(entry(5, 100));
        swapped.push(entry(4, 200));
        assert!(OffsetIndex::decode(&swapped.encode()).is_none());
        assert!(OffsetIndex::decode(&entry(1, 0).encode()).is_none());
        assert!(OffsetIndex::decode(&[]).is_some());
    }
}
