//! Quorum approval in the console: the queue of approval requests (approve or deny those
//! waiting for you, read the result of your own or withdraw it), and a group's approval
//! policy as a form (reviewers, how many must approve, what they protect). Everything goes
//! through the API's handlers.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use maud::{Markup, html};

use crate::api::approvals::{self, ApprovalRequestOut, ListQuery};
use crate::api::extract::Body;
use crate::api::groups::{self, GroupRequest};
use crate::api::model::Removable;
use crate::api::{ApiError, users};
use crate::catalog::approvals::{GroupApprovalPolicy, Protected, Quorum, QuorumPolicy, Reviewer};

use super::{Flash, SignedForm, Viewer, back, csrf_field, page};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/approvals", get(queue))
        .route("/console/approvals/{id}", axum::routing::post(decide))
        .route(
            "/console/groups/{id}/approval_policy",
            get(policy_page).post(save_policy),
        )
}

use crate::api::AppState;

/// Every protected operation, with its DSM name and what it means here.
const PROTECTED: [(Protected, &str, &str); 10] = [
    (Protected::RotateSobjects, "ROTATE_SOBJECTS", "rotate keys"),
    (
        Protected::RevokeSobjects,
        "REVOKE_SOBJECTS",
        "revoke or deactivate keys",
    ),
    (
        Protected::ActivateSobjects,
        "ACTIVATE_SOBJECTS",
        "activate keys",
    ),
    (
        Protected::DestroySobjects,
        "DESTROY_SOBJECTS",
        "destroy keys",
    ),
    (
        Protected::DeleteSobjects,
        "DELETE_SOBJECTS",
        "delete keys (and soft-delete HSM keys)",
    ),
    (
        Protected::DeleteKeyMaterial,
        "DELETE_KEY_MATERIAL",
        "purge HSM keys",
    ),
    (
        Protected::UpdateSobjectsProfile,
        "UPDATE_SOBJECTS_PROFILE",
        "change keys' names, descriptions, tags",
    ),
    (
        Protected::UpdateSobjectsEnabledState,
        "UPDATE_SOBJECTS_ENABLED_STATE",
        "enable or disable keys",
    ),
    (
        Protected::UpdateKeyOps,
        "UPDATE_KEY_OPS",
        "change keys' operations",
    ),
    (
        Protected::ExportSobjects,
        "EXPORT_SOBJECTS",
        "export or copy keys out",
    ),
];

fn who(r: &Reviewer) -> String {
    match r {
        Reviewer::User(id) => format!("user {id}"),
        Reviewer::App(id) => format!("app {id}"),
    }
}

fn row(v: &Viewer, r: &ApprovalRequestOut) -> Markup {
    let mine = matches!(&r.requester, Reviewer::User(id) if id == v.caller.principal().id());
    let action = format!("/console/approvals/{}", r.request_id);
    let op_button = |op: &str, label: &str| {
        html! {
            form method="post" action=(action) .action {
                (csrf_field(v))
                input type="hidden" name="op" value=(op);
                button type="submit" data-testid={ "approval-" (op) } { (label) }
            }
        }
    };
    html! {
        tr data-testid="approval-row" data-id=(r.request_id) {
            td data-testid="approval-status" { (r.status) @if r.expired { " (expired)" } }
            td { code { (r.method) " " (r.operation) } }
            td { (r.description.clone().unwrap_or_default()) }
            td { (who(&r.requester)) }
            td { (r.approvers.iter().map(who).collect::<Vec<_>>().join(", ")) }
            td {
                @if r.status == "PENDING" && !r.expired && !mine {
                    form method="post" action=(action) .action {
                        (csrf_field(v))
                        input type="hidden" name="op" value="approve";
                        input type="password" name="password" placeholder="your password, if asked" autocomplete="current-password";
                        button type="submit" data-testid="approval-approve" { "Approve" }
                    }
                    form method="post" action=(action) .action {
                        (csrf_field(v))
                        input type="hidden" name="op" value="deny";
                        input name="reason" placeholder="reason" data-testid="approval-reason";
                        button type="submit" data-testid="approval-deny" { "Deny" }
                    }
                }
                @if mine && r.status == "PENDING" { (op_button("withdraw", "Withdraw")) }
                @if mine && (r.status == "APPROVED" || r.status == "FAILED") && !r.result_viewed {
                    (op_button("result", "Read the result"))
                }
            }
        }
    }
}

async fn queue(State(state): State<Arc<AppState>>, v: Viewer, Query(f): Query<Flash>) -> Response {
    let list = approvals::list(
        State(state),
        v.caller.clone(),
        Ok(Query(ListQuery {
            status: None,
            requester: None,
            reviewer: None,
            subject: None,
        })),
    )
    .await
    .map(|Json(l)| l)
    .unwrap_or_default();
    let body = html! {
        p { "Requests you made, and those waiting for your review. When the approvals meet the group's quorum, the operation runs as its requester." }
        table data-testid="approvals-table" {
            thead { tr { th { "Status" } th { "Operation" } th { "Description" } th { "Requester" } th { "Approved by" } th {} } }
            tbody { @for r in &list { (row(&v, r)) } }
        }
    };
    page(&v, "Approval requests", "approvals", &f, body)
}

