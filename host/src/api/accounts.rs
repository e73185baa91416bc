//! Accounts: the top-level containers. A user may belong to several, with a role in each.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::audit::Event;
use crate::auth::Principal;
use crate::catalog::accounts::{self, Account, AccountRole};
use crate::catalog::approvals::{AccountApprovalPolicy, AccountProtected};
use crate::catalog::new_id;
use crate::plugins::PluginError;
use crate::policy::CRYPTO_POLICY_PLUGIN;

use super::extract::{Body, Caller, id};
use super::model::{AccountOut, Removable, display_name, time};
use super::{ApiError, ApiResult, AppState};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountRequest {
    /// 1 to 256 characters, not only spaces.
    #[schema(min_length = 1, max_length = 256, pattern = r"\S")]
    pub name: Option<String>,
    pub description: Option<String>,
    /// Crypto policy for every group of the account, or `"remove"`.
    #[schema(value_type = Option<Object>)]
    pub cryptographic_policy: Option<Removable<Value>>,
    /// DSM's `AccountApprovalPolicy` (`{"policy": QuorumPolicy, "manage_groups",
    /// "protect_authentication_methods", "protect_cryptographic_policy",
    /// "protect_logging_config"}`), or `"remove"`. Once the account has one, changing it or
    /// the request expiry needs its quorum's approval.
    #[schema(value_type = Option<Object>)]
    pub approval_policy: Option<Removable<AccountApprovalPolicy>>,
    /// How long approval requests wait for their quorum, in seconds (1 hour to 1 year;
    /// default 30 days).
    #[schema(minimum = 3600, maximum = 31536000)]
    pub approval_request_expiry: Option<i64>,
}

/// The shortest and longest request expiry an account may set.
const EXPIRY_RANGE: std::ops::RangeInclusive<i64> = 3_600..=365 * 86_400;

fn check_expiry(e: Option<i64>) -> ApiResult<()> {
    match e {
        Some(secs) if !EXPIRY_RANGE.contains(&secs) => Err(ApiError::field(
            "approval_request_expiry",
            "must be between 3600 (one hour) and 31536000 (one year) seconds",
        )),
        _ => Ok(()),
    }
}

pub fn out(a: &Account, role: Option<AccountRole>) -> AccountOut {
    AccountOut {
        acct_id: a.id.clone(),
        name: a.name.clone(),
        description: a.description.clone(),
        created_at: time(a.created_at),
        cryptographic_policy: a
            .crypto_policy
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok()),
        role: role.map(|r| r.as_str().to_string()),
        approval_policy: a.approval_policy.clone(),
        approval_request_expiry: a.request_expiry(),
    }
}

