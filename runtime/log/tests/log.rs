//! Black-box tests of `PartitionLog` on real files in a temporary directory.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use quiver_log::{AppendError, LogConfig, PartitionLog, ReadError, ReadSlice};
use quiver_wire::batch::{
    BatchBuilder, BatchError, BatchHeader, ProducerStamp, Record, decode_records, stamp,
};

/// A tiny deterministic generator so that failures reproduce from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn batch_with(timestamps: &[i64], value_bytes: usize) -> BytesMut {
    let mut builder = BatchBuilder::new(ProducerStamp::NONE);
    for (i, &ts) in timestamps.iter().enumerate() {
        builder.push(&Record::from_value(vec![i as u8; value_bytes], ts));
    }
    BytesMut::from(builder.finish().expect("at least one record"))
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 2048,
        segment_age_max_ms: None,
        retention_bytes: None,
        retention_ms: None,
        index_interval_bytes: 256,
        tail_cache_bytes: 600,
        ..LogConfig::default()
    }
}

/// What the test expects the log to hold: every batch as stored, by base offset.
#[derive(Default)]
struct Model {
    batches: Vec<(u64, Bytes)>,
}

impl Model {
    fn end(&self) -> u64 {
        self.batches
            .last()
            .map_or(0, |(_, b)| header(b).next_offset())
    }

    /// Index of the batch containing `offset`.
    fn containing(&self, offset: u64) -> usize {
        self.batches
            .iter()
            .position(|(_, b)| header(b).next_offset() > offset)
            .expect("offset inside the model")
    }

    fn records(&self) -> Vec<(u64, i64, usize)> {
        let mut out = Vec::new();
        for (i, (_, b)) in self.batches.iter().enumerate() {
            for r in decode_records(b).expect("model batch decodes") {
                out.push((r.offset, r.timestamp, i));
            }
        }
        out
    }
}

fn header(batch: &[u8]) -> BatchHeader {
    BatchHeader::parse(batch).expect("stored batch header parses")
}

/// Appends a batch to both the log and the model.
fn append(log: &mut PartitionLog, model: &mut Model, batch: BytesMut, epoch: u32, now_ms: i64) {
    let mut expected = batch.clone();
    let info = log.append(batch, epoch, now_ms).expect("append");
    assert_eq!(info.base_offset, model.end());
    stamp(&mut expected, info.base_offset, epoch);
    model.batches.push((info.base_offset, expected.freeze()));
    assert_eq!(log.log_end_offset(), model.end());
}

fn random_batches(log: &mut PartitionLog, model: &mut Model, rng: &mut Rng, count: usize) {
    for _ in 0..count {
        let records = 1 + rng.below(5) as usize;
        let timestamps: Vec<i64> = (0..records)
            .map(|_| 1_000 + rng.below(10_000) as i64)
            .collect();
        let value_bytes = rng.below(200) as usize;
        append(log, model, batch_with(&timestamps, value_bytes), 3, 0);
    }
}

/// Checks every offset of the model reads back as the model's batches, to the end.
fn check_reads(log: &PartitionLog, model: &Model) {
    let end = model.end();
    assert_eq!(log.log_end_offset(), end);
    for offset in log.log_start_offset()..end {
        let slice = log.read(offset, usize::MAX, end).expect("read");
        let first = model.containing(offset);
        let expected: Vec<&Bytes> = model.batches[first..].iter().map(|(_, b)| b).collect();
        assert_eq!(
            slice.batches.len(),
            expected.len(),
            "batches read from offset {offset}"
        );
        for (got, want) in slice.batches.iter().zip(expected) {
            assert_eq!(got, want, "batch bytes read from offset {offset}");
        }
        assert_eq!(
            slice.bytes,
            slice.batches.iter().map(Bytes::len).sum::<usize>()
        );
    }
    assert_eq!(
        log.read(end, usize::MAX, end).expect("read at end"),
        ReadSlice::default()
    );
}

