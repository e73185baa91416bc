//! The REST API, in the style of Fortanix DSM: `/sys/v1/...` for accounts, users,
//! applications, groups, sessions, workflows, cron jobs, webhooks, notification endpoints and
//! the audit log; `/crypto/v1/...` for keys (their rotation included) and cryptographic
//! operations; `/webhooks/{account_id}/{name}` for webhook deliveries. Times are
//! `YYYYMMDDTHHMMSSZ`, binary values standard base64.
//!
//! Handlers live in one module per resource; [`state::AppState`] holds what they share;
//! [`extract`] authenticates callers and parses bodies; [`error::ApiError`] maps every failure
//! to one status and a JSON body naming the problem.

pub mod accounts;
pub mod approvals;
pub mod apps;
pub mod audit;
pub mod byok;
pub mod client_certs;
pub mod crypto_ops;
pub mod error;
pub mod external_keys;
pub mod extract;
pub mod groups;
pub mod hmg;
pub mod jobs;
pub mod keys;
pub mod links;
pub mod model;
pub mod notifications;
pub mod openapi;
pub mod plugins;
pub mod reports;
pub mod rotation;
pub mod schemas;
pub mod session;
pub mod state;
pub mod transport;
pub mod users;
pub mod webhooks;
pub mod workflows;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;

pub use error::{ApiError, ApiResult};
pub use state::AppState;

/// Largest accepted request body.
pub const MAX_BODY: usize = 256 * 1024;

