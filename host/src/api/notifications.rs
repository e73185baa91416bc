//! Notification endpoints: `/sys/v1/notification_endpoints` (create, list, get, enable,
//! disable, delete, and the messages sent to each). Account administrators only; the
//! notification service (`crate::notify`) owns the rules.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::catalog::notifications::{Endpoint, Message};
use crate::notify::NotifyError;

use super::extract::{Body, Caller, id};
use super::model::{Time, opt_time, time};
use super::{ApiError, ApiResult, AppState};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointRequest {
    /// Where to POST the events; must be allowed by the daemon (`--notify-allow`).
    #[schema(format = "uri")]
    pub url: String,
    /// Which events (`key.rotated`, `key.rotation_failed`, `key.near_expiry`, `key.expired`,
    /// `key.found`, `key.soft_deleted`, `key.purged`, `key.drift`); empty or absent: all.
    pub events: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointOut {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub enabled: bool,
    /// Why it was disabled (a 410, persistent failure, an administrator).
    pub disabled_reason: Option<String>,
    pub created_at: Time,
    /// Only when created: the `whsec_` secret the messages are signed with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl EndpointOut {
    fn of(e: Endpoint, secret: Option<String>) -> EndpointOut {
        EndpointOut {
            id: e.id,
            url: e.url,
            events: e.events.iter().map(|t| t.as_str().to_string()).collect(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            created_at: time(e.created_at),
            secret,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageOut {
    /// Its `webhook-id`.
    pub id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub created_at: Time,
    pub next_attempt_at: Option<Time>,
    pub delivered_at: Option<Time>,
    pub last_error: Option<String>,
}

impl From<Message> for MessageOut {
    fn from(m: Message) -> Self {
        MessageOut {
            next_attempt_at: (m.status == "pending").then(|| time(m.next_attempt_at)),
            id: m.id,
            event_type: m.event_type,
            status: m.status,
            attempts: m.attempts,
            created_at: time(m.created_at),
            delivered_at: opt_time(m.delivered_at),
            last_error: m.last_error,
        }
    }
}

impl From<NotifyError> for ApiError {
    fn from(e: NotifyError) -> Self {
        match e {
            NotifyError::Invalid { field, message } => ApiError::field(&field, message),
            NotifyError::Forbidden(m) => ApiError::Forbidden(m),
            NotifyError::NotFound(m) => ApiError::NotFound(m),
            NotifyError::ApprovalRequired => ApiError::ApprovalRequired,
            NotifyError::Catalog(c) => ApiError::from(c),
        }
    }
}

#[utoipa::path(post, path = "/sys/v1/notification_endpoints", tag = "notifications", request_body = EndpointRequest,
    responses((status = 201, body = EndpointOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(req): Body<EndpointRequest>,
) -> ApiResult<(StatusCode, Json<EndpointOut>)> {
    let (e, secret) = state
        .notifications
        .create(&caller.access, &req.url, &req.events.unwrap_or_default())
        .await?;
    Ok((StatusCode::CREATED, Json(EndpointOut::of(e, Some(secret)))))
}

#[utoipa::path(get, path = "/sys/v1/notification_endpoints", tag = "notifications", responses((status = 200, body = [EndpointOut])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<EndpointOut>>> {
    let list = state.notifications.list(&caller.access).await?;
    Ok(Json(
        list.into_iter().map(|e| EndpointOut::of(e, None)).collect(),
    ))
}

#[utoipa::path(get, path = "/sys/v1/notification_endpoints/{id}", tag = "notifications",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 200, body = EndpointOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(e): Path<String>,
) -> ApiResult<Json<EndpointOut>> {
    id("endpoint", &e)?;
    Ok(Json(EndpointOut::of(
        state.notifications.get(&caller.access, &e).await?,
        None,
    )))
}

#[utoipa::path(post, path = "/sys/v1/notification_endpoints/{id}/enable", tag = "notifications",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 200, body = EndpointOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn enable(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(e): Path<String>,
) -> ApiResult<Json<EndpointOut>> {
    id("endpoint", &e)?;
    Ok(Json(EndpointOut::of(
        state
            .notifications
            .set_enabled(&caller.access, &e, true)
            .await?,
        None,
    )))
}

#[utoipa::path(post, path = "/sys/v1/notification_endpoints/{id}/disable", tag = "notifications",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 200, body = EndpointOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn disable(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(e): Path<String>,
) -> ApiResult<Json<EndpointOut>> {
    id("endpoint", &e)?;
    Ok(Json(EndpointOut::of(
        state
            .notifications
            .set_enabled(&caller.access, &e, false)
            .await?,
        None,
    )))
}

#[utoipa::path(delete, path = "/sys/v1/notification_endpoints/{id}", tag = "notifications",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(e): Path<String>,
) -> ApiResult<StatusCode> {
    id("endpoint", &e)?;
    state.notifications.delete(&caller.access, &e).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The endpoint's latest messages, newest first.
#[utoipa::path(get, path = "/sys/v1/notification_endpoints/{id}/messages", tag = "notifications",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 200, body = [MessageOut]), (status = 404, body = super::error::ErrorBody)))]
pub async fn messages(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(e): Path<String>,
) -> ApiResult<Json<Vec<MessageOut>>> {
    id("endpoint", &e)?;
    let list = state
        .notifications
        .messages(&caller.access, &e, 100)
        .await?;
    Ok(Json(list.into_iter().map(MessageOut::from).collect()))
}
