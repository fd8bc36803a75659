//! `quiver cluster status`.

use anyhow::Context;
use clap::Subcommand;

use crate::connect::ConnectArgs;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Nodes, the controller leader, and partitions under-replicated.
    Status {
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

pub async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status { connect } => {
            let admin = connect.admin().await?;
            let status = admin
                .describe_cluster()
                .await
                .context("cannot read the cluster status")?;
            println!("answered by: node {} ({})", status.node_id, status.mode);
            match status.controller_leader {
                Some(id) => println!(
                    "controller leader: node {id} at {} (term {})",
                    status.controller_leader_address, status.term
                ),
                None if status.mode == "starting" => {
                    println!("controller leader: none yet (the broker is starting)")
                }
                None => println!("controller leader: none elected (term {})", status.term),
            }
            let voters: Vec<String> = status.voters.iter().map(u32::to_string).collect();
            println!("controller voters: {}", voters.join(","));
            println!(
                "under-replicated partitions: {}",
                status.under_replicated_partitions
            );
            println!("NODE\tADDRESS\tSTATE\tBROKER_EPOCH");
            for broker in &status.brokers {
                println!(
                    "{}\t{}\t{}\t{}",
                    broker.id,
                    broker.address,
                    if broker.fenced { "fenced" } else { "active" },
                    broker.broker_epoch
                );
            }
        }
    }
    Ok(())
}
