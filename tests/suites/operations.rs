//! Operating a broker: admin HTTP, graceful stop, configuration errors, the topic
//! commands of the CLI, and the data directory lock.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use quiver_sdk::{Acks, Client, FetchOptions, OffsetSpec, Record};
use quiver_tests::ClientAdmin;
use quiver_tests::{Broker, eventually, fetch_all, now_ms, quiver_bin, wait_bounded, wait_visible};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A failed command prints one line on stderr, with no panic or backtrace.
#[track_caller]
fn assert_one_line_failure(what: &str, output: &Output) -> String {
    assert!(
        !output.status.success(),
        "{what} succeeded: {}",
        text(&output.stdout)
    );
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one line on stderr, got {stderr:?}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{what}: a panic reached the user: {stderr}"
    );
    lines[0].to_owned()
}

#[track_caller]
fn assert_success(what: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({:?}): {}",
        output.status,
        text(&output.stderr)
    );
    text(&output.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_http_health_ready_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let (status, body) = broker.http_get("/health");
    assert_eq!(status, 200, "/health: {body}");
    let (status, body) = broker.http_get("/ready");
    assert_eq!(status, 200, "/ready: {body}");

    // One request of each kind, so their counters exist.
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("m", 1, 1))
        .await
        .expect("create");
    client
        .produce("m", 0, Acks::All, &[Record::from_value("v", now_ms())])
        .await
        .expect("produce");
    let _ = client.admin().describe_topic("absent").await;
    let (status, metrics) = broker.http_get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("quiver_requests_total"),
        "/metrics lacks quiver_requests_total:\n{metrics}"
    );
    let produce_line = metrics
        .lines()
        .find(|l| l.starts_with("quiver_requests_total") && l.contains("produce"))
        .unwrap_or_else(|| panic!("no produce request counter:\n{metrics}"));
    let count: f64 = produce_line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a sample value");
    assert!(count >= 1.0, "{produce_line}");

    let (status, _) = broker.http_get("/nope");
    assert_eq!(status, 404);
}

