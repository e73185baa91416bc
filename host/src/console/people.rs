//! Console pages of who may act: accounts (list, create, switch the session to another),
//! users (invite, account role, group roles, remove; "You" marked) and applications (create
//! with per-group permissions, edit them, reset the secret and read the credential — both
//! shown once, on the page that answers the form, never in a URL — and delete). Each form
//! builds the API's request type and calls the API's handler.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use maud::{Markup, html};

use super::keys::{group_label, group_names};
use super::{Flash, FormFields, SignedForm, Viewer, back, csrf_field, page};
use crate::api::accounts::AccountRequest;
use crate::api::apps::{AppRequest, CredentialIn, SubjectGeneralIn, TrustedCaIn};
use crate::api::extract::Body;
use crate::api::model::{AppOut, GroupOut, Permission};
use crate::api::session::SelectAccount;
use crate::api::users::{Invite, RoleIn, UserUpdate};
use crate::api::{ApiError, AppState, accounts, apps, session, users};
use crate::catalog::apps::AppPermission;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/accounts", get(account_list).post(account_create))
        .route("/console/accounts/switch", post(account_switch))
        .route("/console/users", get(user_list).post(user_invite))
        .route("/console/users/{id}", post(user_edit))
        .route("/console/apps", get(app_list).post(app_create))
        .route("/console/apps/{id}", get(app_detail).post(app_edit))
}

fn empty_app_request() -> AppRequest {
    AppRequest {
        name: None,
        description: None,
        groups: None,
        add_groups: None,
        mod_groups: None,
        del_groups: None,
        default_group: None,
        enabled: None,
        credential: None,
    }
}

// ---- accounts ----

async fn account_list(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Query(f): Query<Flash>,
) -> Response {
    let list = accounts::list(State(state), v.caller.clone())
        .await
        .map(|Json(l)| l)
        .unwrap_or_default();
    let current = v.caller.account().to_string();
    let body = html! {
        table data-testid="accounts-table" {
            thead { tr { th { "Account" } th { "Your role" } th { "Created" } th {} } }
            tbody { @for a in &list {
                tr data-testid="account-row" {
                    td { (a.name) }
                    td { (a.role.clone().unwrap_or_default()) }
                    td { (a.created_at) }
                    td { @if a.acct_id == current {
                        span .badge data-testid="current-account" { "Current" }
                        " "
                        a href="/console/account/approval_policy" data-testid="account-approval-policy" { "Approval policy" }
                    } @else {
                        form method="post" action="/console/accounts/switch" {
                            (csrf_field(&v))
                            input type="hidden" name="acct_id" value=(a.acct_id);
                            button type="submit" data-testid={ "switch-" (a.name) } { "Switch to it" }
                        }
                    } }
                }
            } }
        }
        h2 { "Create an account" }
        form method="post" action="/console/accounts" data-testid="account-form" {
            (csrf_field(&v))
            label for="acct-name" { "Name" }
            input id="acct-name" name="name" required maxlength="256" data-testid="account-name";
            label for="acct-description" { "Description" }
            input id="acct-description" name="description" data-testid="account-description";
            button type="submit" data-testid="save-account" { "Create" }
        }
    };
    page(&v, "Accounts", "accounts", &f, body)
}

async fn account_create(
    State(state): State<Arc<AppState>>,
    SignedForm {
        viewer: v,
        fields: f,
    }: SignedForm,
) -> Response {
    let req = AccountRequest {
        name: f.get("name"),
        description: f.get("description"),
        cryptographic_policy: None,
        approval_policy: None,
        approval_request_expiry: None,
    };
    let done = accounts::create(State(state), v.caller.clone(), Body(req)).await;
    back(
        "/console/accounts",
        done.map(|(_, Json(a))| format!("Account {} created; you administer it", a.name)),
    )
}

/// Moves the console's session to another of the user's accounts (the API's own call).
async fn account_switch(
    State(state): State<Arc<AppState>>,
    SignedForm {
        viewer: v,
        fields: f,
    }: SignedForm,
) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(h) = HeaderValue::from_str(&format!("Bearer {}", v.caller.token)) {
        headers.insert(axum::http::header::AUTHORIZATION, h);
    }
    let req = SelectAccount {
        acct_id: f.get("acct_id").unwrap_or_default(),
    };
    match session::select_account(State(state), headers, Body(req)).await {
        Ok(_) => back("/console/dashboard", Ok("Switched account".into())),
        Err(e) => back("/console/accounts", Err(e)),
    }
}

