//! Workflow scripts and their runs: which scripts exist (shipped, overridden by the daemon's
//! operator or by the account, and whether an override fails to compile), their source, the
//! account's versions (put, check, restore, revert), running one by hand, and the record of
//! every run. The changes are `Workflows`' (`workflows::editing`); this parses and renders.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::catalog::workflow_runs::{self, RunFilter, WorkflowRun};
use crate::catalog::workflow_scripts::ScriptVersion;
use crate::kms::Link;
use crate::workflows::store::valid_name;
use crate::workflows::{CompileProblem, RunRequest, ScriptError, ScriptInfo, Trigger};

use super::extract::{Body, Caller, id};
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
    caller: Caller,
) -> ApiResult<Json<WorkflowsOut>> {
    let workflows = state.workflows.clone();
    let account = caller.account().to_string();
    workflows.refresh_account_scripts(&account).await?;
    let list = tokio::task::spawn_blocking(move || workflows.list(&account))
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
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<WorkflowSource>> {
    if !valid_name(&name) {
        return Err(ApiError::NotFound(format!("no workflow named '{name}'")));
    }
    let workflows = state.workflows.clone();
    let account = caller.account().to_string();
    workflows.refresh_account_scripts(&account).await?;
    let (source, info) = tokio::task::spawn_blocking(move || {
        let source = workflows.source(&account, &name)?;
        let info = workflows
            .list(&account)
            .into_iter()
            .find(|i| i.name == name);
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
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    #[param(schema_with = super::schemas::workflow_name)]
    pub workflow: Option<String>,
    #[param(schema_with = super::schemas::id)]
    pub group_id: Option<String>,
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    #[param(schema_with = super::schemas::offset)]
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
    if let Some(w) = q
        .workflow
        .as_deref()
        .filter(|w| !crate::workflows::store::valid_name(w))
    {
        return Err(ApiError::field(
            "workflow",
            format!("'{w}' is not a workflow name"),
        ));
    }
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

/// An account's version of a script.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptPut {
    /// The Rhai source (at most 256 KiB). It must compile; the error names line and column.
    pub source: String,
    /// Why this version, kept with it.
    pub comment: Option<String>,
}

/// A script to compile without storing it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptCheck {
    pub source: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckOut {
    pub valid: bool,
    /// Why it does not compile (line and column are 1-based).
    pub problem: Option<CompileProblem>,
}

/// Which script the account's runs use from a version on.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Uses {
    /// This version's source.
    Account,
    /// The daemon's script (override directory or shipped): the account went back to it.
    Daemon,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScriptVersionOut {
    pub name: String,
    pub version: i64,
    pub uses: Uses,
    /// `user:<id>` or `app:<id>`.
    pub author: String,
    pub created_at: Time,
    /// The version this one restored.
    pub restored_from: Option<i64>,
    pub comment: Option<String>,
    /// The source (in the answers about one version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

fn version_out(v: ScriptVersion, with_source: bool) -> ScriptVersionOut {
    ScriptVersionOut {
        uses: if v.source.is_some() {
            Uses::Account
        } else {
            Uses::Daemon
        },
        source: v.source.filter(|_| with_source),
        name: v.name,
        version: v.version,
        author: v.author,
        created_at: time(v.created_at),
        restored_from: v.restored_from,
        comment: v.comment,
    }
}

fn script_name(name: &str) -> ApiResult<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ScriptError::InvalidName.into())
    }
}

/// A version number from the path (parsed here, so that a bad one gets the API's JSON error).
fn version_number(text: &str) -> ApiResult<i64> {
    text.parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| ApiError::field("version", "must be a version number: 1, 2, ..."))
}

/// Puts the account's own version of a workflow or module (account administrators). It is
/// compiled first: one that does not compile is refused with its line and column, and the
/// version in use stays. The account's next runs use it; other accounts never see it.
#[utoipa::path(put, path = "/sys/v1/workflows/{name}", tag = "workflows", request_body = ScriptPut,
    params(("name" = String, Path, description = "The workflow's name")),
    responses((status = 200, body = ScriptVersionOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<ScriptPut>,
) -> ApiResult<Json<ScriptVersionOut>> {
    script_name(&name)?;
    let v = state
        .workflows
        .put_script(&caller.access, &name, req.source, req.comment.as_deref())
        .await?;
    Ok(Json(version_out(v, false)))
}

/// Goes back to the daemon's script: the account's versions stay and can be restored.
#[utoipa::path(delete, path = "/sys/v1/workflows/{name}", tag = "workflows",
    params(("name" = String, Path, description = "The workflow's name")),
    responses((status = 200, body = ScriptVersionOut), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn revert(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScriptVersionOut>> {
    script_name(&name)?;
    let v = state.workflows.revert_script(&caller.access, &name).await?;
    Ok(Json(version_out(v, false)))
}

/// Compiles a script without storing it.
#[utoipa::path(post, path = "/sys/v1/workflows/{name}/check", tag = "workflows", request_body = ScriptCheck,
    params(("name" = String, Path, description = "The workflow's name")),
    responses((status = 200, body = CheckOut), (status = 400, body = super::error::ErrorBody)))]
pub async fn check(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<ScriptCheck>,
) -> ApiResult<Json<CheckOut>> {
    script_name(&name)?;
    match state.workflows.check_script(&name, &req.source) {
        Ok(()) => Ok(Json(CheckOut {
            valid: true,
            problem: None,
        })),
        Err(ScriptError::Compile(p)) => Ok(Json(CheckOut {
            valid: false,
            problem: Some(p),
        })),
        Err(e) => Err(e.into()),
    }
}

/// The account's versions of a script, newest first (the newest is in use).
#[utoipa::path(get, path = "/sys/v1/workflows/{name}/versions", tag = "workflows",
    params(("name" = String, Path, description = "The workflow's name")),
    responses((status = 200, body = [ScriptVersionOut])))]
