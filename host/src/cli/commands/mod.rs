//! The CLI's commands: the session ones here (`login`, `logout`, `profiles`), the families in
//! their modules. Every leaf command's `--help` ends with an example.

mod admin;
mod approvals;
mod automation;
mod groups;
mod keys;
mod workflows;

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Subcommand;
use serde_json::{Value, json};

use super::output::Shown;
use super::profile::{Profile, Profiles};
use super::{CliError, Ctx, local};

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Log in to a daemon and keep the session in a profile.
    #[command(
        after_help = "Examples:\n  keyward login --addr https://keyward.example.com:8443 --email admin@example.com\n  printf %s \"$API_KEY\" | keyward login --addr https://keyward.example.com:8443 --api-key-stdin --profile ci\n  keyward login --addr https://keyward.example.com:8443 --app 7d3c... --cert app.pem --key app.key --profile billing"
    )]
    Login(LoginArgs),
    /// End the profile's session and forget its token.
    #[command(after_help = "Example:\n  keyward logout --profile ci")]
    Logout,
    /// The login profiles (never their tokens).
    #[command(after_help = "Example:\n  keyward profiles -o json")]
    Profiles,
    /// Groups and their links to Azure Managed HSM: create, link, test connection, sync.
    #[command(subcommand)]
    Groups(groups::GroupCmd),
    /// Keys: generate, import, copy, rotate, lifecycle, and cryptography for applications.
    #[command(subcommand)]
    Keys(keys::KeyCmd),
    /// Cryptographic and key metadata policies of the account and its groups.
    #[command(subcommand)]
    Policies(admin::PolicyCmd),
    /// Workflow scripts (shipped and the account's own) and their runs.
    #[command(subcommand)]
    Workflows(workflows::WorkflowCmd),
    /// Cron jobs: workflows on a schedule.
    #[command(subcommand)]
    Jobs(automation::JobCmd),
    /// Webhooks that start workflows.
    #[command(subcommand)]
    Webhooks(automation::WebhookCmd),
    /// Notification endpoints: signed key events sent out.
    #[command(subcommand)]
    Notifications(automation::NotificationCmd),
    /// Quorum approval requests: ask for a protected operation, approve, deny, read the result.
    #[command(subcommand)]
    Approvals(approvals::ApprovalCmd),
    /// The audit log, newest first.
    #[command(after_help = "Example:\n  keyward audit --action key.create --size 20 -o json")]
    Audit(admin::AuditArgs),
    /// Users of the account.
    #[command(subcommand)]
    Users(admin::UserCmd),
    /// Applications of the account.
    #[command(subcommand)]
    Apps(admin::AppCmd),
    /// The plugins the daemon loaded, and the files it skipped with the reason.
    #[command(after_help = "Example:\n  keyward plugins -o json")]
    Plugins,
    /// Key health, as the console's dashboard shows it: one report's rows.
    #[command(
        after_help = "Examples:\n  keyward reports rotation\n  keyward reports usage --csv usage.csv"
    )]
    Reports(ReportArgs),
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    report: Report,
    /// Write the report as CSV to this file (as the daemon makes it) instead of showing it.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
}

/// The reports of `GET /sys/v1/reports/...`.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum Report {
    /// Keys per group, state and holder (an HSM, or Keyward).
    Keys,
    /// Keys overdue for rotation, with a stopped policy, without one, and what is due in 30 days.
    Rotation,
    /// Scheduled rotations and jobs that failed in the last 30 days.
    Failures,
    /// Cryptographic operations per day, the last 30 days.
    Usage,
    /// Per linked group: the last sync, and the keys put back in the HSM in 30 days.
    Drift,
}

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// A user's email; the password is asked for (or read from stdin with --password-stdin).
    #[arg(long, conflicts_with = "api_key_stdin")]
    email: Option<String>,
    /// Read the password from stdin.
    #[arg(long, requires = "email")]
    password_stdin: bool,
    /// Log in as an application: read its API key from stdin.
    #[arg(long, conflicts_with = "app")]
    api_key_stdin: bool,
    /// Log in as a certificate application with this id, presenting --cert and --key.
    #[arg(long, requires = "cert", conflicts_with = "email")]
    app: Option<String>,
    /// Act in this account (users with several).
    #[arg(long)]
    account: Option<String>,
}

