//! One segment: a `.log` file of whole batches, named by its base offset, with its
//! `.index` and `.timeindex`.
//!
//! A segment is *active* (the last one, appended to with positional writes, never
//! mapped, its newest batches kept in memory) or *sealed* (fdatasync'd, immutable,
//! mapped once and served as slices of that mapping). A mapped file is never truncated
//! or written: doing so would turn later reads of the mapping into SIGBUS.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use memmap2::MmapOptions;
use quiver_wire::batch::{BATCH_HEADER_BYTES, BatchHeader, decode_records};

use crate::error::ReadError;
use crate::index::{IndexEntry, OffsetIndex};
use crate::time_index::{TimeEntry, TimeIndex};

/// Extension of a segment's batch file.
pub const LOG_EXTENSION: &str = "log";
/// Extension of a segment's sparse offset index.
pub const INDEX_EXTENSION: &str = "index";
/// Extension of a segment's time index.
pub const TIME_INDEX_EXTENSION: &str = "timeindex";
/// Digits of the base offset in a segment's file names: `u64::MAX` has 20.
pub const SEGMENT_NAME_DIGITS: usize = 20;

/// The path of one of a segment's files.
pub fn segment_path(dir: &Path, base_offset: u64, extension: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{extension}"))
}

/// The base offset named by a `.log` file name, or `None` for any other file.
pub fn parse_log_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != SEGMENT_NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Decides which index entries a batch gets. Appends and rebuilds both go through it, so
/// a rebuilt index is the one appends would have written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IndexCursor {
    /// Bytes written since the last `.index` entry.
    bytes_since_entry: u64,
}

/// The entries one batch adds, and the cursor after it.
#[derive(Debug, Clone, Copy)]
pub struct IndexPlan {
    pub entry: Option<IndexEntry>,
    pub time_entry: Option<TimeEntry>,
    pub cursor: IndexCursor,
}

/// Where a batch lands in its segment, as the index planner needs it.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub relative_offset: u32,
    pub position: u32,
    pub batch_bytes: u64,
    /// The segment's maximum timestamp once the batch is in.
    pub max_timestamp: i64,
}

impl IndexCursor {
    /// Entries for a batch landing at `at`.
    pub fn plan(
        self,
        index: &OffsetIndex,
        time_index: &TimeIndex,
        interval_bytes: u32,
        at: Placement,
    ) -> IndexPlan {
        let due = index.len() == 0 || self.bytes_since_entry >= u64::from(interval_bytes);
        if !due {
            let cursor = IndexCursor {
                bytes_since_entry: self.bytes_since_entry + at.batch_bytes,
            };
            return IndexPlan {
                entry: None,
                time_entry: None,
                cursor,
            };
        }
        let time_entry = time_index
            .would_grow(at.max_timestamp)
            .then_some(TimeEntry {
                max_timestamp: at.max_timestamp,
                relative_offset: at.relative_offset,
            });
        IndexPlan {
            entry: Some(IndexEntry {
                relative_offset: at.relative_offset,
                position: at.position,
            }),
            time_entry,
            cursor: IndexCursor {
                bytes_since_entry: at.batch_bytes,
            },
        }
    }
}

/// A batch of the active segment kept in memory.
#[derive(Debug, Clone)]
pub struct CachedBatch {
    pub base_offset: u64,
    pub next_offset: u64,
    pub data: Bytes,
}

/// The newest batches of the active segment, a contiguous run that always ends at the
/// segment's end, so any read starting inside it is served without touching the file.
#[derive(Debug, Default)]
pub struct TailCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
}

impl TailCache {
    /// Adds the newest batch and evicts the oldest beyond `bytes_max`.
    pub fn push(&mut self, batch: CachedBatch, bytes_max: usize) {
        self.bytes += batch.data.len();
        self.batches.push_back(batch);
        while self.bytes > bytes_max {
            match self.batches.pop_front() {
                Some(old) => self.bytes -= old.data.len(),
                None => break,
            }
        }
    }

    /// The cached batches from the one containing `offset` on, if the cache reaches back
    /// that far.
    pub fn batches_from(&self, offset: u64) -> Option<impl Iterator<Item = &CachedBatch>> {
        let front = self.batches.front()?;
        if offset < front.base_offset {
            return None;
        }
        let start = self.batches.partition_point(|b| b.next_offset <= offset);
        Some(self.batches.range(start..))
    }

    /// The cached batch starting at `base_offset`.
    pub fn get(&self, base_offset: u64) -> Option<&CachedBatch> {
        let at = self
            .batches
            .partition_point(|b| b.base_offset < base_offset);
        self.batches
            .get(at)
            .filter(|b| b.base_offset == base_offset)
    }
}

