//! `quiver consume`: fetch records from one or every partition and print them.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use quiver_sdk::{
    Client, Consumer, ConsumerConfig, DecodedRecord, ErrorCode, FetchOptions, OffsetReset,
    OffsetSpec, PluginCall,
};
use tokio::sync::mpsc;

use crate::connect::ConnectArgs;
use crate::topic::parse_pairs;

/// Record chunks queued between the fetchers and the printer.
const CHUNKS_QUEUED: usize = 16;
/// How long one fetch may wait at the broker for new records.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Pause before fetching again after a retriable error.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Format {
    /// Each record's value on its own line.
    Value,
    /// One JSON object per record.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    topic: String,
    /// Consume as a member of this consumer group and commit its offsets.
    #[arg(long)]
    group: Option<String>,
    /// Only this partition [default: every partition]
    #[arg(long)]
    partition: Option<u32>,
    /// Start at the first stored record [default: only new records]
    #[arg(long, conflicts_with_all = ["offset", "from_timestamp"])]
    from_beginning: bool,
    /// Start at this offset (of every partition consumed).
    #[arg(long, conflicts_with = "from_timestamp")]
    offset: Option<u64>,
    /// Start at the first record at or after this time (milliseconds since the epoch).
    #[arg(long, value_name = "MILLIS")]
    from_timestamp: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many milliseconds without a new record.
    #[arg(long, value_name = "MILLIS")]
    timeout: Option<u64>,
    /// Apply this registered plugin to the records fetched.
    #[arg(long)]
    plugin: Option<String>,
    /// Plugin parameter as key=value; repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE", requires = "plugin")]
    params: Vec<String>,
    #[arg(long, value_enum, default_value = "value")]
    format: Format,
    #[command(flatten)]
    connect: ConnectArgs,
}

type Chunk = (u32, Vec<DecodedRecord>);

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let plugin = match &args.plugin {
        Some(name) => Some(PluginCall {
            name: name.clone(),
            params: parse_pairs(&args.params, "--param")?,
        }),
        None => None,
    };
    if let Some(group) = args.group.clone() {
        return consume_in_group(args, group, plugin).await;
    }
    let client = args.connect.connect().await?;
    if let Some(call) = &plugin {
        // Fail before fetching when the plugin is not registered.
        let (plugins, _) = quiver_sdk::Admin::from_client(client.clone())
            .list_plugins()
            .await?;
        if !plugins.iter().any(|p| p.name == call.name) {
            bail!("no plugin named `{}` is registered", call.name);
        }
    }
    consume_partitions(args, client, plugin).await
}

async fn consume_partitions(
    args: ConsumeArgs,
    client: Client,
    plugin: Option<PluginCall>,
) -> anyhow::Result<()> {
    let topic = quiver_sdk::Admin::from_client(client.clone())
        .describe_topic(&args.topic)
        .await
        .with_context(|| format!("cannot consume `{}`", args.topic))?;
    let count = topic.partitions.len() as u32;
    let partitions: Vec<u32> = match args.partition {
        Some(p) if p >= count => bail!(
            "partition {p} does not exist: topic `{}` has partitions 0..{count}",
            args.topic
        ),
        Some(p) => vec![p],
        None => (0..count).collect(),
    };

    let (tx, mut rx) = mpsc::channel::<anyhow::Result<Chunk>>(CHUNKS_QUEUED);
    let mut fetchers = Vec::new();
    for partition in partitions {
        let start = start_offset(&client, &args, partition).await?;
        fetchers.push(tokio::spawn(fetch_loop(
            client.clone(),
            args.topic.clone(),
            partition,
            start,
            plugin.clone(),
            tx.clone(),
        )));
    }
    drop(tx);

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    let mut printed = 0u64;
    let idle = args.timeout.map(Duration::from_millis);
    let result = loop {
        if args.count.is_some_and(|n| printed >= n) {
            break Ok(());
        }
        let next = match idle {
            Some(limit) => match tokio::time::timeout(limit, rx.recv()).await {
                Ok(next) => next,
                Err(_) => break Ok(()),
            },
            None => rx.recv().await,
        };
        let (partition, records) = match next {
            Some(Ok(chunk)) => chunk,
            Some(Err(err)) => break Err(err),
            None => break Ok(()),
        };
        for record in records {
            if args.count.is_some_and(|n| printed >= n) {
                break;
            }
            if let Err(err) = print(&mut out, args.format, &args.topic, partition, &record) {
                if err.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                break_with(&err)?;
            }
            printed += 1;
        }
        if let Err(err) = out.flush() {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            break_with(&err)?;
        }
    };
    for fetcher in fetchers {
        fetcher.abort();
    }
    drop(out);
    result
}