pub async fn versions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<ScriptVersionOut>>> {
    script_name(&name)?;
    let list = state
        .workflows
        .script_versions(&caller.access, &name)
        .await?;
    Ok(Json(
        list.into_iter().map(|v| version_out(v, false)).collect(),
    ))
}

/// One version, with its source.
#[utoipa::path(get, path = "/sys/v1/workflows/{name}/versions/{version}", tag = "workflows",
    params(("name" = String, Path, description = "The workflow's name"),
        ("version" = i64, Path, minimum = 1, description = "The version's number")),
    responses((status = 200, body = ScriptVersionOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn version(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<ScriptVersionOut>> {
    script_name(&name)?;
    let version = version_number(&version)?;
    let v = state
        .workflows
        .script_version(&caller.access, &name, version)
        .await?;
    Ok(Json(version_out(v, true)))
}

/// Makes an earlier version the one in use, as a new version.
#[utoipa::path(post, path = "/sys/v1/workflows/{name}/versions/{version}/restore", tag = "workflows",
    params(("name" = String, Path, description = "The workflow's name"),
        ("version" = i64, Path, minimum = 1, description = "The version to restore")),
    responses((status = 200, body = ScriptVersionOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn restore(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<ScriptVersionOut>> {
    script_name(&name)?;
    let version = version_number(&version)?;
    let v = state
        .workflows
        .restore_script(&caller.access, &name, version)
        .await?;
    Ok(Json(version_out(v, false)))
}

/// A run started by hand.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunWorkflow {
    /// The group the run works on (its link is the run's `group`).
    pub group_id: Option<String>,
    /// The script's `input`.
    #[schema(value_type = Option<Object>)]
    pub input: Option<serde_json::Map<String, Value>>,
    /// Wait for the run to end (default); `false` answers 202 as soon as it started.
    pub wait: Option<bool>,
}

/// Runs a workflow now, as the caller (account administrators): the key service checks
/// every change the script makes against the caller, as through the API. The answer is the
/// run's record, whether the run succeeded or failed (`status`, `error`, `log`).
#[utoipa::path(post, path = "/sys/v1/workflows/{name}/run", tag = "workflows", request_body = RunWorkflow,
    params(("name" = String, Path, description = "The workflow's name")),
    responses((status = 200, body = RunOut), (status = 202, body = RunOut), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn start(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<RunWorkflow>,
) -> ApiResult<(StatusCode, Json<RunOut>)> {
    script_name(&name)?;
    if let Some(g) = &req.group_id {
        id("group", g)?;
    }
    crate::workflows::may_start(&caller.access, &name, req.group_id.as_deref())?;
    let (group, link) = match &req.group_id {
        None => (None, None),
        Some(g) => {
            id("group", g)?;
            let group = state.keys.group(caller.account(), g).await?;
            let link = Link::if_linked(&state.catalog, &group)?;
            (Some(group), link)
        }
    };
    let exclusive = crate::workflows::exclusive_for(&name, req.group_id.as_deref());
    let handle = state
        .workflows
        .start(RunRequest {
            workflow: name,
            trigger: Trigger::Api,
            access: caller.access.clone(),
            group,
            link,
            input: Value::Object(req.input.unwrap_or_default()),
            secrets: vec![],
            pending: None,
            exclusive,
            run_id: None,
        })
        .await?;
    let run_id = handle.run_id.clone();
    let status = if req.wait.unwrap_or(true) {
        // However the run ends, its record says how (status, error, step log): a script
        // that fails is the caller's to read, not a failed request.
        let _ = handle.wait().await;
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut conn = state.catalog.conn().await?;
    let run = workflow_runs::get(&mut conn, caller.account(), &run_id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("workflow run {run_id} vanished")))?;
    Ok((status, Json(run_out(&state, run))))
}
