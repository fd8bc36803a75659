//! `quiver cert issue` and `quiver acl add|remove|list`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use quiver_wire::acl::{
    AclBinding, AclDescribeRequest, CLUSTER_RESOURCE, Operation, PatternType, Permission,
    ResourceType,
};

use crate::connect::ConnectArgs;

#[derive(Subcommand)]
pub enum CertCommand {
    /// Sign a client certificate for User:NAME with the CA in the data directory
    /// (run on a broker host); writes NAME.pem and NAME.key.
    Issue {
        name: String,
        /// Where to write the certificate and key.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Days the certificate stays valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// The broker's data directory, whose tls/ca.pem and tls/ca.key sign it.
        #[arg(long, default_value = quiver_broker::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

pub fn run_cert(cmd: CertCommand) -> anyhow::Result<()> {
    match cmd {
        CertCommand::Issue {
            name,
            out,
            days,
            data_dir,
        } => {
            let (cert, key) = quiver_broker::tls::issue_client_certificate(&data_dir, &name, days)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let file_name: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let cert_path = out.join(format!("{file_name}.pem"));
            let key_path = out.join(format!("{file_name}.key"));
            quiver_broker::tls::write_private(&key_path, key.as_bytes())?;
            std::fs::write(&cert_path, cert)
                .with_context(|| format!("cannot write {}", cert_path.display()))?;
            println!(
                "User:{name}: certificate {} and key {} (valid {days} days)",
                cert_path.display(),
                key_path.display()
            );
            Ok(())
        }
    }
}

/// The resource a rule speaks of: exactly one of these flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ResourceArgs {
    #[arg(long)]
    topic: Option<String>,
    #[arg(long)]
    topic_prefix: Option<String>,
    #[arg(long)]
    group: Option<String>,
    #[arg(long)]
    group_prefix: Option<String>,
    #[arg(long)]
    plugin: Option<String>,
    #[arg(long)]
    cluster: bool,
}

impl ResourceArgs {
    fn resource(&self) -> anyhow::Result<Option<(ResourceType, PatternType, String)>> {
        let mut given = Vec::new();
        let mut add = |value: &Option<String>, t, p| {
            if let Some(name) = value {
                given.push((t, p, name.clone()));
            }
        };
        add(&self.topic, ResourceType::Topic, PatternType::Literal);
        add(
            &self.topic_prefix,
            ResourceType::Topic,
            PatternType::Prefixed,
        );
        add(&self.group, ResourceType::Group, PatternType::Literal);
        add(
            &self.group_prefix,
            ResourceType::Group,
            PatternType::Prefixed,
        );
        add(&self.plugin, ResourceType::Plugin, PatternType::Literal);
        if self.cluster {
            given.push((
                ResourceType::Cluster,
                PatternType::Literal,
                CLUSTER_RESOURCE.to_owned(),
            ));
        }
        match given.len() {
            0 => Ok(None),
            1 => Ok(given.pop()),
            _ => bail!(
                "name one resource: --topic, --topic-prefix, --group, --group-prefix, --plugin or --cluster"
            ),
        }
    }
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a SCRAM-SHA-256 user, or change its password. The password comes from
    /// --new-password-file, else QUIVER_NEW_PASSWORD, else QUIVER_PASSWORD when this
    /// command does not itself log in with --user, else one line read from stdin.
    Create {
        name: String,
        /// File whose first line is the new user's password.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
        /// PBKDF2 iterations (4096 to 100000).
        #[arg(long, default_value_t = quiver_wire::scram::SCRAM_ITERATIONS_DEFAULT)]
        iterations: u32,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a SCRAM user.
    Delete {
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List SCRAM users.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// The new user's password for `user create`.
fn new_password(file: Option<&std::path::Path>, logs_in: bool) -> anyhow::Result<String> {
    if let Some(path) = file {
        return crate::connect::password(Some(path), "the new user's password");
    }
    for var in ["QUIVER_NEW_PASSWORD", "QUIVER_PASSWORD"] {
        if var == "QUIVER_PASSWORD" && logs_in {
            continue;
        }
        if let Ok(text) = std::env::var(var) {
            if text.is_empty() {
                bail!("{var} is empty");
            }
            return Ok(text);
        }
    }
    eprint!("password for the new user: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

pub async fn run_user(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create {
            name,
            new_password_file,
            iterations,
            connect,
        } => {
            let password = new_password(new_password_file.as_deref(), connect.user.is_some())?;
            let admin = connect.admin().await?;
            admin
                .upsert_user(&name, &password, iterations)
                .await
                .with_context(|| format!("cannot create user `{name}`"))?;
            println!("user `{name}` stored (SCRAM-SHA-256, {iterations} iterations)");
        }
        UserCommand::Delete { name, connect } => {
            let admin = connect.admin().await?;
            admin
                .delete_user(&name)
                .await
                .with_context(|| format!("cannot delete user `{name}`"))?;
            println!("user `{name}` deleted");
        }
        UserCommand::List { connect } => {
            let admin = connect.admin().await?;
            let users = admin.list_users().await.context("cannot list users")?;
            println!("USER\tITERATIONS");
            for (name, iterations) in users {
                println!("{name}\t{iterations}");
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum QuotaCommand {
    /// Set a principal's quota (User:* for every principal without one); limits not
    /// given are unlimited, and a quota without limits is removed.
    Set {
        #[arg(long)]
        principal: String,
        #[arg(long)]
        produce_bytes_per_sec: Option<u64>,
        #[arg(long)]
        fetch_bytes_per_sec: Option<u64>,
        /// Percent of one core's time handling the principal's requests.
        #[arg(long)]
        request_percent: Option<u64>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List quotas.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

pub async fn run_quota(cmd: QuotaCommand) -> anyhow::Result<()> {
    match cmd {
        QuotaCommand::Set {
            principal,
            produce_bytes_per_sec,
            fetch_bytes_per_sec,
            request_percent,
            connect,
        } => {
            let quota = quiver_wire::quota::Quota {
                produce_bytes_per_sec,
                fetch_bytes_per_sec,
                request_percent,
            };
            let admin = connect.admin().await?;
            admin
                .set_quota(&principal, quota)
                .await
                .with_context(|| format!("cannot set the quota of {principal}"))?;
            if quota.is_unlimited() {
                println!("{principal}: no quota");
            } else {
                println!("{principal}: quota set");
            }
        }
        QuotaCommand::List { connect } => {
            let admin = connect.admin().await?;
            let quotas = admin.list_quotas().await.context("cannot list quotas")?;
            let show = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            println!("PRINCIPAL\tPRODUCE_BYTES_PER_SEC\tFETCH_BYTES_PER_SEC\tREQUEST_PERCENT");
            for (principal, q) in quotas {
                println!(
                    "{principal}\t{}\t{}\t{}",
                    show(q.produce_bytes_per_sec),
                    show(q.fetch_bytes_per_sec),
                    show(q.request_percent)
                );
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum AclCommand {
    /// Add rules: PRINCIPAL may (or, with --deny, may not) do OP on RESOURCE.
    Add {
        #[command(flatten)]
        rule: RuleArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Remove rules, each matched exactly.
    Remove {
        #[command(flatten)]
        rule: RuleArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List rules, optionally one principal's or one resource's.
    List {
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        resource: ResourceArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct RuleArgs {
    /// User:NAME, or User:* for every user.
    #[arg(long)]
    principal: String,
    #[command(flatten)]
    resource: ResourceArgs,
    /// read | write | create | delete | alter | describe | idempotent-write | all;
    /// several separated by commas.
    #[arg(long, value_delimiter = ',', required = true)]
    operation: Vec<Operation>,
    /// A deny rule (wins over any allow).
    #[arg(long)]
    deny: bool,
}

impl RuleArgs {
    fn bindings(&self) -> anyhow::Result<Vec<AclBinding>> {
        let Some((resource_type, pattern, resource_name)) = self.resource.resource()? else {
            bail!(
                "name the resource: --topic, --topic-prefix, --group, --group-prefix, --plugin or --cluster"
            );
        };
        let permission = if self.deny {
            Permission::Deny
        } else {
            Permission::Allow
        };
        let bindings: Vec<AclBinding> = self
            .operation
            .iter()
            .map(|operation| AclBinding {
                principal: self.principal.clone(),
                resource_type,
                pattern,
                resource_name: resource_name.clone(),
                operation: *operation,
                permission,
            })
            .collect();
        for binding in &bindings {
            binding.validate().with_context(|| binding.to_string())?;
        }
        Ok(bindings)
    }
}

pub async fn run_acl(cmd: AclCommand) -> anyhow::Result<()> {
    match cmd {
        AclCommand::Add { rule, connect } => {
            let bindings = rule.bindings()?;
            let admin = connect.admin().await?;
            admin
                .create_acls(bindings.clone())
                .await
                .context("cannot add the rules")?;
            for b in bindings {
                println!("added: {b}");
            }
        }
        AclCommand::Remove { rule, connect } => {
            let bindings = rule.bindings()?;
            let admin = connect.admin().await?;
            let removed = admin
                .delete_acls(bindings)
                .await
                .context("cannot remove the rules")?;
            println!("removed {removed} rule(s)");
        }
        AclCommand::List {
            principal,
            resource,
            connect,
        } => {
            let resource = resource.resource()?;
            let filter = AclDescribeRequest {
                principal,
                resource_type: resource.as_ref().map(|r| r.0),
                resource_name: resource.map(|r| r.2),
            };
            let admin = connect.admin().await?;
            let bindings = admin
                .describe_acls(filter)
                .await
                .context("cannot list the rules")?;
            println!("PRINCIPAL\tPERMISSION\tOPERATION\tRESOURCE\tPATTERN\tNAME");
            for b in bindings {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    b.principal,
                    b.permission,
                    b.operation,
                    b.resource_type,
                    b.pattern,
                    b.resource_name
                );
            }
        }
    }
    Ok(())
}
