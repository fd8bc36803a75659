//! Hostile clients: each attack runs against a real broker, bounded in count and time,
//! from its own loopback address (127.0.0.2), while a normal client on 127.0.0.1
//! produces and fetches. Each test asserts that the normal client is served during the
//! attack, that the attacker gets the documented refusal, and that nothing stored
//! changed.

use std::net::IpAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use quiver_sdk::{Acks, Client, Record};
use quiver_tests::ClientAdmin;
use quiver_tests::{Broker, RawConn, eventually, fetch_all, now_ms, wait_visible};
use quiver_wire::message::{FetchRequest, Rpc};

/// The attacker's address: another host as far as the broker can tell.
const ATTACKER: &str = "127.0.0.2";
/// QUIC stream code for a request not read, or an answer not taken, in time.
const STREAM_TIMED_OUT: u32 = 2;
/// QUIC close code for a connection idle past `connection_idle_max_ms`.
const CLOSE_IDLE: u32 = 3;

fn attacker() -> IpAddr {
    ATTACKER.parse().expect("loopback address")
}

/// A broker with a topic `data` holding `stored` records, and a normal client.
struct Scene {
    broker: Broker,
    client: Client,
    _dir: tempfile::TempDir,
    stored: u64,
}

impl Scene {
    async fn new(env: &[(&str, &str)]) -> Scene {
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = Broker::start_with(dir.path(), env, None);
        let client = broker.client().await;
        client
            .admin()
            .create_topic(quiver_sdk::NewTopic::new("data", 1, 1))
            .await
            .expect("create topic");
        let scene = Scene {
            broker,
            client,
            _dir: dir,
            stored: 0,
        };
        scene.produce_and_fetch(0).await
    }

    /// Produces ten records as the normal client, then fetches everything back:
    /// the normal client is served. Returns the scene with the new count.
    async fn produce_and_fetch(mut self, round: u64) -> Scene {
        let started = std::time::Instant::now();
        let records: Vec<Record> = (0..10)
            .map(|i| Record::from_value(format!("round {round} record {i}"), now_ms()))
            .collect();
        self.client
            .produce("data", 0, Acks::All, &records)
            .await
            .expect("normal client's produce is served");
        self.stored += 10;
        wait_visible(&self.client, "data", 0, self.stored).await;
        let records = fetch_all(&self.client, "data", 0, 0).await;
        assert_eq!(records.len() as u64, self.stored, "normal client's fetch");
        // A figure for the issue notes (round 0 is before any attack), not an assertion.
        eprintln!(
            "normal client, round {round}: produce (acks=all) and fetch back in {:?}",
            started.elapsed()
        );
        self
    }

    /// Every record the normal client produced is stored, once, in order.
    async fn assert_nothing_lost(self) {
        let records = fetch_all(&self.client, "data", 0, 0).await;
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..self.stored).collect::<Vec<_>>());
    }
}

/// `[len][api][version][body]` with a length prefix that may lie.
fn frame_head(declared_len: u32) -> Bytes {
    let mut buf = BytesMut::with_capacity(8);
    buf.put_u32(declared_len);
    buf.put_u16(1); // produce
    buf.put_u16(0);
    buf.freeze()
}

/// Thousands of streams that each send a few bytes of a request and stall: they hold
/// no handling permit, their read deadline resets them, and a normal client is served
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_at_scale_are_reset_and_starve_nobody() {
    let scene = Scene::new(&[
        ("QUIVER_REQUEST_READ_TIMEOUT_MS", "3000"),
        ("QUIVER_REQUESTS_IN_FLIGHT_MAX", "64"),
    ])
    .await;
    let (addr, ca) = (scene.broker.quic_addr, scene.broker.ca_cert());
    const CONNECTIONS: usize = 8;
    const STREAMS_PER_CONNECTION: usize = 500;
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let raw = RawConn::try_connect_from(attacker(), addr, &ca)
            .await
            .expect("attacker connects");
        let mut streams = Vec::new();
        for _ in 0..STREAMS_PER_CONNECTION {
            let (mut send, recv) = raw.conn.open_bi().await.expect("open stream");
            send.write_all(&frame_head(1024)).await.expect("8 bytes");
            streams.push((send, recv));
        }
        held.push((raw, streams));
    }
    // 4,000 stalled streams, 64 handling permits: the normal client is still served.
    let scene = scene.produce_and_fetch(1).await;

    // Each stalled stream is reset with the timed-out code.
    let (_raw, streams) = held.first_mut().expect("a connection");
    let (_, recv) = streams.first_mut().expect("a stream");
    let read = tokio::time::timeout(Duration::from_secs(30), recv.read_to_end(1024))
        .await
        .expect("the broker answers a stalled stream within its read deadline");
    match read {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            assert_eq!(code.into_inner(), u64::from(STREAM_TIMED_OUT));
        }
        other => panic!("a stalled stream ended with {other:?}, not a reset"),
    }
    let timed_out = eventually(
        "every stalled stream reset",
        Duration::from_secs(30),
        || {
            let v = scene
                .broker
                .metric("quiver_streams_timed_out_total{phase=\"read\"}");
            async move { (v >= (CONNECTIONS * STREAMS_PER_CONNECTION) as f64).then_some(v) }
        },
    )
    .await;
    assert!(timed_out > 0.0);
    eventually("the flood is logged", Duration::from_secs(10), || {
        let logged = scene.broker.stderr().contains("request stream reset");
        async move { logged.then_some(()) }
    })
    .await;
    scene.assert_nothing_lost().await;
}