/// SIGTERM: an in-flight long-poll fetch is answered, the broker exits 0, and a restart
/// serves everything that was acknowledged, whatever the acks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_restart_serves_all_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("keep", 2, 1))
        .await
        .expect("create");
    let mut expected: Vec<Vec<Bytes>> = vec![Vec::new(), Vec::new()];
    for (b, acks) in [Acks::All, Acks::Leader, Acks::None]
        .into_iter()
        .cycle()
        .take(30)
        .enumerate()
    {
        let p = (b % 2) as u32;
        let values: Vec<Bytes> = (0..25)
            .map(|r| Bytes::from(format!("b{b}-r{r}-{acks:?}")))
            .collect();
        let records: Vec<Record> = values
            .iter()
            .map(|v| Record::from_value(v.clone(), now_ms()))
            .collect();
        let answer = client
            .produce("keep", p, acks, &records)
            .await
            .expect("produce");
        if acks != Acks::None {
            assert_eq!(
                answer.map(|r| r.base_offset),
                Some(expected[p as usize].len() as u64)
            );
        }
        expected[p as usize].extend(values);
    }
    // acks=none has no answer: wait until the broker shows every record.
    for p in 0..2u32 {
        let want = expected[p as usize].len() as u64;
        quiver_tests::eventually("acks=none records visible", Duration::from_secs(60), || {
            let client = client.clone();
            async move {
                let latest = client
                    .list_offsets("keep", p, OffsetSpec::Latest)
                    .await
                    .ok()?;
                (latest.offset == Some(want)).then_some(())
            }
        })
        .await;
    }

    // A long poll at the end of partition 0, in flight when SIGTERM arrives. The
    // in-flight gauge also counts a request until its answer is acknowledged, so it
    // must first drop to zero for a rise to mean the poll.
    let in_flight = |broker: &Broker| {
        let (_, metrics) = broker.http_get("/metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("quiver_requests_in_flight "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    eventually("earlier requests settled", Duration::from_secs(30), || {
        let idle = in_flight(&broker) == 0.0;
        async move { idle.then_some(()) }
    })
    .await;
    let poller = client.clone();
    let end0 = expected[0].len() as u64;
    let long_poll = tokio::spawn(async move {
        poller
            .fetch(
                "keep",
                0,
                end0,
                &FetchOptions::default()
                    .max_wait(Duration::from_secs(30))
                    .min_bytes(1)
                    .max_bytes(1024),
            )
            .await
    });
    // SIGTERM only once the broker holds the poll: one sent after shutdown began would
    // find the connection closing instead.
    eventually("the long poll in flight", Duration::from_secs(30), || {
        let held = in_flight(&broker) >= 1.0;
        async move { held.then_some(()) }
    })
    .await;
    let status = broker.sigterm();
    assert_eq!(status.code(), Some(0), "SIGTERM exit status: {status:?}");
    let answered = tokio::time::timeout(Duration::from_secs(60), long_poll)
        .await
        .expect("the long poll ends")
        .expect("task");
    let answered =
        answered.unwrap_or_else(|e| panic!("in-flight long poll not answered at shutdown: {e}"));
    assert!(answered.records.is_empty());
    assert_eq!(answered.high_watermark, end0);

    broker.restart();
    let client = broker.client().await;
    for p in 0..2u32 {
        let records = fetch_all(&client, "keep", p, 0).await;
        let values: Vec<Bytes> = records
            .iter()
            .map(|r| r.value.clone().expect("value"))
            .collect();
        assert_eq!(
            values, expected[p as usize],
            "partition {p} after a graceful restart"
        );
    }
    let receipt = client
        .produce(
            "keep",
            1,
            Acks::All,
            &[Record::from_value("next", now_ms())],
        )
        .await
        .expect("produce after restart")
        .expect("answer");
    assert_eq!(receipt.base_offset, expected[1].len() as u64);
}

/// Runs `quiver serve` expecting it to refuse to start; returns its output.
fn serve_expecting_refusal(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(quiver_bin());
    command
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("QUIVER_") {
            command.env_remove(key);
        }
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn quiver serve");
    match wait_bounded(&mut child, Duration::from_secs(30)) {
        Some(_) => child.wait_with_output().expect("output"),
        None => {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "`quiver serve {}` started instead of refusing; stderr:\n{}",
                args.join(" "),
                text(&out.stderr)
            );
        }
    }
}

