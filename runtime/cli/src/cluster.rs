//! `quiver cluster status` and `quiver cluster init`.

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
    /// Create the cluster's CA in DIR/tls (if missing) and print a join token: the
    /// CA's fingerprint and a join secret. Other nodes start with
    /// `quiver serve ... --join-token TOKEN` and get their certificates from a seed.
    /// Running it again prints a token for the same CA.
    Init {
        /// Data directory of the node that keeps the cluster's CA key (start that node
        /// on the same directory)
        #[arg(long, default_value = quiver_broker::config::DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
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
            if !status.unreachable.is_empty() {
                println!("unreachable peers:");
                for peer in &status.unreachable {
                    println!("  node {} at {}: {}", peer.id, peer.address, peer.reason);
                }
            }
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
        ClusterCommand::Init { data_dir } => {
            let (token, created) =
                quiver_broker::join::init_cluster(&data_dir).with_context(|| {
                    format!("cannot initialise a cluster in {}", data_dir.display())
                })?;
            let ca = data_dir.join("tls").join("ca.pem");
            if created {
                eprintln!("created the cluster CA: {}", ca.display());
            } else {
                eprintln!("the cluster CA exists already: {}", ca.display());
            }
            eprintln!(
                "start the other nodes with --join-token (keep it secret: it admits a node to the cluster):"
            );
            println!("{token}");
        }
    }
    Ok(())
}
