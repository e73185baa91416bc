//! Keys (DSM security objects): create, import, read, list, update, lifecycle (activate,
//! deactivate, revoke, destroy), delete and export. Every create, import and update is put
//! to the group's and account's policies first.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::audit::Event;
use crate::auth::Principal;
use crate::catalog::groups::Group;
use crate::catalog::sobjects::{
    self, Creator, KeyState, ListFilter, ObjType, SObject, SortBy, material_context,
};
use crate::catalog::{Conn, new_id};
use crate::crypto::{self, Material, RsaEncryptionMode, curve_from_dsm, curve_to_dsm};
use crate::plugins::policy::{Action, PolicyRequest};
use crate::policy::{self, Verdict};

use super::extract::{Body, Caller, id};
use super::model::{KeyDescriptor, Removable, SobjectOut, b64, from_b64, from_hex, parse_time};
use super::{ApiError, ApiResult, AppState};

/// Operations a key may be given, per type.
const AES_OPS: &[&str] = &[
    "ENCRYPT",
    "DECRYPT",
    "WRAPKEY",
    "UNWRAPKEY",
    "EXPORT",
    "APPMANAGEABLE",
];
const RSA_OPS: &[&str] = &[
    "ENCRYPT",
    "DECRYPT",
    "SIGN",
    "VERIFY",
    "WRAPKEY",
    "UNWRAPKEY",
    "EXPORT",
    "APPMANAGEABLE",
];
const EC_OPS: &[&str] = &["SIGN", "VERIFY", "EXPORT", "APPMANAGEABLE"];
const MAX_TAGS: usize = 64;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    pub name: Option<String>,
    /// The group to create the key in (applications: default group when absent).
    pub group_id: Option<String>,
    /// `AES`, `RSA` or `EC`.
    pub obj_type: Option<String>,
    /// AES 128/192/256, RSA 2048/3072/4096.
    pub key_size: Option<u32>,
    /// `NistP256`, `NistP384` or `NistP521`.
    pub elliptic_curve: Option<String>,
    pub key_ops: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub activation_date: Option<String>,
    pub deactivation_date: Option<String>,
    pub custom_metadata: Option<BTreeMap<String, String>>,
    /// Import only: the key material. RSA and EC as PKCS#8 (or PKCS#1 / SEC1) DER, AES as the
    /// raw key bytes, encoded as `value_format` says.
    pub value: Option<String>,
    /// `base64` (the default) or `hex`.
    pub value_format: Option<String>,
    /// Import only: `value` is wrapped by this key-encryption key of the catalog.
    pub wrapped_by: Option<KeyDescriptor>,
    /// How `value` is wrapped: `KW` or `KWP` (the default) for an AES KEK, an OAEP mode for
    /// an RSA KEK.
    #[schema(value_type = Option<Object>)]
    pub wrapping_mode: Option<WrappingMode>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum WrappingMode {
    Aes(String),
    Rsa(RsaEncryptionMode),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub key_ops: Option<Vec<String>>,
    pub enabled: Option<bool>,
    /// A time, or `"remove"`.
    #[schema(value_type = Option<String>)]
    pub activation_date: Option<Removable<String>>,
    #[schema(value_type = Option<String>)]
    pub deactivation_date: Option<Removable<String>>,
    /// Replaces the custom metadata.
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub group_id: Option<String>,
    pub name: Option<String>,
    /// PreActive, Active, Deactivated, Compromised, Destroyed.
    pub state: Option<String>,
    /// 1 to 1000 (default 100).
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    /// `name:asc` (default), `name:desc`, `created_at:asc`, `created_at:desc`.
    pub sort: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Revoke {
    /// `KeyCompromise` and `CACompromise` mark the key compromised; `Unspecified`,
    /// `AffiliationChanged`, `Superseded`, `CessationOfOperation` and `PrivilegeWithdrawn`
    /// deactivate it.
    pub code: String,
    pub message: Option<String>,
}

pub(super) fn check_name(n: &str) -> ApiResult<String> {
    let n = n.trim();
    if n.is_empty() || n.len() > 256 {
        return Err(ApiError::field("name", "must be 1 to 256 characters"));
    }
    Ok(n.to_string())
}

pub(super) fn check_ops(obj_type: ObjType, ops: &[String]) -> ApiResult<()> {
    let allowed = match obj_type {
        ObjType::Aes => AES_OPS,
        ObjType::Rsa => RSA_OPS,
        ObjType::Ec => EC_OPS,
    };
    if let Some(bad) = ops.iter().find(|o| !allowed.contains(&o.as_str())) {
        return Err(ApiError::field(
            "key_ops",
            format!(
                "'{bad}' is not an operation for {} keys ({})",
                obj_type.as_str(),
                allowed.join(", ")
            ),
        ));
    }
    Ok(())
}

fn default_ops(obj_type: ObjType) -> Vec<String> {
    let ops: &[&str] = match obj_type {
        ObjType::Aes => &[
            "ENCRYPT",
            "DECRYPT",
            "WRAPKEY",
            "UNWRAPKEY",
            "APPMANAGEABLE",
        ],
        ObjType::Rsa => &[
            "SIGN",
            "VERIFY",
            "ENCRYPT",
            "DECRYPT",
            "WRAPKEY",
            "UNWRAPKEY",
            "APPMANAGEABLE",
        ],
        ObjType::Ec => &["SIGN", "VERIFY", "APPMANAGEABLE"],
    };
    ops.iter().map(|s| s.to_string()).collect()
}

pub(super) fn check_tags(tags: &BTreeMap<String, String>) -> ApiResult<()> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::field(
            "custom_metadata",
            format!("at most {MAX_TAGS} entries"),
        ));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > 128 || v.len() > 1024 {
            return Err(ApiError::field(
                "custom_metadata",
                "names are 1-128 characters, values at most 1024",
            ));
        }
    }
    Ok(())
}

