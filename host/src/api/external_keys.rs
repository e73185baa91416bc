//! Copies (into any group; into an Azure-linked one by BYOK transfer, F16) and the flows of
//! virtual keys against their external key manager: soft delete, recover, restore from
//! escrow, purge (F21). The key service checks and runs them; the work against the HSM is
//! done by the workflow scripts (`workflows/*.rhai`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::keys::{CopySpec, KeyFlow};

use super::extract::{Body, Caller, id};
use super::model::{KeyDescriptor, SobjectOut, parse_ops, parse_time};
use super::{ApiError, ApiResult, AppState};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    /// Must be `true`: the request really means it.
    #[schema(schema_with = super::schemas::confirm)]
    pub confirm: Option<bool>,
}

fn confirmed(c: &Confirm, what: &str) -> ApiResult<()> {
    if c.confirm != Some(true) {
        return Err(ApiError::field(
            "confirm",
            format!("must be true to {what}"),
        ));
    }
    Ok(())
}

async fn flow(
    state: &AppState,
    caller: &Caller,
    kid: &str,
    f: KeyFlow,
) -> ApiResult<Json<SobjectOut>> {
    id("key", kid)?;
    let v = state.keys.key_flow(&caller.access, kid, f).await?;
    Ok(Json(SobjectOut::of(&v, state.now())))
}

/// Soft-deletes the key in the HSM (F21). Needs `{"confirm": true}`; the key stays
/// recoverable until the HSM's retention period ends.
#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/schedule_deletion", tag = "keys", request_body = Confirm,
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 200, body = SobjectOut), (status = 400, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn schedule_deletion(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
    Body(req): Body<Confirm>,
) -> ApiResult<Json<SobjectOut>> {
    confirmed(&req, "soft-delete the key in the external key manager")?;
    flow(&state, &caller, &kid, KeyFlow::SoftDelete).await
}

/// Recovers a soft-deleted key with all its versions (F21).
#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/recover", tag = "keys",
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 200, body = SobjectOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn recover(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<Json<SobjectOut>> {
    flow(&state, &caller, &kid, KeyFlow::Recover).await
}

/// Puts a purged key back from its escrowed backup (F21).
#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/restore", tag = "keys",
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 200, body = SobjectOut), (status = 409, body = super::error::ErrorBody)))]
pub async fn restore(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<Json<SobjectOut>> {
    flow(&state, &caller, &kid, KeyFlow::Restore).await
}

/// Purges a soft-deleted key in the HSM now (DSM `delete_key_material`). Needs
/// `{"confirm": true}`; HSMs with purge protection refuse it.
#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/delete_key_material", tag = "keys", request_body = Confirm,
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 200, body = SobjectOut), (status = 400, body = super::error::ErrorBody), (status = 502, body = super::error::ErrorBody)))]
pub async fn purge(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
    Body(req): Body<Confirm>,
) -> ApiResult<Json<SobjectOut>> {
    confirmed(&req, "purge the key in the external key manager")?;
    flow(&state, &caller, &kid, KeyFlow::Purge).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyRequest {
    /// The source key.
    pub key: KeyDescriptor,
    /// The target group.
    pub group_id: String,
    /// Default: `<source name>_copy1`, `_copy2`, ... (the first free one).
    pub name: Option<String>,
    /// Default: the source's operations; never more than the source's.
    #[schema(schema_with = super::schemas::key_ops)]
    pub key_ops: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    #[schema(schema_with = super::schemas::dsm_time)]
    pub activation_date: Option<String>,
    #[schema(schema_with = super::schemas::dsm_time)]
    pub deactivation_date: Option<String>,
    /// Default: the source's custom metadata.
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CopyNameQuery {
    /// The group the copy would go to (for the caller's rights).
    #[param(schema_with = super::schemas::id)]
    pub group_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CopyName {
    pub name: String,
}

/// The name a copy of the key gets unless another is given.
#[utoipa::path(get, path = "/crypto/v1/keys/{kid}/copy_name", tag = "keys", params(("kid" = String, Path, description = "The key's id"), CopyNameQuery),
    responses((status = 200, body = CopyName)))]
pub async fn copy_name(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
    query: Result<Query<CopyNameQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<CopyName>> {
    let Query(q) = query.map_err(|e| ApiError::bad(format!("invalid query: {e}")))?;
    if let Some(g) = &q.group_id {
        id("group", g)?;
    }
    id("key", &kid)?;
    Ok(Json(CopyName {
        name: state.keys.copy_name(&caller.access, &kid).await?,
    }))
}

/// Copies a key into another group (F16): into an Azure-linked group by BYOK transfer, as a
/// virtual key linked to its source. The copy permits no more than its source; RSA and EC
/// sources need EXPORT; deactivated, compromised, destroyed, disabled and virtual keys cannot
/// be copied; the policies of both groups decide.
#[utoipa::path(post, path = "/crypto/v1/keys/copy", tag = "keys", request_body = CopyRequest,
    responses((status = 201, body = SobjectOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn copy(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(req): Body<CopyRequest>,
) -> ApiResult<(StatusCode, Json<SobjectOut>)> {
    let time =
        |field: &str, t: &Option<String>| t.as_deref().map(|t| parse_time(field, t)).transpose();
    let spec = CopySpec {
        source: req.key.to_ref("key")?,
        group_id: req.group_id,
        name: req.name,
        key_ops: req
            .key_ops
            .as_deref()
            .map(|o| parse_ops("key_ops", o))
            .transpose()?,
        description: req.description,
        enabled: req.enabled,
        activation_date: time("activation_date", &req.activation_date)?,
        deactivation_date: time("deactivation_date", &req.deactivation_date)?,
        tags: req.custom_metadata,
    };
    let v = state.keys.copy(&caller.access, spec).await?;
    Ok((StatusCode::CREATED, Json(SobjectOut::of(&v, state.now()))))
}
