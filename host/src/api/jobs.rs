//! Cron jobs: `POST/GET /sys/v1/jobs`, `GET/DELETE /sys/v1/jobs/{id}`,
//! `POST /sys/v1/jobs/{id}/pause` and `/resume`, and `GET /sys/v1/jobs/{id}/fires`. The job
//! service (`scheduler::jobs`) owns the rules and writes.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::catalog::schedule::Job;
use crate::scheduler::jobs::{JobError, NewJob};

use super::extract::{Body, Caller, id};
use super::model::{Time, opt_time, time};
use super::rotation::FireOut;
use super::{ApiError, ApiResult, AppState};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Unique in the account; 1 to 128 characters, not only spaces.
    #[schema(min_length = 1, max_length = 128, pattern = r"\S")]
    pub name: String,
    /// The workflow to run (`GET /sys/v1/workflows`), for example `sync`.
    #[schema(schema_with = super::schemas::workflow_name)]
    pub workflow: String,
    /// The group it runs for (its link, its keys); account administrators may leave it out.
    #[schema(schema_with = super::schemas::id)]
    pub group_id: Option<String>,
    /// Five fields (minute hour day-of-month month day-of-week), six with seconds first, or
    /// `@daily`, `@hourly`, ...
    #[schema(schema_with = super::schemas::cron)]
    pub cron: String,
    /// The IANA time zone the cron times are in (default `UTC`).
    #[schema(schema_with = super::schemas::time_zone)]
    pub time_zone: Option<String>,
    /// The workflow's `input` (stored as given: no secrets).
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// Create it paused.
    pub paused: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobOut {
    pub id: String,
    pub name: String,
    pub workflow: String,
    pub group_id: Option<String>,
    pub cron: String,
    pub time_zone: String,
    #[schema(value_type = Object)]
    pub input: Value,
    pub paused: bool,
    /// The next time it runs (none while paused).
    pub next_run: Option<Time>,
    pub last_fire: Option<Time>,
    /// The job runs as this principal (`{"user": id}` or `{"app": id}`).
    #[schema(value_type = Object)]
    pub owner: Value,
    pub created_at: Time,
}

impl From<Job> for JobOut {
    fn from(j: Job) -> Self {
        JobOut {
            id: j.id,
            name: j.name,
            workflow: j.workflow,
            group_id: j.group_id,
            cron: j.cron.expression().to_string(),
            time_zone: j.cron.time_zone().to_string(),
            input: j.input,
            paused: j.paused,
            next_run: opt_time(j.next_due),
            last_fire: opt_time(j.last_fire),
            owner: serde_json::json!({ j.owner.kind(): j.owner.id() }),
            created_at: time(j.created_at),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Invalid { field, message } => ApiError::field(&field, message),
            JobError::NotFound(m) => ApiError::NotFound(m),
            JobError::Forbidden(m) => ApiError::Forbidden(m),
            JobError::NameTaken(m) => ApiError::Conflict(m),
            JobError::Catalog(c) => ApiError::from(c),
        }
    }
}

#[utoipa::path(post, path = "/sys/v1/jobs", tag = "jobs", request_body = JobRequest,
    responses((status = 201, body = JobOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(req): Body<JobRequest>,
) -> ApiResult<(StatusCode, Json<JobOut>)> {
    let job = state
        .jobs
        .create(
            &caller.access,
            NewJob {
                name: req.name,
                workflow: req.workflow,
                group_id: req.group_id,
                cron: req.cron,
                time_zone: req.time_zone,
                input: req.input,
                paused: req.paused.unwrap_or(false),
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(job.into())))
}

#[utoipa::path(get, path = "/sys/v1/jobs", tag = "jobs", responses((status = 200, body = [JobOut])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<JobOut>>> {
    let jobs = state.jobs.list(&caller.access).await?;
    Ok(Json(jobs.into_iter().map(JobOut::from).collect()))
}

#[utoipa::path(get, path = "/sys/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = JobOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(job): Path<String>,
) -> ApiResult<Json<JobOut>> {
    id("job", &job)?;
    Ok(Json(state.jobs.get(&caller.access, &job).await?.into()))
}

#[utoipa::path(post, path = "/sys/v1/jobs/{id}/pause", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = JobOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn pause(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(job): Path<String>,
) -> ApiResult<Json<JobOut>> {
    id("job", &job)?;
    Ok(Json(
        state
            .jobs
            .set_paused(&caller.access, &job, true)
            .await?
            .into(),
    ))
}

#[utoipa::path(post, path = "/sys/v1/jobs/{id}/resume", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = JobOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn resume(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(job): Path<String>,
) -> ApiResult<Json<JobOut>> {
    id("job", &job)?;
    Ok(Json(
        state
            .jobs
            .set_paused(&caller.access, &job, false)
            .await?
            .into(),
    ))
}

#[utoipa::path(delete, path = "/sys/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(job): Path<String>,
) -> ApiResult<StatusCode> {
    id("job", &job)?;
    state.jobs.delete(&caller.access, &job).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The job's latest fires, newest first (each with its workflow run).
#[utoipa::path(get, path = "/sys/v1/jobs/{id}/fires", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = [FireOut]), (status = 404, body = super::error::ErrorBody)))]
pub async fn fires(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(job): Path<String>,
) -> ApiResult<Json<Vec<FireOut>>> {
    id("job", &job)?;
    let fires = state.jobs.history(&caller.access, &job, 100).await?;
    Ok(Json(fires.into_iter().map(FireOut::from).collect()))
}
