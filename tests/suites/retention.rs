//! Segment rolling and retention by size and by age.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use quiver_sdk::{Acks, Client, ErrorCode, FetchOptions, OffsetSpec, Record};
use quiver_tests::ClientAdmin;
use quiver_tests::{Broker, eventually, fetch_all, now_ms, padded_value, seeded_rng, wait_visible};

const RETENTION_ENV: &[(&str, &str)] = &[("QUIVER_RETENTION_CHECK_INTERVAL_MS", "100")];
const SEGMENT_BYTES: u64 = 4096;
const RETENTION_BYTES: u64 = 16384;

/// Produces `batches` batches of 8 records of 100 bytes (about 1 KiB a batch) with the
/// given timestamp; returns offset -> value.
async fn produce(
    client: &Client,
    topic: &str,
    batches: usize,
    timestamp: impl Fn() -> i64,
    rng: &mut impl rand::Rng,
) -> BTreeMap<u64, Bytes> {
    let mut produced = BTreeMap::new();
    for b in 0..batches {
        let values: Vec<Bytes> = (0..8)
            .map(|r| padded_value(&format!("{topic}-b{b}-r{r}-"), 100, rng))
            .collect();
        let records: Vec<Record> = values
            .iter()
            .map(|v| Record::from_value(v.clone(), timestamp()))
            .collect();
        let receipt = client
            .produce(topic, 0, Acks::All, &records)
            .await
            .expect("produce")
            .expect("answer");
        for (i, v) in values.into_iter().enumerate() {
            produced.insert(receipt.base_offset + i as u64, v);
        }
    }
    wait_visible(client, topic, 0, produced.len() as u64).await;
    produced
}

fn dir_log_bytes(files: &[std::path::PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Consuming from the beginning starts at the log start and ends at the log end, with
/// the values produced there; fetching below the log start is OFFSET_OUT_OF_RANGE.
async fn check_consumable(
    client: &Client,
    topic: &str,
    produced: &BTreeMap<u64, Bytes>,
) -> (u64, u64) {
    let earliest = client
        .list_offsets(topic, 0, OffsetSpec::Earliest)
        .await
        .expect("earliest");
    let start = earliest.offset.expect("earliest offset");
    assert_eq!(start, earliest.log_start_offset);
    let end = earliest.log_end_offset;
    assert_eq!(
        end,
        produced.len() as u64,
        "retention never moves the log end"
    );
    let records = fetch_all(client, topic, 0, start).await;
    assert_eq!(
        records.first().map(|r| r.offset),
        Some(start),
        "consuming from the beginning starts at the log start"
    );
    assert_eq!(
        records.len() as u64,
        end - start,
        "records from log start to log end"
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, start + i as u64);
        assert_eq!(
            r.value.as_ref(),
            produced.get(&r.offset),
            "offset {}",
            r.offset
        );
    }
    for below in [0, start - 1] {
        let err = client
            .fetch(topic, 0, below, &FetchOptions::default())
            .await
            .expect_err("fetch below the log start must fail");
        assert_eq!(
            err.code(),
            Some(ErrorCode::OffsetOutOfRange),
            "fetch at {below} below log start {start}: {err}"
        );
    }
    (start, end)
}

/// segment.bytes=4096 and retention.bytes=16384: many segments roll, retention deletes
/// the oldest, the log start moves past 0, the partition keeps a bounded number of
/// files and at least retention.bytes of data, and consumers see the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_size_deletes_oldest_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start_with(dir.path(), RETENTION_ENV, None);
    let client = broker.client().await;
    client
        .admin()
        .create_topic(
            quiver_sdk::NewTopic::new("sized", 1, 1).configs::<String, String>([
                ("segment.bytes".into(), SEGMENT_BYTES.to_string()),
                ("retention.bytes".into(), RETENTION_BYTES.to_string()),
            ]),
        )
        .await
        .expect("create topic");
    let mut rng = seeded_rng("retention_by_size_deletes_oldest_segments");
    let produced = produce(&client, "sized", 200, now_ms, &mut rng).await;
    assert_eq!(produced.len(), 1600);

    // Retention deletes the oldest segment while the rest still hold retention.bytes:
    // wait for the state where it stops, not merely for a small enough log, or a pass
    // could still delete the first segment after the files were listed.
    let (files, bytes) = eventually(
        "retention to delete every segment the rest can do without",
        Duration::from_secs(60),
        || {
            let files = broker.log_files("sized", 0);
            let bytes = dir_log_bytes(&files);
            let oldest = dir_log_bytes(&files[..files.len().min(1)]);
            let settled = files.len() <= 1 || bytes - oldest < RETENTION_BYTES;
            async move { settled.then_some((files, bytes)) }
        },
    )
    .await;
    assert!(
        bytes < RETENTION_BYTES + SEGMENT_BYTES,
        "{bytes} bytes left, over retention.bytes plus one segment"
    );
    assert!(
        bytes >= RETENTION_BYTES,
        "retention deleted too much: {bytes} bytes left, retention.bytes is {RETENTION_BYTES}"
    );
    assert!(
        files.len() <= 10,
        "{} .log files remain for ~{RETENTION_BYTES} bytes of 4 KiB segments: {files:?}",
        files.len()
    );
    for f in &files {
        let len = std::fs::metadata(f).expect("stat").len();
        assert!(
            len <= SEGMENT_BYTES,
            "{} is {len} bytes, over segment.bytes",
            f.display()
        );
    }

    let info = client
        .admin()
        .describe_topic("sized")
        .await
        .expect("describe");
    let p = &info.partitions[0];
    assert!(p.log_start_offset > 0, "log start moved past 0");
    assert_eq!(
        p.log_start_offset,
        quiver_tests::segment_base(&files[0]),
        "the log start is the oldest remaining segment's base offset"
    );
    let (start, end) = check_consumable(&client, "sized", &produced).await;
    assert_eq!(start, p.log_start_offset);
    assert_eq!(end, p.high_watermark);

    // Through the CLI too: --from-beginning starts at the new log start.
    let output = broker.cli(&[
        "consume",
        "sized",
        "--from-beginning",
        "--count",
        "1",
        "--timeout",
        "20000",
        "--format",
        "json",
    ]);
    assert!(output.status.success(), "consume: {output:?}");
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON record");
    assert_eq!(line["offset"], start);
}

