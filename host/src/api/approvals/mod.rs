//! Quorum approval requests, in DSM's shape (`/sys/v1/approval_requests`): a protected
//! operation answered 403 `ApprovalRequired` is asked for with its method, path and body;
//! the reviewers its group's or account's policy names (`subject`) approve (a password again
//! when the policy says so) or deny; when the approvals meet every deciding policy the
//! server carries the operation out *as the requester* (`replay`), with the requester's
//! rights as they are at that moment, and keeps its answer (sealed) for the requester to read
//! once. The requester never approves their own request unless the policy allows it. Of
//! several daemons deciding at once, one carries it out (the status moves by
//! compare-and-swap). Every step is audited.

mod replay;
mod subject;

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::audit::Event;
use crate::auth::Principal;
use crate::catalog::accounts;
use crate::catalog::approvals::{
    self, AccountProtected, ApprovalRequest, Operation, QuorumPolicy, Reviewer, Status,
};
use crate::catalog::notifications::{self, EventType};
use crate::quorum::Deciders;

use super::extract::{Body, Caller, id};
use super::model::{Time, time};
use super::{ApiError, ApiResult, AppState};

/// Marks the internal request that carries out an approved operation.
#[derive(Debug, Clone)]
pub struct CarriesApproval(pub crate::auth::access::Approval);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequestIn {
    /// `POST`, `PATCH`, `PUT` or `DELETE`.
    pub method: String,
    /// The operation's path, e.g. `/crypto/v1/keys/rekey`.
    pub operation: String,
    /// The operation's JSON body.
    #[schema(value_type = Option<Object>)]
    pub body: Option<Value>,
    pub description: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalRequestOut {
    pub request_id: String,
    pub acct_id: String,
    /// `{"user": id}` or `{"app": id}`.
    #[schema(value_type = Object)]
    pub requester: Reviewer,
    pub created_at: Time,
    pub expiry: Time,
    /// Whether it expired before its quorum was met.
    pub expired: bool,
    pub method: String,
    pub operation: String,
    #[schema(value_type = Option<Object>)]
    pub body: Option<Value>,
    pub description: Option<String>,
    /// `PENDING`, `APPROVED`, `DENIED` or `FAILED` (approved, but the operation was refused
    /// when it ran).
    pub status: &'static str,
    #[schema(value_type = Vec<Object>)]
    pub approvers: Vec<Reviewer>,
    #[schema(value_type = Option<Object>)]
    pub denier: Option<Reviewer>,
    pub denial_reason: Option<String>,
    /// Who may review: every user and application the deciding policies name (DSM's
    /// `reviewers`).
    #[schema(value_type = Vec<Object>)]
    pub reviewers: Vec<Reviewer>,
    /// The deciding policy as it is now (the group's when both decide): how many of whom.
    #[schema(value_type = Option<Object>)]
    pub policy: Option<QuorumPolicy>,
    /// `[{"group": id}]`, `[{"account": id}]` or both: whose policies decide (all must be
    /// met).
    #[schema(value_type = Vec<Object>)]
    pub subjects: Vec<Value>,
    pub result_viewed: bool,
}

#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ApproveIn {
    /// The reviewer's password, when the policy requires it.
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct DenyIn {
    pub reason: Option<String>,
}

/// DSM's `ApprovableResult`: what the operation answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResultOut {
    pub status: u16,
    #[schema(value_type = Object)]
    pub body: Value,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only requests of this status.
    #[param(schema_with = status_schema)]
    pub status: Option<String>,
    /// Only requests of this requester (a user or application id).
    #[param(schema_with = super::schemas::id)]
    pub requester: Option<String>,
    /// Only requests this user or application may review.
    #[param(schema_with = super::schemas::id)]
    pub reviewer: Option<String>,
    /// Only requests under this group or account.
    #[param(schema_with = super::schemas::id)]
    pub subject: Option<String>,
}

fn status_schema() -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["PENDING", "APPROVED", "DENIED", "FAILED"]))
}