/// The model's answer to a timestamp lookup.
fn expected_offset_for(model: &Model, target: i64) -> Option<u64> {
    let first = model
        .batches
        .iter()
        .position(|(_, b)| header(b).max_timestamp >= target)?;
    model.batches[first..].iter().find_map(|(_, b)| {
        decode_records(b)
            .expect("decodes")
            .into_iter()
            .find(|r| r.timestamp >= target)
            .map(|r| r.offset)
    })
}

fn check_timestamps(log: &PartitionLog, model: &Model) {
    let mut targets: Vec<i64> = model.records().iter().map(|r| r.1).collect();
    targets.extend([i64::MIN, 0, 999, 1_000, 11_000, 11_001, i64::MAX]);
    let extra: Vec<i64> = targets.iter().map(|t| t.saturating_add(1)).collect();
    targets.extend(extra);
    for target in targets {
        assert_eq!(
            log.offset_for_timestamp(target).expect("lookup"),
            expected_offset_for(model, target),
            "offset for timestamp {target}"
        );
    }
}

fn segment_files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

#[test]
fn round_trips_across_many_segments_and_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, report) = PartitionLog::open(dir.path(), small_config(), 0).expect("open");
    assert_eq!(report.segments, 1);
    let mut model = Model::default();
    random_batches(&mut log, &mut model, &mut Rng(0x5eed_0001), 120);
    assert!(
        log.segment_count() >= 8,
        "small segments roll: {}",
        log.segment_count()
    );
    assert_eq!(
        log.size_bytes(),
        model
            .batches
            .iter()
            .map(|(_, b)| b.len() as u64)
            .sum::<u64>()
    );
    check_reads(&log, &model);
    check_timestamps(&log, &model);
    let segments = log.segment_count();
    drop(log);

    let (log, report) = PartitionLog::open(dir.path(), small_config(), 0).expect("reopen");
    assert_eq!(report.segments, segments);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.indexes_rebuilt, 0);
    check_reads(&log, &model);
    check_timestamps(&log, &model);
}

#[test]
fn reads_respect_max_bytes_upper_bound_and_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), 0).expect("open");
    let mut model = Model::default();
    for i in 0..12 {
        append(
            &mut log,
            &mut model,
            batch_with(&[i, i + 1, i + 2], 50),
            1,
            0,
        );
    }
    let sizes: Vec<usize> = model.batches.iter().map(|(_, b)| b.len()).collect();
    let end = model.end();

    // The first batch comes back even when it alone exceeds max_bytes.
    let one = log.read(1, 1, end).expect("read");
    assert_eq!(one.batches, vec![model.batches[0].1.clone()]);
    let two = log.read(0, sizes[0] + sizes[1], end).expect("read");
    assert_eq!(two.batches.len(), 2);
    assert_eq!(two.bytes, sizes[0] + sizes[1]);
    assert_eq!(
        log.read(0, sizes[0] + sizes[1] - 1, end)
            .expect("read")
            .batches
            .len(),
        1
    );

    // upper_bound stops before any batch whose base offset reaches it.
    let base3 = model.batches[3].0;
    assert_eq!(
        log.read(0, usize::MAX, base3).expect("read").batches.len(),
        3
    );
    assert_eq!(
        log.read(0, usize::MAX, base3 + 1)
            .expect("read")
            .batches
            .len(),
        4
    );
    assert!(
        log.read(base3 + 1, usize::MAX, base3)
            .expect("read")
            .batches
            .is_empty()
    );

    // Reading from the middle of a batch returns that whole batch first.
    let middle = log.read(base3 + 2, usize::MAX, end).expect("read");
    assert_eq!(middle.batches[0], model.batches[3].1);

    match log.read(end + 1, 100, end) {
        Err(ReadError::OffsetOutOfRange {
            requested,
            log_start: 0,
            log_end,
        }) => {
            assert_eq!((requested, log_end), (end + 1, end));
        }
        other => panic!("expected out of range, got {other:?}"),
    }
    assert!(
        log.read(end, 100, end)
            .expect("read at end")
            .batches
            .is_empty()
    );
}

