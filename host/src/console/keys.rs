//! Console pages of keys: the security objects table across groups (filters, the external
//! marker), adding a key (generate, or import from a file; in the group's HSM when the group
//! is linked), and a key's detail: tabs Info, Attributes, Azure key details, Key links, Key
//! rotation, with the actions Copy, Rotate, Deactivate, Soft delete, Recover and Delete, each
//! offered only when the key service would take it (`KeyService::actions`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Multipart, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::{Flash, Viewer, back, csrf_field, page};
use crate::api::extract::Body;
use crate::api::model::GroupOut;
use crate::api::{ApiError, AppState, external_keys, groups, keys, rotation};
use crate::keys::{KeyChange, TagEdits};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/keys", get(list).post(create))
        .route("/console/keys/new", get(new))
        .route("/console/keys/{kid}", get(detail))
        .route("/console/keys/{kid}/{action}", post(act))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    group_id: Option<String>,
    name: Option<String>,
    state: Option<String>,
    #[serde(flatten)]
    flash: Flash,
}

async fn group_names(state: &Arc<AppState>, v: &Viewer) -> Vec<GroupOut> {
    groups::list(State(state.clone()), v.caller.clone())
        .await
        .map(|Json(g)| g)
        .unwrap_or_default()
}

fn opt(s: &Option<String>) -> Option<String> {
    s.as_ref().filter(|s| !s.trim().is_empty()).cloned()
}

async fn list(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Query(q): Query<ListQuery>,
) -> Response {
    let groups = group_names(&state, &v).await;
    let query = keys::ListQuery {
        group_id: opt(&q.group_id),
        name: opt(&q.name),
        state: opt(&q.state),
        limit: Some(1000),
        offset: None,
        sort: None,
    };
    let found = keys::list(State(state), v.caller.clone(), Ok(Query(query))).await;
    let (objects, error) = match found {
        Ok((_, Json(o))) => (o, None),
        Err(e) => (vec![], Some(e.to_string())),
    };
    let name_of = |id: &str| {
        groups
            .iter()
            .find(|g| g.group_id == id)
            .map_or(id.to_string(), |g| g.name.clone())
    };
    let body = html! {
        form method="get" action="/console/keys" .filters data-testid="key-filters" {
            label for="f-group" { "Group" }
            select id="f-group" name="group_id" data-testid="filter-group" {
                option value="" { "All groups" }
                @for g in &groups { option value=(g.group_id) selected[q.group_id.as_deref() == Some(g.group_id.as_str())] { (g.name) } }
            }
            label for="f-name" { "Name" }
            input id="f-name" name="name" value=(q.name.clone().unwrap_or_default()) data-testid="filter-name";
            label for="f-state" { "State" }
            select id="f-state" name="state" data-testid="filter-state" {
                option value="" { "Any" }
                @for s in ["PreActive", "Active", "Deactivated", "Compromised", "Destroyed"] {
                    option value=(s) selected[q.state.as_deref() == Some(s)] { (s) }
                }
            }
            button type="submit" { "Filter" }
        }
        @if let Some(e) = error { p .error role="alert" { (e) } }
        p { a .button href="/console/keys/new" data-testid="add-key" { "Add security object" } }
        table data-testid="keys-table" {
            thead { tr { th { "Name" } th { "Type" } th { "State" } th { "Group" } th { "External" } } }
            tbody {
                @for o in &objects {
                    tr data-testid="key-row" {
                        td { a href={ "/console/keys/" (o.kid) } { (o.name) } }
                        td { (o.obj_type) @if let Some(s) = o.key_size { " " (s) } }
                        td data-testid="key-state" { (o.state) }
                        td { (name_of(&o.group_id)) }
                        td { @if let Some(x) = &o.external { span .badge data-testid="external-marker" { "Azure: " (format!("{:?}", x.state)) } } }
                    }
                }
            }
        }
    };
    page(&v, "Security objects", "keys", &q.flash, body)
}

