//! `keyward groups`: groups and their links to Azure Managed HSM.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value, json};

use super::{read_text, seg};
use crate::cli::output::{Columns, Shown};
use crate::cli::{CliError, Ctx, local};

const GROUP: Columns = &[
    ("ID", "/group_id"),
    ("NAME", "/name"),
    ("EXTERNAL KMS", "/external_kms/kind"),
    ("CONNECTION", "/connection_status"),
    ("ROLE", "/role"),
];

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// The groups you have a role in; linked ones name their external key manager.
    #[command(after_help = "Example:\n  keyward groups list -o json")]
    List,
    /// One group, with its link (secrets masked) and connection status.
    #[command(after_help = "Example:\n  keyward groups show 3f0c…")]
    Show { id: String },
    /// A new group.
    #[command(
        after_help = "Example:\n  keyward groups create --name payments --description 'Payment keys'"
    )]
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Link a group to Azure Managed HSM (the client secret is read from stdin).
    #[command(
        after_help = "Example:\n  printf %s \"$AZURE_CLIENT_SECRET\" | keyward groups link 3f0c… --tenant $TENANT \\\n    --client-id $CLIENT --subscription $SUB --instance https://myhsm.managedhsm.azure.net --client-secret-stdin"
    )]
    Link {
        id: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        client_id: String,
        #[arg(long)]
        subscription: String,
        /// The Managed HSM's URI (`keyward groups check` lists the subscription's).
        #[arg(long)]
        instance: Option<String>,
        /// Read the client secret from stdin.
        #[arg(long)]
        client_secret_stdin: bool,
        /// PEM of a CA to trust for Azure's endpoints instead of the public roots.
        #[arg(long)]
        ca_pem: Option<PathBuf>,
        /// Entra ID's endpoint, for sovereign clouds and private endpoints.
        #[arg(long)]
        identity_endpoint: Option<String>,
        /// Azure Resource Manager's endpoint.
        #[arg(long)]
        management_endpoint: Option<String>,
        /// The DNS suffix of Managed HSM instances (`managedhsm.azure.net`).
        #[arg(long)]
        instance_suffix: Option<String>,
        /// Accept certificates that do not name the host (only with a private CA).
        #[arg(long)]
        no_validate_hostname: bool,
    },
    /// Test a group's connection: Connected, or Not Connected with the reason.
    #[command(after_help = "Example:\n  keyward groups check 3f0c…")]
    Check { id: String },
    /// Sync the group's keys from its HSM, with live progress.
    #[command(after_help = "Example:\n  keyward groups sync 3f0c…")]
    Sync {
        id: String,
        /// Start it and print the scan without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete an empty group.
    #[command(after_help = "Example:\n  keyward groups delete 3f0c…")]
    Delete { id: String },
}

impl GroupCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<Shown, CliError> {
        match self {
            GroupCmd::List => Ok(Shown::new(ctx.get("/sys/v1/groups").await?, GROUP)),
            GroupCmd::Show { id } => Ok(Shown::object(
                ctx.get(&format!("/sys/v1/groups/{}", seg(&id))).await?,
            )),
            GroupCmd::Create { name, description } => Ok(Shown::object(
                ctx.post(
                    "/sys/v1/groups",
                    json!({"name": name, "description": description}),
                )
                .await?,
            )),
            GroupCmd::Link {
                id,
                tenant,
                client_id,
                subscription,
                instance,
                client_secret_stdin,
                ca_pem,
                identity_endpoint,
                management_endpoint,
                instance_suffix,
                no_validate_hostname,
            } => {
                let secret = if client_secret_stdin {
                    Some(super::read_stdin_line()?)
                } else {
                    None
                };
                let mut link = json!({
                    "kind": "AzureManagedHsm",
                    "tenant_id": tenant,
                    "client_id": client_id,
                    "client_secret": secret,
                    "subscription_id": subscription,
                    "instance": instance,
                });
                if identity_endpoint.is_some()
                    || management_endpoint.is_some()
                    || instance_suffix.is_some()
                {
                    link["endpoints"] = json!({"identity": identity_endpoint,
                        "management": management_endpoint, "instance_suffix": instance_suffix});
                }
                let ca = ca_pem.map(|p| read_text(&p)).transpose()?;
                if ca.is_some() || no_validate_hostname {
                    link["tls"] = json!({"ca_pem": ca, "validate_hostname": !no_validate_hostname});
                }
                Ok(Shown::object(
                    ctx.patch(
                        &format!("/sys/v1/groups/{}", seg(&id)),
                        json!({"external_kms": link}),
                    )
                    .await?,
                ))
            }
            GroupCmd::Check { id } => {
                let status = ctx
                    .post(&format!("/sys/v1/groups/{}/hmg/check", seg(&id)), json!({}))
                    .await?;
                Ok(Shown::object(status))
            }
            GroupCmd::Sync { id, no_wait } => sync(ctx, &id, no_wait).await,
            GroupCmd::Delete { id } => {
                ctx.delete(&format!("/sys/v1/groups/{}", seg(&id))).await?;
                Ok(Shown::object(json!({"group_id": id, "deleted": true})))
            }
        }
    }
}

fn counter(scan: &Value, name: &str) -> i64 {
    scan["progress"][name].as_i64().unwrap_or(0)
}

/// Starts a sync and follows its progress until it ends.
async fn sync(ctx: &Ctx, id: &str, no_wait: bool) -> Result<Shown, CliError> {
    let base = format!("/sys/v1/groups/{}/hmg/scans", seg(id));
    let mut scan = ctx.post(&base, json!({})).await?;
    if no_wait {
        return Ok(Shown::object(scan));
    }
    let scan_id = scan["scan_id"]
        .as_str()
        .ok_or_else(|| local("the daemon's answer has no scan_id"))?
        .to_string();
    let bar = if ctx.progress_visible() {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} syncing: {msg}")
            .expect("a valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    while scan["status"] == "running" {
        bar.set_message(format!(
            "{} keys seen, {} added, {} failed",
            counter(&scan, "seen"),
            counter(&scan, "added"),
            counter(&scan, "failed")
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
        scan = ctx.get(&format!("{base}/{}", seg(&scan_id))).await?;
    }
    bar.finish_and_clear();
    if scan["scan_result"]["$type"] != "Success" {
        return Err(CliError::Failed {
            message: format!(
                "the sync failed: {}",
                scan["scan_result"]["message"]
                    .as_str()
                    .unwrap_or("see the record")
            ),
            record: scan,
        });
    }
    Ok(Shown::new(
        scan,
        &[
            ("SCAN", "/scan_id"),
            ("STATUS", "/status"),
            ("SEEN", "/progress/seen"),
            ("ADDED", "/progress/added"),
            ("FAILED", "/progress/failed"),
            ("FINISHED", "/finished_at"),
        ],
    ))
}
