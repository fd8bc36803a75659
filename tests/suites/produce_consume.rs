//! Round trips: many records through the SDK, and lines through the CLI.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use quiver_sdk::{Acks, OffsetSpec, Record};
use quiver_tests::ClientAdmin;
use quiver_tests::{Broker, fetch_all, now_ms, padded_value, seeded_rng, wait_visible};

const PARTITIONS: u32 = 3;
const RECORDS: usize = 200_000;
const BATCH: usize = 1_000;
const VALUE_BYTES: usize = 100;
/// Batches in flight per partition.
const IN_FLIGHT_PER_PARTITION: usize = 2;

/// 200,000 unique records in batches of 1,000 over three partitions with acks=all, a
/// few batches in flight at once; reading back from the beginning returns every record
/// exactly once, at the offset its receipt named, in order, offsets dense from 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_produces_and_fetches_200k_records_exactly_once_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("bulk", PARTITIONS, 1))
        .await
        .expect("create topic");

    let mut rng = seeded_rng("sdk_round_trip");
    // Batch b goes to partition b % 3; its values are unique and self-describing.
    let batches: Vec<(u32, Vec<Bytes>)> = (0..RECORDS / BATCH)
        .map(|b| {
            let p = (b as u32) % PARTITIONS;
            let values = (0..BATCH)
                .map(|r| padded_value(&format!("b{b:04}-r{r:04}-"), VALUE_BYTES, &mut rng))
                .collect();
            (p, values)
        })
        .collect();
    let ts = now_ms();

    // Per partition, a worker pool of IN_FLIGHT_PER_PARTITION senders; every receipt is
    // kept: (partition, base_offset) -> values.
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PARTITIONS {
        let mine: Vec<Vec<Bytes>> = batches
            .iter()
            .filter(|(bp, _)| *bp == p)
            .map(|(_, v)| v.clone())
            .collect();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(mine.into_iter()));
        for _ in 0..IN_FLIGHT_PER_PARTITION {
            let client = client.clone();
            let queue = std::sync::Arc::clone(&queue);
            tasks.spawn(async move {
                let mut receipts = Vec::new();
                loop {
                    let next = queue.lock().expect("queue lock").next();
                    let Some(values) = next else { break };
                    let records: Vec<Record> = values
                        .iter()
                        .map(|v| Record::from_value(v.clone(), ts))
                        .collect();
                    let receipt = client
                        .produce("bulk", p, Acks::All, &records)
                        .await
                        .unwrap_or_else(|e| panic!("produce to partition {p}: {e}"))
                        .expect("acks=all answers");
                    assert_eq!(receipt.partition, p);
                    assert_eq!(receipt.record_count as usize, values.len());
                    receipts.push((p, receipt.base_offset, values));
                }
                receipts
            });
        }
    }
    let mut expected: BTreeMap<u32, BTreeMap<u64, Bytes>> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        for (p, base, values) in done.expect("producer task") {
            let slot = expected.entry(p).or_default();
            for (i, v) in values.into_iter().enumerate() {
                let previous = slot.insert(base + i as u64, v);
                assert!(
                    previous.is_none(),
                    "two receipts claim offset {} of partition {p}",
                    base + i as u64
                );
            }
        }
    }

    let mut seen = HashSet::with_capacity(RECORDS);
    for p in 0..PARTITIONS {
        let want = expected.get(&p).expect("partition got batches");
        let want_count = want.len() as u64;
        // Receipts tile the partition: offsets 0..count, no gaps.
        assert_eq!(
            want.keys().copied().collect::<Vec<_>>(),
            (0..want_count).collect::<Vec<_>>(),
            "receipts of partition {p} are not dense from 0"
        );
        wait_visible(&client, "bulk", p, want_count).await;
        let latest = client
            .list_offsets("bulk", p, OffsetSpec::Latest)
            .await
            .expect("list offsets");
        assert_eq!(
            latest.offset,
            Some(want_count),
            "partition {p} high watermark"
        );
        assert_eq!(latest.log_start_offset, 0);

        let got = fetch_all(&client, "bulk", p, 0).await;
        assert_eq!(
            got.len() as u64,
            want_count,
            "records back from partition {p}"
        );
        for (i, record) in got.iter().enumerate() {
            assert_eq!(
                record.offset, i as u64,
                "partition {p}: offsets must be dense and ordered"
            );
            let value = record.value.as_ref().expect("value present");
            assert_eq!(
                Some(value),
                want.get(&record.offset),
                "partition {p} offset {}: wrong value",
                record.offset
            );
            assert_eq!(record.timestamp, ts, "timestamp kept");
            assert!(record.key.is_none());
            assert!(
                seen.insert(value.clone()),
                "value {value:?} came back twice"
            );
        }
    }
    assert_eq!(seen.len(), RECORDS, "every record back exactly once");
}