/// Checks a policy document with the plugin that will evaluate it; an invalid one is a 400
/// naming the field.
pub async fn validate_policy(
    state: &AppState,
    field: &str,
    plugin: &str,
    doc: &Value,
) -> ApiResult<String> {
    if !doc.is_object() {
        return Err(ApiError::field(field, "must be a JSON object"));
    }
    let text = doc.to_string();
    match state.plugins.validate_policy_config(plugin, &text).await {
        Ok(()) => Ok(text),
        Err(PluginError::InvalidConfig { message, .. }) => Err(ApiError::field(field, message)),
        Err(PluginError::NotFound(p)) => Err(ApiError::field(
            field,
            format!("no policy plugin named '{p}' is loaded"),
        )),
        Err(PluginError::WrongWorld { plugin, .. }) => Err(ApiError::field(
            field,
            format!("plugin '{plugin}' is not a policy plugin"),
        )),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

#[utoipa::path(get, path = "/sys/v1/accounts", tag = "accounts", responses((status = 200, body = [AccountOut])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<AccountOut>>> {
    let mut conn = state.catalog.conn().await?;
    match caller.principal() {
        Principal::User { user_id, .. } => Ok(Json(
            accounts::for_user(&mut conn, user_id)
                .await?
                .iter()
                .map(|(a, r)| out(a, Some(*r)))
                .collect(),
        )),
        Principal::App { .. } => {
            let a = accounts::get(&mut conn, caller.account())
                .await?
                .ok_or_else(|| ApiError::NotFound("account".into()))?;
            Ok(Json(vec![out(&a, None)]))
        }
    }
}

/// A user creates another account, which they administer.
#[utoipa::path(post, path = "/sys/v1/accounts", tag = "accounts", request_body = AccountRequest, responses((status = 201, body = AccountOut)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(req): Body<AccountRequest>,
) -> ApiResult<(StatusCode, Json<AccountOut>)> {
    let Principal::User { user_id, .. } = caller.principal() else {
        return Err(ApiError::Forbidden(
            "applications do not create accounts".into(),
        ));
    };
    let name = display_name(
        "name",
        req.name
            .as_deref()
            .ok_or_else(|| ApiError::field("name", "is required"))?,
    )?;
    let crypto_policy = match &req.cryptographic_policy {
        Some(Removable::Set(doc)) => {
            Some(validate_policy(&state, "cryptographic_policy", CRYPTO_POLICY_PLUGIN, doc).await?)
        }
        _ => None,
    };
    if req.approval_policy.is_some() {
        // Its reviewers must be members, and a new account has none but its creator yet.
        return Err(ApiError::field(
            "approval_policy",
            "set it once the account has its reviewers (PATCH /sys/v1/accounts/{id})",
        ));
    }
    check_expiry(req.approval_request_expiry)?;
    let now = state.now();
    let account = Account {
        id: new_id(),
        name,
        description: req.description,
        created_at: now,
        created_by: Some(user_id.clone()),
        crypto_policy,
        approval_policy: None,
        approval_request_expiry: req.approval_request_expiry,
    };
    let mut tx = state.catalog.begin().await?;
    accounts::insert(&mut tx, &account).await?;
    accounts::set_member(
        &mut tx,
        &account.id,
        user_id,
        AccountRole::Administrator,
        now,
    )
    .await?;
    Event::new(Some(&account.id), caller.principal(), "account.create", now)
        .object("account", &account.id)
        .write(&mut tx)
        .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(out(&account, Some(AccountRole::Administrator))),
    ))
}

/// The caller's role in `account`, refusing accounts it does not belong to.
async fn role_in(
    state: &AppState,
    caller: &Caller,
    account: &str,
) -> ApiResult<Option<AccountRole>> {
    id("account", account)?;
    match caller.principal() {
        Principal::User { user_id, .. } => {
            let mut conn = state.catalog.conn().await?;
            match accounts::member_role(&mut conn, account, user_id).await? {
                Some(r) => Ok(Some(r)),
                None => Err(ApiError::Forbidden(
                    "you are not a member of that account".into(),
                )),
            }
        }
        Principal::App { .. } if caller.account() == account => Ok(None),
        Principal::App { .. } => Err(ApiError::Forbidden(
            "applications see only their own account".into(),
        )),
    }
}

