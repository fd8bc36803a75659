//! Crash recovery of damaged segment files: a torn tail and a corrupted last batch.

use std::collections::BTreeMap;

use bytes::Bytes;
use quiver_sdk::{Acks, Client, OffsetSpec, Record};
use quiver_tests::ClientAdmin;
use quiver_tests::{
    BatchSpan, Broker, batch_spans, fetch_all, now_ms, padded_value, seeded_rng, wait_visible,
};
use rand::Rng;

const TOPIC: &str = "rec";
const SEGMENT_BYTES: &str = "65536";
const BATCHES: usize = 70;

/// Creates a 1-partition topic with 64 KiB segments and produces `BATCHES` batches of
/// random sizes; returns offset -> value of everything acknowledged.
async fn produce_segments(client: &Client, rng: &mut impl Rng) -> BTreeMap<u64, Bytes> {
    client
        .admin()
        .create_topic(
            quiver_sdk::NewTopic::new(TOPIC, 1, 1)
                .configs::<String, String>([("segment.bytes".into(), SEGMENT_BYTES.into())]),
        )
        .await
        .expect("create topic");
    let mut produced = BTreeMap::new();
    for b in 0..BATCHES {
        let count = rng.gen_range(1..=60);
        let values: Vec<Bytes> = (0..count)
            .map(|r| {
                let len = rng.gen_range(20..200);
                padded_value(&format!("b{b}-r{r}-"), len, rng)
            })
            .collect();
        let records: Vec<Record> = values
            .iter()
            .map(|v| Record::from_value(v.clone(), now_ms()))
            .collect();
        let receipt = client
            .produce(TOPIC, 0, Acks::All, &records)
            .await
            .expect("produce")
            .expect("acks=all answers");
        for (i, v) in values.into_iter().enumerate() {
            produced.insert(receipt.base_offset + i as u64, v);
        }
    }
    produced
}

/// The last segment file and its batches.
fn last_segment(broker: &Broker) -> (std::path::PathBuf, Vec<u8>, Vec<BatchSpan>) {
    let logs = broker.log_files(TOPIC, 0);
    assert!(
        logs.len() >= 3,
        "expected several segments with segment.bytes={SEGMENT_BYTES}, found {logs:?}"
    );
    let last = logs.last().expect("a segment").clone();
    let data = std::fs::read(&last).expect("read the last segment");
    let spans = batch_spans(&data);
    assert!(!spans.is_empty(), "the active segment holds batches");
    assert_eq!(
        spans.last().map(|s| s.position + s.len),
        Some(data.len()),
        "the segment is whole before the test damages it"
    );
    (last, data, spans)
}

/// Checks the restarted broker serves exactly `produced` below `end`, reports `end` as
/// the log end, and appends the next batch at `end`.
async fn check_served(broker: &Broker, produced: &BTreeMap<u64, Bytes>, end: u64) {
    let client = broker.client().await;
    let latest = client
        .list_offsets(TOPIC, 0, OffsetSpec::Latest)
        .await
        .expect("list offsets");
    assert_eq!(latest.log_end_offset, end, "log end offset after recovery");
    assert_eq!(latest.offset, Some(end), "high watermark after recovery");
    let records = fetch_all(&client, TOPIC, 0, 0).await;
    assert_eq!(records.len() as u64, end, "records served after recovery");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(
            r.value.as_ref(),
            produced.get(&r.offset),
            "offset {} changed by recovery",
            r.offset
        );
    }
    let receipt = client
        .produce(
            TOPIC,
            0,
            Acks::All,
            &[Record::from_value("after recovery", now_ms())],
        )
        .await
        .expect("produce after recovery")
        .expect("answer");
    assert_eq!(
        receipt.base_offset, end,
        "new records continue at the log end"
    );
    wait_visible(&client, TOPIC, 0, end + 1).await;
    let tail = fetch_all(&client, TOPIC, 0, end).await;
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].value.as_deref(), Some(&b"after recovery"[..]));
}