/// Consumes as a member of `group`: partitions come from the group's coordinator, and
/// what is printed is committed (at-least-once: a crash re-delivers at most what was
/// printed since the last commit).
async fn consume_in_group(
    args: ConsumeArgs,
    group: String,
    plugin: Option<PluginCall>,
) -> anyhow::Result<()> {
    if args.partition.is_some() || args.offset.is_some() || args.from_timestamp.is_some() {
        bail!(
            "--group takes partitions and positions from the group; drop --partition/--offset/--from-timestamp \
             (move a group's positions with `quiver group reset-offsets`)"
        );
    }
    let client = args.connect.connect().await?;
    quiver_sdk::Admin::from_client(client.clone())
        .describe_topic(&args.topic)
        .await
        .with_context(|| format!("cannot consume `{}`", args.topic))?;
    let config = ConsumerConfig::default()
        .group(group.clone())
        // Only used where the group has no committed offset, as in Kafka.
        .auto_offset_reset(if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        })
        .fetch(
            FetchOptions::default()
                .max_wait(FETCH_WAIT)
                .min_bytes(1)
                .max_bytes(4 * 1024 * 1024)
                .plugin(plugin),
        );
    let mut consumer = Consumer::new(client.clone(), config);
    consumer
        .subscribe(&[args.topic.as_str()])
        .context("cannot join the group")?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    let mut printed = 0u64;
    let mut last_record = tokio::time::Instant::now();
    let idle = args.timeout.map(Duration::from_millis);
    let stop = stop_signal();
    tokio::pin!(stop);
    let result: anyhow::Result<()> = loop {
        if args.count.is_some_and(|n| printed >= n) {
            break Ok(());
        }
        if idle.is_some_and(|limit| last_record.elapsed() >= limit) {
            break Ok(());
        }
        // Never take more than is left to print: positions (and so commits) cover
        // exactly what was handed out.
        let wanted = args.count.map_or(500, |n| (n - printed).min(500)) as usize;
        consumer.set_max_poll_records(wanted);
        // Ctrl-C or SIGTERM: stop and close, so what was printed is committed and the
        // partitions move at once instead of after the session timeout.
        let polled = tokio::select! {
            polled = consumer.poll(Duration::from_millis(500)) => polled,
            _ = &mut stop => break Ok(()),
        };
        let records = match polled {
            Ok(records) => records,
            Err(err) => break Err(anyhow::Error::new(err).context("consume failed")),
        };
        if !records.is_empty() {
            last_record = tokio::time::Instant::now();
        }
        for record in &records {
            let decoded = DecodedRecord {
                offset: record.offset,
                timestamp: record.timestamp,
                key: record.key.clone(),
                value: record.value.clone(),
                headers: record.headers.clone(),
            };
            match print(
                &mut out,
                args.format,
                &args.topic,
                record.partition,
                &decoded,
            ) {
                Ok(()) => printed += 1,
                Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => break,
                Err(err) => return Err(anyhow::anyhow!("cannot write output: {err}")),
            }
        }
        if let Err(err) = out.flush() {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                break Ok(());
            }
            return Err(anyhow::anyhow!("cannot write output: {err}"));
        }
    };
    let closed = consumer.close().await;
    drop(out);
    result?;
    closed.context("cannot commit the group's offsets")?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn break_with(err: &std::io::Error) -> anyhow::Result<()> {
    bail!("cannot write output: {err}")
}

async fn start_offset(client: &Client, args: &ConsumeArgs, partition: u32) -> anyhow::Result<u64> {
    let spec = if args.from_beginning {
        OffsetSpec::Earliest
    } else if let Some(offset) = args.offset {
        let bounds = client
            .list_offsets(&args.topic, partition, OffsetSpec::Earliest)
            .await?;
        if offset < bounds.log_start_offset || offset > bounds.log_end_offset {
            bail!(
                "offset {offset} is out of range for partition {partition}: stored offsets are {}..{}",
                bounds.log_start_offset,
                bounds.log_end_offset
            );
        }
        return Ok(offset);
    } else if let Some(ts) = args.from_timestamp {
        OffsetSpec::Timestamp(ts)
    } else {
        OffsetSpec::Latest
    };
    let answer = client.list_offsets(&args.topic, partition, spec).await?;
    // No record at or after the timestamp: start where new records will arrive.
    Ok(answer.offset.unwrap_or(answer.log_end_offset))
}

async fn fetch_loop(
    client: Client,
    topic: String,
    partition: u32,
    mut offset: u64,
    plugin: Option<PluginCall>,
    tx: mpsc::Sender<anyhow::Result<Chunk>>,
) {
    let options = FetchOptions::default()
        .max_wait(FETCH_WAIT)
        .min_bytes(1)
        .max_bytes(4 * 1024 * 1024)
        .plugin(plugin);
    loop {
        match client.fetch(&topic, partition, offset, &options).await {
            Ok(fetched) => {
                offset = fetched.next_offset;
                if !fetched.records.is_empty()
                    && tx.send(Ok((partition, fetched.records))).await.is_err()
                {
                    return;
                }
            }
            Err(err) if err.is_retriable() => tokio::time::sleep(RETRY_PAUSE).await,
            Err(err) => {
                let hint = match err.code() {
                    Some(ErrorCode::OffsetOutOfRange) => " (retention may have deleted it)",
                    _ => "",
                };
                let _ = tx
                    .send(Err(anyhow::Error::new(err).context(format!(
                        "partition {partition} at offset {offset}{hint}"
                    ))))
                    .await;
                return;
            }
        }
    }
}

fn text(bytes: &Option<bytes::Bytes>) -> serde_json::Value {
    match bytes {
        Some(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        None => serde_json::Value::Null,
    }
}

fn print(
    out: &mut impl Write,
    format: Format,
    topic: &str,
    partition: u32,
    record: &DecodedRecord,
) -> std::io::Result<()> {
    match format {
        Format::Value => {
            if let Some(value) = &record.value {
                out.write_all(value)?;
            }
            out.write_all(b"\n")
        }
        Format::Json => {
            let headers: serde_json::Map<String, serde_json::Value> = record
                .headers
                .iter()
                .map(|h| (h.key.clone(), text(&h.value)))
                .collect();
            let line = serde_json::json!({
                "topic": topic,
                "partition": partition,
                "offset": record.offset,
                "timestamp": record.timestamp,
                "key": text(&record.key),
                "value": text(&record.value),
                "headers": headers,
            });
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")
        }
    }
}
