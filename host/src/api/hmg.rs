//! Groups linked to an external key manager (DSM's `hmg` endpoints): test a connection
//! before or after saving a group, list the Managed HSMs of a subscription, and sync the
//! group's keys (`scan`, synchronous, or `scans`, asynchronous with progress).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::audit::Event;
use crate::auth::Principal;
use crate::catalog::groups::{self, ConnectionRecord, Group};
use crate::catalog::sobjects;
use crate::catalog::workflow_runs::{self, RunFilter, WorkflowRun};
use crate::kms::{self, InstanceInfo, Link};
use crate::workflows::{RunRequest, WorkflowError};

use super::extract::{Body, Caller, id, parse_json};
use super::links::{ExternalKmsIn, link_settings};
use super::model::{SobjectOut, Time, opt_time, time};
use super::{ApiError, ApiResult, AppState};

/// DSM `{id?, config?}`: test the stored link, or the stored link with changes applied.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupCheck {
    /// The group (it is in the path already; accepted for DSM clients).
    pub id: Option<String>,
    pub config: Option<ExternalKmsIn>,
}

/// The result of a connection test.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectionStatus {
    /// `Connected` or `Not Connected`.
    pub status: String,
    /// Why not, as the identity provider or HSM said it.
    pub reason: Option<String>,
    /// The remote error code (e.g. `AADSTS7000215`), when there is one.
    pub error_code: Option<String>,
    /// The Managed HSMs and vaults of the subscription (DSM `KeyVault`).
    pub instances: Vec<InstanceInfo>,
    /// What works but not fully: permissions the application lacks on the chosen instance.
    pub warnings: Vec<String>,
    pub checked_at: Time,
    /// The workflow run that made the test.
    pub run_id: String,
}

/// One sync of a group (DSM `Scan`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanOut {
    pub scan_id: String,
    pub is_async: bool,
    /// `running`, `succeeded`, `failed` or `interrupted`.
    pub status: String,
    pub started_at: Time,
    pub finished_at: Option<Time>,
    /// `{"$type": "Success"}` or `{"$type": "Failed", "message": ...}` once finished.
    #[schema(value_type = Option<Object>)]
    pub scan_result: Option<Value>,
    /// Counters: `seen`, `added`, `failed`, `marked_deleted`, `marked_purged`.
    pub progress: BTreeMap<String, i64>,
    /// Ids of the virtual keys added.
    pub added: Vec<String>,
    /// Keys that could not be added, with the reason.
    #[schema(value_type = Vec<Object>)]
    pub warnings: Vec<Value>,
}

/// What the `test_connection` script leaves in its output.
#[derive(Debug, Default, Deserialize)]
struct ConnectionOutput {
    status: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    error: Option<RemoteErrorOut>,
    #[serde(default)]
    instances: Vec<InstanceInfo>,
}

/// A host error as scripts leave it in their output.
#[derive(Debug, Default, Deserialize)]
struct RemoteErrorOut {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// What the `sync` script leaves in its output.
#[derive(Debug, Default, Deserialize)]
struct SyncOutput {
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    failed: Vec<SyncFailure>,
    #[serde(default)]
    progress: BTreeMap<String, i64>,
}

#[derive(Debug, Deserialize)]
struct SyncFailure {
    name: String,
    #[serde(default)]
    error: RemoteErrorOut,
}

/// A script's output as the shape the caller expects; an edited script that leaves
/// something else there is read as leaving nothing.
fn output_of<T: Default + serde::de::DeserializeOwned>(run: &str, v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| {
        tracing::warn!(
            run,
            "the workflow's output is not in the expected shape: {e}"
        );
        T::default()
    })
}

fn sync_key(group: &str) -> String {
    crate::workflows::exclusive_for("sync", Some(group)).expect("syncs are exclusive")
}

