//! Quorum approval in the console: the queue of approval requests (approve or deny those
//! waiting for you, read the result of your own or withdraw it), and a group's or the
//! account's approval policy as a form (reviewers, how many must approve, what they
//! protect; for the account, how long requests wait). Everything goes through the API's
//! handlers.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use maud::{Markup, html};

use crate::api::accounts::{self, AccountRequest};
use crate::api::approvals::{self, ApprovalRequestOut, ListQuery};
use crate::api::extract::Body;
use crate::api::groups::{self, GroupRequest};
use crate::api::model::{Removable, UserOut};
use crate::api::{ApiError, users};
use crate::catalog::approvals::{
    AccountApprovalPolicy, GroupApprovalPolicy, Protected, Quorum, QuorumPolicy, Reviewer,
};
use crate::console::FormFields;

use super::{Flash, SignedForm, Viewer, back, csrf_field, page};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/approvals", get(queue))
        .route("/console/approvals/{id}", axum::routing::post(decide))
        .route(
            "/console/groups/{id}/approval_policy",
            get(policy_page).post(save_policy),
        )
        .route(
            "/console/account/approval_policy",
            get(account_policy_page).post(save_account_policy),
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
    let protects = |p: Protected| {
        current
            .as_ref()
            .is_some_and(|c| c.protect_permissions.contains(&p))
    };
    let body = html! {
        @if current.is_some() { (in_force()) }
        form method="post" action={ "/console/groups/" (g.group_id) "/approval_policy" } data-testid="approval-policy-form" {
            (csrf_field(&v))
            (quorum_fields(&people, current.as_ref().map(|c| (&c.policy, c.allow_self_approval))))
            fieldset {
                legend { "What needs approval" }
                @for (p, name, what) in PROTECTED {
                    label { input type="checkbox" name="protect" value=(name) checked[protects(p)] data-testid={ "policy-" (name) }; " " (what) }
                }
                label { input type="checkbox" name="crypto" value="on" checked[current.as_ref().is_some_and(|c| c.protect_crypto_operations)] data-testid="policy-crypto"; " every cryptographic operation with the group's keys" }
            }
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
        quorum_from(&f).and_then(|policy| {
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
                policy,
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

/// Says that a policy is in force and what that means for the form.
fn in_force() -> Markup {
    html! {
        p .warn data-testid="policy-in-force" { "A policy is in force: changing or removing it needs its quorum's approval (the form answers with that; ask for it under Approvals)." }
    }
}

/// The reviewers (the account's users), how many must approve, the password re-check and
/// self-approval, as the policy `current` has them.
fn quorum_fields(people: &[UserOut], current: Option<(&QuorumPolicy, bool)>) -> Markup {
    let (n, members, require_password) = match current.map(|(p, _)| p) {
        Some(QuorumPolicy::Quorum(q)) => (q.n, q.members.clone(), q.require_password),
        Some(one) => (1, vec![one.clone()], false),
        None => (1, vec![], false),
    };
    let named = |id: &str| {
        members
            .iter()
            .any(|m| matches!(m, QuorumPolicy::User(u) if u == id))
    };
    let allow_self = current.is_some_and(|(_, a)| a);
    html! {
        fieldset {
            legend { "Reviewers" }
            @for u in people {
                label { input type="checkbox" name="reviewer" value=(u.user_id) checked[named(&u.user_id)] data-testid="policy-reviewer"; " " (u.user_email) }
            }
        }
        label for="policy-n" { "How many must approve" }
        input id="policy-n" name="n" type="number" min="1" value=(n) data-testid="policy-n";
        label { input type="checkbox" name="require_password" value="on" checked[require_password]; " Reviewers give their password again to approve" }
        label { input type="checkbox" name="allow_self_approval" value="on" checked[allow_self] data-testid="policy-self"; " A reviewer's approval counts on their own requests too" }
    }
}

/// The quorum the form's reviewer fields describe.
fn quorum_from(f: &FormFields) -> Result<QuorumPolicy, ApiError> {
    let n = f
        .get("n")
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| ApiError::field("n", "a number of reviewers"))?;
    Ok(QuorumPolicy::Quorum(Quorum {
        n,
        members: f
            .all("reviewer")
            .into_iter()
            .map(QuorumPolicy::User)
            .collect(),
        require_password: f.ticked("require_password"),
    }))
}

/// What an account's policy protects, as the form names it.
const ACCOUNT_PROTECTED: [(&str, &str); 4] = [
    ("manage_groups", "create and delete groups"),
    (
        "protect_authentication_methods",
        "give applications new credentials (API keys, certificates)",
    ),
    (
        "protect_cryptographic_policy",
        "change the account's cryptographic policy",
    ),
    (
        "protect_logging_config",
        "add, change or remove notification endpoints",
    ),
];

async fn account_policy_page(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Query(f): Query<Flash>,
) -> Response {
    let acct = v.caller.account().to_string();
    let a = match accounts::get(State(state.clone()), v.caller.clone(), Path(acct)).await {
        Ok(Json(a)) => a,
        Err(e) => return back("/console/accounts", Err(e)),
    };
    let people = users::list(State(state), v.caller.clone())
        .await
        .map(|Json(l)| l)
        .unwrap_or_default();
    let current = a.approval_policy.clone();
    let protects = |field: &str| {
        current.as_ref().is_some_and(|c| match field {
            "manage_groups" => c.manage_groups,
            "protect_authentication_methods" => c.protect_authentication_methods,
            "protect_cryptographic_policy" => c.protect_cryptographic_policy,
            _ => c.protect_logging_config,
        })
    };
    let body = html! {
        @if current.is_some() { (in_force()) }
        form method="post" action="/console/account/approval_policy" data-testid="account-policy-form" {
            (csrf_field(&v))
            (quorum_fields(&people, current.as_ref().map(|c| (&c.policy, c.allow_self_approval))))
            fieldset {
                legend { "What needs approval" }
                @for (field, what) in ACCOUNT_PROTECTED {
                    label { input type="checkbox" name="protect" value=(field) checked[protects(field)] data-testid={ "policy-" (field) }; " " (what) }
                }
                p { "Changing or removing this policy, the request expiry, and deleting the account always need it." }
            }
            label for="policy-expiry" { "Requests wait (hours)" }
            input id="policy-expiry" name="expiry_hours" type="number" min="1" max="8760" value=(a.approval_request_expiry / 3600) data-testid="policy-expiry";
            label { input type="checkbox" name="remove" value="on" data-testid="policy-remove"; " No approval policy" }
            button type="submit" data-testid="save-account-policy" { "Save the account's approval policy" }
        }
    };
    page(
        &v,
        &format!("{}: approval policy", a.name),
        "accounts",
        &f,
        body,
    )
}

async fn save_account_policy(
    State(state): State<Arc<AppState>>,
    SignedForm {
        viewer: v,
        fields: f,
    }: SignedForm,
) -> Response {
    let here = "/console/account/approval_policy";
    let acct = v.caller.account().to_string();
    let current =
        match accounts::get(State(state.clone()), v.caller.clone(), Path(acct.clone())).await {
            Ok(Json(a)) => a,
            Err(e) => return back(here, Err(e)),
        };
    let expiry = match f.get("expiry_hours").map(|h| h.parse::<i64>()) {
        Some(Ok(h)) => Some(h * 3600).filter(|e| *e != current.approval_request_expiry),
        Some(Err(_)) => {
            return back(
                here,
                Err(ApiError::field("expiry_hours", "a number of hours")),
            );
        }
        None => None,
    };
    let policy = if f.ticked("remove") {
        Ok(current
            .approval_policy
            .is_some()
            .then_some(Removable::Remove))
    } else {
        quorum_from(&f).map(|policy| {
            let on = f.all("protect");
            let ticked = |field: &str| on.iter().any(|p| p == field);
            let p = AccountApprovalPolicy {
                policy,
                manage_groups: ticked("manage_groups"),
                protect_authentication_methods: ticked("protect_authentication_methods"),
                protect_cryptographic_policy: ticked("protect_cryptographic_policy"),
                protect_logging_config: ticked("protect_logging_config"),
                allow_self_approval: f.ticked("allow_self_approval"),
            };
            // Unchanged, it is left out: the expiry alone may change.
            (current.approval_policy.as_ref() != Some(&p)).then_some(Removable::Set(p))
        })
    };
    let done = match policy {
        Ok(approval_policy) => {
            let req = AccountRequest {
                name: None,
                description: None,
                cryptographic_policy: None,
                approval_policy,
                approval_request_expiry: expiry,
            };
            accounts::update(State(state), v.caller.clone(), Path(acct), Body(req)).await
        }
        Err(e) => Err(e),
    };
    back(here, done.map(|_| "Approval policy saved".to_string()))
}
