//! Keys (DSM security objects): create, import, read, list, update, lifecycle (activate,
//! deactivate, revoke, destroy), delete and export. Handlers parse the request, call the
//! key service (`crate::keys`), which owns every rule and write, and render its answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::catalog::rotation::{self, RotationPolicy};
use crate::catalog::sobjects::{self, KeyState, ListFilter, ObjType, SortBy, parse_curve};
use crate::crypto::RsaEncryptionMode;
use crate::keys::{ImportValue, KeyChange, KeyRef, NewKey, TagEdits, Transition, WrapMode, rules};

use super::extract::{Body, Caller, id};
use super::model::{
    KeyDescriptor, Removable, SobjectOut, b64, from_b64, from_hex, parse_ops, parse_time,
};
use super::{ApiError, ApiResult, AppState};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// Required (the field is optional in the type so that its absence is named).
    #[schema(required = true)]
    pub name: Option<String>,
    /// The group to create the key in (applications: default group when absent).
    #[schema(schema_with = super::schemas::id)]
    pub group_id: Option<String>,
    /// `AES`, `RSA` or `EC`.
    #[schema(schema_with = super::schemas::obj_type)]
    pub obj_type: Option<String>,
    /// AES 128/192/256, RSA 2048/3072/4096.
    pub key_size: Option<u32>,
    /// `NistP256`, `NistP384` or `NistP521`.
    #[schema(schema_with = super::schemas::curve)]
    pub elliptic_curve: Option<String>,
    /// Default: every operation of the type except EXPORT, which must be asked for when the
    /// key is created: it can never be added later.
    #[schema(schema_with = super::schemas::key_ops)]
    pub key_ops: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    #[schema(schema_with = super::schemas::dsm_time)]
    pub activation_date: Option<String>,
    #[schema(schema_with = super::schemas::dsm_time)]
    pub deactivation_date: Option<String>,
    pub custom_metadata: Option<BTreeMap<String, String>>,
    /// Keyward, in a group linked to an HSM: the key's name there (shared by all its
    /// versions); default: `name` with what the HSM does not allow made dashes.
    #[schema(pattern = "^[0-9A-Za-z-]{1,127}$")]
    pub external_name: Option<String>,
    /// Import only: the key material. RSA and EC as PKCS#8 (or PKCS#1 / SEC1) DER, AES as the
    /// raw key bytes, encoded as `value_format` says.
    pub value: Option<String>,
    /// `base64` (the default) or `hex`.
    pub value_format: Option<String>,
    /// Import only: `value` is wrapped by this key-encryption key of the catalog. Unwrapping
    /// is an UNWRAPKEY operation of the KEK: applications of its group only.
    pub wrapped_by: Option<KeyDescriptor>,
    /// How `value` is wrapped: `KW` or `KWP` (the default) for an AES KEK, an OAEP mode for
    /// an RSA KEK.
    #[schema(schema_with = super::schemas::wrap_mode)]
    pub wrapping_mode: Option<WrappingMode>,
    /// Rotate on a schedule: `interval_days` or `interval_months` (or Keyward's `cron` with
    /// `time_zone`), `effective_at`, `deactivate_rotated_key`, `rotate_copied_keys`
    /// (`"all_external"` or `{"select": [kid, ...]}`).
    #[schema(schema_with = super::schemas::rotation_policy)]
    pub rotation_policy: Option<RotationPolicy>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum WrappingMode {
    Aes(String),
    Rsa(RsaEncryptionMode),
}

