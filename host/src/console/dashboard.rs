//! The console's start page: are my keys healthy? Tiles for what needs attention (rotation
//! overdue or stopped, keys without a policy, what falls due in 30 days, failed scheduled
//! work, drift), charts of keys by state and by group (HSM-held and Keyward-held) and of
//! cryptographic operations per day, and the lists behind the tiles. The figures are the
//! reports of `crate::reports`, the same as `GET /sys/v1/reports/...`, each downloadable as CSV.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};

use super::charts::{self, Bar};
use super::{Flash, Viewer, page};
use crate::api::{ApiError, AppState};
use crate::catalog::sobjects::KeyState;
use crate::reports::{self, Finding, HeldBy, Report, Rows, WINDOW_DAYS};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/dashboard", get(dashboard))
        .route("/console/reports/{report}", get(download))
}

/// Every report, for one caller at one instant.
struct Figures {
    keys: Vec<reports::KeyCountRow>,
    rotation: Vec<reports::RotationRow>,
    failures: Vec<reports::FailureRow>,
    usage: Vec<reports::UsageRow>,
    drift: Vec<reports::DriftRow>,
}

async fn figures(state: &AppState, v: &Viewer) -> Result<Figures, ApiError> {
    let now = state.now();
    let mut f = Figures {
        keys: vec![],
        rotation: vec![],
        failures: vec![],
        usage: vec![],
        drift: vec![],
    };
    for r in Report::ALL {
        match reports::run(&state.catalog, &v.caller.access, r, now).await? {
            Rows::Keys(x) => f.keys = x,
            Rows::Rotation(x) => f.rotation = x,
            Rows::Failures(x) => f.failures = x,
            Rows::Usage(x) => f.usage = x,
            Rows::Drift(x) => f.drift = x,
        }
    }
    Ok(f)
}

fn tile(
    testid: &str,
    label: &str,
    value: impl std::fmt::Display,
    warn: bool,
    href: &str,
) -> Markup {
    html! {
        a .tile .warn[warn] href=(href) data-testid=(testid) {
            span .figure data-testid={ (testid) "-value" } { (value) }
            span .caption { (label) }
        }
    }
}

fn csv_link(report: Report) -> Markup {
    html! {
        a .csv href={ "/console/reports/" (report.as_str()) } download
            data-testid={ "csv-" (report.as_str()) } { "CSV" }
    }
}