/// Half-sent frames that declare the largest size: the broker holds no more than the
/// attacker's share of request bytes (plus QUIC's receive windows), the normal client
/// is served, and the bytes come back when the read deadline resets the streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_maximal_frames_hold_only_the_senders_share() {
    const MIB: usize = 1024 * 1024;
    let share = 64 * MIB;
    let scene = Scene::new(&[
        ("QUIVER_REQUEST_READ_TIMEOUT_MS", "4000"),
        ("QUIVER_REQUEST_BYTES_PER_ADDRESS_MAX", &share.to_string()),
        (
            "QUIVER_REQUEST_BYTES_IN_FLIGHT_MAX",
            &(2 * share).to_string(),
        ),
    ])
    .await;
    let (addr, ca) = (scene.broker.quic_addr, scene.broker.ca_cert());
    let (rss_before, _) = scene.broker.rss_kib();
    // Eight connections with 16 streams each, every stream declaring a 64 MiB frame
    // and sending up to 4 MiB of it: 512 MiB offered in all.
    const CONNECTIONS: usize = 8;
    const STREAMS: usize = 16;
    let body = Bytes::from(vec![0x5au8; 4 * MIB]);
    let mut attack = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let raw = RawConn::try_connect_from(attacker(), addr, &ca)
            .await
            .expect("attacker connects");
        let conn = raw.conn.clone();
        for _ in 0..STREAMS {
            let (conn, body) = (conn.clone(), body.clone());
            attack.spawn(async move {
                let Ok((mut send, recv)) = conn.open_bi().await else {
                    return 0;
                };
                let _ = send.write_all(&frame_head((64 * MIB) as u32)).await;
                // Flow control stops this write once the broker stops reading.
                let sent = tokio::time::timeout(Duration::from_secs(3), send.write_all(&body))
                    .await
                    .map_or(0, |_| body.len());
                drop(recv);
                sent
            });
        }
        std::mem::forget(raw.endpoint);
    }
    while let Some(sent) = attack.join_next().await {
        sent.expect("attack task");
    }
    let held = scene.broker.metric("quiver_request_bytes_in_flight");
    assert!(
        held <= share as f64,
        "the attacker holds {held} request bytes, more than its share of {share}"
    );
    let (rss_during, peak) = scene.broker.rss_kib();
    let growth_mib = peak.saturating_sub(rss_before) / 1024;
    eprintln!(
        "broker RSS: {} MiB before, {} MiB after the attack, peak {} MiB",
        rss_before / 1024,
        rss_during / 1024,
        peak / 1024
    );
    // The share (64 MiB), QUIC's windows (16 MiB a connection) and allocator slack;
    // reading every offered byte (the old frame reader) would take 512 MiB.
    assert!(
        growth_mib < 400,
        "broker peak RSS grew by {growth_mib} MiB under 512 MiB of half-sent frames"
    );
    let scene = scene.produce_and_fetch(1).await;
    eventually(
        "request bytes given back after the read deadline",
        Duration::from_secs(30),
        || {
            let v = scene.broker.metric("quiver_request_bytes_in_flight");
            async move { (v == 0.0).then_some(()) }
        },
    )
    .await;
    // Memory comes back once the flood has ended (the broker trims its allocator).
    let rss_after = eventually(
        "broker RSS back near its level before",
        Duration::from_secs(30),
        || {
            let (rss, _) = scene.broker.rss_kib();
            async move { (rss < rss_before + 96 * 1024).then_some(rss) }
        },
    )
    .await;
    eprintln!(
        "broker RSS once the bytes came back: {} MiB",
        rss_after / 1024
    );
    scene.assert_nothing_lost().await;
}