#[utoipa::path(get, path = "/sys/v1/accounts/{id}",
    params(("id" = String, Path, description = "The account's id")), tag = "accounts", responses((status = 200, body = AccountOut), (status = 403, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(account_id): Path<String>,
) -> ApiResult<Json<AccountOut>> {
    let role = role_in(&state, &caller, &account_id).await?;
    let mut conn = state.catalog.conn().await?;
    let a = accounts::get(&mut conn, &account_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no account {account_id}")))?;
    Ok(Json(out(&a, role)))
}

fn must_administer(caller: &Caller, account: &str, role: Option<AccountRole>) -> ApiResult<()> {
    if role != Some(AccountRole::Administrator) {
        return Err(ApiError::Forbidden(
            "only account administrators change the account".into(),
        ));
    }
    if caller.account() != account {
        return Err(ApiError::Forbidden(
            "select the account first (POST /sys/v1/session/select_account)".into(),
        ));
    }
    Ok(())
}

#[utoipa::path(patch, path = "/sys/v1/accounts/{id}",
    params(("id" = String, Path, description = "The account's id")), tag = "accounts", request_body = AccountRequest,
    responses((status = 200, body = AccountOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(account_id): Path<String>,
    Body(req): Body<AccountRequest>,
) -> ApiResult<Json<AccountOut>> {
    let role = role_in(&state, &caller, &account_id).await?;
    must_administer(&caller, &account_id, role)?;
    let new_name = req
        .name
        .as_deref()
        .map(|n| display_name("name", n))
        .transpose()?;
    let policy = match &req.cryptographic_policy {
        Some(Removable::Set(doc)) => Some(Some(
            validate_policy(&state, "cryptographic_policy", CRYPTO_POLICY_PLUGIN, doc).await?,
        )),
        Some(Removable::Remove) => Some(None),
        None => None,
    };
    check_expiry(req.approval_request_expiry)?;
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    // Read under the write lock: the policy that decides is the one stored now.
    let mut a = accounts::get(&mut tx, &account_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no account {account_id}")))?;
    let approved = caller.access.approval.as_ref().is_some_and(|a| a.account);
    let policy_changes = req.approval_policy.is_some() || req.approval_request_expiry.is_some();
    if !approved
        && ((a.approval_policy.is_some() && policy_changes)
            || (policy.is_some()
                && crate::quorum::account_required(
                    a.approval_policy.as_ref(),
                    AccountProtected::CryptographicPolicy,
                )))
    {
        return Err(ApiError::ApprovalRequired);
    }
    if let Some(n) = new_name {
        a.name = n;
    }
    if let Some(d) = req.description {
        a.description = Some(d);
    }
    if let Some(p) = policy {
        a.crypto_policy = p;
    }
    match &req.approval_policy {
        Some(Removable::Set(p)) => {
            super::approvals::check_policy(&mut tx, &a.id, "approval_policy", &p.policy).await?;
            a.approval_policy = Some(p.clone());
        }
        Some(Removable::Remove) => a.approval_policy = None,
        None => {}
    }
    if let Some(e) = req.approval_request_expiry {
        a.approval_request_expiry = Some(e);
    }
    accounts::update(&mut tx, &a).await?;
    Event::new(Some(&a.id), caller.principal(), "account.update", now)
        .object("account", &a.id)
        .details(serde_json::json!({
            "cryptographic_policy_changed": req.cryptographic_policy.is_some(),
            "approval_policy_changed": req.approval_policy.is_some(),
            "approval_request_expiry": req.approval_request_expiry,
        }))
        .write(&mut tx)
        .await?;
    tx.commit().await?;
    state.forget_account(&a.id);
    Ok(Json(out(&a, role)))
}

/// Deletes the account and everything in it.
#[utoipa::path(delete, path = "/sys/v1/accounts/{id}",
    params(("id" = String, Path, description = "The account's id")), tag = "accounts", responses((status = 204), (status = 403, body = super::error::ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(account_id): Path<String>,
) -> ApiResult<StatusCode> {
    let role = role_in(&state, &caller, &account_id).await?;
    must_administer(&caller, &account_id, role)?;
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    let a = accounts::get(&mut tx, &account_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no account {account_id}")))?;
    // An account under a quorum policy goes only with its quorum's approval.
    if a.approval_policy.is_some() && caller.access.approval.is_none() {
        return Err(ApiError::ApprovalRequired);
    }
    accounts::delete(&mut tx, &account_id).await?;
    // Recorded outside any account: nobody can read the deleted account's log any more, but it
    // stays in the catalog.

    Event::new(None, caller.principal(), "account.delete", now)
        .object("account", &account_id)
        .write(&mut tx)
        .await?;
    tx.commit().await?;
    state.forget_account(&account_id);
    Ok(StatusCode::NO_CONTENT)
}
