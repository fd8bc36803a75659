//! Bad input: every refusal carries its error code and a message, the broker keeps
//! serving, and no stored data changes.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use quiver_sdk::{Acks, Client, ErrorCode, FetchOptions, OffsetSpec, Record, RequestError};
use quiver_tests::ClientAdmin;
use quiver_tests::{Broker, RawConn, error_message, fetch_all, now_ms, wait_visible};
use quiver_wire::ApiKey;
use quiver_wire::batch::{BatchBuilder, ProducerStamp};
use quiver_wire::message::{
    CreateTopicRequest, FetchRequest, MetadataRequest, ProduceRequest, Rpc,
};

/// A broker holding a 3-partition topic `data` with some records, and a 1-partition
/// topic `small` with max.message.bytes=2048.
struct Fixture {
    broker: Broker,
    client: Client,
    _dir: tempfile::TempDir,
    snapshot: Snapshot,
    stored: Stored,
}

/// Every partition's records as (offset, value).
type Stored = BTreeMap<(String, u32), Vec<(u64, Option<Bytes>)>>;

/// Every topic with its partitions' (log start, high watermark, log end).
type Snapshot = Vec<(String, Vec<(u64, u64, u64)>)>;

async fn snapshot(client: &Client) -> Snapshot {
    client
        .admin()
        .list_topics()
        .await
        .expect("list topics")
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| (p.log_start_offset, p.high_watermark, p.log_end_offset))
                .collect();
            (t.name, parts)
        })
        .collect()
}

async fn stored(
    client: &Client,
    snap: &Snapshot,
) -> BTreeMap<(String, u32), Vec<(u64, Option<Bytes>)>> {
    let mut out = BTreeMap::new();
    for (topic, parts) in snap {
        for p in 0..parts.len() as u32 {
            let records = fetch_all(client, topic, p, 0).await;
            out.insert(
                (topic.clone(), p),
                records.into_iter().map(|r| (r.offset, r.value)).collect(),
            );
        }
    }
    out
}

fn batch_of(values: &[&[u8]]) -> Bytes {
    let mut builder = BatchBuilder::new(ProducerStamp::NONE);
    for v in values {
        builder.push(&Record::from_value(Bytes::copy_from_slice(v), now_ms()));
    }
    builder.finish().expect("non-empty batch")
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::start(dir.path());
        let client = broker.client().await;
        client
            .admin()
            .create_topic(quiver_sdk::NewTopic::new("data", 3, 1))
            .await
            .expect("create data");
        client
            .admin()
            .create_topic(
                quiver_sdk::NewTopic::new("small", 1, 1)
                    .configs::<String, String>([("max.message.bytes".into(), "2048".into())]),
            )
            .await
            .expect("create small");
        for p in 0..3 {
            for b in 0..4 {
                let records: Vec<Record> = (0..10)
                    .map(|r| Record::from_value(format!("p{p}-b{b}-r{r}"), now_ms()))
                    .collect();
                client
                    .produce("data", p, Acks::All, &records)
                    .await
                    .expect("produce")
                    .expect("answer");
            }
            wait_visible(&client, "data", p, 40).await;
        }
        let snapshot = snapshot(&client).await;
        let stored = stored(&client, &snapshot).await;
        Fixture {
            broker,
            client,
            _dir: dir,
            snapshot,
            stored,
        }
    }

    /// The broker is alive, its topics, offsets and records are what they were, and it
    /// still accepts a produce and a fetch (on a fresh connection).
    async fn assert_unchanged_and_serving(mut self) {
        assert!(self.broker.is_running(), "the broker process died");
        let client = self.broker.client().await;
        let now = snapshot(&client).await;
        assert_eq!(now, self.snapshot, "topics or offsets changed");
        let records = stored(&client, &now).await;
        assert!(records == self.stored, "stored records changed");
        // The topic directories are exactly the topics' partitions.
        let mut dirs: Vec<String> = std::fs::read_dir(self.broker.data_dir.join("logs"))
            .expect("logs dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            // The broker's internal topics live beside the user's.
            .filter(|name| !name.starts_with("__"))
            .collect();
        dirs.sort();
        assert_eq!(
            dirs,
            ["data-0", "data-1", "data-2", "small-0"],
            "partition directories"
        );

        let end = now[0].1[0].2;
        let receipt = client
            .produce(
                "data",
                0,
                Acks::All,
                &[Record::from_value("still serving", now_ms())],
            )
            .await
            .expect("produce after bad input")
            .expect("answer");
        assert_eq!(receipt.base_offset, end);
        wait_visible(&client, "data", 0, end + 1).await;
        let fetched = fetch_all(&client, "data", 0, end).await;
        assert_eq!(fetched.len(), 1);
        // The original connection also still works.
        self.client
            .admin()
            .list_topics()
            .await
            .expect("old connection still serves");
        client.close().await;
        self.client.close().await;
    }
}

