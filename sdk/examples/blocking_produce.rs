//! Produces from plain synchronous code with `BlockingProducer`: no `async`, no runtime
//! of your own.
//!
//! ```sh
//! cargo run -p quiver-sdk --example blocking_produce -- [TOPIC] [COUNT]
//! ```
//!
//! The broker and its CA come from `QUIVER_BROKER` (default `127.0.0.1:7420`) and
//! `QUIVER_CA_CERT` (default `./quiver-data/tls/ca.pem`, where `quiver serve` writes it).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use quiver_sdk::{
    Admin, BlockingProducer, Client, ClientConfig, ErrorCode, NewTopic, ProducerConfig,
    ProducerRecord,
};

const DEFAULT_BROKER: &str = "127.0.0.1:7420";
const DEFAULT_CA_CERT: &str = "./quiver-data/tls/ca.pem";
const DEFAULT_TOPIC: &str = "quiver-examples";
const DEFAULT_COUNT: u64 = 100;
const PARTITIONS: u32 = 3;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| DEFAULT_TOPIC.to_owned());
    let count: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()
        .context("COUNT must be a whole number")?
        .unwrap_or(DEFAULT_COUNT);

    let broker = std::env::var("QUIVER_BROKER").unwrap_or_else(|_| DEFAULT_BROKER.to_owned());
    let ca_cert = std::env::var("QUIVER_CA_CERT").unwrap_or_else(|_| DEFAULT_CA_CERT.to_owned());
    let client_config = ClientConfig::new(broker.as_str(), ca_cert);

    ensure_topic(&client_config, &topic)?;

    let producer = BlockingProducer::connect(client_config, ProducerConfig::default())
        .with_context(|| format!("cannot reach broker {broker}"))?;

    // `send` blocks until this one record is stored (acks = all by default), so a
    // loop of `send` pays a round trip and an fsync per record.
    let receipt = producer
        .send(ProducerRecord::new(topic.as_str(), "first, sent alone").key("blocking"))
        .context("first record not delivered")?;
    println!(
        "first record: {} partition {} offset {}",
        receipt.topic,
        receipt.partition,
        receipt
            .offset
            .map_or("not reported".to_owned(), |o| o.to_string())
    );

    // `send_with_callback` blocks only while the buffer is full, so these records
    // share batches; `flush` then blocks until every callback has run.
    let delivered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    for i in 0..count {
        let (delivered, failed) = (Arc::clone(&delivered), Arc::clone(&failed));
        let record = ProducerRecord::new(topic.as_str(), format!("blocking {i}")).key("blocking");
        producer.send_with_callback(record, move |outcome| match outcome {
            Ok(_) => {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("first failure: record {i}: {err}");
                }
            }
        });
    }
    producer.flush();

    let (delivered, failed) = (
        delivered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!("then delivered {delivered}, failed {failed}, of {count}");
    // Dropping the producer flushes and closes it.
    drop(producer);
    anyhow::ensure!(
        failed == 0,
        "{failed} of {count} records were not delivered"
    );
    Ok(())
}

/// Creates the topic unless it exists already. Admin calls are only async, so a
/// throwaway single-threaded runtime runs this one.
fn ensure_topic(config: &ClientConfig, topic: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    runtime.block_on(async {
        let client = Client::connect(config.clone())
            .await
            .with_context(|| format!("cannot reach broker {}", config.broker))?;
        let created = Admin::from_client(client.clone())
            .create_topic(NewTopic::new(topic, PARTITIONS, 1))
            .await;
        client.close().await;
        match created {
            Ok(()) => Ok(()),
            Err(err) if err.code() == Some(ErrorCode::TopicAlreadyExists) => Ok(()),
            Err(err) => Err(err).with_context(|| format!("cannot create topic `{topic}`")),
        }
    })
}