async fn decide(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    SignedForm {
        viewer: v,
        fields: f,
    }: SignedForm,
) -> Response {
    let here = "/console/approvals";
    let bytes = |value: serde_json::Value| axum::body::Bytes::from(value.to_string());
    match f.get("op").as_deref() {
        Some("approve") => {
            let body = bytes(serde_json::json!({"password": f.get("password")}));
            let done = approvals::approve(State(state), v.caller.clone(), Path(id), body).await;
            back(
                here,
                done.map(|Json(r)| format!("Approved: the request is {}", r.status)),
            )
        }
        Some("deny") => {
            let body = bytes(serde_json::json!({"reason": f.get("reason")}));
            let done = approvals::deny(State(state), v.caller.clone(), Path(id), body).await;
            back(here, done.map(|_| "Denied".to_string()))
        }
        Some("withdraw") => {
            let done = approvals::withdraw(State(state), v.caller.clone(), Path(id)).await;
            back(here, done.map(|_| "Withdrawn".to_string()))
        }
        Some("result") => match approvals::result(State(state), v.caller.clone(), Path(id)).await {
            Ok(Json(r)) => {
                let text = serde_json::to_string_pretty(&r.body).unwrap_or_default();
                let body = html! {
                    p .notice role="status" data-testid="notice" { "The operation answered " (r.status) ", shown this once." }
                    pre data-testid="approval-result" { (text) }
                    p { a href=(here) { "Back to the requests" } }
                };
                page(&v, "Result", "approvals", &Flash::default(), body)
            }
            Err(e) => back(here, Err(e)),
        },
        _ => back(here, Err(ApiError::bad("unknown change"))),
    }
}

async fn policy_page(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    v: Viewer,
    Query(f): Query<Flash>,
) -> Response {
    let g = match groups::get(State(state.clone()), v.caller.clone(), Path(id.clone())).await {
        Ok(Json(g)) => g,
        Err(e) => return back("/console/groups", Err(e)),
    };
    let people = users::list(State(state), v.caller.clone())
        .await
        .map(|Json(l)| l)
        .unwrap_or_default();
    let current = g.approval_policy.clone();
    let (n, members, require_password) = match current.as_ref().map(|p| &p.policy) {
        Some(QuorumPolicy::Quorum(q)) => (q.n, q.members.clone(), q.require_password),
        Some(one) => (1, vec![one.clone()], false),
        None => (1, vec![], false),
    };
    let named = |id: &str| {
        members
            .iter()
            .any(|m| matches!(m, QuorumPolicy::User(u) if u == id))
    };
    let protects = |p: Protected| {
        current
            .as_ref()
            .is_some_and(|c| c.protect_permissions.contains(&p))
    };
    let body = html! {
        @if current.is_some() {
            p .warn data-testid="policy-in-force" { "A policy is in force: changing or removing it needs its quorum's approval (the form answers with that; ask for it under Approvals)." }
        }
        form method="post" action={ "/console/groups/" (g.group_id) "/approval_policy" } data-testid="approval-policy-form" {
            (csrf_field(&v))
            fieldset {
                legend { "Reviewers" }
                @for u in &people {
                    label { input type="checkbox" name="reviewer" value=(u.user_id) checked[named(&u.user_id)] data-testid="policy-reviewer"; " " (u.user_email) }
                }
            }
            label for="policy-n" { "How many must approve" }
            input id="policy-n" name="n" type="number" min="1" value=(n) data-testid="policy-n";
            fieldset {
                legend { "What needs approval" }
                @for (p, name, what) in PROTECTED {
                    label { input type="checkbox" name="protect" value=(name) checked[protects(p)] data-testid={ "policy-" (name) }; " " (what) }
                }
                label { input type="checkbox" name="crypto" value="on" checked[current.as_ref().is_some_and(|c| c.protect_crypto_operations)] data-testid="policy-crypto"; " every cryptographic operation with the group's keys" }
            }
            label { input type="checkbox" name="require_password" value="on" checked[require_password]; " Reviewers give their password again to approve" }
            label { input type="checkbox" name="remove" value="on" data-testid="policy-remove"; " No approval policy" }
            button type="submit" data-testid="save-approval-policy" { "Save the approval policy" }
        }
    };
    page(
        &v,
        &format!("{}: approval policy", g.name),
        "groups",
        &f,
        body,
    )
}

async fn save_policy(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    SignedForm {
        viewer: v,
        fields: f,
    }: SignedForm,
) -> Response {
    let here = format!("/console/groups/{id}/approval_policy");
    let policy = if f.ticked("remove") {
        Ok(Removable::Remove)
    } else {
        f.get("n")
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| ApiError::field("n", "a number of reviewers"))
            .and_then(|n| {
                let protect_permissions = f
                    .all("protect")
                    .iter()
                    .map(|name| {
                        PROTECTED
                            .iter()
                            .find(|(_, dsm, _)| dsm == name)
                            .map(|(p, _, _)| *p)
                            .ok_or_else(|| ApiError::field("protect", format!("unknown '{name}'")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Removable::Set(GroupApprovalPolicy {
                    policy: QuorumPolicy::Quorum(Quorum {
                        n,
                        members: f
                            .all("reviewer")
                            .into_iter()
                            .map(QuorumPolicy::User)
                            .collect(),
                        require_password: f.ticked("require_password"),
                    }),
                    protect_permissions,
                    protect_crypto_operations: f.ticked("crypto"),
                    allow_self_approval: f.ticked("allow_self_approval"),
                }))
            })
    };
    let done = match policy {
        Ok(p) => {
            let req = GroupRequest {
                approval_policy: Some(p),
                ..super::group_settings::empty_request()
            };
            groups::update(State(state), v.caller.clone(), Path(id), Body(req)).await
        }
        Err(e) => Err(e),
    };
    back(&here, done.map(|_| "Approval policy saved".to_string()))
}
