//! `quiver bench produce|consume|e2e`: load a broker and report records/s, MB/s and
//! latency percentiles from an HDR histogram.
//!
//! - `produce`: `--producers` SDK producers (one connection each) send records as fast
//!   as they are acknowledged; latency is per record, from `send` to its delivery
//!   callback.
//! - `consume`: reads the topic from its start to its high watermark as stored batches
//!   (no decode), so it measures the broker's fetch path and the transport.
//! - `e2e`: one producer at `--rate` records/s, one consumer long-polling; latency is per
//!   record, from just before its batch is sent to its arrival at the consumer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use quiver_sdk::{
    Acks, Client, Compression, ErrorCode, FetchOptions, OffsetSpec, PluginCall, Producer,
    ProducerConfig, ProducerRecord,
};
use quiver_wire::batch::{
    BatchBuilder, BatchHeader, BatchSplitter, ProducerStamp, Record, decode_records,
};

use crate::connect::ConnectArgs;

/// Bytes of the bare-quinn ceiling transfer.
const CEILING_QUIC_BYTES: u64 = 1024 * 1024 * 1024;
/// Bytes of the sequential disk write.
const CEILING_DISK_BYTES: u64 = 1024 * 1024 * 1024;
/// Largest latency the histograms track, in microseconds (one minute).
const LATENCY_MAX_US: u64 = 60_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Produce,
    Consume,
    E2e,
    /// The machine's ceilings: a bare quinn transfer and fdatasync'd disk writes.
    Ceiling,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[arg(value_enum)]
    workload: Workload,
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Records to produce (produce, e2e); consume reads whatever the topic holds.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    #[arg(long, default_value = "leader")]
    acks: Acks,
    /// Partitions of the topic when the bench creates it.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Concurrent producers (produce).
    #[arg(long, default_value_t = 1)]
    producers: u32,
    #[arg(long, default_value_t = quiver_sdk::ProducerConfig::default().batch_bytes)]
    batch_bytes: usize,
    /// none | lz4 | zstd (produce)
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// How long a producer batch waits for more records (produce).
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Records per second offered by the e2e producer.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Fetch through this registered plugin (consume).
    #[arg(long)]
    plugin: Option<String>,
    /// Plugin parameter as key=value; repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE", requires = "plugin", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also measure the bare-quinn ceiling in this run and print the result as a ratio
    /// of it (produce, consume).
    #[arg(long)]
    ceiling: bool,
    /// Directory on the disk to measure (ceiling) [default: ./quiver-data if present, else .]
    #[arg(long)]
    disk_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    connect: ConnectArgs,
}

struct Report {
    workload: &'static str,
    records: u64,
    bytes: u64,
    elapsed: Duration,
    latency: Option<Histogram<u64>>,
}

impl Report {
    fn print(&self, json: bool, quic_ceiling: Option<f64>) {
        let secs_total = self.elapsed.as_secs_f64().max(1e-9);
        let ratio = quic_ceiling.map(|c| (self.bytes as f64 / secs_total) / c);
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let rps = self.records as f64 / secs;
        let mbps = self.bytes as f64 / secs / 1e6;
        let pct = |q: f64| {
            self.latency
                .as_ref()
                .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
        };
        let max = self.latency.as_ref().map(|h| h.max() as f64 / 1000.0);
        if json {
            let line = serde_json::json!({
                "workload": self.workload,
                "records": self.records,
                "bytes": self.bytes,
                "seconds": secs,
                "records_per_second": rps,
                "mb_per_second": mbps,
                "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "p999": pct(0.999), "max": max},
                "quic_ceiling_mb_per_second": quic_ceiling.map(|c| c / 1e6),
                "ratio_to_quic_ceiling": ratio,
            });
            println!("{line}");
        } else {
            println!(
                "{}: {} records, {:.1} MB in {:.2} s: {:.0} records/s, {:.1} MB/s",
                self.workload,
                self.records,
                self.bytes as f64 / 1e6,
                secs,
                rps,
                mbps
            );
            if let (Some(p50), Some(p99), Some(p999), Some(max)) =
                (pct(0.5), pct(0.99), pct(0.999), max)
            {
                println!("latency ms: p50 {p50:.3}  p99 {p99:.3}  p99.9 {p999:.3}  max {max:.3}");
            }
            if let (Some(ceiling), Some(ratio)) = (quic_ceiling, ratio) {
                println!(
                    "bare-quinn ceiling in this run: {:.1} MB/s; this run reached {:.2} of it",
                    ceiling / 1e6,
                    ratio
                );
            }
        }
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).context("cannot create a latency histogram")
}

