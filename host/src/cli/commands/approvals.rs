//! `keyward approvals`: quorum approval requests, for requesters and reviewers.

use clap::Subcommand;
use serde_json::{Value, json};

use super::seg;
use crate::cli::output::{Columns, Shown};
use crate::cli::{CliError, Ctx, local};

const REQUEST: Columns = &[
    ("ID", "/request_id"),
    ("STATUS", "/status"),
    ("METHOD", "/method"),
    ("OPERATION", "/operation"),
    ("DESCRIPTION", "/description"),
    ("CREATED", "/created_at"),
];

#[derive(Subcommand, Debug)]
pub enum ApprovalCmd {
    /// Requests you made or may review (all of them for administrators and auditors).
    #[command(after_help = "Example:\n  keyward approvals list --status PENDING")]
    List {
        /// PENDING, APPROVED, DENIED or FAILED.
        #[arg(long)]
        status: Option<String>,
    },
    /// One request, with who approved it and who may.
    #[command(after_help = "Example:\n  keyward approvals show 5b1c…")]
    Show { id: String },
    /// Ask for a protected operation: its method, path and JSON body, as you would call it.
    #[command(
        after_help = "Example:\n  keyward approvals request --method POST --operation /crypto/v1/keys/rekey --body '{\"name\": \"orders\"}' --description 'quarterly rotation'"
    )]
    Request {
        #[arg(long)]
        method: String,
        #[arg(long)]
        operation: String,
        /// The operation's JSON body.
        #[arg(long)]
        body: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Approve a request the group's policy names you for (`--password-stdin` when it asks
    /// for your password). The last approval of the quorum carries the operation out.
    #[command(after_help = "Example:\n  keyward approvals approve 5b1c…")]
    Approve {
        id: String,
        /// Read your password from stdin (policies with require_password).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Deny a request, with a reason.
    #[command(after_help = "Example:\n  keyward approvals deny 5b1c… --reason 'not this quarter'")]
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// What the approved operation answered (the requester, once).
    #[command(after_help = "Example:\n  keyward approvals result 5b1c… -o json")]
    Result { id: String },
    /// Withdraw your pending request.
    #[command(after_help = "Example:\n  keyward approvals withdraw 5b1c…")]
    Withdraw { id: String },
}

impl ApprovalCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<Shown, CliError> {
        let path = |id: &str, rest: &str| format!("/sys/v1/approval_requests/{}{rest}", seg(id));
        match self {
            ApprovalCmd::List { status } => {
                let q = status.map_or(String::new(), |s| format!("?status={}", seg(&s)));
                Ok(Shown::new(
                    ctx.get(&format!("/sys/v1/approval_requests{q}")).await?,
                    REQUEST,
                ))
            }
            ApprovalCmd::Show { id } => Ok(Shown::object(ctx.get(&path(&id, "")).await?)),
            ApprovalCmd::Request {
                method,
                operation,
                body,
                description,
            } => {
                let body: Option<Value> = body
                    .map(|b| {
                        serde_json::from_str(&b)
                            .map_err(|e| local(format!("--body is not JSON: {e}")))
                    })
                    .transpose()?;
                Ok(Shown::object(
                    ctx.post(
                        "/sys/v1/approval_requests",
                        json!({"method": method, "operation": operation, "body": body,
                            "description": description}),
                    )
                    .await?,
                ))
            }
            ApprovalCmd::Approve { id, password_stdin } => {
                let body = if password_stdin {
                    json!({"password": super::read_stdin_line()?})
                } else {
                    json!({})
                };
                Ok(Shown::object(ctx.post(&path(&id, "/approve"), body).await?))
            }
            ApprovalCmd::Deny { id, reason } => Ok(Shown::object(
                ctx.post(&path(&id, "/deny"), json!({"reason": reason}))
                    .await?,
            )),
            ApprovalCmd::Result { id } => Ok(Shown::object(
                ctx.post(&path(&id, "/result"), json!(null)).await?,
            )),
            ApprovalCmd::Withdraw { id } => {
                ctx.delete(&path(&id, "")).await?;
                Ok(Shown::object(json!({"request_id": id, "withdrawn": true})))
            }
        }
    }
}
