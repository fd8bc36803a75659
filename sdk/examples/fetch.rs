//! Reads one partition from its first offset up to the high watermark with
//! `Client::fetch`, and prints every record.
//!
//! ```sh
//! cargo run -p quiver-sdk --example fetch -- [TOPIC] [PARTITION]
//! ```
//!
//! The broker and its CA come from `QUIVER_BROKER` (default `127.0.0.1:7420`) and
//! `QUIVER_CA_CERT` (default `./quiver-data/tls/ca.pem`, where `quiver serve` writes it).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use quiver_sdk::{Admin, Client, ClientConfig, ErrorCode, FetchOptions, NewTopic, OffsetSpec};

const DEFAULT_BROKER: &str = "127.0.0.1:7420";
const DEFAULT_CA_CERT: &str = "./quiver-data/tls/ca.pem";
const DEFAULT_TOPIC: &str = "quiver-examples";
const PARTITIONS: u32 = 3;

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
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| DEFAULT_TOPIC.to_owned());
    let partition: u32 = args
        .next()
        .map(|s| s.parse())
        .transpose()
        .context("PARTITION must be a whole number")?
        .unwrap_or(0);

    let client = connect().await?;
    ensure_topic(&client, &topic).await?;

    // Earliest is the log start offset (retention may have moved it past 0); latest is
    // the high watermark, the end of what consumers may read.
    let earliest = client
        .list_offsets(&topic, partition, OffsetSpec::Earliest)
        .await
        .context("cannot look up the earliest offset")?
        .offset
        .context("the broker reported no earliest offset")?;
    let end = client
        .list_offsets(&topic, partition, OffsetSpec::Latest)
        .await
        .context("cannot look up the latest offset")?
        .offset
        .context("the broker reported no latest offset")?;
    // `writeln!` rather than `println!`, so a closed pipe (`| head`) ends the program
    // with an error instead of a panic.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{topic}/{partition}: offsets {earliest}..{end}")
        .context("cannot write to stdout")?;

    let options = FetchOptions::default()
        // Everything up to `end` is already readable, so the broker need not wait.
        .max_wait(Duration::ZERO);
    let mut offset = earliest;
    while offset < end {
        let fetched = client
            .fetch(&topic, partition, offset, &options)
            .await
            .with_context(|| format!("cannot fetch from offset {offset}"))?;
        for record in &fetched.records {
            writeln!(
                out,
                "offset {} timestamp {} key {} value {}",
                record.offset,
                record.timestamp,
                text(record.key.as_ref()),
                text(record.value.as_ref())
            )
            .context("cannot write to stdout")?;
        }
        // A fetch below the high watermark always returns at least one batch; if one
        // did not, looping again would spin.
        anyhow::ensure!(
            fetched.next_offset > offset,
            "no progress at offset {offset} (high watermark {})",
            fetched.high_watermark
        );
        offset = fetched.next_offset;
    }

    client.close().await;
    Ok(())
}

async fn connect() -> anyhow::Result<Client> {
    let broker = std::env::var("QUIVER_BROKER").unwrap_or_else(|_| DEFAULT_BROKER.to_owned());
    let ca_cert = std::env::var("QUIVER_CA_CERT").unwrap_or_else(|_| DEFAULT_CA_CERT.to_owned());
    Client::connect(ClientConfig::new(broker.as_str(), ca_cert))
        .await
        .with_context(|| format!("cannot reach broker {broker}"))
}

/// Creates the topic unless it exists already.
async fn ensure_topic(client: &Client, topic: &str) -> anyhow::Result<()> {
    match Admin::from_client(client.clone())
        .create_topic(NewTopic::new(topic, PARTITIONS, 1))
        .await
    {
        Ok(()) => Ok(()),
        Err(err) if err.code() == Some(ErrorCode::TopicAlreadyExists) => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot create topic `{topic}`")),
    }
}

/// A key or value for printing: records carry arbitrary bytes, often but not always
/// UTF-8.
fn text(bytes: Option<&bytes::Bytes>) -> std::borrow::Cow<'_, str> {
    bytes.map_or("(null)".into(), |b| String::from_utf8_lossy(b))
}
