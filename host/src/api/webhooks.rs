//! Webhooks: management under `/sys/v1/webhooks` (create, list, get, rotate the secret,
//! delete, deliveries), and the deliveries themselves at `POST /webhooks/{account_id}/{name}`
//! and `OPTIONS /webhooks/{account_id}/{name}` (no session: a delivery proves itself by its signature or its
//! secret). The webhook service (`crate::webhooks`) checks and acts.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::catalog::webhooks::{Delivery, Webhook, WebhookKind};
use crate::webhooks::signature::Headers;
use crate::webhooks::{Credentials, NewWebhook, Received, WebhookError, WithSecret};

use super::extract::{Body, Caller, id};
use super::model::{Time, opt_time, time};
use super::{ApiError, ApiResult, AppState};

fn webhook_kind() -> utoipa::openapi::schema::ObjectBuilder {
    super::schemas::names(["standard", "event_grid"])
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// The path it is reached at: `POST /webhooks/{account_id}/{name}`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    /// `standard` (Standard Webhooks signatures; the body is the workflow's input) or
    /// `event_grid` (Azure Event Grid; a secret in the URL query).
    #[schema(schema_with = webhook_kind)]
    pub kind: Option<String>,
    /// Standard webhooks: the workflow a delivery runs.
    #[schema(schema_with = super::schemas::workflow_name)]
    pub workflow: Option<String>,
    /// The group the runs are for (Event Grid: the group linked to the events' HSM).
    #[schema(schema_with = super::schemas::id)]
    pub group_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookOut {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub workflow: Option<String>,
    pub group_id: Option<String>,
    /// Where deliveries go (append `?secret=<secret>` for Event Grid).
    pub path: String,
    /// Deliveries still accepted with the previous secret until then.
    pub previous_secret_valid_until: Option<Time>,
    pub created_at: Time,
    /// Only when created or rotated: the signing secret (`whsec_...`), or for Event Grid the
    /// URL secret. It is not shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookOut {
    fn of(w: Webhook, secret: Option<String>) -> WebhookOut {
        WebhookOut {
            path: format!("/webhooks/{}/{}", w.account_id, w.name),
            id: w.id,
            name: w.name,
            kind: w.kind.as_str().to_string(),
            workflow: w.workflow,
            group_id: w.group_id,
            previous_secret_valid_until: opt_time(w.previous_until),
            created_at: time(w.created_at),
            secret,
        }
    }
}

impl From<WithSecret> for WebhookOut {
    fn from(w: WithSecret) -> Self {
        WebhookOut::of(w.webhook, Some(w.secret))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryOut {
    pub received_at: Time,
    /// `accepted`, `duplicate`, `refused`, `failed` (accepted, but nothing could start) or
    /// `validated` (a subscription handshake).
    pub outcome: String,
    pub message_id: Option<String>,
    pub run_id: Option<String>,
    pub error: Option<String>,
}

impl From<Delivery> for DeliveryOut {
    fn from(d: Delivery) -> Self {
        DeliveryOut {
            received_at: time(d.received_at),
            outcome: d.outcome,
            message_id: d.message_id,
            run_id: d.run_id,
            error: d.error,
        }
    }
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid { field, message } => ApiError::field(&field, message),
            WebhookError::BadDelivery(m) => ApiError::bad(m),
            WebhookError::Unauthorized(m) => ApiError::Unauthorized(m),
            WebhookError::Forbidden(m) => ApiError::Forbidden(m),
            WebhookError::NotFound(m) => ApiError::NotFound(m),
            WebhookError::Conflict(m) => ApiError::Conflict(m),
            WebhookError::TooLarge => ApiError::TooLarge(crate::webhooks::MAX_BODY),
            WebhookError::Catalog(c) => ApiError::from(c),
            WebhookError::Workflow(w) => ApiError::from(w),
        }
    }
}

#[utoipa::path(post, path = "/sys/v1/webhooks", tag = "webhooks", request_body = WebhookRequest,
    responses((status = 201, body = WebhookOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(req): Body<WebhookRequest>,
) -> ApiResult<(StatusCode, Json<WebhookOut>)> {
    let kind = match req.kind.as_deref() {
        None => WebhookKind::Standard,
        Some(k) => WebhookKind::parse(k).ok_or_else(|| {
            ApiError::field(
                "kind",
                format!("'{k}' is not a kind (standard, event_grid)"),
            )
        })?,
    };
    let w = state
        .webhooks
        .create(
            &caller.access,
            NewWebhook {
                name: req.name,
                kind,
                workflow: req.workflow,
                group_id: req.group_id,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(w.into())))
}

#[utoipa::path(get, path = "/sys/v1/webhooks", tag = "webhooks", responses((status = 200, body = [WebhookOut])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<WebhookOut>>> {
    let list = state.webhooks.list(&caller.access).await?;
    Ok(Json(
        list.into_iter().map(|w| WebhookOut::of(w, None)).collect(),
    ))
}

#[utoipa::path(get, path = "/sys/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id")),
    responses((status = 200, body = WebhookOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(w): Path<String>,
) -> ApiResult<Json<WebhookOut>> {
    id("webhook", &w)?;
    Ok(Json(WebhookOut::of(
        state.webhooks.get(&caller.access, &w).await?,
        None,
    )))
}

/// A new secret, shown once; the previous one is accepted for 24 hours more.
#[utoipa::path(post, path = "/sys/v1/webhooks/{id}/rotate_secret", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id")),
    responses((status = 200, body = WebhookOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(w): Path<String>,
) -> ApiResult<Json<WebhookOut>> {
    id("webhook", &w)?;
    Ok(Json(
        state
            .webhooks
            .rotate_secret(&caller.access, &w)
            .await?
            .into(),
    ))
}

#[utoipa::path(delete, path = "/sys/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id")),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(w): Path<String>,
) -> ApiResult<StatusCode> {
    id("webhook", &w)?;
    state.webhooks.delete(&caller.access, &w).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The latest deliveries, newest first.
#[utoipa::path(get, path = "/sys/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id")),
    responses((status = 200, body = [DeliveryOut]), (status = 404, body = super::error::ErrorBody)))]
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(w): Path<String>,
) -> ApiResult<Json<Vec<DeliveryOut>>> {
    id("webhook", &w)?;
    let list = state.webhooks.deliveries(&caller.access, &w, 100).await?;
    Ok(Json(list.into_iter().map(DeliveryOut::from).collect()))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A delivery. Standard webhooks answer 202 with the run started (200 for a repeated
/// `webhook-id`); Event Grid deliveries 200, with `validationResponse` for a handshake.
#[utoipa::path(post, path = "/webhooks/{account_id}/{name}", tag = "webhooks",
    params(("account_id" = String, Path, description = "The webhook's account"), ("name" = String, Path, description = "The webhook's name")),
    responses((status = 202, description = "The workflow run started"), (status = 200, description = "A repeat, a handshake, or Event Grid events handled"),
        (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody, description = "No such webhook, or the signature or secret does not check out (answered alike)"), (status = 403, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody)))]