/// A flood of connections from one address is capped per address; other addresses
/// still connect and are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_is_capped_per_address() {
    let scene = Scene::new(&[("QUIVER_CONNECTIONS_MAX_PER_IP", "20")]).await;
    let (addr, ca) = (scene.broker.quic_addr, scene.broker.ca_cert());
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        match RawConn::try_connect_from(attacker(), addr, &ca).await {
            Ok(raw) => admitted.push(raw),
            Err(quinn::ConnectionError::ConnectionClosed(close)) => {
                assert_eq!(
                    close.error_code,
                    quinn::TransportErrorCode::CONNECTION_REFUSED
                );
                refused += 1;
            }
            Err(other) => panic!("a refused connection ended with {other}"),
        }
    }
    assert_eq!(admitted.len(), 20, "the per-address cap");
    assert_eq!(refused, 20);
    let scene = scene.produce_and_fetch(1).await;
    assert!(
        scene
            .broker
            .metric("quiver_connections_refused_total{reason=\"connections_max_per_ip\"}")
            >= 20.0
    );
    // A place comes free when an admitted connection closes.
    let first = admitted.remove(0);
    first.close_abruptly();
    eventually(
        "a freed place admits again",
        Duration::from_secs(10),
        || {
            let ca = ca.clone();
            async move { RawConn::try_connect_from(attacker(), addr, &ca).await.ok() }
        },
    )
    .await;
    scene.assert_nothing_lost().await;
}

/// A connection that sends no request is closed once idle, keep-alives or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let scene = Scene::new(&[("QUIVER_CONNECTION_IDLE_MAX_MS", "500")]).await;
    let raw =
        RawConn::try_connect_from(attacker(), scene.broker.quic_addr, &scene.broker.ca_cert())
            .await
            .expect("connects");
    let closed = tokio::time::timeout(Duration::from_secs(20), raw.conn.closed())
        .await
        .expect("the idle connection is closed");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code.into_inner(), u64::from(CLOSE_IDLE));
        }
        other => panic!("closed with {other}"),
    }
    scene.assert_nothing_lost().await;
}

/// A reader that never takes a large fetch answer has its stream reset after the write
/// deadline; the normal client is served meanwhile and afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_of_large_fetches_are_reset() {
    let scene = Scene::new(&[("QUIVER_RESPONSE_WRITE_TIMEOUT_MS", "1500")]).await;
    // 8 MiB of records for the slow reader to not read.
    let value = Bytes::from(vec![b'x'; 64 * 1024]);
    for _ in 0..16 {
        let records: Vec<Record> = (0..8)
            .map(|_| Record::from_value(value.clone(), now_ms()))
            .collect();
        scene
            .client
            .produce("data", 0, Acks::All, &records)
            .await
            .expect("produce");
    }
    let mut scene = scene;
    scene.stored += 128;
    wait_visible(&scene.client, "data", 0, scene.stored).await;
    let raw =
        RawConn::try_connect_from(attacker(), scene.broker.quic_addr, &scene.broker.ca_cert())
            .await
            .expect("connects");
    let mut slow = Vec::new();
    for _ in 0..16 {
        let (mut send, recv) = raw.conn.open_bi().await.expect("stream");
        let request = FetchRequest {
            topic: "data".into(),
            partition: 0,
            offset: 0,
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 16 * 1024 * 1024,
            plugin: None,
        }
        .encode_frame();
        send.write_all(&request).await.expect("request");
        let _ = send.finish();
        slow.push(recv);
    }
    let scene = scene.produce_and_fetch(1).await;
    eventually("slow readers reset", Duration::from_secs(30), || {
        let v = scene
            .broker
            .metric("quiver_streams_timed_out_total{phase=\"write\"}");
        async move { (v >= 16.0).then_some(()) }
    })
    .await;
    // What the slow reader finally reads ends in the reset.
    let recv = slow.first_mut().expect("a stream");
    let mut ended = None;
    while ended.is_none() {
        match recv.read_chunk(1024 * 1024, true).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a reset stream ended cleanly"),
            Err(quinn::ReadError::Reset(code)) => ended = Some(code.into_inner()),
            Err(other) => panic!("read ended with {other}"),
        }
    }
    assert_eq!(ended, Some(u64::from(STREAM_TIMED_OUT)));
    scene.assert_nothing_lost().await;
}

/// A filter that never returns.
const LOOPING_FILTER: &str = r#"(func (export "filter") (param i32 i32) (result i64) (loop $forever (br $forever)) (i64.const 0))"#;

/// Uploads the WAT module `body` (with the test prelude) as `name`.
async fn upload(client: &Client, name: &str, body: &str) -> Result<(), quiver_sdk::RequestError> {
    client
        .admin()
        .upload_plugin(name, Bytes::from(quiver_tests::wat::module(body)))
        .await
        .map(drop)
}

