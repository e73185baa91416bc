//! Entra ID client-credentials tokens, one per (authority, tenant, client, secret, audience),
//! kept in the instance's memory and reused until two minutes before they expire. The secret
//! only enters the key as a hash, so a changed secret gets a new token.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use crate::azure::{Plane, error_from, send_with_retries};
use crate::exports::keyward::plugin::kms::{Connection, InstanceKind, KmsError};
use crate::keyward::plugin::http;

const EARLY_REFRESH_SECS: u64 = 120;

thread_local! {
    static CACHE: RefCell<HashMap<u64, (String, u64)>> = RefCell::new(HashMap::new());
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The scope of a plane. ARM's is Azure's well-known one; the data plane's follows the
/// instance kind, whatever its host name: `https://managedhsm.azure.net` for Managed HSMs,
/// `https://vault.azure.net` for vaults.
fn scope(conn: &Connection, plane: Plane) -> &'static str {
    match (plane, conn.kind) {
        (Plane::Management, _) => "https://management.azure.com/.default",
        (Plane::Hsm, InstanceKind::Managed) => "https://managedhsm.azure.net/.default",
        (Plane::Hsm, InstanceKind::Standard | InstanceKind::Premium) => {
            "https://vault.azure.net/.default"
        }
    }
}

/// The caller's object id, read from an access token's claims (tokens are for the caller,
/// who may read them); absent when the token is not a JWT with `oid`.
pub fn object_id(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["oid"].as_str().map(str::to_string)
}

fn cache_key(conn: &Connection, plane: Plane) -> u64 {
    let mut h = DefaultHasher::new();
    conn.endpoints.identity.hash(&mut h);
    conn.credentials.tenant_id.hash(&mut h);
    conn.credentials.client_id.hash(&mut h);
    conn.credentials.client_secret.hash(&mut h);
    scope(conn, plane).hash(&mut h);
    h.finish()
}

pub fn forget(conn: &Connection, plane: Plane) {
    CACHE.with(|c| c.borrow_mut().remove(&cache_key(conn, plane)));
}

pub fn get(conn: &Connection, plane: Plane) -> Result<String, KmsError> {
    let key = cache_key(conn, plane);
    if let Some(token) = CACHE.with(|c| {
        c.borrow()
            .get(&key)
            .filter(|(_, exp)| *exp > now() + EARLY_REFRESH_SECS)
            .map(|(t, _)| t.clone())
    }) {
        return Ok(token);
    }
    let c = &conn.credentials;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", c.client_id.as_str()),
        ("client_secret", c.client_secret.as_str()),
        ("scope", scope(conn, plane)),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", form_encode(v)))
    .collect::<Vec<_>>()
    .join("&");
    let req = http::Request {
        method: "POST".into(),
        url: format!(
            "{}/{}/oauth2/v2.0/token",
            conn.endpoints.identity.trim_end_matches('/'),
            c.tenant_id
        ),
        headers: vec![
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
            ("accept".into(), "application/json".into()),
        ],
        body: form.into_bytes(),
        timeout_ms: Some(30_000),
    };
    let resp = send_with_retries(&req)?;
    if resp.status != 200 {
        return Err(match error_from(&resp) {
            // Any refusal by the identity provider means the credentials do not work.
            KmsError::BadRequest(r)
            | KmsError::Forbidden(r)
            | KmsError::NotFound(r)
            | KmsError::Other(r) => KmsError::Unauthorized(r),
            e => e,
        });
    }
    let v: serde_json::Value = serde_json::from_slice(&resp.body)
        .map_err(|_| crate::azure::other("the token response is not JSON"))?;
    let token = v["access_token"]
        .as_str()
        .ok_or_else(|| crate::azure::other("the token response has no access_token"))?
        .to_string();
    let lifetime = v["expires_in"]
        .as_u64()
        .or_else(|| v["expires_in"].as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(300);
    CACHE.with(|c| {
        c.borrow_mut()
            .insert(key, (token.clone(), now() + lifetime))
    });
    Ok(token)
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
