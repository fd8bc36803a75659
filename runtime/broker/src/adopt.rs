//! A data directory written before its broker ran a controller (a standalone broker of
//! an earlier build) keeps its topics, plugins and committed offsets: at the first
//! start of a single node, before the reconcile loop (which deletes local topics the
//! metadata lacks) runs, they are proposed to the new one-member quorum. A marker file
//! records that this was done, so a topic deleted later is not brought back.

use std::collections::BTreeSet;
use std::path::PathBuf;

use quiver_cluster::metadata::OffsetCommit;
use quiver_cluster::metadata::limits::OFFSETS_PER_COMMIT_MAX;
use quiver_cluster::{MetadataCommand, MetadataResponse, ProposeError};

use crate::cluster::ClusterMember;
use crate::state::BrokerState;

/// Written once everything was adopted.
fn marker(state: &BrokerState) -> PathBuf {
    state
        .config
        .data_dir
        .join("metadata")
        .join("adopted-by-controller")
}

/// Proposes `command`; a refusal named in `tolerated` counts as done (it is there
/// already).
async fn propose(
    member: &ClusterMember,
    command: MetadataCommand,
    tolerated: &[&str],
) -> Result<(), String> {
    let kind = command.kind();
    match member.controller.propose(command).await {
        Ok(MetadataResponse::Rejected(err)) | Err(ProposeError::Rejected(err))
            if tolerated.contains(&err.name()) =>
        {
            Ok(())
        }
        Ok(MetadataResponse::Rejected(err)) | Err(ProposeError::Rejected(err)) => {
            Err(format!("adopting ({kind}): the controller refused: {err}"))
        }
        Ok(_) => Ok(()),
        Err(err) => Err(format!("adopting ({kind}): {err}")),
    }
}

/// Adopts this data directory's topics, plugins and committed offsets into the
/// controller's metadata, once.
pub async fn adopt_unmanaged_state(
    state: &BrokerState,
    member: &ClusterMember,
) -> Result<(), String> {
    let marker = marker(state);
    if marker.exists() {
        return Ok(());
    }
    let metadata = member.controller.metadata();
    let mut adopted_topics = 0;
    for topic in state.topics.all() {
        if topic
            .name
            .starts_with(quiver_wire::topic::INTERNAL_TOPIC_PREFIX)
            || metadata.topic(&topic.name).is_some()
        {
            continue;
        }
        // Each partition's first epoch in the metadata is newer than any its log
        // holds, so this replica can lead it (a replica never leads an epoch older
        // than its own history).
        let mut leader_epochs = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let recovered = crate::worker::blocking(|| crate::replication::recovered(partition))
                .map_err(|e| format!("adopting {}/{}: {e}", topic.name, partition.index))?;
            leader_epochs.push(
                recovered
                    .epochs
                    .latest_epoch()
                    .map_or(0, |e| e.saturating_add(1)),
            );
        }
        let command = MetadataCommand::AdoptTopic {
            name: topic.name.to_string(),
            configs: topic.configs.clone(),
            leader_epochs,
        };
        propose(member, command, &["TOPIC_ALREADY_EXISTS"]).await?;
        adopted_topics += 1;
    }

    let (plugins, attachments) = state.plugins.registry.list();
    for info in &plugins {
        let registered = metadata.plugins().get(&info.name).map(|p| &p.version);
        if registered == Some(&info.version) {
            continue;
        }
        propose(member, crate::plugins::upload_command(info), &[]).await?;
    }
    // Each one the controller does not hold yet (an interrupted adoption proposed
    // some), in the registry's order.
    let held = member.controller.metadata();
    for a in &attachments {
        let known = held.attachments().iter().any(|m| {
            m.topic == a.topic
                && m.plugin == a.plugin
                && m.stage == a.stage.name()
                && m.params == a.params
                && m.on_error == a.on_error.to_string()
        });
        if !known {
            propose(member, crate::plugins::attach_command(a), &[]).await?;
        }
    }

    let metadata = member.controller.metadata();
    let mut adopted_offsets = 0;
    for group in state.offsets.groups() {
        let known: BTreeSet<(String, u32)> = metadata
            .group_offsets(&group)
            .map(|(key, _)| (key.topic.clone(), key.partition))
            .collect();
        let offsets: Vec<OffsetCommit> = state
            .offsets
            .of_group(&group)
            .into_iter()
            .filter(|o| metadata.partition(&o.topic, o.partition).is_some())
            .filter(|o| !known.contains(&(o.topic.clone(), o.partition)))
            .map(|o| OffsetCommit {
                topic: o.topic,
                partition: o.partition,
                offset: o.offset,
                metadata: o.metadata,
            })
            .collect();
        for chunk in offsets.chunks(OFFSETS_PER_COMMIT_MAX) {
            let command = MetadataCommand::CommitOffsets {
                // Their commit times are unknown: retention counts from adoption.
                now_ms: state.clock.now_ms_u64(),
                group: group.clone(),
                offsets: chunk.to_vec(),
            };
            propose(member, command, &[]).await?;
            adopted_offsets += chunk.len();
        }
    }

    let written = crate::worker::blocking(|| write_marker(&marker));
    written.map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    if adopted_topics + plugins.len() + adopted_offsets > 0 {
        tracing::info!(
            topics = adopted_topics,
            plugins = plugins.len(),
            offsets = adopted_offsets,
            "adopted the data directory's state into the controller's metadata"
        );
    }
    Ok(())
}

fn write_marker(path: &std::path::Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(path)?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