impl ClientCommand {
    pub async fn run(self, ctx: &Ctx) -> Result<Shown, CliError> {
        match self {
            ClientCommand::Login(a) => login(ctx, a).await,
            ClientCommand::Logout => logout(ctx).await,
            ClientCommand::Profiles => profiles(),
            ClientCommand::Groups(c) => c.run(ctx).await,
            ClientCommand::Keys(c) => c.run(ctx).await,
            ClientCommand::Policies(c) => c.run(ctx).await,
            ClientCommand::Workflows(c) => c.run(ctx).await,
            ClientCommand::Jobs(c) => c.run(ctx).await,
            ClientCommand::Webhooks(c) => c.run(ctx).await,
            ClientCommand::Notifications(c) => c.run(ctx).await,
            ClientCommand::Approvals(c) => c.run(ctx).await,
            ClientCommand::Audit(a) => a.run(ctx).await,
            ClientCommand::Users(c) => c.run(ctx).await,
            ClientCommand::Apps(c) => c.run(ctx).await,
            ClientCommand::Plugins => plugins(ctx).await,
            ClientCommand::Reports(a) => reports(ctx, a).await,
        }
    }
}

fn read_stdin_line() -> Result<String, CliError> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| local(format!("reading stdin: {e}")))?;
    let s = s.trim_end_matches(['\r', '\n']).to_string();
    if s.is_empty() {
        return Err(local("stdin was empty"));
    }
    Ok(s)
}

async fn login(ctx: &Ctx, a: LoginArgs) -> Result<Shown, CliError> {
    let addr = ctx.conn.addr.clone().or_else(|| {
        Profiles::load()
            .ok()
            .and_then(|p| p.get(&ctx.conn.profile).map(|p| p.addr.clone()))
    });
    let Some(addr) = addr else {
        return Err(local("give the daemon's address: keyward login --addr URL"));
    };
    // A login starts from the flags only: a profile's certificate is not a new login's.
    let tls = ctx.conn.tls(None);
    let client = super::Client::new(&addr, &tls, None)?;
    if let Some(app) = &a.app {
        if tls.client_cert.is_none() {
            return Err(local(
                "--app logs in with a client certificate: give --cert and --key",
            ));
        }
        // DSM's certificate login: the application's id and an empty secret.
        let basic = STANDARD.encode(format!("{app}:"));
        return finish_login(
            ctx,
            &a,
            &addr,
            &tls,
            client.login(&basic).await?,
            format!("app:{app}"),
        )
        .await;
    }
    let (basic, identity) = match (&a.email, a.api_key_stdin) {
        (Some(email), _) => {
            let password = if a.password_stdin {
                read_stdin_line()?
            } else {
                rpassword::prompt_password(format!("Password for {email}: "))
                    .map_err(|e| local(format!("reading the password: {e}")))?
            };
            (
                STANDARD.encode(format!("{email}:{password}")),
                email.clone(),
            )
        }
        (None, true) => {
            let key = read_stdin_line()?;
            // An API key is base64 of `app_id:secret`: the id names the profile's identity.
            let id = STANDARD
                .decode(&key)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.split_once(':').map(|(i, _)| i.to_string()))
                .ok_or_else(|| local("that is not an API key (base64 of app_id:secret)"))?;
            (key, format!("app:{id}"))
        }
        (None, false) => {
            return Err(local(
                "give --email, or --api-key-stdin or --app (with --cert and --key) for an application",
            ));
        }
    };
    let session = client.login(&basic).await?;
    finish_login(ctx, &a, &addr, &tls, session, identity).await
}

