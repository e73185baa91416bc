//! `POST /crypto/v1/keys/{kid}/byok`: a key as an Azure BYOK transfer file (`.byok`), made
//! for a key-exchange key of a vault or Managed HSM that Keyward need not be able to reach
//! (flow c). The key service decides and records it as an export.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::keys::{ByokKek, KeyRef};

use super::extract::{Body, Caller, id};
use super::model::{KeyDescriptor, from_b64};
use super::{ApiError, ApiResult, AppState};

/// The key-exchange key to wrap for: a key of a linked group (`kek`), or an Azure key given
/// by its identifier and public key (`kek_id` with `kek_public_key`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ByokRequest {
    /// A key-exchange key Keyward knows as a key of a linked group.
    pub kek: Option<KeyDescriptor>,
    /// The key-exchange key's Azure identifier with its version
    /// (`https://{vault}.vault.azure.net/keys/{name}/{version}`).
    pub kek_id: Option<String>,
    /// Its RSA public key: PEM (`-----BEGIN PUBLIC KEY-----`) or base64 SubjectPublicKeyInfo
    /// DER (`az keyvault key download --encoding DER`).
    pub kek_public_key: Option<String>,
}

/// Azure's BYOK transfer file, as `az keyvault key import --byok-file` takes it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ByokFile {
    /// `1.0.0`.
    pub schema_version: String,
    pub header: ByokHeader,
    /// base64url of RSA-OAEP(SHA-1) of a transport AES key, then the AES key wrap with padding
    /// of the key (PKCS#8 for RSA and EC, raw for AES).
    pub ciphertext: String,
    /// The tool that made it.
    pub generator: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ByokHeader {
    /// The key-exchange key's identifier.
    pub kid: String,
    /// `dir`.
    pub alg: String,
    /// `CKM_RSA_AES_KEY_WRAP`.
    pub enc: String,
}

/// An Azure key identifier with a version: `https://{host}/keys/{name}/{version}`.
fn check_kek_id(kek_id: &str) -> ApiResult<()> {
    let ok = kek_id.strip_prefix("https://").is_some_and(|rest| {
        let parts: Vec<&str> = rest.split('/').collect();
        parts.len() == 4
            && !parts[0].is_empty()
            && parts[1] == "keys"
            && parts[2..]
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            "kek_id",
            "must be the key-exchange key's identifier with its version: https://{vault}.vault.azure.net/keys/{name}/{version}",
        ))
    }
}

/// A public key given as PEM or as base64 DER.
fn public_der(text: &str) -> ApiResult<Vec<u8>> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return SubjectPublicKeyInfoDer::from_pem_slice(text.as_bytes())
            .map(|der| der.to_vec())
            .map_err(|_| {
                ApiError::field(
                    "kek_public_key",
                    "is not a PEM public key (BEGIN PUBLIC KEY)",
                )
            });
    }
    from_b64("kek_public_key", text)
}

/// The key's `.byok` transfer file for the key-exchange key. An export of the key: it must
/// permit EXPORT and the caller be allowed to export it; recorded in the audit log.
#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/byok", tag = "keys", request_body = ByokRequest,
    params(("kid" = String, Path, description = "The key's id")),
    responses((status = 200, body = ByokFile), (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn byok(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
    Body(req): Body<ByokRequest>,
) -> ApiResult<impl IntoResponse> {
    let file = transfer_file(&state, &caller, kid, req).await?;
    Ok((
        [(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"key.byok\"".to_string(),
        )],
        Json(file),
    ))
}

/// The transfer file of key `kid` (the API's answer; the console's download).
pub async fn transfer_file(
    state: &AppState,
    caller: &Caller,
    kid: String,
    req: ByokRequest,
) -> ApiResult<ByokFile> {
    id("key", &kid)?;
    let kek = match (req.kek, req.kek_id, req.kek_public_key) {
        (Some(k), None, None) => {
            state
                .keys
                .byok_kek(&caller.access, &k.to_ref("kek")?)
                .await?
        }
        (None, Some(kek_id), Some(public)) => {
            check_kek_id(&kek_id)?;
            ByokKek {
                id: kek_id,
                public_der: public_der(&public)?,
            }
        }
        _ => {
            return Err(ApiError::field(
                "kek",
                "give either 'kek' (a key of a linked group) or both 'kek_id' and 'kek_public_key'",
            ));
        }
    };
    let key = KeyRef::Kid(kid);
    let file = state.keys.byok_transfer(&caller.access, &key, &kek).await?;
    serde_json::from_slice(&file)
        .map_err(|e| ApiError::Internal(format!("the transfer file is not in its shape: {e}")))
}