#[test]
fn config_file_with_unknown_key_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let config = dir.path().join("quiver.toml");
    std::fs::write(
        &config,
        "flush = \"os\"\nretention_check_interval_ms = 100\nlisen = \"127.0.0.1:0\"\n",
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8 path");
    let common = [
        "--data-dir",
        data,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ];

    let mut args = vec!["--config", config];
    args.extend(common);
    let out = serve_expecting_refusal(&args, &[]);
    let line = assert_one_line_failure("serve with an unknown config key", &out);
    assert!(line.contains("lisen"), "the error names the key: {line}");

    // A known key with a bad value, in the file and in the environment.
    let bad_value = dir.path().join("bad.toml");
    std::fs::write(&bad_value, "flush = \"sometimes\"\n").expect("write config");
    let mut args = vec!["--config", bad_value.to_str().expect("utf-8")];
    args.extend(common);
    let out = serve_expecting_refusal(&args, &[]);
    let line = assert_one_line_failure("serve with a bad flush value", &out);
    assert!(line.contains("flush"), "the error names the key: {line}");

    let out = serve_expecting_refusal(&common, &[("QUIVER_SEGMENT_BYTES", "12")]);
    let line = assert_one_line_failure("serve with QUIVER_SEGMENT_BYTES=12", &out);
    assert!(
        line.contains("segment_bytes"),
        "the error names the key: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_topic_create_list_describe_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let out = broker.cli(&[
        "topic",
        "create",
        "events",
        "--partitions",
        "3",
        "--config",
        "retention.ms=60000",
        "--config",
        "segment.bytes=1048576",
    ]);
    let stdout = assert_success("topic create", &out);
    assert!(stdout.contains("events"), "{stdout}");
    assert_success(
        "topic create other",
        &broker.cli(&["topic", "create", "other"]),
    );

    let stdout = assert_success("topic list", &broker.cli(&["topic", "list"]));
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["events", "other"], "topic list:\n{stdout}");

    // 7 records in partition 1, 2 in partition 2.
    let client: Client = broker.client().await;
    for (p, n) in [(1u32, 7usize), (2, 2)] {
        let records: Vec<Record> = (0..n)
            .map(|i| Record::from_value(format!("{i}"), now_ms()))
            .collect();
        client
            .produce("events", p, Acks::All, &records)
            .await
            .expect("produce");
        wait_visible(&client, "events", p, n as u64).await;
    }
    let stdout = assert_success(
        "topic describe",
        &broker.cli(&["topic", "describe", "events"]),
    );
    assert!(
        stdout.contains("retention.ms=60000"),
        "describe shows configs:\n{stdout}"
    );
    let mut lines = stdout.lines().skip_while(|l| !l.contains("HIGH_WATERMARK"));
    let header: Vec<&str> = lines.next().expect("a table header").split('\t').collect();
    let hw_col = header
        .iter()
        .position(|h| *h == "HIGH_WATERMARK")
        .expect("HW column");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 3, "one row per partition:\n{stdout}");
    let hws: Vec<&str> = rows.iter().map(|r| r[hw_col]).collect();
    assert_eq!(hws, ["0", "7", "2"], "high watermarks:\n{stdout}");

    let line = assert_one_line_failure(
        "creating an existing topic",
        &broker.cli(&["topic", "create", "events"]),
    );
    assert!(line.contains("already exists"), "{line}");

    assert_success("topic delete", &broker.cli(&["topic", "delete", "events"]));
    let stdout = assert_success("topic list", &broker.cli(&["topic", "list"]));
    assert!(
        !stdout.contains("events"),
        "deleted topic still listed:\n{stdout}"
    );
    // The delete is the controller's; each broker removes its files as it applies it.
    for p in 0..3 {
        eventually("partition data removed", Duration::from_secs(30), || {
            let gone = !broker.partition_dir("events", p).exists();
            async move { gone.then_some(()) }
        })
        .await;
    }
    let line = assert_one_line_failure(
        "describing a deleted topic",
        &broker.cli(&["topic", "describe", "events"]),
    );
    assert!(line.contains("events"), "{line}");
    assert_one_line_failure(
        "deleting it again",
        &broker.cli(&["topic", "delete", "events"]),
    );

    // A topic created again under the same name starts empty.
    assert_success(
        "recreate",
        &broker.cli(&["topic", "create", "events", "--partitions", "3"]),
    );
    let info = client
        .admin()
        .describe_topic("events")
        .await
        .expect("describe");
    assert!(
        info.partitions
            .iter()
            .all(|p| p.high_watermark == 0 && p.log_end_offset == 0)
    );
    assert!(
        !info
            .configs
            .iter()
            .any(|(k, _)| k == "retention.ms" || k == "segment.bytes"),
        "the deleted topic's configs came back: {:?}",
        info.configs
    );
    assert_eq!(fetch_all(&client, "events", 1, 0).await.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_broker_on_the_same_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("mine", 1, 1))
        .await
        .expect("create");
    client
        .produce(
            "mine",
            0,
            Acks::All,
            &[Record::from_value("first", now_ms())],
        )
        .await
        .expect("produce");
    let ca_before = std::fs::read(broker.ca_cert()).expect("CA");

    match Broker::try_spawn(dir.path(), &[], None) {
        Ok(mut second) => {
            second.kill9();
            panic!("a second broker started on a data directory in use");
        }
        Err(failure) => {
            let status = failure.status.expect("the second broker exited");
            assert!(!status.success(), "second broker exit status {status:?}");
            assert!(
                status.code().is_some(),
                "second broker died of a signal: {status:?}"
            );
            assert!(
                failure.stderr.contains("in use"),
                "the refusal says the directory is in use: {}",
                failure.stderr
            );
        }
    }
    assert!(broker.is_running());
    assert_eq!(
        std::fs::read(broker.ca_cert()).expect("CA"),
        ca_before,
        "CA replaced"
    );
    wait_visible(&client, "mine", 0, 1).await;
    let records = fetch_all(&client, "mine", 0, 0).await;
    assert_eq!(records.len(), 1);
    client
        .produce(
            "mine",
            0,
            Acks::All,
            &[Record::from_value("second", now_ms())],
        )
        .await
        .expect("the first broker still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_turned_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start_with(dir.path(), &[("QUIVER_METRICS", "false")], None);
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("quiet", 1, 1))
        .await
        .expect("create");
    client
        .produce("quiet", 0, Acks::All, &[Record::from_value("x", now_ms())])
        .await
        .expect("produce");
    let (status, body) = broker.http_get("/metrics");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("disabled"));
    assert_eq!(broker.http_get("/health").0, 200, "health still answers");
}

