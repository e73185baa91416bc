//! Keys of groups linked to an external key manager (virtual keys): generate or import in
//! the HSM, copy a catalog key into it (BYOK), push changes to it, soft delete, recover,
//! restore from escrow, purge and delete. Requests are validated and policy-checked here;
//! the work against the HSM is done by the workflow scripts (`workflows/*.rhai`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::catalog::groups::Group;
use crate::catalog::sobjects::{self, KeyState, ObjType, SObject};
use crate::crypto::Material;
use crate::kms::Link;
use crate::plugins::policy::Action;
use crate::policy::Verdict;
use crate::workflows::{PendingKey, RunOutcome, RunRequest, Secret};

use super::extract::{Body, Caller, id};
use super::keys::{check_name, check_ops, check_tags, enforce, load, load_out, target_group};
use super::model::{KeyDescriptor, SobjectOut, parse_time};
use super::{ApiError, ApiResult, AppState};

/// The name of a virtual key's key in the external key manager.
pub fn external_name(o: &SObject) -> Option<&str> {
    o.external.as_ref()?["id"]["label"].as_str()
}

/// The state of a virtual key in the external key manager (`Active`, `Disabled`,
/// `SoftDeleted`, `Purged`).
pub fn external_state(o: &SObject) -> Option<&str> {
    o.external.as_ref()?["state"].as_str()
}

/// The link of a group, ready for calls to its chosen instance.
pub fn link_for(state: &AppState, group: &Group) -> ApiResult<Link> {
    let link = Link::of_group(&state.catalog, group)?;
    if link.instance().is_none() {
        return Err(ApiError::Conflict(
            "the group has no Managed HSM instance yet; choose one (PATCH the group's external_kms.instance)".into(),
        ));
    }
    Ok(link)
}

/// What a script sees of a key to create (`input.key`).
fn key_input(o: &SObject) -> Value {
    json!({
        "name": o.name,
        "obj_type": o.obj_type.as_str(),
        "key_size": o.key_size,
        "elliptic_curve": o.elliptic_curve,
        "key_ops": o.key_ops,
        "enabled": o.enabled,
        // A key active from its creation gets no not-before date in the HSM.
        "activation_date": o.activation_date.filter(|a| *a > o.created_at),
        "deactivation_date": o.deactivation_date,
        "custom_metadata": o.tags,
        "description": o.description,
    })
}

#[allow(
    clippy::too_many_arguments,
    reason = "one run's parts, named at the call sites"
)]
async fn run(
    state: &AppState,
    caller: &Caller,
    workflow: &str,
    group: Arc<Group>,
    link: Link,
    input: Value,
    secrets: Vec<(String, Secret)>,
    pending: Option<PendingKey>,
) -> ApiResult<RunOutcome> {
    Ok(state
        .workflows
        .run(RunRequest {
            workflow: workflow.into(),
            trigger: "api".into(),
            principal: caller.principal().clone(),
            account: caller.account().to_string(),
            group: Some(group),
            link: Some(link),
            input,
            secrets,
            pending,
            exclusive: None,
        })
        .await?)
}

/// Key types and sizes Managed HSM holds.
fn check_supported(o: &SObject) -> ApiResult<()> {
    let ok = match o.obj_type {
        ObjType::Rsa => matches!(o.key_size, Some(2048 | 3072 | 4096)),
        ObjType::Aes => matches!(o.key_size, Some(128 | 192 | 256)),
        ObjType::Ec => matches!(
            o.elliptic_curve.as_deref(),
            Some("NistP256" | "NistP384" | "NistP521")
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            "Azure Managed HSM holds RSA 2048/3072/4096, EC P-256/P-384/P-521 and AES 128/192/256 keys",
        ))
    }
}

async fn ensure_name_free(state: &AppState, o: &SObject) -> ApiResult<()> {
    let mut conn = state.catalog.conn().await?;
    if sobjects::name_taken(&mut conn, &o.account_id, &o.name).await? {
        return Err(ApiError::Conflict(format!(
            "a key named '{}' exists in this account",
            o.name
        )));
    }
    Ok(())
}

