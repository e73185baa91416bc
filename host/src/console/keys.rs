//! Console pages of keys: the security objects table (paged, substring search, filters by
//! group, type, state and holder) and a key's detail: tabs Info, Attributes/Tags, Azure key
//! details, Key links, Key rotation (with the rotation-policy form), and the actions, each
//! offered only when the key service would take it (`KeyService::actions`). The actions
//! themselves are handled in `key_actions`, new keys in `key_forms`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use maud::{Markup, html};
use serde::Deserialize;

use super::key_forms::ops_boxes;
use super::{Flash, Viewer, back, csrf_field, page};
use crate::api::model::{CreatorOut, GroupOut, SobjectOut};
use crate::api::{AppState, groups, keys, rotation};
use crate::catalog::rotation::{CopySelection, RawPolicy};
use crate::time::{format_form, parse_dsm};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/keys", get(list))
        .route("/console/keys/{kid}", get(detail))
}

/// Rows per page of the security objects table.
const PAGE: u32 = 100;

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    group_id: Option<String>,
    /// Part of the name.
    name: Option<String>,
    obj_type: Option<String>,
    state: Option<String>,
    /// `true`, `false` or empty.
    external: Option<String>,
    offset: Option<u32>,
    #[serde(flatten)]
    flash: Flash,
}

impl ListQuery {
    /// The query string of this filter at another offset.
    fn at(&self, offset: u32) -> String {
        let mut q = form_urlencoded(&[
            ("group_id", self.group_id.as_deref()),
            ("name", self.name.as_deref()),
            ("obj_type", self.obj_type.as_deref()),
            ("state", self.state.as_deref()),
            ("external", self.external.as_deref()),
        ]);
        q.push_str(&format!("&offset={offset}"));
        q
    }
}

fn form_urlencoded(pairs: &[(&str, Option<&str>)]) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    pairs
        .iter()
        .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k, v)))
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The groups the viewer sees, for names and pickers.
pub async fn group_names(state: &Arc<AppState>, v: &Viewer) -> Vec<GroupOut> {
    groups::list(State(state.clone()), v.caller.clone())
        .await
        .map(|Json(g)| g)
        .unwrap_or_default()
}

/// A group's name; one the viewer cannot see is not shown by its id.
pub fn group_label(groups: &[GroupOut], id: &str) -> String {
    groups.iter().find(|g| g.group_id == id).map_or_else(
        || "(a group you cannot see)".to_string(),
        |g| g.name.clone(),
    )
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
    let offset = q.offset.unwrap_or(0);
    let query = keys::ListQuery {
        group_id: opt(&q.group_id),
        name: None,
        name_contains: opt(&q.name),
        obj_type: opt(&q.obj_type),
        external: opt(&q.external).map(|e| e == "true"),
        state: opt(&q.state),
        limit: Some(PAGE),
        offset: Some(offset),
        sort: None,
    };
    let found = keys::list(State(state), v.caller.clone(), Ok(Query(query))).await;
    let (objects, total, error) = match found {
        Ok((headers, Json(o))) => {
            let total = headers
                .get("x-total-count")
                .and_then(|h| h.to_str().ok())
                .and_then(|t| t.parse::<u32>().ok())
                .unwrap_or(o.len() as u32);
            (o, total, None)
        }
        Err(e) => (vec![], 0, Some(e.to_string())),
    };
    let shown_to = offset + objects.len() as u32;
    let select = |name: &str, id: &str, current: &Option<String>, options: &[(&str, &str)]| {
        html! {
            select id=(id) name=(name) data-testid=(id) {
                @for (value, label) in options {
                    option value=(value) selected[current.as_deref().unwrap_or("") == *value] { (label) }
                }
            }
        }
    };
    let body = html! {
        form method="get" action="/console/keys" .filters data-testid="key-filters" {
            label for="filter-group" { "Group" }
            select id="filter-group" name="group_id" data-testid="filter-group" {
                option value="" { "All groups" }
                @for g in &groups { option value=(g.group_id) selected[q.group_id.as_deref() == Some(g.group_id.as_str())] { (g.name) } }
            }
            label for="filter-name" { "Name contains" }
            input id="filter-name" name="name" value=(q.name.clone().unwrap_or_default()) data-testid="filter-name";
            label for="filter-type" { "Type" }
            (select("obj_type", "filter-type", &q.obj_type, &[("", "Any"), ("AES", "AES"), ("RSA", "RSA"), ("EC", "EC")]))
            label for="filter-state" { "State" }
            (select("state", "filter-state", &q.state, &[("", "Any"), ("PreActive", "PreActive"), ("Active", "Active"), ("Deactivated", "Deactivated"), ("Compromised", "Compromised"), ("Destroyed", "Destroyed")]))
            label for="filter-external" { "Held by" }
            (select("external", "filter-external", &q.external, &[("", "Anyone"), ("true", "an HSM (Azure)"), ("false", "Keyward")]))
            button type="submit" { "Filter" }
        }
        @if let Some(e) = error { p .error role="alert" { (e) } }
        p { a .button href="/console/keys/new" data-testid="add-key" { "Add security object" } }
        p data-testid="key-count" {
            @if objects.is_empty() { "No keys match." }
            @else { "Keys " (offset + 1) "–" (shown_to) " of " (total) }
        }
        table data-testid="keys-table" {
            thead { tr { th { "Name" } th { "Type" } th { "State" } th { "Group" } th { "External" } } }
            tbody {
                @for o in &objects {
                    tr data-testid="key-row" {
                        td { a href={ "/console/keys/" (o.kid) } data-testid="key-link" { (o.name) } }
                        td { (o.obj_type) @if let Some(s) = o.key_size { " " (s) } @if let Some(c) = &o.elliptic_curve { " " (c) } }
                        td data-testid="key-state" { (o.state) }
                        td { (group_label(&groups, &o.group_id)) }
                        td { @if let Some(x) = &o.external { span .badge data-testid="external-marker" { "Azure: " (format!("{:?}", x.state)) } } }
                    }
                }
            }
        }
        nav .pager aria-label="Pages" {
            @if offset > 0 {
                a href={ "/console/keys?" (q.at(offset.saturating_sub(PAGE))) } data-testid="page-previous" { "Previous" }
            }
            @if shown_to < total {
                " "
                a href={ "/console/keys?" (q.at(shown_to)) } data-testid="page-next" { "Next" }
            }
        }
    };
    page(&v, "Security objects", "keys", &q.flash, body)
}