fn progress(total: u64, json: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records {per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}

fn parse_param(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{pair}` is not KEY=VALUE")),
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.plugin.is_some() && args.workload != Workload::Consume {
        bail!("--plugin applies to the consume workload (fetches through the plugin)");
    }
    if args.record_size < 8 {
        bail!("--record-size must be at least 8 bytes (e2e stores a timestamp in each record)");
    }
    if args.partitions == 0 || args.producers == 0 {
        bail!("--partitions and --producers must be at least 1");
    }
    if args.workload == Workload::Ceiling {
        let dir = args.disk_dir.clone().unwrap_or_else(|| {
            let data = std::path::PathBuf::from("./quiver-data");
            if data.is_dir() {
                data
            } else {
                std::path::PathBuf::from(".")
            }
        });
        let ceilings =
            crate::ceiling::measure(CEILING_QUIC_BYTES, Some(&dir), CEILING_DISK_BYTES).await?;
        crate::ceiling::print(&ceilings, args.json);
        return Ok(());
    }
    let ceiling = if args.ceiling {
        Some(crate::ceiling::quic(CEILING_QUIC_BYTES).await?)
    } else {
        None
    };
    let client = args.connect.connect().await?;
    let partitions = ensure_topic(&client, &args).await?;
    let report = match args.workload {
        Workload::Produce => produce(&client, &args, partitions).await?,
        Workload::Consume => consume(&client, &args, partitions).await?,
        Workload::E2e => e2e(&client, &args, partitions).await?,
        Workload::Ceiling => unreachable!("the ceiling workload returned above"),
    };
    client.close().await;
    report.print(args.json, ceiling);
    Ok(())
}

async fn ensure_topic(client: &Client, args: &BenchArgs) -> anyhow::Result<u32> {
    let admin = quiver_sdk::Admin::from_client(client.clone());
    match admin.describe_topic(&args.topic).await {
        Ok(topic) => Ok(topic.partitions.len() as u32),
        Err(err) if err.code() == Some(ErrorCode::UnknownTopic) => {
            let configs = [(
                "max.message.bytes".to_owned(),
                (args.batch_bytes + 64 * 1024).to_string(),
            )];
            admin
                .create_topic(
                    quiver_sdk::NewTopic::new(&args.topic, args.partitions, 1).configs(configs),
                )
                .await?;
            Ok(args.partitions)
        }
        Err(err) => Err(err.into()),
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One batch of `count` records of `size` bytes; the first 8 bytes of each value carry
/// the send time in microseconds since the epoch (read by e2e).
fn batch(count: u64, size: usize, stamp_micros: u64) -> Bytes {
    let mut value = vec![b'q'; size];
    value[..8].copy_from_slice(&stamp_micros.to_be_bytes());
    let value = Bytes::from(value);
    let mut builder = BatchBuilder::new(ProducerStamp::NONE);
    let timestamp = (stamp_micros / 1000) as i64;
    for _ in 0..count {
        builder.push(&Record {
            key: None,
            value: Some(value.clone()),
            headers: Vec::new(),
            timestamp,
        });
    }
    builder.finish().unwrap_or_default()
}

/// Produces through the SDK's [`Producer`], as applications do: per-record latency is
/// from `send` to the delivery callback.
async fn produce(client: &Client, args: &BenchArgs, _partitions: u32) -> anyhow::Result<Report> {
    let latency = Arc::new(std::sync::Mutex::new(histogram()?));
    let bytes = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let bar = progress(args.records, args.json);
    let value = Bytes::from(vec![b'q'; args.record_size]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for producer_index in 0..u64::from(args.producers) {
        // Each producer gets its own connection, as separate processes would.
        let client = if producer_index == 0 {
            client.clone()
        } else {
            args.connect.connect().await?
        };
        let producer = Producer::new(
            client,
            ProducerConfig::default()
                .acks(args.acks)
                .batch_bytes(args.batch_bytes)
                .compression(args.compression)
                .linger(Duration::from_millis(args.linger_ms)),
        );
        let share = args.records / u64::from(args.producers)
            + u64::from(producer_index < args.records % u64::from(args.producers));
        let (latency, bytes, delivered, failed, value) = (
            Arc::clone(&latency),
            Arc::clone(&bytes),
            Arc::clone(&delivered),
            Arc::clone(&failed),
            value.clone(),
        );
        let topic = args.topic.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                let sent_at = Instant::now();
                let (latency, bytes, delivered, failed) = (
                    Arc::clone(&latency),
                    Arc::clone(&bytes),
                    Arc::clone(&delivered),
                    Arc::clone(&failed),
                );
                let size = value.len() as u64;
                producer
                    .send_with_callback(
                        ProducerRecord::new(topic.clone(), value.clone()),
                        move |result| {
                            if result.is_ok() {
                                let micros = sent_at.elapsed().as_micros().max(1) as u64;
                                let mut h = latency
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                                let _ = h.record(micros.min(LATENCY_MAX_US));
                                delivered.fetch_add(1, Ordering::Relaxed);
                                bytes.fetch_add(size, Ordering::Relaxed);
                            } else {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                    )
                    .await;
            }
            producer.close().await;
        }));
    }
    // The bar follows the delivered count from here rather than from every callback:
    // a progress bar update reads the clock and may lock, which per record shows in
    // the producer's profile.
    let ticker = {
        let (bar, delivered) = (bar.clone(), Arc::clone(&delivered));
        tokio::spawn(async move {
            loop {
                bar.set_position(delivered.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    for task in tasks {
        task.await.context("a producer task failed")?;
    }
    ticker.abort();
    bar.finish_and_clear();
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} records failed");
    }
    let latency = Arc::try_unwrap(latency)
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
        .map_err(|_| anyhow::anyhow!("latency histogram still shared"))?;
    Ok(Report {
        workload: "produce",
        records: delivered.load(Ordering::Relaxed),
        bytes: bytes.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latency: Some(latency),
    })
}

async fn consume(client: &Client, args: &BenchArgs, partitions: u32) -> anyhow::Result<Report> {
    let options = FetchOptions::default()
        .max_wait(Duration::from_millis(100))
        .min_bytes(1)
        .max_bytes(8 * 1024 * 1024)
        .plugin(args.plugin.clone().map(|name| PluginCall {
            name,
            params: args.params.clone(),
        }));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let bar = progress(0, args.json);
    for partition in 0..partitions {
        let client = client.clone();
        let topic = args.topic.clone();
        let bar = bar.clone();
        let options = options.clone();
        tasks.push(tokio::spawn(async move {
            let start = client
                .list_offsets(&topic, partition, OffsetSpec::Earliest)
                .await?;
            let end = client
                .list_offsets(&topic, partition, OffsetSpec::Latest)
                .await?;
            let (mut offset, end) = (start.offset.unwrap_or(0), end.offset.unwrap_or(0));
            bar.inc_length(end - offset);
            let (mut records, mut bytes) = (0u64, 0u64);
            while offset < end {
                let fetched = client
                    .fetch_batches(&topic, partition, offset, &options)
                    .await?;
                bytes += fetched.batches.len() as u64;
                for batch in BatchSplitter::new(fetched.batches) {
                    let header = BatchHeader::parse(&batch?)?;
                    if !header.is_control() {
                        records += u64::from(header.record_count);
                    }
                    offset = header.next_offset();
                }
                bar.set_position(offset);
            }
            anyhow::Ok((records, bytes))
        }));
    }
    let (mut records, mut bytes) = (0, 0);
    for task in tasks {
        let (r, b) = task.await.context("a consumer task failed")??;
        records += r;
        bytes += b;
    }
    bar.finish_and_clear();
    Ok(Report {
        workload: "consume",
        records,
        bytes,
        elapsed: started.elapsed(),
        latency: None,
    })
}

async fn e2e(client: &Client, args: &BenchArgs, partitions: u32) -> anyhow::Result<Report> {
    if partitions != 1 {
        bail!("e2e measures one partition; use a topic with 1 partition");
    }
    let start = client
        .list_offsets(&args.topic, 0, OffsetSpec::Latest)
        .await?
        .offset
        .unwrap_or(0);
    let consumer = {
        let client = client.clone();
        let topic = args.topic.clone();
        let total = args.records;
        tokio::spawn(async move {
            let options = FetchOptions::default()
                .max_wait(Duration::from_millis(500))
                .min_bytes(1)
                .max_bytes(4 * 1024 * 1024);
            let mut latency = histogram()?;
            let (mut offset, mut seen, mut bytes) = (start, 0u64, 0u64);
            while seen < total {
                let fetched = client.fetch_batches(&topic, 0, offset, &options).await?;
                let arrived = now_micros();
                bytes += fetched.batches.len() as u64;
                for batch in BatchSplitter::new(fetched.batches) {
                    for record in decode_records(&batch?)? {
                        if record.offset < offset {
                            continue;
                        }
                        let value = record.value.unwrap_or_default();
                        let sent = value
                            .get(..8)
                            .and_then(|b| b.try_into().ok())
                            .map(u64::from_be_bytes)
                            .unwrap_or(0);
                        latency.record(arrived.saturating_sub(sent).max(1))?;
                        offset = record.offset + 1;
                        seen += 1;
                    }
                }
            }
            anyhow::Ok((seen, bytes, latency))
        })
    };
    // Pace in small batches: 1 ms worth of records each, or 1 record when slower.
    let per_batch = (args.rate / 1000).max(1);
    let interval = Duration::from_secs_f64(per_batch as f64 / args.rate.max(1) as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let bar = progress(args.records, args.json);
    let started = Instant::now();
    let mut produced = 0;
    while produced < args.records {
        ticker.tick().await;
        let count = per_batch.min(args.records - produced);
        client
            .produce_batch(
                &args.topic,
                0,
                args.acks,
                batch(count, args.record_size, now_micros()),
            )
            .await?;
        produced += count;
        bar.inc(count);
    }
    let (records, bytes, latency) = consumer.await.context("the consumer task failed")??;
    bar.finish_and_clear();
    Ok(Report {
        workload: "e2e",
        records,
        bytes,
        elapsed: started.elapsed(),
        latency: Some(latency),
    })
}
