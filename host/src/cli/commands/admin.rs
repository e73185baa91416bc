//! `keyward policies`, `audit`, `users` and `apps`: who may do what, and what was done.

use std::path::PathBuf;

use base64::Engine;
use clap::Subcommand;
use serde_json::{Value, json};

use super::{QuorumArgs, json_arg, query, seg};
use crate::cli::output::{Columns, Shown};
use crate::cli::{CliError, Ctx, local};

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// The account's cryptographic policy, or a group's policies.
    #[command(
        after_help = "Examples:\n  keyward policies show\n  keyward policies show --group 3f0c… -o json"
    )]
    Show {
        #[arg(long)]
        group: Option<String>,
    },
    /// Set (JSON or @file) or remove the cryptographic policy of the account or a group.
    #[command(
        after_help = "Example:\n  keyward policies set-crypto --group 3f0c… --policy '{\"aes\": {\"key_sizes\": [256]}}'"
    )]
    SetCrypto {
        #[arg(long)]
        group: Option<String>,
        #[arg(long, conflicts_with = "remove", required_unless_present = "remove")]
        policy: Option<String>,
        #[arg(long)]
        remove: bool,
    },
    /// Set (JSON or @file) or remove a group's key metadata policy.
    #[command(
        after_help = "Example:\n  keyward policies set-metadata --group 3f0c… --policy @metadata-policy.json"
    )]
    SetMetadata {
        #[arg(long)]
        group: String,
        #[arg(long, conflicts_with = "remove", required_unless_present = "remove")]
        policy: Option<String>,
        #[arg(long)]
        remove: bool,
    },
    /// Set or remove the account's quorum approval policy: N of the reviewers approve the
    /// account changes it protects (always: changing it, the request expiry, deleting the
    /// account). Once set, changing it needs its quorum (`keyward approvals request`).
    #[command(after_help = "Examples:
  keyward policies set-approval --n 2 --user 1a2b… --user 3c4d… --user 5e6f… --manage-groups --logging --expiry-hours 72
  keyward policies set-approval --remove")]
    SetApproval {
        #[command(flatten)]
        quorum: QuorumArgs,
        /// Creating and deleting groups needs approval.
        #[arg(long)]
        manage_groups: bool,
        /// New credentials for applications (API keys, certificates) need approval.
        #[arg(long)]
        authentication: bool,
        /// Changes of the account's cryptographic policy need approval.
        #[arg(long)]
        crypto_policy: bool,
        /// Changes of notification endpoints need approval.
        #[arg(long)]
        logging: bool,
        /// How long requests wait for their quorum (1 to 8760 hours; default 720).
        #[arg(long)]
        expiry_hours: Option<i64>,
        /// No approval policy.
        #[arg(long, conflicts_with_all = ["manage_groups", "authentication", "crypto_policy", "logging"])]
        remove: bool,
    },
}

fn policy_value(policy: Option<String>, remove: bool) -> Result<Value, CliError> {
    match (policy, remove) {
        (_, true) => Ok(json!("remove")),
        (Some(p), false) => json_arg("--policy", &p),
        (None, false) => Err(local("give --policy or --remove")),
    }
}