/// What only the active segment has.
#[derive(Debug)]
pub struct ActiveBody {
    pub file: Arc<File>,
    pub index_file: File,
    pub time_index_file: File,
    /// When the first batch was appended (or, after a restart, when the log was opened):
    /// the clock of age-based rolling.
    pub first_append_ms: Option<i64>,
    pub cursor: IndexCursor,
    pub tail: TailCache,
}

/// Active or sealed; see the module documentation.
#[derive(Debug)]
pub enum Body {
    Active(ActiveBody),
    /// The whole `.log`, mapped.
    Sealed(Bytes),
}

/// One segment and what the log knows about it.
#[derive(Debug)]
pub struct Segment {
    pub base_offset: u64,
    /// The offset after the last record; `base_offset` when empty.
    pub next_offset: u64,
    /// Bytes of the `.log`.
    pub size: u64,
    /// The newest record timestamp; `i64::MIN` when empty.
    pub max_timestamp: i64,
    /// Base offset of the last batch; meaningful when not empty.
    pub last_batch_base: u64,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    pub log_path: PathBuf,
    pub body: Body,
}

/// Limits of one read, shared by every segment it crosses.
#[derive(Debug)]
pub struct ReadBudget {
    pub max_bytes: usize,
    pub upper_bound: u64,
    pub bytes: usize,
    pub batches: Vec<Bytes>,
}

impl ReadBudget {
    /// Whether a batch at `base_offset` of `len` bytes may join the read. The first batch
    /// always may, whatever its size, so that a consumer always progresses.
    /// `planned_*` are batches already admitted but not yet added.
    fn admits(
        &self,
        base_offset: u64,
        len: usize,
        planned_batches: usize,
        planned_bytes: usize,
    ) -> bool {
        if base_offset >= self.upper_bound {
            return false;
        }
        let taken = self.batches.len() + planned_batches;
        taken == 0 || self.bytes + planned_bytes + len <= self.max_bytes
    }
}

/// Opens (creating or emptying) one of a segment's files for reading and writing.
pub fn open_rw(path: &Path, truncate: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
}

/// Maps the first `size` bytes of a sealed segment's `.log`.
pub fn map_sealed(file: &File, size: u64) -> io::Result<Bytes> {
    if size == 0 {
        // mmap refuses empty lengths; an empty segment has nothing to serve anyway.
        return Ok(Bytes::new());
    }
    let len = usize::try_from(size)
        .map_err(|_| io::Error::other("segment larger than the address space"))?;
    // SAFETY: the mapping is of a sealed segment, which this process never writes or
    // truncates again (only unlinks, which leaves the mapping valid). Another process
    // modifying the broker's data directory is outside the contract of the log.
    let map = unsafe { MmapOptions::new().len(len).map(file)? };
    Ok(Bytes::from_owner(map))
}

impl Segment {
    /// Creates an empty active segment at `base_offset`, emptying any leftover files of
    /// that name (none can be mapped: mapped segments all start below the log end).
    pub fn create(dir: &Path, base_offset: u64) -> io::Result<Self> {
        let log_path = segment_path(dir, base_offset, LOG_EXTENSION);
        let file = open_rw(&log_path, true)?;
        let index_file = open_rw(&segment_path(dir, base_offset, INDEX_EXTENSION), true)?;
        let time_index_file = open_rw(&segment_path(dir, base_offset, TIME_INDEX_EXTENSION), true)?;
        Ok(Self {
            base_offset,
            next_offset: base_offset,
            size: 0,
            max_timestamp: i64::MIN,
            last_batch_base: base_offset,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            log_path,
            body: Body::Active(ActiveBody {
                file: Arc::new(file),
                index_file,
                time_index_file,
                first_append_ms: None,
                cursor: IndexCursor::default(),
                tail: TailCache::default(),
            }),
        })
    }

    /// Whether the segment holds no batch.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The active body, if this is the active segment.
    pub fn active(&self) -> Option<&ActiveBody> {
        match &self.body {
            Body::Active(active) => Some(active),
            Body::Sealed(_) => None,
        }
    }

    fn relative(&self, offset: u64) -> u32 {
        u32::try_from(offset - self.base_offset)
            .expect("appends roll before a relative offset outgrows u32")
    }