/// Address ranges of `/proc/self/maps` lines mapping `path`.
fn mappings_of(path: &Path) -> Vec<(usize, usize)> {
    let canonical = fs::canonicalize(path).expect("canonical path");
    let maps = fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines()
        .filter(|line| line.ends_with(canonical.to_str().expect("utf-8 path")))
        .map(|line| {
            let range = line.split_whitespace().next().expect("address range");
            let (lo, hi) = range.split_once('-').expect("lo-hi");
            (
                usize::from_str_radix(lo, 16).expect("hex"),
                usize::from_str_radix(hi, 16).expect("hex"),
            )
        })
        .collect()
}

#[test]
fn sealed_reads_are_slices_of_the_mapping_not_copies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), 0).expect("open");
    let mut model = Model::default();
    for i in 0..30 {
        append(&mut log, &mut model, batch_with(&[i], 100), 1, 0);
    }
    assert!(log.segment_count() > 2);
    let end = model.end();
    let first = log.read(0, 1, end).expect("read");
    let again = log.read(0, 1, end).expect("read");
    assert_eq!(
        first.batches[0].as_ptr(),
        again.batches[0].as_ptr(),
        "same bytes, not a copy"
    );
    // The second batch of the segment sits right after the first in the same buffer.
    let second = log.read(1, 1, end).expect("read");
    assert_eq!(
        second.batches[0].as_ptr(),
        first.batches[0].as_ptr().wrapping_add(first.bytes)
    );

    let first_log = &segment_files(dir.path(), "log")[0];
    let maps = mappings_of(first_log);
    assert!(!maps.is_empty(), "the sealed segment is mapped");
    let ptr = first.batches[0].as_ptr() as usize;
    assert!(
        maps.iter()
            .any(|&(lo, hi)| lo <= ptr && ptr + first.bytes <= hi),
        "batch at {ptr:#x} lies inside the mapping of {}",
        first_log.display()
    );

    // The active segment's newest batch comes from the tail cache, also without a copy.
    let last = model.batches.last().expect("batches").0;
    let a = log.read(last, usize::MAX, end).expect("read");
    let b = log.read(last, usize::MAX, end).expect("read");
    assert_eq!(a.batches[0].as_ptr(), b.batches[0].as_ptr());
    assert!(
        mappings_of(&segment_files(dir.path(), "log").pop().expect("active")).is_empty(),
        "active segment is never mapped"
    );
}

#[test]
fn active_segment_reads_beyond_the_tail_cache_come_from_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes_max: 1 << 20,
        tail_cache_bytes: 300,
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config, 0).expect("open");
    let mut model = Model::default();
    random_batches(&mut log, &mut model, &mut Rng(0x5eed_0002), 40);
    assert_eq!(log.segment_count(), 1);
    check_reads(&log, &model);
    let zero_cache = LogConfig {
        tail_cache_bytes: 0,
        ..log.config().clone()
    };
    log.set_config(zero_cache);
    random_batches(&mut log, &mut model, &mut Rng(0x5eed_0003), 5);
    check_reads(&log, &model);
}

