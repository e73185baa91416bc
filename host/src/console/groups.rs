//! Console pages of groups: the list with the external-KMS marker, adding a group with its
//! Azure Managed HSM link (test connection fills the instance list), and a group's detail
//! with the HSM/KMS tab (secret masked, editable fields, TLS, test connection, sync with live
//! progress). Each calls the API handler of the same operation.

use std::sync::Arc;

use axum::extract::{Multipart, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::group_settings::policies_tab;
use super::{CsrfForm, Flash, MultipartFields, Viewer, back, csrf_field, page};
use crate::api::extract::Body;
use crate::api::groups::GroupRequest;
use crate::api::links::{ExternalKmsIn, TlsIn};
use crate::api::model::{GroupOut, Removable};
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
    /// Set by the page's script from the chosen instance (STANDARD, PREMIUM, MANAGED).
    #[serde(default)]
    key_vault_type: String,
    #[serde(default)]
    identity_endpoint: String,
    #[serde(default)]
    management_endpoint: String,
    #[serde(default)]
    instance_suffix: String,
    #[serde(default)]
    vault_suffix: String,
    #[serde(default)]
    ca_pem: String,
    /// A checkbox: present when checked.
    validate_hostname: Option<String>,
}

impl LinkFields {
    /// The API's `external_kms` of the form: empty fields left out, so an edit changes only
    /// what was filled in. `tls` as given by `tls` (files and removals of the edit form).
    fn to_api(&self, tls: Option<TlsIn>) -> ExternalKmsIn {
        let opt = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let mut endpoints = serde_json::Map::new();
        for (k, v) in [
            ("identity", &self.identity_endpoint),
            ("management", &self.management_endpoint),
            ("instance_suffix", &self.instance_suffix),
            ("vault_suffix", &self.vault_suffix),
        ] {
            if let Some(v) = opt(v) {
                endpoints.insert(k.to_string(), Value::String(v));
            }
        }
        ExternalKmsIn {
            kind: "AzureManagedHsm".into(),
            tenant_id: opt(&self.tenant_id),
            client_id: opt(&self.client_id),
            client_secret: opt(&self.client_secret),
            subscription_id: opt(&self.subscription_id),
            instance: opt(&self.instance),
            // Only with the instance it describes.
            key_vault_type: opt(&self.instance).and(opt(&self.key_vault_type)),
            endpoints: (!endpoints.is_empty()).then_some(Value::Object(endpoints)),
            tls,
        }
    }