    /// Writes a stamped, validated batch at the end of the active segment with its index
    /// entries. On error the files and the segment are as they were.
    pub fn append(
        &mut self,
        data: Bytes,
        header: &BatchHeader,
        interval_bytes: u32,
        tail_cache_bytes: usize,
        now_ms: i64,
    ) -> io::Result<()> {
        let position = self.size;
        let relative_offset = self.relative(header.base_offset);
        let max_timestamp = self.max_timestamp.max(header.max_timestamp);
        let Body::Active(active) = &mut self.body else {
            unreachable!("the log appends to its last segment, which is active");
        };
        let position32 =
            u32::try_from(position).expect("appends roll before a position outgrows u32");
        let plan = active.cursor.plan(
            &self.index,
            &self.time_index,
            interval_bytes,
            Placement {
                relative_offset,
                position: position32,
                batch_bytes: data.len() as u64,
                max_timestamp,
            },
        );
        if let Err(e) = active.file.write_all_at(&data, position) {
            // A partial write must not stay: the next append would land after garbage.
            let _ = active.file.set_len(position);
            return Err(e);
        }
        let (index_len, time_len) = (self.index.len(), self.time_index.len());
        let indexed = plan
            .entry
            .map_or(Ok(()), |e| self.index.append(e, &active.index_file))
            .and_then(|()| {
                plan.time_entry.map_or(Ok(()), |e| {
                    self.time_index.append(e, &active.time_index_file)
                })
            });
        if let Err(e) = indexed {
            let _ = self.index.truncate(index_len, &active.index_file);
            let _ = self.time_index.truncate(time_len, &active.time_index_file);
            let _ = active.file.set_len(position);
            return Err(e);
        }
        active.cursor = plan.cursor;
        active.first_append_ms.get_or_insert(now_ms);
        active.tail.push(
            CachedBatch {
                base_offset: header.base_offset,
                next_offset: header.next_offset(),
                data: data.clone(),
            },
            tail_cache_bytes,
        );
        self.size += data.len() as u64;
        self.next_offset = header.next_offset();
        self.max_timestamp = max_timestamp;
        self.last_batch_base = header.base_offset;
        Ok(())
    }

    /// First half of sealing, which changes nothing a reader sees: a last time index
    /// entry carrying the segment's maximum timestamp at its last batch, then fdatasync of both indexes and
    /// the `.log`. Indexes go first so that a crash in between leaves this segment the
    /// last on disk, which recovery scans in full. Done before the next segment's files
    /// exist, so a sealed segment on disk is always durable.
    pub fn prepare_seal(&mut self) -> io::Result<()> {
        let sealing_entry = if self.is_empty() {
            None
        } else {
            let relative_offset = u32::try_from(self.last_batch_base - self.base_offset)
                .expect("appends roll before a relative offset outgrows u32");
            self.time_index
                .sealing_entry(self.max_timestamp, relative_offset)
        };
        let Body::Active(active) = &mut self.body else {
            return Ok(());
        };
        if let Some(entry) = sealing_entry {
            self.time_index.append(entry, &active.time_index_file)?;
        }
        active.index_file.sync_data()?;
        active.time_index_file.sync_data()?;
        active.file.sync_data()
    }

    /// Second half of sealing: maps the `.log`; from here on reads are slices of the
    /// mapping. On error the segment stays active.
    pub fn finish_seal(&mut self) -> io::Result<()> {
        let Body::Active(active) = &self.body else {
            return Ok(());
        };
        let data = map_sealed(&active.file, self.size)?;
        self.body = Body::Sealed(data);
        Ok(())
    }

    fn corrupt(&self, position: u64, reason: &'static str) -> ReadError {
        ReadError::Corrupt {
            path: self.log_path.clone(),
            position,
            reason,
        }
    }

    fn io(&self, source: io::Error) -> ReadError {
        ReadError::Io {
            path: self.log_path.clone(),
            source,
        }
    }

    /// The header of the batch at `position`, checked to lie inside the segment.
    pub fn header_at(&self, position: u64) -> Result<BatchHeader, ReadError> {
        if position + BATCH_HEADER_BYTES as u64 > self.size {
            return Err(self.corrupt(position, "batch header runs past the segment end"));
        }
        let parsed = match &self.body {
            Body::Sealed(data) => {
                let at = position as usize;
                BatchHeader::parse(&data[at..at + BATCH_HEADER_BYTES])
            }
            Body::Active(active) => {
                let mut raw = [0u8; BATCH_HEADER_BYTES];
                active
                    .file
                    .read_exact_at(&mut raw, position)
                    .map_err(|e| self.io(e))?;
                BatchHeader::parse(&raw)
            }
        };
        let header = parsed.map_err(|_| self.corrupt(position, "batch header does not parse"))?;
        if header.total_bytes() < BATCH_HEADER_BYTES {
            return Err(self.corrupt(position, "batch length is shorter than its header"));
        }
        if position + header.total_bytes() as u64 > self.size {
            return Err(self.corrupt(position, "batch runs past the segment end"));
        }
        Ok(header)
    }