/// A module past the compile limits (100,000 functions, the shape that cost ~500 MB
/// per upload before) is refused before compiling, naming the limit; the broker keeps
/// serving and stores nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_modules_past_the_compile_limits_are_refused_by_name() {
    let scene = Scene::new(&[]).await;
    let many = format!(
        "{} {}",
        "(func)".repeat(100_000),
        quiver_tests::wat::filter_filling(255)
    );
    let err = upload(&scene.client, "huge", &many)
        .await
        .expect_err("100,000 functions are refused");
    assert_eq!(
        err.code(),
        Some(quiver_sdk::ErrorCode::InvalidPlugin),
        "{err}"
    );
    assert!(err.to_string().contains("module_functions_max"), "{err}");
    // The harness reads the broker's stderr on its own thread: wait for the line.
    eventually(
        "the broker logs the refusal",
        Duration::from_secs(10),
        || {
            let logged = scene.broker.stderr().contains("plugin upload refused");
            async move { logged.then_some(()) }
        },
    )
    .await;
    let (plugins, _) = scene.client.admin().list_plugins().await.expect("list");
    assert!(
        plugins.is_empty(),
        "nothing of the refused module is stored"
    );
    // A module at the ordinary size is still accepted.
    upload(
        &scene.client,
        "small",
        &quiver_tests::wat::filter_filling(255),
    )
    .await
    .expect("an ordinary module");
    let scene = scene.produce_and_fetch(1).await;
    scene.assert_nothing_lost().await;
}

/// A looping plugin on one topic, under each on-error policy, never silences that
/// topic's consumers (progress or a clear error) and never stops another topic's
/// plugin: `fail` answers PLUGIN_FAILED, `skip` moves the consumer past the batches,
/// `pass` delivers them unfiltered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_plugin_under_each_policy_neither_silences_its_topic_nor_stops_another() {
    use quiver_sdk::{Attachment, ErrorCode, FetchOptions, OnError, PluginStage};
    let scene = Scene::new(&[]).await;
    let client = &scene.client;
    upload(client, "looping", LOOPING_FILTER)
        .await
        .expect("upload");
    upload(client, "evens", &quiver_tests::wat::filter_filling(0x55))
        .await
        .expect("upload");
    let attach = |topic: &str, plugin: &str, on_error: OnError| Attachment {
        topic: topic.into(),
        plugin: plugin.into(),
        stage: PluginStage::Fetch,
        params: Vec::new(),
        on_error,
    };
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("healthy", 1, 1))
        .await
        .expect("create");
    client
        .admin()
        .attach_plugin(attach("healthy", "evens", OnError::Fail))
        .await
        .expect("attach");
    let ten: Vec<Record> = (0..10)
        .map(|i| Record::from_value(format!("v{i}"), now_ms()))
        .collect();
    client
        .produce("healthy", 0, Acks::All, &ten)
        .await
        .expect("produce");
    let options = FetchOptions::default()
        .max_wait(Duration::from_millis(100))
        .min_bytes(1)
        .max_bytes(1024 * 1024);
    for (topic, policy) in [
        ("loop-fail", OnError::Fail),
        ("loop-skip", OnError::Skip),
        ("loop-pass", OnError::Pass),
    ] {
        client
            .admin()
            .create_topic(quiver_sdk::NewTopic::new(topic, 1, 1))
            .await
            .expect("create");
        // Three batches, so a fetch has several to spend plugin time on.
        for _ in 0..3 {
            client
                .produce(topic, 0, Acks::All, &ten)
                .await
                .expect("produce");
        }
        client
            .admin()
            .attach_plugin(attach(topic, "looping", policy.clone()))
            .await
            .expect("attach");
        let fetched = client.fetch(topic, 0, 0, &options).await;
        match policy {
            OnError::Fail => {
                let err = fetched.expect_err("a failing plugin under fail");
                assert_eq!(err.code(), Some(ErrorCode::PluginFailed), "{err}");
            }
            OnError::Skip => {
                let fetched = fetched.expect("skip answers");
                assert!(fetched.records.is_empty());
                assert!(
                    fetched.next_offset > 0,
                    "the consumer moves past the batches"
                );
            }
            _ => {
                let fetched = fetched.expect("pass answers");
                assert!(!fetched.records.is_empty(), "pass delivers the records");
                assert!(fetched.next_offset > 0);
            }
        }
        // Meanwhile the other topic's plugin runs as before: every other record.
        let healthy = client
            .fetch("healthy", 0, 0, &options)
            .await
            .expect("the healthy topic is served");
        let values: Vec<_> = healthy
            .records
            .iter()
            .map(|r| r.value.clone().expect("a value"))
            .collect();
        assert_eq!(values.len(), 5, "{topic}: {values:?}");
    }
    let (_, metrics) = scene.broker.http_get("/metrics");
    let looping_errors: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("quiver_plugin_errors_total{") && l.contains("plugin=\"looping\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(
        looping_errors >= 3.0,
        "plugin failures show in metrics:\n{metrics}"
    );
    scene.assert_nothing_lost().await;
}
