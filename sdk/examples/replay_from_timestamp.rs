//! Replays a topic from a point in time: assigns every partition by hand (no group),
//! moves each to its first record at or after the timestamp, and prints records up to
//! the high watermark each partition had at the start. Commits nothing.
//!
//! ```sh
//! cargo run -p quiver-sdk --example replay_from_timestamp -- [TIMESTAMP_MS]
//! ```
//!
//! `TIMESTAMP_MS` is milliseconds since the Unix epoch (default: one hour ago), for
//! example `$(( $(date +%s) * 1000 - 600000 ))` for ten minutes ago. The topic comes
//! from `QUIVER_TOPIC` (default `events`); the broker and its CA from `QUIVER_BROKER`
//! (default `127.0.0.1:7420`) and `QUIVER_CA_CERT` (default `./quiver-data/tls/ca.pem`,
//! where `quiver serve` writes it).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use quiver_sdk::{Admin, Client, ClientConfig, Consumer, ConsumerConfig, TopicPartition};

const DEFAULT_BROKER: &str = "127.0.0.1:7420";
const DEFAULT_CA_CERT: &str = "./quiver-data/tls/ca.pem";
const DEFAULT_TOPIC: &str = "events";
const ONE_HOUR_MS: i64 = 60 * 60 * 1000;
/// How long one `poll` waits for records.
const POLL_WAIT: Duration = Duration::from_millis(500);
/// Gives up after this many polls in a row that return nothing. Everything below the
/// high watermark is readable at once, so an empty poll before the end means trouble.
const EMPTY_POLLS_MAX: u32 = 20;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let from_ms = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse::<i64>()
            .with_context(|| format!("TIMESTAMP_MS `{arg}` is not milliseconds since the epoch"))?,
        None => now_ms()? - ONE_HOUR_MS,
    };
    let topic = std::env::var("QUIVER_TOPIC").unwrap_or_else(|_| DEFAULT_TOPIC.to_owned());
    let client = connect().await?;
    let info = Admin::from_client(client.clone())
        .describe_topic(&topic)
        .await
        .with_context(|| format!("cannot read topic `{topic}`"))?;

    // No group: positions come only from the seeks below, and there is nothing to
    // commit to (with auto-commit on, commits would fail with `NoGroup`).
    let config = ConsumerConfig::default().auto_commit(false);
    let mut consumer = Consumer::new(client.clone(), config);
    let ends: BTreeMap<TopicPartition, u64> = info
        .partitions
        .iter()
        .map(|p| {
            (
                TopicPartition::new(topic.as_str(), p.partition),
                p.high_watermark,
            )
        })
        .collect();
    consumer.assign(ends.keys().cloned());

    let mut remaining = ends.clone();
    for (tp, end) in &ends {
        let start = consumer
            .seek_to_timestamp(tp, from_ms)
            .await
            .with_context(|| format!("cannot look up timestamp {from_ms} in {tp}"))?;
        eprintln!("{tp}: replaying offsets {start}..{end}");
        if start >= *end {
            remaining.remove(tp);
        }
    }
    // A finished partition is paused so `poll` stops fetching it.
    let done: Vec<TopicPartition> = ends
        .keys()
        .filter(|tp| !remaining.contains_key(*tp))
        .cloned()
        .collect();
    consumer.pause(&done);

    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    let mut empty_polls = 0;
    while !remaining.is_empty() {
        let records = consumer.poll(POLL_WAIT).await.context("poll failed")?;
        if records.is_empty() {
            empty_polls += 1;
            anyhow::ensure!(
                empty_polls < EMPTY_POLLS_MAX,
                "no records for {EMPTY_POLLS_MAX} polls while {} partition(s) are below their end",
                remaining.len()
            );
        } else {
            empty_polls = 0;
        }
        for record in &records {
            let tp = TopicPartition::new(&*record.topic, record.partition);
            // Records appended after the start are past the end: not part of the replay.
            if remaining.get(&tp).is_none_or(|end| record.offset >= *end) {
                continue;
            }
            let value = record.value.as_deref().unwrap_or_default();
            writeln!(
                out,
                "{tp} offset {} timestamp {} value {}",
                record.offset,
                record.timestamp,
                String::from_utf8_lossy(value)
            )
            .context("cannot write to stdout")?;
            printed += 1;
        }
        // Done where the position reached the end, whether by reading up to it or by
        // an offset reset (retention deleted the records being read).
        let finished: Vec<TopicPartition> = remaining
            .iter()
            .filter(|(tp, end)| consumer.position(tp).is_some_and(|p| p >= **end))
            .map(|(tp, _)| tp.clone())
            .collect();
        consumer.pause(&finished);
        for tp in &finished {
            remaining.remove(tp);
        }
    }
    out.flush().context("cannot write to stdout")?;
    eprintln!("printed {printed} record(s) from timestamp {from_ms}");
    consumer
        .close()
        .await
        .context("cannot close the consumer")?;
    client.close().await;
    Ok(())
}

fn now_ms() -> anyhow::Result<i64> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    i64::try_from(since_epoch.as_millis()).context("the system clock is too far ahead")
}

async fn connect() -> anyhow::Result<Client> {
    let broker = std::env::var("QUIVER_BROKER").unwrap_or_else(|_| DEFAULT_BROKER.to_owned());
    let ca_cert = std::env::var("QUIVER_CA_CERT").unwrap_or_else(|_| DEFAULT_CA_CERT.to_owned());
    Client::connect(ClientConfig::new(broker.as_str(), ca_cert))
        .await
        .with_context(|| format!("cannot reach broker {broker}"))
}