    /// The position and header of the batch containing `offset`, found through the
    /// sparse index and then a walk over headers (at most `index_interval_bytes` of them).
    pub fn locate(&self, offset: u64) -> Result<(u64, BatchHeader), ReadError> {
        let mut position = self
            .index
            .floor(self.relative(offset))
            .map_or(0, |e| u64::from(e.position));
        loop {
            let header = self.header_at(position)?;
            if header.base_offset > offset {
                return Err(self.corrupt(position, "index points past the offset sought"));
            }
            if header.next_offset() > offset {
                return Ok((position, header));
            }
            position += header.total_bytes() as u64;
        }
    }

    /// The bytes of the batch at `position`: a slice of the mapping, a cached batch, or
    /// read from the active file.
    pub fn batch_at(&self, position: u64, header: &BatchHeader) -> Result<Bytes, ReadError> {
        let len = header.total_bytes();
        match &self.body {
            Body::Sealed(data) => Ok(data.slice(position as usize..position as usize + len)),
            Body::Active(active) => {
                if let Some(cached) = active.tail.get(header.base_offset) {
                    return Ok(cached.data.clone());
                }
                self.read_at(active, position, len)
            }
        }
    }

    fn read_at(&self, active: &ActiveBody, position: u64, len: usize) -> Result<Bytes, ReadError> {
        let mut buf = BytesMut::zeroed(len);
        active
            .file
            .read_exact_at(&mut buf, position)
            .map_err(|e| self.io(e))?;
        Ok(buf.freeze())
    }

    /// Adds to `budget` the batches from the one containing `offset` on, within the
    /// budget's limits. Returns whether the read may go on into the next segment.
    pub fn read(&self, offset: u64, budget: &mut ReadBudget) -> Result<bool, ReadError> {
        if offset >= self.next_offset {
            return Ok(true);
        }
        if let Body::Active(active) = &self.body
            && let Some(cached) = active.tail.batches_from(offset)
        {
            for batch in cached {
                if !budget.admits(batch.base_offset, batch.data.len(), 0, 0) {
                    return Ok(false);
                }
                budget.bytes += batch.data.len();
                budget.batches.push(batch.data.clone());
            }
            return Ok(true);
        }
        let (mut position, mut header) = self.locate(offset)?;
        // Batches admitted as (position, len), copied out once at the end for the active
        // segment; sliced directly for a sealed one.
        let mut planned: Vec<(u64, usize)> = Vec::new();
        let mut planned_bytes = 0usize;
        let mut exhausted = false;
        loop {
            let len = header.total_bytes();
            if !budget.admits(header.base_offset, len, planned.len(), planned_bytes) {
                break;
            }
            planned.push((position, len));
            planned_bytes += len;
            position += len as u64;
            if position >= self.size {
                exhausted = true;
                break;
            }
            header = self.header_at(position)?;
        }
        match &self.body {
            Body::Sealed(data) => {
                for (at, len) in planned {
                    budget
                        .batches
                        .push(data.slice(at as usize..at as usize + len));
                }
            }
            Body::Active(active) => {
                if let (Some(&(first, _)), Some(&(last, last_len))) =
                    (planned.first(), planned.last())
                {
                    let run = self.read_at(active, first, (last - first) as usize + last_len)?;
                    for (at, len) in planned {
                        let from = (at - first) as usize;
                        budget.batches.push(run.slice(from..from + len));
                    }
                }
            }
        }
        budget.bytes += planned_bytes;
        Ok(exhausted)
    }

    /// The offset of the first record at or after `timestamp_ms`, in offset order: the
    /// time index skips batches known to be older, then batch headers are scanned and the
    /// first batch whose maximum reaches the target is decoded.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>, ReadError> {
        if self.is_empty() || self.max_timestamp < timestamp_ms {
            return Ok(None);
        }
        let mut position = match self.time_index.last_below(timestamp_ms) {
            Some(entry) => {
                self.locate(self.base_offset + u64::from(entry.relative_offset))?
                    .0
            }
            None => 0,
        };
        while position < self.size {
            let header = self.header_at(position)?;
            if header.max_timestamp >= timestamp_ms {
                let batch = self.batch_at(position, &header)?;
                let records = decode_records(&batch).map_err(|source| ReadError::InvalidBatch {
                    path: self.log_path.clone(),
                    position,
                    source,
                })?;
                if let Some(record) = records.iter().find(|r| r.timestamp >= timestamp_ms) {
                    return Ok(Some(record.offset));
                }
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }
}
