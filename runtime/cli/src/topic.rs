//! `quiver topic create|list|describe|delete`.

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::connect::ConnectArgs;

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        #[arg(long, default_value_t = 1)]
        replication_factor: u16,
        /// Topic config as key=value (retention.ms, retention.bytes, segment.bytes,
        /// segment.ms, max.message.bytes); repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List topics.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show partitions, leader, replicas, ISR and high watermark.
    Describe {
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a topic and its data.
    Delete {
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// Splits `key=value` pairs, naming the bad one.
pub fn parse_pairs(pairs: &[String], flag: &str) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("{flag} `{pair}` is not KEY=VALUE"),
        })
        .collect()
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

pub async fn run(command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            connect,
        } => {
            let configs = parse_pairs(&configs, "--config")?;
            let client = connect.connect().await?;
            client
                .create_topic(&name, partitions, replication_factor, &configs)
                .await
                .with_context(|| format!("cannot create topic `{name}`"))?;
            println!("created topic {name} with {partitions} partition(s)");
        }
        TopicCommand::List { connect } => {
            let client = connect.connect().await?;
            for topic in client.list_topics().await.context("cannot list topics")? {
                println!("{}\t{} partition(s)", topic.name, topic.partitions.len());
            }
        }
        TopicCommand::Describe { name, connect } => {
            let client = connect.connect().await?;
            let topic = client
                .describe_topic(&name)
                .await
                .with_context(|| format!("cannot describe `{name}`"))?;
            println!("topic: {}", topic.name);
            let configs: Vec<String> = topic
                .configs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!(
                "configs: {}",
                if configs.is_empty() {
                    "(defaults)".to_owned()
                } else {
                    configs.join(" ")
                }
            );
            println!("PARTITION\tLEADER\tEPOCH\tREPLICAS\tISR\tLOG_START\tHIGH_WATERMARK\tLOG_END");
            for p in &topic.partitions {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    p.partition,
                    p.leader,
                    p.leader_epoch,
                    join(&p.replicas),
                    join(&p.isr),
                    p.log_start_offset,
                    p.high_watermark,
                    p.log_end_offset
                );
            }
        }
        TopicCommand::Delete { name, connect } => {
            let client = connect.connect().await?;
            client
                .delete_topic(&name)
                .await
                .with_context(|| format!("cannot delete topic `{name}`"))?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}