fn check_dates(activation: Option<i64>, deactivation: Option<i64>) -> ApiResult<()> {
    if let (Some(a), Some(d)) = (activation, deactivation)
        && d <= a
    {
        return Err(ApiError::field(
            "deactivation_date",
            "must be after the activation date",
        ));
    }
    Ok(())
}

fn obj_type(s: &str) -> ApiResult<ObjType> {
    ObjType::parse(s).ok_or_else(|| {
        ApiError::field(
            "obj_type",
            format!("'{s}' is not supported (AES, RSA or EC)"),
        )
    })
}

/// The group a new key goes into, checked for the caller's rights.
pub(super) async fn target_group(
    state: &AppState,
    caller: &Caller,
    requested: Option<&str>,
) -> ApiResult<Arc<Group>> {
    let gid = match (requested, caller.principal()) {
        (Some(g), _) => g.to_string(),
        (None, Principal::App { app_id, .. }) => {
            let mut conn = state.catalog.conn().await?;
            crate::catalog::apps::get(&mut conn, app_id)
                .await?
                .and_then(|a| a.default_group)
                .ok_or_else(|| {
                    ApiError::field(
                        "group_id",
                        "is required (the application has no default group)",
                    )
                })?
        }
        (None, Principal::User { .. }) => return Err(ApiError::field("group_id", "is required")),
    };
    id("group", &gid)?;
    let group = match state.group(&gid).await? {
        Some(g) if g.account_id == caller.account() => g,
        Some(_) => {
            return Err(ApiError::Forbidden(
                "that group belongs to another account".into(),
            ));
        }
        None => return Err(ApiError::NotFound(format!("no group {gid}"))),
    };
    if !caller.access.can_manage_keys(&group.id) {
        return Err(ApiError::Forbidden(
            "you may not manage keys in that group".into(),
        ));
    }
    Ok(group)
}

/// Puts an operation to the policies; a denial is recorded and returned as a 403 listing
/// every violated rule.
pub async fn enforce(
    state: &AppState,
    caller: &Caller,
    group: &Group,
    action: Action,
    audit_action: &str,
    key: &SObject,
    current: Option<&SObject>,
) -> ApiResult<Verdict> {
    let now = state.now();
    let account = state
        .account(caller.account())
        .await?
        .ok_or_else(|| ApiError::Internal("account vanished".into()))?;
    let request = PolicyRequest {
        action,
        principal: policy::principal(caller.principal()),
        account: account.id.clone(),
        group: group.id.clone(),
        key: policy::attributes(key, now),
        current: current.map(|c| policy::attributes(c, now)),
        now,
    };
    let verdict = policy::check(&state.plugins, &account, group, &request).await?;
    if !verdict.allowed() {
        state
            .audit
            .later(
                Event::new(
                    Some(caller.account()),
                    caller.principal(),
                    audit_action,
                    now,
                )
                .object("sobject", &key.kid)
                .outcome("denied", "denied by policy")
                .details(verdict.audit_details()),
            )
            .await;
        return Err(ApiError::PolicyDenied(verdict.violations));
    }
    Ok(verdict)
}