/// retention.ms=1000: once the records are older than a second every sealed segment
/// goes; only the active segment stays, and it is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_age_deletes_expired_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start_with(dir.path(), RETENTION_ENV, None);
    let client = broker.client().await;
    client
        .admin()
        .create_topic(
            quiver_sdk::NewTopic::new("aged", 1, 1).configs::<String, String>([
                ("segment.bytes".into(), SEGMENT_BYTES.to_string()),
                ("retention.ms".into(), "1000".into()),
            ]),
        )
        .await
        .expect("create topic");
    let mut rng = seeded_rng("retention_by_age_deletes_expired_segments");
    let produced = produce(&client, "aged", 40, now_ms, &mut rng).await;
    // Sealed segments may already be going (they expire a second after their records),
    // so the rolls show in the active segment's base offset, which deletion keeps:
    // 40 KiB in 4 KiB segments leaves at most a tenth of the records in the last one.
    let active = broker
        .log_files("aged", 0)
        .last()
        .cloned()
        .expect("a segment");
    let active_base = quiver_tests::segment_base(&active);
    assert!(
        active_base >= produced.len() as u64 / 2,
        "40 KiB in 4 KiB segments rolls several: the active segment starts at {active_base} of {}",
        produced.len()
    );

    let files = eventually(
        "age retention to delete every sealed segment",
        Duration::from_secs(60),
        || {
            let files = broker.log_files("aged", 0);
            async move { (files.len() == 1).then_some(files) }
        },
    )
    .await;
    let earliest = client
        .list_offsets("aged", 0, OffsetSpec::Earliest)
        .await
        .expect("earliest");
    assert!(earliest.log_start_offset > 0, "log start moved past 0");
    assert_eq!(
        earliest.log_start_offset,
        quiver_tests::segment_base(&files[0])
    );
    check_consumable(&client, "aged", &produced).await;

    // A topic without retention.ms keeps its old segments on the same broker.
    client
        .admin()
        .create_topic(
            quiver_sdk::NewTopic::new("kept", 1, 1)
                .configs::<String, String>([("segment.bytes".into(), SEGMENT_BYTES.to_string())]),
        )
        .await
        .expect("create topic");
    let old = now_ms() - 3_600_000;
    produce(&client, "kept", 20, || old, &mut rng).await;
    let kept = broker.log_files("kept", 0).len();
    // Several retention passes run (every 100 ms); the default retention is 7 days.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        broker.log_files("kept", 0).len(),
        kept,
        "default retention kept hour-old data"
    );
    assert_eq!(
        client
            .list_offsets("kept", 0, OffsetSpec::Earliest)
            .await
            .expect("earliest")
            .log_start_offset,
        0
    );
}
