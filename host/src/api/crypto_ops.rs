//! Cryptographic operations (DSM `/crypto/v1/keys/{kid}/encrypt` and `/crypto/v1/encrypt`
//! with a key descriptor): encrypt, decrypt, sign, verify, wrap and unwrap. Only applications
//! of the key's group perform them; the key must be enabled, in a usable state and permit the
//! operation; the policies are consulted.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::catalog::sobjects::{KeyOp, ObjType};
use crate::crypto::{HashAlg, RsaEncryptionMode, RsaSignatureMode};
use crate::keys::{CryptParams, ImportValue, KeyRef, NewKey, SignParams, UsableKey, WrapMode};

use super::extract::{Body, Caller, id};
use super::model::{KeyDescriptor, SobjectOut, b64, from_b64, parse_ops};
use super::{ApiError, ApiResult, AppState};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptRequest {
    /// The key, for `/crypto/v1/encrypt` (the per-key endpoint takes it from the path).
    pub key: Option<KeyDescriptor>,
    /// `AES` or `RSA`: the type of the key.
    #[schema(schema_with = super::schemas::obj_type)]
    pub alg: String,
    #[schema(format = Byte)]
    pub plain: String,
    /// AES: `GCM` (default), `CBC` (PKCS#7 padding) or `CBCNOPAD` (whole blocks). RSA:
    /// `{"OAEP": {"mgf": {"mgf1": {"hash": "SHA256"}}}}` or `{"PKCS1_V15": {}}`, or DSM's
    /// names `OAEP_MGF1_SHA1`, `OAEP_MGF1_SHA256`, `PKCS1_V15` (default OAEP with SHA-1).
    #[schema(schema_with = super::schemas::crypt_mode)]
    pub mode: Option<Value>,
    /// AES-GCM: 12 bytes; AES-CBC: 16 bytes. Random when absent (and answered).
    #[schema(format = Byte)]
    pub iv: Option<String>,
    /// AES-GCM's associated data.
    #[schema(format = Byte)]
    pub ad: Option<String>,
    /// 128 (the only supported tag length).
    pub tag_len: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EncryptResponse {
    pub kid: String,
    pub cipher: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptRequest {
    pub key: Option<KeyDescriptor>,
    #[schema(schema_with = super::schemas::obj_type)]
    pub alg: String,
    #[schema(format = Byte)]
    pub cipher: String,
    #[schema(schema_with = super::schemas::crypt_mode)]
    pub mode: Option<Value>,
    #[schema(format = Byte)]
    pub iv: Option<String>,
    #[schema(format = Byte)]
    pub ad: Option<String>,
    #[schema(format = Byte)]
    pub tag: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DecryptResponse {
    pub kid: String,
    pub plain: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    pub key: Option<KeyDescriptor>,
    pub hash_alg: HashAlg,
    /// The digest to sign; or give `data` to have it hashed.
    #[schema(format = Byte)]
    pub hash: Option<String>,
    #[schema(format = Byte)]
    pub data: Option<String>,
    /// RSA: `{"PKCS1_V15": {}}` (default) or `{"PSS": {...}}`. EC: absent.
    pub mode: Option<RsaSignatureMode>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignResponse {
    pub kid: String,
    /// RSA: the signature; ECDSA: DER (`SEQUENCE { r, s }`), as DSM's.
    pub signature: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub key: Option<KeyDescriptor>,
    pub hash_alg: HashAlg,
    #[schema(format = Byte)]
    pub hash: Option<String>,
    #[schema(format = Byte)]
    pub data: Option<String>,
    #[schema(format = Byte)]
    pub signature: String,
    pub mode: Option<RsaSignatureMode>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResponse {
    pub kid: String,
    pub result: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WrapRequest {
    pub key: Option<KeyDescriptor>,
    #[schema(schema_with = super::schemas::obj_type)]
    pub alg: String,
    /// The key to wrap; it must permit EXPORT.
    pub subject: Option<KeyDescriptor>,
    /// The id of the key to wrap: DSM's older form of `subject`; give one of the two.
    pub kid: Option<String>,
    /// AES: `KW` or `KWP` (default). RSA: an OAEP mode.
    #[schema(schema_with = super::schemas::wrap_mode)]
    pub mode: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WrapResponse {
    pub kid: String,
    pub wrapped_key: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnwrapRequest {
    pub key: Option<KeyDescriptor>,
    #[schema(schema_with = super::schemas::obj_type)]
    pub alg: String,
    #[schema(format = Byte)]
    pub wrapped_key: String,
    #[schema(schema_with = super::schemas::wrap_mode)]
    pub mode: Option<Value>,
    /// The unwrapped key becomes a new key of the catalog with these attributes.
    #[schema(schema_with = super::schemas::obj_type)]
    pub obj_type: String,
    pub name: String,
    #[schema(schema_with = super::schemas::id)]
    pub group_id: Option<String>,
    #[schema(schema_with = super::schemas::key_ops)]
    pub key_ops: Option<Vec<String>>,
    pub description: Option<String>,
}

/// Parses `mode` for the key's type.
fn modes(
    key: &UsableKey,
    alg: &str,
    mode: &Option<Value>,
) -> ApiResult<(Option<String>, Option<RsaEncryptionMode>)> {
    let t = key.object.obj_type;
    if !alg.eq_ignore_ascii_case(t.as_str()) {
        return Err(ApiError::field(
            "alg",
            format!("'{alg}' does not match the key, which is {}", t.as_str()),
        ));
    }
    match (t, mode) {
        (_, None) => Ok((None, None)),
        (ObjType::Aes, Some(Value::String(m))) => Ok((Some(m.clone()), None)),
        (ObjType::Rsa, Some(m)) => Ok((None, Some(rsa_mode(m)?))),
        _ => Err(ApiError::field("mode", "does not fit the key type")),
    }
}

/// An RSA `mode`: DSM's object or one of its names.
fn rsa_mode(mode: &Value) -> ApiResult<RsaEncryptionMode> {
    match mode {
        Value::String(name) => RsaEncryptionMode::from_name(name).ok_or_else(|| {
            ApiError::field(
                "mode",
                format!(
                    "'{name}' is not an RSA mode (OAEP_MGF1_SHA1, OAEP_MGF1_SHA256 or PKCS1_V15)"
                ),
            )
        }),
        m => serde_json::from_value(m.clone())
            .map_err(|e| ApiError::field("mode", format!("not an RSA mode: {e}"))),
    }
}

fn opt_b64(field: &str, v: &Option<String>) -> ApiResult<Option<Vec<u8>>> {
    v.as_deref().map(|x| from_b64(field, x)).transpose()
}

/// The key of an operation: named in the path or, for the global endpoints, in the body.
fn key_of(path_kid: Option<&str>, descriptor: &Option<KeyDescriptor>) -> ApiResult<KeyRef> {
    match (path_kid, descriptor) {
        (Some(kid), None) => {
            id("key", kid)?;
            Ok(KeyRef::Kid(kid.to_string()))
        }
        (Some(_), Some(_)) => Err(ApiError::field(
            "key",
            "the key is already named in the path",
        )),
        (None, Some(d)) => d.to_ref("key"),
        (None, None) => Err(ApiError::field(
            "key",
            "give the key as {\"kid\": ...} or {\"name\": ...}",
        )),
    }
}

/// The key of a crypto operation, once the key service has checked that the caller may use
/// it for `op`.
async fn usable(
    state: &AppState,
    caller: &Caller,
    path_kid: Option<&str>,
    descriptor: &Option<KeyDescriptor>,
    op: KeyOp,
) -> ApiResult<Arc<UsableKey>> {
    let key = key_of(path_kid, descriptor)?;
    Ok(state.keys.usable_for(&caller.access, &key, op).await?)
}

/// The request's modes and parameters for an encryption, decryption or wrap.
fn crypt_params(
    key: &UsableKey,
    alg: &str,
    mode: &Option<Value>,
    iv: &Option<String>,
    ad: &Option<String>,
    tag: &Option<String>,
) -> ApiResult<CryptParams> {
    let (aes_mode, rsa_mode) = modes(key, alg, mode)?;
    Ok(CryptParams {
        aes_mode,
        rsa_mode,
        iv: opt_b64("iv", iv)?,
        ad: opt_b64("ad", ad)?,
        tag: opt_b64("tag", tag)?,
    })
}

async fn do_encrypt(
    state: &AppState,
    caller: &Caller,
    path_kid: Option<&str>,
    req: EncryptRequest,
) -> ApiResult<Json<EncryptResponse>> {
    let key = usable(state, caller, path_kid, &req.key, KeyOp::Encrypt).await?;
    let params = crypt_params(&key, &req.alg, &req.mode, &req.iv, &req.ad, &None)?;
    if req.tag_len.is_some_and(|t| t != 128) {
        return Err(ApiError::field("tag_len", "only 128 is supported"));
    }
    let plain = from_b64("plain", &req.plain)?;
    let details = serde_json::json!({"alg": req.alg});
    let e = state
        .keys
        .encrypt(&caller.access, &key, params, plain, details)
        .await?;
    Ok(Json(EncryptResponse {
        kid: key.object.kid.clone(),
        cipher: b64(&e.cipher),
        iv: e.iv.as_deref().map(b64),
        tag: e.tag.as_deref().map(b64),
    }))
}

async fn do_decrypt(
    state: &AppState,
    caller: &Caller,
    path_kid: Option<&str>,
    req: DecryptRequest,
) -> ApiResult<Json<DecryptResponse>> {
    let key = usable(state, caller, path_kid, &req.key, KeyOp::Decrypt).await?;
    let params = crypt_params(&key, &req.alg, &req.mode, &req.iv, &req.ad, &req.tag)?;
    let cipher = from_b64("cipher", &req.cipher)?;
    let details = serde_json::json!({"alg": req.alg});
    let plain = state
        .keys
        .decrypt(&caller.access, &key, params, cipher, details)
        .await?;
    Ok(Json(DecryptResponse {
        kid: key.object.kid.clone(),
        plain: b64(&plain),
    }))
}

fn digest(hash_alg: HashAlg, hash: &Option<String>, data: &Option<String>) -> ApiResult<Vec<u8>> {
    match (hash, data) {
        (Some(h), None) => from_b64("hash", h),
        (None, Some(d)) => Ok(hash_alg.digest(&from_b64("data", d)?)),
        _ => Err(ApiError::bad("give exactly one of 'hash' and 'data'")),
    }
}

async fn do_sign(
    state: &AppState,
    caller: &Caller,
    path_kid: Option<&str>,
    req: SignRequest,
) -> ApiResult<Json<SignResponse>> {
    let key = usable(state, caller, path_kid, &req.key, KeyOp::Sign).await?;
    let d = digest(req.hash_alg, &req.hash, &req.data)?;
    let params = SignParams {
        hash: req.hash_alg,
        mode: &req.mode,
    };
    let details = serde_json::json!({"hash_alg": req.hash_alg});
    let sig = state
        .keys
        .sign(&caller.access, &key, params, d, details)
        .await?;
    // ECDSA signatures leave as DER, as DSM's do (the crypto code and Azure make r ‖ s).
    let sig = match (key.object.obj_type, key.object.curve) {
        (ObjType::Ec, Some(curve)) => keyward_crypto::ecdsa_signature_to_der(curve, &sig)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        _ => sig,
    };
    Ok(Json(SignResponse {
        kid: key.object.kid.clone(),
        signature: b64(&sig),
    }))
}

async fn do_verify(
    state: &AppState,
    caller: &Caller,
    path_kid: Option<&str>,
    req: VerifyRequest,
) -> ApiResult<Json<VerifyResponse>> {
    let key = usable(state, caller, path_kid, &req.key, KeyOp::Verify).await?;
    let d = digest(req.hash_alg, &req.hash, &req.data)?;
    let sig = from_b64("signature", &req.signature)?;
    // DER, as DSM signs; r ‖ s (JOSE) is accepted too.
    let sig = match (key.object.obj_type, key.object.curve) {
        (ObjType::Ec, Some(curve)) => {
            keyward_crypto::ecdsa_signature_from_der(curve, &sig).unwrap_or(sig)
        }
        _ => sig,
    };
    let params = SignParams {
        hash: req.hash_alg,
        mode: &req.mode,
    };
    let result = state
        .keys
        .verify(&caller.access, &key, params, d, sig)
        .await?;
    Ok(Json(VerifyResponse {
        kid: key.object.kid.clone(),
        result,
    }))
}

async fn do_wrap(
    state: &AppState,
    caller: &Caller,
    path_kid: Option<&str>,
    req: WrapRequest,
) -> ApiResult<Json<WrapResponse>> {
    let key = usable(state, caller, path_kid, &req.key, KeyOp::WrapKey).await?;
    let params = crypt_params(&key, &req.alg, &req.mode, &None, &None, &None)?;
    // Wrapping hands the subject's material out under another key: it is an export of the
    // subject, with the same rules.
    let subject_ref = match (&req.subject, &req.kid) {
        (Some(d), None) => d.to_ref("subject")?,
        (None, Some(kid)) => {
            id("key", kid)?;
            KeyRef::Kid(kid.clone())
        }
        _ => {
            return Err(ApiError::field(
                "subject",
                "give the key to wrap as 'subject' or as 'kid', not both",
            ));
        }
    };
    let subject_key = state.keys.exportable(&caller.access, &subject_ref).await?;
    let subject_material = subject_key
        .material
        .as_ref()
        .ok_or_else(|| ApiError::Conflict("the key to wrap has no material here".into()))?;
    let details = serde_json::json!({"alg": req.alg, "subject": subject_key.object.kid});
    let wrapped = state
        .keys
        .wrap(
            &caller.access,
            &key,
            params,
            subject_material.to_der(),
            details,
        )
        .await?;
    Ok(Json(WrapResponse {
        kid: key.object.kid.clone(),
        wrapped_key: b64(&wrapped),
    }))
}

/// Unwraps a key with a wrapping key and imports it as a new key: an import under a
/// key-encryption key, which the key service handles as one.
async fn do_unwrap(
    state: Arc<AppState>,
    caller: Caller,
    path_kid: Option<&str>,
    req: UnwrapRequest,
) -> ApiResult<(StatusCode, Json<SobjectOut>)> {
    let kek = key_of(path_kid, &req.key)?;
    let kek_object = state.keys.resolve(&caller.access, &kek).await?;
    if !req.alg.eq_ignore_ascii_case(kek_object.obj_type.as_str()) {
        return Err(ApiError::field(
            "alg",
            format!(
                "'{}' does not match the key, which is {}",
                req.alg,
                kek_object.obj_type.as_str()
            ),
        ));
    }
    let mode = match (kek_object.obj_type, &req.mode) {
        (_, None) => None,
        (ObjType::Aes, Some(Value::String(m))) => Some(WrapMode::Aes(m.clone())),
        (ObjType::Rsa, Some(m)) => Some(WrapMode::Rsa(rsa_mode(m)?)),
        _ => return Err(ApiError::field("mode", "does not fit the key type")),
    };
    let obj_type = ObjType::parse(&req.obj_type).ok_or_else(|| {
        ApiError::field(
            "obj_type",
            format!("'{}' is not supported (AES, RSA or EC)", req.obj_type),
        )
    })?;
    let spec = NewKey {
        name: req.name,
        group_id: req.group_id.or_else(|| Some(kek_object.group_id.clone())),
        obj_type,
        key_size: None,
        curve: None,
        key_ops: req
            .key_ops
            .as_deref()
            .map(|o| parse_ops("key_ops", o))
            .transpose()?,
        description: req.description,
        enabled: None,
        activation_date: None,
        deactivation_date: None,
        tags: None,
        rotation_policy: None,
        external_name: None,
    };
    let wrapped = from_b64("wrapped_key", &req.wrapped_key)?;
    let v = state
        .keys
        .import(
            &caller.access,
            spec,
            ImportValue::Wrapped {
                kek: KeyRef::Kid(kek_object.kid),
                mode,
                wrapped,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(SobjectOut::of(&v, state.now()))))
}

macro_rules! endpoints {
    ($($with:ident, $global:ident, $do:ident, $req:ty, $resp:ty, $path:literal, $gpath:literal;)*) => {$(
        #[utoipa::path(post, path = $path, params(("kid" = String, Path, description = "The key's id")), tag = "crypto", request_body = $req,
            responses((status = 200, body = $resp), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
        pub async fn $with(State(state): State<Arc<AppState>>, caller: Caller, Path(kid): Path<String>, Body(req): Body<$req>) -> ApiResult<Json<$resp>> {
            $do(&state, &caller, Some(&kid), req).await
        }

        #[utoipa::path(post, path = $gpath, tag = "crypto", request_body = $req,
            responses((status = 200, body = $resp), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
        pub async fn $global(State(state): State<Arc<AppState>>, caller: Caller, Body(req): Body<$req>) -> ApiResult<Json<$resp>> {
            $do(&state, &caller, None, req).await
        }
    )*};
}

endpoints! {
    encrypt_with, encrypt, do_encrypt, EncryptRequest, EncryptResponse, "/crypto/v1/keys/{kid}/encrypt", "/crypto/v1/encrypt";
    decrypt_with, decrypt, do_decrypt, DecryptRequest, DecryptResponse, "/crypto/v1/keys/{kid}/decrypt", "/crypto/v1/decrypt";
    sign_with, sign, do_sign, SignRequest, SignResponse, "/crypto/v1/keys/{kid}/sign", "/crypto/v1/sign";
    verify_with, verify, do_verify, VerifyRequest, VerifyResponse, "/crypto/v1/keys/{kid}/verify", "/crypto/v1/verify";
    wrap_with, wrap, do_wrap, WrapRequest, WrapResponse, "/crypto/v1/keys/{kid}/wrapkey", "/crypto/v1/wrapkey";
}

#[utoipa::path(post, path = "/crypto/v1/keys/{kid}/unwrapkey",
    params(("kid" = String, Path, description = "The key's id")), tag = "crypto", request_body = UnwrapRequest,
    responses((status = 201, body = SobjectOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn unwrap_with(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kid): Path<String>,
    Body(req): Body<UnwrapRequest>,
) -> ApiResult<(StatusCode, Json<SobjectOut>)> {
    do_unwrap(state, caller, Some(&kid), req).await
}

#[utoipa::path(post, path = "/crypto/v1/unwrapkey", tag = "crypto", request_body = UnwrapRequest,
    responses((status = 201, body = SobjectOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn unwrap(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(req): Body<UnwrapRequest>,
) -> ApiResult<(StatusCode, Json<SobjectOut>)> {
    do_unwrap(state, caller, None, req).await
}
