//! What the offset index and the time index share: fixed-width entries held in memory
//! and mirrored in a file that is only a cache (never fsync'd; recovery rebuilds it).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// One fixed-width entry of an index file.
pub trait IndexRecord: Copy {
    /// Bytes of one entry in the file.
    const BYTES: usize;
    /// Appends the entry's file form to `out`.
    fn encode_into(self, out: &mut Vec<u8>);
    /// Reads an entry from exactly [`IndexRecord::BYTES`] bytes.
    fn decode_from(raw: &[u8]) -> Self;
    /// Whether `self` may come after `prev` (`None`: as the file's first entry).
    fn may_follow(self, prev: Option<Self>) -> bool;
}

/// The entries of one index, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFile<E> {
    pub(crate) entries: Vec<E>,
}

impl<E> Default for EntryFile<E> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<E: IndexRecord> EntryFile<E> {
    /// Decodes a file's bytes. `None` when the size is not a whole number of entries or
    /// an entry may not follow the one before it.
    pub fn decode(raw: &[u8]) -> Option<Self> {
        if !raw.len().is_multiple_of(E::BYTES) {
            return None;
        }
        let mut entries: Vec<E> = Vec::with_capacity(raw.len() / E::BYTES);
        for chunk in raw.chunks_exact(E::BYTES) {
            let entry = E::decode_from(chunk);
            if !entry.may_follow(entries.last().copied()) {
                return None;
            }
            entries.push(entry);
        }
        Some(Self { entries })
    }

    /// Encodes every entry, in order, as the file holds them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * E::BYTES);
        for e in &self.entries {
            e.encode_into(&mut out);
        }
        out
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<E> {
        self.entries.last().copied()
    }

    /// Adds an entry in memory and writes it at its place in `file`. On a failed write the
    /// file is cut back and the entry is not added, so memory and file agree.
    pub fn append(&mut self, entry: E, file: &File) -> io::Result<()> {
        let at = (self.entries.len() * E::BYTES) as u64;
        let mut raw = Vec::with_capacity(E::BYTES);
        entry.encode_into(&mut raw);
        if let Err(e) = file.write_all_at(&raw, at) {
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
            file.set_len((len * E::BYTES) as u64)?;
        }
        Ok(())
    }

    /// Adds an entry in memory only, for rebuilding from a scan.
    pub fn push(&mut self, entry: E) {
        self.entries.push(entry);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}
