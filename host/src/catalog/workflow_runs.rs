//! Workflow runs: what ran, why, for whom, with which (non-secret) inputs, how it ended and
//! its step log.

use crate::catalog::db::{self, Row};
use serde_json::Value;

use super::{CatalogError, Conn, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRun {
    pub id: String,
    pub account_id: Option<String>,
    pub group_id: Option<String>,
    pub workflow: String,
    /// `api`, `schedule`, `webhook`, ...
    pub trigger: String,
    /// `user:<id>`, `app:<id>` or `system:<name>`.
    pub principal: Option<String>,
    pub inputs: Value,
    /// `running`, `succeeded`, `failed` or `interrupted`.
    pub status: String,
    pub log: Value,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

fn json(r: &Row, col: &str) -> Result<Option<Value>> {
    let text: Option<String> = r.get(col);
    text.map(|t| {
        serde_json::from_str(&t).map_err(|_| CatalogError::Corrupt(format!("workflow run {col}")))
    })
    .transpose()
}

pub(crate) fn from_row(r: &Row) -> Result<WorkflowRun> {
    Ok(WorkflowRun {
        id: r.get("id"),
        account_id: r.get("account_id"),
        group_id: r.get("group_id"),
        workflow: r.get("workflow"),
        trigger: r.get("trigger"),
        principal: r.get("principal"),
        inputs: json(r, "inputs")?.unwrap_or(Value::Null),
        status: r.get("status"),
        log: json(r, "log")?.unwrap_or(Value::Null),
        output: json(r, "output")?,
        error: r.get("error"),
        started_at: r.get("started_at"),
        finished_at: r.get("finished_at"),
    })
}

pub async fn insert(c: &mut Conn, run: &WorkflowRun) -> Result<()> {
    db::query(
        "INSERT INTO workflow_runs (id, account_id, group_id, workflow, trigger, principal, inputs, status, log, output,
            error, started_at, finished_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&run.id)
    .bind(&run.account_id)
    .bind(&run.group_id)
    .bind(&run.workflow)
    .bind(&run.trigger)
    .bind(&run.principal)
    .bind(run.inputs.to_string())
    .bind(&run.status)
    .bind(run.log.to_string())
    .bind(run.output.as_ref().map(Value::to_string))
    .bind(&run.error)
    .bind(run.started_at)
    .bind(run.finished_at)
    .execute(c)
    .await?;
    Ok(())
}

/// Records how a run ended.
pub async fn finish(
    c: &mut Conn,
    id: &str,
    status: &str,
    log: &Value,
    output: Option<&Value>,
    error: Option<&str>,
    at: i64,
) -> Result<()> {
    db::query(
        "UPDATE workflow_runs SET status = ?, log = ?, output = ?, error = ?, finished_at = ? WHERE id = ?",
    )
    .bind(status)
    .bind(log.to_string())
    .bind(output.map(Value::to_string))
    .bind(error)
    .bind(at)
    .bind(id)
    .execute(c)
    .await?;
    Ok(())
}

/// Whether a run is still going (a daemon that stopped mid-run left it `interrupted`).
pub async fn is_running(c: &mut Conn, id: &str) -> Result<bool> {
    Ok(
        db::query("SELECT 1 FROM workflow_runs WHERE id = ? AND status = 'running'")
            .bind(id)
            .fetch_optional(c)
            .await?
            .is_some(),
    )
}

/// Runs left `running` by a daemon that stopped mid-run are marked `interrupted`.
pub async fn interrupt_unfinished(c: &mut Conn, at: i64) -> Result<u64> {
    Ok(db::query(
        "UPDATE workflow_runs SET status = 'interrupted', finished_at = ?, error = 'the daemon stopped during the run'
         WHERE status = 'running'",
    )
    .bind(at)
    .execute(c)
    .await?
    .rows_affected())
}

/// A run of `account`.
pub async fn get(c: &mut Conn, account: &str, id: &str) -> Result<Option<WorkflowRun>> {
    db::query("SELECT * FROM workflow_runs WHERE id = ? AND account_id = ?")
        .bind(id)
        .bind(account)
        .fetch_optional(c)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub account_id: String,
    pub group_id: Option<String>,
    pub workflow: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

/// Runs of an account, newest first.
pub async fn list(c: &mut Conn, f: &RunFilter) -> Result<Vec<WorkflowRun>> {
    let mut q = db::Builder::new("SELECT * FROM workflow_runs WHERE account_id = ");
    q.push_bind(f.account_id.clone());
    if let Some(g) = &f.group_id {
        q.push(" AND group_id = ").push_bind(g.clone());
    }
    if let Some(w) = &f.workflow {
        q.push(" AND workflow = ").push_bind(w.clone());
    }
    q.push(" ORDER BY started_at DESC, {seq} DESC LIMIT ")
        .push_bind(i64::from(f.limit))
        .push(" OFFSET ")
        .push_bind(i64::from(f.offset));
    q.build().fetch_all(c).await?.iter().map(from_row).collect()
}