impl From<WrappingMode> for WrapMode {
    fn from(m: WrappingMode) -> Self {
        match m {
            WrappingMode::Aes(s) => WrapMode::Aes(s),
            WrappingMode::Rsa(r) => WrapMode::Rsa(r),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Operations may be removed; EXPORT cannot be added.
    #[schema(schema_with = super::schemas::key_ops)]
    pub key_ops: Option<Vec<String>>,
    pub enabled: Option<bool>,
    /// A time, or `"remove"`; only while the key is pre-active, never in the past.
    #[schema(schema_with = super::schemas::dsm_time_or_remove)]
    pub activation_date: Option<Removable<String>>,
    /// A time, or `"remove"`; only until the key is deactivated, never in the past.
    #[schema(schema_with = super::schemas::dsm_time_or_remove)]
    pub deactivation_date: Option<Removable<String>>,
    /// Replaces the custom metadata.
    pub custom_metadata: Option<BTreeMap<String, String>>,
    /// Keyward: tags to set (or overwrite) and to remove, each applied to the key as it is
    /// when written, so concurrent edits of different tags all stay (`custom_metadata`
    /// replaces the whole map). Not with `custom_metadata`.
    pub custom_metadata_edits: Option<TagEditsIn>,
    /// A rotation policy (as at creation), or `"remove"`.
    #[schema(schema_with = super::schemas::rotation_policy_or_remove)]
    pub rotation_policy: Option<Removable<RotationPolicy>>,
}

/// Tag edits of a key update.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagEditsIn {
    /// Tags to set or overwrite.
    #[serde(default, deserialize_with = "super::model::null_is_default")]
    pub set: BTreeMap<String, String>,
    /// Names of tags to remove.
    #[serde(default, deserialize_with = "super::model::null_is_default")]
    pub remove: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[param(schema_with = super::schemas::id)]
    pub group_id: Option<String>,
    /// The exact name.
    #[param(min_length = 1)]
    pub name: Option<String>,
    /// Part of the name, in any case (Keyward).
    #[param(min_length = 1, max_length = 256)]
    pub name_contains: Option<String>,
    /// `AES`, `RSA` or `EC` (Keyward).
    #[param(schema_with = super::schemas::obj_type)]
    pub obj_type: Option<String>,
    /// `true`: only keys held by an HSM (virtual keys); `false`: only Keyward-held ones
    /// (Keyward).
    pub external: Option<bool>,
    /// PreActive, Active, Deactivated, Compromised, Destroyed.
    #[param(schema_with = super::schemas::key_state)]
    pub state: Option<String>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    #[param(schema_with = super::schemas::offset)]
    pub offset: Option<u32>,
    /// `name:asc` (default), `name:desc`, `created_at:asc`, `created_at:desc`.
    #[param(schema_with = super::schemas::key_sort)]
    pub sort: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Revoke {
    /// `KeyCompromise` and `CACompromise` mark the key compromised; `Unspecified`,
    /// `AffiliationChanged`, `Superseded`, `CessationOfOperation` and `PrivilegeWithdrawn`
    /// deactivate it.
    #[schema(schema_with = super::schemas::revocation_code)]
    pub code: String,
    pub message: Option<String>,
}

fn obj_type(s: Option<&str>) -> ApiResult<ObjType> {
    let s = s.ok_or_else(|| ApiError::field("obj_type", "is required"))?;
    ObjType::parse(s).ok_or_else(|| {
        ApiError::field(
            "obj_type",
            format!("'{s}' is not supported (AES, RSA or EC)"),
        )
    })
}

fn time_field(field: &str, t: &Option<String>) -> ApiResult<Option<i64>> {
    t.as_deref().map(|t| parse_time(field, t)).transpose()
}

fn removable_time(field: &str, t: &Option<Removable<String>>) -> ApiResult<Option<Option<i64>>> {
    Ok(match t {
        None => None,
        Some(Removable::Remove) => Some(None),
        Some(Removable::Set(t)) => Some(Some(parse_time(field, t)?)),
    })
}

/// The typed request of a create or import.
fn new_key(req: &KeyRequest) -> ApiResult<NewKey> {
    Ok(NewKey {
        name: req
            .name
            .clone()
            .ok_or_else(|| ApiError::field("name", "is required"))?,
        group_id: req.group_id.clone(),
        obj_type: obj_type(req.obj_type.as_deref())?,
        key_size: req.key_size,
        curve: req
            .elliptic_curve
            .as_deref()
            .map(|c| {
                parse_curve(c).ok_or_else(|| {
                    ApiError::field(
                        "elliptic_curve",
                        format!(
                            "unsupported elliptic_curve '{c}' (NistP256, NistP384 or NistP521)"
                        ),
                    )
                })
            })
            .transpose()?,
        key_ops: req
            .key_ops
            .as_deref()
            .map(|o| parse_ops("key_ops", o))
            .transpose()?,
        description: req.description.clone(),
        enabled: req.enabled,
        activation_date: time_field("activation_date", &req.activation_date)?,
        deactivation_date: time_field("deactivation_date", &req.deactivation_date)?,
        tags: req.custom_metadata.clone(),
        rotation_policy: req.rotation_policy.clone(),
        external_name: req.external_name.clone(),
    })
}

fn created(state: &AppState, v: crate::keys::KeyView) -> (StatusCode, Json<SobjectOut>) {
    (StatusCode::CREATED, Json(SobjectOut::of(&v, state.now())))
}

#[utoipa::path(post, path = "/crypto/v1/keys", tag = "keys", request_body = KeyRequest,
    responses((status = 201, body = SobjectOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(req): Body<KeyRequest>,
) -> ApiResult<(StatusCode, Json<SobjectOut>)> {
    if req.value.is_some() || req.wrapped_by.is_some() {
        return Err(ApiError::bad(
            "'value' belongs to an import (PUT /crypto/v1/keys)",
        ));
    }
    let v = state.keys.create(&caller.access, new_key(&req)?).await?;
    Ok(created(&state, v))
}

/// Imports key material (raw AES bytes or PKCS#8/PKCS#1/SEC1 DER), as base64 or hex,
/// optionally wrapped by a key-encryption key of the catalog.
#[utoipa::path(put, path = "/crypto/v1/keys", tag = "keys", request_body = KeyRequest,
    responses((status = 201, body = SobjectOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn import(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(req): Body<KeyRequest>,
) -> ApiResult<(StatusCode, Json<SobjectOut>)> {
    let spec = new_key(&req)?;
    let value = req
        .value
        .as_deref()
        .ok_or_else(|| ApiError::field("value", "is required for an import"))?;
    let bytes = match req.value_format.as_deref().unwrap_or("base64") {
        "base64" => from_b64("value", value)?,
        "hex" => from_hex("value", value)?,
        other => {
            return Err(ApiError::field(
                "value_format",
                format!("'{other}' is not supported (base64 or hex)"),
            ));
        }
    };
    let value = match &req.wrapped_by {
        None if req.wrapping_mode.is_some() => {
            return Err(ApiError::field(
                "wrapping_mode",
                "applies only with wrapped_by",
            ));
        }
        None => ImportValue::Plain(bytes),
        Some(kek) => ImportValue::Wrapped {
            kek: kek.to_ref("wrapped_by")?,
            mode: req.wrapping_mode.clone().map(WrapMode::from),
            wrapped: bytes,
        },
    };
    let v = state.keys.import(&caller.access, spec, value).await?;
    Ok(created(&state, v))
}

#[utoipa::path(get, path = "/crypto/v1/keys/{kid}", tag = "keys",
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 200, body = SobjectOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<Json<SobjectOut>> {
    id("key", &kid)?;
    let v = state.keys.view(&caller.access, &kid).await?;
    Ok(Json(SobjectOut::of(&v, state.now())))
}

#[utoipa::path(post, path = "/crypto/v1/keys/info", tag = "keys", request_body = KeyDescriptor, responses((status = 200, body = SobjectOut)))]
pub async fn info(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(d): Body<KeyDescriptor>,
) -> ApiResult<Json<SobjectOut>> {
    let v = state
        .keys
        .view_of(&caller.access, &d.to_ref("key")?)
        .await?;
    Ok(Json(SobjectOut::of(&v, state.now())))
}

/// Keys the caller can see, filtered and paged; `X-Total-Count` carries the total.
#[utoipa::path(get, path = "/crypto/v1/keys", tag = "keys", params(ListQuery), responses((status = 200, body = [SobjectOut])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<(HeaderMap, Json<Vec<SobjectOut>>)> {
    let Query(q) = query.map_err(|e| ApiError::bad(format!("invalid query: {e}")))?;
    if let Some(g) = &q.group_id {
        id("group", g)?;
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("limit", "must be 1 to 1000"));
    }
    let state_filter = q
        .state
        .as_deref()
        .map(|s| {
            KeyState::ALL
                .into_iter()
                .find(|k| k.as_str() == s)
                .ok_or_else(|| ApiError::field("state", format!("'{s}' is not a key state")))
        })
        .transpose()?;
    let sort = match q.sort.as_deref().unwrap_or("name:asc") {
        "name:asc" => SortBy::NameAsc,
        "name:desc" => SortBy::NameDesc,
        "created_at:asc" => SortBy::CreatedAsc,
        "created_at:desc" => SortBy::CreatedDesc,
        other => {
            return Err(ApiError::field(
                "sort",
                format!(
                    "'{other}' is not supported (name:asc, name:desc, created_at:asc, created_at:desc)"
                ),
            ));
        }
    };
    let obj_type = q
        .obj_type
        .as_deref()
        .map(|t| {
            ObjType::parse(t)
                .ok_or_else(|| ApiError::field("obj_type", format!("'{t}' is not AES, RSA or EC")))
        })
        .transpose()?;
    if q.name_contains
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.chars().count() > 256)
    {
        return Err(ApiError::field(
            "name_contains",
            "must be 1 to 256 characters",
        ));
    }
    let now = state.now();
    let filter = ListFilter {
        account_id: caller.account().to_string(),
        visible_groups: caller.access.visible_groups(),
        group_id: q.group_id,
        name: q.name,
        name_contains: q.name_contains,
        obj_type,
        external: q.external,
        state: state_filter,
        now,
        limit,
        offset: q.offset.unwrap_or(0),
        sort,
    };
    let mut conn = state.catalog.conn().await?;
    let total = sobjects::count(&mut conn, &filter).await?;
    let objects = sobjects::list(&mut conn, &filter).await?;
    let kids: Vec<String> = objects.iter().map(|o| o.kid.clone()).collect();
    let policies = rotation::policies_of(&mut conn, &kids).await?;
    let mut items = Vec::new();
    for o in objects {
        let links = sobjects::links_of(&mut conn, &o.kid).await?;
        let policy = policies.iter().find(|p| p.kid == o.kid);
        items.push(SobjectOut::new(&o, &links, policy, now));
    }
    let mut headers = HeaderMap::new();
    headers.insert("x-total-count", HeaderValue::from(total));
    Ok((headers, Json(items)))
}

#[utoipa::path(patch, path = "/crypto/v1/keys/{kid}", tag = "keys", request_body = KeyUpdate,
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 200, body = SobjectOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
    Body(req): Body<KeyUpdate>,
) -> ApiResult<Json<SobjectOut>> {
    id("key", &kid)?;
    let change = KeyChange {
        name: req.name,
        description: req.description,
        key_ops: req
            .key_ops
            .as_deref()
            .map(|o| parse_ops("key_ops", o))
            .transpose()?,
        enabled: req.enabled,
        activation_date: removable_time("activation_date", &req.activation_date)?,
        deactivation_date: removable_time("deactivation_date", &req.deactivation_date)?,
        tag_edits: match (&req.custom_metadata, req.custom_metadata_edits) {
            (Some(_), Some(_)) => {
                return Err(ApiError::field(
                    "custom_metadata_edits",
                    "give custom_metadata (the whole map) or its edits, not both",
                ));
            }
            (_, edits) => edits.map(|e| TagEdits {
                set: e.set,
                remove: e.remove,
            }),
        },
        tags: req.custom_metadata,
        rotation_policy: req.rotation_policy.map(|p| match p {
            Removable::Set(p) => Some(p),
            Removable::Remove => None,
        }),
    };
    let v = state.keys.update(&caller.access, &kid, change).await?;
    Ok(Json(SobjectOut::of(&v, state.now())))
}

async fn lifecycle(
    state: &AppState,
    caller: &Caller,
    kid: &str,
    t: Transition,
) -> ApiResult<Json<SobjectOut>> {
    id("key", kid)?;
    let v = state.keys.transition(&caller.access, kid, t).await?;
    Ok(Json(SobjectOut::of(&v, state.now())))
}

#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/activate", tag = "keys",
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 200, body = SobjectOut), (status = 409, body = super::error::ErrorBody)))]
pub async fn activate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<Json<SobjectOut>> {
    lifecycle(&state, &caller, &kid, Transition::Activate).await
}

