//! `quiver plugin upload|list|attach|detach|test`.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Subcommand;
use quiver_plugin_host::{Limits, Outcome, PluginEngine};
use quiver_sdk::{Attachment, DecodedRecord, OnError, PluginStage};

use crate::connect::ConnectArgs;
use crate::topic::parse_pairs;

/// Input lines `plugin test` passes to the plugin in one call, as one batch would.
const TEST_BATCH_RECORDS: usize = 10_000;

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Register a WebAssembly module under a name (replaces the name's version).
    Upload {
        name: String,
        file: std::path::PathBuf,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List registered plugins and their attachments.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Attach a registered plugin to a topic's produce or fetch stage.
    Attach {
        topic: String,
        name: String,
        /// produce: rewrite batches before they are stored; fetch: rewrite what
        /// consumers receive, leaving the log unchanged.
        #[arg(long)]
        stage: PluginStage,
        /// Parameter for the plugin's init, as key=value; repeatable.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// What a failure does to the batch: fail | skip | pass | dead-letter:TOPIC
        #[arg(long, default_value = "fail")]
        on_error: OnError,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Detach a plugin from a topic.
    Detach {
        topic: String,
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a plugin and its stored versions (refused while a topic has it attached).
    Delete {
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Run a plugin locally, without a broker: input lines in, surviving or mapped
    /// lines out.
    Test {
        file: std::path::PathBuf,
        /// Read records (one per line) from this file instead of stdin.
        #[arg(long)]
        input: Option<std::path::PathBuf>,
        /// Parameter for the plugin's init, as key=value; repeatable.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
}

pub async fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::Upload {
            name,
            file,
            connect,
        } => {
            let module =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let client = connect.connect().await?;
            let info = client
                .upload_plugin(&name, module)
                .await
                .with_context(|| format!("cannot upload plugin `{name}`"))?;
            println!(
                "uploaded plugin {} version {} ({}, {} bytes)",
                info.name, info.version, info.kind, info.size
            );
        }
        PluginCommand::List { connect } => {
            let client = connect.connect().await?;
            let (plugins, attachments) =
                client.list_plugins().await.context("cannot list plugins")?;
            println!("NAME\tKIND\tVERSION\tSIZE");
            for p in &plugins {
                println!("{}\t{}\t{}\t{}", p.name, p.kind, p.version, p.size);
            }
            if !attachments.is_empty() {
                println!();
                println!("TOPIC\tSTAGE\tPLUGIN\tON_ERROR\tPARAMS");
                for a in &attachments {
                    let params: Vec<String> =
                        a.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        a.topic,
                        a.stage,
                        a.plugin,
                        a.on_error,
                        params.join(",")
                    );
                }
            }
        }
        PluginCommand::Attach {
            topic,
            name,
            stage,
            params,
            on_error,
            connect,
        } => {
            let params = parse_pairs(&params, "--param")?;
            let client = connect.connect().await?;
            client
                .attach_plugin(Attachment {
                    topic: topic.clone(),
                    plugin: name.clone(),
                    stage,
                    params,
                    on_error: on_error.clone(),
                })
                .await
                .with_context(|| format!("cannot attach `{name}` to `{topic}`"))?;
            println!("attached {name} to {topic} at the {stage} stage (on error: {on_error})");
        }
        PluginCommand::Detach {
            topic,
            name,
            connect,
        } => {
            let client = connect.connect().await?;
            client
                .detach_plugin(&topic, &name)
                .await
                .with_context(|| format!("cannot detach `{name}` from `{topic}`"))?;
            println!("detached {name} from {topic}");
        }
        PluginCommand::Delete { name, connect } => {
            let client = connect.connect().await?;
            client
                .delete_plugin(&name)
                .await
                .with_context(|| format!("cannot delete `{name}`"))?;
            println!("deleted {name}");
        }
        PluginCommand::Test {
            file,
            input,
            params,
        } => {
            let params = parse_pairs(&params, "--param")?;
            tokio::task::spawn_blocking(move || test_locally(&file, input.as_deref(), &params))
                .await
                .context("the plugin test task failed")??;
        }
    }
    Ok(())
}

/// Runs a plugin over input lines under the broker's default limits, printing what
/// comes out: the kept lines of a filter, the values of a map's records.
fn test_locally(
    file: &std::path::Path,
    input: Option<&std::path::Path>,
    params: &[(String, String)],
) -> anyhow::Result<()> {
    let module = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let engine = PluginEngine::new(Limits::default())?;
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let plugin = engine
        .compile(&name, &module)
        .with_context(|| format!("{} is not a usable plugin", file.display()))?;
    let mut instance = engine.instantiate(&plugin, params)?;
    let reader: Box<dyn BufRead> = match input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut batch = Vec::with_capacity(TEST_BATCH_RECORDS);
    let mut offset = 0u64;
    let mut lines = reader.lines();
    loop {
        let line = lines.next().transpose().context("cannot read input")?;
        let done = line.is_none();
        if let Some(line) = line {
            batch.push(DecodedRecord {
                offset,
                timestamp,
                key: None,
                value: Some(Bytes::from(line)),
                headers: Vec::new(),
            });
            offset += 1;
        }
        if batch.len() == TEST_BATCH_RECORDS || (done && !batch.is_empty()) {
            match instance.run(&batch) {
                Ok(Outcome::Keep(keep)) => {
                    for (record, kept) in batch.iter().zip(keep) {
                        if kept {
                            write_value(&mut out, record.value.as_deref())?;
                        }
                    }
                }
                Ok(Outcome::Records(records)) => {
                    for record in records {
                        write_value(&mut out, record.value.as_deref())?;
                    }
                }
                Err(err) => bail!(
                    "plugin failed on records {}..{offset}: {err}",
                    offset - batch.len() as u64
                ),
            }
            batch.clear();
        }
        if done {
            break;
        }
    }
    out.flush()?;
    Ok(())
}

fn write_value(out: &mut impl Write, value: Option<&[u8]>) -> std::io::Result<()> {
    out.write_all(value.unwrap_or_default())?;
    out.write_all(b"\n")
}