#[test]
fn rolls_by_size_and_by_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = batch_with(&[1], 100).len() as u64;
    let config = LogConfig {
        segment_bytes_max: 3 * one,
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config, 0).expect("open");
    let rolled: Vec<bool> = (0..7)
        .map(|_| {
            log.append(batch_with(&[1], 100), 0, 0)
                .expect("append")
                .rolled
        })
        .collect();
    assert_eq!(rolled, [false, false, false, true, false, false, true]);
    assert_eq!(log.segment_count(), 3);
    // A batch bigger than a whole segment still goes into an empty one.
    let huge = LogConfig {
        segment_bytes_max: 10,
        ..log.config().clone()
    };
    log.set_config(huge);
    assert!(
        log.append(batch_with(&[1], 100), 0, 0)
            .expect("append")
            .rolled
    );
    assert!(
        log.append(batch_with(&[1], 100), 0, 0)
            .expect("append")
            .rolled
    );
    assert_eq!(log.segment_count(), 5);
    drop(log);

    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_age_max_ms: Some(1_000),
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config.clone(), 0).expect("open");
    assert!(
        !log.append(batch_with(&[1], 10), 0, 10_000)
            .expect("append")
            .rolled
    );
    assert!(
        !log.append(batch_with(&[1], 10), 0, 11_000)
            .expect("append")
            .rolled
    );
    assert!(
        log.append(batch_with(&[1], 10), 0, 11_001)
            .expect("append")
            .rolled
    );
    assert_eq!(log.segment_count(), 2);
    drop(log);
    // After a restart the active segment's age counts from the open.
    let (mut log, _) = PartitionLog::open(dir.path(), config, 50_000).expect("reopen");
    assert!(
        !log.append(batch_with(&[1], 10), 0, 50_900)
            .expect("append")
            .rolled
    );
    assert!(
        log.append(batch_with(&[1], 10), 0, 51_001)
            .expect("append")
            .rolled
    );
    assert_eq!(log.segment_count(), 3);
}

#[test]
fn retention_deletes_whole_sealed_segments_by_bytes_and_by_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = batch_with(&[0], 100).len() as u64;
    let config = LogConfig {
        segment_bytes_max: 2 * one,
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config, 0).expect("open");
    let mut model = Model::default();
    // Segments of two batches; segment k holds timestamps 1000k and 1000k + 1.
    for i in 0..10i64 {
        append(
            &mut log,
            &mut model,
            batch_with(&[(i / 2) * 1000 + i % 2], 100),
            0,
            0,
        );
    }
    assert_eq!(log.segment_count(), 5);
    let nothing = log.enforce_retention(1_000_000).expect("retention");
    assert_eq!(nothing.segments_deleted, 0, "no limits set");

    // Time: segments whose newest record is older than now - retention_ms.
    let by_time = LogConfig {
        retention_ms: Some(1_000),
        ..log.config().clone()
    };
    log.set_config(by_time);
    let report = log.enforce_retention(2_001).expect("retention");
    assert_eq!(
        (report.segments_deleted, report.bytes_deleted),
        (1, 2 * one)
    );
    assert_eq!((log.log_start_offset(), report.log_start_offset), (2, 2));
    assert_eq!(log.size_bytes(), 8 * one);
    assert_eq!(segment_files(dir.path(), "log").len(), 4);
    assert_eq!(segment_files(dir.path(), "index").len(), 4);
    // The active segment is never deleted, however old.
    let report = log.enforce_retention(i64::MAX).expect("retention");
    assert_eq!(report.segments_deleted, 3);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), 8);
    assert!(matches!(
        log.read(7, 10, 10),
        Err(ReadError::OffsetOutOfRange { log_start: 8, .. })
    ));
    assert_eq!(log.read(8, usize::MAX, 10).expect("read").batches.len(), 2);

    // Bytes: delete while the rest still holds retention_bytes.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes_max: 2 * one,
        retention_bytes: Some(5 * one),
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config.clone(), 0).expect("open");
    for _ in 0..10 {
        log.append(batch_with(&[5], 100), 0, 0).expect("append");
    }
    let report = log.enforce_retention(0).expect("retention");
    // 10 batches: deleting two segments leaves 6 >= 5; a third would leave 4.
    assert_eq!(report.segments_deleted, 2);
    assert_eq!(log.size_bytes(), 6 * one);
    assert_eq!(log.log_start_offset(), 4);
    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), config, 0).expect("reopen");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (4, 10));
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after_the_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), 0).expect("open");
    let mut model = Model::default();
    append(&mut log, &mut model, batch_with(&[100, 300, 200], 10), 0, 0); // offsets 0..3
    append(&mut log, &mut model, batch_with(&[150], 10), 0, 0); // 3
    append(&mut log, &mut model, batch_with(&[500, 400], 10), 0, 0); // 4..6
    assert_eq!(log.offset_for_timestamp(50).expect("lookup"), Some(0));
    assert_eq!(log.offset_for_timestamp(100).expect("lookup"), Some(0));
    assert_eq!(log.offset_for_timestamp(101).expect("lookup"), Some(1));
    assert_eq!(log.offset_for_timestamp(250).expect("lookup"), Some(1));
    assert_eq!(log.offset_for_timestamp(301).expect("lookup"), Some(4));
    assert_eq!(log.offset_for_timestamp(450).expect("lookup"), Some(4));
    assert_eq!(log.offset_for_timestamp(500).expect("lookup"), Some(4));
    assert_eq!(log.offset_for_timestamp(501).expect("lookup"), None);
    random_batches(&mut log, &mut model, &mut Rng(0x5eed_0004), 80);
    check_timestamps(&log, &model);
}

