//! `keyward jobs`, `webhooks` and `notifications`: what runs workflows on a schedule or on a
//! delivery, and where key events are sent.

use clap::Subcommand;
use serde_json::json;

use super::{json_arg, list_arg, seg};
use crate::cli::output::{Columns, Shown};
use crate::cli::{CliError, Ctx};

const JOB: Columns = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("WORKFLOW", "/workflow"),
    ("CRON", "/cron"),
    ("TIME ZONE", "/time_zone"),
    ("PAUSED", "/paused"),
    ("NEXT RUN", "/next_run"),
];

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// The account's cron jobs.
    #[command(after_help = "Example:\n  keyward jobs list")]
    List,
    /// One job.
    #[command(after_help = "Example:\n  keyward jobs show 1b2c…")]
    Show { id: String },
    /// A job that runs a workflow on a cron schedule, as you.
    #[command(
        after_help = "Example:\n  keyward jobs create --name nightly-sync --workflow sync --group 3f0c… --cron '0 0 2 * * *' --time-zone Europe/Paris"
    )]
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        workflow: String,
        /// Six fields with seconds (`sec min hour day month weekday`).
        #[arg(long)]
        cron: String,
        #[arg(long)]
        time_zone: Option<String>,
        #[arg(long)]
        group: Option<String>,
        /// The workflow's input: JSON or @file.
        #[arg(long)]
        input: Option<String>,
        #[arg(long)]
        paused: bool,
    },
    /// Pause a job.
    #[command(after_help = "Example:\n  keyward jobs pause 1b2c…")]
    Pause { id: String },
    /// Resume a paused job.
    #[command(after_help = "Example:\n  keyward jobs resume 1b2c…")]
    Resume { id: String },
    /// A job's fires, newest first.
    #[command(after_help = "Example:\n  keyward jobs fires 1b2c…")]
    Fires { id: String },
    /// Delete a job.
    #[command(after_help = "Example:\n  keyward jobs delete 1b2c…")]
    Delete { id: String },
}

impl JobCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<Shown, CliError> {
        let path = |id: &str, rest: &str| format!("/sys/v1/jobs/{}{rest}", seg(id));
        match self {
            JobCmd::List => Ok(Shown::new(ctx.get("/sys/v1/jobs").await?, JOB)),
            JobCmd::Show { id } => Ok(Shown::object(ctx.get(&path(&id, "")).await?)),
            JobCmd::Create {
                name,
                workflow,
                cron,
                time_zone,
                group,
                input,
                paused,
            } => {
                let input = input.map(|i| json_arg("--input", &i)).transpose()?;
                Ok(Shown::object(
                    ctx.post(
                        "/sys/v1/jobs",
                        json!({"name": name, "workflow": workflow, "cron": cron,
                            "time_zone": time_zone, "group_id": group, "input": input,
                            "paused": paused.then_some(true)}),
                    )
                    .await?,
                ))
            }
            JobCmd::Pause { id } => Ok(Shown::object(
                ctx.post(&path(&id, "/pause"), json!({})).await?,
            )),
            JobCmd::Resume { id } => Ok(Shown::object(
                ctx.post(&path(&id, "/resume"), json!({})).await?,
            )),
            JobCmd::Fires { id } => Ok(Shown::new(ctx.get(&path(&id, "/fires")).await?, &[])),
            JobCmd::Delete { id } => {
                ctx.delete(&path(&id, "")).await?;
                Ok(Shown::object(json!({"id": id, "deleted": true})))
            }
        }
    }
}

const WEBHOOK: Columns = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("KIND", "/kind"),
    ("WORKFLOW", "/workflow"),
    ("GROUP", "/group_id"),
    ("PATH", "/path"),
];

#[derive(Subcommand, Debug)]
pub enum WebhookCmd {
    /// The account's webhooks.
    #[command(after_help = "Example:\n  keyward webhooks list")]
    List,
    /// One webhook.
    #[command(after_help = "Example:\n  keyward webhooks show 6a7b…")]
    Show { id: String },
    /// A webhook at /webhooks/<account id>/<name>; prints its signing secret, this once.
    #[command(
        after_help = "Examples:\n  keyward webhooks create --name ci-sync --workflow sync --group 3f0c…\n  keyward webhooks create --name azure-events --kind event_grid --group 3f0c…"
    )]
    Create {
        #[arg(long)]
        name: String,
        /// `standard` (Standard Webhooks, runs --workflow) or `event_grid`.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long)]
        group: Option<String>,
    },
    /// A new signing secret (the old one stays valid for a while); prints it, this once.
    #[command(after_help = "Example:\n  keyward webhooks rotate-secret 6a7b…")]
    RotateSecret { id: String },
    /// Deliveries received, newest first.
    #[command(after_help = "Example:\n  keyward webhooks deliveries 6a7b…")]
    Deliveries { id: String },
    /// Delete a webhook.
    #[command(after_help = "Example:\n  keyward webhooks delete 6a7b…")]
    Delete { id: String },
}

