//! Groups: collections of keys with shared access, attached policies (crypto policy, key
//! metadata policy, custom policy plugins), whether users may export their keys, and an
//! optional link to an external KMS (`links`) whose secrets are stored sealed.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::audit::Event;
use crate::auth::Principal;
use crate::catalog::approvals::{AccountProtected, GroupApprovalPolicy};
use crate::catalog::groups::{self, CustomPolicy, Group, GroupPatch, GroupRole};
use crate::catalog::new_id;
use crate::catalog::sobjects::Creator;
use crate::policy::{CRYPTO_POLICY_PLUGIN, METADATA_POLICY_PLUGIN};

use super::accounts::validate_policy;
use super::extract::{Body, Caller, id};
use super::links::{ExternalKmsIn, ExternalKmsOut, merge_link};
use super::model::{CustomPolicyIo, GroupOut, Removable, display_name, time};
use super::{ApiError, ApiResult, AppState};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRequest {
    /// 1 to 256 characters, not only spaces.
    #[schema(min_length = 1, max_length = 256, pattern = r"\S")]
    pub name: Option<String>,
    pub description: Option<String>,
    /// Crypto policy document, or `"remove"`.
    #[schema(value_type = Option<Object>)]
    pub cryptographic_policy: Option<Removable<Value>>,
    /// Key metadata policy document, or `"remove"`.
    #[schema(value_type = Option<Object>)]
    pub key_metadata_policy: Option<Removable<Value>>,
    /// Policy plugins of your own, each with its configuration (replaces the list).
    pub custom_policies: Option<Vec<CustomPolicyIo>>,
    /// Link to an external key manager, or `"remove"`.
    #[schema(value_type = Option<ExternalKmsIn>)]
    pub external_kms: Option<Removable<ExternalKmsIn>>,
    /// Whether users who manage the group's keys may export them (default false;
    /// applications of the group may, for keys that permit EXPORT).
    pub user_export: Option<bool>,
    /// DSM's `GroupApprovalPolicy` (a `QuorumPolicy` tree with `protect_permissions` and
    /// `protect_crypto_operations`), or `"remove"`. Once a group has one, changing or deleting
    /// the group needs its quorum's approval.
    #[schema(value_type = Option<Object>)]
    pub approval_policy: Option<Removable<GroupApprovalPolicy>>,
}

async fn check_approval_policy(
    c: &mut crate::catalog::Conn,
    account: &str,
    p: &GroupApprovalPolicy,
) -> ApiResult<()> {
    super::approvals::check_policy(c, account, "approval_policy", &p.policy).await
}

/// Checks that `group` is one of `account`'s (another account's group is as unknown as one
/// that does not exist: 404).
pub async fn require_in_account(
    c: &mut crate::catalog::Conn,
    field: &str,
    group: &str,
    account: &str,
) -> ApiResult<()> {
    match groups::get(c, account, group).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound(format!("{field}: no group {group}"))),
    }
}

/// The caller's view of a group: secrets replaced by `has_*` flags.
pub fn out(g: &Group, role: Option<GroupRole>) -> GroupOut {
    let parse = |p: &Option<String>| p.as_deref().and_then(|t| serde_json::from_str(t).ok());
    GroupOut {
        group_id: g.id.clone(),
        acct_id: g.account_id.clone(),
        name: g.name.clone(),
        description: g.description.clone(),
        created_at: time(g.created_at),
        creator: (&Creator::User(g.created_by.clone())).into(),
        cryptographic_policy: parse(&g.crypto_policy),
        key_metadata_policy: parse(&g.key_metadata_policy),
        custom_policies: g
            .custom_policies
            .iter()
            .map(|c| CustomPolicyIo {
                plugin: c.plugin.clone(),
                config: c.config.clone(),
            })
            .collect(),
        external_kms: g.link.as_ref().map(ExternalKmsOut::from),
        is_external: g.link.is_some(),
        connection_status: g.link.as_ref().map(|l| {
            l.config
                .connection
                .as_ref()
                .map_or("Unknown", |c| c.status.as_str())
                .to_string()
        }),
        user_export: g.user_export,
        approval_policy: g.approval_policy.clone(),
        role: role.map(|r| r.as_str().to_string()),
    }
}