async fn out(c: &mut Conn, o: &SObject, now: i64) -> ApiResult<SobjectOut> {
    let links = sobjects::links_of(c, &o.kid).await?;
    Ok(SobjectOut::new(o, &links, now))
}

/// The caller's view of a key, read now.
pub(super) async fn load_out(
    state: &AppState,
    caller: &Caller,
    kid: &str,
) -> ApiResult<SobjectOut> {
    let mut conn = state.catalog.conn().await?;
    let o = load(&mut conn, caller, kid).await?;
    out(&mut conn, &o, state.now()).await
}

/// A key of the caller's account that the caller may read.
pub async fn load(c: &mut Conn, caller: &Caller, kid: &str) -> ApiResult<SObject> {
    id("key", kid)?;
    match sobjects::get(c, kid).await? {
        Some(o) if o.account_id != caller.account() => Err(ApiError::Forbidden(
            "that key belongs to another account".into(),
        )),
        Some(o) if !caller.access.can_read_group(&o.group_id) => Err(ApiError::Forbidden(
            "you have no access to that key's group".into(),
        )),
        Some(o) => Ok(o),
        None => Err(ApiError::NotFound(format!("no key {kid}"))),
    }
}

async fn by_descriptor(c: &mut Conn, caller: &Caller, d: &KeyDescriptor) -> ApiResult<SObject> {
    match (&d.kid, &d.name) {
        (Some(kid), None) => load(c, caller, kid).await,
        (None, Some(name)) => {
            let o = sobjects::get_by_name(c, caller.account(), name)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no key named '{name}'")))?;
            load(c, caller, &o.kid).await
        }
        _ => Err(ApiError::bad("give exactly one of 'kid' and 'name'")),
    }
}

/// Type and size (or curve) of a key to be created or imported.
struct Spec {
    obj_type: ObjType,
    key_size: Option<u32>,
    curve: Option<keyward_crypto::Curve>,
}

/// Builds the new object from a create or import request. The caller adds material, public
/// key and check value.
fn new_object(
    caller: &Caller,
    group: &Group,
    req: &KeyRequest,
    spec: Spec,
    origin: &str,
    now: i64,
) -> ApiResult<SObject> {
    let Spec {
        obj_type,
        key_size,
        curve,
    } = spec;
    let name = check_name(
        req.name
            .as_deref()
            .ok_or_else(|| ApiError::field("name", "is required"))?,
    )?;
    let key_ops = req.key_ops.clone().unwrap_or_else(|| default_ops(obj_type));
    check_ops(obj_type, &key_ops)?;
    let activation = req
        .activation_date
        .as_deref()
        .map(|t| parse_time("activation_date", t))
        .transpose()?;
    let deactivation = req
        .deactivation_date
        .as_deref()
        .map(|t| parse_time("deactivation_date", t))
        .transpose()?;
    check_dates(activation.or(Some(now)), deactivation)?;
    let tags = req.custom_metadata.clone().unwrap_or_default();
    check_tags(&tags)?;
    Ok(SObject {
        kid: new_id(),
        account_id: caller.account().to_string(),
        group_id: group.id.clone(),
        name,
        description: req.description.clone(),
        obj_type,
        key_size,
        elliptic_curve: curve.map(|c| curve_to_dsm(c).to_string()),
        key_ops,
        enabled: req.enabled.unwrap_or(true),
        activation_date: Some(activation.unwrap_or(now)),
        deactivation_date: deactivation,
        compromise_date: None,
        destruction_date: None,
        revocation_reason: None,
        created_at: now,
        lastused_at: None,
        creator: match caller.principal() {
            Principal::User { user_id, .. } => Creator::User(user_id.clone()),
            Principal::App { app_id, .. } => Creator::App(app_id.clone()),
        },
        origin: origin.to_string(),
        material: None,
        pub_key: None,
        kcv: None,
        external: None,
        tags,
    })
}

