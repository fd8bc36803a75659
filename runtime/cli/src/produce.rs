//! `quiver produce`: one record per input line, batched per partition.
//!
//! Each partition has one batch in flight at a time, so records of a partition are
//! stored in input order; partitions proceed in parallel.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use quiver_sdk::{Acks, Client, Record};
use quiver_wire::batch::{BatchBuilder, ProducerStamp};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::connect::ConnectArgs;

/// Target size of one batch; below the default `max.message.bytes` of 1 MiB.
const BATCH_BYTES_TARGET: usize = 512 * 1024;
/// Batches queued per partition before reading input pauses.
const BATCHES_QUEUED_PER_PARTITION: usize = 2;
/// The longest input line accepted as one record.
const LINE_BYTES_MAX: usize = 1024 * 1024;

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    topic: String,
    /// none | leader | all
    #[arg(long, default_value = "all")]
    acks: Acks,
    /// Send every record to this partition [default: by key hash, or round-robin per batch]
    #[arg(long)]
    partition: Option<u32>,
    /// Text before the first SEP of a line is the record key.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Read records from this file instead of stdin.
    #[arg(long)]
    file: Option<PathBuf>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Default)]
struct Outcome {
    acknowledged: u64,
    sent_unacknowledged: u64,
    failed: u64,
    first_error: Option<String>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let client = args.connect.connect().await?;
    let topic = client
        .describe_topic(&args.topic)
        .await
        .with_context(|| format!("cannot produce to `{}`", args.topic))?;
    let partitions = topic.partitions.len() as u32;
    if let Some(p) = args.partition {
        if p >= partitions {
            bail!(
                "partition {p} does not exist: topic `{}` has partitions 0..{partitions}",
                args.topic
            );
        }
    }
    let input: Box<dyn AsyncRead + Unpin + Send> = match &args.file {
        Some(path) => Box::new(
            tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdin()),
    };

    let mut senders = Vec::with_capacity(partitions as usize);
    let mut workers = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions {
        let (tx, rx) = mpsc::channel::<(Bytes, u64)>(BATCHES_QUEUED_PER_PARTITION);
        senders.push(tx);
        workers.push(tokio::spawn(send_batches(
            client.clone(),
            args.topic.clone(),
            partition,
            args.acks,
            rx,
        )));
    }

    let mut builders: Vec<BatchBuilder> = (0..partitions)
        .map(|_| BatchBuilder::new(ProducerStamp::NONE))
        .collect();
    let mut sticky = 0u32;
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
        let partition = match (args.partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => quiver_sdk::partition_for_key(k, partitions),
            (None, None) => sticky,
        };
        let record = Record {
            key,
            value: Some(value),
            headers: Vec::new(),
            timestamp: now_ms(),
        };
        let builder = &mut builders[partition as usize];
        if builder.record_count() > 0 && builder.encoded_len_with(&record) > BATCH_BYTES_TARGET {
            let full = std::mem::replace(builder, BatchBuilder::new(ProducerStamp::NONE));
            dispatch(&senders, partition, full).await?;
            if args.partition.is_none() {
                sticky = (sticky + 1) % partitions;
            }
        }
        builders[partition as usize].push(&record);
    }
    for (partition, builder) in builders.into_iter().enumerate() {
        dispatch(&senders, partition as u32, builder).await?;
    }
    drop(senders);

    let mut total = Outcome::default();
    for worker in workers {
        let outcome = worker.await.context("a sender task failed")?;
        total.acknowledged += outcome.acknowledged;
        total.sent_unacknowledged += outcome.sent_unacknowledged;
        total.failed += outcome.failed;
        total.first_error = total.first_error.or(outcome.first_error);
    }
    client.close().await;
    let acks = match args.acks {
        Acks::None => "none",
        Acks::Leader => "leader",
        Acks::All => "all",
    };
    if args.acks == Acks::None {
        println!(
            "{} records sent to {} without acknowledgement (acks=none), {} failed",
            total.sent_unacknowledged, args.topic, total.failed
        );
    } else {
        println!(
            "{} records acknowledged by {} (acks={acks}), {} failed",
            total.acknowledged, args.topic, total.failed
        );
    }
    if total.failed > 0 {
        bail!(
            "{} of {read} records failed: {}",
            total.failed,
            total.first_error.unwrap_or_default()
        );
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn dispatch(
    senders: &[mpsc::Sender<(Bytes, u64)>],
    partition: u32,
    builder: BatchBuilder,
) -> anyhow::Result<()> {
    let count = u64::from(builder.record_count());
    if let Some(batch) = builder.finish() {
        senders[partition as usize]
            .send((batch, count))
            .await
            .map_err(|_| anyhow::anyhow!("the sender for partition {partition} stopped"))?;
    }
    Ok(())
}

async fn send_batches(
    client: Client,
    topic: String,
    partition: u32,
    acks: Acks,
    mut batches: mpsc::Receiver<(Bytes, u64)>,
) -> Outcome {
    let mut outcome = Outcome::default();
    while let Some((batch, count)) = batches.recv().await {
        match client.produce_batch(&topic, partition, acks, batch).await {
            Ok(Some(_)) => outcome.acknowledged += count,
            Ok(None) => outcome.sent_unacknowledged += count,
            Err(err) => {
                outcome.failed += count;
                outcome.first_error.get_or_insert_with(|| err.to_string());
            }
        }
    }
    outcome
}