/// A new key in a linked group: generated in the HSM (`material` absent, F14) or imported
/// into it (F15, F16), then recorded as a virtual key.
pub async fn create_in_hsm(
    state: &AppState,
    caller: &Caller,
    group: Arc<Group>,
    o: SObject,
    verdict: Verdict,
    material: Option<Material>,
    copy_of: Option<&SObject>,
) -> ApiResult<(StatusCode, Json<SobjectOut>)> {
    check_supported(&o)?;
    ensure_name_free(state, &o).await?;
    let link = link_for(state, &group)?;
    let (workflow, source, action) = match (&material, copy_of) {
        (None, _) => ("generate", "External", "key.create"),
        (Some(_), None) => ("import", "Keyward", "key.import"),
        (Some(_), Some(_)) => ("byok_copy", "Keyward", "key.copy"),
    };
    let mut input = json!({"key": key_input(&o)});
    let mut details = json!({
        "name": o.name, "obj_type": o.obj_type.as_str(), "key_size": o.key_size,
        "elliptic_curve": o.elliptic_curve, "group_id": o.group_id,
    });
    if let Some(src) = copy_of {
        input["source"] = json!({"kid": src.kid, "name": src.name});
        details["copied_from"] = json!(src.kid);
    }
    if let Value::Object(p) = verdict.audit_details() {
        details.as_object_mut().expect("object").extend(p);
    }
    let secrets = material
        .map(|m| vec![("material".to_string(), Secret(Arc::new(m)))])
        .unwrap_or_default();
    let pending = PendingKey {
        object: o,
        source,
        audit_action: action.into(),
        audit_details: details,
        copy_of: copy_of.map(|s| s.kid.clone()),
    };
    let outcome = run(
        state,
        caller,
        workflow,
        group,
        link,
        input,
        secrets,
        Some(pending),
    )
    .await?;
    let kid = outcome.recorded.ok_or_else(|| {
        ApiError::Workflow(format!(
            "the {workflow} workflow finished without recording the key (run {})",
            outcome.run_id
        ))
    })?;
    let mut body = load_out(state, caller, &kid).await?;
    body.policy_warnings = verdict.warnings;
    Ok((StatusCode::CREATED, Json(body)))
}

/// The changes of `new` over `current` the external key manager must know about.
fn remote_changes(current: &SObject, new: &SObject) -> ApiResult<Value> {
    let mut changes = serde_json::Map::new();
    if new.enabled != current.enabled {
        changes.insert("enabled".into(), json!(new.enabled));
    }
    if new.activation_date != current.activation_date {
        match new.activation_date {
            Some(t) => changes.insert("not_before".into(), json!(t)),
            None => {
                return Err(ApiError::field(
                    "activation_date",
                    "cannot be removed from a key of an external key manager",
                ));
            }
        };
    }
    if new.deactivation_date != current.deactivation_date {
        match new.deactivation_date {
            Some(t) => changes.insert("expires".into(), json!(t)),
            None => {
                return Err(ApiError::field(
                    "deactivation_date",
                    "cannot be removed from a key of an external key manager",
                ));
            }
        };
    }
    if new.key_ops != current.key_ops {
        changes.insert("ops".into(), json!(new.key_ops));
    }
    if new.tags != current.tags {
        changes.insert("tags".into(), json!(new.tags));
    }
    Ok(Value::Object(changes))
}

/// Pushes a change of a virtual key to the HSM and saves it (F17 tags, F20 deactivate =
/// disable). `None` when nothing the HSM holds changed: the caller saves it alone.
pub async fn push_change(
    state: &AppState,
    caller: &Caller,
    current: &SObject,
    new: SObject,
    audit_action: &str,
    audit_details: Value,
) -> ApiResult<Option<SobjectOut>> {
    let changes = remote_changes(current, &new)?;
    if changes.as_object().is_some_and(|c| c.is_empty()) {
        return Ok(None);
    }
    ensure_live(current)?;
    let group = state
        .group(&current.group_id)
        .await?
        .ok_or_else(|| ApiError::Internal("group vanished".into()))?;
    let link = link_for(state, &group)?;
    let name = external_name(current)
        .ok_or_else(|| ApiError::Internal("virtual key without an external name".into()))?
        .to_string();
    let outcome = run(
        state,
        caller,
        "update",
        group,
        link,
        json!({"kid": current.kid, "azure_name": name, "changes": changes}),
        vec![],
        Some(PendingKey {
            object: new,
            source: "External",
            audit_action: audit_action.into(),
            audit_details,
            copy_of: None,
        }),
    )
    .await?;
    let kid = outcome
        .recorded
        .ok_or_else(|| ApiError::Workflow("the update workflow did not save the key".into()))?;
    Ok(Some(load_out(state, caller, &kid).await?))
}

/// A virtual key whose HSM key still exists.
fn ensure_live(o: &SObject) -> ApiResult<()> {
    match external_state(o) {
        Some("SoftDeleted") => Err(ApiError::Conflict(
            "the key is soft-deleted in the external key manager; recover it first".into(),
        )),
        Some("Purged") => Err(ApiError::Conflict(
            "the key was purged from the external key manager; restore it from escrow first".into(),
        )),
        _ => Ok(()),
    }
}

