//! Opening a partition directory after a clean or an unclean shutdown.
//!
//! Sealed segments were fdatasync'd when sealed, so they are trusted once their indexes
//! check out (last entries point at real batch headers, the headers after them chain up
//! to the end of the file); a segment whose index does not check out is scanned and its
//! index rewritten. The active segment may end in a torn write: it is scanned in full,
//! CRC included, and cut at the first batch that is torn, fails its checks, or does not
//! carry the next offset.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use quiver_wire::batch::{
    BATCH_BYTES_MAX, BATCH_HEADER_BYTES, BATCH_LENGTH_PREFIX_BYTES, BatchError, BatchHeader,
    validate_framing,
};

use crate::config::{LogConfig, SEGMENT_BYTES_CEILING};
use crate::error::{BatchFault, OpenError};
use crate::index::OffsetIndex;
use crate::segment::{
    ActiveBody, Body, CachedBatch, INDEX_EXTENSION, IndexCursor, LOG_EXTENSION, Placement, Segment,
    TIME_INDEX_EXTENSION, TailCache, map_sealed, open_rw, parse_log_name, segment_path,
};
use crate::time_index::TimeIndex;

/// What [`crate::PartitionLog::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments in the log after opening.
    pub segments: usize,
    /// Batches checked one by one (the active segment's, and those of sealed segments
    /// whose indexes had to be rebuilt).
    pub batches_scanned: u64,
    /// Bytes cut off the end of the active segment.
    pub truncated_bytes: u64,
    /// `.index` and `.timeindex` files of sealed segments found missing or invalid and
    /// rewritten. The active segment's are always rewritten from its scan and not counted.
    pub indexes_rebuilt: usize,
}

/// Base offsets of the segments in `dir`, ascending. Files that are not segment logs
/// are left alone.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_log_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// The indexes and bookkeeping a scan builds, batch by batch.
struct Scan {
    base_offset: u64,
    next_offset: u64,
    size: u64,
    max_timestamp: i64,
    last_batch_base: u64,
    index: OffsetIndex,
    time_index: TimeIndex,
    cursor: IndexCursor,
    batches: u64,
}

impl Scan {
    fn new(base_offset: u64) -> Self {
        Self {
            base_offset,
            next_offset: base_offset,
            size: 0,
            max_timestamp: i64::MIN,
            last_batch_base: base_offset,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            cursor: IndexCursor::default(),
            batches: 0,
        }
    }

    /// Checks one whole batch found at the scan's position.
    fn check(&self, batch: &[u8]) -> Result<BatchHeader, BatchFault> {
        let header = validate_framing(batch, BATCH_BYTES_MAX)?;
        if header.base_offset != self.next_offset {
            return Err(BatchFault::OutOfSequence {
                expected: self.next_offset,
                found: header.base_offset,
            });
        }
        let span = header.last_offset() - self.base_offset;
        if span > u64::from(u32::MAX) || self.size + batch.len() as u64 > SEGMENT_BYTES_CEILING {
            return Err(BatchFault::OutOfSpan);
        }
        Ok(header)
    }