/// Seals the material into the object, checks policy and stores it in one transaction.
async fn store_new(
    state: &AppState,
    caller: &Caller,
    mut o: SObject,
    material: &Material,
    verdict: Verdict,
    audit_action: &str,
    copy_of: Option<&SObject>,
) -> ApiResult<(StatusCode, Json<SobjectOut>)> {
    o.material = Some(
        state
            .catalog
            .seal(&material_context(&o.kid), &material.to_der()),
    );
    o.pub_key = material.public_key_der();
    o.kcv = material.kcv();
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    sobjects::insert(&mut tx, &o).await.map_err(|e| {
        if e.is_unique_violation() {
            ApiError::Conflict(format!("a key named '{}' exists in this account", o.name))
        } else {
            e.into()
        }
    })?;
    if let Some(source) = copy_of {
        sobjects::add_link(
            &mut tx,
            &sobjects::Link {
                kind: sobjects::LinkKind::Copy,
                source: source.kid.clone(),
                target: o.kid.clone(),
                target_group: Some(o.group_id.clone()),
                created_by: caller.principal().id().to_string(),
                created_at: now,
            },
        )
        .await?;
    }
    let mut details = serde_json::json!({"name": o.name, "obj_type": o.obj_type.as_str(), "key_size": o.key_size, "elliptic_curve": o.elliptic_curve, "group_id": o.group_id, "copied_from": copy_of.map(|s| &s.kid)});
    if let serde_json::Value::Object(p) = verdict.audit_details() {
        details.as_object_mut().expect("object").extend(p);
    }
    Event::new(Some(&o.account_id), caller.principal(), audit_action, now)
        .object("sobject", &o.kid)
        .details(details)
        .write(&mut tx)
        .await?;
    let mut body = out(&mut tx, &o, now).await?;
    tx.commit().await?;
    if let Some(source) = copy_of {
        state.forget_key(&source.kid);
    }
    body.policy_warnings = verdict.warnings;
    Ok((StatusCode::CREATED, Json(body)))
}

/// Stores a copy of a catalog key in a group that is not linked: same material, linked to
/// its source.
pub(super) async fn store_copy(
    state: &AppState,
    caller: &Caller,
    o: SObject,
    material: &Material,
    verdict: Verdict,
    source: &SObject,
) -> ApiResult<(StatusCode, Json<SobjectOut>)> {
    store_new(
        state,
        caller,
        o,
        material,
        verdict,
        "key.copy",
        Some(source),
    )
    .await
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
    let t = obj_type(
        req.obj_type
            .as_deref()
            .ok_or_else(|| ApiError::field("obj_type", "is required"))?,
    )?;
    let curve = req
        .elliptic_curve
        .as_deref()
        .map(curve_from_dsm)
        .transpose()
        .map_err(|e| ApiError::field("elliptic_curve", e.0))?;
    if t == ObjType::Ec && curve.is_none() {
        return Err(ApiError::field("elliptic_curve", "is required for EC keys"));
    }
    if t != ObjType::Ec && curve.is_some() {
        return Err(ApiError::field("elliptic_curve", "applies to EC keys only"));
    }
    let key_size = req.key_size;
    if t != ObjType::Ec {
        crypto::check_size(t, key_size).map_err(|e| ApiError::field("key_size", e.0))?;
    } else if key_size.is_some() {
        return Err(ApiError::field(
            "key_size",
            "EC keys take an elliptic_curve instead",
        ));
    }
    let group = target_group(&state, &caller, req.group_id.as_deref()).await?;
    let o = new_object(
        &caller,
        &group,
        &req,
        Spec {
            obj_type: t,
            key_size,
            curve,
        },
        "Keyward",
        state.now(),
    )?;
    // Policy first, on the proposed attributes, before spending time on key generation.
    let verdict = enforce(
        &state,
        &caller,
        &group,
        Action::Create,
        "key.create",
        &o,
        None,
    )
    .await?;
    if group.link.is_some() {
        return super::external_keys::create_in_hsm(&state, &caller, group, o, verdict, None, None)
            .await;
    }
    let material = tokio::task::spawn_blocking(move || crypto::generate(t, key_size, curve))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    store_new(&state, &caller, o, &material, verdict, "key.create", None).await
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
    let t = obj_type(
        req.obj_type
            .as_deref()
            .ok_or_else(|| ApiError::field("obj_type", "is required"))?,
    )?;
    let bytes = material_bytes(&state, &caller, &req).await?;
    let material = crypto::import(t, &bytes).map_err(|e| ApiError::field("value", e.0))?;
    if let Some(size) = req.key_size
        && material.size() != Some(size)
    {
        return Err(ApiError::field(
            "key_size",
            format!("the imported key is {} bits", material.size().unwrap_or(0)),
        ));
    }
    if let Some(c) = &req.elliptic_curve
        && material.curve().map(curve_to_dsm) != Some(c.as_str())
    {
        return Err(ApiError::field(
            "elliptic_curve",
            "does not match the imported key",
        ));
    }
    let group = target_group(&state, &caller, req.group_id.as_deref()).await?;
    let o = new_object(
        &caller,
        &group,
        &req,
        Spec {
            obj_type: t,
            key_size: material.size(),
            curve: material.curve(),
        },
        "External",
        state.now(),
    )?;
    let verdict = enforce(
        &state,
        &caller,
        &group,
        Action::Import,
        "key.import",
        &o,
        None,
    )
    .await?;
    if group.link.is_some() {
        // The material goes into the HSM; the catalog keeps none of it.
        return super::external_keys::create_in_hsm(
            &state,
            &caller,
            group,
            o,
            verdict,
            Some(material),
            None,
        )
        .await;
    }
    store_new(&state, &caller, o, &material, verdict, "key.import", None).await
}

