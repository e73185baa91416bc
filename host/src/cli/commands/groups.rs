//! `keyward groups`: groups and their links to Azure Managed HSM.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value, json};

use super::{QuorumArgs, read_text, seg};
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
    /// Link a group to Azure Managed HSM, or change its link: only the settings given
    /// change (the client secret is read from stdin).
    #[command(
        after_help = "Examples:\n  printf %s \"$AZURE_CLIENT_SECRET\" | keyward groups link 3f0c… --tenant $TENANT \\\n    --client-id $CLIENT --subscription $SUB --instance https://myhsm.managedhsm.azure.net --client-secret-stdin\n  keyward groups link 3f0c… --tenant $NEW_TENANT\n  keyward groups link 3f0c… --public-roots"
    )]
    Link {
        id: String,
        #[command(flatten)]
        link: LinkArgs,
    },
    /// Test a connection: a saved group's link (with the settings given applied, not saved),
    /// or settings not saved anywhere yet. Connected, or Not Connected with the reason
    /// (exit code 1).
    #[command(
        after_help = "Examples:\n  keyward groups check 3f0c…\n  printf %s \"$AZURE_CLIENT_SECRET\" | keyward groups check --tenant $TENANT --client-id $CLIENT \\\n    --subscription $SUB --client-secret-stdin"
    )]
    Check {
        id: Option<String>,
        #[command(flatten)]
        link: LinkArgs,
    },
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
    /// Set the group's quorum approval policy: N of the reviewers approve the operations it
    /// protects. Once set, changing it needs its quorum (`keyward approvals request`).
    #[command(
        after_help = "Example:\n  keyward groups set-approval-policy 3f0c… --n 2 --user 1a2b… --user 3c4d… --user 5e6f… --protect ROTATE_SOBJECTS --protect EXPORT_SOBJECTS --crypto"
    )]
    SetApprovalPolicy {
        id: String,
        #[command(flatten)]
        quorum: QuorumArgs,
        /// What needs approval (DSM's names): ROTATE_SOBJECTS, REVOKE_SOBJECTS,
        /// ACTIVATE_SOBJECTS, DESTROY_SOBJECTS, DELETE_SOBJECTS, DELETE_KEY_MATERIAL,
        /// UPDATE_SOBJECTS_PROFILE, UPDATE_SOBJECTS_ENABLED_STATE, UPDATE_KEY_OPS,
        /// EXPORT_SOBJECTS. Repeatable.
        #[arg(long = "protect")]
        protect: Vec<String>,
        /// Cryptographic operations with the group's keys need approval too.
        #[arg(long)]
        crypto: bool,
    },
}

/// Settings of a link to an Azure Managed HSM or Key Vault vault; those not given stay as
/// they are.
#[derive(clap::Args, Debug)]
pub struct LinkArgs {
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    client_id: Option<String>,
    #[arg(long)]
    subscription: Option<String>,
    /// The Managed HSM's or vault's URI (`keyward groups check` lists the subscription's).
    #[arg(long)]
    instance: Option<String>,
    /// What the instance is: STANDARD or PREMIUM (a vault's tier), or MANAGED (the default
    /// for a Managed HSM). Needed with a vault's URI.
    #[arg(long, requires = "instance", value_parser = ["STANDARD", "PREMIUM", "MANAGED"])]
    key_vault_type: Option<String>,
    /// Read the client secret from stdin.
    #[arg(long)]
    client_secret_stdin: bool,
    /// PEM of a CA to trust for Azure's endpoints instead of the public roots.
    #[arg(long, conflicts_with = "public_roots")]
    ca_pem: Option<PathBuf>,
    /// Trust the public roots again instead of a CA given before.
    #[arg(long)]
    public_roots: bool,
    /// PEM of a client certificate (chain) for endpoints that ask for one (with --client-key).
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM of the client certificate's private key.
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Entra ID's endpoint, for sovereign clouds and private endpoints.
    #[arg(long)]
    identity_endpoint: Option<String>,
    /// Azure Resource Manager's endpoint.
    #[arg(long)]
    management_endpoint: Option<String>,
    /// The DNS suffix of Managed HSM instances (`managedhsm.azure.net`).
    #[arg(long)]
    instance_suffix: Option<String>,
    /// The DNS suffix of Key Vault vaults (`vault.azure.net`).
    #[arg(long)]
    vault_suffix: Option<String>,
    /// Accept certificates that do not name the host (only with a private CA).
    #[arg(long)]
    no_validate_hostname: bool,
}

