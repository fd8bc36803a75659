//! `quiver group list|describe|reset-offsets|delete`.

use anyhow::{Context, bail};
use clap::Subcommand;
use quiver_sdk::{ErrorCode, OffsetResetTarget, OffsetSpec};

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
    /// Delete a group: forget its committed offsets (the group must have no members).
    Delete {
        group: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

pub async fn run(command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::List { connect } => {
            let admin = connect.admin().await?;
            let groups = admin.list_groups().await.context("cannot list groups")?;
            println!("GROUP\tMEMBERS");
            for g in groups {
                println!("{}\t{}", g.group, g.members);
            }
        }
        GroupCommand::Describe { group, connect } => {
            let admin = connect.admin().await?;
            let described = admin
                .describe_group(&group)
                .await
                .with_context(|| format!("cannot describe group `{group}`"))?;
            let committed = admin
                .list_group_offsets(&group)
                .await
                .with_context(|| format!("cannot read the offsets of `{group}`"))?;
            println!(
                "group: {group} (epoch {}, {} member(s))",
                described.epoch,
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
            for c in committed {
                rows.insert((c.topic.to_string(), c.partition), Some(c.offset));
            }
            println!("TOPIC\tPARTITION\tCOMMITTED\tLOG_END\tLAG\tOWNER");
            for ((topic, partition), committed) in rows {
                let end = admin
                    .client()
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
            let target = match (to_earliest, to_latest, to_offset) {
                (_, _, Some(n)) => OffsetResetTarget::Offset(n),
                (true, _, _) => OffsetResetTarget::Earliest,
                (_, true, _) => OffsetResetTarget::Latest,
                _ => bail!("say where to: --to-earliest, --to-latest or --to-offset N"),
            };
            let admin = connect.admin().await?;
            let offsets = match admin.reset_group_offsets(&group, &topic, target).await {
                Ok(offsets) => offsets,
                Err(err) if err.code() == Some(ErrorCode::GroupNotEmpty) => {
                    bail!("group `{group}` has active members: stop its consumers first");
                }
                Err(err) => {
                    return Err(anyhow::Error::new(err)
                        .context(format!("cannot reset offsets of `{group}` on `{topic}`")));
                }
            };
            println!("TOPIC\tPARTITION\tNEW_OFFSET");
            for o in offsets {
                println!("{}\t{}\t{}", o.topic, o.partition, o.offset);
            }
        }
        GroupCommand::Delete { group, connect } => {
            let admin = connect.admin().await?;
            match admin.delete_group(&group).await {
                Ok(()) => println!("deleted group {group}"),
                Err(err) if err.code() == Some(ErrorCode::GroupNotEmpty) => {
                    bail!("group `{group}` has active members: stop its consumers first");
                }
                Err(err) => {
                    return Err(
                        anyhow::Error::new(err).context(format!("cannot delete group `{group}`"))
                    );
                }
            }
        }
    }
    Ok(())
}
