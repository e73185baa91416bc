//! `keyward workflows`: the scripts an account runs (shipped, the daemon's overrides, its own
//! versions), checking and putting them, their versions, runs by hand and the run records.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::{json_arg, query, read_text, seg};
use crate::cli::output::{Columns, Shown};
use crate::cli::{CliError, Ctx, Paging};

const RUN: Columns = &[
    ("RUN", "/run_id"),
    ("WORKFLOW", "/workflow"),
    ("TRIGGER", "/trigger"),
    ("STATUS", "/status"),
    ("GROUP", "/group_id"),
    ("STARTED", "/started_at"),
    ("ERROR", "/error"),
];

const VERSION: Columns = &[
    ("VERSION", "/version"),
    ("USES", "/uses"),
    ("AUTHOR", "/author"),
    ("CREATED", "/created_at"),
    ("RESTORED FROM", "/restored_from"),
    ("COMMENT", "/comment"),
];

#[derive(Subcommand, Debug)]
pub enum WorkflowCmd {
    /// Every workflow and module, and which version runs.
    #[command(after_help = "Example:\n  keyward workflows list")]
    List,
    /// The source the account's runs use.
    #[command(
        after_help = "Example:\n  keyward workflows show sync -o json | jq -r .source > sync.rhai"
    )]
    Show { name: String },
    /// Compile a script without storing it (line and column of what is wrong).
    #[command(after_help = "Example:\n  keyward workflows check sync --file sync.rhai")]
    Check {
        name: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Put the account's own version of a script (it must compile).
    #[command(
        after_help = "Example:\n  keyward workflows put sync --file sync.rhai --comment 'skip test keys'"
    )]
    Put {
        name: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        comment: Option<String>,
    },
    /// The account's versions of a script, newest (in use) first.
    #[command(after_help = "Example:\n  keyward workflows versions sync")]
    Versions { name: String },
    /// Make an earlier version the one in use.
    #[command(after_help = "Example:\n  keyward workflows restore sync 2")]
    Restore { name: String, version: i64 },
    /// Go back to the daemon's script (the account's versions stay).
    #[command(after_help = "Example:\n  keyward workflows revert sync")]
    Revert { name: String },
    /// Run a workflow now, as you.
    #[command(
        after_help = "Example:\n  keyward workflows run sync_key --group 3f0c… --input '{\"kid\": \"9a1e…\"}'"
    )]
    Run {
        name: String,
        #[arg(long)]
        group: Option<String>,
        /// The script's input: JSON, or @file.
        #[arg(long)]
        input: Option<String>,
        /// Print the run as soon as it started.
        #[arg(long)]
        no_wait: bool,
    },
    /// Recorded runs, newest first.
    #[command(after_help = "Example:\n  keyward workflows runs --workflow sync --limit 10")]
    Runs {
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// One run, with its step log.
    #[command(after_help = "Example:\n  keyward workflows run-log 5d1c…")]
    RunLog { run_id: String },
}

impl WorkflowCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<Shown, CliError> {
        let path = |name: &str, rest: &str| format!("/sys/v1/workflows/{}{rest}", seg(name));
        match self {
            WorkflowCmd::List => {
                let list = ctx.get("/sys/v1/workflows").await?;
                Ok(Shown::new(
                    list["workflows"].clone(),
                    &[
                        ("NAME", "/name"),
                        ("IN USE", "/origin"),
                        ("ACCOUNT VERSION", "/account_version"),
                        ("SHIPPED", "/shipped"),
                        ("PROBLEM", "/problem/message"),
                    ],
                ))
            }
            WorkflowCmd::Show { name } => Ok(Shown::object(ctx.get(&path(&name, "")).await?)),
            WorkflowCmd::Check { name, file } => {
                let checked = ctx
                    .post(&path(&name, "/check"), json!({"source": read_text(&file)?}))
                    .await?;
                if checked["valid"] != true {
                    let p = &checked["problem"];
                    return Err(CliError::Failed {
                        message: format!(
                            "{}:{}:{}: {}",
                            file.display(),
                            p["line"],
                            p["column"],
                            p["message"].as_str().unwrap_or_default()
                        ),
                        record: checked,
                    });
                }
                Ok(Shown::object(checked))
            }
            WorkflowCmd::Put {
                name,
                file,
                comment,
            } => Ok(Shown::new(
                ctx.put(
                    &path(&name, ""),
                    json!({"source": read_text(&file)?, "comment": comment}),
                )
                .await?,
                VERSION,
            )),
            WorkflowCmd::Versions { name } => Ok(Shown::new(
                ctx.get(&path(&name, "/versions")).await?,
                VERSION,
            )),
            WorkflowCmd::Restore { name, version } => Ok(Shown::new(
                ctx.post(
                    &path(&name, &format!("/versions/{version}/restore")),
                    json!({}),
                )
                .await?,
                VERSION,
            )),
            WorkflowCmd::Revert { name } => {
                Ok(Shown::new(ctx.delete(&path(&name, "")).await?, VERSION))
            }
            WorkflowCmd::Run {
                name,
                group,
                input,
                no_wait,
            } => {
                let input = input.map(|i| json_arg("--input", &i)).transpose()?;
                let run = ctx
                    .post(
                        &path(&name, "/run"),
                        json!({"group_id": group, "input": input, "wait": !no_wait}),
                    )
                    .await?;
                if run["status"] == "failed" {
                    return Err(CliError::Failed {
                        message: format!(
                            "the run failed: {}",
                            run["error"].as_str().unwrap_or_default()
                        ),
                        record: run,
                    });
                }
                Ok(Shown::object(run))
            }
            WorkflowCmd::Runs {
                workflow,
                group,
                paging,
            } => Ok(Shown::new(
                ctx.list(
                    &format!(
                        "/sys/v1/workflow_runs{}",
                        query(&[("workflow", workflow), ("group_id", group)])
                    ),
                    &paging,
                    200,
                )
                .await?,
                RUN,
            )),
            WorkflowCmd::RunLog { run_id } => Ok(Shown::object(
                ctx.get(&format!("/sys/v1/workflow_runs/{}", seg(&run_id)))
                    .await?,
            )),
        }
    }
}