/// The plaintext key bytes of an import: decoded, and unwrapped with the KEK when wrapped.
async fn material_bytes(state: &AppState, caller: &Caller, req: &KeyRequest) -> ApiResult<Vec<u8>> {
    let value = req
        .value
        .as_deref()
        .ok_or_else(|| ApiError::field("value", "is required for an import"))?;
    let decoded = match req.value_format.as_deref().unwrap_or("base64") {
        "base64" => from_b64("value", value)?,
        "hex" => from_hex("value", value)?,
        other => {
            return Err(ApiError::field(
                "value_format",
                format!("'{other}' is not supported (base64 or hex)"),
            ));
        }
    };
    let Some(kek) = &req.wrapped_by else {
        if req.wrapping_mode.is_some() {
            return Err(ApiError::field(
                "wrapping_mode",
                "applies only with wrapped_by",
            ));
        }
        return Ok(decoded);
    };
    let mut conn = state.catalog.conn().await?;
    let kek = by_descriptor(&mut conn, caller, kek)
        .await
        .map_err(|e| match e {
            ApiError::NotFound(m) => ApiError::field("wrapped_by", m),
            other => other,
        })?;
    drop(conn);
    if !caller.access.can_manage_keys(&kek.group_id) {
        return Err(ApiError::Forbidden(
            "you may not use that key-encryption key".into(),
        ));
    }
    if !kek.has_op("UNWRAPKEY") {
        return Err(ApiError::field(
            "wrapped_by",
            "the key-encryption key does not permit UNWRAPKEY",
        ));
    }
    if !matches!(
        kek.state(state.now()),
        KeyState::Active | KeyState::Deactivated
    ) || !kek.enabled
    {
        return Err(ApiError::Conflict(
            "the key-encryption key is not usable in its state".into(),
        ));
    }
    let usable = state
        .usable_key(&kek.kid)
        .await?
        .ok_or_else(|| ApiError::NotFound("key-encryption key".into()))?;
    let material = usable.material.as_ref().ok_or_else(|| {
        ApiError::field(
            "wrapped_by",
            "the key-encryption key has no material in the catalog",
        )
    })?;
    let (aes_mode, rsa_mode) = match &req.wrapping_mode {
        None => (None, None),
        Some(WrappingMode::Aes(m)) => (Some(m.as_str()), None),
        Some(WrappingMode::Rsa(m)) => (None, Some(m.clone())),
    };
    let plain = crypto::unwrap(material, aes_mode, &rsa_mode, &decoded).map_err(|e| {
        ApiError::field(
            "value",
            format!(
                "could not be unwrapped with the key-encryption key: {}",
                e.0
            ),
        )
    })?;
    state.audit.key_used(&kek.kid, state.now()).await;
    Ok(plain)
}

#[utoipa::path(get, path = "/crypto/v1/keys/{kid}", tag = "keys", responses((status = 200, body = SobjectOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<Json<SobjectOut>> {
    let mut conn = state.catalog.conn().await?;
    let o = load(&mut conn, &caller, &kid).await?;
    Ok(Json(out(&mut conn, &o, state.now()).await?))
}

#[utoipa::path(post, path = "/crypto/v1/keys/info", tag = "keys", request_body = KeyDescriptor, responses((status = 200, body = SobjectOut)))]
pub async fn info(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(d): Body<KeyDescriptor>,
) -> ApiResult<Json<SobjectOut>> {
    let mut conn = state.catalog.conn().await?;
    let o = by_descriptor(&mut conn, &caller, &d).await?;
    Ok(Json(out(&mut conn, &o, state.now()).await?))
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
            KeyState::parse(s)
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
    let now = state.now();
    let filter = ListFilter {
        account_id: caller.account().to_string(),
        visible_groups: caller.access.visible_groups(),
        group_id: q.group_id,
        name: q.name,
        state: state_filter,
        now,
        limit,
        offset: q.offset.unwrap_or(0),
        sort,
    };
    let mut conn = state.catalog.conn().await?;
    let total = sobjects::count(&mut conn, &filter).await?;
    let mut items = Vec::new();
    for o in sobjects::list(&mut conn, &filter).await? {
        items.push(out(&mut conn, &o, now).await?);
    }
    let mut headers = HeaderMap::new();
    headers.insert("x-total-count", HeaderValue::from(total));
    Ok((headers, Json(items)))
}