impl LinkArgs {
    fn is_empty(&self) -> bool {
        self.tenant.is_none()
            && self.client_id.is_none()
            && self.subscription.is_none()
            && self.instance.is_none()
            && !self.client_secret_stdin
            && self.ca_pem.is_none()
            && !self.public_roots
            && self.client_cert.is_none()
            && self.identity_endpoint.is_none()
            && self.management_endpoint.is_none()
            && self.instance_suffix.is_none()
            && self.vault_suffix.is_none()
            && !self.no_validate_hostname
    }

    /// The link as the API takes it, with only the settings given.
    fn body(self) -> Result<Value, CliError> {
        let mut link = json!({"kind": "AzureManagedHsm"});
        let mut set = |field: &str, v: Option<String>| {
            if let Some(v) = v {
                link[field] = json!(v);
            }
        };
        set("tenant_id", self.tenant);
        set("client_id", self.client_id);
        set("subscription_id", self.subscription);
        set("instance", self.instance);
        set("key_vault_type", self.key_vault_type);
        if self.client_secret_stdin {
            link["client_secret"] = json!(super::read_stdin_line()?);
        }
        let endpoints: serde_json::Map<String, Value> = [
            ("identity", self.identity_endpoint),
            ("management", self.management_endpoint),
            ("instance_suffix", self.instance_suffix),
            ("vault_suffix", self.vault_suffix),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), json!(v))))
        .collect();
        if !endpoints.is_empty() {
            link["endpoints"] = Value::Object(endpoints);
        }
        let mut tls = serde_json::Map::new();
        if let Some(p) = &self.ca_pem {
            tls.insert("ca_pem".into(), json!(read_text(p)?));
        }
        if self.public_roots {
            // The public roots' certificates name their hosts: hostname checks come back on.
            tls.insert("ca_pem".into(), Value::Null);
            tls.insert("validate_hostname".into(), json!(true));
        }
        if let (Some(c), Some(k)) = (&self.client_cert, &self.client_key) {
            tls.insert("client_cert".into(), json!(read_text(c)?));
            tls.insert("client_key".into(), json!(read_text(k)?));
        }
        if self.no_validate_hostname {
            tls.insert("validate_hostname".into(), json!(false));
        }
        if !tls.is_empty() {
            link["tls"] = Value::Object(tls);
        }
        Ok(link)
    }
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
            GroupCmd::Link { id, link } => Ok(Shown::object(
                ctx.patch(
                    &format!("/sys/v1/groups/{}", seg(&id)),
                    json!({"external_kms": link.body()?}),
                )
                .await?,
            )),
            GroupCmd::Check { id, link } => {
                let status = match (id, link.is_empty()) {
                    (Some(id), true) => {
                        ctx.post(&format!("/sys/v1/groups/{}/hmg/check", seg(&id)), json!({}))
                            .await?
                    }
                    (Some(id), false) => {
                        ctx.post(
                            &format!("/sys/v1/groups/{}/hmg/check", seg(&id)),
                            json!({"config": link.body()?}),
                        )
                        .await?
                    }
                    (None, _) => ctx.post("/sys/v1/groups/hmg/check", link.body()?).await?,
                };
                if status["status"] != "Connected" {
                    return Err(CliError::No {
                        message: format!(
                            "Not Connected: {}",
                            status["reason"].as_str().unwrap_or("no reason given")
                        ),
                        record: status,
                    });
                }
                Ok(Shown::object(status))
            }
            GroupCmd::Sync { id, no_wait } => sync(ctx, &id, no_wait).await,
            GroupCmd::Delete { id } => {
                ctx.delete(&format!("/sys/v1/groups/{}", seg(&id))).await?;
                Ok(Shown::object(json!({"group_id": id, "deleted": true})))
            }
            GroupCmd::SetApprovalPolicy {
                id,
                quorum,
                protect,
                crypto,
            } => {
                let reviewers = quorum
                    .policy()?
                    .ok_or_else(|| local("give --n and the reviewers (--user, --app)"))?;
                let policy = json!({
                    "quorum": reviewers,
                    "protect_permissions": protect,
                    "protect_crypto_operations": crypto,
                    "allow_self_approval": quorum.allow_self,
                });
                Ok(Shown::object(
                    ctx.patch(
                        &format!("/sys/v1/groups/{}", seg(&id)),
                        json!({"approval_policy": policy}),
                    )
                    .await?,
                ))
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
