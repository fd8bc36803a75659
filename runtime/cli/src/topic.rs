//! `quiver topic create|list|describe|delete|alter|add-partitions`.

use anyhow::{Context, bail};
use clap::Subcommand;
use quiver_sdk::{AlterConfigOp, NewTopic};

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
    /// Show configs, partitions, leader, replicas, ISR and high watermark.
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
    /// Change a topic's configs; every broker applies them to its partitions. Keys
    /// and values follow `topic create`; all changes apply or none.
    Alter {
        name: String,
        /// Topic configs to set, as key=value: several after one --config, or
        /// --config repeated.
        #[arg(
            long = "config",
            value_name = "KEY=VALUE",
            num_args = 1..,
            required_unless_present = "removed"
        )]
        configs: Vec<String>,
        /// Topic config to remove (back to the broker's default); repeatable.
        #[arg(long = "delete-config", value_name = "KEY")]
        removed: Vec<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Grow a topic to N partitions in total (never fewer): keyed records may map to
    /// other partitions afterwards.
    AddPartitions {
        name: String,
        /// The new total partition count, larger than today's.
        #[arg(long, value_name = "N")]
        partitions: u32,
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
            let admin = connect.admin().await?;
            admin
                .create_topic(NewTopic::new(&name, partitions, replication_factor).configs(configs))
                .await
                .with_context(|| format!("cannot create topic `{name}`"))?;
            println!("created topic {name} with {partitions} partition(s)");
        }
        TopicCommand::List { connect } => {
            let admin = connect.admin().await?;
            for topic in admin.list_topics().await.context("cannot list topics")? {
                println!("{}\t{} partition(s)", topic.name, topic.partitions.len());
            }
        }
        TopicCommand::Describe { name, connect } => {
            let admin = connect.admin().await?;
            let topic = admin
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
            let admin = connect.admin().await?;
            admin
                .delete_topic(&name)
                .await
                .with_context(|| format!("cannot delete topic `{name}`"))?;
            println!("deleted topic {name}");
        }
        TopicCommand::Alter {
            name,
            configs,
            removed,
            connect,
        } => {
            let mut ops: Vec<AlterConfigOp> = parse_pairs(&configs, "--config")?
                .into_iter()
                .map(|(k, v)| AlterConfigOp::set(k, v))
                .collect();
            ops.extend(removed.iter().map(AlterConfigOp::delete));
            let admin = connect.admin().await?;
            admin
                .alter_topic_configs(&name, &ops)
                .await
                .with_context(|| format!("cannot alter topic `{name}`"))?;
            let configs = admin
                .describe_topic_configs(&name)
                .await
                .with_context(|| format!("altered topic `{name}`, but cannot describe it"))?;
            let shown: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "altered topic {name}: configs {}",
                if shown.is_empty() {
                    "(defaults)".to_owned()
                } else {
                    shown.join(" ")
                }
            );
        }
        TopicCommand::AddPartitions {
            name,
            partitions,
            connect,
        } => {
            let admin = connect.admin().await?;
            admin
                .create_partitions(&name, partitions)
                .await
                .with_context(|| format!("cannot add partitions to topic `{name}`"))?;
            println!("topic {name} now has {partitions} partition(s)");
        }
    }
    Ok(())
}