/// A JSON body that may be left out.
fn optional_body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        super::extract::parse_json(bytes)
    }
}

fn reviewer(p: &Principal) -> Reviewer {
    Reviewer::of(p)
}

/// Refuses an account change the account's approval policy protects, unless an approved
/// request carries it out.
pub async fn account_approved(
    state: &AppState,
    caller: &super::extract::Caller,
    what: AccountProtected,
) -> ApiResult<()> {
    let mut c = state.catalog.conn().await?;
    if crate::quorum::account_allows(&mut c, &caller.access, what).await? {
        Ok(())
    } else {
        Err(ApiError::ApprovalRequired)
    }
}

/// A policy's reviewers must be users and applications of the account; `field` names it in
/// a refusal.
pub async fn check_policy(
    c: &mut crate::catalog::Conn,
    account: &str,
    field: &str,
    policy: &QuorumPolicy,
) -> ApiResult<()> {
    crate::quorum::check(policy).map_err(|e| ApiError::field(field, e))?;
    for m in crate::quorum::reviewers(policy) {
        let known = match &m {
            Reviewer::User(id) => accounts::member_role(c, account, id).await?.is_some(),
            Reviewer::App(id) => crate::catalog::apps::get(c, account, id).await?.is_some(),
        };
        if !known {
            return Err(ApiError::field(
                field,
                format!("{m:?} is not a user or application of this account"),
            ));
        }
    }
    Ok(())
}

async fn deciders(state: &AppState, r: &ApprovalRequest) -> ApiResult<Deciders> {
    let mut c = state.catalog.conn().await?;
    Ok(Deciders::of(&mut c, r).await?)
}

/// DSM's `subjects` of a request.
fn subjects(r: &ApprovalRequest) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(g) = &r.group_id {
        out.push(json!({"group": g}));
    }
    if r.account_policy {
        out.push(json!({"account": r.account_id}));
    }
    out
}

fn expired(r: &ApprovalRequest, now: i64) -> bool {
    r.status == Status::Pending && now > r.expires_at
}

async fn out(state: &AppState, r: &ApprovalRequest) -> ApiResult<ApprovalRequestOut> {
    let mut c = state.catalog.conn().await?;
    let approvers = approvals::approvers(&mut c, &r.id).await?;
    let deciders = Deciders::of(&mut c, r).await?;
    Ok(ApprovalRequestOut {
        request_id: r.id.clone(),
        acct_id: r.account_id.clone(),
        requester: r.requester.clone(),
        created_at: time(r.created_at),
        expiry: time(r.expires_at),
        expired: expired(r, state.now()),
        method: r.method.clone(),
        operation: r.operation.clone(),
        body: r.body.as_deref().and_then(|b| serde_json::from_str(b).ok()),
        description: r.description.clone(),
        status: r.status.as_str(),
        approvers,
        denier: r.denier.clone(),
        denial_reason: r.denial_reason.clone(),
        reviewers: deciders.reviewers(),
        policy: deciders.first().cloned(),
        subjects: subjects(r),
        result_viewed: r.result_viewed,
    })
}

#[utoipa::path(post, path = "/sys/v1/approval_requests", tag = "approvals", request_body = ApprovalRequestIn,
    responses((status = 201, body = ApprovalRequestOut), (status = 400, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(req): Body<ApprovalRequestIn>,
) -> ApiResult<(StatusCode, Json<ApprovalRequestOut>)> {
    let method = req.method.to_ascii_uppercase();
    if !["POST", "PATCH", "PUT", "DELETE"].contains(&method.as_str()) {
        return Err(ApiError::field("method", "POST, PATCH, PUT or DELETE"));
    }
    if !req.operation.starts_with('/') || req.operation.contains("approval_requests") {
        return Err(ApiError::field(
            "operation",
            "an API path such as /crypto/v1/keys/rekey",
        ));
    }
    let subjects = subject::of(&caller, &state, &req, &method).await?;
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    let expiry = crate::quorum::expiry(&mut tx, caller.account()).await?;
    let r = ApprovalRequest::new(
        caller.account(),
        reviewer(caller.principal()),
        Operation {
            method,
            path: req.operation.clone(),
            body: req.body.as_ref().map(Value::to_string),
            description: req.description.clone(),
        },
        subjects,
        now,
        expiry,
    );
    let event = Event::new(
        Some(&r.account_id),
        caller.principal(),
        "approval_request.create",
        now,
    );
    crate::quorum::ask(&mut tx, &r, event).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(out(&state, &r).await?)))
}

