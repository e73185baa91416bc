//! Console pages of groups: the list with the external-KMS marker, adding a group with its
//! Azure Managed HSM link (test connection fills the instance list), and a group's detail
//! with the HSM/KMS tab (secret masked, editable fields, TLS, test connection, sync with live
//! progress). Each calls the API handler of the same operation.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use maud::html;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CsrfForm, Flash, Viewer, back, blank_is_none, csrf_field, page};
use crate::api::extract::Body;
use crate::api::model::GroupOut;
use crate::api::{ApiError, AppState, groups, hmg};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/groups", get(list).post(create))
        .route("/console/groups/new", get(new))
        .route("/console/groups/check", post(check_new))
        .route("/console/groups/{id}", get(detail))
        .route("/console/groups/{id}/link", post(save_link))
        .route("/console/groups/{id}/check", post(check))
        .route("/console/groups/{id}/sync", post(sync))
        .route("/console/groups/{id}/scans/{scan}", get(scan))
}

/// The form's link fields, as the API's `external_kms` (empty fields left out).
#[derive(Debug, Default, Deserialize)]
pub struct LinkFields {
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    subscription_id: String,
    #[serde(default)]
    instance: String,
    #[serde(default)]
    identity_endpoint: String,
    #[serde(default)]
    management_endpoint: String,
    #[serde(default)]
    instance_suffix: String,
    #[serde(default)]
    ca_pem: String,
    /// A checkbox: present when checked.
    validate_hostname: Option<String>,
}

impl LinkFields {
    fn to_api(&self, new: bool) -> Value {
        let mut link = json!({"kind": "AzureManagedHsm"});
        for (k, v) in [
            ("tenant_id", &self.tenant_id),
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
            ("subscription_id", &self.subscription_id),
            ("instance", &self.instance),
        ] {
            if !blank_is_none(v).is_null() {
                link[k] = blank_is_none(v);
            }
        }
        let endpoints = json!({"identity": blank_is_none(&self.identity_endpoint),
            "management": blank_is_none(&self.management_endpoint),
            "instance_suffix": blank_is_none(&self.instance_suffix)});
        if endpoints
            .as_object()
            .is_some_and(|o| o.values().any(|v| !v.is_null()))
        {
            link["endpoints"] = endpoints;
        }
        if !self.ca_pem.trim().is_empty() || !new {
            link["tls"] = json!({"ca_pem": blank_is_none(&self.ca_pem),
                "validate_hostname": self.validate_hostname.is_some()});
        }
        link
    }
}