/// Asserts `result` failed with `code` and a non-empty message; returns the message.
#[track_caller]
fn expect_code<T: std::fmt::Debug>(
    result: Result<T, RequestError>,
    code: ErrorCode,
    what: &str,
) -> String {
    match result {
        Ok(v) => panic!("{what}: expected {code}, got success {v:?}"),
        Err(RequestError::Broker(e)) => {
            assert_eq!(
                e.code,
                Some(code),
                "{what}: wrong code, message {:?}",
                e.message
            );
            assert!(!e.message.trim().is_empty(), "{what}: empty message");
            e.message
        }
        Err(other) => panic!("{what}: expected broker error {code}, got {other:?}"),
    }
}

/// `[len][api][version][body]`.
fn frame(api: u16, version: u16, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + body.len());
    buf.put_u32((4 + body.len()) as u32);
    buf.put_u16(api);
    buf.put_u16(version);
    buf.put_slice(body);
    buf.freeze()
}

fn fetch_frame(topic: &str, partition: u32, offset: u64) -> Bytes {
    FetchRequest {
        topic: topic.into(),
        partition,
        offset,
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 1024,
        plugin: None,
    }
    .encode_frame()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic() {
    let f = Fixture::new().await;
    let c = &f.client;
    let one = [Record::from_value("x", now_ms())];
    expect_code(
        c.produce("ghost", 0, Acks::All, &one).await,
        ErrorCode::UnknownTopic,
        "produce",
    );
    expect_code(
        c.produce("ghost", 0, Acks::Leader, &one).await,
        ErrorCode::UnknownTopic,
        "produce acks=leader",
    );
    expect_code(
        c.fetch("ghost", 0, 0, &FetchOptions::default()).await,
        ErrorCode::UnknownTopic,
        "fetch",
    );
    expect_code(
        c.list_offsets("ghost", 0, OffsetSpec::Latest).await,
        ErrorCode::UnknownTopic,
        "list_offsets",
    );
    let msg = expect_code(
        c.admin().describe_topic("ghost").await,
        ErrorCode::UnknownTopic,
        "describe",
    );
    assert!(msg.contains("ghost"), "message names the topic: {msg}");
    expect_code(
        c.admin().delete_topic("ghost").await,
        ErrorCode::UnknownTopic,
        "delete",
    );
    // acks=none gets no answer, but must not create anything either.
    c.produce("ghost", 0, Acks::None, &one)
        .await
        .expect("acks=none sends");
    f.assert_unchanged_and_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topic_name_sent_raw() {
    let f = Fixture::new().await;
    let long = "x".repeat(250);
    let names = [
        "",
        ".",
        "..",
        "bad/name",
        "../escape",
        "__internal",
        "sp ace",
        "tab\tname",
        "ünïcode",
        long.as_str(),
    ];
    for name in names {
        let request = CreateTopicRequest {
            name: name.to_owned(),
            partitions: 1,
            replication_factor: 1,
            configs: vec![],
        };
        expect_code(
            f.client.call(&request).await,
            ErrorCode::InvalidTopicName,
            &format!("create {name:?}"),
        );
    }
    // The SDK refuses the same names before sending.
    assert!(matches!(
        f.client
            .admin()
            .create_topic(quiver_sdk::NewTopic::new("bad/name", 1, 1))
            .await,
        Err(RequestError::InvalidArgument(_))
    ));
    assert!(
        !f.broker.data_dir.join("escape-0").exists(),
        "a path-traversing name created a directory"
    );
    f.assert_unchanged_and_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_out_of_range() {
    let f = Fixture::new().await;
    let c = &f.client;
    let one = [Record::from_value("x", now_ms())];
    for p in [3, 4, 1000, u32::MAX] {
        let msg = expect_code(
            c.produce("data", p, Acks::All, &one).await,
            ErrorCode::UnknownPartition,
            &format!("produce to partition {p}"),
        );
        assert!(
            msg.contains(&p.to_string()),
            "message names the partition: {msg}"
        );
        expect_code(
            c.fetch("data", p, 0, &FetchOptions::default()).await,
            ErrorCode::UnknownPartition,
            &format!("fetch partition {p}"),
        );
        expect_code(
            c.list_offsets("data", p, OffsetSpec::Earliest).await,
            ErrorCode::UnknownPartition,
            &format!("list_offsets partition {p}"),
        );
    }
    f.assert_unchanged_and_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_over_max_message_bytes() {
    let f = Fixture::new().await;
    let c = &f.client;
    // `small` allows 2048-byte batches.
    let big = batch_of(&[&[b'x'; 1500], &[b'y'; 1500]]);
    assert!(big.len() > 2048);
    let msg = expect_code(
        c.produce_batch("small", 0, Acks::All, big).await,
        ErrorCode::BatchTooLarge,
        "3 KB batch to a 2 KiB topic",
    );
    assert!(msg.contains("2048"), "message names the limit: {msg}");
    // `data` has the default 1 MiB limit.
    let value = vec![b'z'; 600 * 1024];
    let over_default = batch_of(&[&value, &value]);
    expect_code(
        c.produce_batch("data", 0, Acks::All, over_default).await,
        ErrorCode::BatchTooLarge,
        "1.2 MiB batch over the default limit",
    );
    // Over the hard 16 MiB ceiling of the wire format.
    let huge_value = vec![b'h'; 9 * 1024 * 1024];
    let huge = batch_of(&[&huge_value, &huge_value]);
    expect_code(
        c.produce_batch("data", 1, Acks::All, huge).await,
        ErrorCode::BatchTooLarge,
        "18 MiB batch over the wire limit",
    );
    f.assert_unchanged_and_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_with_bad_crc_or_framing() {
    let f = Fixture::new().await;
    let c = &f.client;
    let good = batch_of(&[b"one", b"two", b"three"]);
    // A byte of the records section (after the 61-byte header).
    let mut flipped = BytesMut::from(&good[..]);
    let at = good.len() - 3;
    flipped[at] ^= 0x40;
    let msg = expect_code(
        c.produce_batch("data", 0, Acks::All, flipped.freeze())
            .await,
        ErrorCode::CorruptBatch,
        "records byte flipped",
    );
    assert!(
        msg.to_lowercase().contains("crc"),
        "message says CRC: {msg}"
    );
    // A byte of the header under the CRC (the record count).
    let mut header_flip = BytesMut::from(&good[..]);
    header_flip[60] ^= 0x01;
    expect_code(
        c.produce_batch("data", 0, Acks::All, header_flip.freeze())
            .await,
        ErrorCode::CorruptBatch,
        "header byte flipped",
    );
    // Bad magic.
    let mut magic = BytesMut::from(&good[..]);
    magic[16] = 99;
    expect_code(
        c.produce_batch("data", 0, Acks::All, magic.freeze()).await,
        ErrorCode::CorruptBatch,
        "unknown magic",
    );
    // Shorter than a header, and a batch with a byte too many.
    expect_code(
        c.produce_batch("data", 0, Acks::All, Bytes::from_static(b"0123456789"))
            .await,
        ErrorCode::CorruptBatch,
        "10-byte batch",
    );
    let mut longer = BytesMut::from(&good[..]);
    longer.put_u8(0);
    expect_code(
        c.produce_batch("data", 0, Acks::All, longer.freeze()).await,
        ErrorCode::CorruptBatch,
        "trailing byte after the batch",
    );
    expect_code(
        c.produce_batch("data", 0, Acks::All, Bytes::new()).await,
        ErrorCode::CorruptBatch,
        "empty batch",
    );
    f.assert_unchanged_and_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames() {
    let f = Fixture::new().await;
    let c = &f.client;
    // Garbage body for a known API.
    let garbage = frame(4, 0, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x13]);
    expect_code(
        c.send_frame(garbage).await,
        ErrorCode::MalformedFrame,
        "garbage metadata body",
    );
    // A fetch whose body stops inside the last field (length prefix consistent).
    let whole = fetch_frame("data", 0, 0);
    let body = &whole[8..whole.len() - 3];
    expect_code(
        c.send_frame(frame(2, 0, body)).await,
        ErrorCode::MalformedFrame,
        "truncated fetch body",
    );
    // Trailing bytes after a whole body.
    let mut trailing = whole[8..].to_vec();
    trailing.extend_from_slice(b"junk");
    expect_code(
        c.send_frame(frame(2, 0, &trailing)).await,
        ErrorCode::MalformedFrame,
        "trailing bytes",
    );
    // A frame shorter than its own head.
    let mut short = BytesMut::new();
    short.put_u32(2);
    short.put_u16(4);
    expect_code(
        c.send_frame(short.freeze()).await,
        ErrorCode::MalformedFrame,
        "2-byte frame",
    );
    // A topic name that is not UTF-8.
    let mut bad_utf8 = BytesMut::new();
    bad_utf8.put_u8(0);
    bad_utf8.put_u32(1);
    bad_utf8.put_u16(2);
    bad_utf8.put_slice(&[0xc3, 0x28]);
    expect_code(
        c.send_frame(frame(4, 0, &bad_utf8)).await,
        ErrorCode::MalformedFrame,
        "non-UTF-8 name",
    );
    // A produce with an acks code that does not exist.
    let mut head = BytesMut::from(&ProduceRequest::encode_head("data", 0, Acks::All, 1000, 0)[..]);
    // [len:4][api:2][version:2][topic:2+4]["partition":4][acks:1]
    let acks_at = 4 + 2 + 2 + 2 + "data".len() + 4;
    head[acks_at] = 9;
    let mut bad_acks = head.to_vec();
    let batch = batch_of(&[b"a"]);
    bad_acks.truncate(bad_acks.len() - 4);
    bad_acks.extend_from_slice(&(batch.len() as u32).to_be_bytes());
    bad_acks.extend_from_slice(&batch);
    let len = (bad_acks.len() - 4) as u32;
    bad_acks[..4].copy_from_slice(&len.to_be_bytes());
    expect_code(
        c.send_frame(Bytes::from(bad_acks)).await,
        ErrorCode::MalformedFrame,
        "acks code 9",
    );
    // A metadata request asking for a million topics in a few bytes.
    let mut many = BytesMut::new();
    many.put_u8(0);
    many.put_u32(1_000_000);
    expect_code(
        c.send_frame(frame(4, 0, &many)).await,
        ErrorCode::MalformedFrame,
        "array count lies",
    );
    f.assert_unchanged_and_serving().await;
}

/// A frame whose length prefix promises more bytes than the client sends before
/// finishing its stream: the client is still there, waiting, and should be told
/// MALFORMED_FRAME rather than left with a stream that just ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_is_answered_with_malformed_frame() {
    let f = Fixture::new().await;
    let whole = fetch_frame("data", 0, 0);
    let cut = whole.slice(..whole.len() - 5);
    expect_code(
        f.client.send_frame(cut).await,
        ErrorCode::MalformedFrame,
        "frame cut short by the end of the stream",
    );
    f.assert_unchanged_and_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_api_key() {
    let f = Fixture::new().await;
    let next = ApiKey::ALL
        .iter()
        .map(|k| k.code())
        .max()
        .expect("APIs exist")
        + 1;
    for api in [0u16, next, 999, u16::MAX] {
        assert!(ApiKey::from_code(api).is_none(), "api key {api} exists");
        let msg = expect_code(
            f.client.send_frame(frame(api, 0, &[])).await,
            ErrorCode::UnknownApi,
            &format!("api key {api}"),
        );
        assert!(
            msg.contains(&api.to_string()),
            "message names the key: {msg}"
        );
    }
    f.assert_unchanged_and_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_api_version() {
    let f = Fixture::new().await;
    let body = {
        let whole = MetadataRequest { topics: None }.encode_frame();
        whole[8..].to_vec()
    };
    for version in [1u16, 7, u16::MAX] {
        expect_code(
            f.client.send_frame(frame(4, version, &body)).await,
            ErrorCode::UnsupportedVersion,
            &format!("metadata v{version}"),
        );
    }
    let fetch = fetch_frame("data", 0, 0);
    expect_code(
        f.client.send_frame(frame(2, 3, &fetch[8..])).await,
        ErrorCode::UnsupportedVersion,
        "fetch v3",
    );
    f.assert_unchanged_and_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_offset_beyond_the_end() {
    let f = Fixture::new().await;
    let c = &f.client;
    let end = f.snapshot[0].1[1].2;
    assert_eq!(end, 40);
    for offset in [end + 1, end + 1000, u64::MAX] {
        let msg = expect_code(
            c.fetch("data", 1, offset, &FetchOptions::default()).await,
            ErrorCode::OffsetOutOfRange,
            &format!("fetch at {offset}"),
        );
        assert!(
            msg.contains(&offset.to_string()),
            "message names the offset: {msg}"
        );
    }
    // At the end exactly: an empty answer after the wait, not an error.
    let options = FetchOptions::default().max_wait(Duration::from_millis(50));
    let at_end = c
        .fetch("data", 1, end, &options)
        .await
        .expect("fetch at the end");
    assert!(at_end.records.is_empty());
    assert_eq!(at_end.high_watermark, end);
    f.assert_unchanged_and_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_topic() {
    let f = Fixture::new().await;
    let msg = expect_code(
        f.client
            .admin()
            .create_topic(quiver_sdk::NewTopic::new("data", 3, 1))
            .await,
        ErrorCode::TopicAlreadyExists,
        "same topic again",
    );
    assert!(msg.contains("data"), "message names the topic: {msg}");
    expect_code(
        f.client
            .admin()
            .create_topic(quiver_sdk::NewTopic::new("data", 1, 1))
            .await,
        ErrorCode::TopicAlreadyExists,
        "same name, fewer partitions",
    );
    expect_code(
        f.client
            .admin()
            .create_topic(
                quiver_sdk::NewTopic::new("data", 5, 1)
                    .configs::<String, String>([("retention.ms".into(), "1".into())]),
            )
            .await,
        ErrorCode::TopicAlreadyExists,
        "same name, more partitions and other configs",
    );
    f.assert_unchanged_and_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topic_configs() {
    let f = Fixture::new().await;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("retention.mss", "1000")], "retention.mss"),
        (&[("cleanup.policy", "compact")], "cleanup.policy"),
        (&[("retention.ms", "soon")], "retention.ms"),
        (&[("retention.bytes", "-5")], "retention.bytes"),
        (&[("segment.bytes", "10")], "segment.bytes"),
        (&[("max.message.bytes", "999999999")], "max.message.bytes"),
        (
            &[("retention.ms", "1000"), ("retention.ms", "2000")],
            "retention.ms",
        ),
    ];
    for (configs, key) in cases {
        let configs: Vec<(String, String)> = configs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let msg = expect_code(
            f.client
                .admin()
                .create_topic(
                    quiver_sdk::NewTopic::new("fresh", 1, 1).configs(configs.iter().cloned()),
                )
                .await,
            ErrorCode::InvalidConfig,
            &format!("configs {configs:?}"),
        );
        assert!(msg.contains(key), "message names `{key}`: {msg}");
        expect_code(
            f.client.admin().describe_topic("fresh").await,
            ErrorCode::UnknownTopic,
            "a refused topic does not exist",
        );
    }
    f.assert_unchanged_and_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_partition_or_replication_counts() {
    let f = Fixture::new().await;
    for (partitions, rf) in [(0u32, 1u16), (10_001, 1), (1, 0), (1, 2), (3, 7)] {
        expect_code(
            f.client
                .admin()
                .create_topic(quiver_sdk::NewTopic::new("fresh", partitions, rf))
                .await,
            ErrorCode::InvalidRequest,
            &format!("{partitions} partitions, replication factor {rf}"),
        );
        expect_code(
            f.client.admin().describe_topic("fresh").await,
            ErrorCode::UnknownTopic,
            "a refused topic does not exist",
        );
    }
    f.assert_unchanged_and_serving().await;
}

/// A produce frame header declaring N batch bytes, half of them sent, then the
/// connection closed abruptly: nothing is appended and the broker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnecting_mid_request_changes_nothing() {
    let f = Fixture::new().await;
    let values: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("half-sent {i:03}").repeat(20).into_bytes())
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let batch = batch_of(&refs);
    let head = ProduceRequest::encode_head("data", 0, Acks::All, 30_000, batch.len());

    // Closing the whole connection.
    let raw = RawConn::connect(f.broker.quic_addr, &f.broker.ca_cert()).await;
    let (mut send, _recv) = raw.conn.open_bi().await.expect("open stream");
    send.write_all(&head).await.expect("write head");
    send.write_all(&batch[..batch.len() / 2])
        .await
        .expect("write half");
    // Let the bytes reach the broker before hanging up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    raw.close_abruptly();

    // Resetting only the stream, on a connection that stays open.
    let raw2 = RawConn::connect(f.broker.quic_addr, &f.broker.ca_cert()).await;
    let (mut send, _recv) = raw2.conn.open_bi().await.expect("open stream");
    send.write_all(&head).await.expect("write head");
    send.write_all(&batch[..batch.len() / 2])
        .await
        .expect("write half");
    tokio::time::sleep(Duration::from_millis(200)).await;
    send.reset(7u32.into()).expect("reset");

    // The same for an acks=none produce on a unidirectional stream.
    let mut uni = raw2.conn.open_uni().await.expect("open uni");
    let none_head = ProduceRequest::encode_head("data", 1, Acks::None, 30_000, batch.len());
    uni.write_all(&none_head).await.expect("write head");
    uni.write_all(&batch[..batch.len() / 2])
        .await
        .expect("write half");
    tokio::time::sleep(Duration::from_millis(200)).await;
    raw2.close_abruptly();

    // The connection still open is served as before.
    let before = f.snapshot.clone();
    assert_eq!(snapshot(&f.client).await, before);
    f.assert_unchanged_and_serving().await;
}

fn vm_peak_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmPeak:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmPeak in /proc status")
}

/// Length prefixes over the 64 MiB frame limit are refused with an error answer before
/// anything is allocated for them: the broker's peak virtual size does not grow by
/// gigabytes, and it keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_length_over_64_mib_is_refused_without_allocation() {
    let f = Fixture::new().await;
    let pid = f.broker.pid();
    let peak_before = vm_peak_kib(pid);
    let raw = RawConn::connect(f.broker.quic_addr, &f.broker.ca_cert()).await;
    for declared in [
        64 * 1024 * 1024 + 1,
        u32::MAX - 1,
        u32::MAX,
        u32::MAX,
        u32::MAX,
    ] {
        let mut bytes = BytesMut::new();
        bytes.put_u32(declared);
        bytes.put_u16(1);
        bytes.put_u16(0);
        bytes.put_slice(&[0u8; 256]);
        let (status, body) = raw
            .round_trip(&bytes)
            .await
            .unwrap_or_else(|e| panic!("no answer to a {declared}-byte frame: {e}"));
        let code = ErrorCode::from_code(status);
        assert!(
            matches!(
                code,
                Some(ErrorCode::BatchTooLarge | ErrorCode::MalformedFrame)
            ),
            "a {declared}-byte frame got status {status} ({code:?}): {}",
            error_message(&body)
        );
        assert!(!error_message(&body).is_empty(), "error without a message");
    }
    let peak_after = vm_peak_kib(pid);
    assert!(
        peak_after < peak_before + 1024 * 1024,
        "broker peak virtual memory grew from {peak_before} KiB to {peak_after} KiB"
    );
    raw.close_abruptly();
    f.assert_unchanged_and_serving().await;
}