/// Whether the caller may see a request: its requester, its reviewers, and whoever reads the
/// whole account.
async fn visible(state: &AppState, caller: &Caller, r: &ApprovalRequest) -> ApiResult<bool> {
    let me = reviewer(caller.principal());
    if r.requester == me || caller.access.reads_whole_account() {
        return Ok(true);
    }
    Ok(deciders(state, r).await?.names(&me))
}

/// How many pending requests wait for the caller's review (the console's badge).
pub async fn awaiting_review(state: &AppState, caller: &Caller) -> ApiResult<usize> {
    let pending = {
        let mut c = state.catalog.conn().await?;
        approvals::list(&mut c, caller.account(), Some(Status::Pending)).await?
    };
    let me = reviewer(caller.principal());
    let now = state.now();
    let mut n = 0;
    for r in pending.iter().filter(|r| !expired(r, now)) {
        let d = deciders(state, r).await?;
        if d.names(&me) && (r.requester != me || d.lets_requester_decide(&me)) {
            n += 1;
        }
    }
    Ok(n)
}

#[utoipa::path(get, path = "/sys/v1/approval_requests", tag = "approvals", params(ListQuery),
    responses((status = 200, body = [ApprovalRequestOut])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<ApprovalRequestOut>>> {
    let Query(q) = query.map_err(|e| ApiError::bad(format!("invalid query: {e}")))?;
    for (name, value) in [
        ("requester", &q.requester),
        ("reviewer", &q.reviewer),
        ("subject", &q.subject),
    ] {
        if let Some(v) = value {
            id(name, v)?;
        }
    }
    let status = match q.status.as_deref() {
        Some(s) => Some(
            Status::parse(s)
                .ok_or_else(|| ApiError::field("status", "PENDING, APPROVED, DENIED or FAILED"))?,
        ),
        None => None,
    };
    let all = {
        let mut c = state.catalog.conn().await?;
        approvals::list(&mut c, caller.account(), status).await?
    };
    let mut shown = Vec::new();
    for r in &all {
        if q.requester
            .as_ref()
            .is_some_and(|id| r.requester.id() != id)
            || q.subject.as_ref().is_some_and(|g| {
                r.group_id.as_ref() != Some(g) && !(r.account_policy && r.account_id == *g)
            })
            || !visible(&state, &caller, r).await?
        {
            continue;
        }
        let o = out(&state, r).await?;
        if q.reviewer
            .as_ref()
            .is_some_and(|id| !o.reviewers.iter().any(|x| x.id() == id))
        {
            continue;
        }
        shown.push(o);
    }
    Ok(Json(shown))
}

async fn load(state: &AppState, caller: &Caller, request_id: &str) -> ApiResult<ApprovalRequest> {
    id("approval request", request_id)?;
    let mut c = state.catalog.conn().await?;
    let r = approvals::get(&mut c, caller.account(), request_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no approval request {request_id}")))?;
    drop(c);
    if !visible(state, caller, &r).await? {
        return Err(ApiError::NotFound(format!(
            "no approval request {request_id}"
        )));
    }
    Ok(r)
}

#[utoipa::path(get, path = "/sys/v1/approval_requests/{id}", tag = "approvals",
    params(("id" = String, Path, description = "The request's id")),
    responses((status = 200, body = ApprovalRequestOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(request_id): Path<String>,
) -> ApiResult<Json<ApprovalRequestOut>> {
    let r = load(&state, &caller, &request_id).await?;
    Ok(Json(out(&state, &r).await?))
}

/// A pending request the caller may decide: named by a deciding policy, not its requester
/// (unless the policy allows it), not expired.
async fn decidable(
    state: &AppState,
    caller: &Caller,
    request_id: &str,
) -> ApiResult<(ApprovalRequest, Deciders)> {
    let r = load(state, caller, request_id).await?;
    if r.status != Status::Pending {
        return Err(ApiError::Conflict(format!(
            "the request is {}, not pending",
            r.status.as_str()
        )));
    }
    if expired(&r, state.now()) {
        return Err(ApiError::Conflict("the request has expired".into()));
    }
    let me = reviewer(caller.principal());
    let deciders = deciders(state, &r).await?;
    if deciders.is_empty() {
        return Err(ApiError::Conflict(
            "no approval policy decides the request any more: call the operation directly".into(),
        ));
    }
    if r.requester == me && !deciders.lets_requester_decide(&me) {
        return Err(ApiError::Forbidden(
            "no one approves or denies their own request".into(),
        ));
    }
    if !deciders.names(&me) {
        return Err(ApiError::Forbidden(
            "the approval policy does not name you as a reviewer".into(),
        ));
    }
    Ok((r, deciders))
}

#[utoipa::path(post, path = "/sys/v1/approval_requests/{id}/approve", tag = "approvals", request_body = ApproveIn,
    params(("id" = String, Path, description = "The request's id")),
    responses((status = 200, body = ApprovalRequestOut), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn approve(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(request_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ApprovalRequestOut>> {
    let ApproveIn { password } = optional_body(&body)?;
    let (r, deciders) = decidable(&state, &caller, &request_id).await?;
    if deciders.requires_password()
        && let Principal::User { user_id, .. } = caller.principal()
    {
        let password = password.ok_or_else(|| {
            ApiError::field("password", "the policy asks reviewers for their password")
        })?;
        let mut c = state.catalog.conn().await?;
        let hash = crate::catalog::users::get(&mut c, user_id)
            .await?
            .map(|u| u.password_hash);
        drop(c);
        let ok = tokio::task::spawn_blocking(move || {
            crate::auth::verify_password_or_dummy(hash.as_deref(), &password)
        })
        .await
        .unwrap_or(false);
        if !ok {
            return Err(ApiError::Forbidden("the password is not yours".into()));
        }
    }
    let now = state.now();
    let me = reviewer(caller.principal());
    let mut tx = state.catalog.begin().await?;
    approvals::vote(&mut tx, &r.id, &me, now).await?;
    let approvers = approvals::approvers(&mut tx, &r.id).await?;
    let met = deciders.satisfied(&approvers, &r.requester);
    let won = met && approvals::decide(&mut tx, &r.id, Status::Approved, None, None, now).await?;
    if won {
        decided(&mut tx, &r, Status::Approved, now).await?;
    }
    Event::new(
        Some(&r.account_id),
        caller.principal(),
        "approval_request.approve",
        now,
    )
    .object("approval_request", &r.id)
    .details(json!({"quorum_met": met}))
    .write(&mut tx)
    .await?;
    tx.commit().await?;
    if won {
        replay::carry_out(&state, &r).await?;
    }
    Ok(Json(out(&state, &reload(&state, &r).await?).await?))
}

#[utoipa::path(post, path = "/sys/v1/approval_requests/{id}/deny", tag = "approvals", request_body = DenyIn,
    params(("id" = String, Path, description = "The request's id")),
    responses((status = 200, body = ApprovalRequestOut), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn deny(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(request_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ApprovalRequestOut>> {
    let DenyIn { reason } = optional_body(&body)?;
    let (r, _) = decidable(&state, &caller, &request_id).await?;
    let now = state.now();
    let me = reviewer(caller.principal());
    let mut tx = state.catalog.begin().await?;
    if !approvals::decide(
        &mut tx,
        &r.id,
        Status::Denied,
        Some(&me),
        reason.as_deref(),
        now,
    )
    .await?
    {
        return Err(ApiError::Conflict(
            "the request was decided meanwhile".into(),
        ));
    }
    decided(&mut tx, &r, Status::Denied, now).await?;
    Event::new(
        Some(&r.account_id),
        caller.principal(),
        "approval_request.deny",
        now,
    )
    .object("approval_request", &r.id)
    .details(json!({"reason": reason}))
    .write(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(Json(out(&state, &reload(&state, &r).await?).await?))
}

/// Tells the notification endpoints (the requester's systems) that a request was decided.
async fn decided(
    c: &mut crate::catalog::Conn,
    r: &ApprovalRequest,
    status: Status,
    now: i64,
) -> ApiResult<()> {
    notifications::enqueue(
        c,
        &r.account_id,
        EventType::ApprovalDecided,
        &json!({"request_id": r.id, "group_id": r.group_id, "account_policy": r.account_policy, "status": status.as_str(),
            "requester": r.requester, "operation": r.operation}),
        now,
    )
    .await?;
    Ok(())
}

/// A request as it is now, for the reviewer who just decided it (whatever the operation
/// changed, the group's policy included).
async fn reload(state: &AppState, r: &ApprovalRequest) -> ApiResult<ApprovalRequest> {
    let mut c = state.catalog.conn().await?;
    approvals::get(&mut c, &r.account_id, &r.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no approval request {}", r.id)))
}

/// The requester reads what the approved operation answered, once.
#[utoipa::path(post, path = "/sys/v1/approval_requests/{id}/result", tag = "approvals",
    params(("id" = String, Path, description = "The request's id")),
    responses((status = 200, body = ResultOut), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn result(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(request_id): Path<String>,
) -> ApiResult<Json<ResultOut>> {
    let r = load(&state, &caller, &request_id).await?;
    if r.requester != reviewer(caller.principal()) {
        return Err(ApiError::Forbidden(
            "only the requester reads the result".into(),
        ));
    }
    let (Some(status), Some(sealed)) = (r.result_status, &r.result_sealed) else {
        return Err(ApiError::Conflict(format!(
            "the request is {}: there is no result",
            r.status.as_str()
        )));
    };
    let mut tx = state.catalog.begin().await?;
    if !approvals::mark_viewed(&mut tx, &r.id).await? {
        return Err(ApiError::Conflict(
            "the result has been read already".into(),
        ));
    }
    Event::new(
        Some(&r.account_id),
        caller.principal(),
        "approval_request.result",
        state.now(),
    )
    .object("approval_request", &r.id)
    .write(&mut tx)
    .await?;
    tx.commit().await?;
    let body = state
        .catalog
        .open_sealed(&approvals::result_context(&r.id), sealed)?;
    Ok(Json(ResultOut {
        status: status as u16,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    }))
}

/// The requester withdraws a pending request.
#[utoipa::path(delete, path = "/sys/v1/approval_requests/{id}", tag = "approvals",
    params(("id" = String, Path, description = "The request's id")),
    responses((status = 204), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn withdraw(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(request_id): Path<String>,
) -> ApiResult<StatusCode> {
    let r = load(&state, &caller, &request_id).await?;
    if r.requester != reviewer(caller.principal()) {
        return Err(ApiError::Forbidden(
            "only the requester withdraws a request".into(),
        ));
    }
    let mut tx = state.catalog.begin().await?;
    // Withdrawn only while pending: moved to DENIED by the requester, then removed.
    if !approvals::decide(
        &mut tx,
        &r.id,
        Status::Denied,
        Some(&r.requester),
        Some("withdrawn"),
        state.now(),
    )
    .await?
    {
        return Err(ApiError::Conflict(format!(
            "the request is {}: it can no longer be withdrawn",
            r.status.as_str()
        )));
    }
    approvals::delete(&mut tx, &r.id).await?;
    Event::new(
        Some(&r.account_id),
        caller.principal(),
        "approval_request.withdraw",
        state.now(),
    )
    .object("approval_request", &r.id)
    .write(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