/// Selects the account asked for and keeps the session in the profile.
async fn finish_login(
    ctx: &Ctx,
    a: &LoginArgs,
    addr: &str,
    tls: &super::Tls,
    session: serde_json::Value,
    identity: String,
) -> Result<Shown, CliError> {
    let token = session["access_token"]
        .as_str()
        .ok_or_else(|| local("the daemon's answer has no access_token"))?
        .to_string();
    let mut account = session["acct_id"].as_str().map(str::to_string);
    if let Some(acct) = &a.account {
        let client = super::Client::new(addr, tls, Some(token.clone()))?;
        client
            .call(
                reqwest::Method::POST,
                "/sys/v1/session/select_account",
                Some(&json!({"acct_id": acct})),
            )
            .await?;
        account = Some(acct.clone());
    }
    let mut profiles = Profiles::load()?;
    profiles.put(
        &ctx.conn.profile,
        Profile {
            addr: addr.to_string(),
            ca_cert: tls.ca_cert.clone(),
            token: Some(token),
            account: account.clone(),
            identity: Some(identity.clone()),
            client_cert: tls.client_cert.as_ref().map(|c| c.0.clone()),
            client_key: tls.client_cert.as_ref().map(|c| c.1.clone()),
        },
    );
    profiles.save()?;
    Ok(Shown::object(json!({
        "profile": ctx.conn.profile,
        "addr": addr,
        "identity": identity,
        "acct_id": account,
        "expires_in": session["expires_in"],
    })))
}

/// One report: its rows as a table, or its CSV written to a file.
async fn reports(ctx: &Ctx, a: ReportArgs) -> Result<Shown, CliError> {
    let (path, columns): (&str, super::output::Columns) = match a.report {
        Report::Keys => (
            "keys",
            &[
                ("GROUP", "/group_name"),
                ("STATE", "/state"),
                ("HELD BY", "/held_by"),
                ("KEYS", "/count"),
            ],
        ),
        Report::Rotation => (
            "rotation",
            &[
                ("KEY", "/name"),
                ("GROUP", "/group_name"),
                ("FINDING", "/finding"),
                ("DATE", "/at"),
                ("ERROR", "/error"),
            ],
        ),
        Report::Failures => (
            "failures",
            &[
                ("KIND", "/kind"),
                ("NAME", "/name"),
                ("GROUP", "/group_name"),
                ("DUE", "/due_at"),
                ("ERROR", "/error"),
            ],
        ),
        Report::Usage => ("usage", &[("DAY", "/day"), ("OPERATIONS", "/operations")]),
        Report::Drift => (
            "drift",
            &[
                ("GROUP", "/group_name"),
                ("LAST SYNC", "/last_sync_at"),
                ("STATUS", "/last_sync_status"),
                ("ADDED", "/keys_added"),
                ("NOT ADDED", "/keys_failed"),
                ("DELETED", "/marked_deleted"),
                ("PURGED", "/marked_purged"),
                ("PUT BACK", "/drift_events"),
            ],
        ),
    };
    let Some(file) = a.csv else {
        return Ok(Shown::new(
            ctx.get(&format!("/sys/v1/reports/{path}")).await?,
            columns,
        ));
    };
    let csv = ctx
        .get(&format!("/sys/v1/reports/{path}?format=csv"))
        .await?;
    let text = csv
        .as_str()
        .ok_or_else(|| local("the daemon did not answer CSV"))?;
    std::fs::write(&file, text).map_err(|e| local(format!("writing {}: {e}", file.display())))?;
    Ok(Shown::object(json!({
        "report": path,
        "file": file.display().to_string(),
        "rows": text.lines().count().saturating_sub(1),
    })))
}

/// The daemon's plugins: one row per loaded plugin, then one per skipped file.
async fn plugins(ctx: &Ctx) -> Result<Shown, CliError> {
    let answer = ctx.get("/sys/v1/plugins").await?;
    let mut rows = Vec::new();
    for p in answer["loaded"].as_array().into_iter().flatten() {
        rows.push(
            json!({"name": p["name"], "version": p["version"], "world": p["world"],
            "origin": p["origin"], "status": "loaded"}),
        );
    }
    for p in answer["skipped"].as_array().into_iter().flatten() {
        rows.push(json!({"name": p["file"], "status": "skipped", "reason": p["reason"]}));
    }
    Ok(Shown::new(
        Value::Array(rows),
        &[
            ("NAME", "/name"),
            ("VERSION", "/version"),
            ("WORLD", "/world"),
            ("ORIGIN", "/origin"),
            ("STATUS", "/status"),
            ("REASON", "/reason"),
        ],
    ))
}