#[utoipa::path(patch, path = "/crypto/v1/keys/{kid}", tag = "keys", request_body = KeyUpdate,
    responses((status = 200, body = SobjectOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
    Body(req): Body<KeyUpdate>,
) -> ApiResult<Json<SobjectOut>> {
    let mut conn = state.catalog.conn().await?;
    let current = load(&mut conn, &caller, &kid).await?;
    drop(conn);
    if !caller.access.can_manage_keys(&current.group_id) {
        return Err(ApiError::Forbidden(
            "you may not manage keys in that group".into(),
        ));
    }
    if current.state(state.now()) == KeyState::Destroyed {
        return Err(ApiError::Conflict(
            "a destroyed key cannot be changed".into(),
        ));
    }
    let mut o = current.clone();
    if let Some(n) = &req.name {
        o.name = check_name(n)?;
    }
    if let Some(d) = &req.description {
        o.description = Some(d.clone());
    }
    if let Some(ops) = &req.key_ops {
        check_ops(o.obj_type, ops)?;
        o.key_ops = ops.clone();
    }
    if let Some(e) = req.enabled {
        o.enabled = e;
    }
    match &req.activation_date {
        Some(Removable::Set(t)) => o.activation_date = Some(parse_time("activation_date", t)?),
        Some(Removable::Remove) => o.activation_date = None,
        None => {}
    }
    match &req.deactivation_date {
        Some(Removable::Set(t)) => o.deactivation_date = Some(parse_time("deactivation_date", t)?),
        Some(Removable::Remove) => o.deactivation_date = None,
        None => {}
    }
    check_dates(o.activation_date, o.deactivation_date)?;
    if let Some(tags) = &req.custom_metadata {
        check_tags(tags)?;
        o.tags = tags.clone();
    }
    let group = state
        .group(&o.group_id)
        .await?
        .ok_or_else(|| ApiError::Internal("group vanished".into()))?;
    let verdict = enforce(
        &state,
        &caller,
        &group,
        Action::Update,
        "key.update",
        &o,
        Some(&current),
    )
    .await?;
    if current.external.is_some() {
        let details = serde_json::json!({"fields": changed_fields(&req), "policy": verdict.audit_details().get("policy")});
        if let Some(mut body) = super::external_keys::push_change(
            &state,
            &caller,
            &current,
            o.clone(),
            "key.update",
            details,
        )
        .await?
        {
            body.policy_warnings = verdict.warnings;
            return Ok(Json(body));
        }
    }
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    sobjects::update(&mut tx, &o).await.map_err(|e| {
        if e.is_unique_violation() {
            ApiError::Conflict(format!("a key named '{}' exists in this account", o.name))
        } else {
            e.into()
        }
    })?;
    Event::new(Some(&o.account_id), caller.principal(), "key.update", now)
        .object("sobject", &o.kid)
        .details(serde_json::json!({"fields": changed_fields(&req), "policy": verdict.audit_details().get("policy")}))
        .write(&mut tx)
        .await?;
    let mut body = out(&mut tx, &o, now).await?;
    tx.commit().await?;
    state.forget_key(&o.kid);
    body.policy_warnings = verdict.warnings;
    Ok(Json(body))
}

fn changed_fields(req: &KeyUpdate) -> Vec<&'static str> {
    let mut f = Vec::new();
    let mut add = |set: bool, name: &'static str| {
        if set {
            f.push(name)
        }
    };
    add(req.name.is_some(), "name");
    add(req.description.is_some(), "description");
    add(req.key_ops.is_some(), "key_ops");
    add(req.enabled.is_some(), "enabled");
    add(req.activation_date.is_some(), "activation_date");
    add(req.deactivation_date.is_some(), "deactivation_date");
    add(req.custom_metadata.is_some(), "custom_metadata");
    f
}

