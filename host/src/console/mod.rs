//! The web console at `/console`: server-rendered HTML (maud) over the same handlers as the
//! REST API — a page calls the API handler in-process and renders its typed answer, so no
//! rule lives twice. Same origin as the API; a session cookie (`HttpOnly; Secure;
//! SameSite=Strict`) carries the session token, every form carries a CSRF token derived from
//! it, and every page is served with a strict Content-Security-Policy (scripts and styles
//! only from `/console/static`, no inline code). The one script, `static/console.js`, is the
//! project's own: test connection and sync progress.
//!
//! - `dashboard` (the start page) and `charts`: key health at a glance, as SVG drawn here.
//! - `groups`: groups, adding one with its Azure link, the HSM/KMS tab (TLS files, client
//!   certificate), test, sync; `group_settings`: policies as forms, attached plugins, export.
//! - `keys`: the security objects table and the key detail tabs; `key_forms`: adding keys
//!   (every field, file upload, KEK); `key_actions`: the key page's actions.
//! - `admin`: workflows (editing with compile errors shown), audit log.
//! - `people`: accounts (create, switch), users (invite, roles), applications (permissions
//!   per group, secrets shown once).
//! - `automation`: schedules (cron jobs) and webhooks.

mod admin;
mod approvals;
mod automation;
mod charts;
mod dashboard;
mod group_settings;
mod groups;
mod key_actions;
mod key_forms;
mod keys;
mod people;

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::extract::{Caller, ClientAddr};
use crate::api::{ApiError, AppState};

const SESSION_COOKIE: &str = "keyward_console";
const LOGIN_COOKIE: &str = "keyward_login_csrf";

/// Scripts and styles from our own origin only; no inline code, no frames, forms post here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/dashboard") }),
        )
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/static/console.js", get(script))
        .route("/console/static/console.css", get(style))
        .merge(dashboard::routes())
        .merge(groups::routes())
        .merge(group_settings::routes())
        .merge(keys::routes())
        .merge(key_forms::routes())
        .merge(key_actions::routes())
        .merge(admin::routes())
        .merge(people::routes())
        .merge(automation::routes())
        .merge(approvals::routes())
        .layer(axum::middleware::map_response(secure_headers))
}

async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn script() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("static/console.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("static/console.css"),
    )
}

/// The CSRF token of a session: a hash of its token, so it needs no storage and an attacker
/// who cannot read the (HttpOnly) cookie cannot make it.
fn csrf_of(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(format!("keyward console csrf:{token}")))
}

fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The signed-in user of a console request (or a redirect to the login page). Handlers that
/// change state check its CSRF token (`check` for forms, `check_header` for the script's
/// calls); reads need none.
pub struct Viewer {
    pub caller: Caller,
    pub csrf: String,
    /// Approval requests waiting for this viewer's review (the navigation's badge).
    pub awaiting: usize,
}

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let jar = CookieJar::from_headers(&parts.headers);
        let to_login = || Redirect::to("/console/login").into_response();
        let token = jar
            .get(SESSION_COOKIE)
            .map(|c| c.value().to_string())
            .ok_or_else(to_login)?;
        let caller = Caller::from_token(state, &token)
            .await
            .map_err(|_| to_login())?;
        let awaiting = crate::api::approvals::awaiting_review(state, &caller)
            .await
            .unwrap_or(0);
        Ok(Viewer {
            csrf: csrf_of(&token),
            caller,
            awaiting,
        })
    }
}

impl Viewer {
    /// Checks a form's CSRF token.
    pub fn check(&self, csrf: &str) -> Result<(), Refused> {
        if same(csrf, &self.csrf) {
            Ok(())
        } else {
            Err(Refused("the form is out of date: reload the page"))
        }
    }

    /// Checks the CSRF token the page's script sends in `x-csrf-token`.
    pub fn check_header(&self, headers: &HeaderMap) -> Result<(), Refused> {
        self.check(
            headers
                .get("x-csrf-token")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default(),
        )
    }

    pub fn is_admin(&self) -> bool {
        self.caller.access.is_account_admin()
    }
}

/// A request the console refuses (403), such as a form without its CSRF token.
pub struct Refused(&'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        forbidden(self.0)
    }
}

fn forbidden(message: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        bare_page("Refused", html! { p role="alert" { (message) } }),
    )
        .into_response()
}