/// The account the session acts in: the profile's, else the only one the caller has.
async fn account(ctx: &Ctx) -> Result<String, CliError> {
    if let Some(a) = &ctx.account {
        return Ok(a.clone());
    }
    let list = ctx.get("/sys/v1/accounts").await?;
    match list.as_array().map(Vec::as_slice) {
        Some([one]) => one["acct_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| local("the daemon's answer has no acct_id")),
        _ => Err(local(
            "several accounts: log in with --account to choose the one to act in",
        )),
    }
}

impl PolicyCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<Shown, CliError> {
        match self {
            PolicyCmd::Show { group: Some(g) } => {
                let group = ctx.get(&format!("/sys/v1/groups/{}", seg(&g))).await?;
                Ok(Shown::object(json!({
                    "group_id": group["group_id"],
                    "cryptographic_policy": group["cryptographic_policy"],
                    "key_metadata_policy": group["key_metadata_policy"],
                    "custom_policies": group["custom_policies"],
                })))
            }
            PolicyCmd::Show { group: None } => {
                let acct = account(ctx).await?;
                let a = ctx.get(&format!("/sys/v1/accounts/{}", seg(&acct))).await?;
                Ok(Shown::object(json!({
                    "acct_id": a["acct_id"],
                    "cryptographic_policy": a["cryptographic_policy"],
                    "approval_policy": a["approval_policy"],
                    "approval_request_expiry": a["approval_request_expiry"],
                })))
            }
            PolicyCmd::SetApproval {
                quorum,
                manage_groups,
                authentication,
                crypto_policy,
                logging,
                expiry_hours,
                remove,
            } => {
                let mut body = serde_json::Map::new();
                match (quorum.policy()?, remove) {
                    (_, true) => {
                        body.insert("approval_policy".into(), json!("remove"));
                    }
                    (Some(q), false) => {
                        body.insert(
                            "approval_policy".into(),
                            json!({
                                "policy": {"quorum": q},
                                "manage_groups": manage_groups,
                                "protect_authentication_methods": authentication,
                                "protect_cryptographic_policy": crypto_policy,
                                "protect_logging_config": logging,
                                "allow_self_approval": quorum.allow_self,
                            }),
                        );
                    }
                    (None, false) if expiry_hours.is_none() => {
                        return Err(local("give --n and reviewers, --expiry-hours, or --remove"));
                    }
                    (None, false) => {}
                }
                if let Some(h) = expiry_hours {
                    body.insert("approval_request_expiry".into(), json!(h * 3600));
                }
                let path = format!("/sys/v1/accounts/{}", seg(&account(ctx).await?));
                let after = ctx.patch(&path, Value::Object(body)).await?;
                Ok(Shown::object(json!({
                    "approval_policy": after["approval_policy"],
                    "approval_request_expiry": after["approval_request_expiry"],
                })))
            }
            PolicyCmd::SetCrypto {
                group,
                policy,
                remove,
            } => {
                let body = json!({"cryptographic_policy": policy_value(policy, remove)?});
                let path = match group {
                    Some(g) => format!("/sys/v1/groups/{}", seg(&g)),
                    None => format!("/sys/v1/accounts/{}", seg(&account(ctx).await?)),
                };
                let after = ctx.patch(&path, body).await?;
                Ok(Shown::object(json!({
                    "cryptographic_policy": after["cryptographic_policy"],
                })))
            }
            PolicyCmd::SetMetadata {
                group,
                policy,
                remove,
            } => {
                let after = ctx
                    .patch(
                        &format!("/sys/v1/groups/{}", seg(&group)),
                        json!({"key_metadata_policy": policy_value(policy, remove)?}),
                    )
                    .await?;
                Ok(Shown::object(json!({
                    "group_id": after["group_id"],
                    "key_metadata_policy": after["key_metadata_policy"],
                })))
            }
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// An action, such as `key.create` or `workflow_script.put`.
    #[arg(long)]
    action: Option<String>,
    /// ADMINISTRATIVE, AUTH, CRYPTOOPERATION or CUSTOM.
    #[arg(long)]
    action_type: Option<String>,
    /// success, failure or denied.
    #[arg(long)]
    outcome: Option<String>,
    #[arg(long)]
    actor_id: Option<String>,
    #[arg(long)]
    object_id: Option<String>,
    /// How many entries (default 100).
    #[arg(long)]
    size: Option<u32>,
}

const EVENT: Columns = &[
    ("TIME", "/time"),
    ("ACTION", "/action"),
    ("OUTCOME", "/outcome"),
    ("ACTOR", "/actor_id"),
    ("OBJECT", "/object_id"),
    ("MESSAGE", "/message"),
];

impl AuditArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<Shown, CliError> {
        let logs = ctx
            .get(&format!(
                "/sys/v1/logs{}",
                query(&[
                    ("action", self.action),
                    ("action_type", self.action_type),
                    ("outcome", self.outcome),
                    ("actor_id", self.actor_id),
                    ("object_id", self.object_id),
                    ("size", self.size.map(|s| s.to_string())),
                ])
            ))
            .await?;
        let events: Vec<Value> = logs["hits"]
            .as_array()
            .map(|hits| hits.iter().map(|h| h["_source"].clone()).collect())
            .unwrap_or_default();
        Ok(Shown::new(Value::Array(events), EVENT))
    }
}

const USER: Columns = &[
    ("ID", "/user_id"),
    ("EMAIL", "/user_email"),
    ("ROLE", "/account_role"),
    ("STATE", "/state"),
];

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// The account's users.
    #[command(after_help = "Example:\n  keyward users list")]
    List,
    /// One user.
    #[command(after_help = "Example:\n  keyward users show 0c1d…")]
    Show { id: String },
    /// Invite a user into the account.
    #[command(
        after_help = "Examples:\n  keyward users invite --email ops@example.com --role member\n  printf %s \"$FIRST_PASSWORD\" | keyward users invite --email new@example.com --role member --password-stdin"
    )]
    Invite {
        #[arg(long)]
        email: String,
        /// administrator, member or auditor.
        #[arg(long)]
        role: String,
        /// A user new to the daemon needs a first password: read it from stdin (a user of
        /// another account joins with their own).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's account role or group roles.
    #[command(
        after_help = "Example:\n  keyward users update 0c1d… --role auditor --group-role 3f0c…=administrator --remove-group 77b2…"
    )]
    Update {
        id: String,
        /// The account role: administrator, member or auditor.
        #[arg(long)]
        role: Option<String>,
        /// A group role to give or change, `<group id>=administrator|auditor` (repeatable).
        #[arg(long = "group-role", value_name = "GROUP=ROLE")]
        group_roles: Vec<String>,
        /// A group to take the user out of (repeatable).
        #[arg(long = "remove-group", value_name = "GROUP")]
        remove_groups: Vec<String>,
    },
    /// Remove a user from the account.
    #[command(after_help = "Example:\n  keyward users remove 0c1d…")]
    Remove { id: String },
}

