//! `GET /sys/v1/reports/{keys,rotation,failures,usage,drift}`: the key health figures of the
//! console's dashboard (`crate::reports`), as JSON or, with `?format=csv`, as a CSV download.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::reports::{self, DriftRow, FailureRow, KeyCountRow, Report, RotationRow, UsageRow};

use super::extract::Caller;
use super::{ApiError, ApiResult, AppState};

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Csv,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `json` (default) or `csv` (a download with a header line).
    pub format: Option<Format>,
}

type ReportQueryResult = Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>;

async fn answer(
    state: &AppState,
    caller: &Caller,
    report: Report,
    query: ReportQueryResult,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::bad(format!("invalid query: {e}")))?;
    let rows = reports::run(&state.catalog, &caller.access, report, state.now()).await?;
    Ok(match q.format.unwrap_or_default() {
        Format::Json => Json(rows).into_response(),
        Format::Csv => csv_download(report, &rows)?,
    })
}

/// A report as a CSV file download (also the console's).
pub fn csv_download(report: Report, rows: &reports::Rows) -> ApiResult<Response> {
    let body = rows
        .csv()
        .map_err(|e| ApiError::Internal(format!("report CSV: {e}")))?;
    let file = format!(
        "attachment; filename=\"keyward-{}-report.csv\"",
        report.as_str()
    );
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (CONTENT_DISPOSITION, file),
        ],
        body,
    )
        .into_response())
}

/// Keys per group, state and holder (an HSM or Keyward).
#[utoipa::path(get, path = "/sys/v1/reports/keys", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "The report", content((Vec<KeyCountRow> = "application/json"), (String = "text/csv")))))]
pub async fn keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: ReportQueryResult,
) -> ApiResult<Response> {
    answer(&state, &caller, Report::Keys, query).await
}

/// Keys past their rotation date, with a stopped policy, without a policy, and rotations and
/// deactivations due in the next 30 days.
#[utoipa::path(get, path = "/sys/v1/reports/rotation", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "The report", content((Vec<RotationRow> = "application/json"), (String = "text/csv")))))]
pub async fn rotation(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: ReportQueryResult,
) -> ApiResult<Response> {
    answer(&state, &caller, Report::Rotation, query).await
}

/// Scheduled rotations and jobs that failed for good in the last 30 days.
#[utoipa::path(get, path = "/sys/v1/reports/failures", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "The report", content((Vec<FailureRow> = "application/json"), (String = "text/csv")))))]
pub async fn failures(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: ReportQueryResult,
) -> ApiResult<Response> {
    answer(&state, &caller, Report::Failures, query).await
}

/// Cryptographic operations per UTC day, the last 30 days (today last).
#[utoipa::path(get, path = "/sys/v1/reports/usage", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "The report", content((Vec<UsageRow> = "application/json"), (String = "text/csv")))))]
pub async fn usage(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: ReportQueryResult,
) -> ApiResult<Response> {
    answer(&state, &caller, Report::Usage, query).await
}

/// Per linked group: the last sync and the keys put back in the HSM in the last 30 days.
#[utoipa::path(get, path = "/sys/v1/reports/drift", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "The report", content((Vec<DriftRow> = "application/json"), (String = "text/csv")))))]
pub async fn drift(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: ReportQueryResult,
) -> ApiResult<Response> {
    answer(&state, &caller, Report::Drift, query).await
}