fn stdout_lines(output: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn assert_success(what: &str, output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{what} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `quiver produce` fed 1,000 lines reports 1,000 acknowledged and exits 0;
/// `quiver consume --from-beginning --count 1000 --format json` prints the 1,000
/// records as JSON objects with the documented fields; `--key-separator` splits keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_produce_then_consume_json_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let created = broker.cli(&["topic", "create", "lines", "--partitions", "2"]);
    assert_success("topic create", &created);

    let input: Vec<String> = (0..1000).map(|i| format!("line number {i:04} ✓")).collect();
    let stdin = format!("{}\n", input.join("\n"));
    let produced = broker.cli_with_stdin(&["produce", "lines"], Some(stdin.as_bytes()));
    assert_success("produce", &produced);
    let summary = String::from_utf8_lossy(&produced.stdout).into_owned();
    assert!(
        summary
            .lines()
            .any(|l| l.contains("1000") && l.contains("acknowledged")),
        "no summary line reporting 1000 acknowledged records: {summary:?}"
    );

    let consumed = broker.cli(&[
        "consume",
        "lines",
        "--from-beginning",
        "--count",
        "1000",
        "--timeout",
        "20000",
        "--format",
        "json",
    ]);
    assert_success("consume", &consumed);
    let lines = stdout_lines(&consumed);
    assert_eq!(lines.len(), 1000, "one JSON line per record");
    let mut values = Vec::new();
    let mut per_partition: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for line in &lines {
        let json: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let object = json.as_object().expect("a JSON object");
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "topic",
                "partition",
                "offset",
                "timestamp",
                "key",
                "value",
                "headers"
            ],
            "fields of {line}"
        );
        assert_eq!(json["topic"], "lines");
        let partition = json["partition"].as_u64().expect("partition is a number");
        assert!(
            partition < 2,
            "partition {partition} of a 2-partition topic"
        );
        let offset = json["offset"].as_u64().expect("offset is a number");
        per_partition.entry(partition).or_default().push(offset);
        assert!(json["timestamp"].as_i64().expect("timestamp is a number") > 0);
        assert!(
            json["key"].is_null(),
            "no key without --key-separator: {line}"
        );
        assert_eq!(json["headers"], serde_json::json!({}));
        values.push(
            json["value"]
                .as_str()
                .expect("value is a string")
                .to_owned(),
        );
    }
    for (partition, offsets) in &per_partition {
        let dense: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(
            offsets, &dense,
            "partition {partition} offsets in order from 0"
        );
    }
    values.sort();
    let mut want = input.clone();
    want.sort();
    assert_eq!(values, want, "every line came back exactly once");

    // Keys: text before the first separator.
    let created = broker.cli(&["topic", "create", "keyed"]);
    assert_success("topic create keyed", &created);
    let keyed: String = (0..50)
        .map(|i| format!("user-{i}::payload {i} :: tail\n"))
        .collect();
    let produced = broker.cli_with_stdin(
        &["produce", "keyed", "--key-separator", "::"],
        Some(keyed.as_bytes()),
    );
    assert_success("produce keyed", &produced);
    let consumed = broker.cli(&[
        "consume",
        "keyed",
        "--from-beginning",
        "--count",
        "50",
        "--timeout",
        "20000",
        "--format",
        "json",
    ]);
    assert_success("consume keyed", &consumed);
    let lines = stdout_lines(&consumed);
    assert_eq!(lines.len(), 50);
    for (i, line) in lines.iter().enumerate() {
        let json: serde_json::Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(json["offset"], i as u64);
        assert_eq!(json["key"], format!("user-{i}"), "key of {line}");
        assert_eq!(
            json["value"],
            format!("payload {i} :: tail"),
            "value of {line}"
        );
    }

    // The default format prints values only, one per line.
    let consumed = broker.cli(&[
        "consume",
        "keyed",
        "--from-beginning",
        "--count",
        "3",
        "--timeout",
        "20000",
    ]);
    assert_success("consume values", &consumed);
    assert_eq!(
        stdout_lines(&consumed),
        [
            "payload 0 :: tail",
            "payload 1 :: tail",
            "payload 2 :: tail"
        ]
    );
}