/// Deletes a virtual key (F22): only once the HSM no longer has it; removes its escrowed
/// backup too.
pub async fn delete_virtual(state: &AppState, caller: &Caller, o: &SObject) -> ApiResult<()> {
    let (group, link, name) = parts(state, o).await?;
    run(
        state,
        caller,
        "delete",
        group,
        link,
        json!({"kid": o.kid, "azure_name": name}),
        vec![],
        None,
    )
    .await?;
    state.forget_key(&o.kid);
    Ok(())
}

async fn parts(state: &AppState, o: &SObject) -> ApiResult<(Arc<Group>, Link, String)> {
    let group = state
        .group(&o.group_id)
        .await?
        .ok_or_else(|| ApiError::Internal("group vanished".into()))?;
    let link = link_for(state, &group)?;
    let name = external_name(o)
        .ok_or_else(|| ApiError::Internal("virtual key without an external name".into()))?
        .to_string();
    Ok((group, link, name))
}

/// A virtual key the caller manages.
async fn managed_virtual(state: &AppState, caller: &Caller, kid: &str) -> ApiResult<SObject> {
    let mut conn = state.catalog.conn().await?;
    let o = load(&mut conn, caller, kid).await?;
    if !caller.access.can_manage_keys(&o.group_id) {
        return Err(ApiError::Forbidden(
            "you may not manage keys in that group".into(),
        ));
    }
    if o.external.is_none() {
        return Err(ApiError::Conflict(
            "the key is not a key of an external key manager".into(),
        ));
    }
    Ok(o)
}