/// A group of the caller's account that has a link.
async fn linked_group(state: &AppState, caller: &Caller, group_id: &str) -> ApiResult<Arc<Group>> {
    id("group", group_id)?;
    let g = state
        .group(caller.account(), group_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no group {group_id}")))?;
    if !caller.access.can_read_group(&g.id) {
        return Err(ApiError::Forbidden("you have no role in that group".into()));
    }
    if g.link.is_none() {
        return Err(ApiError::Conflict(
            "the group is not linked to an external key manager".into(),
        ));
    }
    Ok(g)
}

/// Runs the test-connection workflow with `link`.
async fn test_connection(
    state: &AppState,
    caller: &Caller,
    group: Option<Arc<Group>>,
    link: Link,
) -> ApiResult<ConnectionStatus> {
    let link_type = crate::kms::vault_type_of(link.conn.kind);
    let chosen = link.instance().map(str::to_string);
    let outcome = state
        .workflows
        .run(RunRequest {
            workflow: "test_connection".into(),
            trigger: crate::workflows::Trigger::Api,
            access: caller.access.clone(),
            group,
            link: Some(link),
            input: json!({}),
            secrets: vec![],
            pending: None,
            exclusive: None,
            run_id: None,
        })
        .await?;
    let o: ConnectionOutput = output_of(&outcome.run_id, &outcome.output);
    let error_code = o.error.map(|e| e.code).filter(|c| !c.is_empty());
    // A refusal by the instance: say what to grant, in the words of its kind.
    let refused = matches!(
        error_code.as_deref(),
        Some("Forbidden" | "ForbiddenByPolicy" | "AccessDenied")
    );
    let reason = match o.reason {
        Some(r) if refused => Some(format!("{}: {r}", crate::kms::access_advice(link_type))),
        r => r,
    };
    let warnings = o
        .instances
        .iter()
        .filter(|i| {
            chosen
                .as_deref()
                .is_some_and(|c| c.trim_end_matches('/') == i.uri.trim_end_matches('/'))
        })
        .filter_map(InstanceInfo::access_warning)
        .collect();
    Ok(ConnectionStatus {
        status: o.status.unwrap_or_else(|| "Not Connected".into()),
        reason,
        error_code,
        instances: o.instances,
        warnings,
        checked_at: time(state.now()),
        run_id: outcome.run_id,
    })
}

/// A link from settings that are not saved.
fn proposed_link(cfg: ExternalKmsIn) -> ApiResult<Link> {
    let (kind, config, secrets) = link_settings(None, HashMap::new(), cfg)?;
    Link::from_parts(kind, &config, &secrets).map_err(|e| ApiError::bad(e.to_string()))
}

/// Records the outcome of a connection test on the group's link, for the group list.
async fn record_status(
    state: &AppState,
    principal: &Principal,
    account: &str,
    group_id: &str,
    status: &ConnectionStatus,
) -> ApiResult<()> {
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    let Some(g) = groups::get(&mut tx, account, group_id).await? else {
        return Ok(());
    };
    let record = ConnectionRecord {
        status: status.status.clone(),
        reason: status.reason.clone(),
        error_code: status.error_code.clone(),
        checked_at: status.checked_at.clone(),
    };
    groups::set_connection(&mut tx, account, group_id, &record).await?;
    Event::new(
        Some(&g.account_id),
        principal,
        "group.check_connection",
        now,
    )
    .object("group", &g.id)
    .details(json!({"status": status.status, "reason": status.reason}))
    .write(&mut tx)
    .await?;
    tx.commit().await?;
    state.forget_group(group_id);
    Ok(())
}

/// Tests a saved group's connection in the background (after the group was created or its
/// link changed) and records the status.
pub fn check_later(state: Arc<AppState>, caller: Caller, group_id: String) {
    tokio::spawn(async move {
        let result = async {
            // The caller just saved the group, so it may test it (its roles, read before
            // the save, may not show that yet).
            let g = state
                .group(caller.account(), &group_id)
                .await?
                .ok_or_else(|| ApiError::NotFound(group_id.clone()))?;
            let link = Link::of_group(&state.catalog, &g)?;
            let status = test_connection(&state, &caller, Some(g), link).await?;
            record_status(
                &state,
                caller.principal(),
                caller.account(),
                &group_id,
                &status,
            )
            .await
        }
        .await;
        if let Err(e) = result {
            // An incomplete link stays unchecked until it is completed.
            tracing::debug!(group = %group_id, "background connection check skipped: {e}");
        }
    });
}

/// Lists the Managed HSMs and Key Vault vaults of the subscription (DSM `KeyVault` objects,
/// with `vault_type` STANDARD, PREMIUM or MANAGED). Failing to connect is
/// an error here (use `hmg/check` to get the reason as a status).
#[utoipa::path(post, path = "/sys/v1/groups/hmg/azure_vaults", tag = "groups", request_body = ExternalKmsIn,
    responses((status = 200, body = [InstanceInfo]), (status = 400, body = super::error::ErrorBody), (status = 502, body = super::error::ErrorBody)))]
