//! Console pages of administration: workflows (shipped and the account's own versions, editing
//! with compile errors shown where they are, versions, run history with step logs), the audit
//! log with filters, and the daemon's plugins (loaded, and skipped with the reason).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use maud::html;
use serde::Deserialize;

use super::{Flash, Viewer, back, csrf_field, page};
use crate::api::extract::Body;
use crate::api::{ApiError, AppState, audit, plugins, workflows};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/workflows", get(workflow_list))
        .route(
            "/console/workflows/{name}",
            get(workflow).post(put_workflow),
        )
        .route("/console/workflows/{name}/restore", post(restore_workflow))
        .route("/console/audit", get(audit_log))
        .route("/console/plugins", get(plugin_list))
}

fn failed(v: &Viewer, title: &str, section: &str, e: ApiError) -> Response {
    page(
        v,
        title,
        section,
        &Flash {
            notice: None,
            error: Some(e.to_string()),
        },
        html! {},
    )
}

async fn workflow_list(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Query(f): Query<Flash>,
) -> Response {
    let list = match workflows::list(State(state), v.caller.clone()).await {
        Ok(Json(l)) => l,
        Err(e) => return failed(&v, "Workflows", "workflows", e),
    };
    let body = html! {
        table data-testid="workflows-table" {
            thead { tr { th { "Name" } th { "In use" } th { "Account version" } th { "Problem" } } }
            tbody { @for w in &list.workflows {
                tr data-testid="workflow-row" {
                    td { a href={ "/console/workflows/" (w.name) } { (w.name) } }
                    td { (format!("{:?}", w.origin).to_lowercase()) }
                    td { (w.account_version.map(|n| n.to_string()).unwrap_or_default()) }
                    td { (w.problem.as_ref().map(|p| p.to_string()).unwrap_or_default()) }
                }
            } }
        }
    };
    page(&v, "Workflows", "workflows", &f, body)
}

#[derive(Deserialize, Default)]
struct WorkflowQuery {
    #[serde(flatten)]
    flash: Flash,
}

async fn render_workflow(
    state: Arc<AppState>,
    v: &Viewer,
    name: &str,
    flash: &Flash,
    draft: Option<(&str, Option<(usize, usize)>)>,
) -> Response {
    let shown = match workflows::get(
        State(state.clone()),
        v.caller.clone(),
        Path(name.to_string()),
    )
    .await
    {
        Ok(Json(s)) => s,
        Err(e) => return failed(v, name, "workflows", e),
    };
    let versions = workflows::versions(
        State(state.clone()),
        v.caller.clone(),
        Path(name.to_string()),
    )
    .await
    .map(|Json(l)| l)
    .unwrap_or_default();
    let runs = workflows::runs(
        State(state),
        v.caller.clone(),
        Ok(Query(workflows::RunQuery {
            workflow: Some(name.to_string()),
            group_id: None,
            limit: Some(20),
            offset: None,
        })),
    )
    .await
    .map(|Json(r)| r)
    .unwrap_or_default();
    let source = draft.map_or(shown.source.as_str(), |(d, _)| d);
    let body = html! {
        p { "In use: " strong data-testid="workflow-origin" { (format!("{:?}", shown.info.origin).to_lowercase()) }
            @if let Some(n) = shown.info.account_version { " (the account's version " (n) ")" } }
        @if let Some((_, Some((line, column)))) = draft {
            p .error role="alert" data-testid="compile-error-location" { "Line " (line) ", column " (column) }
        }
        @if v.is_admin() {
            form method="post" action={ "/console/workflows/" (name) } data-testid="workflow-form" {
                (csrf_field(v))
                label for="source" { "Source (saved as the account's own version; it must compile)" }
                textarea id="source" name="source" rows="24" spellcheck="false" data-testid="workflow-source" { (source) }
                label for="comment" { "Comment" }
                input id="comment" name="comment" data-testid="workflow-comment";
                button type="submit" data-testid="save-workflow" { "Save" }
            }
        } @else {
            pre data-testid="workflow-source" { (source) }
        }
        h2 { "Versions" }
        table data-testid="workflow-versions" {
            thead { tr { th { "Version" } th { "Uses" } th { "Author" } th { "Created" } th { "Comment" } th {} } }
            tbody { @for ver in &versions {
                tr {
                    td { (ver.version) } td { (format!("{:?}", ver.uses).to_lowercase()) } td { (ver.author) } td { (ver.created_at) }
                    td { (ver.comment.clone().unwrap_or_default()) }
                    td { @if v.is_admin() {
                        form method="post" action={ "/console/workflows/" (name) "/restore" } {
                            (csrf_field(v))
                            input type="hidden" name="version" value=(ver.version);
                            button type="submit" data-testid="restore-version" { "Restore" }
                        }
                    } }
                }
            } }
        }
        h2 { "Runs" }
        @for r in &runs {
            details data-testid="workflow-run" {
                summary { (r.started_at) " — " (r.status) " (" (r.trigger) ")" @if let Some(e) = &r.error { " — " (e) } }
                pre { (serde_json::to_string_pretty(&r.log).unwrap_or_default()) }
            }
        }
    };
    page(v, name, "workflows", flash, body)
}

async fn workflow(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Path(name): Path<String>,
    Query(q): Query<WorkflowQuery>,
) -> Response {
    render_workflow(state, &v, &name, &q.flash, None).await
}

#[derive(Deserialize)]
struct WorkflowEdit {
    csrf: String,
    source: String,
    #[serde(default)]
    comment: String,
}

