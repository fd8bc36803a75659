//! `quiver plugin upload|list|attach|detach|delete|test|init`.

use anyhow::Context;
use clap::Subcommand;
use quiver_sdk::{Attachment, OnError, PluginStage};

use crate::connect::ConnectArgs;
use crate::plugin_test::FormatChoice;
use crate::scaffold::{Language, ScaffoldKind};
use crate::topic::parse_pairs;

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
    /// Run a plugin locally, without a broker: records in (one per line), the
    /// records it keeps or makes out, in the same form.
    Test {
        /// The plugin: a WebAssembly module, binary (.wasm) or text (.wat).
        file: std::path::PathBuf,
        /// Read records (one per line) from this file instead of stdin.
        #[arg(long)]
        input: Option<std::path::PathBuf>,
        /// Parameter for the plugin's init, as key=value; repeatable.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// value: a line is a record's value. json: a line is a JSON object
        /// {"key":..,"value":..,"headers":{..},"timestamp":..} (all optional), and
        /// records are printed as JSON objects with their input record's offset.
        /// auto (default): json when the first line is such an object with a value,
        /// else value.
        #[arg(long, value_enum, default_value = "auto")]
        format: FormatChoice,
    },
    /// Write a new plugin project that builds and passes `quiver plugin test` as is.
    Init {
        /// The plugin's name: lowercase letters, digits and dashes, starting with a
        /// letter; also the directory written unless --dir says otherwise.
        name: String,
        /// What the plugin does with a batch.
        #[arg(long, value_enum)]
        kind: ScaffoldKind,
        /// The language of the project.
        #[arg(long, value_enum, default_value = "rust")]
        lang: Language,
        /// Write the project here instead of ./NAME (must not exist, or be empty).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// The guest SDK (a Quiver checkout's plugins/guest) a Rust project depends
        /// on [default: found above the project's directory, or the checkout this
        /// quiver was built from].
        #[arg(long, value_name = "PATH")]
        sdk: Option<std::path::PathBuf>,
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
            let admin = connect.admin().await?;
            let info = admin
                .upload_plugin(&name, module)
                .await
                .with_context(|| format!("cannot upload plugin `{name}`"))?;
            println!(
                "uploaded plugin {} version {} ({}, {} bytes)",
                info.name, info.version, info.kind, info.size
            );
        }
        PluginCommand::List { connect } => {
            let admin = connect.admin().await?;
            let (plugins, attachments) =
                admin.list_plugins().await.context("cannot list plugins")?;
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
            let admin = connect.admin().await?;
            admin
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
            let admin = connect.admin().await?;
            admin
                .detach_plugin(&topic, &name)
                .await
                .with_context(|| format!("cannot detach `{name}` from `{topic}`"))?;
            println!("detached {name} from {topic}");
        }
        PluginCommand::Delete { name, connect } => {
            let admin = connect.admin().await?;
            admin
                .delete_plugin(&name)
                .await
                .with_context(|| format!("cannot delete `{name}`"))?;
            println!("deleted {name}");
        }
        PluginCommand::Test {
            file,
            input,
            params,
            format,
        } => {
            let params = parse_pairs(&params, "--param")?;
            tokio::task::spawn_blocking(move || {
                crate::plugin_test::run(&file, input.as_deref(), &params, format)
            })
            .await
            .context("the plugin test task failed")??;
        }
        PluginCommand::Init {
            name,
            kind,
            lang,
            dir,
            sdk,
        } => {
            let dir = dir.unwrap_or_else(|| std::path::PathBuf::from(&name));
            let written = crate::scaffold::write(&name, kind, lang, &dir, sdk.as_deref())?;
            println!(
                "wrote a {kind} plugin in {lang} to {}: {}",
                dir.display(),
                written.join(", ")
            );
            println!("next: see {}", dir.join("README.md").display());
        }
    }
    Ok(())
}