/// Read-your-writes: once a produce with acks=all is acknowledged, the very next
/// request (list_offsets, fetch) sees the batch below the high watermark. Four
/// partitions run the check at once, so the broker is busy as it would be in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_batch_is_visible_to_the_next_request() {
    const PARTITIONS: u32 = 4;
    const ROUNDS: u64 = 500;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("ryw", PARTITIONS, 1))
        .await
        .expect("create topic");
    let no_wait = quiver_sdk::FetchOptions::default()
        .max_wait(std::time::Duration::ZERO)
        .min_bytes(0)
        .max_bytes(1024 * 1024);
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PARTITIONS {
        let client = client.clone();
        let no_wait = no_wait.clone();
        tasks.spawn(async move {
            for i in 0..ROUNDS {
                let value = format!("ryw-{p}-{i}");
                let receipt = client
                    .produce(
                        "ryw",
                        p,
                        Acks::All,
                        &[Record::from_value(value.clone(), now_ms())],
                    )
                    .await
                    .expect("produce")
                    .expect("acks=all answers");
                assert_eq!(receipt.base_offset, i);
                let latest = client
                    .list_offsets("ryw", p, OffsetSpec::Latest)
                    .await
                    .expect("list offsets");
                assert!(
                    latest.offset >= Some(i + 1),
                    "partition {p}: produce #{i} was acknowledged at offset {i}, but the next \
                     list_offsets reports high watermark {:?}",
                    latest.offset
                );
                let fetched = client.fetch("ryw", p, i, &no_wait).await.expect("fetch");
                assert_eq!(
                    fetched.records.first().and_then(|r| r.value.clone()),
                    Some(Bytes::from(value)),
                    "partition {p}: produce #{i} acknowledged, but a fetch at its offset right \
                     after returned {} records (high watermark {})",
                    fetched.records.len(),
                    fetched.high_watermark
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_bootstraps_past_a_dead_first_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    // Nothing listens there: the port was free a moment ago.
    let dead = quiver_tests::free_ports(1)[0];
    let bootstrap = format!("127.0.0.1:{dead}, {}", broker.quic_addr);
    let mut config = broker.client_config();
    config.broker = bootstrap.clone();
    config.connect_timeout = std::time::Duration::from_secs(1);
    let client = quiver_sdk::Client::connect(config)
        .await
        .expect("the second address answers");
    assert_eq!(client.broker_addr(), broker.quic_addr);
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("via-second", 1, 1))
        .await
        .expect("served");

    let out = quiver_tests::run_quiver(
        &[
            "topic".into(),
            "list".into(),
            "--broker".into(),
            bootstrap,
            "--ca-cert".into(),
            broker.ca_cert().display().to_string(),
        ],
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("via-second"));

    // Every address dead: the error names the last one tried.
    let mut config = broker.client_config();
    config.broker = format!("127.0.0.1:{dead}");
    config.connect_timeout = std::time::Duration::from_secs(1);
    let Err(err) = quiver_sdk::Client::connect(config).await else {
        panic!("a dead address answered");
    };
    assert!(err.to_string().contains(&dead.to_string()), "{err}");
}