impl WebhookCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<Shown, CliError> {
        let path = |id: &str, rest: &str| format!("/sys/v1/webhooks/{}{rest}", seg(id));
        match self {
            WebhookCmd::List => Ok(Shown::new(ctx.get("/sys/v1/webhooks").await?, WEBHOOK)),
            WebhookCmd::Show { id } => Ok(Shown::object(ctx.get(&path(&id, "")).await?)),
            WebhookCmd::Create {
                name,
                kind,
                workflow,
                group,
            } => Ok(Shown::object(
                ctx.post(
                    "/sys/v1/webhooks",
                    json!({"name": name, "kind": kind, "workflow": workflow, "group_id": group}),
                )
                .await?,
            )),
            WebhookCmd::RotateSecret { id } => Ok(Shown::object(
                ctx.post(&path(&id, "/rotate_secret"), json!({})).await?,
            )),
            WebhookCmd::Deliveries { id } => {
                Ok(Shown::new(ctx.get(&path(&id, "/deliveries")).await?, &[]))
            }
            WebhookCmd::Delete { id } => {
                ctx.delete(&path(&id, "")).await?;
                Ok(Shown::object(json!({"id": id, "deleted": true})))
            }
        }
    }
}

const ENDPOINT: Columns = &[
    ("ID", "/id"),
    ("URL", "/url"),
    ("EVENTS", "/events"),
    ("ENABLED", "/enabled"),
    ("DISABLED BECAUSE", "/disabled_reason"),
];

#[derive(Subcommand, Debug)]
pub enum NotificationCmd {
    /// The account's notification endpoints.
    #[command(after_help = "Example:\n  keyward notifications list")]
    List,
    /// One endpoint.
    #[command(after_help = "Example:\n  keyward notifications show 2e3f…")]
    Show { id: String },
    /// An endpoint for key events; prints its signing secret, this once.
    #[command(
        after_help = "Example:\n  keyward notifications create --url https://hooks.example.com/keyward --events key.rotated,key.rotation_failed"
    )]
    Create {
        #[arg(long)]
        url: String,
        /// Event types, comma-separated (default: all).
        #[arg(long)]
        events: Option<String>,
    },
    /// Send to it again.
    #[command(after_help = "Example:\n  keyward notifications enable 2e3f…")]
    Enable { id: String },
    /// Stop sending to it.
    #[command(after_help = "Example:\n  keyward notifications disable 2e3f…")]
    Disable { id: String },
    /// Messages sent (or due) to it, newest first.
    #[command(after_help = "Example:\n  keyward notifications messages 2e3f…")]
    Messages { id: String },
    /// Delete an endpoint.
    #[command(after_help = "Example:\n  keyward notifications delete 2e3f…")]
    Delete { id: String },
}

impl NotificationCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<Shown, CliError> {
        let path =
            |id: &str, rest: &str| format!("/sys/v1/notification_endpoints/{}{rest}", seg(id));
        match self {
            NotificationCmd::List => Ok(Shown::new(
                ctx.get("/sys/v1/notification_endpoints").await?,
                ENDPOINT,
            )),
            NotificationCmd::Show { id } => Ok(Shown::object(ctx.get(&path(&id, "")).await?)),
            NotificationCmd::Create { url, events } => Ok(Shown::object(
                ctx.post(
                    "/sys/v1/notification_endpoints",
                    json!({"url": url, "events": events.map(|e| list_arg(&e))}),
                )
                .await?,
            )),
            NotificationCmd::Enable { id } => Ok(Shown::object(
                ctx.post(&path(&id, "/enable"), json!({})).await?,
            )),
            NotificationCmd::Disable { id } => Ok(Shown::object(
                ctx.post(&path(&id, "/disable"), json!({})).await?,
            )),
            NotificationCmd::Messages { id } => {
                Ok(Shown::new(ctx.get(&path(&id, "/messages")).await?, &[]))
            }
            NotificationCmd::Delete { id } => {
                ctx.delete(&path(&id, "")).await?;
                Ok(Shown::object(json!({"id": id, "deleted": true})))
            }
        }
    }
}
