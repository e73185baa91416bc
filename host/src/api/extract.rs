//! Request extractors: the authenticated caller, the client's address, JSON bodies with
//! errors that name the field, and path ids.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::auth::certs::Thumbprint;
use crate::auth::{Access, Principal};
use crate::catalog;

use super::{ApiError, AppState, MAX_BODY};

/// The caller of a request that needs a session: `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct Caller {
    pub access: Access,
    pub token: String,
}

impl Caller {
    pub fn principal(&self) -> &Principal {
        &self.access.principal
    }

    pub fn account(&self) -> &str {
        &self.access.account_id
    }
}

pub fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

impl Caller {
    /// The caller a session token stands for (the API's bearer token, the console's cookie)
    /// on a request that presented no client certificate.
    pub async fn from_token(state: &AppState, token: &str) -> Result<Caller, ApiError> {
        Caller::presenting(state, token, None).await
    }

    /// The caller a session token stands for on a request that presented the certificate
    /// `presented`: a session bound to a certificate needs that very certificate.
    pub async fn presenting(
        state: &AppState,
        token: &str,
        presented: Option<Thumbprint>,
    ) -> Result<Caller, ApiError> {
        let session = state.sessions.get(token).await?.ok_or_else(|| {
            ApiError::Unauthorized("the session is unknown or has expired".into())
        })?;
        if let Some(bound) = session.bound_to
            && presented != Some(bound)
        {
            return Err(ApiError::Unauthorized(
                "this session belongs to a client certificate: present the certificate it logged in with on every request".into(),
            ));
        }
        let account_id = session.account_id.clone().ok_or_else(|| {
            ApiError::Forbidden(
                "select an account first (POST /sys/v1/session/select_account)".into(),
            )
        })?;
        let access = match &session.principal {
            Principal::User { .. } => {
                let mut conn = state.catalog.conn().await?;
                crate::auth::access::of_user(&mut conn, &account_id, session.principal.clone())
                    .await?
                    .ok_or_else(|| {
                        ApiError::Forbidden("you are no longer a member of this account".into())
                    })?
            }
            Principal::App { .. } => Access {
                principal: session.principal.clone(),
                account_id,
                account_role: None,
                group_roles: Default::default(),
                app_groups: session.app_groups.as_ref().clone(),
                approval: None,
            },
        };
        Ok(Caller {
            access,
            token: token.to_string(),
        })
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError::Unauthorized("a bearer token is required (POST /sys/v1/session/auth)".into())
        })?;
        let presented = state.client_certs.presented(parts).map(|p| p.thumbprint());
        let mut caller = Caller::presenting(state, &token, presented).await?;
        // Only the server's own replay of an approved request carries this (it is not a
        // header: no client can set it).
        if let Some(approved) = parts.extensions.get::<super::approvals::CarriesApproval>() {
            caller.access.approval = Some(approved.0.clone());
        }
        Ok(caller)
    }
}

/// The address a request came from, when the server knows it.
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<super::transport::PeerAddr>>()
                .map(|c| c.0.addr.ip()),
        ))
    }
}

/// A JSON body. Malformed JSON, wrong types, unknown or missing fields and oversized bodies
/// are 4xx errors that say what is wrong.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge(MAX_BODY)
                } else {
                    ApiError::bad(format!("the request body could not be read: {e}"))
                }
            })?;
        if bytes.is_empty() {
            return Err(ApiError::bad("a JSON request body is required"));
        }
        parse_json(&bytes).map(Body)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde's messages name the field for unknown, missing and mistyped fields; keep them.
    let value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        // JSON has one number type: `360.0` is the integer 360 (as JSON Schema's `integer`
        // says), which serde's integer types refuse. Tried again with such numbers made
        // integers, only when the first reading failed on the data.
        Err(e) if e.is_data() => {
            integral(bytes).ok_or_else(|| ApiError::bad(format!("invalid request: {e}")))?
        }
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(ApiError::bad(format!("malformed JSON: {e}")));
        }
        Err(e) => return Err(ApiError::bad(format!("invalid request: {e}"))),
    };
    if has_nul_escape(bytes) {
        // PostgreSQL cannot store it in text, and no name, tag or description needs it:
        // refused alike on both catalogs.
        return Err(ApiError::bad(
            "text in the request contains a NUL character (\\u0000), which is not allowed",
        ));
    }
    Ok(value)
}

/// `bytes` read as `T` with every number that is a whole float (`360.0`) made an integer;
/// `None` if there was none, or it still does not read.
fn integral<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    fn walk(v: &mut serde_json::Value) -> bool {
        match v {
            serde_json::Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    *v = serde_json::Value::from(f as i64);
                    true
                } else {
                    false
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().fold(false, |c, x| walk(x) | c),
            serde_json::Value::Object(o) => o.values_mut().fold(false, |c, x| walk(x) | c),
            _ => false,
        }
    }
    let mut v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if !walk(&mut v) {
        return None;
    }
    serde_json::from_value(v).ok()
}

/// Refuses an API request with a query parameter given without a value (`?limit=`): every
/// parameter of the API has a type (a number, an id, a name) that an empty text is not, and
/// reading it as absent would accept what the document does not describe.
pub async fn refuse_empty_query_values(
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let empty = req.uri().query().and_then(|q| {
        q.split('&')
            .filter(|p| !p.is_empty())
            .find(|p| p.split_once('=').is_none_or(|(_, v)| v.is_empty()))
            .map(|p| p.split('=').next().unwrap_or_default().to_string())
    });
    if let Some(name) = empty {
        return ApiError::bad(format!("the query parameter '{name}' has no value")).into_response();
    }
    next.run(req).await
}

/// Refuses a request whose path or query carries a NUL character (`%00`) before any handler
/// sees it: no id, name or filter has one, and PostgreSQL cannot compare text with one (as
/// with `\u0000` in bodies, refused alike on both catalogs).
pub async fn refuse_nul_in_uri(
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let raw = req.uri().path_and_query().map_or("", |p| p.as_str());
    if raw.contains("%00") {
        return ApiError::bad(
            "the path or query contains a NUL character (%00), which is not allowed",
        )
        .into_response();
    }
    next.run(req).await
}

/// Whether a JSON document (already known to be valid) has a string with `\u0000` in it.
fn has_nul_escape(json: &[u8]) -> bool {
    let mut in_string = false;
    let mut i = 0;
    while i < json.len() {
        match (in_string, json[i]) {
            (false, b'"') => in_string = true,
            (true, b'"') => in_string = false,
            (true, b'\\') => {
                if json.get(i + 1) == Some(&b'u') && json.get(i + 2..i + 6) == Some(b"0000") {
                    return true;
                }
                // The escaped character is never a quote that ends the string.
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// Checks that a path segment is an id (so `/keys/not-an-id` is a clear 400, not a 404).
pub fn id(kind: &str, value: &str) -> Result<(), ApiError> {
    if catalog::is_id(value) {
        Ok(())
    } else {
        Err(ApiError::bad(format!("'{value}' is not a valid {kind} id")))
    }
}

#[cfg(test)]
mod tests {
    use super::has_nul_escape;

    #[test]
    fn nul_escapes_are_found_in_strings_only() {
        assert!(has_nul_escape(br#"{"name": "a\u0000b"}"#));
        assert!(has_nul_escape(br#"{"tags": {"\u0000": "x"}}"#));
        assert!(
            !has_nul_escape(br#"{"name": "a\\u0000b"}"#),
            "an escaped backslash"
        );
        assert!(!has_nul_escape(br#"{"name": "say \"\u00e9\""}"#));
        assert!(!has_nul_escape(br#"{"n": 0}"#));
    }
}