pub async fn deliver(
    State(state): State<Arc<AppState>>,
    Path((account, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let creds = Credentials {
        headers: Headers {
            id: header(&headers, "webhook-id"),
            timestamp: header(&headers, "webhook-timestamp"),
            signature: header(&headers, "webhook-signature"),
        },
        query_secret: query.get("secret").map(String::as_str),
        aeg_event_type: header(&headers, "aeg-event-type"),
    };
    Ok(
        match state
            .webhooks
            .receive(&account, &name, &creds, &body)
            .await?
        {
            Received::Started { run_id } => {
                (StatusCode::ACCEPTED, Json(json!({"run_id": run_id}))).into_response()
            }
            Received::Duplicate => Json(json!({"duplicate": true})).into_response(),
            Received::Validation { code } => {
                Json(json!({"validationResponse": code})).into_response()
            }
            Received::Events {
                accepted,
                duplicates,
                ignored,
            } => Json(json!({"accepted": accepted, "duplicates": duplicates, "ignored": ignored}))
                .into_response(),
        },
    )
}

/// The CloudEvents 1.0 abuse-protection handshake: answers `WebHook-Allowed-Origin`.
#[utoipa::path(options, path = "/webhooks/{account_id}/{name}", tag = "webhooks",
    params(("account_id" = String, Path, description = "The webhook's account"), ("name" = String, Path, description = "The webhook's name"),
        ("WebHook-Request-Origin" = String, Header, description = "The origin asking to deliver (CloudEvents abuse protection)")),
    responses((status = 200, description = "Deliveries from the origin are allowed"), (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody)))]
pub async fn handshake(
    State(state): State<Arc<AppState>>,
    Path((account, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let origin = header(&headers, "webhook-request-origin")
        .ok_or_else(|| ApiError::bad("the WebHook-Request-Origin header is missing"))?;
    let allowed = state
        .webhooks
        .handshake(
            &account,
            &name,
            query.get("secret").map(String::as_str),
            origin,
        )
        .await?;
    let mut r = StatusCode::OK.into_response();
    let h = r.headers_mut();
    h.insert(
        "webhook-allowed-origin",
        HeaderValue::from_str(&allowed)
            .map_err(|_| ApiError::bad("the origin is not a valid header value"))?,
    );
    h.insert("webhook-allowed-rate", HeaderValue::from_static("*"));
    Ok(r)
}