#[derive(Debug, Default, Deserialize)]
struct DetailQuery {
    tab: Option<String>,
    #[serde(flatten)]
    flash: Flash,
}

pub fn action(
    v: &Viewer,
    kid: &str,
    name: &str,
    label: &str,
    enabled: bool,
    extra: Markup,
) -> Markup {
    html! {
        form method="post" action={ "/console/keys/" (kid) "/" (name) } .action data-testid={ "form-" (name) } {
            (csrf_field(v))
            (extra)
            button type="submit" disabled[!enabled] data-testid={ "action-" (name) } { (label) }
        }
    }
}

/// A DSM time of the API as a `datetime-local` value.
fn form_value(t: &Option<String>) -> String {
    t.as_deref()
        .and_then(|t| parse_dsm(t).ok())
        .map(format_form)
        .unwrap_or_default()
}

/// The names of keys the viewer can see, by id (for links shown by name).
async fn key_names(state: &Arc<AppState>, v: &Viewer, kids: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for kid in kids {
        let name = match state.keys.view(&v.caller.access, kid).await {
            Ok(k) => k.object.name.clone(),
            Err(_) => "(a key you cannot see)".to_string(),
        };
        out.push((kid.clone(), name));
    }
    out
}

/// Keys of the viewer's regular groups, by group then name: the rotation source picker.
async fn catalog_keys(
    state: &Arc<AppState>,
    v: &Viewer,
    groups: &[GroupOut],
) -> Vec<(String, Vec<SobjectOut>)> {
    let mut out = Vec::new();
    for g in groups.iter().filter(|g| !g.is_external) {
        let query = keys::ListQuery {
            group_id: Some(g.group_id.clone()),
            name: None,
            name_contains: None,
            obj_type: None,
            external: Some(false),
            state: Some("Active".into()),
            limit: Some(1000),
            offset: None,
            sort: None,
        };
        if let Ok((_, Json(found))) =
            keys::list(State(state.clone()), v.caller.clone(), Ok(Query(query))).await
            && !found.is_empty()
        {
            out.push((g.name.clone(), found));
        }
    }
    out
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
    let copy_kids: Vec<String> = o.links.copied_to.iter().map(|c| c.kid.clone()).collect();
    let copies = key_names(&state, &v, &copy_kids).await;
    let source = match &o.links.copied_from {
        Some(s) => key_names(&state, &v, std::slice::from_ref(s)).await.pop(),
        None => None,
    };
    let copy_name = |kid: &str| {
        copies
            .iter()
            .find(|(k, _)| k == kid)
            .map_or(kid.to_string(), |(_, n)| n.clone())
    };
    let history = match tab {
        "rotation" => rotation::history(State(state.clone()), v.caller.clone(), Path(kid.clone()))
            .await
            .map(|Json(h)| h)
            .unwrap_or_default(),
        _ => vec![],
    };
    let sources = if o.external.is_some() && may.rotate {
        catalog_keys(&state, &v, &groups).await
    } else {
        vec![]
    };
    let creator = creator_label(&state, &v, &o.creator).await;
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
            "attributes" => { (attributes_tab(&v, &o)) }
            "azure" => {
                @if let Some(x) = &o.external {
                    dl data-testid="azure-tab" {
                        dt { "Resource id" } dd data-testid="azure-key-id" { (x.key_id.clone().unwrap_or_default()) }
                        dt { "Key name" } dd data-testid="azure-key-name" { (x.id.label) }
                        dt { "Version" } dd data-testid="azure-version" { (x.key_version.clone().unwrap_or_default()) }
                        dt { "Held in" } dd data-testid="azure-store" {
                            @if let Some(l) = group.and_then(|g| g.external_kms.as_ref()) { (l.config.vault_type().label()) }
                        }
                        dt { "Key type (protection)" } dd data-testid="azure-kty" { (x.kty.clone().unwrap_or_default()) }
                        dt { "Recovery level" } dd data-testid="azure-recovery" { (x.recovery_level.clone().unwrap_or_default()) }
                        dt { "Source" } dd data-testid="azure-source" { (format!("{:?}", x.source)) }
                        dt { "State in Azure" } dd data-testid="azure-state" { (format!("{:?}", x.state)) }
                    }
                    (action(&v, &o.kid, "soft_delete", "Soft delete in Azure", may.soft_delete, html! {
                        label { input type="checkbox" name="confirm" value="true" required data-testid="confirm-soft-delete";
                            " I understand: the key is deleted in Azure; it can be recovered with all its versions until the HSM's retention period ends, then Azure purges it." }
                    }))
                    (action(&v, &o.kid, "recover", "Recover", may.recover, html! {}))
                    (action(&v, &o.kid, "purge", "Purge now", may.purge, html! {
                        label { input type="checkbox" name="confirm" value="true" required data-testid="confirm-purge";
                            " I understand: the key and all its versions are gone from Azure for good (a backup kept by Keyward can restore it)." }
                    }))
                    (action(&v, &o.kid, "restore", "Restore from backup", may.restore, html! {}))
                }
            }
            "links" => {
                dl data-testid="links-tab" {
                    dt { "Copied from" } dd { @if let Some((s, name)) = &source { a href={ "/console/keys/" (s) } data-testid="copied-from" { (name) } } }
                    dt { "Copies" }
                    dd { table { thead { tr { th { "Copy" } th { "Group" } th { "Copied by" } th { "Date" } } }
                        tbody { @for c in &o.links.copied_to {
                            tr data-testid="copy-link" {
                                td { a href={ "/console/keys/" (c.kid) } { (copy_name(&c.kid)) } }
                                td { (c.group_id.as_deref().map(|g| group_label(&groups, g)).unwrap_or_default()) }
                                td { (c.copied_by) } td { (c.copied_at) }
                            }
                        } } } }
                    dt { "Replaced" } dd { @if let Some(s) = &o.links.replaced { a href={ "/console/keys/" (s) } { (s) } } }
                    dt { "Replacement" } dd data-testid="replacement" { @if let Some(s) = &o.links.replacement { a href={ "/console/keys/" (s) } { (s) } } }
                }
            }
            "rotation" => {
                dl data-testid="rotation-tab" {
                    dt { "Policy" } dd data-testid="rotation-policy" { (policy_text(&o)) }
                    dt { "Next rotation" } dd data-testid="next-rotation" { (o.scheduled_rotation.clone().unwrap_or_default()) }
                }
                (policy_form(&v, &o))
                h2 { "History" }
                table { thead { tr { th { "Due" } th { "Status" } th { "Error" } } }
                    tbody { @for h in &history { tr { td { (h.due_at) } td { (h.status) } td { (h.error.clone().unwrap_or_default()) } } } } }
            }
            _ => {
                dl data-testid="info-tab" {
                    dt { "State" } dd data-testid="key-state" { (o.state) }
                    dt { "Group" } dd { (group.map_or_else(|| group_label(&groups, &o.group_id), |g| g.name.clone()))
                        @if let Some(c) = group.and_then(|g| g.connection_status.clone()) { " (" (c) ")" } }
                    dt { "Type" } dd { (o.obj_type) @if let Some(s) = o.key_size { " " (s) } @if let Some(c) = &o.elliptic_curve { " " (c) } }
                    dt { "Description" } dd data-testid="key-description" { (o.description.clone().unwrap_or_default()) }
                    dt { "Created by" } dd data-testid="created-by" { (creator) }
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
                    @for g in groups.iter().filter(|g| g.group_id != o.group_id) { option value=(g.group_id) { (g.name) @if g.is_external { " (Azure)" } } }
                }
                label for="copy-name" { "Name (empty: the suggested one)" }
                input id="copy-name" name="name" data-testid="copy-name";
                fieldset { legend { "Permissions of the copy (never more than this key's)" }
                    (ops_boxes("key_ops", &o.key_ops, Some(&o.key_ops))) }
            }))
            (action(&v, &o.kid, "rotate", "Rotate key", may.rotate, html! {
                @if !o.links.copied_to.is_empty() {
                    fieldset { legend { "Linked copies that rotate with it" }
                        @for c in &o.links.copied_to {
                            label { input type="checkbox" name="copy" value=(c.kid) checked data-testid="rotate-copy"; " " (copy_name(&c.kid)) }
                        }
                    }
                }
                @if o.external.is_some() {
                    label for="rotate-from" { "Rotate to a Keyward key (its material); by group, then name" }
                    select id="rotate-from" name="rotate_from" data-testid="rotate-from" {
                        option value="" { "— a new version made in Azure —" }
                        @for (group, found) in &sources {
                            optgroup label=(group) { @for k in found { option value=(k.kid) { (k.name) } } }
                        }
                    }
                }
            }))
            @if may.byok {
                (action(&v, &o.kid, "byok", "Download Azure BYOK file", true, html! {
                    p { "The key wrapped for a key-exchange key of a Premium tier Key Vault or a Managed HSM, for "
                        code { "az keyvault key import --byok-file" } ". It is an export of the key, and recorded as one." }
                    label for="kek-id" { "Key-exchange key identifier (with its version)" }
                    input id="kek-id" name="kek_id" required placeholder="https://contoso.vault.azure.net/keys/KEK/0123…" data-testid="byok-kek-id";
                    label for="kek-public-key" { "Its public key (PEM)" }
                    textarea id="kek-public-key" name="kek_public_key" rows="6" required data-testid="byok-kek-public-key" {}
                }))
            }
            (action(&v, &o.kid, "deactivate", "Deactivate", may.deactivate, html! {}))
            (action(&v, &o.kid, "delete", "Delete", may.delete, html! {}))
        }
    };
    page(&v, &o.name, "keys", &q.flash, body)
}

