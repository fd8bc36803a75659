//! `quiver produce`: one record per input line, through the SDK's producer (batching,
//! retries, idempotence, compression).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use quiver_sdk::{Acks, Compression, Producer, ProducerConfig, ProducerRecord, RecordHeader};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::connect::ConnectArgs;
use crate::topic::parse_pairs;

/// The longest input line accepted as one record.
const LINE_BYTES_MAX: usize = 1024 * 1024;

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    topic: String,
    /// none | leader | all
    #[arg(long, default_value = "all")]
    acks: Acks,
    /// Send every record to this partition [default: by key hash, or sticky per batch]
    #[arg(long)]
    partition: Option<u32>,
    /// Text before the first SEP of a line is the record key.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Read records from this file instead of stdin.
    #[arg(long)]
    file: Option<PathBuf>,
    /// A header every record gets, as key=value; repeatable (a key may repeat).
    #[arg(long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// none | lz4 | zstd
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// How long a batch waits for more records before it is sent.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Target batch size in bytes.
    #[arg(long, default_value_t = quiver_sdk::ProducerConfig::default().batch_bytes)]
    batch_bytes: usize,
    /// Give up on a record after this long (retrying retriable errors until then).
    #[arg(long, default_value_t = 120_000)]
    delivery_timeout_ms: u64,
    /// Turn off idempotence (retries may then store a record twice).
    #[arg(long)]
    no_idempotence: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Default)]
struct Outcome {
    acknowledged: AtomicU64,
    unacknowledged: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let headers: Vec<RecordHeader> = parse_pairs(&args.headers, "--header")?
        .into_iter()
        .map(|(key, value)| RecordHeader {
            key,
            value: Some(Bytes::from(value)),
        })
        .collect();
    let client = args.connect.connect().await?;
    let topic = quiver_sdk::Admin::from_client(client.clone())
        .describe_topic(&args.topic)
        .await
        .with_context(|| format!("cannot produce to `{}`", args.topic))?;
    let partitions = topic.partitions.len() as u32;
    if let Some(p) = args.partition
        && p >= partitions
    {
        bail!(
            "partition {p} does not exist: topic `{}` has partitions 0..{partitions}",
            args.topic
        );
    }
    let input: Box<dyn AsyncRead + Unpin + Send> = match &args.file {
        Some(path) => Box::new(
            tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdin()),
    };
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default()
            .acks(args.acks)
            .compression(args.compression)
            .linger(Duration::from_millis(args.linger_ms))
            .batch_bytes(args.batch_bytes)
            .delivery_timeout(Duration::from_millis(args.delivery_timeout_ms))
            .idempotence(!args.no_idempotence),
    );
    let outcome = Arc::new(Outcome::default());
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut line = Vec::with_capacity(1024);
    let mut read = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .await
            .context("cannot read input")?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if line.len() > LINE_BYTES_MAX {
            bail!(
                "input line {} is {} bytes, over the {LINE_BYTES_MAX}-byte limit",
                read + 1,
                line.len()
            );
        }
        read += 1;
        let (key, value) = match &args.key_separator {
            Some(sep) if !sep.is_empty() => match find(&line, sep.as_bytes()) {
                Some(at) => (
                    Some(Bytes::copy_from_slice(&line[..at])),
                    Bytes::copy_from_slice(&line[at + sep.len()..]),
                ),
                None => (None, Bytes::copy_from_slice(&line)),
            },
            _ => (None, Bytes::copy_from_slice(&line)),
        };
        let mut record = ProducerRecord::new(args.topic.clone(), value);
        record.key = key;
        record.partition = args.partition;
        record.headers = headers.clone();
        let outcome = Arc::clone(&outcome);
        producer
            .send_with_callback(record, move |result| match result {
                Ok(receipt) if receipt.offset.is_some() => {
                    outcome.acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {
                    outcome.unacknowledged.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => {
                    outcome.failed.fetch_add(1, Ordering::Relaxed);
                    let mut first = outcome
                        .first_error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    first.get_or_insert_with(|| err.to_string());
                }
            })
            .await;
    }
    producer.close().await;
    client.close().await;
    let failed = outcome.failed.load(Ordering::Relaxed);
    if args.acks == Acks::None {
        println!(
            "{} records sent to {} without acknowledgement (acks=none), {failed} failed",
            outcome.unacknowledged.load(Ordering::Relaxed),
            args.topic
        );
    } else {
        let acks = if args.acks == Acks::All {
            "all"
        } else {
            "leader"
        };
        println!(
            "{} records acknowledged by {} (acks={acks}), {failed} failed",
            outcome.acknowledged.load(Ordering::Relaxed),
            args.topic
        );
    }
    if failed > 0 {
        let first = outcome
            .first_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        bail!(
            "{failed} of {read} records failed: {}",
            first.unwrap_or_default()
        );
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
