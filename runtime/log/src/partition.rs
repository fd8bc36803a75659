//! One partition's log: a directory of segments, appended at the end, read anywhere,
//! trimmed at the start by retention.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use quiver_wire::batch::{BatchHeader, stamp, validate};

use crate::config::LogConfig;
use crate::durability::SyncTarget;
use crate::error::{AppendError, LogError, OpenError, ReadError, TruncateError};
use crate::producer_state::{ProducerStateTable, SequenceCheck};
use crate::recovery::{RecoveryReport, list_segments, load_sealed, recover_active};
use crate::retention::{RetentionReport, SegmentSummary, segments_to_delete};
use crate::segment::{
    INDEX_EXTENSION, LOG_EXTENSION, ReadBudget, Segment, TIME_INDEX_EXTENSION, segment_path,
};

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// The offset given to the batch's first record.
    pub base_offset: u64,
    /// The offset of the batch's last record.
    pub last_offset: u64,
    /// The log end offset after the append.
    pub log_end_offset: u64,
    /// The batch's newest record timestamp.
    pub max_timestamp: i64,
    pub record_count: u32,
    /// Bytes of the batch as stored.
    pub bytes: usize,
    /// Whether a new segment was started for this batch.
    pub rolled: bool,
    /// The batch was a retry of one already stored: nothing was written, and the
    /// offsets are those it got the first time.
    pub duplicate: bool,
}

/// Whole batches, as stored, for a fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadSlice {
    /// Slices of mapped sealed segments, cached batches, or (for older data of the
    /// active segment) one buffer read from the file.
    pub batches: Vec<Bytes>,
    /// Sum of the batches' lengths.
    pub bytes: usize,
}

/// One partition's log. Not internally synchronised: the broker holds it behind its own
/// lock and runs [`SyncTarget::sync`] outside that lock.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Ascending by base offset, never empty; the last one is the active segment and
    /// every other is sealed.
    segments: Vec<Segment>,
    log_start_offset: u64,
    flushed_offset: u64,
    size_bytes: u64,
    producers: ProducerStateTable,
}

/// fsyncs a directory so that files created in it survive a power loss.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_index_files(dir: &Path, base_offset: u64) -> Result<(), LogError> {
    for extension in [INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
        let path = segment_path(dir, base_offset, extension);
        remove_if_present(&path).map_err(|source| LogError::Io { path, source })?;
    }
    Ok(())
}

