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

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

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

/// The entries of one segment's offset index, held in memory. Lookups never touch the
/// file; the file only lets a restart skip a scan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<IndexEntry>,
}

impl OffsetIndex {
    /// Decodes a `.index` file's bytes. `None` when the size is not a whole number of
    /// entries, when entries do not strictly increase in both fields, or when the first
    /// entry is not the segment's first batch at position 0.
    pub fn decode(raw: &[u8]) -> Option<Self> {
        if !raw.len().is_multiple_of(INDEX_ENTRY_BYTES) {
            return None;
        }
        let mut entries = Vec::with_capacity(raw.len() / INDEX_ENTRY_BYTES);
        for chunk in raw.chunks_exact(INDEX_ENTRY_BYTES) {
            let entry = IndexEntry::decode(chunk.try_into().ok()?);
            if let Some(prev) = entries.last() {
                let prev: &IndexEntry = prev;
                if entry.relative_offset <= prev.relative_offset || entry.position <= prev.position
                {
                    return None;
                }
            } else if entry
                != (IndexEntry {
                    relative_offset: 0,
                    position: 0,
                })
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
    pub fn last(&self) -> Option<IndexEntry> {
        self.entries.last().copied()
    }

    /// The last entry whose relative offset is at most `relative_offset`: where a scan
    /// for that offset starts.
    pub fn floor(&self, relative_offset: u32) -> Option<IndexEntry> {
        let after = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// Adds an entry in memory and writes it at its place in `file`. On a failed write the
    /// file is cut back and the entry is not added, so memory and file agree.
    pub fn append(&mut self, entry: IndexEntry, file: &File) -> io::Result<()> {
        let at = (self.entries.len() * INDEX_ENTRY_BYTES) as u64;
        if let Err(e) = file.write_all_at(&entry.encode(), at) {
            let _ = file.set_len(at);
            return Err(e);
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Removes entries past the first `len`, in memory and in `file`. Used to undo an
    /// append whose `.log` write failed.
    pub fn truncate(&mut self, len: usize, file: &File) -> io::Result<()> {
        if len < self.entries.len() {
            self.entries.truncate(len);
            file.set_len((len * INDEX_ENTRY_BYTES) as u64)?;
        }
        Ok(())
    }

    /// Adds an entry in memory only, for rebuilding from a scan.
    pub fn push(&mut self, entry: IndexEntry) {
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