async fn policies(
    state: &AppState,
    req: &GroupRequest,
) -> ApiResult<(
    Option<Option<String>>,
    Option<Option<String>>,
    Option<Vec<CustomPolicy>>,
)> {
    let crypto = match &req.cryptographic_policy {
        Some(Removable::Set(doc)) => Some(Some(
            validate_policy(state, "cryptographic_policy", CRYPTO_POLICY_PLUGIN, doc).await?,
        )),
        Some(Removable::Remove) => Some(None),
        None => None,
    };
    let metadata = match &req.key_metadata_policy {
        Some(Removable::Set(doc)) => Some(Some(
            validate_policy(state, "key_metadata_policy", METADATA_POLICY_PLUGIN, doc).await?,
        )),
        Some(Removable::Remove) => Some(None),
        None => None,
    };
    let custom = match &req.custom_policies {
        Some(list) => {
            let mut out = Vec::new();
            for (i, c) in list.iter().enumerate() {
                validate_policy(
                    state,
                    &format!("custom_policies[{i}].config"),
                    &c.plugin,
                    &c.config,
                )
                .await?;
                out.push(CustomPolicy {
                    plugin: c.plugin.clone(),
                    config: c.config.clone(),
                });
            }
            Some(out)
        }
        None => None,
    };
    Ok((crypto, metadata, custom))
}

#[utoipa::path(get, path = "/sys/v1/groups", tag = "groups", responses((status = 200, body = [GroupOut])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<GroupOut>>> {
    let mut conn = state.catalog.conn().await?;
    let all = groups::in_account(&mut conn, caller.account()).await?;
    Ok(Json(
        all.iter()
            .filter(|g| caller.access.can_read_group(&g.id))
            .map(|g| out(g, caller.access.group_roles.get(&g.id).copied()))
            .collect(),
    ))
}