impl PartitionLog {
    /// Opens the log in `dir`, creating the directory and a first empty segment when
    /// missing, and recovers it: sealed segments are checked through their indexes, the active one is
    /// scanned and cut at a torn tail (see [`RecoveryReport`]). `now_ms` starts the age clock
    /// of a non-empty active segment.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<(Self, RecoveryReport), OpenError> {
        let io_at = |path: &Path| {
            let path = path.to_owned();
            move |source| OpenError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let bases = list_segments(dir).map_err(io_at(dir))?;
        let mut report = RecoveryReport::default();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let segment = match bases.get(i + 1) {
                Some(&next) => load_sealed(dir, base, next, &config, &mut report)?,
                None => recover_active(dir, base, &config, now_ms, &mut report)?,
            };
            segments.push(segment);
        }
        if segments.is_empty() {
            let segment = Segment::create(dir, 0).map_err(io_at(dir))?;
            sync_dir(dir).map_err(io_at(dir))?;
            segments.push(segment);
        }
        report.segments = segments.len();
        let log_start_offset = segments.first().map_or(0, |s| s.base_offset);
        let log_end_offset = segments.last().map_or(0, |s| s.next_offset);
        let size_bytes = segments.iter().map(|s| s.size).sum();
        let mut log = Self {
            dir: dir.to_owned(),
            config,
            segments,
            log_start_offset,
            // Recovery fdatasyncs the active segment and sealed ones were synced when
            // sealed: everything present is durable.
            flushed_offset: log_end_offset,
            size_bytes,
            producers: ProducerStateTable::default(),
        };
        log.producers = log.rebuild_producer_state()?;
        Ok((log, report))
    }

    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }

    /// Validates `batch` against [`LogConfig::batch_bytes_max`], rolls the active segment
    /// if it is full or old, gives the batch the next offset and `leader_epoch`, and
    /// writes it at the end of the log (no fsync: see [`Self::sync_target`]). On error
    /// nothing was stored.
    pub fn append(
        &mut self,
        batch: BytesMut,
        leader_epoch: u32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        self.append_checked(batch, None, leader_epoch, now_ms)
    }

    /// Appends a batch a produce-stage plugin rewrote from `original`, the batch the
    /// producer sent. The producer's sequence is checked against `original`, so a retry
    /// of it is answered as a duplicate and the next batch follows on. The rewritten
    /// batch carries the same producer and ends on the same sequence (its base sequence
    /// is moved so that base + count - 1 is the original's last), which is what the
    /// producer state rebuilt from the log at open needs.
    pub fn append_transformed(
        &mut self,
        batch: BytesMut,
        original: &BatchHeader,
        leader_epoch: u32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        self.append_checked(batch, Some(original), leader_epoch, now_ms)
    }

    fn append_checked(
        &mut self,
        mut batch: BytesMut,
        original: Option<&BatchHeader>,
        leader_epoch: u32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        let validated = validate(&batch, self.config.batch_bytes_effective())?;
        match self.producers.check(original.unwrap_or(&validated)) {
            SequenceCheck::Append => {}
            SequenceCheck::Duplicate {
                base_offset,
                last_offset,
            } => {
                return Ok(AppendInfo {
                    base_offset,
                    last_offset,
                    log_end_offset: self.log_end_offset(),
                    max_timestamp: validated.max_timestamp,
                    record_count: validated.record_count,
                    bytes: 0,
                    rolled: false,
                    duplicate: true,
                });
            }
            SequenceCheck::OutOfOrder { expected, received } => {
                return Err(AppendError::OutOfOrderSequence { expected, received });
            }
            SequenceCheck::Fenced { current, received } => {
                return Err(AppendError::ProducerFenced { current, received });
            }
        }
        let rolled = self.should_roll(&validated, batch.len(), now_ms);
        if rolled {
            self.roll()?;
        }
        let base_offset = self.log_end_offset();
        stamp(&mut batch, base_offset, leader_epoch);
        let header = BatchHeader {
            base_offset,
            leader_epoch,
            ..validated
        };
        let data = batch.freeze();
        let bytes = data.len();
        let (interval, cache) = (
            self.config.index_interval_bytes,
            self.config.tail_cache_bytes,
        );
        let active = self.active_mut();
        active
            .append(data, &header, interval, cache, now_ms)
            .map_err(|source| AppendError::io(active.log_path.clone(), source))?;
        self.size_bytes += bytes as u64;
        self.producers.record(&header);
        Ok(AppendInfo {
            base_offset,
            last_offset: header.last_offset(),
            log_end_offset: header.next_offset(),
            max_timestamp: header.max_timestamp,
            record_count: header.record_count,
            bytes,
            rolled,
            duplicate: false,
        })
    }

    /// How an idempotent producer's batch relates to what is stored, without
    /// appending it.
    pub fn check_sequence(&self, header: &BatchHeader) -> SequenceCheck {
        self.producers.check(header)
    }

    /// Reads every batch header to rebuild the idempotent producers' state. Sealed
    /// segments are mapped, so this touches only the header pages.
    fn rebuild_producer_state(&self) -> Result<ProducerStateTable, OpenError> {
        const CHUNK_BYTES: usize = 64 * 1024 * 1024;
        let mut table = ProducerStateTable::default();
        let (mut offset, end) = (self.log_start_offset, self.log_end_offset());
        while offset < end {
            let slice = self
                .read(offset, CHUNK_BYTES, end)
                .map_err(|e| OpenError::Io {
                    path: self.dir.clone(),
                    source: io::Error::other(e.to_string()),
                })?;
            if slice.batches.is_empty() {
                break;
            }
            for batch in &slice.batches {
                let header = BatchHeader::parse(batch).map_err(|e| OpenError::Io {
                    path: self.dir.clone(),
                    source: io::Error::other(e.to_string()),
                })?;
                table.record(&header);
                offset = header.next_offset();
            }
        }
        Ok(table)
    }

    fn should_roll(&self, header: &BatchHeader, batch_bytes: usize, now_ms: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        let full = active.size + batch_bytes as u64 > self.config.segment_bytes_effective();
        let first_append_ms = active.active().and_then(|a| a.first_append_ms);
        let old = match (self.config.segment_age_max_ms, first_append_ms) {
            (Some(age_max_ms), Some(first_ms)) => {
                now_ms.saturating_sub(first_ms) > i64::try_from(age_max_ms).unwrap_or(i64::MAX)
            }
            _ => false,
        };
        // Relative offsets in the indexes are 32 bits.
        let last_relative =
            active.next_offset + u64::from(header.last_offset_delta) - active.base_offset;
        full || old || last_relative > u64::from(u32::MAX)
    }

    /// Seals the active segment (durable, then mapped) and starts a new one at the log
    /// end. Every fallible step runs before anything changes, so on error the log is as
    /// it was.
    fn roll(&mut self) -> Result<(), AppendError> {
        let dir = self.dir.clone();
        let new_base = self.log_end_offset();
        let io_at = |path: PathBuf| move |source| AppendError::io(path, source);
        let sealing = self.active_mut();
        let sealing_path = sealing.log_path.clone();
        sealing
            .prepare_seal()
            .map_err(io_at(sealing_path.clone()))?;
        let created = Segment::create(&dir, new_base).and_then(|s| sync_dir(&dir).map(|()| s));
        let fresh = match created {
            Ok(fresh) => fresh,
            Err(e) => {
                self.discard_files(new_base);
                return Err(io_at(segment_path(&dir, new_base, LOG_EXTENSION))(e));
            }
        };
        if let Err(e) = self.active_mut().finish_seal() {
            drop(fresh);
            self.discard_files(new_base);
            return Err(io_at(sealing_path)(e));
        }
        self.segments.push(fresh);
        // The sealed segment was fdatasync'd by prepare_seal.
        self.flushed_offset = self.flushed_offset.max(new_base);
        Ok(())
    }

    /// Best-effort removal of a segment that never became part of the log.
    fn discard_files(&self, base_offset: u64) {
        for extension in [LOG_EXTENSION, INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
            let _ = remove_if_present(&segment_path(&self.dir, base_offset, extension));
        }
    }

    /// What must be fdatasync'd for everything appended so far to be durable. Sealed
    /// segments are synced when sealed, so at most the active segment is listed.
    pub fn sync_target(&self) -> SyncTarget {
        let up_to_offset = self.log_end_offset();
        let files = match self.active().active() {
            Some(active) if self.flushed_offset < up_to_offset => vec![active.file.clone()],
            _ => Vec::new(),
        };
        SyncTarget {
            files,
            up_to_offset,
        }
    }

    /// Records that a [`SyncTarget`] reaching `up_to_offset` was synced. Progress only
    /// moves forward; a stale report is ignored.
    pub fn mark_synced(&mut self, up_to_offset: u64) {
        let up_to_offset = up_to_offset.min(self.log_end_offset());
        self.flushed_offset = self.flushed_offset.max(up_to_offset);
    }

    /// Every offset below this is on disk and fdatasync'd.
    pub fn flushed_offset(&self) -> u64 {
        self.flushed_offset
    }

    /// Whole batches from the one containing `offset`, stopping before a batch whose
    /// base offset reaches `upper_bound` and before the batch that would take the read
    /// past `max_bytes`, except that the first batch is always returned. Sealed data is
    /// returned as slices of the segment mappings, never copied.
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        upper_bound: u64,
    ) -> Result<ReadSlice, ReadError> {
        let (log_start, log_end) = (self.log_start_offset, self.log_end_offset());
        if offset < log_start || offset > log_end {
            return Err(ReadError::OffsetOutOfRange {
                requested: offset,
                log_start,
                log_end,
            });
        }
        let mut budget = ReadBudget {
            max_bytes,
            upper_bound,
            bytes: 0,
            batches: Vec::new(),
        };
        if offset < log_end {
            let first = self
                .segments
                .partition_point(|s| s.base_offset <= offset)
                .saturating_sub(1);
            for segment in &self.segments[first..] {
                if !segment.read(offset.max(segment.base_offset), &mut budget)? {
                    break;
                }
            }
        }
        Ok(ReadSlice {
            batches: budget.batches,
            bytes: budget.bytes,
        })
    }

    /// The offset of the first record, in offset order, whose timestamp is at least
    /// `timestamp_ms`, found in the first batch whose maximum timestamp reaches it.
    /// `None` when no record is that new.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>, ReadError> {
        for segment in &self.segments {
            if let Some(offset) = segment.offset_for_timestamp(timestamp_ms)? {
                return Ok(Some(offset));
            }
        }
        Ok(None)
    }

    /// Deletes the sealed segments that retention no longer keeps (whole segments,
    /// oldest first: newest record older than `retention_ms`, or the log still at least
    /// `retention_bytes` without it) and advances the log start offset.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<RetentionReport, LogError> {
        let sealed = &self.segments[..self.segments.len() - 1];
        let summaries: Vec<SegmentSummary> = sealed
            .iter()
            .map(|s| SegmentSummary {
                size: s.size,
                max_timestamp: s.max_timestamp,
            })
            .collect();
        let count = segments_to_delete(&summaries, self.size_bytes, &self.config, now_ms);
        let mut report = RetentionReport::default();
        for _ in 0..count {
            let oldest = &self.segments[0];
            let path = oldest.log_path.clone();
            // Unlinking a mapped file is safe: the mapping, and any batch a reader still
            // holds, stays valid until dropped.
            remove_if_present(&path).map_err(|source| LogError::Io { path, source })?;
            let oldest = self.segments.remove(0);
            self.size_bytes -= oldest.size;
            self.log_start_offset = self.segments[0].base_offset;
            report.segments_deleted += 1;
            report.bytes_deleted += oldest.size;
            remove_index_files(&self.dir, oldest.base_offset)?;
        }
        report.log_start_offset = self.log_start_offset;
        Ok(report)
    }

    /// Removes every batch at or after `offset`, so the next append gets `offset`. A
    /// follower does this when it finds its log diverged from the leader's (the end of
    /// the last leader epoch they share, KIP-101/KIP-279). `offset` must be a batch
    /// boundary at or above the log start; at or beyond the log end it changes nothing.
    ///
    /// Sealed segments are mapped, and readers may hold slices of a mapping, so none is
    /// cut in place: segments wholly after `offset` are unlinked (a mapping outlives
    /// its file's name), and a sealed segment holding `offset` is rewritten up to it
    /// into a new file renamed over the old one. That segment becomes the active one.
    /// Indexes of the cut segment are rebuilt and the producer state is rebuilt from
    /// what remains.
    pub fn truncate_to(&mut self, offset: u64, now_ms: i64) -> Result<(), TruncateError> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        if offset < self.log_start_offset {
            return Err(TruncateError::BelowLogStart {
                offset,
                log_start: self.log_start_offset,
            });
        }
        let at = self
            .segments
            .iter()
            .rposition(|s| s.base_offset <= offset)
            .unwrap_or(0);
        let (position, header) = self.segments[at].locate(offset)?;
        if header.base_offset != offset {
            return Err(TruncateError::NotBatchBoundary {
                offset,
                batch_base: header.base_offset,
            });
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| TruncateError::Io { path, source }
        };
        for gone in self.segments.drain(at + 1..) {
            remove_if_present(&gone.log_path).map_err(io(&gone.log_path))?;
            for extension in [INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
                let path = segment_path(&self.dir, gone.base_offset, extension);
                remove_if_present(&path).map_err(io(&path))?;
            }
        }
        let cut = self.segments.pop().expect("the segment holding the offset");
        let (base, log_path) = (cut.base_offset, cut.log_path.clone());
        match &cut.body {
            crate::segment::Body::Sealed(mapped) => {
                let len = usize::try_from(position)
                    .unwrap_or(usize::MAX)
                    .min(mapped.len());
                let tmp = log_path.with_extension("truncating");
                {
                    let mut file = File::create(&tmp).map_err(io(&tmp))?;
                    std::io::Write::write_all(&mut file, &mapped[..len]).map_err(io(&tmp))?;
                    file.sync_all().map_err(io(&tmp))?;
                }
                fs::rename(&tmp, &log_path).map_err(io(&log_path))?;
            }
            crate::segment::Body::Active(active) => {
                active.file.set_len(position).map_err(io(&log_path))?;
                active.file.sync_all().map_err(io(&log_path))?;
            }
        }
        drop(cut);
        for extension in [INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
            let path = segment_path(&self.dir, base, extension);
            remove_if_present(&path).map_err(io(&path))?;
        }
        sync_dir(&self.dir).map_err(io(&self.dir))?;
        let mut report = RecoveryReport::default();
        let active = recover_active(&self.dir, base, &self.config, now_ms, &mut report)?;
        self.segments.push(active);
        self.size_bytes = self.segments.iter().map(|s| s.size).sum();
        self.flushed_offset = self.flushed_offset.min(offset);
        self.producers = self.rebuild_producer_state()?;
        Ok(())
    }

    /// The first offset still stored.
    pub fn log_start_offset(&self) -> u64 {
        self.log_start_offset
    }

    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> u64 {
        self.active().next_offset
    }

    /// Bytes of all `.log` files.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings in force.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the settings; they apply from the next append or retention pass.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// Removes the partition's directory and everything in it. Batches handed out by
    /// earlier reads stay valid.
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(&dir).map_err(|source| LogError::Io { path: dir, source })
    }
}
