//! Console pages of automation: schedules (cron jobs that run a workflow as their creator:
//! create, pause, resume, delete) and webhooks (create, showing the signing secret once;
//! delete).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CsrfForm, Flash, Viewer, back, blank_is_none, csrf_field, page};
use crate::api::extract::Body;
use crate::api::{ApiError, AppState, groups, jobs, webhooks, workflows};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/jobs", get(job_list).post(create_job))
        .route("/console/jobs/{id}/{action}", post(job_action))
        .route("/console/webhooks", get(webhook_list).post(create_webhook))
        .route("/console/webhooks/{id}/delete", post(delete_webhook))
}

/// The selects a job or webhook form needs: workflows and groups.
async fn choices(state: &Arc<AppState>, v: &Viewer) -> (Vec<String>, Vec<(String, String)>) {
    let names = workflows::list(State(state.clone()), v.caller.clone())
        .await
        .map(|Json(l)| l.workflows.into_iter().map(|w| w.name).collect())
        .unwrap_or_default();
    let groups = groups::list(State(state.clone()), v.caller.clone())
        .await
        .map(|Json(g)| g.into_iter().map(|g| (g.group_id, g.name)).collect())
        .unwrap_or_default();
    (names, groups)
}

fn selects(names: &[String], groups: &[(String, String)]) -> Markup {
    html! {
        label for="workflow" { "Workflow" }
        select id="workflow" name="workflow" data-testid="workflow" {
            @for n in names { option value=(n) { (n) } }
        }
        label for="group_id" { "Group (the run's group, if any)" }
        select id="group_id" name="group_id" data-testid="group" {
            option value="" { "(none)" }
            @for (id, name) in groups { option value=(id) { (name) } }
        }
    }
}

async fn job_list(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Query(f): Query<Flash>,
) -> Response {
    let list = match jobs::list(State(state.clone()), v.caller.clone()).await {
        Ok(Json(l)) => l,
        Err(e) => return back("/console/groups", Err(e)),
    };
    let (names, groups) = choices(&state, &v).await;
    let body = html! {
        table data-testid="jobs-table" {
            thead { tr { th { "Name" } th { "Workflow" } th { "Cron" } th { "Time zone" } th { "Next run" } th {} } }
            tbody { @for j in &list {
                tr data-testid="job-row" {
                    td { (j.name) } td { (j.workflow) } td { (j.cron) } td { (j.time_zone) }
                    td { @if j.paused { "paused" } @else { (j.next_run.clone().unwrap_or_default()) } }
                    td {
                        @for (action, label) in [(if j.paused { "resume" } else { "pause" }, if j.paused { "Resume" } else { "Pause" }), ("delete", "Delete")] {
                            form method="post" action={ "/console/jobs/" (j.id) "/" (action) } .action {
                                (csrf_field(&v))
                                button type="submit" data-testid={ "job-" (action) } { (label) }
                            }
                        }
                    }
                }
            } }
        }
        h2 { "New schedule" }
        form method="post" action="/console/jobs" data-testid="job-form" {
            (csrf_field(&v))
            label for="name" { "Name" }
            input id="name" name="name" required data-testid="job-name";
            (selects(&names, &groups))
            label for="cron" { "Cron (sec min hour day month weekday)" }
            input id="cron" name="cron" required placeholder="0 0 2 * * *" data-testid="job-cron";
            label for="time_zone" { "Time zone (default UTC)" }
            input id="time_zone" name="time_zone" placeholder="Europe/Paris" data-testid="job-time-zone";
            button type="submit" data-testid="save-job" { "Create" }
        }
    };
    page(&v, "Schedules", "jobs", &f, body)
}

#[derive(Deserialize)]
struct NewJob {
    csrf: String,
    name: String,
    workflow: String,
    #[serde(default)]
    group_id: String,
    cron: String,
    #[serde(default)]
    time_zone: String,
}

async fn create_job(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Form(f): Form<NewJob>,
) -> Response {
    if let Err(r) = v.check(&f.csrf) {
        return r.into_response();
    }
    let req = json!({"name": f.name, "workflow": f.workflow, "group_id": blank_is_none(&f.group_id),
        "cron": f.cron, "time_zone": blank_is_none(&f.time_zone)});
    let made = match serde_json::from_value(req) {
        Ok(r) => jobs::create(State(state), v.caller.clone(), Body(r)).await,
        Err(e) => Err(ApiError::bad(e.to_string())),
    };
    back(
        "/console/jobs",
        made.map(|(_, Json(j))| format!("Schedule {} created", j.name)),
    )
}