// ---- users ----

fn group_role_select(name: &str, testid: &str) -> Markup {
    html! {
        select name=(name) data-testid=(testid) aria-label="Group role" {
            option value="administrator" { "administrator" }
            option value="auditor" { "auditor" }
        }
    }
}

fn role_name(flags: &[&str]) -> &'static str {
    if flags.contains(&"ACCOUNTADMINISTRATOR") {
        "administrator"
    } else if flags.contains(&"ACCOUNTAUDITOR") {
        "auditor"
    } else {
        "member"
    }
}

async fn user_list(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Query(f): Query<Flash>,
) -> Response {
    let list = match users::list(State(state.clone()), v.caller.clone()).await {
        Ok(Json(l)) => l,
        Err(e) => {
            return page(
                &v,
                "Users",
                "users",
                &Flash {
                    notice: None,
                    error: Some(e.to_string()),
                },
                html! {},
            );
        }
    };
    let groups = group_names(&state, &v).await;
    let me = v.caller.principal().id().to_string();
    let admin = v.is_admin();
    let body = html! {
        table data-testid="users-table" {
            thead { tr { th { "User" } th { "Account role" } th { "Groups" } @if admin { th { "Change" } } } }
            tbody { @for u in &list {
                tr data-testid="user-row" data-email=(u.user_email) {
                    td { (u.user_email) @if u.user_id == me { " " span .badge data-testid="you" { "You" } } }
                    td data-testid="user-role" { (role_name(&u.account_role)) }
                    td { ul { @for (gid, role) in &u.groups {
                        @let g = groups.iter().find(|g| &g.group_id == gid);
                        li data-testid="user-group" { (group_label(&groups, gid)) " (" (role) ")"
                            @if let Some(c) = g.and_then(|g| g.connection_status.clone()) { " — " (c) } }
                    } } }
                    @if admin { td {
                        form method="post" action={ "/console/users/" (u.user_id) } .action {
                            (csrf_field(&v))
                            input type="hidden" name="op" value="role";
                            select name="account_role" data-testid="user-role-select" aria-label="Account role" {
                                @for r in ["administrator", "member", "auditor"] { option value=(r) selected[role_name(&u.account_role) == r] { (r) } }
                            }
                            button type="submit" data-testid="user-role-save" { "Set role" }
                        }
                        form method="post" action={ "/console/users/" (u.user_id) } .action {
                            (csrf_field(&v))
                            input type="hidden" name="op" value="group";
                            (group_select(&groups, "group_id", "user-group-select"))
                            (group_role_select("group_role", "user-group-role"))
                            button type="submit" data-testid="user-group-add" { "Give group role" }
                        }
                        @if !u.groups.is_empty() {
                            form method="post" action={ "/console/users/" (u.user_id) } .action {
                                (csrf_field(&v))
                                input type="hidden" name="op" value="ungroup";
                                select name="group_id" data-testid="user-ungroup-select" aria-label="Group" {
                                    @for gid in u.groups.keys() { option value=(gid) { (group_label(&groups, gid)) } }
                                }
                                button type="submit" data-testid="user-group-remove" { "Take group role away" }
                            }
                        }
                        @if u.user_id != me {
                            form method="post" action={ "/console/users/" (u.user_id) } .action {
                                (csrf_field(&v))
                                input type="hidden" name="op" value="remove";
                                button type="submit" data-testid="user-remove" { "Remove from account" }
                            }
                        }
                    } }
                }
            } }
        }
        @if admin {
            h2 { "Invite a user" }
            form method="post" action="/console/users" data-testid="invite-form" {
                (csrf_field(&v))
                label for="inv-email" { "Email" }
                input id="inv-email" name="user_email" type="email" required data-testid="invite-email";
                label for="inv-password" { "First password (for someone new to Keyward; they change it)" }
                input id="inv-password" name="user_password" type="password" autocomplete="new-password" data-testid="invite-password";
                label for="inv-role" { "Account role" }
                select id="inv-role" name="account_role" data-testid="invite-role" {
                    @for r in ["member", "administrator", "auditor"] { option value=(r) { (r) } }
                }
                label for="inv-group" { "Group role (optional)" }
                select id="inv-group" name="group_id" data-testid="invite-group" {
                    option value="" { "—" }
                    @for g in &groups { option value=(g.group_id) { (g.name) } }
                }
                (group_role_select("group_role", "invite-group-role"))
                button type="submit" data-testid="save-invite" { "Invite" }
            }
        }
    };
    page(&v, "Users", "users", &f, body)
}

