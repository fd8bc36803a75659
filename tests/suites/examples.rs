//! Every program in `sdk/examples/` run against a real broker, as a user would run it
//! (README: start a broker, point `QUIVER_BROKER` and `QUIVER_CA_CERT` at it), and its
//! output checked: the examples are documentation that must keep working.
//!
//! The binaries are the ones `cargo build --workspace --all-targets` (the test command's
//! build step) puts in `target/debug/examples/`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use quiver_tests::Broker;

const TOPIC: &str = "quiver-examples";

/// `target/<profile>/examples/NAME`, next to the test binary's `deps/`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable lives in target/<profile>/deps")
        .join("examples")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the examples first (cargo build -p quiver-sdk --examples)",
        path.display()
    );
    path
}

/// Runs example `name` with `args` against `broker`, and its output; panics with
/// both streams unless it exits with success.
fn run(broker: &Broker, name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(example(name));
    command
        .args(args)
        .env("QUIVER_BROKER", broker.quic_addr.to_string())
        .env("QUIVER_CA_CERT", broker.data_dir.join("tls/ca.pem"))
        .env("QUIVER_TOPIC", TOPIC);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("the example runs");
    assert!(
        output.status.success(),
        "example {name} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `(partition, offset)` of every `TOPIC/P offset N ...` line.
fn positions(stdout: &str) -> BTreeSet<(u32, u64)> {
    stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&format!("{TOPIC}/"))?;
            let (partition, rest) = rest.split_once(" offset ")?;
            let offset = rest.split_whitespace().next()?;
            Some((partition.parse().ok()?, offset.parse().ok()?))
        })
        .collect()
}

#[test]
fn every_sdk_example_runs_against_a_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());

    // Producers: each creates the topic if it is missing and reports every record.
    let produced = run(&broker, "produce", &[TOPIC, "10"], &[]);
    let lines = text(&produced.stdout);
    assert_eq!(
        lines.lines().filter(|l| l.contains("offset")).count(),
        10,
        "one line per receipt:\n{lines}"
    );
    let callbacks = run(&broker, "produce_with_callbacks", &[TOPIC, "1000"], &[]);
    assert!(
        text(&callbacks.stdout).contains("delivered 1000, failed 0, of 1000"),
        "{}",
        text(&callbacks.stdout)
    );
    // One record sent alone, then 100.
    let blocking = run(&broker, "blocking_produce", &[TOPIC, "100"], &[]);
    assert!(
        text(&blocking.stdout).contains("then delivered 100, failed 0, of 100"),
        "{}",
        text(&blocking.stdout)
    );
    let total = 10 + 1000 + 1 + 100;

    // Readers: a plain fetch of partition 0, a group member consuming in a spawned
    // task, and a replay from the epoch; together they must see every record once.
    let fetched = run(&broker, "fetch", &[TOPIC, "0"], &[]);
    // After its `TOPIC/0: offsets A..B` header, one `offset N ...` line per record.
    let offsets: Vec<u64> = text(&fetched.stdout)
        .lines()
        .filter_map(|line| {
            line.strip_prefix("offset ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(!offsets.is_empty(), "{}", text(&fetched.stdout));
    assert_eq!(
        offsets,
        (0..offsets.len() as u64).collect::<Vec<_>>(),
        "partition 0 read from its first offset, in order, without a gap"
    );
    let partition_0: BTreeSet<(u32, u64)> = offsets.iter().map(|o| (0, *o)).collect();

    let group = run(
        &broker,
        "consume_group",
        &[],
        &[("QUIVER_GROUP", "examples"), ("QUIVER_IDLE_MS", "3000")],
    );
    let consumed = positions(&text(&group.stdout));
    assert_eq!(
        consumed.len(),
        total,
        "the group member printed every record once:\n{}",
        text(&group.stderr)
    );
    assert!(
        partition_0.iter().all(|p| consumed.contains(p)),
        "the group read what the fetch read"
    );
    assert!(
        text(&group.stderr).contains("assigned: "),
        "{}",
        text(&group.stderr)
    );

    // The group committed as it went: a second member of it is given the partitions
    // and finds nothing new.
    let again = run(
        &broker,
        "consume_group",
        &[],
        &[("QUIVER_GROUP", "examples"), ("QUIVER_IDLE_MS", "3000")],
    );
    assert!(
        text(&again.stderr).contains("assigned: "),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        positions(&text(&again.stdout)).len(),
        0,
        "{}",
        text(&again.stdout)
    );

    let replay = run(&broker, "replay_from_timestamp", &["0"], &[]);
    let replayed = positions(&text(&replay.stdout));
    assert_eq!(
        replayed, consumed,
        "a replay from the epoch reads every record"
    );
    assert!(
        text(&replay.stderr).contains(&format!("printed {total} record(s)")),
        "{}",
        text(&replay.stderr)
    );
}
