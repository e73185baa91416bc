//! Rotation (DSM rekey): `POST /crypto/v1/keys/rekey` (the key named in the body) and
//! `POST /crypto/v1/keys/{kid}/rekey`, and a key's rotation history. The key service does the
//! rotation; these parse the request and render the replacement.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::catalog::rotation::{CopySelection, RotationPolicy};
use crate::catalog::schedule::{self, Fire, FireKind};
use crate::catalog::sobjects::{self, LinkKind};
use crate::keys::{CopyOutcome, KeyRef, RekeyChange, RekeySpec};
use crate::workflows::Trigger;

use super::extract::{Body, Caller, id, parse_json};
use super::model::{
    KeyDescriptor, Removable, SobjectOut, Time, opt_time, parse_ops, parse_time, time,
};
use super::{ApiError, ApiResult, AppState};

/// DSM `SobjectRekeyRequest`: the key (by `name`, or `kid`), whether to deactivate it, and
/// the attributes of its replacement; plus which linked copies rotate along, and for keys of
/// an external key manager the catalog key whose material the new version takes.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RekeyRequest {
    /// The key to rotate (`/crypto/v1/keys/rekey`); it keeps the name on its replacement.
    pub name: Option<String>,
    pub kid: Option<String>,
    /// Deactivate the replaced key (it can still decrypt and verify what it protected).
    pub deactivate_rotated_key: Option<bool>,
    pub description: Option<String>,
    /// Operations of the replacement; EXPORT only if the rotated key permits it.
    pub key_ops: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub activation_date: Option<String>,
    pub deactivation_date: Option<String>,
    pub custom_metadata: Option<BTreeMap<String, String>>,
    /// Keys held in the catalog: a new size (AES, RSA).
    pub key_size: Option<u32>,
    /// Accepted as DSM clients send them; must be the rotated key's.
    pub obj_type: Option<String>,
    pub group_id: Option<String>,
    /// Linked copies that rotate with the key: `"all_external"` or `{"select": [kid, ...]}`.
    #[schema(value_type = Option<Object>)]
    pub rotate_copied_keys: Option<CopySelection>,
    /// Keys of an external key manager: the catalog key whose material the new version takes.
    pub rotate_from: Option<KeyDescriptor>,
    /// A new rotation policy for the replacement, or `"remove"`; by default the rotated key's
    /// policy moves over.
    #[schema(schema_with = super::schemas::rotation_policy_or_remove)]
    pub rotation_policy: Option<Removable<RotationPolicy>>,
}

/// The replacement, with how each linked copy's rotation went.
#[derive(Debug, Serialize, ToSchema)]
pub struct RekeyOut {
    #[serde(flatten)]
    pub key: SobjectOut,
    /// The linked copies that were to rotate along: each `new_kid`, or its `error`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub rotated_copies: Vec<CopyOutcome>,
}

fn spec_of(req: RekeyRequest, key: KeyRef) -> ApiResult<RekeySpec> {
    let t =
        |field: &str, v: &Option<String>| v.as_deref().map(|t| parse_time(field, t)).transpose();
    Ok(RekeySpec {
        key: Some(key),
        deactivate_rotated_key: req.deactivate_rotated_key.unwrap_or(false),
        change: RekeyChange {
            description: req.description,
            key_ops: req
                .key_ops
                .as_deref()
                .map(|o| parse_ops("key_ops", o))
                .transpose()?,
            enabled: req.enabled,
            activation_date: t("activation_date", &req.activation_date)?,
            deactivation_date: t("deactivation_date", &req.deactivation_date)?,
            tags: req.custom_metadata,
            key_size: req.key_size,
        },
        copies: req.rotate_copied_keys,
        rotate_from: req
            .rotate_from
            .as_ref()
            .map(|d| d.to_ref("rotate_from"))
            .transpose()?,
        rotation_policy: req.rotation_policy.map(|p| match p {
            Removable::Set(p) => Some(p),
            Removable::Remove => None,
        }),
        trigger: Trigger::Api,
    })
}

