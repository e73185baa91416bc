//! Sessions: authenticate (a user's email and password, or an application's API key, with
//! HTTP Basic; failed logins throttled per account name and source address), refresh, select
//! the account to act in, terminate.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::Event;
use crate::auth::certs::{self, Presented};
use crate::auth::{ApiKey, Principal, Session, verify_password_or_dummy};
use crate::catalog::apps::App;
use crate::catalog::{accounts, apps, users};

use super::client_certs::ClientCert;
use super::extract::{Body, Caller, ClientAddr};
use super::{ApiError, ApiResult, AppState};

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthResponse {
    pub token_type: &'static str,
    /// Seconds until the session expires unless refreshed.
    pub expires_in: u32,
    pub access_token: String,
    /// The user or application id.
    pub entity_id: String,
    /// The account the session acts in.
    pub acct_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectAccount {
    #[schema(schema_with = super::schemas::id)]
    pub acct_id: String,
}

/// What `GET /sys/v1/health` says: for load balancers (503 takes the daemon out) and for
/// operators (which daemon, which database server, what it holds).
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthOut {
    /// `ok`, or `unavailable` when the catalog database does not answer (with 503).
    pub status: &'static str,
    /// This daemon's id (in its leases and claims).
    pub daemon_id: String,
    pub database: DatabaseHealth,
    /// Leases of singleton work this daemon holds (by the database's clock).
    pub leases: Vec<LeaseOut>,
    /// Scheduled work this daemon has claimed (fires of rotations and jobs, rotation steps).
    pub claims: Vec<ClaimOut>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseHealth {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The PostgreSQL server in use (of several, the primary found).
    pub host: Option<String>,
    pub reachable: bool,
    /// Why it is not reachable.
    pub error: Option<String>,
    /// The catalog's schema version.
    pub schema_version: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseOut {
    pub name: String,
    /// What holds it, e.g. a workflow run's id.
    pub detail: Option<String>,
    /// Unix milliseconds, by the database's clock.
    pub valid_until_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimOut {
    pub name: String,
    /// When the claim lapses unless renewed (Unix seconds).
    pub until: i64,
}

#[utoipa::path(get, path = "/sys/v1/health", tag = "session", responses(
    (status = 200, body = HealthOut, description = "The daemon and its database are up"),
    (status = 503, body = HealthOut, description = "The catalog database does not answer")))]
pub async fn health(State(state): State<Arc<AppState>>) -> (StatusCode, Json<HealthOut>) {
    let catalog = &state.catalog;
    let reached = catalog.standing(&state.daemon_id, state.now()).await;
    let (status, reachable, error, version, leases, claims) = match reached {
        Ok(s) => (
            StatusCode::OK,
            true,
            None,
            Some(s.schema_version),
            s.leases,
            s.claims,
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            false,
            Some(e.to_string()),
            None,
            vec![],
            vec![],
        ),
    };
    let out = HealthOut {
        status: if reachable { "ok" } else { "unavailable" },
        daemon_id: state.daemon_id.clone(),
        database: DatabaseHealth {
            backend: catalog.backend().name(),
            host: catalog.current_host(),
            reachable,
            error,
            schema_version: version,
        },
        leases: leases
            .into_iter()
            .map(|l| LeaseOut {
                name: l.name,
                detail: l.detail,
                valid_until_ms: l.valid_until,
            })
            .collect(),
        claims: claims
            .into_iter()
            .map(|c| ClaimOut {
                name: c.name,
                until: c.until,
            })
            .collect(),
    };
    (status, Json(out))
}

/// DSM's `VersionResponse`: DSM clients read it before anything else.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionOut {
    /// This daemon's version, `major.minor.patch`.
    pub version: &'static str,
    /// The DSM API version the endpoints follow.
    pub api_version: &'static str,
    /// `Software`: keys are protected by the catalog's sealing, not an enclave.
    pub server_mode: &'static str,
}

#[utoipa::path(get, path = "/sys/v1/version", tag = "session", responses((status = 200, body = VersionOut, description = "The service version, as DSM reports it")))]
pub async fn version() -> Json<VersionOut> {
    Json(VersionOut {
        version: env!("CARGO_PKG_VERSION"),
        api_version: "1.0",
        server_mode: "Software",
    })
}

fn response(state: &AppState, token: String, s: &Session) -> AuthResponse {
    AuthResponse {
        token_type: "Bearer",
        expires_in: (s.expires_at - state.now()).max(0) as u32,
        access_token: token,
        entity_id: s.principal.id().to_string(),
        acct_id: s.account_id.clone(),
    }
}

fn invalid() -> ApiError {
    ApiError::Unauthorized("invalid credentials".into())
}

