//! `quiver`: the broker and its command-line client in one binary.
//!
//! Every failure prints one line on stderr and exits non-zero; nothing prints a
//! backtrace to a user. The names and defaults here are a public contract (CLI.md).

mod bench;
mod ceiling;
mod cluster;
mod connect;
mod consume;
mod group;
mod plugin;
mod plugin_test;
mod produce;
mod scaffold;
mod security;
mod serve;
mod topic;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "quiver",
    version,
    about = "Quiver: a stream platform over QUIC",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (single node on embedded defaults when given no options).
    Serve(serve::ServeArgs),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce one record per input line.
    Produce(produce::ProduceArgs),
    /// Consume records and print them.
    Consume(consume::ConsumeArgs),
    /// List, describe and reset consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Cluster status: nodes, controller leader, under-replicated partitions.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Upload, list, attach, detach and test WebAssembly plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Load a broker and report throughput and latency.
    Bench(bench::BenchArgs),
    /// Client certificates signed by the cluster's CA (mTLS).
    #[command(subcommand)]
    Cert(security::CertCommand),
    /// Access control rules (authorization = "acl").
    #[command(subcommand)]
    Acl(security::AclCommand),
    /// SCRAM-SHA-256 users (authentication = "scram").
    #[command(subcommand)]
    User(security::UserCommand),
    /// Client quotas per principal: produce and fetch bytes per second, request time.
    #[command(subcommand)]
    Quota(security::QuotaCommand),
}

fn main() -> std::process::ExitCode {
    // Output piped into `head` and closed early ends the command quietly, as with any
    // Unix tool, instead of a panic on the write.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Topic(cmd) => topic::run(cmd).await,
            Command::Produce(args) => produce::run(args).await,
            Command::Consume(args) => consume::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Group(cmd) => group::run(cmd).await,
            Command::Plugin(cmd) => plugin::run(cmd).await,
            Command::Cluster(cmd) => cluster::run(cmd).await,
            Command::Cert(cmd) => security::run_cert(cmd),
            Command::Acl(cmd) => security::run_acl(cmd).await,
            Command::User(cmd) => security::run_user(cmd).await,
            Command::Quota(cmd) => security::run_quota(cmd).await,
        }
    });
    // Background tasks (the broker's flushers, a consumer's fetchers) end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