impl UserCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<Shown, CliError> {
        match self {
            UserCmd::List => Ok(Shown::new(ctx.get("/sys/v1/users").await?, USER)),
            UserCmd::Show { id } => Ok(Shown::object(
                ctx.get(&format!("/sys/v1/users/{}", seg(&id))).await?,
            )),
            UserCmd::Invite {
                email,
                role,
                password_stdin,
            } => {
                let mut body = json!({"user_email": email, "account_role": role});
                if password_stdin {
                    body["user_password"] = json!(super::read_stdin_line()?);
                }
                Ok(Shown::object(ctx.post("/sys/v1/users/invite", body).await?))
            }
            UserCmd::Update {
                id,
                role,
                group_roles,
                remove_groups,
            } => {
                let mut add = serde_json::Map::new();
                for pair in &group_roles {
                    let (group, role) = pair
                        .split_once('=')
                        .filter(|(g, r)| !g.is_empty() && !r.is_empty())
                        .ok_or_else(|| local(format!("'{pair}': a group role is GROUP=ROLE")))?;
                    add.insert(group.to_string(), json!(role));
                }
                if role.is_none() && add.is_empty() && remove_groups.is_empty() {
                    return Err(local("give --role, --group-role or --remove-group"));
                }
                Ok(Shown::object(
                    ctx.patch(
                        &format!("/sys/v1/users/{}", seg(&id)),
                        json!({"account_role": role, "add_groups": add, "del_groups": remove_groups}),
                    )
                    .await?,
                ))
            }
            UserCmd::Remove { id } => {
                ctx.delete(&format!("/sys/v1/users/{}", seg(&id))).await?;
                Ok(Shown::object(json!({"user_id": id, "removed": true})))
            }
        }
    }
}

const APP: Columns = &[
    ("ID", "/app_id"),
    ("NAME", "/name"),
    ("GROUPS", "/group_ids"),
    ("CREATED", "/created_at"),
];

#[derive(Subcommand, Debug)]
pub enum AppCmd {
    /// The account's applications.
    #[command(after_help = "Example:\n  keyward apps list")]
    List,
    /// One application.
    #[command(after_help = "Example:\n  keyward apps show 4d5e…")]
    Show { id: String },
    /// A new application in groups (every permission in each); prints its API key, this once.
    #[command(
        after_help = "Example:\n  keyward apps create --name payments-api --group 3f0c… -o json"
    )]
    Create {
        #[arg(long)]
        name: String,
        #[arg(long = "group", required = true)]
        groups: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        credential: CredentialArgs,
    },
    /// Log in with a client certificate from now on (a pinned one, or a CA's naming a subject);
    /// the application's sessions end.
    #[command(
        after_help = "Examples:\n  keyward apps set-certificate 4d5e… --certificate billing.pem\n  keyward apps set-certificate 4d5e… --trusted-ca clients-ca.pem --subject CN=billing --crl clients.crl"
    )]
    SetCertificate {
        id: String,
        #[command(flatten)]
        credential: CredentialArgs,
    },
    /// A new API key (the old one stops working); prints it, this once.
    #[command(after_help = "Example:\n  keyward apps reset-secret 4d5e…")]
    ResetSecret { id: String },
    /// Delete an application.
    #[command(after_help = "Example:\n  keyward apps delete 4d5e…")]
    Delete { id: String },
}