fn group_select(groups: &[GroupOut], name: &str, testid: &str) -> Markup {
    html! {
        select name=(name) data-testid=(testid) aria-label="Group" {
            @for g in groups { option value=(g.group_id) { (g.name) } }
        }
    }
}

async fn user_invite(
    State(state): State<Arc<AppState>>,
    SignedForm {
        viewer: v,
        fields: f,
    }: SignedForm,
) -> Response {
    let mut groups = BTreeMap::new();
    if let Some(g) = f.get("group_id") {
        groups.insert(g, f.get("group_role").unwrap_or_else(|| "auditor".into()));
    }
    let req = Invite {
        user_email: f.get("user_email").unwrap_or_default(),
        user_password: f.get("user_password"),
        first_name: None,
        last_name: None,
        account_role: RoleIn::Name(f.get("account_role").unwrap_or_else(|| "member".into())),
        groups,
    };
    let done = users::invite(State(state), v.caller.clone(), Body(req)).await;
    back(
        "/console/users",
        done.map(|(_, Json(u))| format!("{} invited", u.user_email)),
    )
}

async fn user_edit(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    SignedForm {
        viewer: v,
        fields: f,
    }: SignedForm,
) -> Response {
    let mut req = UserUpdate {
        account_role: None,
        add_groups: BTreeMap::new(),
        del_groups: vec![],
        first_name: None,
        last_name: None,
        user_password: None,
        current_password: None,
    };
    match f.get("op").as_deref() {
        Some("remove") => {
            let done = users::remove(State(state), v.caller.clone(), Path(id)).await;
            return back(
                "/console/users",
                done.map(|_| "User removed from the account".to_string()),
            );
        }
        Some("role") => req.account_role = f.get("account_role").map(RoleIn::Name),
        Some("group") => {
            if let Some(g) = f.get("group_id") {
                req.add_groups
                    .insert(g, f.get("group_role").unwrap_or_else(|| "auditor".into()));
            }
        }
        Some("ungroup") => req.del_groups = f.all("group_id"),
        _ => return back("/console/users", Err(ApiError::bad("unknown change"))),
    }
    let done = users::update(State(state), v.caller.clone(), Path(id), Body(req)).await;
    back(
        "/console/users",
        done.map(|Json(u)| format!("{} updated", u.user_email)),
    )
}

// ---- applications ----

/// Checkboxes of application permissions for one group.
fn permission_boxes(group: &str, checked: &[Permission]) -> Markup {
    html! {
        @for p in AppPermission::ALL {
            label .inline { input type="checkbox" name={ "perm:" (group) } value=(p.as_str())
                checked[checked.iter().any(|c| c.0 == p)] data-testid={ "perm-" (p.as_str()) }; " " (p.as_str()) }
        }
    }
}