/// Where a form goes after it was handled: back to a page, with a notice or an error shown.
pub fn back(to: &str, outcome: Result<String, ApiError>) -> Response {
    let (kind, text) = match outcome {
        Ok(t) => ("notice", t),
        Err(e) => ("error", e.to_string()),
    };
    let sep = if to.contains('?') { '&' } else { '?' };
    let text = percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC);
    let location = format!("{to}{sep}{kind}={text}");
    // `to` holds ids from the request's path: one that cannot be a header value (control
    // characters) goes to the console's start instead of failing the request.
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, v)]).into_response(),
        Err(_) => Redirect::to("/console/groups").into_response(),
    }
}

/// The banner of a page: the notice or error a form left.
#[derive(Debug, Default, Deserialize)]
pub struct Flash {
    pub notice: Option<String>,
    pub error: Option<String>,
}

fn flash(f: &Flash) -> Markup {
    html! {
        @if let Some(n) = &f.notice { p .notice role="status" data-testid="notice" { (n) } }
        @if let Some(e) = &f.error { p .error role="alert" data-testid="error" { (e) } }
    }
}

/// The frame of every signed-in page.
pub fn page(v: &Viewer, title: &str, section: &str, f: &Flash, body: Markup) -> Response {
    let nav = [
        ("dashboard", "Dashboard"),
        ("groups", "Groups"),
        ("keys", "Security objects"),
        ("workflows", "Workflows"),
        ("jobs", "Schedules"),
        ("webhooks", "Webhooks"),
        ("users", "Users"),
        ("accounts", "Accounts"),
        ("plugins", "Plugins"),
        ("apps", "Applications"),
        ("approvals", "Approvals"),
        ("audit", "Audit log"),
    ];
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(v.csrf);
                title { (title) " · Keyward" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/console.js" defer {}
            }
            body {
                header {
                    a .brand href="/console/dashboard" { "Keyward" }
                    nav aria-label="Main" {
                        @for (id, label) in nav {
                            a href={ "/console/" (id) } data-testid={ "nav-" (id) }
                                aria-current=[(id == section).then_some("page")] {
                                    (label)
                                    @if id == "approvals" && v.awaiting > 0 {
                                        " " span .badge data-testid="approvals-badge"
                                            aria-label="waiting for your review" { (v.awaiting) }
                                    }
                                }
                        }
                    }
                    form method="post" action="/console/logout" {
                        input type="hidden" name="csrf" value=(v.csrf);
                        button type="submit" data-testid="logout" { "Log out" }
                    }
                }
                main {
                    h1 { (title) }
                    (flash(f))
                    (body)
                }
            }
        }
    };
    markup.into_response()
}

fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · Keyward" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body { main .narrow { h1 { (title) } (body) } }
        }
    }
}

/// A hidden CSRF field for a form.
pub fn csrf_field(v: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(v.csrf); }
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    csrf: String,
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    error: Option<String>,
}

async fn login_page(
    jar: CookieJar,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    // A login form's CSRF token: a random cookie the form repeats (before there is a session).
    let token = URL_SAFE_NO_PAD.encode(keyward_crypto::random_bytes(24));
    let cookie = Cookie::build((LOGIN_COOKIE, token.clone()))
        .path("/console")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .build();
    let body = html! {
        @if let Some(e) = &q.error { p .error role="alert" data-testid="error" { (e) } }
        form method="post" action="/console/login" data-testid="login-form" {
            input type="hidden" name="csrf" value=(token);
            label for="email" { "Email" }
            input id="email" name="email" type="email" autocomplete="username" required data-testid="login-email";
            label for="password" { "Password" }
            input id="password" name="password" type="password" autocomplete="current-password" required data-testid="login-password";
            button type="submit" data-testid="login-submit" { "Sign in" }
        }
    };
    (jar.add(cookie), bare_page("Sign in to Keyward", body)).into_response()
}