/// Applies a lifecycle change to a key the caller manages, in one transaction.
async fn lifecycle(
    state: &AppState,
    caller: &Caller,
    kid: &str,
    action: &str,
    details: serde_json::Value,
    change: impl FnOnce(&mut SObject, i64) -> ApiResult<()>,
) -> ApiResult<Json<SobjectOut>> {
    let now = state.now();
    let mut conn = state.catalog.conn().await?;
    let current = load(&mut conn, caller, kid).await?;
    drop(conn);
    if current.external.is_some() {
        return virtual_lifecycle(state, caller, current, action, details, change).await;
    }
    let mut tx = state.catalog.begin().await?;
    let mut o = load(&mut tx, caller, kid).await?;
    if !caller.access.can_manage_keys(&o.group_id) {
        return Err(ApiError::Forbidden(
            "you may not manage keys in that group".into(),
        ));
    }
    change(&mut o, now)?;
    sobjects::update(&mut tx, &o).await?;
    Event::new(Some(&o.account_id), caller.principal(), action, now)
        .object("sobject", &o.kid)
        .details(details)
        .write(&mut tx)
        .await?;
    let body = out(&mut tx, &o, now).await?;
    tx.commit().await?;
    state.forget_key(&o.kid);
    Ok(Json(body))
}

/// A lifecycle change of a virtual key: made in the HSM first. Deactivating or revoking it
/// disables the HSM key (F20); its material cannot be destroyed from here (soft-delete it).
async fn virtual_lifecycle(
    state: &AppState,
    caller: &Caller,
    current: SObject,
    action: &str,
    details: serde_json::Value,
    change: impl FnOnce(&mut SObject, i64) -> ApiResult<()>,
) -> ApiResult<Json<SobjectOut>> {
    if !caller.access.can_manage_keys(&current.group_id) {
        return Err(ApiError::Forbidden(
            "you may not manage keys in that group".into(),
        ));
    }
    if action == "key.destroy" {
        return Err(ApiError::Conflict(
            "the key's material lives in the external key manager; soft-delete it there (POST /crypto/v1/keys/{kid}/schedule_deletion)".into(),
        ));
    }
    let now = state.now();
    let mut o = current.clone();
    change(&mut o, now)?;
    if matches!(o.state(now), KeyState::Deactivated | KeyState::Compromised) {
        o.enabled = false;
    }
    if let Some(body) = super::external_keys::push_change(
        state,
        caller,
        &current,
        o.clone(),
        action,
        details.clone(),
    )
    .await?
    {
        return Ok(Json(body));
    }
    let mut tx = state.catalog.begin().await?;
    sobjects::update(&mut tx, &o).await?;
    Event::new(Some(&o.account_id), caller.principal(), action, now)
        .object("sobject", &o.kid)
        .details(details)
        .write(&mut tx)
        .await?;
    let body = out(&mut tx, &o, now).await?;
    tx.commit().await?;
    state.forget_key(&o.kid);
    Ok(Json(body))
}

#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/activate", tag = "keys", responses((status = 200, body = SobjectOut), (status = 409, body = super::error::ErrorBody)))]
pub async fn activate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<Json<SobjectOut>> {
    lifecycle(
        &state,
        &caller,
        &kid,
        "key.activate",
        serde_json::Value::Null,
        |o, now| match o.state(now) {
            KeyState::PreActive => {
                o.activation_date = Some(now);
                Ok(())
            }
            KeyState::Active => Ok(()),
            s => Err(ApiError::Conflict(format!(
                "a {} key cannot be activated",
                s.as_str()
            ))),
        },
    )
    .await
}

#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/deactivate", tag = "keys", responses((status = 200, body = SobjectOut), (status = 409, body = super::error::ErrorBody)))]
pub async fn deactivate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<Json<SobjectOut>> {
    lifecycle(
        &state,
        &caller,
        &kid,
        "key.deactivate",
        serde_json::Value::Null,
        |o, now| match o.state(now) {
            KeyState::PreActive | KeyState::Active => {
                o.deactivation_date = Some(now);
                if o.activation_date.is_some_and(|a| a > now) {
                    o.activation_date = Some(now);
                }
                Ok(())
            }
            KeyState::Deactivated => Ok(()),
            s => Err(ApiError::Conflict(format!(
                "a {} key cannot be deactivated",
                s.as_str()
            ))),
        },
    )
    .await
}