/// A client that vanished while its request was in flight (here a consumer killed
/// during its long poll) never acknowledges the answer; SIGTERM does not wait out its
/// drain limit for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_clients_that_went_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path());
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("gone", 1, 1))
        .await
        .expect("create");
    client.close().await;
    let mut consumer = std::process::Command::new(quiver_tests::quiver_bin())
        .args(["consume", "gone", "--timeout", "60000", "--broker"])
        .arg(broker.quic_addr.to_string())
        .arg("--ca-cert")
        .arg(broker.ca_cert())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn a consumer");
    eventually(
        "the consumer's long poll in flight",
        Duration::from_secs(30),
        || {
            let polling = broker.metric("quiver_requests_in_flight") >= 1.0;
            async move { polling.then_some(()) }
        },
    )
    .await;
    consumer.kill().expect("kill -9 the consumer");
    let _ = consumer.wait();
    let status = broker.sigterm();
    assert_eq!(status.code(), Some(0), "SIGTERM exit status: {status:?}");
    let log = broker.stderr();
    assert!(
        !log.contains("did not finish"),
        "the broker waited for the request of a client that went away:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_come_as_one_json_object_a_line_for_log_shippers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start_with(dir.path(), &[("QUIVER_LOG_FORMAT", "json")], None);
    let client = broker.client().await;
    client
        .admin()
        .create_topic(quiver_sdk::NewTopic::new("shipped", 1, 1))
        .await
        .expect("create");
    let audit = eventually("the audit line", Duration::from_secs(10), || async {
        broker
            .stderr()
            .lines()
            .find(|l| l.contains("quiver::audit"))
            .map(str::to_owned)
    })
    .await;
    let mut objects = 0;
    for line in broker.stderr().lines() {
        // The harness tags each line with the broker's incarnation.
        let line = line.split_once("] ").map_or(line, |(_, rest)| rest);
        if line.starts_with("quiver broker listening on") {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["target"].is_string(), "{line}");
        objects += 1;
    }
    assert!(objects > 0);
    let audit: serde_json::Value = serde_json::from_str(
        audit
            .split_once("] ")
            .map_or(audit.as_str(), |(_, rest)| rest),
    )
    .expect("the audit line is JSON");
    assert_eq!(audit["target"], "quiver::audit");
    assert_eq!(audit["principal"], "User:ANONYMOUS");
    assert_eq!(audit["action"], "topic_create");
}
