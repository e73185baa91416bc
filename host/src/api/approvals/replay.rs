//! Carrying out an approved request: the operation runs *as its requester*, with the
//! requester's rights as they are at that moment, through the API's own router (so every
//! check a direct call meets applies), and its answer is kept sealed for the requester.

use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::audit::Event;
use crate::auth::Principal;
use crate::catalog::approvals::{self, ApprovalRequest, Reviewer, Status};
use crate::catalog::sobjects::Creator;

use super::super::{ApiError, ApiResult, AppState};
use super::CarriesApproval;

/// Carries out an approved request as its requester (their rights as they are now), through
/// the API itself, and keeps the answer sealed. A requester who lost access, or an operation
/// refused when it ran, leaves the request FAILED with the refusal as its result.
pub(super) async fn carry_out(state: &Arc<AppState>, r: &ApprovalRequest) -> ApiResult<()> {
    let who = match &r.requester {
        Reviewer::User(id) => Creator::User(id.clone()),
        Reviewer::App(id) => Creator::App(id.clone()),
    };
    let access = {
        let mut c = state.catalog.conn().await?;
        crate::auth::access::load(&mut c, &r.account_id, &who).await?
    };
    let (status, body) = match access {
        None => (
            StatusCode::FORBIDDEN,
            json!({"code": "Forbidden", "message": "the requester no longer belongs to the account"}),
        ),
        Some(access) => {
            let (token, _) = state
                .sessions
                .create(access.principal.clone(), Some(r.account_id.clone()), None)
                .await?;
            let method = Method::from_bytes(r.method.as_bytes())
                .map_err(|_| ApiError::Internal(format!("stored method {}", r.method)))?;
            let mut request = Request::builder()
                .method(method)
                .uri(&r.operation)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(HttpBody::from(r.body.clone().unwrap_or_default()))
                .map_err(|e| ApiError::Internal(format!("replaying the request: {e}")))?;
            request
                .extensions_mut()
                .insert(CarriesApproval(crate::auth::access::Approval {
                    request_id: r.id.clone(),
                    group_id: r.group_id.clone(),
                    account: r.account_policy,
                }));
            let answer = super::super::router(state.clone(), axum::Router::new())
                .oneshot(request)
                .await
                .map_err(|e| ApiError::Internal(format!("replaying the request: {e}")))?;
            let status = answer.status();
            let bytes = axum::body::to_bytes(answer.into_body(), 16 * 1024 * 1024)
                .await
                .map_err(|e| ApiError::Internal(format!("reading the answer: {e}")))?;
            state.sessions.terminate(&token).await?;
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            };
            (status, body)
        }
    };
    let ok = status.is_success();
    let sealed = state.catalog.seal(
        &approvals::result_context(&r.id),
        body.to_string().as_bytes(),
    );
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    approvals::set_result(
        &mut tx,
        &r.id,
        if ok { Status::Approved } else { Status::Failed },
        status.as_u16() as i64,
        &sealed,
    )
    .await?;
    let principal = match &r.requester {
        Reviewer::User(id) => Principal::User {
            user_id: id.clone(),
            email: String::new(),
        },
        Reviewer::App(id) => Principal::App {
            app_id: id.clone(),
            name: String::new(),
        },
    };
    let event = Event::new(
        Some(&r.account_id),
        &principal,
        "approval_request.execute",
        now,
    )
    .object("approval_request", &r.id)
    .details(json!({"method": r.method, "operation": r.operation, "status": status.as_u16()}));
    let event = if ok {
        event
    } else {
        event.outcome(
            "failure",
            format!("the operation answered {}", status.as_u16()),
        )
    };
    event.write(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}