pub async fn azure_vaults(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(cfg): Body<ExternalKmsIn>,
) -> ApiResult<Json<Vec<InstanceInfo>>> {
    if !caller.access.can_create_group() {
        return Err(ApiError::Forbidden(
            "only users who create groups test links".into(),
        ));
    }
    let link = proposed_link(cfg)?;
    let status = test_connection(&state, &caller, None, link).await?;
    if status.status != "Connected" {
        return Err(ApiError::BadGateway(format!(
            "Not Connected: {}",
            status.reason.unwrap_or_default()
        )));
    }
    Ok(Json(status.instances))
}

/// Tests link settings before a group is saved (F8).
#[utoipa::path(post, path = "/sys/v1/groups/hmg/check", tag = "groups", request_body = ExternalKmsIn,
    responses((status = 200, body = ConnectionStatus), (status = 400, body = super::error::ErrorBody)))]
pub async fn check_config(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(cfg): Body<ExternalKmsIn>,
) -> ApiResult<Json<ConnectionStatus>> {
    if !caller.access.can_create_group() {
        return Err(ApiError::Forbidden(
            "only users who create groups test links".into(),
        ));
    }
    let link = proposed_link(cfg)?;
    Ok(Json(test_connection(&state, &caller, None, link).await?))
}

/// Tests a saved group's link (optionally with changes applied, without saving them) and
/// records the status the group list shows.
#[utoipa::path(post, path = "/sys/v1/groups/{id}/hmg/check",
    params(("id" = String, Path, description = "The group's id")), tag = "groups", request_body = GroupCheck,
    responses((status = 200, body = ConnectionStatus), (status = 409, body = super::error::ErrorBody)))]
pub async fn check_group(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(group_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<ConnectionStatus>> {
    let g = linked_group(&state, &caller, &group_id).await?;
    if !caller.access.can_manage_group(&g.id) {
        return Err(ApiError::Forbidden(
            "only the group's administrators test its link".into(),
        ));
    }
    let req: GroupCheck = if body.iter().all(u8::is_ascii_whitespace) {
        GroupCheck::default()
    } else {
        parse_json(&body)?
    };
    if req.id.as_ref().is_some_and(|i| *i != g.id) {
        return Err(ApiError::field(
            "id",
            "does not match the group in the path",
        ));
    }
    let stored = g.link.as_ref().expect("linked");
    let (link, changed) = match req.config {
        None => (Link::of_group(&state.catalog, &g)?, false),
        Some(cfg) => {
            let secrets = kms::unseal(&state.catalog, &g.id, stored)?;
            let (kind, config, secrets) = link_settings(Some(&stored.config), secrets, cfg)?;
            let link = Link::from_parts(kind, &config, &secrets)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            (link, true)
        }
    };
    let status = test_connection(&state, &caller, Some(g.clone()), link).await?;
    if !changed {
        record_status(&state, caller.principal(), caller.account(), &g.id, &status).await?;
    }
    Ok(Json(status))
}

fn sync_request(caller: &Caller, g: Arc<Group>, link: Link) -> RunRequest {
    RunRequest {
        workflow: "sync".into(),
        trigger: crate::workflows::Trigger::Api,
        access: caller.access.clone(),
        exclusive: Some(sync_key(&g.id)),
        group: Some(g),
        link: Some(link),
        input: json!({}),
        secrets: vec![],
        pending: None,
        run_id: None,
    }
}

async fn sync_target(
    state: &AppState,
    caller: &Caller,
    group_id: &str,
) -> ApiResult<(Arc<Group>, Link)> {
    let g = linked_group(state, caller, group_id).await?;
    if !caller.access.can_manage_keys(&g.id) {
        return Err(ApiError::Forbidden(
            "you may not manage keys in that group".into(),
        ));
    }
    let link = Link::of_group(&state.catalog, &g)?;
    if link.instance().is_none() {
        return Err(ApiError::Conflict(
            "choose the group's Managed HSM instance before syncing".into(),
        ));
    }
    Ok((g, link))
}

fn busy(e: WorkflowError) -> ApiError {
    match e {
        WorkflowError::Busy { run_id } => ApiError::Conflict(format!(
            "a sync of this group is running (scan {run_id}); wait for it to finish"
        )),
        other => other.into(),
    }
}

/// Syncs the group now (F13) and returns the virtual keys it added.
#[utoipa::path(post, path = "/sys/v1/groups/{id}/hmg/scan",
    params(("id" = String, Path, description = "The group's id")), tag = "groups",
    responses((status = 200, body = [SobjectOut]), (status = 409, body = super::error::ErrorBody)))]
