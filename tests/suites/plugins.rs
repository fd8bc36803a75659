//! WebAssembly plugins through a real broker: hostile modules refused or contained,
//! `on_error` policies (dead-letter, skip, pass, fail), the fetch stage's offsets and
//! zero-copy, the registry across a restart, replacing a version mid-stream, and the
//! example plugins of `plugins/examples` built from source.
//!
//! The WAT plugins here are written from `plugins/ABI.md` alone and uploaded as text
//! (the broker accepts both WebAssembly formats).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use quiver_sdk::{
    Acks, Attachment, Client, ErrorCode, FetchOptions, OnError, PluginCall, PluginStage, Producer,
    ProducerConfig, ProducerRecord, Record, RecordHeader,
};
use quiver_tests::ClientAdmin;
use quiver_tests::wat::{PRELUDE, TRAP_FILTER, filter_filling, module as wat};
use quiver_tests::{Broker, fetch_all};
use quiver_wire::batch::{BatchBuilder, BatchHeader, BatchSplitter, ProducerStamp};

/// Traps when the batch's first record's value starts with `x`; keeps all otherwise.
/// The first value sits after `[count:4][offset_delta:4][timestamp:8][key_len:4][key]
/// [value_len:4]`.
fn trap_on_x() -> String {
    r#"(func (export "filter") (param $ptr i32) (param $len i32) (result i64)
    (local $key i32) (local $out i32) (local $count i32) (local $bytes i32)
    (local.set $key (i32.load (i32.add (local.get $ptr) (i32.const 16))))
    (if (i32.lt_s (local.get $key) (i32.const 0)) (then (local.set $key (i32.const 0))))
    (if (i32.eq (i32.load8_u (i32.add (i32.add (local.get $ptr) (i32.const 24)) (local.get $key)))
                (i32.const 120))
        (then unreachable))
    (local.set $count (i32.load (local.get $ptr)))
    (local.set $out (global.get $bump))
    (i32.store (local.get $out) (local.get $count))
    (local.set $bytes (i32.shr_u (i32.add (local.get $count) (i32.const 7)) (i32.const 3)))
    (memory.fill (i32.add (local.get $out) (i32.const 4)) (i32.const 255) (local.get $bytes))
    (global.set $bump (i32.const 1024))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
            (i64.extend_i32_u (i32.add (i32.const 4) (local.get $bytes)))))"#
        .to_owned()
}

async fn upload(client: &Client, name: &str, body: &str) {
    client
        .admin()
        .upload_plugin(name, Bytes::from(wat(body)))
        .await
        .unwrap_or_else(|e| panic!("upload {name}: {e}"));
}

async fn attach(client: &Client, topic: &str, plugin: &str, stage: PluginStage, on_error: OnError) {
    client
        .admin()
        .attach_plugin(Attachment {
            topic: topic.into(),
            plugin: plugin.into(),
            stage,
            params: Vec::new(),
            on_error,
        })
        .await
        .unwrap_or_else(|e| panic!("attach {plugin} to {topic}: {e}"));
}

/// Produces one batch of `values` and returns its base offset.
async fn produce(
    client: &Client,
    topic: &str,
    values: &[&str],
) -> Result<u64, quiver_sdk::RequestError> {
    let mut builder = BatchBuilder::new(ProducerStamp::NONE);
    for v in values {
        builder.push(&Record::from_value(
            Bytes::copy_from_slice(v.as_bytes()),
            1_000,
        ));
    }
    let batch = builder.finish().expect("records");
    let response = client.produce_batch(topic, 0, Acks::All, batch).await?;
    Ok(response.expect("acks=all answers").base_offset)
}

