//! The Managed HSM keys data plane (`/keys`, `/deletedkeys`, `/rng`), with Key Vault's request
//! and response shapes, refusals and error codes.
//!
//! - `model`: request bodies, their checks, and the response shapes (key bundles, items,
//!   pages);
//! - `lifecycle`: create, import, read, list, update, delete, recover, purge, backup, restore;
//! - `rotation`: rotate and rotation policies;
//! - `crypto_ops`: encrypt, decrypt, sign, verify, wrap, unwrap, and the RNG;
//! - `release`: key release of exportable keys to attested environments.
//!
//! Routes are mounted under `/hsm/{hsm}`: the server rewrites `https://{hsm}.{domain}/keys/...`
//! to `/hsm/{hsm}/keys/...` and passes the base the client used, so identifiers (`kid`) and
//! `nextLink`s point back the way the client came.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::crypto::{self, Curve, Kty, Material, b64url, decode_b64};
use crate::error::AzureError;
use crate::jwt;
use crate::shared::Shared;
use crate::state::{DeletedKey, Hsm, KeyRecord, KeyVersion, Kind, Permission, new_version_id};

mod crypto_ops;
mod lifecycle;
mod model;
mod release;
mod rotation;

use crypto_ops::*;
use lifecycle::*;
pub use model::protection;
use rotation::*;

/// The base URL the client addressed the HSM with (`https://demo-hsm.localhost:8443` or
/// `https://localhost:8443/hsm/demo-hsm`).
#[derive(Clone, Debug)]
pub struct HsmBase(pub String);

pub const API_VERSIONS: &[&str] = &["7.4", "7.5", "7.6", "2025-06-01", "2025-07-01"];
pub(super) const LATEST_API: &str = "2025-07-01";
pub(super) const MAX_TAGS: usize = 15;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/hsm/{hsm}/keys", get(list_keys))
        .route("/hsm/{hsm}/keys/restore", post(restore))
        .route(
            "/hsm/{hsm}/keys/{name}",
            get(get_latest)
                .patch(update_latest)
                .put(import)
                .delete(delete),
        )
        .route(
            "/hsm/{hsm}/keys/{name}/",
            get(get_latest).patch(update_latest),
        )
        .route("/hsm/{hsm}/keys/{name}/create", post(create))
        .route("/hsm/{hsm}/keys/{name}/versions", get(list_versions))
        .route("/hsm/{hsm}/keys/{name}/backup", post(backup))
        .route("/hsm/{hsm}/keys/{name}/rotate", post(rotate))
        .route(
            "/hsm/{hsm}/keys/{name}/rotationpolicy",
            get(get_rotation_policy).put(put_rotation_policy),
        )
        .route(
            "/hsm/{hsm}/keys/{name}/{version}",
            get(get_version).patch(update_version).post(crypto_latest),
        )
        .route(
            "/hsm/{hsm}/keys/{name}/{version}/{op}",
            post(crypto_version),
        )
        .route("/hsm/{hsm}/deletedkeys", get(list_deleted))
        .route(
            "/hsm/{hsm}/deletedkeys/{name}",
            get(get_deleted).delete(purge),
        )
        .route("/hsm/{hsm}/deletedkeys/{name}/recover", post(recover))
        .route("/hsm/{hsm}/rng", post(rng))
}

pub(super) type Q = Query<HashMap<String, String>>;
pub(super) type Body = Result<Bytes, BytesRejection>;
pub(super) type Reply = Result<Response, AzureError>;

/// Every data-plane call carries a supported `api-version`.
pub(super) fn api_version(q: &HashMap<String, String>) -> Result<String, AzureError> {
    let Some(v) = q.get("api-version").filter(|v| !v.is_empty()) else {
        return Err(AzureError::bad_parameter(
            "The request is missing the required parameter 'api-version'.",
        ));
    };
    let base = v.split("-preview").next().unwrap_or(v);
    if !API_VERSIONS.contains(&base) {
        return Err(AzureError::bad_parameter(format!(
            "The specified version ({v}) is not recognized. Consider using the latest supported version ({LATEST_API})."
        )));
    }
    Ok(v.clone())
}

pub(super) fn check_name(name: &str) -> Result<(), AzureError> {
    let ok = !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(AzureError::bad_parameter(format!(
            "The key name '{name}' is invalid. A key name must be 1-127 characters of 0-9, a-z, A-Z and '-'."
        )))
    }
}

pub(super) fn parse_body<T: DeserializeOwned>(body: Body) -> Result<T, AzureError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AzureError::kv(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestBodyTooLarge",
                "The request body is too large.",
            )
        } else {
            AzureError::bad_parameter(format!("The request body could not be read: {e}"))
        }
    })?;
    if bytes.is_empty() {
        return Err(AzureError::bad_parameter("The request body is required."));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| AzureError::bad_parameter(format!("The request body is not valid: {e}")))
}

pub(super) fn json(v: Value) -> Reply {
    Ok(Json(v).into_response())
}
