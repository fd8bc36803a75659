//! Sends records with `Producer::send_with_callback`, counts how many were delivered and
//! how many failed, and flushes before exiting. Exits non-zero if any record failed.
//!
//! ```sh
//! cargo run -p quiver-sdk --example produce_with_callbacks -- [TOPIC] [COUNT]
//! ```
//!
//! The broker and its CA come from `QUIVER_BROKER` (default `127.0.0.1:7420`) and
//! `QUIVER_CA_CERT` (default `./quiver-data/tls/ca.pem`, where `quiver serve` writes it).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use quiver_sdk::{
    Admin, Client, ClientConfig, Compression, ErrorCode, NewTopic, Producer, ProducerConfig,
    ProducerRecord,
};

const DEFAULT_BROKER: &str = "127.0.0.1:7420";
const DEFAULT_CA_CERT: &str = "./quiver-data/tls/ca.pem";
const DEFAULT_TOPIC: &str = "quiver-examples";
const DEFAULT_COUNT: u64 = 1_000;
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
    let count: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()
        .context("COUNT must be a whole number")?
        .unwrap_or(DEFAULT_COUNT);

    let client = connect().await?;
    ensure_topic(&client, &topic).await?;

    let config = ProducerConfig::default()
        // Stored compressed as sent; consumers decompress.
        .compression(Compression::Lz4);
    let producer = Producer::new(client.clone(), config);

    let delivered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    for i in 0..count {
        let (delivered, failed) = (Arc::clone(&delivered), Arc::clone(&failed));
        // No key: the sticky partitioner fills one partition's batch, then moves on.
        let record = ProducerRecord::new(topic.as_str(), format!("event {i}"));
        // Waits only while the producer's buffer is full; the callback runs exactly
        // once, on the producer's task, so it only counts.
        producer
            .send_with_callback(record, move |outcome| match outcome {
                Ok(_) => {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => {
                    if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("first failure: record {i}: {err}");
                    }
                }
            })
            .await;
    }
    // Returns once every callback has run.
    producer.flush().await;

    let (delivered, failed) = (
        delivered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!("delivered {delivered}, failed {failed}, of {count}");
    producer.close().await;
    client.close().await;
    anyhow::ensure!(
        failed == 0,
        "{failed} of {count} records were not delivered"
    );
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