async fn job_action(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = v.check(&f.csrf) {
        return r.into_response();
    }
    let (s, c, p) = (State(state), v.caller.clone(), Path(id));
    let done = match action.as_str() {
        "pause" => jobs::pause(s, c, p)
            .await
            .map(|Json(j)| format!("{} paused", j.name)),
        "resume" => jobs::resume(s, c, p)
            .await
            .map(|Json(j)| format!("{} resumed", j.name)),
        "delete" => jobs::delete(s, c, p)
            .await
            .map(|_| "Schedule deleted".to_string()),
        other => Err(ApiError::NotFound(format!("no action '{other}'"))),
    };
    back("/console/jobs", done)
}

async fn render_webhooks(
    state: Arc<AppState>,
    v: &Viewer,
    f: &Flash,
    secret: Option<(&str, &str)>,
) -> Response {
    let list = match webhooks::list(State(state.clone()), v.caller.clone()).await {
        Ok(Json(l)) => l,
        Err(e) => return back("/console/groups", Err(e)),
    };
    let (names, groups) = choices(&state, v).await;
    let body = html! {
        @if let Some((name, secret)) = secret {
            section .notice role="status" data-testid="webhook-secret" {
                p { "Webhook " strong { (name) } " created. Its signing secret is shown this once; keep it where the sender can use it:" }
                code { (secret) }
            }
        }
        table data-testid="webhooks-table" {
            thead { tr { th { "Name" } th { "Kind" } th { "Workflow" } th { "Path" } th {} } }
            tbody { @for w in &list {
                tr data-testid="webhook-row" {
                    td { (w.name) } td { (w.kind) } td { (w.workflow.clone().unwrap_or_default()) } td { code { (w.path) } }
                    td { form method="post" action={ "/console/webhooks/" (w.id) "/delete" } {
                        (csrf_field(v))
                        button type="submit" data-testid="webhook-delete" { "Delete" }
                    } }
                }
            } }
        }
        h2 { "New webhook" }
        form method="post" action="/console/webhooks" data-testid="webhook-form" {
            (csrf_field(v))
            label for="name" { "Name (the path is /webhooks/<account id>/<name>)" }
            input id="name" name="name" required data-testid="webhook-name";
            label for="kind" { "Kind" }
            select id="kind" name="kind" data-testid="webhook-kind" {
                option value="standard" { "Standard Webhooks: runs the workflow" }
                option value="event_grid" { "Azure Event Grid: key events of the group" }
            }
            (selects(&names, &groups))
            button type="submit" data-testid="save-webhook" { "Create" }
        }
    };
    page(v, "Webhooks", "webhooks", f, body)
}

async fn webhook_list(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Query(f): Query<Flash>,
) -> Response {
    render_webhooks(state, &v, &f, None).await
}

#[derive(Deserialize)]
struct NewWebhook {
    csrf: String,
    name: String,
    kind: String,
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    group_id: String,
}

async fn create_webhook(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Form(f): Form<NewWebhook>,
) -> Response {
    if let Err(r) = v.check(&f.csrf) {
        return r.into_response();
    }
    let standard = f.kind == "standard";
    let req = json!({"name": f.name, "kind": f.kind,
        "workflow": if standard { blank_is_none(&f.workflow) } else { Value::Null },
        "group_id": blank_is_none(&f.group_id)});
    let made = match serde_json::from_value(req) {
        Ok(r) => webhooks::create(State(state.clone()), v.caller.clone(), Body(r)).await,
        Err(e) => Err(ApiError::bad(e.to_string())),
    };
    match made {
        // Rendered, not redirected: the secret must not travel in a URL.
        Ok((_, Json(w))) => {
            let secret = w.secret.clone().unwrap_or_default();
            render_webhooks(state, &v, &Flash::default(), Some((&w.name, &secret))).await
        }
        Err(e) => back("/console/webhooks", Err(e)),
    }
}

async fn delete_webhook(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = v.check(&f.csrf) {
        return r.into_response();
    }
    let done = webhooks::delete(State(state), v.caller.clone(), Path(id)).await;
    back(
        "/console/webhooks",
        done.map(|_| "Webhook deleted".to_string()),
    )
}