#[test]
fn rejects_oversized_and_corrupt_batches_without_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        batch_bytes_max: 200,
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config, 0).expect("open");
    log.append(batch_with(&[1], 10), 0, 0).expect("append");
    let active = segment_files(dir.path(), "log").pop().expect("active");
    let before = fs::metadata(&active).expect("stat").len();
    match log.append(batch_with(&[1], 300), 0, 0) {
        Err(AppendError::InvalidBatch(BatchError::TooLarge { limit: 200, .. })) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let mut corrupt = batch_with(&[1], 10);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert!(matches!(
        log.append(corrupt, 0, 0),
        Err(AppendError::InvalidBatch(BatchError::CrcMismatch { .. }))
    ));
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(fs::metadata(&active).expect("stat").len(), before);
    assert_eq!(log.size_bytes(), before);
}

#[test]
fn sync_target_covers_unsynced_appends_and_mark_synced_advances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = batch_with(&[1], 100).len() as u64;
    let config = LogConfig {
        segment_bytes_max: 2 * one,
        ..small_config()
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config.clone(), 0).expect("open");
    assert_eq!(log.flushed_offset(), 0);
    assert!(log.sync_target().is_empty());
    log.append(batch_with(&[1], 100), 0, 0).expect("append");
    let target = log.sync_target();
    assert_eq!((target.files.len(), target.up_to_offset), (1, 1));
    // An append while the sync runs is not covered by it.
    log.append(batch_with(&[1], 100), 0, 0).expect("append");
    target.sync().expect("fdatasync");
    log.mark_synced(target.up_to_offset);
    assert_eq!(log.flushed_offset(), 1);
    log.mark_synced(0);
    assert_eq!(log.flushed_offset(), 1, "never moves back");
    // A roll seals (and syncs) the full segment.
    log.append(batch_with(&[1], 100), 0, 0).expect("append");
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.flushed_offset(), 2);
    let target = log.sync_target();
    assert_eq!((target.files.len(), target.up_to_offset), (1, 3));
    target.sync().expect("fdatasync");
    log.mark_synced(target.up_to_offset);
    assert_eq!(log.flushed_offset(), 3);
    assert!(log.sync_target().is_empty());
    log.mark_synced(99);
    assert_eq!(log.flushed_offset(), 3, "clamped to the log end");
    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), config, 0).expect("reopen");
    assert_eq!(log.flushed_offset(), 3, "recovery syncs what it keeps");
}