/// Account administrators and members create groups; the creator administers the group.
#[utoipa::path(post, path = "/sys/v1/groups", tag = "groups", request_body = GroupRequest,
    responses((status = 201, body = GroupOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(req): Body<GroupRequest>,
) -> ApiResult<(StatusCode, Json<GroupOut>)> {
    let Principal::User { user_id, .. } = caller.principal() else {
        return Err(ApiError::Forbidden(
            "applications do not create groups".into(),
        ));
    };
    if !caller.access.can_create_group() {
        return Err(ApiError::Forbidden("auditors do not create groups".into()));
    }
    let name = display_name(
        "name",
        req.name
            .as_deref()
            .ok_or_else(|| ApiError::field("name", "is required"))?,
    )?;
    super::approvals::account_approved(&state, &caller, AccountProtected::ManageGroups).await?;
    let (crypto, metadata, custom) = policies(&state, &req).await?;
    let now = state.now();
    let gid = new_id();
    let link = match req.external_kms.clone() {
        Some(Removable::Set(l)) => Some(merge_link(&state, &gid, None, l)?),
        _ => None,
    };
    let group = Group {
        id: gid,
        account_id: caller.account().to_string(),
        name,
        description: req.description,
        created_at: now,
        created_by: user_id.clone(),
        crypto_policy: crypto.flatten(),
        key_metadata_policy: metadata.flatten(),
        custom_policies: custom.unwrap_or_default(),
        link,
        user_export: req.user_export.unwrap_or(false),
        approval_policy: match req.approval_policy.clone() {
            Some(Removable::Set(p)) => Some(p),
            _ => None,
        },
    };
    let mut tx = state.catalog.begin().await?;
    if let Some(p) = &group.approval_policy {
        check_approval_policy(&mut tx, &group.account_id, p).await?;
    }
    groups::insert(&mut tx, &group).await.map_err(|e| {
        if e.is_unique_violation() {
            ApiError::Conflict(format!("a group named '{}' exists", group.name))
        } else {
            e.into()
        }
    })?;
    groups::set_member(
        &mut tx,
        &group.account_id,
        &group.id,
        user_id,
        GroupRole::Administrator,
    )
    .await?;
    Event::new(
        Some(&group.account_id),
        caller.principal(),
        "group.create",
        now,
    )
    .object("group", &group.id)
    .details(json!({"name": group.name, "external_kms": group.link.as_ref().map(|l| &l.kind)}))
    .write(&mut tx)
    .await?;
    tx.commit().await?;
    if group.link.is_some() {
        super::hmg::check_later(state.clone(), caller.clone(), group.id.clone());
    }
    Ok((
        StatusCode::CREATED,
        Json(out(&group, Some(GroupRole::Administrator))),
    ))
}

async fn load(state: &AppState, caller: &Caller, group_id: &str) -> ApiResult<Group> {
    id("group", group_id)?;
    let mut conn = state.catalog.conn().await?;
    groups::get(&mut conn, caller.account(), group_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no group {group_id}")))
}

#[utoipa::path(get, path = "/sys/v1/groups/{id}",
    params(("id" = String, Path, description = "The group's id")), tag = "groups", responses((status = 200, body = GroupOut), (status = 403, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(group_id): Path<String>,
) -> ApiResult<Json<GroupOut>> {
    let g = load(&state, &caller, &group_id).await?;
    if !caller.access.can_read_group(&g.id) {
        return Err(ApiError::Forbidden("you have no role in that group".into()));
    }
    Ok(Json(out(&g, caller.access.group_roles.get(&g.id).copied())))
}

#[utoipa::path(patch, path = "/sys/v1/groups/{id}", tag = "groups", request_body = GroupRequest,
    params(("id" = String, Path, description = "The group's id")),
    responses((status = 200, body = GroupOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(group_id): Path<String>,
    Body(req): Body<GroupRequest>,
) -> ApiResult<Json<GroupOut>> {
    let g = load(&state, &caller, &group_id).await?;
    if !caller.access.can_manage_group(&g.id) {
        return Err(ApiError::Forbidden(
            "only the group's administrators change it".into(),
        ));
    }
    // The policy plugins check their documents before the write lock is taken.
    let (crypto, metadata, custom) = policies(&state, &req).await?;
    let name = req
        .name
        .as_deref()
        .map(|n| display_name("name", n))
        .transpose()?;
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    // Read again under the write lock: the link merges into what is stored now.
    let g = groups::get(&mut tx, caller.account(), &g.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no group {group_id}")))?;
    // A group under a quorum policy changes (its policy included) only when approved.
    if g.approval_policy.is_some() && caller.access.approval.is_none() {
        return Err(ApiError::ApprovalRequired);
    }
    let approval_policy = match req.approval_policy.clone() {
        Some(Removable::Set(p)) => {
            check_approval_policy(&mut tx, caller.account(), &p).await?;
            Some(Some(p))
        }
        Some(Removable::Remove) => Some(None),
        None => None,
    };
    let link = match req.external_kms.clone() {
        Some(Removable::Set(l)) => {
            let mut link = merge_link(&state, &g.id, g.link.as_ref(), l)?;
            // The last connection test no longer says anything about changed settings.
            link.config.connection = None;
            Some(Some(link))
        }
        Some(Removable::Remove) => {
            let virtual_keys = crate::catalog::sobjects::external_refs(&mut tx, &g.id).await?;
            if !virtual_keys.is_empty() {
                return Err(ApiError::Conflict(format!(
                    "the group holds {} virtual keys of its external key manager; delete them before unlinking",
                    virtual_keys.len()
                )));
            }
            Some(None)
        }
        None => None,
    };
    let relink = matches!(link, Some(Some(_)));
    let patch = GroupPatch {
        name,
        description: req.description.clone().map(Some),
        crypto_policy: crypto,
        key_metadata_policy: metadata,
        custom_policies: custom,
        link,
        user_export: req.user_export,
        approval_policy,
    };
    groups::apply(&mut tx, caller.account(), &g.id, &patch)
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                ApiError::Conflict(format!(
                    "a group named '{}' exists",
                    patch.name.as_deref().unwrap_or(&g.name)
                ))
            } else {
                e.into()
            }
        })?;
    Event::new(Some(&g.account_id), caller.principal(), "group.update", now)
        .object("group", &g.id)
        .details(json!({
            "cryptographic_policy_changed": req.cryptographic_policy.is_some(),
            "key_metadata_policy_changed": req.key_metadata_policy.is_some(),
            "custom_policies_changed": req.custom_policies.is_some(),
            "external_kms_changed": req.external_kms.is_some(),
            "user_export": req.user_export,
            "approval_policy_changed": req.approval_policy.is_some(),
        }))
        .write(&mut tx)
        .await?;
    let g = groups::get(&mut tx, caller.account(), &g.id)
        .await?
        .ok_or_else(|| ApiError::Internal("the group vanished".into()))?;
    tx.commit().await?;
    state.forget_group(&g.id);
    if relink {
        super::hmg::check_later(state.clone(), caller.clone(), g.id.clone());
    }
    Ok(Json(out(&g, caller.access.group_roles.get(&g.id).copied())))
}

/// Only an empty group can be deleted.
#[utoipa::path(delete, path = "/sys/v1/groups/{id}",
    params(("id" = String, Path, description = "The group's id")), tag = "groups", responses((status = 204), (status = 409, body = super::error::ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(group_id): Path<String>,
) -> ApiResult<StatusCode> {
    let g = load(&state, &caller, &group_id).await?;
    if !caller.access.can_manage_group(&g.id) {
        return Err(ApiError::Forbidden(
            "only the group's administrators delete it".into(),
        ));
    }
    if g.approval_policy.is_some() && caller.access.approval.is_none() {
        return Err(ApiError::ApprovalRequired);
    }
    super::approvals::account_approved(&state, &caller, AccountProtected::ManageGroups).await?;
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    let n = groups::object_count(&mut tx, &g.id).await?;
    if n > 0 {
        return Err(ApiError::Conflict(format!(
            "the group still holds {n} keys; delete or move them first"
        )));
    }
    groups::delete(&mut tx, &g.account_id, &g.id).await?;
    Event::new(Some(&g.account_id), caller.principal(), "group.delete", now)
        .object("group", &g.id)
        .write(&mut tx)
        .await?;
    tx.commit().await?;
    state.forget_group(&g.id);
    // Applications' sessions carry their groups.
    state.sessions.changed();
    Ok(StatusCode::NO_CONTENT)
}