async fn dashboard(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Query(flash): Query<Flash>,
) -> Response {
    let f = match figures(&state, &v).await {
        Ok(f) => f,
        Err(e) => {
            let flash = Flash {
                notice: None,
                error: Some(e.to_string()),
            };
            return page(&v, "Dashboard", "dashboard", &flash, html! {});
        }
    };
    let count = |finding: Finding| f.rotation.iter().filter(|r| r.finding == finding).count();
    let total: i64 = f.keys.iter().map(|k| k.count).sum();
    let held = |h: HeldBy| {
        f.keys
            .iter()
            .filter(|k| k.held_by == h)
            .map(|k| k.count)
            .sum::<i64>()
    };
    let by_state: Vec<Bar> = KeyState::ALL
        .iter()
        .map(|s| Bar {
            label: s.as_str().to_string(),
            value: f
                .keys
                .iter()
                .filter(|k| k.state == s.as_str())
                .map(|k| k.count)
                .sum(),
            class: s.as_str(),
        })
        .collect();
    let mut groups: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for k in &f.keys {
        let e = groups.entry(&k.group_name).or_default();
        match k.held_by {
            HeldBy::Hsm => e.0 += k.count,
            HeldBy::Keyward => e.1 += k.count,
        }
    }
    let by_group: Vec<(String, Vec<Bar>)> = groups
        .into_iter()
        .map(|(name, (hsm, own))| {
            let parts = vec![
                Bar {
                    label: "HSM".into(),
                    value: hsm,
                    class: "hsm",
                },
                Bar {
                    label: "Keyward".into(),
                    value: own,
                    class: "keyward",
                },
            ];
            (name.to_string(), parts)
        })
        .collect();
    let ops: Vec<Bar> = f
        .usage
        .iter()
        .map(|u| Bar {
            label: u.day.clone(),
            value: u.operations,
            class: "ops",
        })
        .collect();
    let attention: Vec<&reports::RotationRow> = f
        .rotation
        .iter()
        .filter(|r| matches!(r.finding, Finding::Overdue | Finding::Stopped))
        .collect();
    let due: Vec<&reports::RotationRow> = f
        .rotation
        .iter()
        .filter(|r| matches!(r.finding, Finding::RotationDue | Finding::DeactivationDue))
        .collect();
    let drifted: i64 = f.drift.iter().map(|d| d.drift_events).sum();
    // Applications whose client certificate (or trusted CA) expires within 30 days: DSM
    // shows the date only on the application; here it is where people look first.
    let soon = state.now() + 30 * 86_400;
    let expiring: Vec<crate::api::model::AppOut> =
        crate::api::apps::list(State(state.clone()), v.caller.clone())
            .await
            .map(|axum::Json(l)| l)
            .unwrap_or_default()
            .into_iter()
            .filter(|a| {
                a.cert_not_after
                    .as_deref()
                    .and_then(|t| crate::time::parse_dsm(t).ok())
                    .is_some_and(|t| t < soon)
            })
            .collect();
    let body = html! {
        section .tiles aria-label="At a glance" {
            (tile("tile-keys", "keys", total, false, "/console/keys"))
            (tile("tile-hsm", "held by an HSM", held(HeldBy::Hsm), false, "/console/keys?external=true"))
            (tile("tile-keyward", "held by Keyward", held(HeldBy::Keyward), false, "/console/keys?external=false"))
            (tile("tile-overdue", "past their rotation date", count(Finding::Overdue), count(Finding::Overdue) > 0, "#attention"))
            (tile("tile-stopped", "rotation policies stopped", count(Finding::Stopped), count(Finding::Stopped) > 0, "#attention"))
            (tile("tile-no-policy", "active keys without a rotation policy", count(Finding::NoPolicy), false, "/console/reports/rotation"))
            (tile("tile-due", format!("rotations and deactivations in {WINDOW_DAYS} days").as_str(), due.len(), false, "#due"))
            (tile("tile-failed", format!("failed scheduled runs, {WINDOW_DAYS} days").as_str(), f.failures.len(), !f.failures.is_empty(), "#failures"))
            (tile("tile-drift", format!("keys put back in their HSM, {WINDOW_DAYS} days").as_str(), drifted, drifted > 0, "#drift"))
            (tile("tile-app-certs", "application certificates expiring in 30 days", expiring.len(), !expiring.is_empty(), "#app-certs"))
        }
        div .charts {
            figure {
                figcaption { "Keys by state " (csv_link(Report::Keys)) }
                (charts::bars("chart-states", "Keys by state", &by_state))
            }
            figure {
                figcaption { "Keys by group: " span .key-hsm { "HSM" } " and " span .key-keyward { "Keyward" } }
                (charts::stacked("chart-groups", "Keys by group, held by an HSM or by Keyward", &by_group))
            }
            figure {
                figcaption { "Cryptographic operations per day, last " (WINDOW_DAYS) " days " (csv_link(Report::Usage)) }
                (charts::columns("chart-ops", "Cryptographic operations per day", &ops))
            }
        }
        h2 #attention { "Rotation needs attention " (csv_link(Report::Rotation)) }
        (key_table("attention-table", &attention))
        h2 #due { "Due in the next " (WINDOW_DAYS) " days" }
        (key_table("due-table", &due))
        h2 #failures { "Failed scheduled work " (csv_link(Report::Failures)) }
        table data-testid="failures-table" {
            thead { tr { th { "Kind" } th { "Name" } th { "Group" } th { "Due" } th { "Error" } } }
            tbody { @for r in &f.failures {
                tr data-testid="failure-row" {
                    td { (r.kind) }
                    td { @if r.kind == "rotation" { a href={ "/console/keys/" (r.target_id) } { (r.name.clone().unwrap_or_default()) } } @else { (r.name.clone().unwrap_or_default()) } }
                    td { (r.group_name.clone().unwrap_or_default()) }
                    td { (r.due_at) }
                    td { (r.error.clone().unwrap_or_default()) }
                }
            } }
        }
        h2 #drift { "HSM groups: last sync and drift " (csv_link(Report::Drift)) }
        table data-testid="drift-table" {
            thead { tr { th { "Group" } th { "Last sync" } th { "Status" } th { "Added" } th { "Not added" } th { "Found deleted" } th { "Found purged" } th { "Put back (drift)" } } }
            tbody { @for d in &f.drift {
                tr data-testid="drift-row" {
                    td { a href={ "/console/groups/" (d.group_id) } { (d.group_name) } }
                    td { (d.last_sync_at.clone().unwrap_or_else(|| "never".into())) }
                    td { (d.last_sync_status.clone().unwrap_or_default()) }
                    td { (d.keys_added) } td { (d.keys_failed) } td { (d.marked_deleted) } td { (d.marked_purged) }
                    td data-testid="drift-events" { (d.drift_events) }
                }
            } }
        }
        h2 #app-certs { "Application certificates expiring in 30 days" }
        table data-testid="app-certs-table" {
            thead { tr { th { "Application" } th { "Certificate" } th { "Expires" } } }
            tbody { @for a in &expiring {
                tr data-testid="app-cert-row" {
                    td { a href={ "/console/apps/" (a.app_id) } { (a.name) } }
                    td { (a.cert_subject.clone().unwrap_or_default()) }
                    td { (a.cert_not_after.clone().unwrap_or_default()) }
                }
            } }
        }
    };
    page(&v, "Dashboard", "dashboard", &flash, body)
}

/// A report as CSV, for the console's session (the API's answers the same with a token).
async fn download(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    Path(name): Path<String>,
) -> Response {
    let Some(report) = Report::parse(&name) else {
        return ApiError::NotFound(format!("no report '{name}'")).into_response();
    };
    match reports::run(&state.catalog, &v.caller.access, report, state.now()).await {
        Ok(rows) => crate::api::reports::csv_download(report, &rows).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn key_table(testid: &str, rows: &[&reports::RotationRow]) -> Markup {
    html! {
        table data-testid=(testid) {
            thead { tr { th { "Key" } th { "Group" } th { "Finding" } th { "Date" } th { "Error" } } }
            tbody { @for r in rows {
                tr data-testid={ (testid) "-row" } {
                    td { a href={ "/console/keys/" (r.kid) } { (r.name) } }
                    td { (r.group_name) }
                    td { (finding(r.finding)) }
                    td { (r.at.clone().unwrap_or_default()) }
                    td { (r.error.clone().unwrap_or_default()) }
                }
            } }
        }
    }
}

fn finding(f: Finding) -> &'static str {
    match f {
        Finding::Overdue => "rotation overdue",
        Finding::Stopped => "policy stopped after failures",
        Finding::NoPolicy => "no rotation policy",
        Finding::RotationDue => "rotation due",
        Finding::DeactivationDue => "deactivation due",
    }
}