/// `Authorization: Basic base64(email:password)` for users, `Authorization: Basic <api key>`
/// for applications.
#[utoipa::path(post, path = "/sys/v1/session/auth", tag = "session",
    responses((status = 200, body = AuthResponse), (status = 401, body = super::error::ErrorBody)))]
pub async fn auth(
    State(state): State<Arc<AppState>>,
    ClientAddr(address): ClientAddr,
    ClientCert(presented): ClientCert,
    headers: HeaderMap,
) -> ApiResult<Json<AuthResponse>> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Unauthorized("HTTP Basic credentials are required".into()))?;
    let (scheme, credentials) = value.split_once(' ').ok_or_else(invalid)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::Unauthorized(
            "use HTTP Basic: email:password, or the application's API key".into(),
        ));
    }
    let credentials = credentials.trim();
    let decoded = STANDARD
        .decode(credentials)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid)?;
    let (name, secret) = decoded.split_once(':').ok_or_else(invalid)?;
    let now = state.now();
    let by_certificate = !name.contains('@') && secret.is_empty();
    let login = if name.contains('@') || by_certificate {
        name.to_string()
    } else {
        ApiKey::parse(credentials).map_or_else(String::new, |k| k.app_id)
    };
    if let Err(retry_after) = state.logins.check(&login, address).await? {
        return Err(ApiError::TooManyRequests {
            message: format!(
                "too many failed logins for this account or from this address; try again in {retry_after} s"
            ),
            retry_after,
        });
    }
    let result = if by_certificate {
        authenticate_certificate(&state, name, presented.as_deref(), now).await
    } else {
        authenticate(&state, credentials, name, secret, now).await
    };
    match &result {
        Ok(_) => state.logins.succeeded(&login).await?,
        Err(ApiError::Unauthorized(_)) => state.logins.failed(&login, address).await?,
        Err(_) => {}
    }
    result
}

async fn authenticate(
    state: &AppState,
    credentials: &str,
    name: &str,
    secret: &str,
    now: i64,
) -> ApiResult<Json<AuthResponse>> {
    if name.contains('@') {
        let mut conn = state.catalog.conn().await?;
        let user = users::get_by_email(&mut conn, name).await?;
        let memberships = match &user {
            Some(u) => accounts::for_user(&mut conn, &u.id).await?,
            None => vec![],
        };
        drop(conn);
        let (hash, pw) = (
            user.as_ref().map(|u| u.password_hash.clone()),
            secret.to_string(),
        );
        let ok =
            tokio::task::spawn_blocking(move || verify_password_or_dummy(hash.as_deref(), &pw))
                .await
                .unwrap_or(false);
        let Some(user) = user.filter(|_| ok) else {
            if let Some((account, _)) = memberships.first() {
                let actor = Principal::User {
                    user_id: "unknown".into(),
                    email: String::new(),
                };
                state
                    .audit
                    .later(
                        Event::new(Some(&account.id), &actor, "session.auth", now)
                            .outcome("denied", "invalid credentials"),
                    )
                    .await;
            }
            return Err(invalid());
        };
        let principal = Principal::User {
            user_id: user.id.clone(),
            email: user.email.clone(),
        };
        let account = memberships.first().map(|(a, _)| a.id.clone());
        let mut tx = state.catalog.begin().await?;
        users::set_last_login(&mut tx, &user.id, now).await?;
        for (a, _) in &memberships {
            Event::new(Some(&a.id), &principal, "session.auth", now)
                .object("user", &user.id)
                .write(&mut tx)
                .await?;
        }
        tx.commit().await?;
        let (token, session) = state.sessions.create(principal, account, None).await?;
        return Ok(Json(response(state, token, &session)));
    }

    let key = ApiKey::parse(credentials).ok_or_else(invalid)?;
    if !crate::catalog::is_id(&key.app_id) {
        return Err(invalid());
    }
    let app = app_to_log_in(state, &key.app_id, false, now).await?;
    let principal = Principal::App {
        app_id: app.id.clone(),
        name: app.name.clone(),
    };
    if !key.matches(&app.api_key_hash) {
        return Err(refuse_app(state, &app, "invalid API key", now).await);
    }
    state
        .audit
        .later(
            Event::new(Some(&app.account_id), &principal, "session.auth", now)
                .object("app", &app.id),
        )
        .await;
    let (token, session) = state
        .sessions
        .create(principal, Some(app.account_id.clone()), None)
        .await?;
    Ok(Json(response(state, token, &session)))
}

/// The application `app_id` names, when it is enabled and logs in this way (by certificate,
/// or by API key).
async fn app_to_log_in(
    state: &AppState,
    app_id: &str,
    by_certificate: bool,
    now: i64,
) -> ApiResult<App> {
    let mut conn = state.catalog.conn().await?;
    let app = apps::get_for_login(&mut conn, app_id)
        .await?
        .ok_or_else(invalid)?;
    drop(conn);
    let why = match (by_certificate, app.credential.is_some()) {
        (false, true) => "the application logs in with its client certificate, not an API key",
        (true, false) => "the application logs in with its API key, not a client certificate",
        _ if !app.enabled => "the application is disabled",
        _ => return Ok(app),
    };
    Err(refuse_app(state, &app, why, now).await)
}