async fn put_workflow(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Path(name): Path<String>,
    Form(f): Form<WorkflowEdit>,
) -> Response {
    if let Err(r) = v.check(&f.csrf) {
        return r.into_response();
    }
    // Browsers send textarea lines with CRLF.
    let source = f.source.replace("\r\n", "\n");
    let req = workflows::ScriptPut {
        source: source.clone(),
        comment: Some(f.comment).filter(|c| !c.trim().is_empty()),
    };
    match workflows::put(
        State(state.clone()),
        v.caller.clone(),
        Path(name.clone()),
        Body(req),
    )
    .await
    {
        Ok(Json(ver)) => back(
            &format!("/console/workflows/{name}"),
            Ok(format!("Saved as version {}", ver.version)),
        ),
        // A script that does not compile is shown again as typed, with where it fails.
        Err(ApiError::Script(p)) => {
            let at = p.line.zip(p.column);
            let flash = Flash {
                notice: None,
                error: Some(format!(
                    "Not saved: the script does not compile: {}",
                    p.message
                )),
            };
            render_workflow(state, &v, &name, &flash, Some((&source, at))).await
        }
        Err(e) => back(&format!("/console/workflows/{name}"), Err(e)),
    }
}

#[derive(Deserialize)]
struct Restore {
    csrf: String,
    version: i64,
}

async fn restore_workflow(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Path(name): Path<String>,
    Form(f): Form<Restore>,
) -> Response {
    if let Err(r) = v.check(&f.csrf) {
        return r.into_response();
    }
    let done = workflows::restore(
        State(state),
        v.caller.clone(),
        Path((name.clone(), f.version.to_string())),
    )
    .await;
    back(
        &format!("/console/workflows/{name}"),
        done.map(|Json(ver)| format!("Version {} restored as version {}", f.version, ver.version)),
    )
}

#[derive(Deserialize, Default)]
struct AuditQuery {
    action: Option<String>,
    outcome: Option<String>,
}

async fn audit_log(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Query(q): Query<AuditQuery>,
) -> Response {
    let mut query = String::from("size=200");
    for (k, val) in [("action", &q.action), ("outcome", &q.outcome)] {
        if let Some(x) = val.as_ref().filter(|x| !x.trim().is_empty()) {
            query.push_str(&format!(
                "&{k}={}",
                percent_encoding::utf8_percent_encode(x, percent_encoding::NON_ALPHANUMERIC)
            ));
        }
    }
    let parsed = axum_extra::extract::Query::try_from_uri(
        &format!("/?{query}").parse().expect("a valid URI"),
    );
    let logs = match parsed {
        Ok(p) => audit::query(State(state), v.caller.clone(), Ok(p)).await,
        Err(e) => Err(ApiError::bad(e.to_string())),
    };
    let hits = match logs {
        Ok(Json(l)) => l.hits,
        Err(e) => return failed(&v, "Audit log", "audit", e),
    };
    let body = html! {
        form method="get" action="/console/audit" .filters {
            label for="a-action" { "Action" }
            input id="a-action" name="action" value=(q.action.clone().unwrap_or_default()) data-testid="audit-action";
            label for="a-outcome" { "Outcome" }
            select id="a-outcome" name="outcome" {
                option value="" { "Any" }
                @for o in ["success", "failure", "denied"] { option value=(o) selected[q.outcome.as_deref() == Some(o)] { (o) } }
            }
            button type="submit" { "Filter" }
        }
        p data-testid="audit-count" {
            @if hits.len() >= 200 { "The newest 200 entries; narrow them with the filters (the API and " code { "keyward audit" } " page through all)." }
            @else { (hits.len()) " entries." }
        }
        table data-testid="audit-table" {
            thead { tr { th { "Time" } th { "Action" } th { "Outcome" } th { "Actor" } th { "Object" } } }
            tbody { @for h in &hits {
                tr data-testid="audit-row" {
                    td { (h._source.time) } td { (h._source.action) } td { (h._source.outcome) }
                    td { (h._source.actor_id) } td { (h._source.object_id.clone().unwrap_or_default()) }
                }
            } }
        }
    };
    page(&v, "Audit log", "audit", &Flash::default(), body)
}

async fn plugin_list(State(state): State<Arc<AppState>>, v: Viewer) -> Response {
    let Json(p) = match plugins::list(State(state), v.caller.clone()).await {
        Ok(p) => p,
        Err(e) => return failed(&v, "Plugins", "plugins", e),
    };
    let body = html! {
        h2 { "Loaded" }
        table data-testid="plugins-table" {
            thead { tr { th { "Name" } th { "Version" } th { "Interface" } th { "From" } th { "Description" } th { "SHA-256" } } }
            tbody { @for x in &p.loaded {
                tr data-testid="plugin-row" {
                    td { (x.name) } td { (x.version) } td { code { (x.world) } } td { (x.origin) }
                    td { (x.description.clone().unwrap_or_default()) } td { code .digest { (x.digest) } }
                }
            } }
        }
        h2 { "Skipped" }
        @if p.skipped.is_empty() { p data-testid="no-skipped" { "Every file of the plugin directory loaded." } }
        table data-testid="skipped-table" {
            thead { tr { th { "File" } th { "Why it was not loaded" } } }
            tbody { @for x in &p.skipped { tr data-testid="skipped-row" { td { (x.file) } td { (x.reason) } } } }
        }
        p { "A group attaches policy plugins under its Settings and policies tab." }
    };
    page(&v, "Plugins", "plugins", &Flash::default(), body)
}
