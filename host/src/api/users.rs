//! Users: bootstrap sign-up, invitations into an account, roles, removal.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::audit::Event;
use crate::auth::sessions::Sessions;
use crate::auth::{Principal, credentials::MIN_PASSWORD_LEN, hash_password, verify_password};
use crate::catalog::accounts::{self, Account, AccountRole};
use crate::catalog::groups::{self, GroupRole};
use crate::catalog::users::{self, User};
use crate::catalog::{Conn, new_id};

use super::extract::{Body, Caller, id};
use super::model::{UserOut, opt_time, time};
use super::{ApiError, ApiResult, AppState};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Signup {
    #[schema(format = Email)]
    pub user_email: String,
    #[schema(schema_with = super::schemas::password)]
    pub user_password: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Name of the account created for the first user (default "Default account").
    pub account_name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    #[schema(schema_with = super::schemas::email)]
    pub user_email: String,
    /// Creates a new user with this first password; absent: the email names an existing
    /// user (404 if none; 409 when a password is given for one).
    #[schema(schema_with = super::schemas::password_or_null)]
    pub user_password: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// `administrator`, `member` or `auditor`, or DSM's flags (`["ACCOUNTMEMBER"]`).
    #[schema(schema_with = super::schemas::account_role)]
    pub account_role: RoleIn,
    /// Group id → `administrator` or `auditor`.
    #[serde(default, deserialize_with = "super::model::null_is_default")]
    #[schema(schema_with = super::schemas::group_roles)]
    pub groups: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    #[schema(schema_with = super::schemas::account_role)]
    pub account_role: Option<RoleIn>,
    /// Group id → role to add or change.
    #[serde(default, deserialize_with = "super::model::null_is_default")]
    #[schema(schema_with = super::schemas::group_roles)]
    pub add_groups: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "super::model::null_is_default")]
    #[schema(schema_with = super::schemas::ids)]
    pub del_groups: Vec<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// A new password (only for yourself, with `current_password`).
    #[schema(schema_with = super::schemas::password_or_null)]
    pub user_password: Option<String>,
    pub current_password: Option<String>,
}

pub fn check_email(email: &str) -> Result<(), ApiError> {
    let ok = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'));
    if ok && !email.chars().any(char::is_whitespace) {
        Ok(())
    } else {
        Err(ApiError::field("user_email", "is not an email address"))
    }
}

pub fn check_password(field: &str, pw: &str) -> Result<(), ApiError> {
    if pw.chars().count() < MIN_PASSWORD_LEN {
        return Err(ApiError::field(
            field,
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    Ok(())
}

/// An account role as Keyward names it or as DSM's list of account flags.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RoleIn {
    Name(String),
    /// Exactly one of `ACCOUNTADMINISTRATOR`, `ACCOUNTMEMBER`, `ACCOUNTAUDITOR`, optionally
    /// with `STATEENABLED`.
    Flags(Vec<String>),
}

/// Account flags DSM clients send along with the role that change nothing here.
const IGNORED_FLAGS: &[&str] = &["STATEENABLED"];

fn account_role(field: &str, r: &RoleIn) -> Result<AccountRole, ApiError> {
    match r {
        RoleIn::Name(s) => AccountRole::parse(s).ok_or_else(|| {
            ApiError::field(
                field,
                format!("'{s}' is not a role (administrator, member, auditor)"),
            )
        }),
        RoleIn::Flags(flags) => {
            let mut roles = Vec::new();
            for f in flags {
                match AccountRole::from_dsm_flag(f) {
                    Some(r) => roles.push(r),
                    None if IGNORED_FLAGS.contains(&f.as_str()) => {}
                    None => {
                        return Err(ApiError::field(
                            field,
                            format!(
                                "'{f}' is not an account flag Keyward knows (ACCOUNTADMINISTRATOR, ACCOUNTMEMBER, ACCOUNTAUDITOR, STATEENABLED)"
                            ),
                        ));
                    }
                }
            }
            match roles[..] {
                [r] => Ok(r),
                _ => Err(ApiError::field(
                    field,
                    "give exactly one of ACCOUNTADMINISTRATOR, ACCOUNTMEMBER and ACCOUNTAUDITOR",
                )),
            }
        }
    }
}

fn group_role(field: &str, s: &str) -> Result<GroupRole, ApiError> {
    GroupRole::parse(s).ok_or_else(|| {
        ApiError::field(
            field,
            format!("'{s}' is not a group role (administrator, auditor)"),
        )
    })
}

fn caller_user(caller: &Caller) -> Result<&str, ApiError> {
    match caller.principal() {
        Principal::User { user_id, .. } => Ok(user_id),
        Principal::App { .. } => Err(ApiError::Forbidden(
            "applications do not manage users".into(),
        )),
    }
}

async fn user_out(c: &mut Conn, account: &str, u: &User, role: AccountRole) -> ApiResult<UserOut> {
    let groups = groups::roles_of_user(c, account, &u.id)
        .await?
        .into_iter()
        .map(|(g, r)| (g, r.as_str().to_string()))
        .collect();
    Ok(UserOut {
        user_id: u.id.clone(),
        user_email: u.email.clone(),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        created_at: time(u.created_at),
        last_logged_in_at: opt_time(u.last_login),
        account_role: vec![role.dsm_flag(), "STATEENABLED"],
        groups,
    })
}

/// The first user signs up and gets an account they administer. After that, sign-up is
/// closed: account administrators invite users.
#[utoipa::path(post, path = "/sys/v1/users", tag = "users", request_body = Signup,
    responses((status = 201, body = UserOut), (status = 403, body = super::error::ErrorBody)))]
