//! Joins a consumer group, prints the records of the partitions the group gives this
//! member, and commits at-least-once: each batch is printed first, then committed.
//! The consumer runs in a task of its own (`tokio::spawn`), as it would beside the rest
//! of an application. Stops after 10 s without a record (`QUIVER_IDLE_MS` to change it)
//! or on Ctrl-C, and leaves the group cleanly.
//!
//! ```sh
//! QUIVER_GROUP=example-group QUIVER_TOPIC=events cargo run -p quiver-sdk --example consume_group
//! ```
//!
//! Run it in two terminals at once to watch the group move partitions between them.
//!
//! The broker and its CA come from `QUIVER_BROKER` (default `127.0.0.1:7420`) and
//! `QUIVER_CA_CERT` (default `./quiver-data/tls/ca.pem`, where `quiver serve` writes it).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use quiver_sdk::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, Rebalance,
    RebalanceListener, TopicPartition,
};

const DEFAULT_BROKER: &str = "127.0.0.1:7420";
const DEFAULT_CA_CERT: &str = "./quiver-data/tls/ca.pem";
const DEFAULT_GROUP: &str = "example-group";
const DEFAULT_TOPIC: &str = "events";
/// The program ends after this long without a record, unless `QUIVER_IDLE_MS` says.
const IDLE_LIMIT: Duration = Duration::from_secs(10);
/// How long one `poll` waits for records.
const POLL_WAIT: Duration = Duration::from_millis(500);

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

/// Prints what the group gives and takes. Both methods run inside `poll`.
struct PrintRebalance;

impl RebalanceListener for PrintRebalance {
    fn on_partitions_revoked(
        &mut self,
        revoked: &[TopicPartition],
        positions: &BTreeMap<TopicPartition, u64>,
    ) -> Vec<(TopicPartition, u64)> {
        eprintln!("revoked: {}", list(revoked));
        // Every record `poll` handed out was printed before `poll` was called again,
        // so the positions are safe to commit: the next owner starts right after them.
        // (The loop below already committed them; this covers a failed commit.)
        revoked
            .iter()
            .filter_map(|tp| positions.get(tp).map(|p| (tp.clone(), *p)))
            .collect()
    }

    fn on_partitions_assigned(&mut self, assigned: &[TopicPartition], _: &mut Rebalance) {
        eprintln!("assigned: {}", list(assigned));
    }
}

fn list(partitions: &[TopicPartition]) -> String {
    let names: Vec<String> = partitions.iter().map(ToString::to_string).collect();
    names.join(", ")
}

async fn run() -> anyhow::Result<()> {
    let group = std::env::var("QUIVER_GROUP").unwrap_or_else(|_| DEFAULT_GROUP.to_owned());
    let topic = std::env::var("QUIVER_TOPIC").unwrap_or_else(|_| DEFAULT_TOPIC.to_owned());
    let client = connect().await?;
    // A subscription to a missing topic never gets partitions (the coordinator refuses
    // the join and the heartbeat task keeps trying), so check the topic first.
    Admin::from_client(client.clone())
        .describe_topic(&topic)
        .await
        .with_context(|| format!("cannot read topic `{topic}`"))?;

    let config = ConsumerConfig::default()
        .group(group.clone())
        // Commits are explicit below, after each batch is printed.
        .auto_commit(false)
        // Only where the group has no committed offset yet: start from the oldest
        // record rather than only new ones.
        .auto_offset_reset(OffsetReset::Earliest);
    let mut consumer = Consumer::new(client.clone(), config);
    consumer.set_rebalance_listener(PrintRebalance);
    consumer
        .subscribe(&[topic.as_str()])
        .context("cannot join the group")?;
    eprintln!("joining group `{group}` on topic `{topic}`");

    let idle_limit = match std::env::var("QUIVER_IDLE_MS") {
        Ok(ms) => Duration::from_millis(ms.parse().context("QUIVER_IDLE_MS: not a number")?),
        Err(_) => IDLE_LIMIT,
    };

    // The consumer moves into a task of its own: every future it returns is `Send`.
    let task = tokio::spawn(async move {
        let result = consume(&mut consumer, idle_limit).await;
        // `close` leaves the group at once, so the partitions move now rather than
        // after the session timeout. It commits nothing here: auto-commit is off and
        // every printed batch was committed already.
        let closed = consumer.close().await.context("cannot leave the group");
        result.and(closed)
    });
    let result = task.await.context("the consumer task panicked");
    client.close().await;
    result?
}

/// Polls, prints and commits until `idle_limit` passes without a record or Ctrl-C.
async fn consume(consumer: &mut Consumer, idle_limit: Duration) -> anyhow::Result<()> {
    let mut printed = 0u64;
    let mut last_record = tokio::time::Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if last_record.elapsed() >= idle_limit {
            eprintln!("no record for {idle_limit:?}");
            break;
        }
        // Dropping a `poll` in progress loses no record: positions move only when
        // `poll` returns records.
        let records = tokio::select! {
            polled = consumer.poll(POLL_WAIT) => polled.context("poll failed")?,
            signal = &mut ctrl_c => {
                signal.context("cannot listen for Ctrl-C")?;
                eprintln!("interrupted");
                break;
            }
        };
        if records.is_empty() {
            continue;
        }
        last_record = tokio::time::Instant::now();
        print_batch(&records)?;
        printed += records.len() as u64;
        // At-least-once: commit only after the batch is handled. After a crash between
        // the print and the commit, whoever reads these partitions next (another
        // member, or this program restarted) prints the batch again.
        consumer
            .commit_sync()
            .await
            .context("cannot commit offsets")?;
    }
    eprintln!("printed {printed} record(s); leaving the group");
    Ok(())
}

/// Prints one batch, holding stdout's lock only here: a lock held across an `await`
/// would make the consumer task's future not `Send`.
fn print_batch(records: &[ConsumerRecord]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for record in records {
        let value = record.value.as_deref().unwrap_or_default();
        writeln!(
            out,
            "{}/{} offset {} value {}",
            record.topic,
            record.partition,
            record.offset,
            String::from_utf8_lossy(value)
        )
        .context("cannot write to stdout")?;
    }
    out.flush().context("cannot write to stdout")
}

async fn connect() -> anyhow::Result<Client> {
    let broker = std::env::var("QUIVER_BROKER").unwrap_or_else(|_| DEFAULT_BROKER.to_owned());
    let ca_cert = std::env::var("QUIVER_CA_CERT").unwrap_or_else(|_| DEFAULT_CA_CERT.to_owned());
    Client::connect(ClientConfig::new(broker.as_str(), ca_cert))
        .await
        .with_context(|| format!("cannot reach broker {broker}"))
}