/// The API's routes, with `faces` (routes of layers above the API, such as the console,
/// which the daemon adds) served beside them under the same fallbacks, body limit and
/// metrics.
pub fn router(state: Arc<AppState>, faces: Router<Arc<AppState>>) -> Router {
    Router::new()
        .route("/sys/v1/health", get(session::health))
        .route("/sys/v1/version", get(session::version))
        .route("/sys/v1/plugins", get(plugins::list))
        .route("/sys/v1/reports/keys", get(reports::keys))
        .route("/sys/v1/reports/rotation", get(reports::rotation))
        .route("/sys/v1/reports/failures", get(reports::failures))
        .route("/sys/v1/reports/usage", get(reports::usage))
        .route("/sys/v1/reports/drift", get(reports::drift))
        .route("/metrics", get(session::scrape))
        .route("/sys/v1/openapi.json", get(openapi::document))
        .route("/sys/v1/session/auth", post(session::auth))
        .route("/sys/v1/session/terminate", post(session::terminate))
        .route("/sys/v1/session/refresh", post(session::refresh))
        .route(
            "/sys/v1/session/select_account",
            post(session::select_account),
        )
        .route("/sys/v1/users", get(users::list).post(users::signup))
        .route("/sys/v1/users/invite", post(users::invite))
        .route(
            "/sys/v1/users/{id}",
            get(users::get).patch(users::update).delete(users::remove),
        )
        .route(
            "/sys/v1/accounts",
            get(accounts::list).post(accounts::create),
        )
        .route(
            "/sys/v1/accounts/{id}",
            get(accounts::get)
                .patch(accounts::update)
                .delete(accounts::delete),
        )
        .route("/sys/v1/apps", get(apps::list).post(apps::create))
        .route(
            "/sys/v1/apps/{id}",
            get(apps::get).patch(apps::update).delete(apps::delete),
        )
        .route("/sys/v1/apps/{id}/reset_secret", post(apps::reset_secret))
        .route("/sys/v1/apps/{id}/credential", get(apps::credential))
        .route("/sys/v1/groups", get(groups::list).post(groups::create))
        .route(
            "/sys/v1/groups/{id}",
            get(groups::get)
                .patch(groups::update)
                .delete(groups::delete),
        )
        .route("/sys/v1/groups/hmg/azure_vaults", post(hmg::azure_vaults))
        .route("/sys/v1/groups/hmg/check", post(hmg::check_config))
        .route("/sys/v1/groups/{id}/hmg/check", post(hmg::check_group))
        .route("/sys/v1/groups/{id}/hmg/scan", post(hmg::scan))
        .route(
            "/sys/v1/groups/{id}/hmg/scans",
            get(hmg::scans).post(hmg::start_scan),
        )
        .route(
            "/sys/v1/groups/{id}/hmg/scans/{scan_id}",
            get(hmg::get_scan),
        )
        .route("/sys/v1/workflows", get(workflows::list))
        .route(
            "/sys/v1/workflows/{name}",
            get(workflows::get)
                .put(workflows::put)
                .delete(workflows::revert),
        )
        .route("/sys/v1/workflows/{name}/check", post(workflows::check))
        .route("/sys/v1/workflows/{name}/run", post(workflows::start))
        .route(
            "/sys/v1/workflows/{name}/versions",
            get(workflows::versions),
        )
        .route(
            "/sys/v1/workflows/{name}/versions/{version}",
            get(workflows::version),
        )
        .route(
            "/sys/v1/workflows/{name}/versions/{version}/restore",
            post(workflows::restore),
        )
        .route("/sys/v1/workflow_runs", get(workflows::runs))
        .route("/sys/v1/workflow_runs/{id}", get(workflows::run))
        .route("/sys/v1/logs", get(audit::query))
        .route("/sys/v1/jobs", get(jobs::list).post(jobs::create))
        .route("/sys/v1/jobs/{id}", get(jobs::get).delete(jobs::delete))
        .route("/sys/v1/jobs/{id}/pause", post(jobs::pause))
        .route("/sys/v1/jobs/{id}/resume", post(jobs::resume))
        .route("/sys/v1/jobs/{id}/fires", get(jobs::fires))
        .route(
            "/sys/v1/webhooks",
            get(webhooks::list).post(webhooks::create),
        )
        .route(
            "/sys/v1/webhooks/{id}",
            get(webhooks::get).delete(webhooks::delete),
        )
        .route(
            "/sys/v1/webhooks/{id}/rotate_secret",
            post(webhooks::rotate_secret),
        )
        .route(
            "/sys/v1/webhooks/{id}/deliveries",
            get(webhooks::deliveries),
        )
        .route(
            "/webhooks/{account_id}/{name}",
            post(webhooks::deliver).options(webhooks::handshake),
        )
        .route(
            "/sys/v1/approval_requests",
            get(approvals::list).post(approvals::create),
        )
        .route(
            "/sys/v1/approval_requests/{id}",
            get(approvals::get).delete(approvals::withdraw),
        )
        .route(
            "/sys/v1/approval_requests/{id}/approve",
            post(approvals::approve),
        )
        .route("/sys/v1/approval_requests/{id}/deny", post(approvals::deny))
        .route(
            "/sys/v1/approval_requests/{id}/result",
            post(approvals::result),
        )
        .route(
            "/sys/v1/notification_endpoints",
            get(notifications::list).post(notifications::create),
        )
        .route(
            "/sys/v1/notification_endpoints/{id}",
            get(notifications::get).delete(notifications::delete),
        )
        .route(
            "/sys/v1/notification_endpoints/{id}/enable",
            post(notifications::enable),
        )
        .route(
            "/sys/v1/notification_endpoints/{id}/disable",
            post(notifications::disable),
        )
        .route(
            "/sys/v1/notification_endpoints/{id}/messages",
            get(notifications::messages),
        )
        .route(
            "/crypto/v1/keys",
            get(keys::list).post(keys::create).put(keys::import),
        )
        .route("/crypto/v1/keys/info", post(keys::info))
        .route("/crypto/v1/keys/export", post(keys::export))
        .route("/crypto/v1/keys/copy", post(external_keys::copy))
        .route("/crypto/v1/keys/rekey", post(rotation::rekey))
        .route("/crypto/v1/keys/{kid}/rekey", post(rotation::rekey_kid))
        .route("/crypto/v1/keys/{kid}/rotations", get(rotation::history))
        .route(
            "/crypto/v1/keys/{kid}/copy_name",
            get(external_keys::copy_name),
        )
        .route(
            "/crypto/v1/keys/{kid}/schedule_deletion",
            post(external_keys::schedule_deletion),
        )
        .route(
            "/crypto/v1/keys/{kid}/recover",
            post(external_keys::recover),
        )
        .route(
            "/crypto/v1/keys/{kid}/restore",
            post(external_keys::restore),
        )
        .route(
            "/crypto/v1/keys/{kid}/delete_key_material",
            post(external_keys::purge),
        )
        .route(
            "/crypto/v1/keys/{kid}",
            get(keys::get).patch(keys::update).delete(keys::delete),
        )
        .route("/crypto/v1/keys/{kid}/export", get(keys::export_kid))
        .route("/crypto/v1/keys/{kid}/byok", post(byok::byok))
        .route("/crypto/v1/keys/{kid}/activate", post(keys::activate))
        .route("/crypto/v1/keys/{kid}/deactivate", post(keys::deactivate))
        .route("/crypto/v1/keys/{kid}/revoke", post(keys::revoke))
        .route("/crypto/v1/keys/{kid}/destroy", post(keys::destroy))
        .route(
            "/crypto/v1/keys/{kid}/encrypt",
            post(crypto_ops::encrypt_with),
        )
        .route(
            "/crypto/v1/keys/{kid}/decrypt",
            post(crypto_ops::decrypt_with),
        )
        .route("/crypto/v1/keys/{kid}/sign", post(crypto_ops::sign_with))
        .route(
            "/crypto/v1/keys/{kid}/verify",
            post(crypto_ops::verify_with),
        )
        .route("/crypto/v1/keys/{kid}/wrapkey", post(crypto_ops::wrap_with))
        .route(
            "/crypto/v1/keys/{kid}/unwrapkey",
            post(crypto_ops::unwrap_with),
        )
        .route("/crypto/v1/encrypt", post(crypto_ops::encrypt))
        .route("/crypto/v1/decrypt", post(crypto_ops::decrypt))
        .route("/crypto/v1/sign", post(crypto_ops::sign))
        .route("/crypto/v1/verify", post(crypto_ops::verify))
        .route("/crypto/v1/wrapkey", post(crypto_ops::wrap))
        .route("/crypto/v1/unwrapkey", post(crypto_ops::unwrap))
        .route_layer(axum::middleware::from_fn(
            extract::refuse_empty_query_values,
        ))
        .merge(faces)
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        // axum adds the `Allow` header with the endpoint's methods to this answer.
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this endpoint".into())
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(extract::refuse_nul_in_uri))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
}

/// Where the API is served: plain HTTP, or HTTPS.
pub enum ApiListener {
    Plain(TcpListener),
    Tls(transport::TlsListener),
}

impl ApiListener {
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self {
            ApiListener::Plain(l) => l.local_addr(),
            ApiListener::Tls(l) => axum::serve::Listener::local_addr(l),
        }
    }
}

/// Serves the API (and `faces`, see [`router`]) on `listener` until `shutdown` completes,
/// then flushes the audit log.
pub async fn serve(
    listener: ApiListener,
    state: Arc<AppState>,
    faces: Router<Arc<AppState>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let audit = state.audit.clone();
    let app = router(state, faces).into_make_service_with_connect_info::<transport::PeerAddr>();
    match listener {
        ApiListener::Plain(l) => axum::serve(l, app).with_graceful_shutdown(shutdown).await?,
        ApiListener::Tls(l) => axum::serve(l, app).with_graceful_shutdown(shutdown).await?,
    }
    audit.flush_within(std::time::Duration::from_secs(30)).await;
    Ok(())
}
