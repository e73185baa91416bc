//! Reading the audit log: account administrators and auditors, with filters.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::catalog::audit::{self, AuditFilter};

use super::extract::Caller;
use super::model::{Time, parse_time, time};
use super::{ApiError, ApiResult, AppState};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// An action (`key.create`) or a prefix ending in `*` (`key.*`).
    pub action: Option<String>,
    /// A user or application id.
    pub actor_id: Option<String>,
    /// The id of the object acted on.
    pub object_id: Option<String>,
    /// `success`, `denied` or `failure`.
    pub outcome: Option<String>,
    /// From this time (`YYYYMMDDTHHMMSSZ`).
    pub from: Option<String>,
    pub to: Option<String>,
    /// 1 to 1000 (default 100).
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventOut {
    pub id: i64,
    pub acct_id: Option<String>,
    pub time: Time,
    /// `{"kind": "user" | "app" | "system", "id": ...}`
    #[schema(value_type = Object)]
    pub actor: Value,
    pub action: String,
    #[schema(value_type = Option<Object>)]
    pub object: Option<Value>,
    pub outcome: String,
    pub message: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

/// Newest first.
#[utoipa::path(get, path = "/sys/v1/logs", tag = "audit", params(AuditQuery),
    responses((status = 200, body = [AuditEventOut]), (status = 403, body = super::error::ErrorBody)))]
pub async fn query(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<AuditEventOut>>> {
    let Query(q) = q.map_err(|e| ApiError::bad(format!("invalid query: {e}")))?;
    if !caller.access.can_read_audit_log() {
        return Err(ApiError::Forbidden(
            "only account administrators and auditors read the audit log".into(),
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("limit", "must be 1 to 1000"));
    }
    if let Some(o) = &q.outcome
        && !["success", "denied", "failure"].contains(&o.as_str())
    {
        return Err(ApiError::field(
            "outcome",
            "must be success, denied or failure",
        ));
    }
    // Events still queued (crypto operations) are written before we read.
    state.audit.flush().await;
    let filter = AuditFilter {
        account_id: caller.account().to_string(),
        action: q.action,
        actor_id: q.actor_id,
        object_id: q.object_id,
        outcome: q.outcome,
        from: q
            .from
            .as_deref()
            .map(|t| parse_time("from", t))
            .transpose()?,
        to: q.to.as_deref().map(|t| parse_time("to", t)).transpose()?,
        limit,
        offset: q.offset.unwrap_or(0),
    };
    let mut conn = state.catalog.conn().await?;
    let events = audit::query(&mut conn, &filter).await?;
    Ok(Json(
        events
            .into_iter()
            .map(|e| AuditEventOut {
                id: e.id,
                acct_id: e.account_id,
                time: time(e.at),
                actor: serde_json::json!({"kind": e.actor_kind, "id": e.actor_id}),
                action: e.action,
                object: e
                    .object_id
                    .map(|id| serde_json::json!({"kind": e.object_kind, "id": id})),
                outcome: e.outcome,
                message: e.message,
                details: e.details,
            })
            .collect(),
    ))
}
