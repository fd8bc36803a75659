//! `quiver group list|describe|reset-offsets`.

use anyhow::{Context, bail};
use clap::Subcommand;
use quiver_sdk::{ErrorCode, OffsetSpec};
use quiver_wire::group::{
    CommittedOffset, DescribeGroupRequest, ListGroupsRequest, NO_MEMBER_EPOCH, OffsetCommitRequest,
    OffsetFetchRequest,
};

use crate::connect::ConnectArgs;

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List groups with members or committed offsets.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show members, assignments, committed offsets and lag.
    Describe {
        group: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Move a group's committed offsets for a topic (the group must have no members).
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        #[arg(long, group = "target")]
        to_earliest: bool,
        #[arg(long, group = "target")]
        to_latest: bool,
        #[arg(long, group = "target", value_name = "N")]
        to_offset: Option<u64>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

pub async fn run(command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::List { connect } => {
            let client = connect.connect().await?;
            let groups = client
                .call(&ListGroupsRequest)
                .await
                .context("cannot list groups")?;
            println!("GROUP\tMEMBERS");
            for (group, members) in groups.groups {
                println!("{group}\t{members}");
            }
        }
        GroupCommand::Describe { group, connect } => {
            let client = connect.connect().await?;
            let described = client
                .call(&DescribeGroupRequest {
                    group: group.clone(),
                })
                .await
                .with_context(|| format!("cannot describe group `{group}`"))?;
            let committed = client
                .call(&OffsetFetchRequest {
                    group: group.clone(),
                    partitions: None,
                })
                .await
                .with_context(|| format!("cannot read the offsets of `{group}`"))?;
            println!(
                "group: {group} (epoch {}, {} member(s))",
                described.group_epoch,
                described.members.len()
            );
            println!("MEMBER\tEPOCH\tASSIGNMENT");
            let mut owner = std::collections::BTreeMap::new();
            for m in &described.members {
                let parts: Vec<String> = m
                    .assignment
                    .iter()
                    .flat_map(|tp| {
                        tp.partitions
                            .iter()
                            .map(move |p| format!("{}/{p}", tp.topic))
                    })
                    .collect();
                for tp in &m.assignment {
                    for p in &tp.partitions {
                        owner.insert((tp.topic.clone(), *p), m.member_id.clone());
                    }
                }
                println!("{}\t{}\t{}", m.member_id, m.member_epoch, parts.join(","));
            }
            let mut rows: std::collections::BTreeMap<(String, u32), Option<u64>> =
                owner.keys().map(|k| (k.clone(), None)).collect();
            for (topic, partition, c) in committed.offsets {
                rows.insert((topic, partition), c.map(|c| c.offset));
            }
            println!("TOPIC\tPARTITION\tCOMMITTED\tLOG_END\tLAG\tOWNER");
            for ((topic, partition), committed) in rows {
                let end = client
                    .list_offsets(&topic, partition, OffsetSpec::Latest)
                    .await
                    .ok()
                    .and_then(|a| a.offset);
                let lag = match (committed, end) {
                    (Some(c), Some(e)) => e.saturating_sub(c).to_string(),
                    (None, Some(_)) => "-".to_owned(),
                    _ => "?".to_owned(),
                };
                let show = |o: Option<u64>| o.map_or("-".to_owned(), |v| v.to_string());
                let member = owner
                    .get(&(topic.clone(), partition))
                    .cloned()
                    .unwrap_or_else(|| "-".to_owned());
                println!(
                    "{topic}\t{partition}\t{}\t{}\t{lag}\t{member}",
                    show(committed),
                    show(end)
                );
            }
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            connect,
        } => {
            if !(to_earliest || to_latest || to_offset.is_some()) {
                bail!("say where to: --to-earliest, --to-latest or --to-offset N");
            }
            let client = connect.connect().await?;
            let info = client
                .describe_topic(&topic)
                .await
                .with_context(|| format!("cannot reset offsets on `{topic}`"))?;
            let mut offsets = Vec::new();
            for p in &info.partitions {
                let offset = match to_offset {
                    Some(n) => {
                        if n < p.log_start_offset || n > p.high_watermark {
                            bail!(
                                "offset {n} is out of range for partition {}: stored offsets are {}..{}",
                                p.partition,
                                p.log_start_offset,
                                p.high_watermark
                            );
                        }
                        n
                    }
                    None if to_earliest => p.log_start_offset,
                    None => p.high_watermark,
                };
                offsets.push(CommittedOffset {
                    topic: topic.clone(),
                    partition: p.partition,
                    offset,
                    metadata: String::new(),
                });
            }
            let request = OffsetCommitRequest {
                group: group.clone(),
                member_id: String::new(),
                member_epoch: NO_MEMBER_EPOCH,
                offsets: offsets.clone(),
            };
            match client.call(&request).await {
                Ok(_) => {}
                Err(err) if err.code() == Some(ErrorCode::GroupNotEmpty) => {
                    bail!("group `{group}` has active members: stop its consumers first");
                }
                Err(err) => {
                    return Err(anyhow::Error::new(err)
                        .context(format!("cannot reset offsets of `{group}`")));
                }
            }
            println!("TOPIC\tPARTITION\tNEW_OFFSET");
            for o in offsets {
                println!("{}\t{}\t{}", o.topic, o.partition, o.offset);
            }
        }
    }
    Ok(())
}
