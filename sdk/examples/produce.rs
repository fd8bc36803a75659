//! Sends records with the asynchronous `Producer` and prints where each one was stored.
//!
//! ```sh
//! cargo run -p quiver-sdk --example produce -- [TOPIC] [COUNT]
//! ```
//!
//! The broker and its CA come from `QUIVER_BROKER` (default `127.0.0.1:7420`) and
//! `QUIVER_CA_CERT` (default `./quiver-data/tls/ca.pem`, where `quiver serve` writes it).

use std::process::ExitCode;

use anyhow::Context;
use quiver_sdk::{
    Admin, Client, ClientConfig, ErrorCode, NewTopic, Producer, ProducerConfig, ProducerRecord,
};

const DEFAULT_BROKER: &str = "127.0.0.1:7420";
const DEFAULT_CA_CERT: &str = "./quiver-data/tls/ca.pem";
const DEFAULT_TOPIC: &str = "quiver-examples";
const DEFAULT_COUNT: usize = 10;
const PARTITIONS: u32 = 3;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` puts the whole chain of causes on one line.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| DEFAULT_TOPIC.to_owned());
    let count: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()
        .context("COUNT must be a whole number")?
        .unwrap_or(DEFAULT_COUNT);

    let client = connect().await?;
    ensure_topic(&client, &topic).await?;

    // The defaults are the safe ones: acks = all, idempotence on, retries until the
    // delivery timeout. See docs/producer.md.
    let producer = Producer::new(client.clone(), ProducerConfig::default());

    // Queue every record first and await the receipts afterwards: records sent
    // together share batches. Awaiting each `send` result right away would wait one
    // round trip (and one fsync) per record.
    let mut deliveries = Vec::with_capacity(count);
    for i in 0..count {
        let record = ProducerRecord::new(topic.as_str(), format!("record {i}"))
            // Records with the same key go to the same partition, in send order.
            .key(format!("user-{}", i % 4));
        let delivery = producer
            .send(record)
            .await
            .with_context(|| format!("record {i} refused"))?;
        deliveries.push(delivery);
    }
    for (i, delivery) in deliveries.into_iter().enumerate() {
        let receipt = delivery
            .await
            .with_context(|| format!("record {i} not delivered"))?;
        match receipt.offset {
            Some(offset) => println!(
                "record {i}: {} partition {} offset {offset}",
                receipt.topic, receipt.partition
            ),
            // Only with acks = none, where the broker does not answer.
            None => println!(
                "record {i}: {} partition {} (offset not reported)",
                receipt.topic, receipt.partition
            ),
        }
    }

    producer.close().await;
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
