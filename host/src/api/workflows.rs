//! Workflow scripts and their runs: which scripts exist (shipped or overridden, and whether
//! an override fails to compile), their source, and the record of every run.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::catalog::workflow_runs::{self, RunFilter, WorkflowRun};
use crate::workflows::ScriptInfo;
use crate::workflows::store::valid_name;

use super::extract::{Caller, id};
use super::model::{Time, opt_time, time};
use super::{ApiError, ApiResult, AppState};

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowsOut {
    /// Where overrides are read from: a `<name>.rhai` file there replaces the shipped script
    /// of that name on its next run.
    pub override_dir: Option<String>,
    pub workflows: Vec<ScriptInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowSource {
    #[serde(flatten)]
    pub info: ScriptInfo,
    /// The script in use.
    pub source: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunOut {
    pub run_id: String,
    pub workflow: String,
    pub trigger: String,
    pub principal: Option<String>,
    pub group_id: Option<String>,
    /// `running`, `succeeded`, `failed` or `interrupted`.
    pub status: String,
    /// The inputs, secrets shown as `<secret>`.
    #[schema(value_type = Object)]
    pub inputs: Value,
    /// Step log: `[{at, message}]`.
    #[schema(value_type = Vec<Object>)]
    pub log: Value,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
    /// Live counters of a running run.
    #[schema(value_type = Option<Object>)]
    pub progress: Option<Value>,
    pub started_at: Time,
    pub finished_at: Option<Time>,
}

fn run_out(state: &AppState, r: WorkflowRun) -> RunOut {
    RunOut {
        progress: state
            .workflows
            .progress(&r.id)
            .map(|p| serde_json::to_value(p).unwrap_or_default()),
        run_id: r.id,
        workflow: r.workflow,
        trigger: r.trigger,
        principal: r.principal,
        group_id: r.group_id,
        status: r.status,
        inputs: r.inputs,
        log: r.log,
        output: r.output,
        error: r.error,
        started_at: time(r.started_at),
        finished_at: opt_time(r.finished_at),
    }
}

#[utoipa::path(get, path = "/sys/v1/workflows", tag = "workflows", responses((status = 200, body = WorkflowsOut)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
) -> ApiResult<Json<WorkflowsOut>> {
    let workflows = state.workflows.clone();
    let list = tokio::task::spawn_blocking(move || workflows.list())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(WorkflowsOut {
        override_dir: state
            .workflows
            .override_dir()
            .map(|d| d.display().to_string()),
        workflows: list,
    }))
}

#[utoipa::path(get, path = "/sys/v1/workflows/{name}",
    params(("name" = String, Path, description = "The workflow's name")), tag = "workflows",
    responses((status = 200, body = WorkflowSource), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<WorkflowSource>> {
    if !valid_name(&name) {
        return Err(ApiError::NotFound(format!("no workflow named '{name}'")));
    }
    let workflows = state.workflows.clone();
    let (source, info) = tokio::task::spawn_blocking(move || {
        let source = workflows.source(&name)?;
        let info = workflows.list().into_iter().find(|i| i.name == name);
        Ok::<_, crate::workflows::WorkflowError>((source, info))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let info = info.ok_or_else(|| ApiError::NotFound("no such workflow".into()))?;
    Ok(Json(WorkflowSource {
        info,
        source: source.to_string(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    pub workflow: Option<String>,
    pub group_id: Option<String>,
    /// 1 to 200 (default 50).
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// Runs of the caller's account, newest first. Account administrators and auditors see every
/// run; others the runs of their groups and their own.
#[utoipa::path(get, path = "/sys/v1/workflow_runs", tag = "workflows", params(RunQuery),
    responses((status = 200, body = [RunOut])))]
pub async fn runs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<RunOut>>> {
    let Query(q) = query.map_err(|e| ApiError::bad(format!("invalid query: {e}")))?;
    if let Some(g) = &q.group_id {
        id("group", g)?;
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::field("limit", "must be 1 to 200"));
    }
    let mut conn = state.catalog.conn().await?;
    let runs = workflow_runs::list(
        &mut conn,
        &RunFilter {
            account_id: caller.account().to_string(),
            group_id: q.group_id,
            workflow: q.workflow,
            limit,
            offset: q.offset.unwrap_or(0),
        },
    )
    .await?;
    Ok(Json(
        runs.into_iter()
            .filter(|r| visible(&caller, r))
            .map(|r| run_out(&state, r))
            .collect(),
    ))
}

fn visible(caller: &Caller, r: &WorkflowRun) -> bool {
    caller.access.reads_whole_account()
        || r.group_id
            .as_deref()
            .is_some_and(|g| caller.access.can_read_group(g))
        || r.principal.as_deref()
            == Some(&format!(
                "{}:{}",
                caller.principal().kind(),
                caller.principal().id()
            ))
}

#[utoipa::path(get, path = "/sys/v1/workflow_runs/{id}",
    params(("id" = String, Path, description = "The workflow run's id")), tag = "workflows",
    responses((status = 200, body = RunOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn run(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(run_id): Path<String>,
) -> ApiResult<Json<RunOut>> {
    id("workflow run", &run_id)?;
    let mut conn = state.catalog.conn().await?;
    match workflow_runs::get(&mut conn, caller.account(), &run_id).await? {
        Some(r) if visible(&caller, &r) => Ok(Json(run_out(&state, r))),
        _ => Err(ApiError::NotFound(format!("no workflow run {run_id}"))),
    }
}