async fn logout(ctx: &Ctx) -> Result<Shown, CliError> {
    let mut profiles = Profiles::load()?;
    let Some(mut p) = profiles.get(&ctx.conn.profile).cloned() else {
        return Err(local(format!("no profile '{}'", ctx.conn.profile)));
    };
    if p.token.is_some() {
        match ctx.post("/sys/v1/session/terminate", json!({})).await {
            // An expired session is as ended as a terminated one.
            Ok(_) | Err(CliError::Server { status: 401, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    p.token = None;
    profiles.put(&ctx.conn.profile, p);
    profiles.save()?;
    Ok(Shown::object(
        json!({"profile": ctx.conn.profile, "logged_out": true}),
    ))
}

fn profiles() -> Result<Shown, CliError> {
    let profiles = Profiles::load()?;
    let list: Vec<Value> = profiles
        .all()
        .iter()
        .map(|(name, p)| {
            json!({
                "name": name,
                "addr": p.addr,
                "identity": p.identity,
                "acct_id": p.account,
                "logged_in": p.token.is_some(),
            })
        })
        .collect();
    Ok(Shown::new(
        Value::Array(list),
        &[
            ("NAME", "/name"),
            ("ADDRESS", "/addr"),
            ("IDENTITY", "/identity"),
            ("LOGGED IN", "/logged_in"),
        ],
    ))
}

/// A file's bytes (`-`: stdin).
pub fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    if path == Path::new("-") {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .map_err(|e| local(format!("reading stdin: {e}")))?;
        return Ok(b);
    }
    std::fs::read(path).map_err(|e| local(format!("{}: {e}", path.display())))
}

pub fn read_text(path: &Path) -> Result<String, CliError> {
    String::from_utf8(read_file(path)?)
        .map_err(|_| local(format!("{}: not UTF-8 text", path.display())))
}

/// A JSON argument: inline (`{"a": 1}`) or `@file`.
pub fn json_arg(name: &str, text: &str) -> Result<Value, CliError> {
    let text = match text.strip_prefix('@') {
        Some(path) => read_text(&PathBuf::from(path))?,
        None => text.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| local(format!("{name}: not JSON: {e}")))
}

/// Comma-separated values, upper-cased (operations, events).
pub fn list_arg(text: &str) -> Vec<String> {
    text.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A path segment or query value from a user's argument (ids, names), percent-encoded so
/// that it stays one segment.
/// The reviewers of an approval policy: `n` of the users and applications, as DSM's
/// `QuorumPolicy`.
#[derive(clap::Args, Debug)]
pub struct QuorumArgs {
    /// How many of the reviewers must approve.
    #[arg(long)]
    n: Option<u32>,
    /// A user who reviews (repeatable).
    #[arg(long = "user")]
    users: Vec<String>,
    /// An application that reviews (repeatable).
    #[arg(long = "app")]
    apps: Vec<String>,
    /// Reviewers who are users give their password again to approve.
    #[arg(long)]
    require_password: bool,
    /// A reviewer's approval counts on their own requests too.
    #[arg(long)]
    allow_self: bool,
}

impl QuorumArgs {
    /// DSM's `{n, members, require_password}`; `None` when no reviewers were given.
    pub fn policy(&self) -> Result<Option<Value>, CliError> {
        let Some(n) = self.n else {
            if self.users.is_empty() && self.apps.is_empty() {
                return Ok(None);
            }
            return Err(crate::cli::local(
                "give --n: how many of the reviewers must approve",
            ));
        };
        let members: Vec<Value> = self
            .users
            .iter()
            .map(|u| serde_json::json!({"user": u}))
            .chain(self.apps.iter().map(|a| serde_json::json!({"app": a})))
            .collect();
        Ok(Some(
            serde_json::json!({"n": n, "members": members, "require_password": self.require_password}),
        ))
    }
}

pub fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A query string of the given pairs (those with a value), with its `?`.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", seg(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}
