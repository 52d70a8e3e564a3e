//! `strata acl`: access control bindings, as Kafka's `kafka-acls` makes
//! them (checked by brokers with `authorization.enabled`).

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use strata_client::{AclBinding, AclFilter, Admin};

use crate::Connection;

/// Which resource a command is about: one of --topic, --group, --cluster.
#[derive(Args)]
#[group(multiple = false)]
pub struct Resource {
    /// A topic (`*`: every topic; with --prefixed, every topic whose name
    /// starts with it).
    #[arg(long)]
    topic: Option<String>,
    /// A consumer group (`*` and --prefixed as for --topic).
    #[arg(long)]
    group: Option<String>,
    /// The cluster (creating topics, reassigning, removing brokers,
    /// managing bindings).
    #[arg(long)]
    cluster: bool,
}

impl Resource {
    /// (type, name), if one was given.
    fn get(&self) -> Option<(&'static str, String)> {
        match (&self.topic, &self.group, self.cluster) {
            (Some(topic), _, _) => Some(("topic", topic.clone())),
            (_, Some(group), _) => Some(("group", group.clone())),
            (_, _, true) => Some(("cluster", "kafka-cluster".to_string())),
            _ => None,
        }
    }
}

#[derive(Subcommand)]
pub enum AclCommand {
    /// Adds bindings: PRINCIPAL may (or, with --deny, may not) do each
    /// --operation to the resource.
    Add {
        /// Who: User:NAME (the CN of the client's certificate), User:* for
        /// everyone.
        #[arg(long)]
        principal: String,
        /// all, read, write, create, delete, alter or describe (repeat for
        /// several).
        #[arg(long = "operation", required = true)]
        operations: Vec<String>,
        #[command(flatten)]
        resource: Resource,
        /// The name is a prefix.
        #[arg(long)]
        prefixed: bool,
        /// Deny instead of allow (a deny wins over any allow).
        #[arg(long)]
        deny: bool,
    },
    /// Lists bindings, all or those of a principal or a resource.
    List {
        /// Only this principal's.
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        resource: Resource,
    },
    /// Removes the bindings that match every option given.
    Remove {
        /// Only this principal's.
        #[arg(long)]
        principal: Option<String>,
        /// Only those of this operation.
        #[arg(long)]
        operation: Option<String>,
        #[command(flatten)]
        resource: Resource,
        /// Only prefixed bindings.
        #[arg(long)]
        prefixed: bool,
        /// Only denying bindings.
        #[arg(long, conflicts_with = "allow")]
        deny: bool,
        /// Only allowing bindings.
        #[arg(long)]
        allow: bool,
        /// Needed to remove every binding (no option given).
        #[arg(long)]
        all: bool,
    },
}

fn line(acl: &AclBinding) -> String {
    let name = if acl.resource_type == "cluster" { String::new() } else { format!(" {}", acl.resource_name) };
    let pattern = if acl.pattern_type == "prefixed" { " (prefix)" } else { "" };
    format!("{}\t{} {}\t{}{name}{pattern}", acl.principal, acl.permission, acl.operation, acl.resource_type)
}

pub async fn acl(connection: &Connection, command: AclCommand) -> Result<()> {
    let admin = Admin::new(&connection.client()?);
    match command {
        AclCommand::Add { principal, operations, resource, prefixed, deny } => {
            let Some((resource_type, name)) = resource.get() else {
                bail!("name the resource: --topic, --group or --cluster");
            };
            let acls: Vec<AclBinding> = operations
                .iter()
                .map(|op| {
                    let acl = AclBinding::allow(&principal, op, resource_type, &name);
                    let acl = if prefixed { acl.prefixed() } else { acl };
                    if deny { acl.deny() } else { acl }
                })
                .collect();
            admin.create_acls(acls.clone()).await?;
            for acl in &acls {
                outln!("Added\t{}", line(acl));
            }
        }
        AclCommand::List { principal, resource } => {
            let (resource_type, resource_name) = resource.get().unzip();
            let filter = AclFilter {
                principal,
                resource_type: resource_type.map(str::to_string),
                resource_name,
                ..AclFilter::default()
            };
            for acl in admin.describe_acls(filter).await? {
                outln!("{}", line(&acl));
            }
        }
        AclCommand::Remove { principal, operation, resource, prefixed, deny, allow, all } => {
            let (resource_type, resource_name) = resource.get().unzip();
            let filter = AclFilter {
                principal,
                resource_type: resource_type.map(str::to_string),
                resource_name,
                pattern_type: prefixed.then(|| "prefixed".to_string()),
                operation,
                permission: match (deny, allow) {
                    (true, _) => Some("deny".to_string()),
                    (_, true) => Some("allow".to_string()),
                    _ => None,
                },
            };
            if filter == AclFilter::default() && !all {
                bail!("this would remove every binding: give --all to mean it");
            }
            let removed = admin.delete_acls(filter).await?;
            for acl in &removed {
                outln!("Removed\t{}", line(acl));
            }
            if removed.is_empty() {
                outln!("No binding matched.");
            }
        }
    }
    Ok(())
}