#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/deactivate", tag = "keys",
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 200, body = SobjectOut), (status = 409, body = super::error::ErrorBody)))]
pub async fn deactivate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<Json<SobjectOut>> {
    lifecycle(&state, &caller, &kid, Transition::Deactivate).await
}

#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/revoke", tag = "keys", request_body = Revoke,
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 200, body = SobjectOut), (status = 400, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
    Body(req): Body<Revoke>,
) -> ApiResult<Json<SobjectOut>> {
    let Some(compromise) = rules::is_compromise(&req.code) else {
        return Err(ApiError::field(
            "code",
            format!("'{}' is not a revocation reason", req.code),
        ));
    };
    let reason = match &req.message {
        Some(m) => format!("{}: {m}", req.code),
        None => req.code.clone(),
    };
    lifecycle(
        &state,
        &caller,
        &kid,
        Transition::Revoke { compromise, reason },
    )
    .await
}

/// Erases the key material; the object stays, in state Destroyed. Pre-active, deactivated
/// and compromised keys can be destroyed; active ones cannot.
#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/destroy", tag = "keys",
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 200, body = SobjectOut), (status = 409, body = super::error::ErrorBody)))]
pub async fn destroy(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<Json<SobjectOut>> {
    lifecycle(&state, &caller, &kid, Transition::Destroy).await
}

/// Deletes a key that is not active; a virtual key only once the HSM no longer has it.
#[utoipa::path(delete, path = "/crypto/v1/keys/{kid}", tag = "keys",
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 204), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<StatusCode> {
    id("key", &kid)?;
    state.keys.delete(&caller.access, &kid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The key with its material (PKCS#8 DER for RSA and EC, raw for AES), for keys that permit
/// EXPORT: to applications of the key's group, and to users who manage the group when it
/// allows user export.
#[utoipa::path(post, path = "/crypto/v1/keys/export", tag = "keys", request_body = KeyDescriptor,
    responses((status = 200, body = SobjectOut), (status = 403, body = super::error::ErrorBody)))]
pub async fn export(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(d): Body<KeyDescriptor>,
) -> ApiResult<Json<SobjectOut>> {
    let key: KeyRef = d.to_ref("key")?;
    exported(&state, &caller, &key).await
}

/// The same as `POST /crypto/v1/keys/export`, for the key named by its id (DSM's older form,
/// which DSM clients still call).
#[utoipa::path(get, path = "/crypto/v1/keys/{kid}/export", tag = "keys",
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 200, body = SobjectOut), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn export_kid(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<Json<SobjectOut>> {
    exported(&state, &caller, &KeyRef::Kid(kid)).await
}

async fn exported(state: &AppState, caller: &Caller, key: &KeyRef) -> ApiResult<Json<SobjectOut>> {
    let (v, der) = state.keys.export(&caller.access, key).await?;
    let mut body = SobjectOut::of(&v, state.now());
    body.value = Some(b64(&der));
    Ok(Json(body))
}