pub async fn signup(
    State(state): State<Arc<AppState>>,
    Body(req): Body<Signup>,
) -> ApiResult<(StatusCode, Json<UserOut>)> {
    check_email(&req.user_email)?;
    check_password("user_password", &req.user_password)?;
    let pw = req.user_password.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    if users::count(&mut tx).await? > 0 {
        return Err(ApiError::Forbidden(
            "sign-up is closed: an account administrator adds users (POST /sys/v1/users/invite)"
                .into(),
        ));
    }
    let user = User {
        id: new_id(),
        email: req.user_email.trim().to_string(),
        password_hash: hash,
        first_name: req.first_name,
        last_name: req.last_name,
        created_at: now,
        last_login: None,
    };
    let account = Account {
        id: new_id(),
        name: req.account_name.unwrap_or_else(|| "Default account".into()),
        description: None,
        created_at: now,
        created_by: Some(user.id.clone()),
        crypto_policy: None,
        approval_policy: None,
        approval_request_expiry: None,
    };
    users::insert(&mut tx, &user).await?;
    accounts::insert(&mut tx, &account).await?;
    accounts::set_member(
        &mut tx,
        &account.id,
        &user.id,
        AccountRole::Administrator,
        now,
    )
    .await?;
    let actor = Principal::User {
        user_id: user.id.clone(),
        email: user.email.clone(),
    };
    Event::new(Some(&account.id), &actor, "user.signup", now)
        .object("user", &user.id)
        .write(&mut tx)
        .await?;
    let out = user_out(&mut tx, &account.id, &user, AccountRole::Administrator).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// Adds a user to the caller's account (creating the user if the email is new).
#[utoipa::path(post, path = "/sys/v1/users/invite", tag = "users", request_body = Invite,
    responses((status = 201, body = UserOut), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn invite(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(req): Body<Invite>,
) -> ApiResult<(StatusCode, Json<UserOut>)> {
    caller_user(&caller)?;
    if !caller.access.is_account_admin() {
        return Err(ApiError::Forbidden(
            "only account administrators add users".into(),
        ));
    }
    check_email(&req.user_email)?;
    let role = account_role("account_role", &req.account_role)?;
    let mut group_roles = Vec::new();
    for (g, r) in &req.groups {
        id("group", g)?;
        group_roles.push((g.clone(), group_role(&format!("groups.{g}"), r)?));
    }
    if let Some(pw) = &req.user_password {
        check_password("user_password", pw)?;
    }
    let hash = match req.user_password.clone() {
        Some(pw) => Some(
            tokio::task::spawn_blocking(move || hash_password(&pw))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        ),
        None => None,
    };
    let now = state.now();
    let account = caller.account().to_string();
    let mut tx = state.catalog.begin().await?;
    for (g, _) in &group_roles {
        super::groups::require_in_account(&mut tx, "groups", g, &account).await?;
    }
    let user = match users::get_by_email(&mut tx, req.user_email.trim()).await? {
        Some(u) => {
            // A password makes a new user: this one exists, and their password is theirs.
            if hash.is_some() {
                return Err(ApiError::Conflict(format!(
                    "{} already has a Keyward login; invite them without user_password",
                    u.email
                )));
            }
            if accounts::member_role(&mut tx, &account, &u.id)
                .await?
                .is_some()
            {
                return Err(ApiError::Conflict(format!(
                    "{} is already a member of this account",
                    u.email
                )));
            }
            u
        }
        None => {
            // Without a password the invitation names an existing user, and there is none.
            let hash = hash.ok_or_else(|| {
                ApiError::NotFound(
                    "user_email: no Keyward user has this email; give user_password to create one"
                        .into(),
                )
            })?;
            let u = User {
                id: new_id(),
                email: req.user_email.trim().to_string(),
                password_hash: hash,
                first_name: req.first_name,
                last_name: req.last_name,
                created_at: now,
                last_login: None,
            };
            users::insert(&mut tx, &u).await?;
            u
        }
    };
    accounts::set_member(&mut tx, &account, &user.id, role, now).await?;
    for (g, r) in &group_roles {
        groups::set_member(&mut tx, &account, g, &user.id, *r).await?;
    }
    Event::new(Some(&account), caller.principal(), "user.add", now)
        .object("user", &user.id)
        .details(serde_json::json!({"account_role": role.as_str()}))
        .write(&mut tx)
        .await?;
    let out = user_out(&mut tx, &account, &user, role).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(out)))
}