async fn new(State(state): State<Arc<AppState>>, v: Viewer, Query(f): Query<Flash>) -> Response {
    let groups = group_names(&state, &v).await;
    let body = html! {
        form method="post" action="/console/keys" enctype="multipart/form-data" data-testid="key-form" {
            (csrf_field(&v))
            label for="name" { "Name" }
            input id="name" name="name" required data-testid="key-name";
            label for="group_id" { "Group (an HSM object when the group is linked to Azure)" }
            select id="group_id" name="group_id" data-testid="key-group" {
                @for g in &groups {
                    option value=(g.group_id) { (g.name) @if g.is_external { " (Azure Managed HSM)" } }
                }
            }
            label for="obj_type" { "Type" }
            select id="obj_type" name="obj_type" data-testid="key-type" {
                option value="AES" { "AES" } option value="RSA" { "RSA" } option value="EC" { "EC" }
            }
            label for="key_size" { "Size (AES 128/192/256, RSA 2048/3072/4096)" }
            input id="key_size" name="key_size" inputmode="numeric" value="256" data-testid="key-size";
            fieldset {
                legend { "Key material" }
                label { input type="radio" name="source" value="generate" checked data-testid="source-generate"; " Generate (in Azure for an HSM object)" }
                label { input type="radio" name="source" value="import" data-testid="source-import"; " Import from a file" }
                label for="file" { "File" }
                input id="file" name="file" type="file" data-testid="key-file";
                label for="format" { "File format" }
                select id="format" name="format" data-testid="key-file-format" {
                    option value="raw" { "raw bytes (AES) or DER (RSA, EC)" }
                    option value="base64" { "base64" }
                    option value="hex" { "hex" }
                }
            }
            button type="submit" data-testid="save-key" { "Save" }
        }
    };
    page(&v, "Add security object", "keys", &f, body)
}

async fn create(State(state): State<Arc<AppState>>, v: Viewer, mut form: Multipart) -> Response {
    let mut fields: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    loop {
        match form.next_field().await {
            Ok(Some(f)) => {
                let name = f.name().unwrap_or_default().to_string();
                match f.bytes().await {
                    Ok(b) => {
                        fields.insert(name, b.to_vec());
                    }
                    Err(e) => return back("/console/keys/new", Err(ApiError::bad(e.to_string()))),
                }
            }
            Ok(None) => break,
            Err(e) => return back("/console/keys/new", Err(ApiError::bad(e.to_string()))),
        }
    }
    let text = |k: &str| {
        String::from_utf8_lossy(fields.get(k).map_or(&[][..], |v| v))
            .trim()
            .to_string()
    };
    if let Err(r) = v.check(&text("csrf")) {
        return r.into_response();
    }
    let size = text("key_size").parse::<u32>().ok();
    let mut req = json!({"name": text("name"), "group_id": text("group_id"),
        "obj_type": text("obj_type"), "key_size": size});
    let import = text("source") == "import";
    if import {
        let bytes = fields.get("file").cloned().unwrap_or_default();
        if bytes.is_empty() {
            return back(
                "/console/keys/new",
                Err(ApiError::field(
                    "file",
                    "choose the file with the key material",
                )),
            );
        }
        match text("format").as_str() {
            "base64" => req["value"] = json!(String::from_utf8_lossy(&bytes).trim()),
            "hex" => {
                req["value"] = json!(String::from_utf8_lossy(&bytes).trim());
                req["value_format"] = json!("hex");
            }
            _ => req["value"] = json!(STANDARD.encode(&bytes)),
        }
    }
    let parsed = serde_json::from_value(req).map_err(|e| ApiError::bad(e.to_string()));
    let made = match parsed {
        Ok(r) if import => keys::import(State(state), v.caller.clone(), Body(r)).await,
        Ok(r) => keys::create(State(state), v.caller.clone(), Body(r)).await,
        Err(e) => Err(e),
    };
    match made {
        Ok((_, Json(o))) => back(
            &format!("/console/keys/{}", o.kid),
            Ok(format!("Key {} created", o.name)),
        ),
        Err(e) => back("/console/keys/new", Err(e)),
    }
}

#[derive(Debug, Default, Deserialize)]
struct DetailQuery {
    tab: Option<String>,
    #[serde(flatten)]
    flash: Flash,
}

fn action(v: &Viewer, kid: &str, name: &str, label: &str, enabled: bool, extra: Markup) -> Markup {
    html! {
        form method="post" action={ "/console/keys/" (kid) "/" (name) } .action {
            (csrf_field(v))
            (extra)
            button type="submit" disabled[!enabled] data-testid={ "action-" (name) } { (label) }
        }
    }
}