/// How a certificate application logs in (DSM's `AppCredential`).
#[derive(clap::Args, Debug)]
pub struct CredentialArgs {
    /// Log in with this client certificate only (PEM file): DSM's `Certificate` application.
    #[arg(long, value_name = "FILE", conflicts_with = "trusted_ca")]
    certificate: Option<PathBuf>,
    /// Log in with certificates this CA issued (PEM file) that name --subject or --dns-name:
    /// DSM's `TrustedCa` application.
    #[arg(long, value_name = "FILE")]
    trusted_ca: Option<PathBuf>,
    /// A subject attribute the certificate must carry, e.g. `CN=billing`. Repeatable.
    #[arg(
        long,
        value_name = "NAME=VALUE",
        requires = "trusted_ca",
        conflicts_with = "dns_name"
    )]
    subject: Vec<String>,
    /// A DNS name among the certificate's subject alternative names.
    #[arg(long, requires = "trusted_ca")]
    dns_name: Option<String>,
    /// The CA's CRL (PEM or DER file), checked at every login.
    #[arg(
        long,
        value_name = "FILE",
        requires = "trusted_ca",
        conflicts_with = "crl_url"
    )]
    crl: Option<PathBuf>,
    /// Where the daemon fetches the CA's CRL (a host its --crl-allow names).
    #[arg(long, value_name = "URL", requires = "trusted_ca")]
    crl_url: Option<String>,
}

impl CredentialArgs {
    /// The request's `credential`, or none (an API key).
    fn body(&self) -> Result<Option<Value>, CliError> {
        let pem = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| local(format!("{}: {e}", p.display())))
        };
        if let Some(c) = &self.certificate {
            return Ok(Some(json!({"certificate": pem(c)?})));
        }
        let Some(ca) = &self.trusted_ca else {
            return Ok(None);
        };
        let mut trusted = json!({"ca_certificate": pem(ca)?});
        if let Some(d) = &self.dns_name {
            trusted["subject_general"] = json!({"dns_name": d});
        } else {
            let pairs = self
                .subject
                .iter()
                .map(|s| {
                    s.split_once('=')
                        .map(|(k, v)| json!([k, v]))
                        .ok_or_else(|| local(format!("--subject takes NAME=VALUE, not '{s}'")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if pairs.is_empty() {
                return Err(local(
                    "--trusted-ca needs --subject NAME=VALUE or --dns-name",
                ));
            }
            trusted["subject"] = Value::Array(pairs);
        }
        if let Some(crl) = &self.crl {
            let bytes = std::fs::read(crl).map_err(|e| local(format!("{}: {e}", crl.display())))?;
            // The API takes PEM text or base64 of DER.
            trusted["crl"] = match String::from_utf8(bytes.clone()) {
                Ok(text) if text.contains("-----BEGIN") => json!(text),
                _ => json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
            };
        }
        if let Some(url) = &self.crl_url {
            trusted["crl_url"] = json!(url);
        }
        Ok(Some(json!({"trustedca": trusted})))
    }
}

impl AppCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<Shown, CliError> {
        let path = |id: &str, rest: &str| format!("/sys/v1/apps/{}{rest}", seg(id));
        match self {
            AppCmd::List => {
                let mut list = ctx.get("/sys/v1/apps").await?;
                // The table shows the groups' ids; the JSON keeps their permissions.
                if let Some(items) = list.as_array_mut() {
                    for a in items {
                        let groups: Vec<Value> = a["groups"]
                            .as_object()
                            .map(|g| g.keys().map(|k| json!(k)).collect())
                            .unwrap_or_default();
                        a["group_ids"] = Value::Array(groups);
                    }
                }
                Ok(Shown::new(list, APP))
            }
            AppCmd::Show { id } => Ok(Shown::object(ctx.get(&path(&id, "")).await?)),
            AppCmd::Create {
                name,
                groups,
                description,
                credential,
            } => Ok(Shown::object(
                ctx.post(
                    "/sys/v1/apps",
                    json!({"name": name, "groups": groups, "description": description,
                        "credential": credential.body()?}),
                )
                .await?,
            )),
            AppCmd::SetCertificate { id, credential } => {
                let credential = credential.body()?.ok_or_else(|| {
                    local("give --certificate FILE, or --trusted-ca FILE with --subject")
                })?;
                Ok(Shown::object(
                    ctx.patch(&path(&id, ""), json!({"credential": credential}))
                        .await?,
                ))
            }
            AppCmd::ResetSecret { id } => Ok(Shown::object(
                ctx.post(&path(&id, "/reset_secret"), json!({})).await?,
            )),
            AppCmd::Delete { id } => {
                ctx.delete(&path(&id, "")).await?;
                Ok(Shown::object(json!({"app_id": id, "deleted": true})))
            }
        }
    }
}