async fn list(State(state): State<Arc<AppState>>, v: Viewer, Query(f): Query<Flash>) -> Response {
    let groups = match groups::list(State(state), v.caller.clone()).await {
        Ok(Json(g)) => g,
        Err(e) => return back("/console/keys", Err(e)),
    };
    let body = html! {
        p { a .button href="/console/groups/new" data-testid="add-group" { "Add group" } }
        table data-testid="groups-table" {
            thead { tr { th { "Name" } th { "External KMS" } th { "Connection" } th { "Your role" } } }
            tbody {
                @for g in &groups {
                    tr data-testid="group-row" {
                        td { a href={ "/console/groups/" (g.group_id) } { (g.name) } }
                        td { @if g.is_external { span .badge data-testid="external-marker" { "Azure Managed HSM" } } }
                        td data-testid="group-connection" { (g.connection_status.as_deref().unwrap_or("")) }
                        td { (g.role.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    };
    page(&v, "Groups", "groups", &f, body)
}

fn link_fields() -> maud::Markup {
    html! {
        fieldset data-testid="link-section" {
            legend { "Link HSM / external KMS: Azure Managed HSM" }
            label for="tenant_id" { "Tenant ID" }
            input id="tenant_id" name="tenant_id" data-testid="tenant-id";
            label for="client_id" { "Client ID" }
            input id="client_id" name="client_id" data-testid="client-id";
            label for="client_secret" { "Client secret" }
            input id="client_secret" name="client_secret" type="password" autocomplete="off" data-testid="client-secret";
            label for="subscription_id" { "Subscription ID" }
            input id="subscription_id" name="subscription_id" data-testid="subscription-id";
            details {
                summary { "Endpoints and TLS (private endpoints, sovereign clouds, proxies)" }
                label for="identity_endpoint" { "Identity endpoint" }
                input id="identity_endpoint" name="identity_endpoint" data-testid="identity-endpoint";
                label for="management_endpoint" { "Management endpoint" }
                input id="management_endpoint" name="management_endpoint" data-testid="management-endpoint";
                label for="instance_suffix" { "Instance DNS suffix" }
                input id="instance_suffix" name="instance_suffix" data-testid="instance-suffix";
                label for="ca_pem" { "Custom CA (PEM); empty: the public roots" }
                textarea id="ca_pem" name="ca_pem" rows="4" data-testid="ca-pem" {}
                label { input type="checkbox" name="validate_hostname" checked data-testid="validate-hostname"; " Validate host names" }
            }
            button type="button" data-action="test-connection" data-url="/console/groups/check" data-testid="test-connection" { "Test connection" }
            p data-testid="connection-status" aria-live="polite" {}
            label for="instance" { "Managed HSM" }
            select id="instance" name="instance" data-testid="instance" { option value="" { "(test the connection to list them)" } }
        }
    }
}

async fn new(v: Viewer, Query(f): Query<Flash>) -> Response {
    let body = html! {
        form method="post" action="/console/groups" data-testid="group-form" {
            (csrf_field(&v))
            label for="name" { "Name" }
            input id="name" name="name" required data-testid="group-name";
            label for="description" { "Description" }
            input id="description" name="description" data-testid="group-description";
            label { input type="checkbox" name="link" value="on" data-testid="link-hsm"; " Link HSM / external KMS" }
            (link_fields())
            button type="submit" data-testid="save-group" { "Save" }
        }
    };
    page(&v, "Add group", "groups", &f, body)
}

#[derive(Deserialize)]
struct NewGroup {
    csrf: String,
    name: String,
    #[serde(default)]
    description: String,
    link: Option<String>,
    #[serde(flatten)]
    fields: LinkFields,
}

async fn create(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Form(g): Form<NewGroup>,
) -> Response {
    if let Err(r) = v.check(&g.csrf) {
        return r.into_response();
    }
    let mut req = json!({"name": g.name, "description": blank_is_none(&g.description)});
    if g.link.is_some() {
        req["external_kms"] = g.fields.to_api(true);
    }
    let made = match serde_json::from_value(req) {
        Ok(r) => groups::create(State(state), v.caller.clone(), Body(r)).await,
        Err(e) => Err(ApiError::bad(e.to_string())),
    };
    match made {
        Ok((_, Json(g))) => back(
            &format!("/console/groups/{}?tab=hsm", g.group_id),
            Ok(format!("Group {} created", g.name)),
        ),
        Err(e) => back("/console/groups/new", Err(e)),
    }
}

/// Test connection of the Add group form (the script sends the form's fields).
async fn check_new(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    headers: HeaderMap,
    Json(fields): Json<LinkFields>,
) -> Response {
    if let Err(r) = v.check_header(&headers) {
        return r.into_response();
    }
    let cfg = match serde_json::from_value(fields.to_api(true)) {
        Ok(c) => c,
        Err(e) => return ApiError::bad(e.to_string()).into_response(),
    };
    match hmg::check_config(State(state), v.caller.clone(), Body(cfg)).await {
        Ok(status) => status.into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize, Default)]
struct DetailQuery {
    tab: Option<String>,
    #[serde(flatten)]
    flash: Flash,
}

async fn detail(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Response {
    let g: GroupOut = match groups::get(State(state), v.caller.clone(), Path(id)).await {
        Ok(Json(g)) => g,
        Err(e) => return back("/console/groups", Err(e)),
    };
    let tab = q
        .tab
        .as_deref()
        .unwrap_or(if g.is_external { "hsm" } else { "info" });
    let body = html! {
        nav .tabs aria-label="Group" {
            a href={ "?tab=info" } aria-current=[(tab == "info").then_some("page")] data-testid="tab-info" { "Info" }
            @if g.is_external {
                a href={ "?tab=hsm" } aria-current=[(tab == "hsm").then_some("page")] data-testid="tab-hsm" { "HSM/KMS" }
            }
            a href={ "/console/keys?group_id=" (g.group_id) } data-testid="tab-keys" { "Security objects" }
        }
        @if tab == "hsm" && let Some(link) = &g.external_kms {
            section data-testid="hsm-tab" {
                dl {
                    dt { "Connection" }
                    dd data-testid="connection-status" {
                        @match &link.config.connection {
                            Some(c) => { (c.status) @if let Some(r) = &c.reason { " — " (r) } }
                            None => { "not tested yet" }
                        }
                    }
                    dt { "Tenant ID" } dd { (link.config.tenant_id.as_deref().unwrap_or("")) }
                    dt { "Subscription ID" } dd { (link.config.subscription_id.as_deref().unwrap_or("")) }
                    dt { "Managed HSM" } dd data-testid="instance" { (link.config.instance.as_deref().unwrap_or("")) }
                    dt { "Client secret" } dd data-testid="secret-masked" { @if link.config.has_client_secret { "•••••••• (stored sealed; never shown)" } @else { "none" } }
                }
                form method="post" action={ "/console/groups/" (g.group_id) "/link" } data-testid="link-form" {
                    (csrf_field(&v))
                    label for="client_id" { "Client ID" }
                    input id="client_id" name="client_id" value=(link.config.client_id.as_deref().unwrap_or("")) data-testid="client-id";
                    label for="client_secret" { "New client secret (empty: keep the stored one)" }
                    input id="client_secret" name="client_secret" type="password" autocomplete="off" data-testid="client-secret";
                    fieldset {
                        legend { "TLS" }
                        label for="ca_pem" { "Custom CA (PEM); empty: the public roots" }
                        textarea id="ca_pem" name="ca_pem" rows="4" data-testid="ca-pem" {
                            (link.config.tls.as_ref().and_then(|t| t.ca_pem.as_deref()).unwrap_or(""))
                        }
                        label { input type="checkbox" name="validate_hostname" checked[link.config.tls.as_ref().is_none_or(|t| t.validate_hostname)]; " Validate host names" }
                    }
                    button type="submit" data-testid="save-link" { "Save" }
                }
                form method="post" action={ "/console/groups/" (g.group_id) "/check" } {
                    (csrf_field(&v))
                    button type="submit" data-testid="test-connection" { "Test connection" }
                }
                p {
                    button type="button" data-action="sync" data-url={ "/console/groups/" (g.group_id) } data-testid="sync-keys" { "Sync keys" }
                }
                p data-testid="sync-progress" aria-live="polite" {}
            }
        } @else {
            dl data-testid="info-tab" {
                dt { "Name" } dd data-testid="group-name" { (g.name) }
                dt { "Description" } dd { (g.description.as_deref().unwrap_or("")) }
                dt { "Your role" } dd { (g.role.as_deref().unwrap_or("")) }
                dt { "Created" } dd { (g.created_at) }
            }
        }
    };
    page(&v, &g.name, "groups", &q.flash, body)
}

#[derive(Deserialize)]
struct LinkEdit {
    csrf: String,
    #[serde(flatten)]
    fields: LinkFields,
}

async fn save_link(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Path(id): Path<String>,
    Form(f): Form<LinkEdit>,
) -> Response {
    if let Err(r) = v.check(&f.csrf) {
        return r.into_response();
    }
    let to = format!("/console/groups/{id}?tab=hsm");
    let req = json!({"external_kms": f.fields.to_api(false)});
    let done = match serde_json::from_value(req) {
        Ok(r) => groups::update(State(state), v.caller.clone(), Path(id), Body(r)).await,
        Err(e) => Err(ApiError::bad(e.to_string())),
    };
    back(&to, done.map(|_| "Link saved".to_string()))
}

async fn check(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = v.check(&f.csrf) {
        return r.into_response();
    }
    let to = format!("/console/groups/{id}?tab=hsm");
    match hmg::check_group(State(state), v.caller.clone(), Path(id), Default::default()).await {
        Ok(Json(s)) if s.status == "Connected" => back(&to, Ok("Connected".into())),
        Ok(Json(s)) => back(
            &to,
            Err(ApiError::Conflict(format!(
                "Not Connected: {}",
                s.reason.unwrap_or_default()
            ))),
        ),
        Err(e) => back(&to, Err(e)),
    }
}

/// Starts a sync (the script then follows its progress).
async fn sync(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = v.check_header(&headers) {
        return r.into_response();
    }
    match hmg::start_scan(State(state), v.caller.clone(), Path(id)).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn scan(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Path((id, scan)): Path<(String, String)>,
) -> Response {
    match hmg::get_scan(State(state), v.caller.clone(), Path((id, scan))).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}