pub async fn scan(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(group_id): Path<String>,
) -> ApiResult<Json<Vec<SobjectOut>>> {
    let (g, link) = sync_target(&state, &caller, &group_id).await?;
    let outcome = state
        .workflows
        .run(sync_request(&caller, g, link))
        .await
        .map_err(busy)?;
    let now = state.now();
    let mut conn = state.catalog.conn().await?;
    let mut out = Vec::new();
    let output: SyncOutput = output_of(&outcome.run_id, &outcome.output);
    for kid in &output.added {
        if let Some(o) = sobjects::get(&mut conn, caller.account(), kid).await? {
            let links = sobjects::links_of(&mut conn, &o.kid).await?;
            out.push(SobjectOut::new(&o, &links, None, now));
        }
    }
    Ok(Json(out))
}

/// Starts a sync in the background; its progress is at `GET .../hmg/scans/{scan_id}`.
#[utoipa::path(post, path = "/sys/v1/groups/{id}/hmg/scans",
    params(("id" = String, Path, description = "The group's id")), tag = "groups",
    responses((status = 202, body = ScanOut), (status = 409, body = super::error::ErrorBody)))]
pub async fn start_scan(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(group_id): Path<String>,
) -> ApiResult<(StatusCode, Json<ScanOut>)> {
    let (g, link) = sync_target(&state, &caller, &group_id).await?;
    let handle = state
        .workflows
        .start(sync_request(&caller, g, link))
        .await
        .map_err(busy)?;
    let run_id = handle.run_id.clone();
    // The run records its own outcome; nobody waits for it here.
    tokio::spawn(async move {
        let _ = handle.wait().await;
    });
    let mut conn = state.catalog.conn().await?;
    let run = workflow_runs::get(&mut conn, caller.account(), &run_id)
        .await?
        .ok_or_else(|| ApiError::Internal("the scan run vanished".into()))?;
    Ok((StatusCode::ACCEPTED, Json(scan_out(&state, &run))))
}

/// The last five syncs of the group, the running one included.
#[utoipa::path(get, path = "/sys/v1/groups/{id}/hmg/scans",
    params(("id" = String, Path, description = "The group's id")), tag = "groups",
    responses((status = 200, body = [ScanOut])))]
pub async fn scans(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(group_id): Path<String>,
) -> ApiResult<Json<Vec<ScanOut>>> {
    let g = linked_group(&state, &caller, &group_id).await?;
    let mut conn = state.catalog.conn().await?;
    let runs = workflow_runs::list(
        &mut conn,
        &RunFilter {
            account_id: g.account_id.clone(),
            group_id: Some(g.id.clone()),
            workflow: Some("sync".into()),
            limit: 5,
            offset: 0,
        },
    )
    .await?;
    Ok(Json(runs.iter().map(|r| scan_out(&state, r)).collect()))
}

#[utoipa::path(get, path = "/sys/v1/groups/{id}/hmg/scans/{scan_id}",
    params(("id" = String, Path, description = "The group's id"), ("scan_id" = String, Path, description = "The scan's id")), tag = "groups",
    responses((status = 200, body = ScanOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_scan(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((group_id, scan_id)): Path<(String, String)>,
) -> ApiResult<Json<ScanOut>> {
    let g = linked_group(&state, &caller, &group_id).await?;
    id("scan", &scan_id)?;
    let mut conn = state.catalog.conn().await?;
    match workflow_runs::get(&mut conn, caller.account(), &scan_id).await? {
        Some(r) if r.group_id.as_deref() == Some(g.id.as_str()) && r.workflow == "sync" => {
            Ok(Json(scan_out(&state, &r)))
        }
        _ => Err(ApiError::NotFound(format!(
            "no scan {scan_id} of this group"
        ))),
    }
}

fn scan_out(state: &AppState, r: &WorkflowRun) -> ScanOut {
    let output: SyncOutput = r
        .output
        .as_ref()
        .map(|o| output_of(&r.id, o))
        .unwrap_or_default();
    let progress = state.workflows.progress(&r.id).unwrap_or(output.progress);
    let scan_result = match r.status.as_str() {
        "succeeded" => Some(json!({"$type": "Success"})),
        "running" => None,
        _ => Some(json!({"$type": "Failed", "message": r.error})),
    };
    ScanOut {
        scan_id: r.id.clone(),
        is_async: true,
        status: r.status.clone(),
        started_at: time(r.started_at),
        finished_at: opt_time(r.finished_at),
        scan_result,
        progress,
        added: output.added,
        warnings: output
            .failed
            .into_iter()
            .map(|f| json!({"external_name": f.name, "message": f.error.message}))
            .collect(),
    }
}