pub async fn rekey_key(
    state: &AppState,
    caller: &Caller,
    key: KeyRef,
    req: RekeyRequest,
) -> ApiResult<(StatusCode, Json<RekeyOut>)> {
    let current = state.keys.resolve(&caller.access, &key).await?;
    if let Some(t) = &req.obj_type
        && t != current.obj_type.as_str()
    {
        return Err(ApiError::field(
            "obj_type",
            "a rotation keeps the key's type",
        ));
    }
    if let Some(g) = &req.group_id
        && *g != current.group_id
    {
        return Err(ApiError::field(
            "group_id",
            "a rotation keeps the key's group",
        ));
    }
    let spec = spec_of(req, KeyRef::Kid(current.kid))?;
    let r = state.keys.rekey(&caller.access, spec).await?;
    Ok((
        StatusCode::CREATED,
        Json(RekeyOut {
            key: SobjectOut::of(&r.key, state.now()),
            rotated_copies: r.copies,
        }),
    ))
}

/// Rotates the key named in the body (DSM: `name` selects it).
#[utoipa::path(post, path = "/crypto/v1/keys/rekey", tag = "keys", request_body = RekeyRequest,
    responses((status = 201, body = RekeyOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn rekey(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(req): Body<RekeyRequest>,
) -> ApiResult<(StatusCode, Json<RekeyOut>)> {
    let key = match (&req.kid, &req.name) {
        (Some(kid), None) => {
            id("key", kid)?;
            KeyRef::Kid(kid.clone())
        }
        (None, Some(name)) => KeyRef::Name(name.clone()),
        _ => {
            return Err(ApiError::field(
                "name",
                "give the key's name (or its kid, not both)",
            ));
        }
    };
    rekey_key(&state, &caller, key, req).await
}

/// Rotates the key `kid`; a `name` in the body would rename nothing and is refused.
#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/rekey", tag = "keys", request_body = RekeyRequest,
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 201, body = RekeyOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn rekey_kid(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<RekeyOut>)> {
    id("key", &kid)?;
    // The body is optional here: the key is in the path.
    let req: RekeyRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RekeyRequest::default()
    } else {
        parse_json(&body)?
    };
    if req.name.is_some() || req.kid.is_some() {
        return Err(ApiError::field(
            "name",
            "the key is the one in the path; a rotation keeps its name",
        ));
    }
    rekey_key(&state, &caller, KeyRef::Kid(kid), req).await
}

/// One fire of the scheduler: a scheduled rotation of a key, or a run of a cron job.
#[derive(Debug, Serialize, ToSchema)]
pub struct FireOut {
    /// The key the fire rotated (or was to), or the job.
    pub target: String,
    pub due_at: Time,
    /// `running`, `retry`, `succeeded` or `failed`.
    pub status: String,
    pub attempt: i64,
    pub next_attempt_at: Option<Time>,
    pub claimed_at: Time,
    pub finished_at: Option<Time>,
    pub run_id: Option<String>,
    pub error: Option<String>,
}

impl From<Fire> for FireOut {
    fn from(f: Fire) -> Self {
        FireOut {
            target: f.key.target,
            due_at: time(f.key.due_at),
            status: f.status,
            attempt: f.attempt,
            next_attempt_at: opt_time(f.next_attempt_at),
            claimed_at: time(f.claimed_at),
            finished_at: opt_time(f.finished_at),
            run_id: f.run_id,
            error: f.error,
        }
    }
}

/// The scheduled rotations of a key and of the keys it replaced, newest first.
#[utoipa::path(get, path = "/crypto/v1/keys/{kid}/rotations", tag = "keys",
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 200, body = [FireOut]), (status = 404, body = super::error::ErrorBody)))]
pub async fn history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<Json<Vec<FireOut>>> {
    id("key", &kid)?;
    let key = state.keys.get(&caller.access, &kid).await?;
    let mut conn = state.catalog.conn().await?;
    // The chain of keys this one replaced (each rotation is a new key).
    let mut chain = vec![key.kid.clone()];
    let mut at = key.kid;
    while chain.len() < 200 {
        let links = sobjects::links_of(&mut conn, &at).await?;
        match links
            .iter()
            .find(|l| l.kind == LinkKind::Replacement && l.target == at)
        {
            Some(l) => {
                at = l.source.clone();
                chain.push(at.clone());
            }
            None => break,
        }
    }
    let fires =
        schedule::history(&mut conn, caller.account(), FireKind::Rotation, &chain, 100).await?;
    Ok(Json(fires.into_iter().map(FireOut::from).collect()))
}