#[utoipa::path(get, path = "/sys/v1/users", tag = "users", responses((status = 200, body = [UserOut])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<UserOut>>> {
    caller_user(&caller)?;
    let mut conn = state.catalog.conn().await?;
    let mut out = Vec::new();
    for (u, role) in users::in_account(&mut conn, caller.account()).await? {
        out.push(user_out(&mut conn, caller.account(), &u, role).await?);
    }
    Ok(Json(out))
}

async fn member(c: &mut Conn, account: &str, user_id: &str) -> ApiResult<(User, AccountRole)> {
    id("user", user_id)?;
    let role = accounts::member_role(c, account, user_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user {user_id} in this account")))?;
    let user = users::get(c, user_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user {user_id}")))?;
    Ok((user, role))
}

#[utoipa::path(get, path = "/sys/v1/users/{id}",
    params(("id" = String, Path, description = "The user's id")), tag = "users", responses((status = 200, body = UserOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> ApiResult<Json<UserOut>> {
    caller_user(&caller)?;
    let mut conn = state.catalog.conn().await?;
    let (user, role) = member(&mut conn, caller.account(), &user_id).await?;
    Ok(Json(
        user_out(&mut conn, caller.account(), &user, role).await?,
    ))
}

/// Administrators change roles and group roles; group administrators change roles in their
/// groups; users change their own names and password.
#[utoipa::path(patch, path = "/sys/v1/users/{id}",
    params(("id" = String, Path, description = "The user's id")), tag = "users", request_body = UserUpdate,
    responses((status = 200, body = UserOut), (status = 403, body = super::error::ErrorBody)))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(user_id): Path<String>,
    Body(req): Body<UserUpdate>,
) -> ApiResult<Json<UserOut>> {
    let me = caller_user(&caller)?.to_string();
    let account = caller.account().to_string();
    let admin = caller.access.is_account_admin();
    let new_role = req
        .account_role
        .as_ref()
        .map(|r| account_role("account_role", r))
        .transpose()?;
    let mut add = Vec::new();
    for (g, r) in &req.add_groups {
        id("group", g)?;
        add.push((g.clone(), group_role(&format!("add_groups.{g}"), r)?));
    }
    for g in &req.del_groups {
        id("group", g)?;
    }
    for g in req.add_groups.keys().chain(&req.del_groups) {
        if !caller.access.can_manage_group(g) {
            return Err(ApiError::Forbidden(format!(
                "you do not administer group {g}"
            )));
        }
    }
    if new_role.is_some() && !admin {
        return Err(ApiError::Forbidden(
            "only account administrators change account roles".into(),
        ));
    }
    let self_fields =
        req.first_name.is_some() || req.last_name.is_some() || req.user_password.is_some();
    if self_fields && me != user_id {
        return Err(ApiError::Forbidden(
            "users change only their own name and password".into(),
        ));
    }
    if let Some(pw) = &req.user_password {
        check_password("user_password", pw)?;
    }
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    let (mut user, mut role) = member(&mut tx, &account, &user_id).await?;
    if let Some(pw) = req.user_password.clone() {
        // Proof that the caller is the user, as a wrong one is: not a matter of form.
        let current = req.current_password.clone().ok_or_else(|| {
            ApiError::Forbidden(
                "current_password: the current password is required to change it".into(),
            )
        })?;
        let stored = user.password_hash.clone();
        let ok = tokio::task::spawn_blocking(move || verify_password(&stored, &current))
            .await
            .unwrap_or(false);

        if !ok {
            return Err(ApiError::Forbidden("the current password is wrong".into()));
        }
        user.password_hash = tokio::task::spawn_blocking(move || hash_password(&pw))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        // Every session of the user ends with the change, on every daemon.
        Sessions::end_all_of(&mut tx, &user.id).await?;
    }
    if let Some(f) = req.first_name {
        user.first_name = Some(f);
    }
    if let Some(l) = req.last_name {
        user.last_name = Some(l);
    }
    users::update(&mut tx, &user).await?;
    if let Some(r) = new_role {
        if role == AccountRole::Administrator
            && r != AccountRole::Administrator
            && accounts::count_administrators(&mut tx, &account).await? <= 1
        {
            return Err(ApiError::Conflict(
                "an account needs at least one administrator".into(),
            ));
        }
        accounts::set_member(&mut tx, &account, &user.id, r, now).await?;
        role = r;
    }
    for (g, r) in &add {
        super::groups::require_in_account(&mut tx, "add_groups", g, &account).await?;
        groups::set_member(&mut tx, &account, g, &user.id, *r).await?;
    }
    for g in &req.del_groups {
        super::groups::require_in_account(&mut tx, "del_groups", g, &account).await?;
        groups::remove_member(&mut tx, &account, g, &user.id).await?;
    }
    Event::new(Some(&account), caller.principal(), "user.update", now)
        .object("user", &user.id)
        .details(serde_json::json!({"account_role": new_role.map(AccountRole::as_str), "add_groups": req.add_groups, "del_groups": req.del_groups, "password_changed": req.user_password.is_some()}))
        .write(&mut tx)
        .await?;
    let out = user_out(&mut tx, &account, &user, role).await?;
    tx.commit().await?;
    if req.user_password.is_some() {
        state.sessions.changed();
    }
    Ok(Json(out))
}

/// Removes a user from the caller's account (the user keeps other accounts).
#[utoipa::path(delete, path = "/sys/v1/users/{id}",
    params(("id" = String, Path, description = "The user's id")), tag = "users", responses((status = 204), (status = 409, body = super::error::ErrorBody)))]
pub async fn remove(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> ApiResult<StatusCode> {
    caller_user(&caller)?;
    if !caller.access.is_account_admin() {
        return Err(ApiError::Forbidden(
            "only account administrators remove users".into(),
        ));
    }
    let account = caller.account().to_string();
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    let (user, role) = member(&mut tx, &account, &user_id).await?;
    if role == AccountRole::Administrator
        && accounts::count_administrators(&mut tx, &account).await? <= 1
    {
        return Err(ApiError::Conflict(
            "an account needs at least one administrator".into(),
        ));
    }
    accounts::remove_member(&mut tx, &account, &user.id).await?;
    Event::new(Some(&account), caller.principal(), "user.remove", now)
        .object("user", &user.id)
        .write(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