/// The last segment cut at a random byte: the broker starts, serves every batch that
/// lies wholly before the cut, and continues at the end of the last whole batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_is_cut_at_the_last_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let mut rng = seeded_rng("torn_tail_is_cut_at_the_last_whole_batch");
    let produced = produce_segments(&broker.client().await, &mut rng).await;
    broker.kill9();

    let (last, data, spans) = last_segment(&broker);
    let cut = rng.gen_range(0..data.len());
    let whole: Vec<&BatchSpan> = spans.iter().filter(|s| s.position + s.len <= cut).collect();
    let segment_base = quiver_tests::segment_base(&last);
    let end = whole.last().map_or(segment_base, |s| s.next_offset);
    eprintln!(
        "cutting {} ({} bytes, {} batches) at byte {cut}: {} whole batches stay, log end {end}",
        last.display(),
        data.len(),
        spans.len(),
        whole.len()
    );
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open segment");
    file.set_len(cut as u64).expect("truncate");
    file.sync_all().expect("sync");
    drop(file);

    broker.restart();
    check_served(&broker, &produced, end).await;
}

/// One byte flipped inside the last batch of the last segment: after a restart that
/// batch is gone and everything before it is served intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_last_batch_is_dropped_and_the_rest_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let mut rng = seeded_rng("corrupt_last_batch_is_dropped_and_the_rest_served");
    let produced = produce_segments(&broker.client().await, &mut rng).await;
    broker.kill9();

    let (last, mut data, spans) = last_segment(&broker);
    let victim = *spans.last().expect("a batch");
    // Any byte but the leader epoch (bytes 12..16), which the broker stamps after the
    // producer computed the CRC and which no check covers by design.
    let within = loop {
        let at = rng.gen_range(0..victim.len);
        if !(12..16).contains(&at) {
            break at;
        }
    };
    let position = victim.position + within;
    let flip: u8 = rng.gen_range(1..=255);
    eprintln!(
        "flipping byte {within} of the last batch (offsets {}..{}) in {}: file byte {position} ^= {flip:#04x}",
        victim.base_offset,
        victim.next_offset,
        last.display()
    );
    data[position] ^= flip;
    std::fs::write(&last, &data).expect("write the damaged segment");

    broker.restart();
    check_served(&broker, &produced, victim.base_offset).await;
}

/// The controller's log segment files of a broker's data directory.
fn controller_segments(broker: &Broker) -> Vec<std::path::PathBuf> {
    let dir = broker.data_dir.join("controller").join("log");
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .expect("controller log directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments
}

/// A torn tail in the controller's log (an append a crash interrupted) is cut and the
/// broker starts with every topic; a log cut into committed entries is refused with
/// one line naming its files and the documented way out, and nothing is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_log_tail_cut_by_a_crash_is_recovered_and_lost_commits_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let client = broker.client().await;
    for topic in ["kept-1", "kept-2", "kept-3"] {
        client
            .admin()
            .create_topic(quiver_sdk::NewTopic::new(topic, 1, 1))
            .await
            .expect("create");
    }
    client.close().await;
    assert_eq!(broker.sigterm().code(), Some(0));

    // A half-written frame at the end: cut on start, every topic still there.
    let last = controller_segments(&broker).pop().expect("a segment");
    let intact = std::fs::read(&last).expect("read segment");
    let mut torn = intact.clone();
    torn.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, b'{']);
    std::fs::write(&last, &torn).expect("write torn tail");
    broker.restart();
    let client = broker.client().await;
    let topics: Vec<String> = client
        .admin()
        .list_topics()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    for topic in ["kept-1", "kept-2", "kept-3"] {
        assert!(topics.contains(&topic.to_owned()), "{topic} in {topics:?}");
    }
    assert!(broker.stderr().contains("cutting a torn tail"));
    client.close().await;
    assert_eq!(broker.sigterm().code(), Some(0));

    // Committed entries cut away: refused by name, the files left as they were.
    let last = controller_segments(&broker).pop().expect("a segment");
    let whole = std::fs::read(&last).expect("read segment");
    let cut = &whole[..whole.len() - 3];
    std::fs::write(&last, cut).expect("cut committed entries");
    let failure = Broker::try_spawn(&broker.data_dir, &[], None)
        .err()
        .expect("a log missing committed entries is refused");
    assert!(
        failure.stderr.contains("was committed")
            && failure.stderr.contains("Controller log damage"),
        "{}",
        failure.stderr
    );
    assert_eq!(
        std::fs::read(&last).expect("read segment"),
        cut,
        "nothing changed"
    );
}