#[test]
fn delete_removes_the_directory_and_open_ignores_unknown_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("topic-0");
    let (mut log, _) = PartitionLog::open(&path, small_config(), 0).expect("open");
    log.append(batch_with(&[1], 10), 0, 0).expect("append");
    drop(log);
    fs::write(path.join("notes.txt"), b"hello").expect("write");
    fs::write(path.join("123.log"), b"not a segment name").expect("write");
    let (log, report) = PartitionLog::open(&path, small_config(), 0).expect("reopen");
    assert_eq!((report.segments, log.log_end_offset()), (1, 1));
    assert!(path.join("notes.txt").exists());
    log.delete().expect("delete");
    assert!(!path.exists());
}

/// Writes `count` random batches into a fresh log and closes it.
fn written_log(dir: &Path, seed: u64, count: usize) -> Model {
    let (mut log, _) = PartitionLog::open(dir, small_config(), 0).expect("open");
    let mut model = Model::default();
    random_batches(&mut log, &mut model, &mut Rng(seed), count);
    model
}

/// Byte position of each model batch inside the active (last) segment.
fn active_positions(model: &Model, active_base: u64) -> Vec<(usize, u64, usize)> {
    let mut position = 0;
    let mut out = Vec::new();
    for (i, (base, b)) in model.batches.iter().enumerate() {
        if *base >= active_base {
            out.push((i, position, b.len()));
            position += b.len() as u64;
        }
    }
    out
}

fn base_of(path: &Path) -> u64 {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("segment name")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn recovery_keeps_exactly_the_whole_batches_before_a_cut(seed in 1u64.., count in 1usize..60, cut in 0.0f64..=1.0) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut model = written_log(dir.path(), seed, count);
        let active = segment_files(dir.path(), "log").pop().expect("active");
        let len = fs::metadata(&active).expect("stat").len();
        let cut_at = (len as f64 * cut) as u64;
        OpenOptions::new().write(true).open(&active).expect("open").set_len(cut_at).expect("cut");

        let positions = active_positions(&model, base_of(&active));
        let kept = positions.iter().filter(|(_, at, n)| at + *n as u64 <= cut_at).count();
        let kept_bytes: u64 = positions.iter().take(kept).map(|(_, _, n)| *n as u64).sum();
        let dropped = positions.len() - kept;
        model.batches.truncate(model.batches.len() - dropped);

        let (mut log, report) = PartitionLog::open(dir.path(), small_config(), 0).expect("reopen");
        prop_assert_eq!(report.truncated_bytes, cut_at - kept_bytes);
        prop_assert_eq!(report.batches_scanned, kept as u64);
        prop_assert_eq!(log.log_end_offset(), model.end());
        check_reads(&log, &model);
        check_timestamps(&log, &model);
        let mut rng = Rng(seed ^ 0xabcd);
        random_batches(&mut log, &mut model, &mut rng, 3);
        check_reads(&log, &model);
        drop(log);
        let (log, report) = PartitionLog::open(dir.path(), small_config(), 0).expect("reopen again");
        prop_assert_eq!(report.truncated_bytes, 0);
        check_reads(&log, &model);
    }

    #[test]
    fn recovery_drops_a_corrupted_batch_and_everything_after_it(seed in 1u64.., count in 1usize..60, which in 0.0f64..1.0, at in 0.0f64..1.0) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut model = written_log(dir.path(), seed, count);
        let active = segment_files(dir.path(), "log").pop().expect("active");
        let positions = active_positions(&model, base_of(&active));
        prop_assume!(!positions.is_empty());
        let victim = (positions.len() as f64 * which) as usize;
        let (model_index, position, len) = positions[victim];
        // Bytes 12..16 hold the leader epoch, outside the CRC by design (the broker
        // stamps it); every other byte is covered by framing, sequence or CRC checks.
        let candidates: Vec<u64> = (0..len as u64).filter(|b| !(12..16).contains(b)).collect();
        let flip = position + candidates[(candidates.len() as f64 * at) as usize];
        let mut raw = fs::read(&active).expect("read");
        raw[flip as usize] ^= 0x5a;
        fs::write(&active, &raw).expect("write");

        model.batches.truncate(model_index);
        let (log, report) = PartitionLog::open(dir.path(), small_config(), 0).expect("reopen");
        prop_assert_eq!(report.truncated_bytes, raw.len() as u64 - position);
        prop_assert_eq!(log.log_end_offset(), model.end());
        check_reads(&log, &model);
    }
}