async fn login(
    State(state): State<Arc<AppState>>,
    addr: ClientAddr,
    jar: CookieJar,
    Form(f): Form<LoginForm>,
) -> Response {
    let expected = jar.get(LOGIN_COOKIE).map(|c| c.value().to_string());
    if !expected.is_some_and(|e| same(&e, &f.csrf)) {
        return forbidden("the sign-in form is out of date: reload the page");
    }
    // The API's own login: the same throttle, audit and session.
    let mut headers = HeaderMap::new();
    let basic = STANDARD.encode(format!("{}:{}", f.email, f.password));
    if let Ok(v) = HeaderValue::from_str(&format!("Basic {basic}")) {
        headers.insert(axum::http::header::AUTHORIZATION, v);
    }
    match crate::api::session::auth(
        State(state),
        addr,
        crate::api::client_certs::ClientCert(None),
        headers,
    )
    .await
    {
        Ok(axum::Json(session)) => {
            let cookie = Cookie::build((SESSION_COOKIE, session.access_token))
                .path("/")
                .http_only(true)
                .secure(true)
                .same_site(SameSite::Strict)
                .build();
            (
                jar.add(cookie).remove(Cookie::from(LOGIN_COOKIE)),
                Redirect::to("/console/dashboard"),
            )
                .into_response()
        }
        Err(e) => back("/console/login", Err(e)),
    }
}

/// A form with nothing but its CSRF token (a button).
#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

/// A submitted form (`application/x-www-form-urlencoded`), whose fields may repeat
/// (checkboxes). Blank fields read as absent.
pub struct FormFields(pub Vec<(String, String)>);

impl FormFields {
    pub fn get(&self, k: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    pub fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn ticked(&self, k: &str) -> bool {
        self.get(k).is_some()
    }
}

/// A form submitted by the signed-in viewer, its CSRF token checked before the handler
/// runs (a form without the right one is refused with 403).
pub struct SignedForm {
    pub viewer: Viewer,
    pub fields: FormFields,
}

impl axum::extract::FromRequest<Arc<AppState>> for SignedForm {
    type Rejection = Response;

    async fn from_request(
        req: axum::extract::Request,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let req = axum::extract::Request::from_parts(parts, body);
        let Form(pairs) = Form::<Vec<(String, String)>>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let fields = FormFields(pairs);
        viewer
            .check(&fields.get("csrf").unwrap_or_default())
            .map_err(IntoResponse::into_response)?;
        Ok(SignedForm { viewer, fields })
    }
}

/// A submitted `multipart/form-data` form: text fields (which may repeat) and files.
pub struct MultipartFields(Vec<(String, Vec<u8>)>);

impl MultipartFields {
    pub async fn read(mut form: axum::extract::Multipart) -> Result<MultipartFields, ApiError> {
        let mut fields = Vec::new();
        while let Some(f) = form
            .next_field()
            .await
            .map_err(|e| ApiError::bad(e.to_string()))?
        {
            let name = f.name().unwrap_or_default().to_string();
            let bytes = f.bytes().await.map_err(|e| ApiError::bad(e.to_string()))?;
            fields.push((name, bytes.to_vec()));
        }
        Ok(MultipartFields(fields))
    }

    /// A text field, trimmed (empty when absent).
    pub fn text(&self, k: &str) -> String {
        self.0
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_string())
            .unwrap_or_default()
    }

    pub fn opt(&self, k: &str) -> Option<String> {
        Some(self.text(k)).filter(|t| !t.is_empty())
    }

    pub fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
            .collect()
    }

    pub fn ticked(&self, k: &str) -> bool {
        self.opt(k).is_some()
    }

    /// A file's bytes (empty when no file was chosen).
    pub fn bytes(&self, k: &str) -> &[u8] {
        self.0.iter().find(|(n, _)| n == k).map_or(&[], |(_, v)| v)
    }

    /// An uploaded text file (PEM), or none when no file was chosen.
    pub fn file_text(&self, k: &str) -> Result<Option<String>, ApiError> {
        let b = self.bytes(k);
        if b.is_empty() {
            return Ok(None);
        }
        String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|_| ApiError::field(k, "the file is not text (PEM)"))
    }
}

/// A form field as an optional API value: empty means absent.
pub fn blank_is_none(s: &str) -> serde_json::Value {
    let s = s.trim();
    if s.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::json!(s)
    }
}

async fn logout(
    State(state): State<Arc<AppState>>,
    v: Viewer,
    jar: CookieJar,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = v.check(&f.csrf) {
        return r.into_response();
    }
    if let Err(e) = state.sessions.terminate(&v.caller.token).await {
        return ApiError::from(e).into_response();
    }
    (
        jar.remove(Cookie::build(SESSION_COOKIE).path("/")),
        Redirect::to("/console/login"),
    )
        .into_response()
}
