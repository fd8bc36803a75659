//! Producer ids for idempotent producers: unique per broker data directory, never
//! handed out twice, even across crashes.
//!
//! Ids are reserved in blocks: the file `metadata/producer-ids` records the first id of
//! the next unreserved block, and is rewritten (atomically) once per block, not once
//! per id. A crash wastes at most the rest of a block.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Ids reserved per write of the block file.
pub const PRODUCER_ID_BLOCK: u64 = 1_000;

/// Why an id could not be allocated.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error("producer id block file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("producer id block file {path} is corrupt")]
    Corrupt { path: PathBuf },
    #[error("this broker has handed out every producer id its node id leaves it")]
    Exhausted,
}

struct Range {
    next: u64,
    end: u64,
}

/// Hands out producer ids.
pub struct ProducerIdAllocator {
    path: PathBuf,
    range: Mutex<Range>,
}

impl ProducerIdAllocator {
    /// Opens the block file; the first id handed out is the start of a fresh block.
    pub fn open(data_dir: &Path) -> Result<Self, ProducerIdError> {
        let path = data_dir.join("metadata").join("producer-ids");
        let next = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| ProducerIdError::Corrupt { path: path.clone() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(ProducerIdError::Io { path, source }),
        };
        Ok(Self {
            path,
            range: Mutex::new(Range { next, end: next }),
        })
    }

    /// The next unused id. Blocking: writes the block file once per block.
    pub fn allocate(&self) -> Result<u64, ProducerIdError> {
        let mut range = self
            .range
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if range.next == range.end {
            let end = range.end + PRODUCER_ID_BLOCK;
            self.persist(end)?;
            range.end = end;
        }
        let id = range.next;
        range.next += 1;
        Ok(id)
    }

    fn persist(&self, end: u64) -> Result<(), ProducerIdError> {
        use std::io::Write;
        let io = |source| ProducerIdError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .expect("the block file sits in metadata/");
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(end.to_string().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

/// Bits of a cluster producer id left to the broker's own counter.
const LOCAL_ID_BITS: u32 = 40;

/// A producer id no other broker of the cluster hands out: the broker's node id above
/// its own counter. Brokers allocate on their own (any broker answers
/// `InitProducerId`), and a partition's replicas share one producer state, so two
/// brokers giving out the same id would make one producer's batches look like the
/// other's duplicates.
pub fn cluster_unique(node_id: u32, local: u64) -> Result<u64, ProducerIdError> {
    if local >> LOCAL_ID_BITS != 0 || node_id >= 1 << (63 - LOCAL_ID_BITS) {
        return Err(ProducerIdError::Exhausted);
    }
    Ok((u64::from(node_id) << LOCAL_ID_BITS) | local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_differ_between_brokers() {
        let a = cluster_unique(1, 7).expect("id");
        let b = cluster_unique(2, 7).expect("id");
        assert_ne!(a, b);
        assert_eq!(a & ((1 << 40) - 1), 7);
        assert!(cluster_unique(1, 1 << 40).is_err());
        assert_ne!(cluster_unique(u32::MAX >> 9, 0).ok(), Some(u64::MAX));
    }

    #[test]
    fn ids_are_unique_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ProducerIdAllocator::open(dir.path()).expect("open");
        let a: Vec<u64> = (0..3).map(|_| first.allocate().expect("id")).collect();
        assert_eq!(a, vec![0, 1, 2]);
        drop(first);
        let second = ProducerIdAllocator::open(dir.path()).expect("reopen");
        let b = second.allocate().expect("id");
        assert_eq!(
            b, PRODUCER_ID_BLOCK,
            "a reopened allocator starts a fresh block"
        );
    }
}