/// Who made a key, by email or application name where the viewer may see them.
async fn creator_label(state: &Arc<AppState>, v: &Viewer, c: &CreatorOut) -> String {
    match c {
        CreatorOut::User(id) => {
            match crate::api::users::get(State(state.clone()), v.caller.clone(), Path(id.clone()))
                .await
            {
                Ok(Json(u)) => u.user_email,
                Err(_) => "a user no longer in the account".into(),
            }
        }
        CreatorOut::App(id) => {
            match crate::api::apps::get(State(state.clone()), v.caller.clone(), Path(id.clone()))
                .await
            {
                Ok(Json(a)) => format!("application {}", a.name),
                Err(_) => "an application".into(),
            }
        }
        CreatorOut::System(what) => format!("Keyward ({what})"),
    }
}

fn attributes_tab(v: &Viewer, o: &SobjectOut) -> Markup {
    html! {
        dl data-testid="attributes-tab" {
            dt { "Operations" } dd data-testid="key-ops" { (o.key_ops.join(", ")) }
            dt { "Activation" } dd { (o.activation_date.clone().unwrap_or_default()) }
            dt { "Deactivation" } dd { (o.deactivation_date.clone().unwrap_or_default()) }
        }
        (action(v, &o.kid, "update", "Save attributes", true, html! {
            label for="upd-description" { "Description" }
            input id="upd-description" name="description" value=(o.description.clone().unwrap_or_default()) data-testid="update-description";
            fieldset { legend { "Operations (may be removed; EXPORT can never be added)" }
                (ops_boxes("key_ops", &o.key_ops, None)) }
            label for="upd-activation" { "Activation (UTC; only while pre-active)" }
            input id="upd-activation" name="activation_date" type="datetime-local" value=(form_value(&o.activation_date)) data-testid="update-activation";
            input type="hidden" name="activation_date_was" value=(form_value(&o.activation_date));
            label for="upd-deactivation" { "Deactivation (UTC)" }
            input id="upd-deactivation" name="deactivation_date" type="datetime-local" value=(form_value(&o.deactivation_date)) data-testid="update-deactivation";
            input type="hidden" name="deactivation_date_was" value=(form_value(&o.deactivation_date));
        }))
        h2 { "Tags" @if o.external.is_some() { " (the Azure key's tags)" } }
        table data-testid="tags-table" {
            thead { tr { th { "Tag" } th { "Value" } th {} } }
            tbody { @for (k, val) in &o.custom_metadata {
                tr data-testid="tag-row" { td { (k) } td { (val) } td {
                    (action(v, &o.kid, "tag_remove", "Remove", true, html! { input type="hidden" name="tag" value=(k); }))
                } }
            } }
        }
        (action(v, &o.kid, "tag_set", "Add tag", true, html! {
            label for="tag" { "Tag" }
            input id="tag" name="tag" required data-testid="tag-name";
            label for="value" { "Value" }
            input id="value" name="value" data-testid="tag-value";
        }))
    }
}