    /// TLS of the Add group form: a pasted CA, if any.
    fn pasted_tls(&self) -> Option<TlsIn> {
        let ca = self.ca_pem.trim();
        (!ca.is_empty()).then(|| TlsIn {
            ca_pem: Some(Removable::Set(ca.to_string())),
            client_cert: None,
            client_key: None,
            validate_hostname: Some(self.validate_hostname.is_some()),
        })
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
                        td { @if let Some(l) = &g.external_kms { span .badge data-testid="external-marker" { "Azure " (l.config.vault_type().label()) } } }
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
            legend { "Link HSM / external KMS: Azure Managed HSM or Key Vault" }
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
                label for="instance_suffix" { "Managed HSM DNS suffix" }
                input id="instance_suffix" name="instance_suffix" data-testid="instance-suffix";
                label for="vault_suffix" { "Key Vault DNS suffix" }
                input id="vault_suffix" name="vault_suffix" data-testid="vault-suffix";
                label for="ca_pem" { "Custom CA (PEM); empty: the public roots" }
                textarea id="ca_pem" name="ca_pem" rows="4" data-testid="ca-pem" {}
                label { input type="checkbox" name="validate_hostname" checked data-testid="validate-hostname"; " Validate host names" }
            }
            button type="button" data-action="test-connection" data-url="/console/groups/check" data-testid="test-connection" { "Test connection" }
            p data-testid="connection-status" aria-live="polite" {}
            label for="instance" { "Managed HSM or Key Vault" }
            select id="instance" name="instance" data-testid="instance" { option value="" { "(test the connection to list them)" } }
            input type="hidden" name="key_vault_type" data-testid="key-vault-type";
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
    let req = GroupRequest {
        name: Some(g.name.clone()),
        description: Some(g.description.trim().to_string()).filter(|d| !d.is_empty()),
        cryptographic_policy: None,
        key_metadata_policy: None,
        custom_policies: None,
        external_kms: g
            .link
            .is_some()
            .then(|| Removable::Set(g.fields.to_api(g.fields.pasted_tls()))),
        user_export: None,
        approval_policy: None,
    };
    let made = groups::create(State(state), v.caller.clone(), Body(req)).await;
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
    let cfg = fields.to_api(fields.pasted_tls());
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
    let g: GroupOut = match groups::get(State(state.clone()), v.caller.clone(), Path(id)).await {
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
            a href={ "?tab=policies" } aria-current=[(tab == "policies").then_some("page")] data-testid="tab-policies" { "Settings and policies" }
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
                    dt { "Instance" } dd data-testid="instance" { (link.config.instance.as_deref().unwrap_or("")) }
                    dt { "Kind" } dd data-testid="vault-type" { @if link.config.instance.is_some() { (link.config.vault_type().label()) } }
                    dt { "Client secret" } dd data-testid="secret-masked" { @if link.config.has_client_secret { "•••••••• (stored sealed; never shown)" } @else { "none" } }
                }
                form method="post" action={ "/console/groups/" (g.group_id) "/link" } enctype="multipart/form-data" data-testid="link-form" {
                    (csrf_field(&v))
                    label for="tenant_id" { "Tenant ID" }
                    input id="tenant_id" name="tenant_id" value=(link.config.tenant_id.as_deref().unwrap_or("")) data-testid="tenant-id";
                    label for="client_id" { "Client ID" }
                    input id="client_id" name="client_id" value=(link.config.client_id.as_deref().unwrap_or("")) data-testid="client-id";
                    label for="client_secret" { "New client secret (empty: keep the stored one)" }
                    input id="client_secret" name="client_secret" type="password" autocomplete="off" data-testid="client-secret";
                    label for="subscription_id" { "Subscription ID" }
                    input id="subscription_id" name="subscription_id" value=(link.config.subscription_id.as_deref().unwrap_or("")) data-testid="subscription-id";
                    @let tls = link.config.tls.as_ref();
                    fieldset data-testid="tls-settings" {
                        legend { "TLS" }
                        p data-testid="tls-trust" { @if tls.and_then(|t| t.ca_pem.as_ref()).is_some() { "Trusts a custom CA." } @else { "Trusts the public roots." } }
                        label for="ca_pem" { "Custom CA (PEM): paste it, or upload the file below; empty: as it is" }
                        textarea id="ca_pem" name="ca_pem" rows="4" data-testid="ca-pem" {}
                        input name="ca_file" type="file" accept=".pem,.crt,.cer" aria-label="CA file" data-testid="ca-file";
                        label { input type="checkbox" name="public_roots" value="on" data-testid="public-roots"; " Trust the public roots again (remove the custom CA)" }
                        p data-testid="client-cert-state" { @if tls.and_then(|t| t.client_cert.as_ref()).is_some() { "A client certificate is set (its key is stored sealed)." } @else { "No client certificate." } }
                        label for="client_cert" { "Client certificate (PEM file)" }
                        input id="client_cert" name="client_cert" type="file" data-testid="client-cert-file";
                        label for="client_key" { "Its private key (PEM file)" }
                        input id="client_key" name="client_key" type="file" data-testid="client-key-file";
                        label { input type="checkbox" name="remove_client_cert" value="on" data-testid="remove-client-cert"; " Remove the client certificate" }
                        label { input type="checkbox" name="validate_hostname" value="on" checked[tls.is_none_or(|t| t.validate_hostname)]; " Validate host names" }
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
        } @else if tab == "policies" {
            (policies_tab(&state, &v, &g))
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

/// The TLS part of the link edit form: pasted or uploaded CA, the public roots again, a
/// client certificate and key from files, or their removal.
fn tls_edit(f: &MultipartFields) -> Result<TlsIn, ApiError> {
    let pasted = f.text("ca_pem");
    let uploaded = f.file_text("ca_file")?;
    let ca_pem = match (f.ticked("public_roots"), pasted.is_empty(), uploaded) {
        (true, _, _) => Some(Removable::Remove),
        (false, _, Some(file)) => Some(Removable::Set(file)),
        (false, false, None) => Some(Removable::Set(pasted)),
        (false, true, None) => None,
    };
    let cert = f.file_text("client_cert")?;
    let key = f.file_text("client_key")?;
    let client_cert = if f.ticked("remove_client_cert") {
        Some(Removable::Remove)
    } else {
        cert.map(Removable::Set)
    };
    Ok(TlsIn {
        ca_pem,
        client_cert,
        client_key: key,
        validate_hostname: Some(f.ticked("validate_hostname")),
    })
}

async fn save_link(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Path(id): Path<String>,
    form: Multipart,
) -> Response {
    let to = format!("/console/groups/{id}?tab=hsm");
    let f = match MultipartFields::read(form).await {
        Ok(f) => f,
        Err(e) => return back(&to, Err(e)),
    };
    if let Err(r) = v.check(&f.text("csrf")) {
        return r.into_response();
    }
    let fields = LinkFields {
        tenant_id: f.text("tenant_id"),
        client_id: f.text("client_id"),
        client_secret: f.text("client_secret"),
        subscription_id: f.text("subscription_id"),
        ..LinkFields::default()
    };
    let done = match tls_edit(&f) {
        Ok(tls) => {
            let req = GroupRequest {
                name: None,
                description: None,
                cryptographic_policy: None,
                key_metadata_policy: None,
                custom_policies: None,
                external_kms: Some(Removable::Set(fields.to_api(Some(tls)))),
                user_export: None,
                approval_policy: None,
            };
            groups::update(State(state), v.caller.clone(), Path(id), Body(req)).await
        }
        Err(e) => Err(e),
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