#[test]
fn damaged_indexes_are_rebuilt_identically() {
    for seed in [11u64, 12, 13] {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = written_log(dir.path(), seed, 90);
        let indexes = segment_files(dir.path(), "index");
        let time_indexes = segment_files(dir.path(), "timeindex");
        assert!(
            indexes.len() >= 6,
            "seed {seed}: enough sealed segments to damage"
        );
        let originals: Vec<Vec<u8>> = indexes
            .iter()
            .chain(&time_indexes)
            .map(|p| fs::read(p).expect("read"))
            .collect();

        // Sealed segments 0..5 each get a different kind of damage; the last (active) is
        // rewritten from its scan anyway.
        fs::remove_file(&indexes[0]).expect("remove");
        fs::remove_file(&time_indexes[1]).expect("remove");
        let mut torn = fs::read(&indexes[2]).expect("read");
        torn.pop();
        fs::write(&indexes[2], &torn).expect("write");
        // A well-formed entry that points at no batch header.
        let mut wrong = fs::read(&indexes[3]).expect("read");
        assert!(
            wrong.len() >= 16,
            "seed {seed}: segment 3 has two index entries"
        );
        let last = wrong.len() - 8;
        let position =
            u32::from_be_bytes(wrong[last + 4..last + 8].try_into().expect("4 bytes")) + 1;
        wrong[last + 4..].copy_from_slice(&position.to_be_bytes());
        fs::write(&indexes[3], &wrong).expect("write");
        fs::write(&time_indexes[4], vec![0xff; 24]).expect("write");
        // A time index that lost its sealing entry.
        let mut stale = fs::read(&time_indexes[5]).expect("read");
        stale.truncate(stale.len() - 12);
        fs::write(&time_indexes[5], &stale).expect("write");

        let (log, report) = PartitionLog::open(dir.path(), small_config(), 0).expect("reopen");
        assert!(
            report.indexes_rebuilt >= 6,
            "seed {seed}: every damaged file: {report:?}"
        );
        check_reads(&log, &model);
        check_timestamps(&log, &model);
        let rebuilt: Vec<Vec<u8>> = indexes
            .iter()
            .chain(&time_indexes)
            .map(|p| fs::read(p).expect("read"))
            .collect();
        assert_eq!(
            rebuilt, originals,
            "seed {seed}: rebuilt indexes equal the ones appends wrote"
        );
    }
}

fn idempotent_batch(producer_id: u64, epoch: u16, base_sequence: u32, count: u32) -> BytesMut {
    let mut builder = BatchBuilder::new(ProducerStamp {
        producer_id,
        producer_epoch: epoch,
        base_sequence,
    });
    for i in 0..count {
        builder.push(&Record::from_value(
            format!("p{producer_id}-s{}", base_sequence + i),
            1_000,
        ));
    }
    BytesMut::from(&builder.finish().expect("non-empty")[..])
}