fn values(records: &[quiver_sdk::DecodedRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

fn header<'a>(headers: &'a [RecordHeader], key: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
}

fn with_plugin(name: &str) -> FetchOptions {
    FetchOptions::default()
        .max_wait(Duration::from_millis(50))
        .plugin(PluginCall {
            name: name.into(),
            params: Vec::new(),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_modules_are_refused_or_contained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let client = broker.client().await;
    for topic in ["hostile", "calm"] {
        client
            .admin()
            .create_topic(quiver_sdk::NewTopic::new(topic, 1, 1))
            .await
            .expect("create");
        produce(&client, topic, &["a", "b", "c"])
            .await
            .expect("produce");
    }

    // Refused at upload, with the reason.
    let refused = [
        (
            "wasi",
            format!(
                r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))) {PRELUDE} {})"#,
                filter_filling(255)
            ),
            "imports wasi_snapshot_preview1::fd_write",
        ),
        (
            "abi-v2",
            wat(&filter_filling(255))
                .replace("(result i32) (i32.const 1))", "(result i32) (i32.const 2))"),
            "speaks ABI version 2",
        ),
        (
            "not-wasm",
            "hello".to_owned(),
            "not a valid WebAssembly module",
        ),
    ];
    for (name, module, reason) in refused {
        let err = client
            .admin()
            .upload_plugin(name, Bytes::from(module))
            .await
            .expect_err(name);
        assert_eq!(err.code(), Some(ErrorCode::InvalidPlugin), "{name}: {err}");
        assert!(err.to_string().contains(reason), "{name}: {err}");
    }

    // Contained at run time: each fails the fetch with its reason, and the broker
    // goes on serving.
    let contained = [
        (
            "loop",
            r#"(func (export "filter") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0))"#,
            "exceeded its CPU time",
        ),
        (
            "bomb",
            r#"(func (export "filter") (param i32 i32) (result i64)
                 (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
                 unreachable)"#,
            "trapped",
        ),
        ("trap", TRAP_FILTER, "trapped"),
        (
            "out-of-bounds",
            r#"(func (export "filter") (param i32 i32) (result i64) (i64.const 0x7fff000000000064))"#,
            "answer out of bounds",
        ),
        (
            "garbage",
            r#"(func (export "filter") (param $p i32) (param $l i32) (result i64)
                 (i32.store (i32.const 8) (i32.const 999999))
                 (i64.const 0x0000000800000008))"#,
            "answer malformed",
        ),
    ];
    for (name, body, reason) in contained {
        upload(&client, name, body).await;
        let err = client
            .fetch("hostile", 0, 0, &with_plugin(name))
            .await
            .expect_err(name);
        assert_eq!(err.code(), Some(ErrorCode::PluginFailed), "{name}: {err}");
        assert!(err.to_string().contains(reason), "{name}: {err}");
        let calm = client
            .fetch("calm", 0, 0, &FetchOptions::default())
            .await
            .expect("other topics keep being served");
        assert_eq!(values(&calm.records), ["a", "b", "c"]);
    }

    // At the produce stage with on_error = fail, the producer gets the error and
    // nothing is stored.
    attach(
        &client,
        "hostile",
        "trap",
        PluginStage::Produce,
        OnError::Fail,
    )
    .await;
    let err = produce(&client, "hostile", &["d"])
        .await
        .expect_err("plugin fails");
    assert_eq!(err.code(), Some(ErrorCode::PluginFailed), "{err}");
    client
        .admin()
        .detach_plugin("hostile", "trap")
        .await
        .expect("detach");
    assert_eq!(
        values(&fetch_all(&client, "hostile", 0, 0).await),
        ["a", "b", "c"]
    );

    // Asking for a plugin nobody uploaded is its own error.
    let err = client
        .fetch("hostile", 0, 0, &with_plugin("missing"))
        .await
        .expect_err("unknown plugin");
    assert_eq!(err.code(), Some(ErrorCode::UnknownPlugin), "{err}");

    assert!(broker.is_running(), "the broker survived every plugin");
    let (_, metrics) = broker.http_get("/metrics");
    assert!(
        metrics.contains(
            r#"quiver_plugin_errors_total{kind="timeout",plugin="loop",stage="fetch"} 1"#
        ),
        "timeout counted:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("plugin_errors"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_batches_are_dead_lettered_skipped_or_passed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    for topic in ["orders", "orders-dlq", "views", "views-dlq"] {
        client
            .admin()
            .create_topic(quiver_sdk::NewTopic::new(topic, 1, 1))
            .await
            .expect("create");
    }
    upload(&client, "picky", &trap_on_x()).await;

    // Produce stage, dead-letter: the bad batch lands in the DLQ with the reason; the
    // good batches around it are stored in order.
    attach(
        &client,
        "orders",
        "picky",
        PluginStage::Produce,
        OnError::DeadLetter("orders-dlq".into()),
    )
    .await;
    produce(&client, "orders", &["good-1", "good-2"])
        .await
        .expect("good batch");
    produce(&client, "orders", &["x-bad-1", "x-bad-2"])
        .await
        .expect("bad batch is acknowledged");
    produce(&client, "orders", &["good-3"])
        .await
        .expect("good batch");
    assert_eq!(
        values(&fetch_all(&client, "orders", 0, 0).await),
        ["good-1", "good-2", "good-3"]
    );
    let dead = fetch_all(&client, "orders-dlq", 0, 0).await;
    assert_eq!(values(&dead), ["x-bad-1", "x-bad-2"]);
    for record in &dead {
        assert_eq!(header(&record.headers, "quiver.plugin"), Some("picky"));
        assert_eq!(
            header(&record.headers, "quiver.plugin.stage"),
            Some("produce")
        );
        assert_eq!(
            header(&record.headers, "quiver.source.topic"),
            Some("orders")
        );
        let reason = header(&record.headers, "quiver.plugin.error").expect("reason");
        assert!(reason.contains("trapped"), "{reason}");
    }

    // Skip and pass at the produce stage.
    for (policy, value) in [(OnError::Skip, "x-skipped"), (OnError::Pass, "x-passed")] {
        client
            .admin()
            .detach_plugin("orders", "picky")
            .await
            .expect("detach");
        attach(&client, "orders", "picky", PluginStage::Produce, policy).await;
        produce(&client, "orders", &[value])
            .await
            .expect("the batch is acknowledged");
    }
    assert_eq!(
        values(&fetch_all(&client, "orders", 0, 0).await),
        ["good-1", "good-2", "good-3", "x-passed"]
    );

    // Fetch stage, dead-letter: the stored data is untouched; the consumer reads past
    // the bad batch, whose records land in the DLQ with their source offsets.
    let base = produce(&client, "views", &["v-1"]).await.expect("produce");
    produce(&client, "views", &["x-v-2", "x-v-3"])
        .await
        .expect("produce");
    produce(&client, "views", &["v-4"]).await.expect("produce");
    attach(
        &client,
        "views",
        "picky",
        PluginStage::Fetch,
        OnError::DeadLetter("views-dlq".into()),
    )
    .await;
    let seen = fetch_all(&client, "views", 0, base).await;
    assert_eq!(values(&seen), ["v-1", "v-4"]);
    assert_eq!(seen.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 3]);
    let dead = fetch_all(&client, "views-dlq", 0, 0).await;
    assert_eq!(values(&dead), ["x-v-2", "x-v-3"]);
    let offsets: Vec<_> = dead
        .iter()
        .map(|r| header(&r.headers, "quiver.source.offset").expect("offset"))
        .collect();
    assert_eq!(offsets, ["1", "2"]);
    client
        .admin()
        .detach_plugin("views", "picky")
        .await
        .expect("detach");
    assert_eq!(
        values(&fetch_all(&client, "views", 0, 0).await),
        ["v-1", "x-v-2", "x-v-3", "v-4"],
        "the fetch stage never changes what is stored"
    );
    let (_, metrics) = broker.http_get("/metrics");
    assert!(
        metrics.contains(
            r#"quiver_plugin_dead_letter_records_total{plugin="picky",stage="produce"} 2"#
        )
    );
    assert!(
        metrics
            .contains(r#"quiver_plugin_batches_skipped_total{plugin="picky",stage="produce"} 1"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_stage_keeps_offsets_and_zero_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("t", 1, 1))
        .await
        .expect("create");
    produce(&client, "t", &["r0", "r1", "r2", "r3", "r4"])
        .await
        .expect("produce");
    produce(&client, "t", &["r5", "r6", "r7"])
        .await
        .expect("produce");
    upload(&client, "keep-all", &filter_filling(0xff)).await;
    // Keeps positions 0, 2, 4, ... of every batch.
    upload(&client, "keep-even", &filter_filling(0x55)).await;

    let plain = client
        .fetch_batches("t", 0, 0, &FetchOptions::default())
        .await
        .expect("fetch");
    let through = client
        .fetch_batches("t", 0, 0, &with_plugin("keep-all"))
        .await
        .expect("fetch");
    assert_eq!(
        plain.batches, through.batches,
        "a filter keeping everything sends the stored bytes"
    );

    let even = client
        .fetch("t", 0, 0, &with_plugin("keep-even"))
        .await
        .expect("fetch");
    assert_eq!(
        even.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [0, 2, 4, 5, 7]
    );
    assert_eq!(values(&even.records), ["r0", "r2", "r4", "r5", "r7"]);
    assert_eq!(even.next_offset, 8);

    // Attached to the topic, the filter applies to every consumer; chained with a
    // consumer's own plugin, both apply in order.
    attach(&client, "t", "keep-even", PluginStage::Fetch, OnError::Fail).await;
    let attached = client
        .fetch("t", 0, 0, &FetchOptions::default())
        .await
        .expect("fetch");
    assert_eq!(values(&attached.records), ["r0", "r2", "r4", "r5", "r7"]);
    let chained = client
        .fetch("t", 0, 0, &with_plugin("keep-even"))
        .await
        .expect("fetch");
    // Survivors of the first pass are renumbered per batch for the second: r0 r2 r4
    // keep positions 0 and 2, r5 r7 keep position 0.
    assert_eq!(values(&chained.records), ["r0", "r4", "r5"]);
    assert_eq!(chained.next_offset, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_survive_a_restart_from_the_compile_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("t", 1, 1))
        .await
        .expect("create");
    produce(&client, "t", &["r0", "r1", "r2"])
        .await
        .expect("produce");
    upload(&client, "keep-even", &filter_filling(0x55)).await;
    attach(&client, "t", "keep-even", PluginStage::Fetch, OnError::Skip).await;
    let (before, attachments_before) = client.admin().list_plugins().await.expect("list");
    drop(client);

    broker.restart();
    let client = broker.client().await;
    let (after, attachments_after) = client.admin().list_plugins().await.expect("list");
    assert_eq!(before, after);
    assert_eq!(attachments_before, attachments_after);
    let fetched = client
        .fetch("t", 0, 0, &FetchOptions::default())
        .await
        .expect("fetch");
    assert_eq!(values(&fetched.records), ["r0", "r2"]);
    let (_, metrics) = broker.http_get("/metrics");
    assert!(
        metrics.contains(r#"quiver_plugin_loads_total{source="cache"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"quiver_plugin_loads_total{source="compile"} 0"#),
        "{metrics}"
    );
    assert!(metrics.contains("quiver_plugins_registered 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_plugin_while_a_consumer_streams_loses_nothing() {
    const TOTAL: u64 = 20_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("stream", 1, 1))
        .await
        .expect("create");
    // Two versions that both keep every record, so loss or duplication shows.
    upload(&client, "view", &filter_filling(0xff)).await;
    attach(&client, "stream", "view", PluginStage::Fetch, OnError::Fail).await;

    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default()
            .acks(Acks::Leader)
            .linger(Duration::from_millis(1))
            .batch_bytes(4 * 1024),
    );
    let sending = tokio::spawn(async move {
        let mut receipts = Vec::with_capacity(TOTAL as usize);
        for i in 0..TOTAL {
            let receipt = producer
                .send(ProducerRecord::new("stream", format!("{i}")).partition(0))
                .await
                .expect("buffered");
            receipts.push(receipt);
        }
        for receipt in receipts {
            receipt.await.expect("acknowledged");
        }
    });

    let consumer_client = client.clone();
    let consuming = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(TOTAL as usize);
        let mut offset = 0;
        let options = FetchOptions::default()
            .max_wait(Duration::from_millis(100))
            .max_bytes(16 * 1024);
        while (seen.len() as u64) < TOTAL {
            let fetched = consumer_client
                .fetch("stream", 0, offset, &options)
                .await
                .expect("no fetch fails while the plugin is replaced");
            seen.extend(values(&fetched.records));
            offset = fetched.next_offset;
        }
        seen
    });

    let mut versions = BTreeMap::new();
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Alternate between two modules that differ only in a no-op.
        let body = if round % 2 == 0 {
            format!("{} (func $noop)", filter_filling(0xff))
        } else {
            filter_filling(0xff)
        };
        let info = client
            .admin()
            .upload_plugin("view", Bytes::from(wat(&body)))
            .await
            .expect("replace");
        versions.insert(info.version, round);
    }
    assert_eq!(versions.len(), 2, "two distinct versions were uploaded");
    sending.await.expect("producer task");
    let seen = tokio::time::timeout(Duration::from_secs(120), consuming)
        .await
        .expect("consumer finished")
        .expect("consumer task");
    let expected: Vec<String> = (0..TOTAL).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected, "every record exactly once, in order");
}