fn policy_text(o: &SobjectOut) -> String {
    let Some(p) = &o.rotation_policy else {
        return "none".into();
    };
    let raw = RawPolicy::from(p.clone());
    let mut parts = vec![match (raw.interval_days, raw.interval_months, &raw.cron) {
        (Some(d), _, _) => format!("every {d} days"),
        (_, Some(m), _) => format!("every {m} months"),
        (_, _, Some(c)) => format!("cron '{c}' ({})", raw.time_zone.clone().unwrap_or_default()),
        _ => String::new(),
    }];
    if let Some(e) = raw.effective_at {
        parts.push(format!("from {}", crate::time::format_dsm(e)));
    }
    if raw.deactivate_rotated_key {
        parts.push("deactivates the original".into());
    }
    match &raw.rotate_copied_keys {
        Some(CopySelection::AllExternal) => parts.push("rotates all copied keys".into()),
        Some(CopySelection::Select(k)) => parts.push(format!("rotates {} chosen copies", k.len())),
        None => {}
    }
    parts.join(", ")
}

/// F25: frequency, start, "deactivate the original", "rotate all copied keys".
fn policy_form(v: &Viewer, o: &SobjectOut) -> Markup {
    let raw = o
        .rotation_policy
        .clone()
        .map(RawPolicy::from)
        .unwrap_or_default();
    let (unit, every) = match (raw.interval_days, raw.interval_months, &raw.cron) {
        (Some(d), _, _) => ("days", d.to_string()),
        (_, Some(m), _) => ("months", m.to_string()),
        (_, _, Some(_)) => ("cron", String::new()),
        _ => ("days", "90".to_string()),
    };
    html! {
        (action(v, &o.kid, "policy", "Save rotation policy", true, html! {
            label for="pol-every" { "Rotate every" }
            input id="pol-every" name="every" inputmode="numeric" value=(every) data-testid="policy-every";
            select name="unit" data-testid="policy-unit" aria-label="Unit" {
                @for (u, l) in [("days", "days"), ("months", "months"), ("cron", "on a cron schedule")] {
                    option value=(u) selected[unit == u] { (l) }
                }
            }
            label for="pol-cron" { "Cron expression (with 'on a cron schedule')" }
            input id="pol-cron" name="cron" value=(raw.cron.clone().unwrap_or_default()) data-testid="policy-cron";
            label for="pol-tz" { "Time zone of the cron schedule" }
            input id="pol-tz" name="time_zone" value=(raw.time_zone.clone().unwrap_or_else(|| "UTC".into())) data-testid="policy-time-zone";
            label for="pol-start" { "Start (UTC date and time of the first rotation)" }
            input id="pol-start" name="effective_at" type="datetime-local" value=(raw.effective_at.map(format_form).unwrap_or_default()) data-testid="policy-start";
            label { input type="checkbox" name="deactivate_rotated_key" value="true" checked[raw.deactivate_rotated_key] data-testid="policy-deactivate"; " Deactivate the original after rotation" }
            label { input type="checkbox" name="rotate_copied_keys" value="all_external" checked[raw.rotate_copied_keys.is_some()] data-testid="policy-copies"; " Rotate all copied keys" }
        }))
        @if o.rotation_policy.is_some() {
            (action(v, &o.kid, "policy_remove", "Remove the policy", true, html! {}))
        }
    }
}