    /// Takes a checked batch into the indexes.
    fn accept(&mut self, header: &BatchHeader, interval_bytes: u32) {
        let max_timestamp = self.max_timestamp.max(header.max_timestamp);
        let plan = self.cursor.plan(
            &self.index,
            &self.time_index,
            interval_bytes,
            Placement {
                relative_offset: u32::try_from(header.base_offset - self.base_offset)
                    .expect("checked by Scan::check"),
                position: u32::try_from(self.size).expect("checked by Scan::check"),
                batch_bytes: header.total_bytes() as u64,
                max_timestamp,
            },
        );
        if let Some(entry) = plan.entry {
            self.index.push(entry);
        }
        if let Some(entry) = plan.time_entry {
            self.time_index.push(entry);
        }
        self.cursor = plan.cursor;
        self.max_timestamp = max_timestamp;
        self.last_batch_base = header.base_offset;
        self.next_offset = header.next_offset();
        self.size += header.total_bytes() as u64;
        self.batches += 1;
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

fn write_file(path: &Path, raw: &[u8]) -> Result<File, OpenError> {
    let mut file = open_rw(path, true).map_err(io_at(path))?;
    file.write_all(raw).map_err(io_at(path))?;
    Ok(file)
}

/// Reads the batch at `position` of `file` into `buf`, or says why there is none.
fn read_batch_at(
    file: &File,
    file_len: u64,
    position: u64,
    buf: &mut Vec<u8>,
) -> io::Result<Result<(), BatchFault>> {
    let remaining = file_len - position;
    if remaining < BATCH_LENGTH_PREFIX_BYTES as u64 {
        return Ok(Err(BatchFault::Torn));
    }
    let mut prefix = [0u8; BATCH_LENGTH_PREFIX_BYTES];
    file.read_exact_at(&mut prefix, position)?;
    let total = BatchHeader::total_bytes_at(&prefix).expect("the prefix holds batch_length");
    // Cap before allocating: a garbled length must not make us allocate gigabytes.
    if total > BATCH_BYTES_MAX {
        return Ok(Err(BatchError::TooLarge {
            bytes: total,
            limit: BATCH_BYTES_MAX,
        }
        .into()));
    }
    if total as u64 > remaining {
        return Ok(Err(BatchFault::Torn));
    }
    buf.resize(total, 0);
    file.read_exact_at(buf, position)?;
    Ok(Ok(()))
}

/// Scans the active segment at `base_offset`, cuts its torn tail, rewrites its indexes
/// and fdatasyncs it, so that everything it holds afterwards is durable.
pub fn recover_active(
    dir: &Path,
    base_offset: u64,
    config: &LogConfig,
    now_ms: i64,
    report: &mut RecoveryReport,
) -> Result<Segment, OpenError> {
    let path = segment_path(dir, base_offset, LOG_EXTENSION);
    let file = open_rw(&path, false).map_err(io_at(&path))?;
    let file_len = file.metadata().map_err(io_at(&path))?.len();
    let mut scan = Scan::new(base_offset);
    let mut tail = TailCache::default();
    let mut buf = Vec::new();
    while scan.size < file_len {
        if read_batch_at(&file, file_len, scan.size, &mut buf)
            .map_err(io_at(&path))?
            .is_err()
        {
            break;
        }
        let Ok(header) = scan.check(&buf) else { break };
        scan.accept(&header, config.index_interval_bytes);
        let cached = CachedBatch {
            base_offset: header.base_offset,
            next_offset: header.next_offset(),
            data: Bytes::copy_from_slice(&buf),
        };
        tail.push(cached, config.tail_cache_bytes);
    }
    if scan.size < file_len {
        file.set_len(scan.size).map_err(io_at(&path))?;
        report.truncated_bytes += file_len - scan.size;
    }
    // Also makes what a crashed process left in the page cache durable, so the log can
    // start with everything it holds counted as flushed.
    file.sync_all().map_err(io_at(&path))?;
    report.batches_scanned += scan.batches;
    let index_file = write_file(
        &segment_path(dir, base_offset, INDEX_EXTENSION),
        &scan.index.encode(),
    )?;
    let time_index_file = write_file(
        &segment_path(dir, base_offset, TIME_INDEX_EXTENSION),
        &scan.time_index.encode(),
    )?;
    Ok(Segment {
        base_offset,
        next_offset: scan.next_offset,
        size: scan.size,
        max_timestamp: scan.max_timestamp,
        last_batch_base: scan.last_batch_base,
        index: scan.index,
        time_index: scan.time_index,
        log_path: path,
        body: Body::Active(ActiveBody {
            file: Arc::new(file),
            index_file,
            time_index_file,
            first_append_ms: (scan.size > 0).then_some(now_ms),
            cursor: scan.cursor,
            tail,
        }),
    })
}

/// What the headers after the last index entry say about a sealed segment's end.
struct IndexedTail {
    next_offset: u64,
    last_batch_base: u64,
    max_timestamp: i64,
}

/// The header at `position` of a mapped segment, if it and its batch lie inside it.
fn header_in(data: &[u8], position: usize) -> Option<BatchHeader> {
    let header = BatchHeader::parse(data.get(position..)?).ok()?;
    let fits = header.total_bytes() >= BATCH_HEADER_BYTES
        && position.checked_add(header.total_bytes())? <= data.len();
    fits.then_some(header)
}

/// Checks a sealed segment's offset index: its last entry must point at the header of
/// the batch it names, and the headers from there must chain to the end of the file.
fn check_offset_index(data: &[u8], base_offset: u64, index: &OffsetIndex) -> Option<IndexedTail> {
    let Some(last) = index.last() else {
        return data.is_empty().then_some(IndexedTail {
            next_offset: base_offset,
            last_batch_base: base_offset,
            max_timestamp: i64::MIN,
        });
    };
    let mut position = last.position as usize;
    let mut tail = IndexedTail {
        next_offset: base_offset + u64::from(last.relative_offset),
        last_batch_base: base_offset,
        max_timestamp: i64::MIN,
    };
    while position < data.len() {
        let header = header_in(data, position)?;
        if header.base_offset != tail.next_offset {
            return None;
        }
        tail.last_batch_base = header.base_offset;
        tail.max_timestamp = tail.max_timestamp.max(header.max_timestamp);
        tail.next_offset = header.next_offset();
        position += header.total_bytes();
    }
    (position == data.len() && !data.is_empty()).then_some(tail)
}

/// Checks a sealed segment's time index against its (checked) offset index: sealing
/// wrote a last entry at the last batch carrying the segment's maximum timestamp, so the
/// last entry must name the last batch, with at least the newest timestamp of the
/// batches after the last offset index entry.
fn check_time_index(
    base_offset: u64,
    time_index: &TimeIndex,
    tail: &IndexedTail,
    empty: bool,
) -> bool {
    let Some(last) = time_index.last() else {
        return empty;
    };
    !empty
        && base_offset + u64::from(last.relative_offset) == tail.last_batch_base
        && last.max_timestamp >= tail.max_timestamp
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, OpenError> {
    match fs::read(path) {
        Ok(raw) => Ok(Some(raw)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// Loads a sealed segment: maps it, checks or rebuilds its indexes, and checks that it
/// ends where the next segment starts.
pub fn load_sealed(
    dir: &Path,
    base_offset: u64,
    next_segment_base: u64,
    config: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<Segment, OpenError> {
    let path = segment_path(dir, base_offset, LOG_EXTENSION);
    let index_path = segment_path(dir, base_offset, INDEX_EXTENSION);
    let time_index_path = segment_path(dir, base_offset, TIME_INDEX_EXTENSION);
    let file = File::open(&path).map_err(io_at(&path))?;
    let size = file.metadata().map_err(io_at(&path))?.len();
    if size > SEGMENT_BYTES_CEILING {
        return Err(OpenError::CorruptSegment {
            path,
            position: 0,
            source: BatchFault::OutOfSpan,
        });
    }
    let data = map_sealed(&file, size).map_err(io_at(&path))?;

    let index = read_optional(&index_path)?.and_then(|raw| OffsetIndex::decode(&raw));
    let time_index = read_optional(&time_index_path)?.and_then(|raw| TimeIndex::decode(&raw));
    let indexed = index
        .as_ref()
        .and_then(|index| check_offset_index(&data, base_offset, index));
    let time_ok = match (&indexed, &time_index) {
        (Some(tail), Some(time_index)) => {
            check_time_index(base_offset, time_index, tail, data.is_empty())
        }
        _ => false,
    };

    let segment = match (index, indexed, time_index) {
        (Some(index), Some(tail), Some(time_index)) if time_ok => Segment {
            base_offset,
            next_offset: tail.next_offset,
            size,
            max_timestamp: time_index.last().map_or(i64::MIN, |e| e.max_timestamp),
            last_batch_base: tail.last_batch_base,
            index,
            time_index,
            log_path: path,
            body: Body::Sealed(data),
        },
        (_, indexed, _) => {
            let scan = scan_sealed(&path, &data, base_offset, config)?;
            report.batches_scanned += scan.batches;
            if indexed.is_none() {
                write_file(&index_path, &scan.index.encode())?;
                report.indexes_rebuilt += 1;
            }
            if !time_ok {
                write_file(&time_index_path, &scan.time_index.encode())?;
                report.indexes_rebuilt += 1;
            }
            Segment {
                base_offset,
                next_offset: scan.next_offset,
                size,
                max_timestamp: scan.max_timestamp,
                last_batch_base: scan.last_batch_base,
                index: scan.index,
                time_index: scan.time_index,
                log_path: path,
                body: Body::Sealed(data),
            }
        }
    };
    if segment.next_offset != next_segment_base {
        return Err(OpenError::Discontinuity {
            path: segment.log_path,
            expected: next_segment_base,
            found: segment.next_offset,
        });
    }
    Ok(segment)
}

/// Scans a whole mapped sealed segment. Any fault is corruption: sealed segments were
/// fdatasync'd before the next segment existed.
fn scan_sealed(
    path: &Path,
    data: &[u8],
    base_offset: u64,
    config: &LogConfig,
) -> Result<Scan, OpenError> {
    let mut scan = Scan::new(base_offset);
    let size = data.len() as u64;
    while scan.size < size {
        let at = scan.size as usize;
        let corrupt = |source| OpenError::CorruptSegment {
            path: path.to_owned(),
            position: scan.size,
            source,
        };
        let total = match BatchHeader::total_bytes_at(&data[at..]) {
            Some(total) if at + total <= data.len() => total,
            _ => return Err(corrupt(BatchFault::Torn)),
        };
        let header = scan.check(&data[at..at + total]).map_err(corrupt)?;
        scan.accept(&header, config.index_interval_bytes);
    }
    // A rebuilt time index ends as sealing ended it.
    if size > 0 {
        let relative_offset =
            u32::try_from(scan.last_batch_base - base_offset).expect("checked by Scan::check");
        if let Some(entry) = scan
            .time_index
            .sealing_entry(scan.max_timestamp, relative_offset)
        {
            scan.time_index.push(entry);
        }
    }
    Ok(scan)
}