/// A built example plugin, by crate name.
fn example(name: &str) -> Bytes {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(format!("{name}.wasm"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the example plugins first with plugins/build.sh (scripts/test.sh does)",
            path.display()
        )
    });
    Bytes::from(bytes)
}

async fn attach_with(
    client: &Client,
    topic: &str,
    plugin: &str,
    stage: PluginStage,
    params: &[(&str, &str)],
) {
    client
        .admin()
        .attach_plugin(Attachment {
            topic: topic.into(),
            plugin: plugin.into(),
            stage,
            params: params
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            on_error: OnError::Fail,
        })
        .await
        .unwrap_or_else(|e| panic!("attach {plugin} to {topic}: {e}"));
}

/// One example: its params, the input values, and the values expected out.
struct ExampleCase {
    plugin: &'static str,
    params: &'static [(&'static str, &'static str)],
    input: &'static [&'static str],
    output: &'static [&'static str],
}

const EXAMPLES: &[ExampleCase] = &[
    ExampleCase {
        plugin: "json-field-filter",
        params: &[("field", "user.country"), ("value", "NO")],
        input: &[
            r#"{"user":{"country":"NO"},"n":1}"#,
            r#"{"user":{"country":"SE"},"n":2}"#,
            "not json",
            r#"{"user":{"country":"NO"},"n":3}"#,
        ],
        output: &[
            r#"{"user":{"country":"NO"},"n":1}"#,
            r#"{"user":{"country":"NO"},"n":3}"#,
        ],
    },
    ExampleCase {
        plugin: "regex-filter",
        params: &[("pattern", "^ERROR [0-9]+")],
        input: &["ERROR 42 disk", "INFO ok", "ERROR x", "ERROR 7"],
        output: &["ERROR 42 disk", "ERROR 7"],
    },
    ExampleCase {
        plugin: "pii-redact",
        params: &[],
        input: &[
            "mail ola@example.com now",
            "card 4111 1111 1111 1111 ok",
            "nothing here",
        ],
        output: &["mail [email] now", "card [card] ok", "nothing here"],
    },
    ExampleCase {
        plugin: "json-project",
        params: &[("fields", "id,total")],
        input: &[r#"{"id":1,"secret":"s","total":9.5}"#, r#"{"id":2}"#],
        output: &[r#"{"id":1,"total":9.5}"#, r#"{"id":2}"#],
    },
    ExampleCase {
        plugin: "json-array-split",
        params: &[],
        input: &[r#"[1,{"a":2},"three"]"#, r#"{"single":true}"#],
        output: &["1", r#"{"a":2}"#, r#""three""#, r#"{"single":true}"#],
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_plugins_work_at_both_stages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    for case in EXAMPLES {
        client
            .admin()
            .upload_plugin(case.plugin, example(case.plugin))
            .await
            .unwrap_or_else(|e| panic!("upload {}: {e}", case.plugin));
        for stage in [PluginStage::Produce, PluginStage::Fetch] {
            let topic = format!("{}-{stage}", case.plugin);
            client
                .admin()
                .create_topic(quiver_sdk::NewTopic::new(&topic, 1, 1))
                .await
                .expect("create");
            attach_with(&client, &topic, case.plugin, stage, case.params).await;
            produce(&client, &topic, case.input).await.expect("produce");
            let got = values(&fetch_all(&client, &topic, 0, 0).await);
            assert_eq!(got, case.output, "{} at the {stage} stage", case.plugin);
            client
                .admin()
                .detach_plugin(&topic, case.plugin)
                .await
                .expect("detach");
            let stored = values(&fetch_all(&client, &topic, 0, 0).await);
            let expected_stored = match stage {
                PluginStage::Produce => case.output,
                PluginStage::Fetch => case.input,
            };
            assert_eq!(
                stored, expected_stored,
                "{} stored after the {stage} stage",
                case.plugin
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_through_a_produce_filter_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("logs", 1, 1))
        .await
        .expect("create");
    client
        .admin()
        .upload_plugin("errors-only", example("regex-filter"))
        .await
        .expect("upload");
    attach_with(
        &client,
        "logs",
        "errors-only",
        PluginStage::Produce,
        &[("pattern", "^ERROR")],
    )
    .await;
    let config = ProducerConfig::default()
        .acks(Acks::All)
        .linger(Duration::from_millis(1))
        .batch_bytes(2 * 1024)
        .retry_backoff(Duration::from_millis(20));
    let send_round = |producer: Producer, round: u32| async move {
        let mut receipts = Vec::new();
        for i in 0..2_000u32 {
            // Whole batches of INFO lines are removed by the filter and stored as
            // markers; the producer's sequence must carry on past them, also when
            // the last batches before the restart were all removed.
            let line = if (i / 100) % 2 == 0 { "ERROR" } else { "INFO" };
            let receipt = producer
                .send(ProducerRecord::new("logs", format!("{line} {round}-{i}")).partition(0))
                .await
                .expect("buffered");
            receipts.push(receipt);
        }
        for receipt in receipts {
            receipt.await.expect("every record acknowledged");
        }
    };
    let producer = Producer::new(client.clone(), config.clone());
    send_round(producer.clone(), 0).await;
    drop(client);
    broker.restart();
    let client = broker.client().await;
    // The same producer carries on across the restart, with its id and sequence.
    send_round(producer, 1).await;
    let stored = values(&fetch_all(&client, "logs", 0, 0).await);
    let expected: Vec<String> = (0..2u32)
        .flat_map(|round| {
            (0..2_000u32)
                .filter(|i| (i / 100) % 2 == 0)
                .map(move |i| format!("ERROR {round}-{i}"))
        })
        .collect();
    assert_eq!(stored, expected);
    // Markers took offsets; consumers skipped them.
    let end = client
        .list_offsets("logs", 0, quiver_sdk::OffsetSpec::Latest)
        .await
        .expect("offsets")
        .log_end_offset;
    assert!(end >= expected.len() as u64);
    let batches = client
        .fetch_batches("logs", 0, 0, &FetchOptions::default())
        .await
        .expect("fetch");
    let controls = BatchSplitter::new(batches.batches)
        .filter_map(Result::ok)
        .filter(|b| BatchHeader::parse(b).is_ok_and(|h| h.is_control()))
        .count();
    assert!(controls > 0, "removed batches are stored as markers");
}

fn stdout_ok(output: &std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_uploads_attaches_tests_and_consumes_through_plugins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let keep_even = dir.path().join("keep-even.wat");
    std::fs::write(&keep_even, wat(&filter_filling(0x55))).expect("write module");
    let keep_even = keep_even.display().to_string();
    let regex = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist/regex-filter.wasm")
        .display()
        .to_string();

    // Locally, without a broker.
    let input = dir.path().join("lines.txt");
    std::fs::write(&input, "ERROR a\nINFO b\nERROR c\n").expect("write input");
    let tested = quiver_tests::run_quiver(
        &[
            "plugin".into(),
            "test".into(),
            regex.clone(),
            "--input".into(),
            input.display().to_string(),
            "--param".into(),
            "pattern=^ERROR".into(),
        ],
        None,
        &[],
    );
    assert_eq!(stdout_ok(&tested, "plugin test"), "ERROR a\nERROR c\n");
    let refused = quiver_tests::run_quiver(
        &["plugin".into(), "test".into(), regex.clone()],
        Some(b"x\n"),
        &[],
    );
    assert!(
        !refused.status.success(),
        "a missing pattern is refused by init"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("init refused"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let uploaded = broker.cli(&["plugin", "upload", "keep-even", &keep_even]);
    let line = stdout_ok(&uploaded, "plugin upload");
    assert!(
        line.starts_with("uploaded plugin keep-even version "),
        "{line}"
    );
    stdout_ok(
        &broker.cli(&["plugin", "upload", "errors", &regex]),
        "plugin upload",
    );
    stdout_ok(&broker.cli(&["topic", "create", "logs"]), "topic create");
    stdout_ok(
        &broker.cli(&[
            "plugin",
            "attach",
            "logs",
            "errors",
            "--stage",
            "fetch",
            "--param",
            "pattern=^ERROR",
            "--on-error",
            "skip",
        ]),
        "plugin attach",
    );
    let list = stdout_ok(&broker.cli(&["plugin", "list"]), "plugin list");
    assert!(list.contains("keep-even\tfilter\t"), "{list}");
    assert!(
        list.contains("logs\tfetch\terrors\tskip\tpattern=^ERROR"),
        "{list}"
    );
    stdout_ok(
        &broker.cli_with_stdin(
            &["produce", "logs"],
            Some(b"ERROR 1\nINFO 2\nERROR 3\nERROR 4\n"),
        ),
        "produce",
    );
    let consumed = broker.cli(&["consume", "logs", "--from-beginning", "--count", "3"]);
    assert_eq!(
        stdout_ok(&consumed, "consume"),
        "ERROR 1\nERROR 3\nERROR 4\n"
    );
    // The consumer's own plugin runs after the topic's: positions 0 and 2 of the
    // ERROR lines (the produce stored one batch).
    let consumed = broker.cli(&[
        "consume",
        "logs",
        "--from-beginning",
        "--plugin",
        "keep-even",
        "--count",
        "2",
    ]);
    assert_eq!(
        stdout_ok(&consumed, "consume --plugin"),
        "ERROR 1\nERROR 4\n"
    );
    let missing = broker.cli(&["consume", "logs", "--plugin", "nope", "--count", "1"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no plugin named `nope`"));
    let bad = broker.cli(&["plugin", "attach", "logs", "errors", "--stage", "sideways"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use produce or fetch"));
    stdout_ok(
        &broker.cli(&["plugin", "detach", "logs", "errors"]),
        "plugin detach",
    );
    let consumed = broker.cli(&["consume", "logs", "--from-beginning", "--count", "4"]);
    assert_eq!(
        stdout_ok(&consumed, "consume"),
        "ERROR 1\nINFO 2\nERROR 3\nERROR 4\n"
    );
    let again = broker.cli(&["plugin", "detach", "logs", "errors"]);
    assert!(!again.status.success(), "detaching twice is an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_stage_dead_letter_cycles_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    for topic in ["a", "b", "c"] {
        client
            .admin()
            .create_topic(quiver_sdk::NewTopic::new(topic, 1, 1))
            .await
            .expect("create");
    }
    upload(&client, "picky", &trap_on_x()).await;
    let dead_letter = |topic: &str, to: &str, stage| Attachment {
        topic: topic.into(),
        plugin: "picky".into(),
        stage,
        params: Vec::new(),
        on_error: OnError::DeadLetter(to.into()),
    };
    client
        .admin()
        .attach_plugin(dead_letter("a", "b", PluginStage::Produce))
        .await
        .expect("a -> b");
    client
        .admin()
        .attach_plugin(dead_letter("b", "c", PluginStage::Produce))
        .await
        .expect("b -> c");
    // c -> a closes a -> b -> c -> a: two failing produces could wait on each other.
    let err = client
        .admin()
        .attach_plugin(dead_letter("c", "a", PluginStage::Produce))
        .await
        .expect_err("a cycle");
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    assert!(err.to_string().contains("cycle"), "{err}");
    // At the fetch stage nothing is locked while dead-lettering: allowed.
    client
        .admin()
        .attach_plugin(dead_letter("c", "a", PluginStage::Fetch))
        .await
        .expect("fetch-stage dead letters may point anywhere");
}

/// The `.wasm` and `.cwasm` files a broker's plugin registry holds.
fn plugin_files(broker: &Broker) -> Vec<String> {
    let mut names = Vec::new();
    for sub in ["modules", "compiled"] {
        let dir = broker.data_dir.join("plugins").join(sub);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            names.extend(
                entries.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()),
            );
        }
    }
    names.sort();
    names
}

/// `quiver plugin delete` is refused while a topic has the plugin attached (and the
/// topic's consumers keep receiving what they did); once detached it deletes the
/// plugin, and a replaced or deleted version leaves no file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_is_deleted_only_once_detached_and_leaves_no_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("kept", 1, 1))
        .await
        .expect("create");
    upload(&client, "evens", &filter_filling(0x55)).await;
    upload(&client, "evens", &filter_filling(0xff)).await;
    assert_eq!(
        plugin_files(&broker).len(),
        2,
        "the replaced version's files are gone"
    );
    attach(&client, "kept", "evens", PluginStage::Fetch, OnError::Fail).await;

    let refused = broker.cli(&["plugin", "delete", "evens"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("PLUGIN_IN_USE") && stderr.contains("`kept`"),
        "{stderr}"
    );
    let err = client
        .admin()
        .delete_plugin("evens")
        .await
        .expect_err("attached");
    assert_eq!(err.code(), Some(ErrorCode::PluginInUse), "{err}");
    let (plugins, attachments) = client.admin().list_plugins().await.expect("list");
    assert_eq!(
        (plugins.len(), attachments.len()),
        (1, 1),
        "nothing changed"
    );

    client
        .admin()
        .detach_plugin("kept", "evens")
        .await
        .expect("detach");
    let deleted = broker.cli(&["plugin", "delete", "evens"]);
    assert!(deleted.status.success(), "{deleted:?}");
    let (plugins, _) = client.admin().list_plugins().await.expect("list");
    assert!(plugins.is_empty(), "{plugins:?}");
    assert_eq!(plugin_files(&broker), Vec::<String>::new());
    let err = client
        .admin()
        .delete_plugin("evens")
        .await
        .expect_err("gone");
    assert_eq!(err.code(), Some(ErrorCode::UnknownPlugin), "{err}");
}

/// Runs `plugins/build.sh` on `args` (example names or project folders), bounded in
/// time, with the target directory shared with the example plugins so that std for
/// wasm32 and the guest SDK are compiled once. Panics with its output on failure.
fn build_plugins(args: &[std::path::PathBuf], logs: &std::path::Path) {
    let plugins = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let log = |name: &str| std::fs::File::create(logs.join(name)).expect("log file");
    let mut child = std::process::Command::new(plugins.join("build.sh"))
        .args(args)
        .env("CARGO_TARGET_DIR", plugins.join("target"))
        .stdin(std::process::Stdio::null())
        .stdout(log("build.out"))
        .stderr(log("build.err"))
        .spawn()
        .expect("run plugins/build.sh");
    let status = quiver_tests::wait_bounded(&mut child, Duration::from_secs(20 * 60));
    let output = || {
        let read = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap_or_default();
        format!("{}{}", read("build.out"), read("build.err"))
    };
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!("plugins/build.sh {args:?} failed ({status}):\n{}", output()),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "plugins/build.sh {args:?} took over 20 minutes:\n{}",
                output()
            );
        }
    }
}

fn quiver_ok(args: &[&str], stdin: Option<&[u8]>) -> String {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let output = quiver_tests::run_quiver(&args, stdin, &[]);
    stdout_ok(&output, &format!("quiver {}", args.join(" ")))
}

/// The values of `plugin test --format json` output lines.
fn json_values(lines: &str) -> Vec<String> {
    lines
        .lines()
        .map(|line| {
            let json: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            json["value"].as_str().unwrap_or("<null>").to_owned()
        })
        .collect()
}

/// `quiver plugin init` for every kind in every language writes a project that
/// `plugins/build.sh` builds as written and that passes `quiver plugin test` on its
/// sample: the output its README shows, the same in Rust, C and WAT, and what each kind
/// promises (kept records keep key, headers, timestamp and offset).
#[test]
fn plugin_init_projects_of_every_kind_and_language_build_and_pass_plugin_test() {
    let root = tempfile::tempdir().expect("tempdir");
    let kinds = ["filter", "map", "filter-map", "array-map"];
    let langs = ["rust", "c", "wat"];
    let mut dirs = Vec::new();
    for kind in kinds {
        for lang in langs {
            let name = format!("{kind}-{lang}");
            let dir = root.path().join(&name);
            let said = quiver_ok(
                &[
                    "plugin",
                    "init",
                    &name,
                    "--kind",
                    kind,
                    "--lang",
                    lang,
                    "--dir",
                    &dir.display().to_string(),
                ],
                None,
            );
            assert!(said.contains("README.md"), "{said}");
            dirs.push(dir);
        }
    }
    // Init never overwrites: the folder now holds a project.
    let again = quiver_tests::run_quiver(
        &[
            "plugin".into(),
            "init".into(),
            "filter-c".into(),
            "--kind".into(),
            "filter".into(),
            "--dir".into(),
            dirs[0].display().to_string(),
        ],
        None,
        &[],
    );
    assert!(!again.status.success(), "init into a non-empty folder");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let started = std::time::Instant::now();
    build_plugins(&dirs, root.path());
    eprintln!("built 8 projects in {:?}", started.elapsed());

    let expected_values: [&[&str]; 4] = [
        &["ERROR disk full", "ERROR timeout,retrying"],
        &[
            "ERROR DISK FULL",
            "INFO REQUEST SERVED,200",
            "",
            "ERROR TIMEOUT,RETRYING",
        ],
        &[
            "ERROR DISK FULL",
            "INFO REQUEST SERVED,200",
            "ERROR TIMEOUT,RETRYING",
        ],
        &[
            "ERROR disk full",
            "INFO request served",
            "200",
            "",
            "ERROR timeout",
            "retrying",
        ],
    ];
    for (kind, expected) in kinds.iter().zip(expected_values) {
        let mut outputs = Vec::new();
        for lang in langs {
            let name = format!("{kind}-{lang}");
            let dir = root.path().join(&name);
            let module = dir.join(if lang == "wat" {
                format!("{name}.wat")
            } else {
                format!("{name}.wasm")
            });
            let out = quiver_ok(
                &[
                    "plugin",
                    "test",
                    &module.display().to_string(),
                    "--format",
                    "json",
                    "--input",
                    &dir.join("sample.jsonl").display().to_string(),
                ],
                None,
            );
            assert_eq!(json_values(&out), expected, "{name}");
            let readme = std::fs::read_to_string(dir.join("README.md")).expect("README");
            assert!(
                readme.contains(&out),
                "{name}: the README shows another output than\n{out}"
            );
            outputs.push(out);
        }
        assert!(
            outputs.windows(2).all(|w| w[0] == w[1]),
            "{kind}: Rust, C and WAT differ:\n{outputs:#?}"
        );
        // The last record of the sample, whatever the kind made of it, keeps its
        // key, headers, timestamp and offset.
        let last: serde_json::Value =
            serde_json::from_str(outputs[0].lines().last().expect("a record")).expect("JSON");
        assert_eq!(last["offset"], 3, "{kind}");
        assert_eq!(last["key"], "db-1", "{kind}");
        assert_eq!(last["timestamp"], 1_767_225_603_000_i64, "{kind}");
        assert_eq!(
            last["headers"],
            serde_json::json!({"host": "c3", "trace": "t-9"}),
            "{kind}"
        );
    }

    // The filter's parameter, in every language; plain lines in, plain lines out.
    for lang in ["rust", "c", "wat"] {
        let dir = root.path().join(format!("filter-{lang}"));
        let module = if lang == "wat" {
            dir.join(format!("filter-{lang}.wat"))
        } else {
            dir.join(format!("filter-{lang}.wasm"))
        };
        let out = quiver_ok(
            &[
                "plugin",
                "test",
                &module.display().to_string(),
                "--param",
                "prefix=INFO",
            ],
            Some(b"ERROR a\nINFO b\nINF\n"),
        );
        assert_eq!(out, "INFO b\n", "filter-{lang} with prefix=INFO");
    }
}

/// The C example, built by plugins/build.sh with clang: locally with JSON records, and
/// on a broker's fetch stage over records produced with `quiver produce --header`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_example_keeps_records_by_header_from_produce_with_headers() {
    let module = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist/header-filter.wasm")
        .display()
        .to_string();
    let records = concat!(
        r#"{"value":"disk full","headers":{"level":"error"},"timestamp":5}"#,
        "\n",
        r#"{"value":"all good","headers":{"level":"info"}}"#,
        "\n",
        r#"{"value":"no level"}"#,
        "\n",
    );
    let local = quiver_ok(
        &[
            "plugin",
            "test",
            &module,
            "--format",
            "json",
            "--param",
            "name=level",
            "--param",
            "value=error",
        ],
        Some(records.as_bytes()),
    );
    assert_eq!(
        local,
        "{\"offset\":0,\"timestamp\":5,\"key\":null,\"value\":\"disk full\",\"headers\":{\"level\":\"error\"}}\n"
    );
    // Without --format, the first line says the input is JSON records.
    let any_level = quiver_ok(
        &["plugin", "test", &module, "--param", "name=level"],
        Some(records.as_bytes()),
    );
    assert_eq!(json_values(&any_level), ["disk full", "all good"]);
    // Told to read values, the same lines are values without headers: none is kept.
    let as_values = quiver_ok(
        &[
            "plugin",
            "test",
            &module,
            "--format",
            "value",
            "--param",
            "name=level",
        ],
        Some(records.as_bytes()),
    );
    assert_eq!(as_values, "");
    let refused = quiver_tests::run_quiver(
        &["plugin".into(), "test".into(), module.clone()],
        Some(b"x\n"),
        &[],
    );
    assert!(!refused.status.success(), "`name` is required");

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    stdout_ok(&broker.cli(&["topic", "create", "logs"]), "topic create");
    stdout_ok(
        &broker.cli(&["plugin", "upload", "errors", &module]),
        "plugin upload",
    );
    stdout_ok(
        &broker.cli(&[
            "plugin",
            "attach",
            "logs",
            "errors",
            "--stage",
            "fetch",
            "--param",
            "name=level",
            "--param",
            "value=error",
        ]),
        "plugin attach",
    );
    for (headers, lines) in [
        (
            &["--header", "level=error", "--header", "host=a1"][..],
            "e1\ne2\n",
        ),
        (&["--header", "level=info"][..], "i1\n"),
        (&[][..], "plain\n"),
        (&["--header", "level=error"][..], "e3\n"),
    ] {
        let mut args = vec!["produce", "logs"];
        args.extend_from_slice(headers);
        stdout_ok(
            &broker.cli_with_stdin(&args, Some(lines.as_bytes())),
            "produce --header",
        );
    }
    let consumed = stdout_ok(
        &broker.cli(&[
            "consume",
            "logs",
            "--from-beginning",
            "--count",
            "3",
            "--format",
            "json",
        ]),
        "consume",
    );
    let lines: Vec<serde_json::Value> = consumed
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let values: Vec<&str> = lines.iter().filter_map(|j| j["value"].as_str()).collect();
    assert_eq!(values, ["e1", "e2", "e3"]);
    assert_eq!(
        lines[0]["headers"],
        serde_json::json!({"level": "error", "host": "a1"})
    );
    assert_eq!(lines[2]["headers"], serde_json::json!({"level": "error"}));
    let bad = broker.cli(&["produce", "logs", "--header", "novalue"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--header `novalue` is not KEY=VALUE"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// The offsets `consumer` hands out, polled until `done` says so (at most 200 polls).
async fn poll_offsets(
    consumer: &mut quiver_sdk::Consumer,
    done: impl Fn(&[u64], &quiver_sdk::Consumer) -> bool,
) -> Vec<u64> {
    let mut seen = Vec::new();
    for _ in 0..200 {
        let polled = consumer
            .poll(Duration::from_millis(100))
            .await
            .expect("poll");
        seen.extend(polled.into_iter().map(|r| r.offset));
        if done(&seen, consumer) {
            break;
        }
    }
    seen
}

/// One stored batch of `count` records at timestamps 50_000 + i, keys `k<i>`, values
/// `v<i>`, a header `n=<i>`, `i` counting from `first`.
async fn produce_described(client: &Client, topic: &str, first: u64, count: u64) {
    let mut builder = BatchBuilder::new(ProducerStamp::NONE);
    for i in first..first + count {
        builder.push(&Record {
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("v{i}"))),
            headers: vec![RecordHeader {
                key: "n".into(),
                value: Some(Bytes::from(i.to_string())),
            }],
            timestamp: 50_000 + i as i64,
        });
    }
    let batch = builder.finish().expect("records");
    client
        .produce_batch(topic, 0, Acks::All, batch)
        .await
        .expect("produce");
}

/// What the fetch stage sends when a filter keeps some records of a stored batch: one
/// batch per stored batch with the survivors at their stored offsets, every field
/// exact, through the SDK, the CLI and a consumer group whose commits step over the
/// removed records; the produce stage still stores dense batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_fetches_keep_batches_with_gaps_exact_to_sdk_cli_and_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("gaps", 1, 1))
        .await
        .expect("create");
    // Stored: [0..6) and [6..10). Keeping positions 0, 2, 4, ... of each leaves
    // 0 2 4 | 6 8: gaps inside both batches, and each batch's last record removed.
    produce_described(&client, "gaps", 0, 6).await;
    produce_described(&client, "gaps", 6, 4).await;
    upload(&client, "keep-even", &filter_filling(0x55)).await;
    attach(
        &client,
        "gaps",
        "keep-even",
        PluginStage::Fetch,
        OnError::Fail,
    )
    .await;

    let fetched = client
        .fetch_batches("gaps", 0, 0, &FetchOptions::default())
        .await
        .expect("fetch");
    let headers: Vec<BatchHeader> = BatchSplitter::new(fetched.batches.clone())
        .map(|b| BatchHeader::parse(&b.expect("whole batch")).expect("header"))
        .collect();
    let shape: Vec<(u64, u32, u32, bool)> = headers
        .iter()
        .map(|h| {
            (
                h.base_offset,
                h.last_offset_delta,
                h.record_count,
                h.is_control(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [(0, 5, 3, false), (6, 3, 2, false)],
        "one batch per stored batch, spanning its offsets, holding the survivors"
    );

    let expect_from = |from: u64| -> Vec<u64> {
        [0u64, 2, 4, 6, 8]
            .into_iter()
            .filter(|&o| o >= from)
            .collect()
    };
    for from in [0, 1, 5, 6, 9] {
        let got = client
            .fetch("gaps", 0, from, &FetchOptions::default())
            .await
            .expect("fetch");
        let offsets: Vec<u64> = got.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, expect_from(from), "fetch from {from}");
        assert_eq!(
            got.next_offset, 10,
            "fetch from {from} moves past the removed tail"
        );
        for r in &got.records {
            let i = r.offset;
            assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
            assert_eq!(r.value.as_deref(), Some(format!("v{i}").as_bytes()));
            assert_eq!(r.timestamp, 50_000 + i as i64);
            assert_eq!(header(&r.headers, "n"), Some(i.to_string().as_str()));
            assert_eq!(r.headers.len(), 1);
        }
    }

    // A filter that keeps nothing leaves one control marker per stored batch, so the
    // consumer still moves past every offset.
    upload(&client, "keep-none", &filter_filling(0)).await;
    let none = client
        .fetch("gaps", 0, 0, &with_plugin("keep-none"))
        .await
        .expect("fetch");
    assert!(none.records.is_empty());
    assert_eq!(none.next_offset, 10);

    // The CLI prints the same fields.
    let printed = broker.cli(&[
        "consume",
        "gaps",
        "--from-beginning",
        "--count",
        "5",
        "--format",
        "json",
    ]);
    let lines: Vec<serde_json::Value> = stdout_ok(&printed, "consume --format json")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 5);
    for (line, i) in lines.iter().zip([0u64, 2, 4, 6, 8]) {
        assert_eq!(line["offset"], i);
        assert_eq!(line["timestamp"], 50_000 + i);
        assert_eq!(line["key"], format!("k{i}"));
        assert_eq!(line["value"], format!("v{i}"));
        assert_eq!(line["headers"]["n"], i.to_string());
    }

    // A group consumer hands out the survivors and commits past the removed tail, so
    // a restarted member does not read removed records' offsets again.
    let config = quiver_sdk::ConsumerConfig::default()
        .group("gap-readers")
        .auto_commit(false)
        .auto_offset_reset(quiver_sdk::OffsetReset::Earliest)
        .session_timeout(Duration::from_millis(1_500));
    let tp = quiver_sdk::TopicPartition::new("gaps", 0);
    let mut consumer = quiver_sdk::Consumer::new(broker.client().await, config.clone());
    consumer.subscribe(&["gaps"]).expect("subscribe");
    let seen = poll_offsets(&mut consumer, |seen, c| {
        seen.len() >= 5 && c.position(&tp) == Some(10)
    })
    .await;
    assert_eq!(seen, [0, 2, 4, 6, 8]);
    assert_eq!(consumer.position(&tp), Some(10));
    consumer.commit_sync().await.expect("commit");
    assert_eq!(
        consumer
            .committed(std::slice::from_ref(&tp))
            .await
            .expect("committed"),
        vec![(tp.clone(), Some(10))]
    );
    consumer.close().await.expect("close");

    produce_described(&client, "gaps", 10, 3).await;
    let mut again = quiver_sdk::Consumer::new(broker.client().await, config);
    again.subscribe(&["gaps"]).expect("subscribe");
    let seen = poll_offsets(&mut again, |seen, _| seen.len() >= 2).await;
    assert_eq!(seen, [10, 12], "the group resumes after the committed gap");
    again.close().await.expect("close");

    // The produce stage still stores dense batches: the same filter there renumbers.
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("dense", 1, 1))
        .await
        .expect("create");
    attach(
        &client,
        "dense",
        "keep-even",
        PluginStage::Produce,
        OnError::Fail,
    )
    .await;
    produce_described(&client, "dense", 0, 6).await;
    let stored = fetch_all(&client, "dense", 0, 0).await;
    assert_eq!(
        stored.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(values(&stored), ["v0", "v2", "v4"]);
    let raw = client
        .fetch_batches("dense", 0, 0, &FetchOptions::default())
        .await
        .expect("fetch");
    for batch in BatchSplitter::new(raw.batches) {
        let batch = batch.expect("whole batch");
        quiver_wire::batch::validate(&batch, quiver_wire::batch::BATCH_BYTES_MAX)
            .expect("what the produce stage stored is dense");
    }
}