/// A refused application login: audited with the reason, answered without it.
async fn refuse_app(state: &AppState, app: &App, why: &str, now: i64) -> ApiError {
    let principal = Principal::App {
        app_id: app.id.clone(),
        name: app.name.clone(),
    };
    state
        .audit
        .later(
            Event::new(Some(&app.account_id), &principal, "session.auth", now)
                .outcome("denied", why),
        )
        .await;
    if app.enabled {
        invalid()
    } else {
        ApiError::Unauthorized("the application is disabled".into())
    }
}

/// DSM's certificate login: `Basic base64(<app_id>:)` over a connection that presented the
/// application's certificate (or through a trusted proxy that did). The session is bound to
/// that certificate.
async fn authenticate_certificate(
    state: &AppState,
    app_id: &str,
    presented: Option<&Presented>,
    now: i64,
) -> ApiResult<Json<AuthResponse>> {
    if !crate::catalog::is_id(app_id) {
        return Err(invalid());
    }
    let app = app_to_log_in(state, app_id, true, now).await?;
    let credential = app
        .credential
        .as_ref()
        .expect("a certificate application has its credential");
    let checked = match state.client_certs.crl_of(credential).await {
        Ok(crl) => certs::check(credential, presented, now, crl.as_deref()),
        Err(refusal) => Err(refusal),
    };
    if let Err(refusal) = checked {
        return Err(refuse_app(state, &app, &refusal.to_string(), now).await);
    }
    let presented = presented.expect("a checked certificate was presented");
    let principal = Principal::App {
        app_id: app.id.clone(),
        name: app.name.clone(),
    };
    state
        .audit
        .later(
            Event::new(Some(&app.account_id), &principal, "session.auth", now)
                .object("app", &app.id)
                .details(serde_json::json!({
                    "method": "certificate",
                    "subject": certs::subject_text(presented.leaf()),
                    "sha256": hex::encode(presented.thumbprint()),
                })),
        )
        .await;
    let (token, session) = state
        .sessions
        .create(
            principal,
            Some(app.account_id.clone()),
            Some(presented.thumbprint()),
        )
        .await?;
    Ok(Json(response(state, token, &session)))
}

#[utoipa::path(post, path = "/sys/v1/session/terminate", tag = "session", responses((status = 204)))]
pub async fn terminate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let token = super::extract::bearer(&headers)
        .ok_or_else(|| ApiError::Unauthorized("a bearer token is required".into()))?;
    if state.sessions.terminate(&token).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::Unauthorized(
            "the session is unknown or has expired".into(),
        ))
    }
}

#[utoipa::path(post, path = "/sys/v1/session/refresh", tag = "session", responses((status = 200, body = AuthResponse)))]
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<AuthResponse>> {
    let session = state
        .sessions
        .refresh(&caller.token)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the session is unknown or has expired".into()))?;
    Ok(Json(response(&state, caller.token, &session)))
}

/// Users with several accounts choose which one the session acts in.
#[utoipa::path(post, path = "/sys/v1/session/select_account", tag = "session", request_body = SelectAccount,
    responses((status = 200, body = AuthResponse), (status = 403, body = super::error::ErrorBody)))]
pub async fn select_account(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Body(req): Body<SelectAccount>,
) -> ApiResult<Json<AuthResponse>> {
    let token = super::extract::bearer(&headers)
        .ok_or_else(|| ApiError::Unauthorized("a bearer token is required".into()))?;
    let session =
        state.sessions.get(&token).await?.ok_or_else(|| {
            ApiError::Unauthorized("the session is unknown or has expired".into())
        })?;
    let Principal::User { user_id, .. } = &session.principal else {
        return Err(ApiError::Forbidden(
            "applications belong to one account".into(),
        ));
    };
    super::extract::id("account", &req.acct_id)?;
    let mut conn = state.catalog.conn().await?;
    if accounts::member_role(&mut conn, &req.acct_id, user_id)
        .await?
        .is_none()
    {
        return Err(ApiError::Forbidden(
            "you are not a member of that account".into(),
        ));
    }
    let session = state
        .sessions
        .select_account(&token, &req.acct_id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the session has expired".into()))?;
    Ok(Json(response(&state, token, &session)))
}

/// `GET /metrics`, without a session, as Prometheus scrapes; it says how much the API is
/// used, nothing of what is in the catalog.
#[utoipa::path(get, path = "/metrics", tag = "session",
    responses((status = 200, description = "OpenMetrics text",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn scrape(State(state): State<Arc<AppState>>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