#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/revoke", tag = "keys", request_body = Revoke, responses((status = 200, body = SobjectOut)))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
    Body(req): Body<Revoke>,
) -> ApiResult<Json<SobjectOut>> {
    const DEACTIVATING: &[&str] = &[
        "Unspecified",
        "AffiliationChanged",
        "Superseded",
        "CessationOfOperation",
        "PrivilegeWithdrawn",
    ];
    let compromise = match req.code.as_str() {
        "KeyCompromise" | "CACompromise" => true,
        c if DEACTIVATING.contains(&c) => false,
        other => {
            return Err(ApiError::field(
                "code",
                format!("'{other}' is not a revocation reason"),
            ));
        }
    };
    let reason = match &req.message {
        Some(m) => format!("{}: {m}", req.code),
        None => req.code.clone(),
    };
    lifecycle(
        &state,
        &caller,
        &kid,
        "key.revoke",
        serde_json::json!({"code": req.code}),
        move |o, now| {
            if o.state(now) == KeyState::Destroyed {
                return Err(ApiError::Conflict(
                    "a destroyed key cannot be revoked".into(),
                ));
            }
            if compromise {
                o.compromise_date.get_or_insert(now);
            }
            if o.deactivation_date.is_none_or(|d| d > now) {
                o.deactivation_date = Some(now);
            }
            o.revocation_reason = Some(reason);
            Ok(())
        },
    )
    .await
}

/// Erases the key material; the object stays, in state Destroyed. Only deactivated or
/// compromised keys can be destroyed.
#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/destroy", tag = "keys", responses((status = 200, body = SobjectOut), (status = 409, body = super::error::ErrorBody)))]
pub async fn destroy(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<Json<SobjectOut>> {
    lifecycle(
        &state,
        &caller,
        &kid,
        "key.destroy",
        serde_json::Value::Null,
        |o, now| match o.state(now) {
            KeyState::Deactivated | KeyState::Compromised => {
                o.destruction_date = Some(now);
                o.material = None;
                Ok(())
            }
            KeyState::Destroyed => Err(ApiError::Conflict("the key is already destroyed".into())),
            s => Err(ApiError::Conflict(format!(
                "deactivate or revoke the key before destroying it (it is {})",
                s.as_str()
            ))),
        },
    )
    .await
}

#[utoipa::path(delete, path = "/crypto/v1/keys/{kid}", tag = "keys", responses((status = 204), (status = 403, body = super::error::ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<StatusCode> {
    let now = state.now();
    let mut conn = state.catalog.conn().await?;
    let o = load(&mut conn, &caller, &kid).await?;
    drop(conn);
    if !caller.access.can_manage_keys(&o.group_id) {
        return Err(ApiError::Forbidden(
            "you may not manage keys in that group".into(),
        ));
    }
    if o.external.is_some() {
        // Only once the HSM no longer has the key (F22); the workflow checks and removes.
        super::external_keys::delete_virtual(&state, &caller, &o).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    let mut tx = state.catalog.begin().await?;
    let o = load(&mut tx, &caller, &kid).await?;
    sobjects::delete(&mut tx, &o.kid).await?;
    Event::new(Some(&o.account_id), caller.principal(), "key.delete", now)
        .object("sobject", &o.kid)
        .details(serde_json::json!({"name": o.name}))
        .write(&mut tx)
        .await?;
    tx.commit().await?;
    state.forget_key(&o.kid);
    Ok(StatusCode::NO_CONTENT)
}

/// The key with its material (PKCS#8 DER for RSA and EC, raw for AES), for keys that permit
/// EXPORT.
#[utoipa::path(post, path = "/crypto/v1/keys/export", tag = "keys", request_body = KeyDescriptor,
    responses((status = 200, body = SobjectOut), (status = 403, body = super::error::ErrorBody)))]
pub async fn export(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(d): Body<KeyDescriptor>,
) -> ApiResult<Json<SobjectOut>> {
    let now = state.now();
    let mut conn = state.catalog.conn().await?;
    let o = by_descriptor(&mut conn, &caller, &d).await?;
    if !caller.access.can_manage_keys(&o.group_id) {
        return Err(ApiError::Forbidden(
            "you may not export keys of that group".into(),
        ));
    }
    if !o.has_op("EXPORT") {
        return Err(ApiError::Forbidden("the key does not permit EXPORT".into()));
    }
    let sealed = o.material.as_ref().ok_or_else(|| {
        if o.external.is_some() {
            ApiError::Conflict("the key's material lives in the external KMS".into())
        } else {
            ApiError::Conflict("the key has been destroyed".into())
        }
    })?;
    let der = state
        .catalog
        .open_sealed(&material_context(&o.kid), sealed)?;
    let mut body = out(&mut conn, &o, now).await?;
    drop(conn);
    body.value = Some(b64(&der));
    state
        .audit
        .later(
            Event::new(Some(&o.account_id), caller.principal(), "key.export", now)
                .object("sobject", &o.kid),
        )
        .await;
    Ok(Json(body))
}