#[test]
fn idempotent_retries_are_answered_with_the_first_offsets_also_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let (mut log, _) = PartitionLog::open(dir.path(), config.clone(), 0).expect("open");
    let mut sequence = 0;
    let mut firsts = Vec::new();
    for _ in 0..150 {
        let info = log
            .append(idempotent_batch(9, 0, sequence, 3), 0, 0)
            .expect("append");
        assert!(!info.duplicate);
        firsts.push((sequence, info.base_offset));
        sequence += 3;
    }
    let end = log.log_end_offset();
    // A retry of one of the last five batches is recognised; nothing is written.
    let (seq, base) = firsts[148];
    let retry = log
        .append(idempotent_batch(9, 0, seq, 3), 0, 0)
        .expect("retry");
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, base);
    assert_eq!(log.log_end_offset(), end);
    // A gap is refused; a fenced epoch is refused.
    let gap = log.append(idempotent_batch(9, 0, sequence + 3, 1), 0, 0);
    assert!(
        matches!(gap, Err(AppendError::OutOfOrderSequence { .. })),
        "{gap:?}"
    );
    drop(log);

    let (mut log, _) = PartitionLog::open(dir.path(), config, 0).expect("reopen");
    assert!(log.segment_count() > 1, "the state spans several segments");
    let (seq, base) = firsts[149];
    let retry = log
        .append(idempotent_batch(9, 0, seq, 3), 0, 0)
        .expect("retry after reopen");
    assert!(retry.duplicate, "state rebuilt from the log");
    assert_eq!(retry.base_offset, base);
    let next = log
        .append(idempotent_batch(9, 0, sequence, 2), 0, 0)
        .expect("next in sequence");
    assert_eq!(next.base_offset, end);
    let newer = log
        .append(idempotent_batch(9, 1, 0, 1), 0, 0)
        .expect("new epoch");
    assert!(!newer.duplicate);
    let zombie = log.append(idempotent_batch(9, 0, sequence + 2, 1), 0, 0);
    assert!(
        matches!(
            zombie,
            Err(AppendError::ProducerFenced {
                current: 1,
                received: 0
            })
        ),
        "{zombie:?}"
    );
}

/// Truncation to every batch boundary, in sealed and active segments, with a held
/// read of the cut data staying valid, appends continuing at the cut, and a reopen
/// agreeing with the log in memory.
#[test]
fn truncates_at_batch_boundaries_in_sealed_and_active_segments() {
    let mut rng = Rng(0x7a11_c0de);
    for cut_pick in 0..12u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = PartitionLog::open(dir.path(), small_config(), 0).expect("open");
        let mut model = Model::default();
        random_batches(&mut log, &mut model, &mut rng, 40);
        assert!(log.segment_count() > 2, "the test needs sealed segments");
        // A read that a consumer still holds across the truncation.
        let held = log.read(0, usize::MAX, model.end()).expect("read");
        let boundaries: Vec<u64> = model.batches.iter().map(|(base, _)| *base).collect();
        let cut = boundaries[(cut_pick as usize * 7 + 3) % boundaries.len()];
        log.truncate_to(cut, 0).expect("truncate");
        model.batches.retain(|(base, _)| *base < cut);
        assert_eq!(log.log_end_offset(), cut);
        check_reads(&log, &model);
        for (got, (_, want)) in held.batches.iter().zip(&model.batches) {
            assert_eq!(got, want, "a slice read before the cut is intact");
        }
        random_batches(&mut log, &mut model, &mut rng, 10);
        check_reads(&log, &model);
        drop(log);
        let (log, _) = PartitionLog::open(dir.path(), small_config(), 0).expect("reopen");
        check_reads(&log, &model);
    }
}

#[test]
fn truncation_refuses_offsets_inside_a_batch_or_below_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), 0).expect("open");
    let mut model = Model::default();
    append(&mut log, &mut model, batch_with(&[1, 2, 3], 10), 0, 0);
    append(&mut log, &mut model, batch_with(&[4], 10), 0, 0);
    let err = log.truncate_to(1, 0).expect_err("inside the first batch");
    assert!(
        matches!(
            err,
            quiver_log::TruncateError::NotBatchBoundary {
                offset: 1,
                batch_base: 0
            }
        ),
        "{err}"
    );
    check_reads(&log, &model);
    log.truncate_to(10, 0)
        .expect("beyond the end changes nothing");
    check_reads(&log, &model);
    log.truncate_to(3, 0).expect("a boundary");
    model.batches.truncate(1);
    check_reads(&log, &model);
    log.truncate_to(0, 0).expect("to the start");
    assert_eq!(log.log_end_offset(), 0);
}