async fn lifecycle_run(
    state: &AppState,
    caller: &Caller,
    kid: &str,
    workflow: &str,
) -> ApiResult<Json<SobjectOut>> {
    let o = managed_virtual(state, caller, kid).await?;
    let (group, link, name) = parts(state, &o).await?;
    run(
        state,
        caller,
        workflow,
        group,
        link,
        json!({"kid": o.kid, "azure_name": name}),
        vec![],
        None,
    )
    .await?;
    state.forget_key(&o.kid);
    Ok(Json(load_out(state, caller, &o.kid).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    /// Must be `true`: the request really means it.
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

/// Soft-deletes the key in the HSM (F21). Needs `{"confirm": true}`; the key stays
/// recoverable until the HSM's retention period ends.
#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/schedule_deletion", tag = "keys", request_body = Confirm,
    responses((status = 200, body = SobjectOut), (status = 400, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn schedule_deletion(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
    Body(req): Body<Confirm>,
) -> ApiResult<Json<SobjectOut>> {
    confirmed(&req, "soft-delete the key in the external key manager")?;
    let o = managed_virtual(&state, &caller, &kid).await?;
    ensure_live(&o)?;
    lifecycle_run(&state, &caller, &kid, "soft_delete").await
}

/// Recovers a soft-deleted key with all its versions (F21).
#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/recover", tag = "keys",
    responses((status = 200, body = SobjectOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn recover(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<Json<SobjectOut>> {
    lifecycle_run(&state, &caller, &kid, "recover").await
}

/// Puts a purged key back from its escrowed backup (F21).
#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/restore", tag = "keys",
    responses((status = 200, body = SobjectOut), (status = 409, body = super::error::ErrorBody)))]
pub async fn restore(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
) -> ApiResult<Json<SobjectOut>> {
    lifecycle_run(&state, &caller, &kid, "restore").await
}

/// Purges a soft-deleted key in the HSM now (DSM `delete_key_material`). Needs
/// `{"confirm": true}`; HSMs with purge protection refuse it.
#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/delete_key_material", tag = "keys", request_body = Confirm,
    responses((status = 200, body = SobjectOut), (status = 400, body = super::error::ErrorBody), (status = 502, body = super::error::ErrorBody)))]
pub async fn purge(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
    Body(req): Body<Confirm>,
) -> ApiResult<Json<SobjectOut>> {
    confirmed(&req, "purge the key in the external key manager")?;
    lifecycle_run(&state, &caller, &kid, "purge").await
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
    /// Default: the source's operations.
    pub key_ops: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub activation_date: Option<String>,
    pub deactivation_date: Option<String>,
    /// Default: the source's custom metadata.
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

/// The first free name `<name>_copyN`.
async fn suggest_name(state: &AppState, account: &str, name: &str) -> ApiResult<String> {
    let mut conn = state.catalog.conn().await?;
    for n in 1.. {
        let candidate = format!("{name}_copy{n}");
        if !sobjects::name_taken(&mut conn, account, &candidate).await? {
            return Ok(candidate);
        }
    }
    unreachable!("some suffix is free")
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CopyNameQuery {
    /// The group the copy would go to (for the caller's rights).
    pub group_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CopyName {
    pub name: String,
}

/// The name a copy of the key gets unless another is given.
#[utoipa::path(get, path = "/crypto/v1/keys/{kid}/copy_name", tag = "keys", params(CopyNameQuery),
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
    let mut conn = state.catalog.conn().await?;
    let o = load(&mut conn, &caller, &kid).await?;
    drop(conn);
    Ok(Json(CopyName {
        name: suggest_name(&state, caller.account(), &o.name).await?,
    }))
}

/// Copies a key into another group (F16): into an Azure-linked group by BYOK transfer, as a
/// virtual key linked to its source. RSA and EC sources need EXPORT; virtual keys cannot be
/// copied.
#[utoipa::path(post, path = "/crypto/v1/keys/copy", tag = "keys", request_body = CopyRequest,
    responses((status = 201, body = SobjectOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn copy(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(req): Body<CopyRequest>,
) -> ApiResult<(StatusCode, Json<SobjectOut>)> {
    let mut conn = state.catalog.conn().await?;
    let source = match (&req.key.kid, &req.key.name) {
        (Some(kid), None) => load(&mut conn, &caller, kid).await?,
        (None, Some(name)) => {
            let o = sobjects::get_by_name(&mut conn, caller.account(), name)
                .await?
                .ok_or_else(|| ApiError::field("key", format!("no key named '{name}'")))?;
            load(&mut conn, &caller, &o.kid).await?
        }
        _ => {
            return Err(ApiError::field(
                "key",
                "give exactly one of 'kid' and 'name'",
            ));
        }
    };
    drop(conn);
    if !caller.access.can_manage_keys(&source.group_id) {
        return Err(ApiError::Forbidden(
            "you may not copy keys out of that group".into(),
        ));
    }
    if source.external.is_some() {
        return Err(ApiError::Conflict(
            "a virtual key cannot be copied: its material lives in the external key manager".into(),
        ));
    }
    if matches!(source.obj_type, ObjType::Rsa | ObjType::Ec) && !source.has_op("EXPORT") {
        return Err(ApiError::Forbidden(format!(
            "the source key does not permit EXPORT, which {} keys need to be copied",
            source.obj_type.as_str()
        )));
    }
    if source.state(state.now()) == KeyState::Destroyed {
        return Err(ApiError::Conflict(
            "the source key has been destroyed".into(),
        ));
    }
    let material = state
        .usable_key(&source.kid)
        .await?
        .and_then(|k| k.material.clone())
        .ok_or_else(|| ApiError::Conflict("the source key has no material".into()))?;
    let group = target_group(&state, &caller, Some(&req.group_id)).await?;
    let name = match &req.name {
        Some(n) => check_name(n)?,
        None => suggest_name(&state, caller.account(), &source.name).await?,
    };
    let now = state.now();
    let key_ops = req
        .key_ops
        .clone()
        .unwrap_or_else(|| source.key_ops.clone());
    check_ops(source.obj_type, &key_ops)?;
    let tags = req
        .custom_metadata
        .clone()
        .unwrap_or_else(|| source.tags.clone());
    check_tags(&tags)?;
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
    if let (Some(a), Some(d)) = (activation.or(Some(now)), deactivation)
        && d <= a
    {
        return Err(ApiError::field(
            "deactivation_date",
            "must be after the activation date",
        ));
    }
    let mut o = source.clone();
    o.kid = crate::catalog::new_id();
    o.group_id = group.id.clone();
    o.name = name;
    o.description = req.description.clone().or(source.description.clone());
    o.key_ops = key_ops;
    o.enabled = req.enabled.unwrap_or(true);
    o.activation_date = Some(activation.unwrap_or(now));
    o.deactivation_date = deactivation;
    o.compromise_date = None;
    o.revocation_reason = None;
    o.created_at = now;
    o.lastused_at = None;
    o.creator = match caller.principal() {
        crate::auth::Principal::User { user_id, .. } => sobjects::Creator::User(user_id.clone()),
        crate::auth::Principal::App { app_id, .. } => sobjects::Creator::App(app_id.clone()),
    };
    o.tags = tags;
    o.external = None;
    let verdict = enforce(
        &state,
        &caller,
        &group,
        Action::Copy,
        "key.copy",
        &o,
        Some(&source),
    )
    .await?;
    state.audit.key_used(&source.kid, now).await;
    if group.link.is_some() {
        create_in_hsm(
            &state,
            &caller,
            group,
            o,
            verdict,
            Some((*material).clone()),
            Some(&source),
        )
        .await
    } else {
        super::keys::store_copy(&state, &caller, o, &material, verdict, &source).await
    }
}