async fn detail(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Path(kid): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Response {
    let o = match keys::get(State(state.clone()), v.caller.clone(), Path(kid.clone())).await {
        Ok(Json(o)) => o,
        Err(e) => return back("/console/keys", Err(e)),
    };
    let groups = group_names(&state, &v).await;
    let group = groups.iter().find(|g| g.group_id == o.group_id);
    // Offered exactly when the key service would take them.
    let may = state
        .keys
        .actions(&v.caller.access, &kid)
        .await
        .unwrap_or_default();
    let tab = q.tab.as_deref().unwrap_or("info");
    let history = match tab {
        "rotation" => rotation::history(State(state.clone()), v.caller.clone(), Path(kid.clone()))
            .await
            .map(|Json(h)| h)
            .unwrap_or_default(),
        _ => vec![],
    };
    let tabs = [
        ("info", "Info"),
        ("attributes", "Attributes/Tags"),
        ("azure", "Azure key details"),
        ("links", "Key links"),
        ("rotation", "Key rotation"),
    ];
    let body = html! {
        nav .tabs aria-label="Key" {
            @for (id, label) in tabs {
                @if id != "azure" || o.external.is_some() {
                    a href={ "?tab=" (id) } aria-current=[(tab == id).then_some("page")] data-testid={ "tab-" (id) } { (label) }
                }
            }
        }
        @match tab {
            "attributes" => {
                dl data-testid="attributes-tab" {
                    dt { "Operations" } dd { (o.key_ops.join(", ")) }
                    dt { "Activation" } dd { (o.activation_date.clone().unwrap_or_default()) }
                    dt { "Deactivation" } dd { (o.deactivation_date.clone().unwrap_or_default()) }
                }
                h2 { "Tags" @if o.external.is_some() { " (the Azure key's tags)" } }
                table data-testid="tags-table" {
                    thead { tr { th { "Tag" } th { "Value" } th {} } }
                    tbody { @for (k, val) in &o.custom_metadata {
                        tr data-testid="tag-row" { td { (k) } td { (val) } td {
                            (action(&v, &o.kid, "tag_remove", "Remove", true, html! { input type="hidden" name="tag" value=(k); }))
                        } }
                    } }
                }
                (action(&v, &o.kid, "tag_set", "Add tag", true, html! {
                    label for="tag" { "Tag" }
                    input id="tag" name="tag" required data-testid="tag-name";
                    label for="value" { "Value" }
                    input id="value" name="value" data-testid="tag-value";
                }))
            }
            "azure" => {
                @if let Some(x) = &o.external {
                    dl data-testid="azure-tab" {
                        dt { "Resource id" } dd data-testid="azure-key-id" { (x.key_id.clone().unwrap_or_default()) }
                        dt { "Key name" } dd { (x.id.label) }
                        dt { "Version" } dd data-testid="azure-version" { (x.key_version.clone().unwrap_or_default()) }
                        dt { "Source" } dd data-testid="azure-source" { (format!("{:?}", x.source)) }
                        dt { "State in Azure" } dd data-testid="azure-state" { (format!("{:?}", x.state)) }
                    }
                    (action(&v, &o.kid, "soft_delete", "Soft delete in Azure", may.soft_delete, html! {
                        label { input type="checkbox" name="confirm" value="true" required data-testid="confirm-soft-delete";
                            " I understand: the key is deleted in Azure; it can be recovered with all its versions until the HSM's retention period ends, then Azure purges it." }
                    }))
                    (action(&v, &o.kid, "recover", "Recover", may.recover, html! {}))
                }
            }
            "links" => {
                dl data-testid="links-tab" {
                    dt { "Copied from" } dd { @if let Some(s) = &o.links.copied_from { a href={ "/console/keys/" (s) } { (s) } } }
                    dt { "Copies" }
                    dd { ul { @for c in &o.links.copied_to { li data-testid="copy-link" { a href={ "/console/keys/" (c.kid) } { (c.kid) } " — " (c.copied_at) } } } }
                    dt { "Replaced" } dd { @if let Some(s) = &o.links.replaced { a href={ "/console/keys/" (s) } { (s) } } }
                    dt { "Replacement" } dd data-testid="replacement" { @if let Some(s) = &o.links.replacement { a href={ "/console/keys/" (s) } { (s) } } }
                }
            }
            "rotation" => {
                dl data-testid="rotation-tab" {
                    dt { "Policy" } dd { (o.rotation_policy.as_ref().map(|p| serde_json::to_string(p).unwrap_or_default()).unwrap_or_else(|| "none".into())) }
                    dt { "Next rotation" } dd { (o.scheduled_rotation.clone().unwrap_or_default()) }
                }
                table { thead { tr { th { "Due" } th { "Status" } th { "Error" } } }
                    tbody { @for h in &history { tr { td { (h.due_at) } td { (h.status) } td { (h.error.clone().unwrap_or_default()) } } } } }
            }
            _ => {
                dl data-testid="info-tab" {
                    dt { "State" } dd data-testid="key-state" { (o.state) }
                    dt { "Group" } dd { (group.map_or(o.group_id.clone(), |g| g.name.clone()))
                        @if let Some(c) = group.and_then(|g| g.connection_status.clone()) { " (" (c) ")" } }
                    dt { "Type" } dd { (o.obj_type) @if let Some(s) = o.key_size { " " (s) } }
                    dt { "Created by" } dd { (serde_json::to_string(&o.creator).unwrap_or_default()) }
                    dt { "Created" } dd { (o.created_at) }
                    dt { "Key id" } dd data-testid="kid" { (o.kid) }
                }
            }
        }
        section .actions aria-label="Actions" {
            h2 { "Actions" }
            (action(&v, &o.kid, "copy", "Copy key", may.copy, html! {
                label for="copy-group" { "Into group" }
                select id="copy-group" name="group_id" data-testid="copy-group" {
                    @for g in groups.iter().filter(|g| g.group_id != o.group_id) { option value=(g.group_id) { (g.name) } }
                }
                label for="copy-name" { "Name (empty: the suggested one)" }
                input id="copy-name" name="name" data-testid="copy-name";
            }))
            (action(&v, &o.kid, "rotate", "Rotate key", may.rotate, html! {
                @if !o.links.copied_to.is_empty() {
                    fieldset { legend { "Linked copies that rotate with it" }
                        @for c in &o.links.copied_to {
                            label { input type="checkbox" name="copy" value=(c.kid) checked data-testid="rotate-copy"; " " (c.kid) }
                        }
                    }
                }
                @if o.external.is_some() {
                    label for="rotate-from" { "Rotate to a Keyward key (its material)" }
                    input id="rotate-from" name="rotate_from" placeholder="kid of a key in a regular group" data-testid="rotate-from";
                }
            }))
            (action(&v, &o.kid, "deactivate", "Deactivate", may.deactivate, html! {}))
            (action(&v, &o.kid, "delete", "Delete", may.delete, html! {}))
        }
    };
    page(&v, &o.name, "keys", &q.flash, body)
}

async fn act(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Path((kid, action)): Path<(String, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
    };
    if let Err(r) = v.check(&field("csrf").unwrap_or_default()) {
        return r.into_response();
    }
    let here = format!("/console/keys/{kid}");
    let c = v.caller.clone();
    let s = State(state);
    let p = Path(kid.clone());
    let outcome: Result<(String, String), ApiError> = match action.as_str() {
        "deactivate" => keys::deactivate(s, c, p)
            .await
            .map(|_| (here.clone(), "Deactivated".into())),
        "recover" => external_keys::recover(s, c, p)
            .await
            .map(|_| (format!("{here}?tab=azure"), "Recovered in Azure".into())),
        "soft_delete" => match serde_json::from_value(
            json!({"confirm": field("confirm").as_deref() == Some("true")}),
        ) {
            Ok(b) => external_keys::schedule_deletion(s, c, p, Body(b))
                .await
                .map(|_| (format!("{here}?tab=azure"), "Soft deleted in Azure".into())),
            Err(e) => Err(ApiError::bad(e.to_string())),
        },
        "tag_set" | "tag_remove" => {
            let tag = field("tag").unwrap_or_default();
            let mut edits = TagEdits::default();
            let done = if action == "tag_set" {
                edits
                    .set
                    .insert(tag.clone(), field("value").unwrap_or_default());
                format!("Tag {tag} saved")
            } else {
                edits.remove.push(tag.clone());
                format!("Tag {tag} removed")
            };
            let change = KeyChange {
                tag_edits: Some(edits),
                ..Default::default()
            };
            s.0.keys
                .update(&c.access, &kid, change)
                .await
                .map_err(ApiError::from)
                .map(|_| (format!("{here}?tab=attributes"), done))
        }
        "delete" => keys::delete(s, c, p)
            .await
            .map(|_| ("/console/keys".to_string(), "Deleted".into())),
        "copy" => {
            let req = json!({"key": {"kid": kid}, "group_id": field("group_id"), "name": field("name").filter(|n| !n.is_empty())});
            match serde_json::from_value(req) {
                Ok(r) => external_keys::copy(s, c, Body(r))
                    .await
                    .map(|(_, Json(o))| {
                        (
                            format!("/console/keys/{}", o.kid),
                            format!("Copied as {}", o.name),
                        )
                    }),
                Err(e) => Err(ApiError::bad(e.to_string())),
            }
        }
        "rotate" => {
            let copies: Vec<&String> = form
                .iter()
                .filter(|(n, _)| n == "copy")
                .map(|(_, v)| v)
                .collect();
            let mut req = json!({});
            if !copies.is_empty() {
                req["rotate_copied_keys"] = json!({"select": copies});
            }
            if let Some(from) = field("rotate_from").filter(|f| !f.is_empty()) {
                req["rotate_from"] = json!({"kid": from});
            }
            // The API parses the request from its body, as it does for API clients.
            let body = axum::body::Bytes::from(req.to_string());
            rotation::rekey_kid(s, c, p, body)
                .await
                .map(|(_, Json(o))| {
                    let failed = o
                        .rotated_copies
                        .iter()
                        .filter(|c| c.error.is_some())
                        .count();
                    (
                        format!("/console/keys/{}", o.key.kid),
                        format!(
                            "Rotated: {} copies rotated along, {failed} failed",
                            o.rotated_copies.len() - failed
                        ),
                    )
                })
        }
        other => Err(ApiError::NotFound(format!("no action '{other}'"))),
    };
    match outcome {
        Ok((to, message)) => back(&to, Ok(message)),
        Err(e) => back(&here, Err(e)),
    }
}