/// Group → permissions from `perm:<group>` checkboxes, for the groups in `groups`.
fn permissions_of(
    f: &FormFields,
    groups: &[String],
) -> Result<BTreeMap<String, Vec<Permission>>, ApiError> {
    let mut out = BTreeMap::new();
    for g in groups {
        let ps = f
            .all(&format!("perm:{g}"))
            .iter()
            .map(|p| {
                AppPermission::parse(p).map(Permission).ok_or_else(|| {
                    ApiError::field("permissions", format!("'{p}' is not a permission"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(g.clone(), ps);
    }
    Ok(out)
}

fn app_groups(a: &AppOut, groups: &[GroupOut]) -> Markup {
    html! {
        ul { @for (g, ps) in &a.groups {
            li { (group_label(groups, g)) ": " (ps.iter().map(|p| p.0.as_str()).collect::<Vec<_>>().join(", ")) }
        } }
    }
}

async fn app_list(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Query(f): Query<Flash>,
) -> Response {
    let list = apps::list(State(state.clone()), v.caller.clone())
        .await
        .map(|Json(l)| l)
        .unwrap_or_default();
    let groups = group_names(&state, &v).await;
    let body = html! {
        table data-testid="apps-table" {
            thead { tr { th { "Name" } th { "Groups and permissions" } th { "Logs in with" } th { "Enabled" } } }
            tbody { @for a in &list {
                tr data-testid="app-row" {
                    td { a href={ "/console/apps/" (a.app_id) } { (a.name) } }
                    td { (app_groups(a, &groups)) }
                    td data-testid="app-auth" { (login_label(a)) }
                    td { (a.enabled) }
                }
            } }
        }
        h2 { "Add an application" }
        form method="post" action="/console/apps" data-testid="app-form" {
            (csrf_field(&v))
            label for="app-name" { "Name" }
            input id="app-name" name="name" required maxlength="256" data-testid="app-name";
            label for="app-description" { "Description" }
            input id="app-description" name="description" data-testid="app-description";
            @for g in &groups {
                fieldset data-testid={ "app-group-" (g.name) } {
                    legend { label { input type="checkbox" name="group" value=(g.group_id) data-testid="app-group"; " " (g.name) } }
                    (permission_boxes(&g.group_id, &[]))
                }
            }
            (credential_fields(true))
            button type="submit" data-testid="save-app" { "Add application" }
        }
    };
    page(&v, "Applications", "apps", &f, body)
}

/// How an application logs in, for a table cell.
fn login_label(a: &AppOut) -> String {
    match a.auth_type {
        "Certificate" => "pinned certificate".into(),
        "TrustedCa" => "certificate of a trusted CA".into(),
        _ => "API key".into(),
    }
}

/// The fields of DSM's `AppCredential`: an API key (when `with_secret`), a pinned
/// certificate, or a trusted CA with the subject its certificates name and its CRL.
fn credential_fields(with_secret: bool) -> Markup {
    html! {
        fieldset data-testid="app-credential" {
            legend { "Logs in with" }
            label for="app-auth" { "Credential" }
            select id="app-auth" name="auth" data-testid="app-auth-type" {
                @if with_secret { option value="secret" selected { "API key" } }
                option value="certificate" { "A pinned client certificate" }
                option value="trusted_ca" { "Client certificates of a trusted CA" }
            }
            label for="app-certificate" { "Certificate (PEM): the pinned certificate, or the trusted CA" }
            textarea id="app-certificate" name="certificate" rows="4" data-testid="app-certificate" {}
            label for="app-subject" { "Subject the CA's certificates must carry, one NAME=VALUE a line (CN=billing), or DNS:name" }
            textarea id="app-subject" name="subject" rows="2" data-testid="app-subject" {}
            label for="app-crl" { "The CA's CRL (PEM), checked at every login" }
            textarea id="app-crl" name="crl" rows="3" data-testid="app-crl" {}
            label for="app-crl-url" { "Or where the daemon fetches the CRL" }
            input id="app-crl-url" name="crl_url" type="url" data-testid="app-crl-url";
        }
    }
}

/// The credential the form's fields describe; `None` for an API key.
fn credential_of_form(f: &FormFields) -> Result<Option<CredentialIn>, ApiError> {
    let text = |k: &str| f.get(k).filter(|v| !v.trim().is_empty());
    let certificate = text("certificate");
    match f.get("auth").as_deref() {
        None | Some("secret") => Ok(None),
        Some("certificate") => Ok(Some(CredentialIn {
            certificate: Some(certificate.ok_or_else(|| {
                ApiError::field("certificate", "paste the application's certificate (PEM)")
            })?),
            trustedca: None,
        })),
        Some("trusted_ca") => {
            let subject = text("subject").unwrap_or_default();
            let (pairs, dns): (Vec<Vec<String>>, Option<String>) = match subject
                .trim()
                .strip_prefix("DNS:")
            {
                Some(name) => (vec![], Some(name.trim().to_string())),
                None => (
                    subject
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(|l| {
                            l.split_once('=')
                                .map(|(k, v)| vec![k.trim().to_string(), v.trim().to_string()])
                                .ok_or_else(|| {
                                    ApiError::field("subject", format!("'{l}' is not NAME=VALUE"))
                                })
                        })
                        .collect::<Result<_, _>>()?,
                    None,
                ),
            };
            Ok(Some(CredentialIn {
                certificate: None,
                trustedca: Some(TrustedCaIn {
                    ca_certificate: certificate.ok_or_else(|| {
                        ApiError::field("certificate", "paste the trusted CA's certificate (PEM)")
                    })?,
                    subject: dns.is_none().then_some(pairs),
                    subject_general: dns.map(SubjectGeneralIn::DnsName),
                    crl_url: text("crl_url"),
                    crl: text("crl"),
                }),
            }))
        }
        Some(other) => Err(ApiError::field(
            "auth",
            format!("unknown credential '{other}'"),
        )),
    }
}

/// The page that answers a form with a secret: shown here once, never in a URL.
fn secret_page(v: &Viewer, a: &AppOut, api_key: Option<&str>, what: &str) -> Response {
    let body = html! {
        p .notice role="status" data-testid="notice" { (what) }
        @if let Some(api_key) = api_key {
            p { "The application's API key (" code { "base64(app_id:secret)" } "), shown this once: copy it now." }
            pre data-testid="app-api-key" { (api_key) }
        } @else {
            p { "The application logs in with its client certificate ("
                code { "POST /sys/v1/session/auth" } " with " code { "Basic base64(" (a.app_id) ":)" } ")." }
        }
        p { a href={ "/console/apps/" (a.app_id) } { "Back to " (a.name) } }
    };
    page(v, &a.name, "apps", &Flash::default(), body)
}

async fn app_create(
    State(state): State<Arc<AppState>>,
    SignedForm {
        viewer: v,
        fields: f,
    }: SignedForm,
) -> Response {
    let chosen = f.all("group");
    let req = permissions_of(&f, &chosen).and_then(|perms| {
        Ok(AppRequest {
            name: f.get("name"),
            description: f.get("description"),
            add_groups: Some(perms),
            default_group: chosen.first().cloned(),
            credential: credential_of_form(&f)?,
            ..empty_app_request()
        })
    });
    let made = match req {
        Ok(r) => apps::create(State(state), v.caller.clone(), Body(r)).await,
        Err(e) => Err(e),
    };
    match made {
        Ok((_, Json(a))) => secret_page(
            &v,
            &a.app,
            a.api_key.as_deref(),
            &format!("Application {} created", a.app.name),
        ),
        Err(e) => back("/console/apps", Err(e)),
    }
}

async fn app_detail(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Path(id): Path<String>,
    Query(f): Query<Flash>,
) -> Response {
    let a = match apps::get(State(state.clone()), v.caller.clone(), Path(id)).await {
        Ok(Json(a)) => a,
        Err(e) => return back("/console/apps", Err(e)),
    };
    let groups = group_names(&state, &v).await;
    let button = |op: &str, label: &str| {
        html! {
            form method="post" action={ "/console/apps/" (a.app_id) } .action {
                (csrf_field(&v))
                input type="hidden" name="op" value=(op);
                button type="submit" data-testid={ "app-" (op) } { (label) }
            }
        }
    };
    let body = html! {
        dl data-testid="app-info" {
            dt { "Id" } dd data-testid="app-id" { (a.app_id) }
            dt { "Description" } dd { (a.description.clone().unwrap_or_default()) }
            dt { "Default group" } dd { (a.default_group.as_deref().map(|g| group_label(&groups, g)).unwrap_or_default()) }
            dt { "Groups" } dd data-testid="app-groups" { (app_groups(&a, &groups)) }
            dt { "Logs in with" } dd data-testid="app-auth" { (login_label(&a)) }
            @if let Some(s) = &a.cert_subject { dt { "Certificate" } dd data-testid="app-cert-subject" { (s) } }
            @if let Some(t) = &a.cert_not_after { dt { "Certificate expires" } dd data-testid="app-cert-not-after" { (t) } }
        }
        h2 { "Permissions per group" }
        form method="post" action={ "/console/apps/" (a.app_id) } data-testid="app-permissions-form" {
            (csrf_field(&v))
            input type="hidden" name="op" value="permissions";
            @for g in &groups {
                fieldset data-testid={ "app-group-" (g.name) } {
                    @let has = a.groups.get(&g.group_id);
                    legend { label { input type="checkbox" name="group" value=(g.group_id) checked[has.is_some()] data-testid="app-group"; " " (g.name) } }
                    (permission_boxes(&g.group_id, has.map_or(&[][..], |p| p.as_slice())))
                }
            }
            button type="submit" data-testid="save-permissions" { "Save permissions" }
        }
        section .actions aria-label="Credentials" {
            h2 { "Credentials" }
            @if a.auth_type == "Secret" {
                (button("credential", "Show the API key"))
                (button("reset_secret", "Reset the secret"))
            } @else {
                (button("reset_secret", "Log in with an API key instead"))
            }
            (button("delete", "Delete the application"))
        }
        h2 { "Log in with a client certificate" }
        form method="post" action={ "/console/apps/" (a.app_id) } data-testid="app-certificate-form" {
            (csrf_field(&v))
            input type="hidden" name="op" value="certificate";
            (credential_fields(false))
            button type="submit" data-testid="save-certificate" { "Save the certificate" }
        }
    };
    page(&v, &a.name, "apps", &f, body)
}

async fn app_edit(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    SignedForm {
        viewer: v,
        fields: f,
    }: SignedForm,
) -> Response {
    let here = format!("/console/apps/{id}");
    match f.get("op").as_deref() {
        Some("credential") => {
            match apps::credential(State(state.clone()), v.caller.clone(), Path(id.clone())).await {
                Ok(Json(c)) => match apps::get(State(state), v.caller.clone(), Path(id)).await {
                    Ok(Json(a)) => secret_page(
                        &v,
                        &a,
                        Some(&c.credential.api_key),
                        "The application's API key",
                    ),
                    Err(e) => back(&here, Err(e)),
                },
                Err(e) => back(&here, Err(e)),
            }
        }
        Some("reset_secret") => {
            match apps::reset_secret(State(state), v.caller.clone(), Path(id)).await {
                Ok(Json(a)) => secret_page(
                    &v,
                    &a.app,
                    a.api_key.as_deref(),
                    "Secret reset: the old API key no longer works",
                ),
                Err(e) => back(&here, Err(e)),
            }
        }
        Some("certificate") => {
            let done = match credential_of_form(&f) {
                Ok(credential) => {
                    let r = AppRequest {
                        credential,
                        ..empty_app_request()
                    };
                    apps::update(State(state), v.caller.clone(), Path(id), Body(r)).await
                }
                Err(e) => Err(e),
            };
            back(
                &here,
                done.map(|_| {
                    "The application logs in with this certificate from now on".to_string()
                }),
            )
        }
        Some("delete") => {
            let done = apps::delete(State(state), v.caller.clone(), Path(id)).await;
            back(
                "/console/apps",
                done.map(|_| "Application deleted".to_string()),
            )
        }
        Some("permissions") => {
            let current =
                match apps::get(State(state.clone()), v.caller.clone(), Path(id.clone())).await {
                    Ok(Json(a)) => a,
                    Err(e) => return back(&here, Err(e)),
                };
            let chosen = f.all("group");
            let req = permissions_of(&f, &chosen).map(|perms| {
                let (kept, added): (BTreeMap<_, _>, BTreeMap<_, _>) = perms
                    .into_iter()
                    .partition(|(g, _)| current.groups.contains_key(g));
                let dropped: Vec<String> = current
                    .groups
                    .keys()
                    .filter(|g| !chosen.contains(g))
                    .cloned()
                    .collect();
                AppRequest {
                    add_groups: (!added.is_empty()).then_some(added),
                    mod_groups: (!kept.is_empty()).then_some(kept),
                    del_groups: (!dropped.is_empty()).then_some(dropped),
                    ..empty_app_request()
                }
            });
            let done = match req {
                Ok(r) => apps::update(State(state), v.caller.clone(), Path(id), Body(r)).await,
                Err(e) => Err(e),
            };
            back(&here, done.map(|_| "Permissions saved".to_string()))
        }
        _ => back(&here, Err(ApiError::bad("unknown change"))),
    }
}
