//! The Managed HSM keys data plane (`/keys`, `/deletedkeys`, `/rng`), with Key Vault's request
//! and response shapes, refusals and error codes.
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
use crate::shared::Shared;
use crate::state::{DeletedKey, Hsm, KeyRecord, KeyVersion, Permission, new_version_id};

/// The base URL the client addressed the HSM with (`https://demo-hsm.localhost:8443` or
/// `https://localhost:8443/hsm/demo-hsm`).
#[derive(Clone, Debug)]
pub struct HsmBase(pub String);

pub const API_VERSIONS: &[&str] = &["7.4", "7.5", "7.6", "2025-06-01", "2025-07-01"];
const LATEST_API: &str = "2025-07-01";
const MAX_TAGS: usize = 15;

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

type Q = Query<HashMap<String, String>>;
type Body = Result<Bytes, BytesRejection>;
type Reply = Result<Response, AzureError>;

/// Every data-plane call carries a supported `api-version`.
fn api_version(q: &HashMap<String, String>) -> Result<String, AzureError> {
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

fn check_name(name: &str) -> Result<(), AzureError> {
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

fn parse_body<T: DeserializeOwned>(body: Body) -> Result<T, AzureError> {
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

fn json(v: Value) -> Reply {
    Ok(Json(v).into_response())
}

#[derive(Deserialize, Default)]
struct AttributesIn {
    enabled: Option<bool>,
    nbf: Option<i64>,
    exp: Option<i64>,
    exportable: Option<bool>,
}

#[derive(Deserialize)]
struct CreateIn {
    kty: String,
    key_size: Option<u32>,
    public_exponent: Option<u32>,
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    attributes: AttributesIn,
    tags: Option<BTreeMap<String, String>>,
    crv: Option<String>,
}

#[derive(Deserialize)]
struct ImportIn {
    key: Value,
    #[serde(rename = "Hsm")]
    #[allow(
        dead_code,
        reason = "Managed HSM keys are always HSM-protected; the flag is accepted and ignored"
    )]
    hsm: Option<bool>,
    #[serde(default)]
    attributes: AttributesIn,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct UpdateIn {
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    attributes: AttributesIn,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct CryptIn {
    alg: String,
    value: String,
    iv: Option<String>,
    aad: Option<String>,
    tag: Option<String>,
}

#[derive(Deserialize)]
struct SignIn {
    alg: String,
    value: String,
}

#[derive(Deserialize)]
struct VerifyIn {
    alg: String,
    digest: String,
    value: String,
}

#[derive(Deserialize)]
struct BlobIn {
    value: String,
}

#[derive(Deserialize)]
struct RngIn {
    count: i64,
}

const ALL_OPS: &[&str] = &[
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
    "import",
    "export",
];

fn default_ops(kty: Kty) -> Vec<String> {
    let ops: &[&str] = match kty {
        Kty::Rsa => &[
            "encrypt",
            "decrypt",
            "sign",
            "verify",
            "wrapKey",
            "unwrapKey",
        ],
        Kty::Ec => &["sign", "verify"],
        Kty::Oct => &["encrypt", "decrypt", "wrapKey", "unwrapKey"],
    };
    ops.iter().map(|s| s.to_string()).collect()
}

fn check_ops(kty: Kty, ops: &[String]) -> Result<(), AzureError> {
    for op in ops {
        if !ALL_OPS.contains(&op.as_str()) {
            return Err(AzureError::bad_parameter(format!(
                "Invalid key operation: {op}. Valid operations: {}.",
                ALL_OPS.join(", ")
            )));
        }
        let fits = match kty {
            Kty::Rsa => true,
            Kty::Ec => ["sign", "verify", "export"].contains(&op.as_str()),
            Kty::Oct => {
                ["encrypt", "decrypt", "wrapKey", "unwrapKey", "export"].contains(&op.as_str())
            }
        };
        if !fits {
            return Err(AzureError::bad_parameter(format!(
                "Key operation '{op}' is not supported for {} keys.",
                kty.name()
            )));
        }
    }
    if ops.iter().any(|o| o == "import") && ops.len() != 1 {
        return Err(AzureError::bad_parameter(
            "A key exchange key must have 'import' as its only key operation.",
        ));
    }
    Ok(())
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), AzureError> {
    if tags.len() > MAX_TAGS {
        return Err(AzureError::bad_parameter(format!(
            "A key may have at most {MAX_TAGS} tags."
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > 512 || v.len() > 256 {
            return Err(AzureError::bad_parameter(
                "Tag names must be 1-512 characters and values at most 256.",
            ));
        }
    }
    Ok(())
}

fn check_attributes(a: &AttributesIn) -> Result<(), AzureError> {
    if a.exportable == Some(true) {
        return Err(AzureError::bad_parameter(
            "Exportable keys need a release policy; key release is not supported by this emulator.",
        ));
    }
    if let (Some(nbf), Some(exp)) = (a.nbf, a.exp)
        && nbf >= exp
    {
        return Err(AzureError::bad_parameter(
            "The key's 'nbf' must be before its 'exp'.",
        ));
    }
    Ok(())
}

fn attributes(hsm: &Hsm, v: &KeyVersion) -> Value {
    let mut a = json!({
        "enabled": v.enabled,
        "created": v.created,
        "updated": v.updated,
        "recoveryLevel": hsm.recovery_level(),
        "recoverableDays": hsm.retention_days,
        "exportable": v.exportable,
    });
    if let Some(nbf) = v.nbf {
        a["nbf"] = json!(nbf);
    }
    if let Some(exp) = v.exp {
        a["exp"] = json!(exp);
    }
    a
}

fn key_bundle(base: &str, hsm: &Hsm, name: &str, v: &KeyVersion) -> Value {
    let mut jwk = Map::new();
    jwk.insert("kid".into(), json!(format!("{base}/keys/{name}/{}", v.id)));
    jwk.insert("kty".into(), json!(v.material.kty()));
    jwk.insert("key_ops".into(), json!(v.ops));
    v.material.public_jwk(&mut jwk);
    let mut bundle = json!({"key": jwk, "attributes": attributes(hsm, v)});
    if !v.tags.is_empty() {
        bundle["tags"] = json!(v.tags);
    }
    bundle
}

fn key_item(base: &str, hsm: &Hsm, name: &str, v: &KeyVersion, with_version: bool) -> Value {
    let kid = if with_version {
        format!("{base}/keys/{name}/{}", v.id)
    } else {
        format!("{base}/keys/{name}")
    };
    let mut item = json!({"kid": kid, "attributes": attributes(hsm, v)});
    if !v.tags.is_empty() {
        item["tags"] = json!(v.tags);
    }
    item
}

fn deleted_fields(base: &str, name: &str, d: &DeletedKey, into: &mut Value) {
    into["recoveryId"] = json!(format!("{base}/deletedkeys/{name}"));
    into["deletedDate"] = json!(d.deleted);
    into["scheduledPurgeDate"] = json!(d.scheduled_purge);
}

/// A page of a list (`maxresults` 1..=25, continuation in `$skiptoken`).
fn paged(
    q: &HashMap<String, String>,
    base: &str,
    path: &str,
    api: &str,
    items: Vec<(String, Value)>,
) -> Result<Value, AzureError> {
    let max = match q.get("maxresults") {
        None => 25,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=25).contains(&n) => n,
            _ => {
                return Err(AzureError::bad_parameter(format!(
                    "Invalid maxresults '{m}'. It must be between 1 and 25."
                )));
            }
        },
    };
    let after = match q.get("$skiptoken") {
        None => None,
        Some(t) => Some(
            URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| AzureError::bad_parameter("The $skiptoken is not valid."))?,
        ),
    };
    let mut rest = items
        .into_iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
        .peekable();
    let mut value = Vec::new();
    let mut last = None;
    while value.len() < max {
        let Some((k, v)) = rest.next() else { break };
        last = Some(k);
        value.push(v);
    }
    let mut body = json!({"value": value, "nextLink": null});
    if rest.peek().is_some()
        && let Some(last) = last
    {
        let token = URL_SAFE_NO_PAD.encode(last);
        body["nextLink"] = json!(format!(
            "{base}{path}?api-version={api}&$skiptoken={token}&maxresults={max}"
        ));
    }
    Ok(body)
}

impl Shared {
    /// Purges soft-deleted keys whose retention ran out (only takes the write lock when
    /// there is something to purge).
    fn housekeeping(&self, hsm: &str) {
        let now = self.clock.now();
        let due = self
            .world
            .read()
            .unwrap()
            .hsms
            .get(hsm)
            .is_some_and(|h| h.deleted.values().any(|d| d.scheduled_purge <= now));
        if due {
            let purged = self
                .world
                .write()
                .unwrap()
                .hsms
                .get_mut(hsm)
                .map_or(0, |h| h.purge_expired(now));
            if purged > 0 {
                tracing::info!(hsm, purged, "retention expired: purged soft-deleted keys");
                self.persist();
            }
        }
    }

    /// Authorizes, checks the api-version and runs housekeeping: the preamble of every call.
    fn begin(
        &self,
        headers: &HeaderMap,
        hsm: &str,
        q: &HashMap<String, String>,
        p: Permission,
    ) -> Result<String, AzureError> {
        let api = api_version(q)?;
        self.authorize_hsm(headers, hsm, p)?;
        self.housekeeping(hsm);
        Ok(api)
    }

    fn with_hsm<T>(
        &self,
        hsm: &str,
        f: impl FnOnce(&Hsm) -> Result<T, AzureError>,
    ) -> Result<T, AzureError> {
        let world = self.world.read().unwrap();
        f(world.hsms.get(hsm).expect("authorized HSMs exist"))
    }

    fn with_hsm_mut<T>(
        &self,
        hsm: &str,
        f: impl FnOnce(&mut Hsm) -> Result<T, AzureError>,
    ) -> Result<T, AzureError> {
        let r = {
            let mut world = self.world.write().unwrap();
            f(world.hsms.get_mut(hsm).expect("authorized HSMs exist"))
        };
        if r.is_ok() {
            self.persist();
        }
        r
    }
}

fn not_deleted(h: &Hsm, name: &str) -> Result<(), AzureError> {
    if h.deleted.contains_key(name) {
        return Err(AzureError::deleted_but_recoverable(name));
    }
    Ok(())
}

fn find<'a>(h: &'a Hsm, name: &str, version: Option<&str>) -> Result<&'a KeyVersion, AzureError> {
    let record = h
        .keys
        .get(name)
        .ok_or_else(|| AzureError::key_not_found(name))?;
    match version {
        None | Some("") => Ok(record.latest()),
        Some(v) => record
            .version(v)
            .ok_or_else(|| AzureError::key_not_found(&format!("{name}/{v}"))),
    }
}

/// Adds a version to `name` (creating the key), refusing names held by deleted keys.
fn add_version(h: &mut Hsm, name: &str, v: KeyVersion) -> Result<(), AzureError> {
    not_deleted(h, name)?;
    h.keys
        .entry(name.to_string())
        .or_insert_with(|| KeyRecord {
            versions: vec![],
            rotation_policy: None,
        })
        .versions
        .push(v);
    Ok(())
}

async fn create(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Write)?;
    check_name(&name)?;
    let req: CreateIn = parse_body(body)?;
    let kty = Kty::parse_hsm(&req.kty)?;
    check_attributes(&req.attributes)?;
    let ops = req.key_ops.unwrap_or_else(|| default_ops(kty));
    check_ops(kty, &ops)?;
    let tags = req.tags.unwrap_or_default();
    check_tags(&tags)?;
    if s.with_hsm(&hsm, |h| Ok(h.deleted.contains_key(&name)))? {
        return Err(AzureError::deleted_but_recoverable(&name));
    }
    // Key generation can take seconds (RSA-4096): never under the lock.
    let material = match kty {
        Kty::Rsa => {
            let bits = req.key_size.unwrap_or(2048);
            tokio::task::spawn_blocking(move || Material::generate_rsa(bits, req.public_exponent))
                .await
                .expect("keygen")?
        }
        Kty::Ec => {
            if req.key_size.is_some() {
                return Err(AzureError::bad_parameter(
                    "key_size is not valid for EC keys; give 'crv'.",
                ));
            }
            Material::generate_ec(Curve::parse(req.crv.as_deref().unwrap_or("P-256"))?)
        }
        Kty::Oct => Material::generate_oct(req.key_size.unwrap_or(256))?,
    };
    let now = s.clock.now();
    let version = KeyVersion {
        id: new_version_id(),
        material,
        ops,
        enabled: req.attributes.enabled.unwrap_or(true),
        nbf: req.attributes.nbf,
        exp: req.attributes.exp,
        created: now,
        updated: now,
        tags,
        exportable: false,
    };
    s.with_hsm_mut(&hsm, |h| {
        add_version(h, &name, version)?;
        json(key_bundle(&base, h, &name, h.keys[&name].latest()))
    })
}

/// The key a BYOK blob targets, unwrapped with the key-exchange key it names.
fn byok_material(
    h: &Hsm,
    kty: Kty,
    crv: Option<Curve>,
    key_hsm: &str,
) -> Result<Material, AzureError> {
    let doc_bytes = decode_b64("key_hsm", key_hsm)?;
    let doc: Value = serde_json::from_slice(&doc_bytes).map_err(|_| {
        AzureError::bad_parameter("'key_hsm' is not a BYOK transfer document (JSON).")
    })?;
    let header = &doc["header"];
    if header["enc"] != "CKM_RSA_AES_KEY_WRAP" {
        return Err(AzureError::bad_parameter(
            "The BYOK transfer must use enc CKM_RSA_AES_KEY_WRAP.",
        ));
    }
    let kek_id = header["kid"]
        .as_str()
        .ok_or_else(|| AzureError::bad_parameter("The BYOK header has no 'kid'."))?;
    // kid: https://{host}[/hsm/{name}]/keys/{kek}/{version}
    let mut parts = kek_id.rsplit('/');
    let (version, kek_name, keys) = (parts.next(), parts.next(), parts.next());
    let (Some(version), Some(kek_name), Some("keys")) = (version, kek_name, keys) else {
        return Err(AzureError::bad_parameter(format!(
            "The BYOK key exchange key id '{kek_id}' is not a key identifier."
        )));
    };
    let kek = find(h, kek_name, Some(version)).map_err(|_| {
        AzureError::bad_parameter(format!(
            "The key exchange key '{kek_id}' does not exist in this HSM."
        ))
    })?;
    if kek.ops != ["import"] {
        return Err(AzureError::bad_parameter(
            "The key exchange key must have 'import' as its only key operation.",
        ));
    }
    let ciphertext = decode_b64("ciphertext", doc["ciphertext"].as_str().unwrap_or_default())?;
    let target = crypto::byok_unwrap(&kek.material, &ciphertext)?;
    Ok(Material::from_der(kty, crv, &target)?)
}

async fn import(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Write)?;
    check_name(&name)?;
    let req: ImportIn = parse_body(body)?;
    let kty_name = req
        .key
        .get("kty")
        .and_then(Value::as_str)
        .ok_or_else(|| AzureError::bad_parameter("The key is missing 'kty'."))?;
    let kty = Kty::parse_hsm(kty_name)?;
    check_attributes(&req.attributes)?;
    let ops: Vec<String> = match req.key.get("key_ops") {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| AzureError::bad_parameter("'key_ops' must be a list of strings."))?,
        None => default_ops(kty),
    };
    check_ops(kty, &ops)?;
    let tags = req.tags.unwrap_or_default();
    check_tags(&tags)?;
    let crv = match req.key.get("crv").and_then(Value::as_str) {
        Some(c) => Some(Curve::parse(c)?),
        None => None,
    };
    let now = s.clock.now();
    s.with_hsm_mut(&hsm, |h| {
        not_deleted(h, &name)?;
        let material = match req.key.get("key_hsm").and_then(Value::as_str) {
            Some(blob) => byok_material(h, kty, crv, blob)?,
            None => Material::from_jwk(kty, &req.key)?,
        };
        let version = KeyVersion {
            id: new_version_id(),
            material,
            ops,
            enabled: req.attributes.enabled.unwrap_or(true),
            nbf: req.attributes.nbf,
            exp: req.attributes.exp,
            created: now,
            updated: now,
            tags,
            exportable: false,
        };
        add_version(h, &name, version)?;
        json(key_bundle(&base, h, &name, h.keys[&name].latest()))
    })
}

async fn get_key(
    s: &Shared,
    base: &str,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    hsm: &str,
    name: &str,
    version: Option<&str>,
) -> Reply {
    s.begin(headers, hsm, q, Permission::Read)?;
    s.with_hsm(hsm, |h| {
        json(key_bundle(base, h, name, find(h, name, version)?))
    })
}

async fn get_latest(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    get_key(&s, &base, &headers, &q, &hsm, &name, None).await
}

async fn get_version(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name, version)): Path<(String, String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    get_key(&s, &base, &headers, &q, &hsm, &name, Some(&version)).await
}

#[allow(clippy::too_many_arguments)]
async fn update_key(
    s: &Shared,
    base: &str,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    hsm: &str,
    name: &str,
    version: Option<&str>,
    body: Body,
) -> Reply {
    s.begin(headers, hsm, q, Permission::Write)?;
    let req: UpdateIn = parse_body(body)?;
    check_attributes(&req.attributes)?;
    if let Some(tags) = &req.tags {
        check_tags(tags)?;
    }
    let now = s.clock.now();
    s.with_hsm_mut(hsm, |h| {
        let id = find(h, name, version)?.id.clone();
        let v = h
            .keys
            .get_mut(name)
            .and_then(|r| r.version_mut(&id))
            .expect("found above");
        if let Some(ops) = req.key_ops {
            check_ops(v.material.family(), &ops)?;
            v.ops = ops;
        }
        let a = req.attributes;
        let (nbf, exp) = (a.nbf.or(v.nbf), a.exp.or(v.exp));
        if let (Some(nbf), Some(exp)) = (nbf, exp)
            && nbf >= exp
        {
            return Err(AzureError::bad_parameter(
                "The key's 'nbf' must be before its 'exp'.",
            ));
        }
        v.enabled = a.enabled.unwrap_or(v.enabled);
        v.nbf = nbf;
        v.exp = exp;
        if let Some(tags) = req.tags {
            v.tags = tags;
        }
        v.updated = now;
        let v = h.keys[name].version(&id).expect("exists");
        json(key_bundle(base, h, name, v))
    })
}

async fn update_latest(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    update_key(&s, &base, &headers, &q, &hsm, &name, None, body).await
}

async fn update_version(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name, version)): Path<(String, String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    update_key(&s, &base, &headers, &q, &hsm, &name, Some(&version), body).await
}

async fn list_keys(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path(hsm): Path<String>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    let api = s.begin(&headers, &hsm, &q, Permission::Read)?;
    s.with_hsm(&hsm, |h| {
        let items = h
            .keys
            .iter()
            .map(|(name, r)| (name.clone(), key_item(&base, h, name, r.latest(), false)))
            .collect();
        json(paged(&q, &base, "/keys", &api, items)?)
    })
}

async fn list_versions(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    let api = s.begin(&headers, &hsm, &q, Permission::Read)?;
    s.with_hsm(&hsm, |h| {
        let record = h
            .keys
            .get(&name)
            .ok_or_else(|| AzureError::key_not_found(&name))?;
        // Continuation is by position, encoded so that tokens sort like positions.
        let items = record
            .versions
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{i:08}"), key_item(&base, h, &name, v, true)))
            .collect();
        json(paged(
            &q,
            &base,
            &format!("/keys/{name}/versions"),
            &api,
            items,
        )?)
    })
}

async fn delete(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Delete)?;
    let now = s.clock.now();
    s.with_hsm_mut(&hsm, |h| {
        let record = h
            .keys
            .remove(&name)
            .ok_or_else(|| AzureError::key_not_found(&name))?;
        let deleted = DeletedKey {
            record,
            deleted: now,
            scheduled_purge: now + h.retention_days as i64 * 86_400,
        };
        let mut bundle = key_bundle(&base, h, &name, deleted.record.latest());
        deleted_fields(&base, &name, &deleted, &mut bundle);
        h.deleted.insert(name.clone(), deleted);
        json(bundle)
    })
}

async fn list_deleted(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path(hsm): Path<String>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    let api = s.begin(&headers, &hsm, &q, Permission::Read)?;
    s.with_hsm(&hsm, |h| {
        let items = h
            .deleted
            .iter()
            .map(|(name, d)| {
                let mut item = key_item(&base, h, name, d.record.latest(), false);
                deleted_fields(&base, name, d, &mut item);
                (name.clone(), item)
            })
            .collect();
        json(paged(&q, &base, "/deletedkeys", &api, items)?)
    })
}

async fn get_deleted(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Read)?;
    s.with_hsm(&hsm, |h| {
        let d = h
            .deleted
            .get(&name)
            .ok_or_else(|| AzureError::deleted_key_not_found(&name))?;
        let mut bundle = key_bundle(&base, h, &name, d.record.latest());
        deleted_fields(&base, &name, d, &mut bundle);
        json(bundle)
    })
}

async fn recover(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Recover)?;
    s.with_hsm_mut(&hsm, |h| {
        if h.keys.contains_key(&name) {
            return Err(AzureError::kv(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Key {name} already exists."),
            ));
        }
        let d = h
            .deleted
            .remove(&name)
            .ok_or_else(|| AzureError::deleted_key_not_found(&name))?;
        h.keys.insert(name.clone(), d.record);
        json(key_bundle(&base, h, &name, h.keys[&name].latest()))
    })
}

async fn purge(
    State(s): State<Arc<Shared>>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Purge)?;
    s.with_hsm_mut(&hsm, |h| {
        if !h.deleted.contains_key(&name) {
            return Err(AzureError::deleted_key_not_found(&name));
        }
        if h.purge_protection {
            return Err(AzureError::forbidden(
                "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.",
                "PurgeProtectionEnabled",
            ));
        }
        h.deleted.remove(&name);
        Ok(StatusCode::NO_CONTENT.into_response())
    })
}

const BACKUP_MAGIC: &[u8] = b"KWEMB1";

fn backup_aad(subscription: &str) -> Vec<u8> {
    format!("keyward-emulator-backup|{subscription}").into_bytes()
}

async fn backup(
    State(s): State<Arc<Shared>>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Backup)?;
    s.with_hsm(&hsm, |h| {
        let record = h
            .keys
            .get(&name)
            .ok_or_else(|| AzureError::key_not_found(&name))?;
        let plain =
            serde_json::to_vec(&json!({"name": name, "record": record})).expect("serialize");
        let iv = crypto::random_bytes(12);
        let sealed = crypto::gcm_seal(&s.backup_key, &iv, &plain, &backup_aad(&h.subscription))?;
        let mut blob = BACKUP_MAGIC.to_vec();
        blob.extend(iv);
        blob.extend(sealed);
        json(json!({"value": b64url(&blob)}))
    })
}

async fn restore(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path(hsm): Path<String>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Restore)?;
    let req: BlobIn = parse_body(body)?;
    let blob = decode_b64("value", &req.value)?;
    let invalid = || AzureError::bad_parameter("Backup blob contains invalid or corrupt version.");
    let rest = blob.strip_prefix(BACKUP_MAGIC).ok_or_else(invalid)?;
    if rest.len() < 12 {
        return Err(invalid());
    }
    let (iv, sealed) = rest.split_at(12);
    s.with_hsm_mut(&hsm, |h| {
        let plain = crypto::gcm_open(&s.backup_key, iv, sealed, &backup_aad(&h.subscription)).map_err(|_| {
            AzureError::bad_parameter("Backup blob is corrupt or was created by a different subscription or service.")
        })?;
        #[derive(Deserialize)]
        struct Backup {
            name: String,
            record: KeyRecord,
        }
        let b: Backup = serde_json::from_slice(&plain).map_err(|_| invalid())?;
        not_deleted(h, &b.name)?;
        if h.keys.contains_key(&b.name) {
            return Err(AzureError::kv(
                StatusCode::CONFLICT,
                "Conflict",
                format!("There was a conflict restoring the key '{}'. A key with that name already exists.", b.name),
            ));
        }
        h.keys.insert(b.name.clone(), b.record);
        json(key_bundle(&base, h, &b.name, h.keys[&b.name].latest()))
    })
}

async fn rotate(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Write)?;
    let (family, size, curve, ops, tags, expiry) = s.with_hsm(&hsm, |h| {
        let r = h
            .keys
            .get(&name)
            .ok_or_else(|| AzureError::key_not_found(&name))?;
        let l = r.latest();
        let expiry = r
            .rotation_policy
            .as_ref()
            .and_then(|p| p["attributes"]["expiryTime"].as_str())
            .and_then(duration_secs);
        Ok((
            l.material.family(),
            l.material.size(),
            l.material.curve(),
            l.ops.clone(),
            l.tags.clone(),
            expiry,
        ))
    })?;
    let material = match family {
        Kty::Rsa => {
            let bits = size.unwrap_or(2048);
            tokio::task::spawn_blocking(move || Material::generate_rsa(bits, None))
                .await
                .expect("keygen")?
        }
        Kty::Ec => Material::generate_ec(curve.unwrap_or(Curve::P256)),
        Kty::Oct => Material::generate_oct(size.unwrap_or(256))?,
    };
    let now = s.clock.now();
    s.with_hsm_mut(&hsm, |h| {
        let record = h
            .keys
            .get_mut(&name)
            .ok_or_else(|| AzureError::key_not_found(&name))?;
        record.versions.push(KeyVersion {
            id: new_version_id(),
            material,
            ops,
            enabled: true,
            nbf: None,
            exp: expiry.map(|e| now + e),
            created: now,
            updated: now,
            tags,
            exportable: false,
        });
        json(key_bundle(&base, h, &name, h.keys[&name].latest()))
    })
}

/// Seconds in an ISO-8601 duration (`P90D`, `P2Y`, `P1M`, `PT12H`, `P1W`); months count 30
/// days and years 365, as Key Vault does for rotation policies.
fn duration_secs(iso: &str) -> Option<i64> {
    let rest = iso.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut total = 0i64;
    let mut num = String::new();
    let mut any = false;
    for c in date.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().ok()?;
        num.clear();
        any = true;
        total += n * match c {
            'Y' => 365 * 86_400,
            'M' => 30 * 86_400,
            'W' => 7 * 86_400,
            'D' => 86_400,
            _ => return None,
        };
    }
    for c in time.unwrap_or_default().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().ok()?;
        num.clear();
        any = true;
        total += n * match c {
            'H' => 3600,
            'M' => 60,
            'S' => 1,
            _ => return None,
        };
    }
    (any && num.is_empty()).then_some(total)
}

fn policy_json(base: &str, name: &str, stored: Option<&Value>) -> Value {
    let mut p = stored
        .cloned()
        .unwrap_or_else(|| json!({"lifetimeActions": [], "attributes": {}}));
    p["id"] = json!(format!("{base}/keys/{name}/rotationpolicy"));
    p
}

async fn get_rotation_policy(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Read)?;
    s.with_hsm(&hsm, |h| {
        let r = h
            .keys
            .get(&name)
            .ok_or_else(|| AzureError::key_not_found(&name))?;
        json(policy_json(&base, &name, r.rotation_policy.as_ref()))
    })
}

async fn put_rotation_policy(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Write)?;
    let req: Value = parse_body(body)?;
    let expiry = match req["attributes"]["expiryTime"].as_str() {
        None => None,
        Some(e) => {
            let secs = duration_secs(e).ok_or_else(|| {
                AzureError::bad_parameter(format!(
                    "Invalid expiryTime '{e}': expected an ISO 8601 duration such as P2Y."
                ))
            })?;
            if secs < 28 * 86_400 {
                return Err(AzureError::bad_parameter(
                    "The expiryTime must be at least 28 days (P28D).",
                ));
            }
            Some(secs)
        }
    };
    let actions = req["lifetimeActions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for a in &actions {
        let kind = a["action"]["type"].as_str().unwrap_or_default();
        if kind.eq_ignore_ascii_case("notify") {
            return Err(AzureError::bad_parameter(
                "The Notify lifetime action is not supported by Managed HSM.",
            ));
        }
        if !kind.eq_ignore_ascii_case("rotate") {
            return Err(AzureError::bad_parameter(format!(
                "Invalid lifetime action type '{kind}'."
            )));
        }
        let t = &a["trigger"];
        match (
            t["timeAfterCreate"].as_str(),
            t["timeBeforeExpiry"].as_str(),
        ) {
            (Some(d), None) | (None, Some(d)) if duration_secs(d).is_some() => {}
            _ => {
                return Err(AzureError::bad_parameter(
                    "A trigger needs exactly one of timeAfterCreate and timeBeforeExpiry, as an ISO 8601 duration.",
                ));
            }
        }
        if t["timeBeforeExpiry"].is_string() && expiry.is_none() {
            return Err(AzureError::bad_parameter(
                "timeBeforeExpiry needs attributes.expiryTime.",
            ));
        }
    }
    let now = s.clock.now();
    s.with_hsm_mut(&hsm, |h| {
        let r = h
            .keys
            .get_mut(&name)
            .ok_or_else(|| AzureError::key_not_found(&name))?;
        let created = r
            .rotation_policy
            .as_ref()
            .and_then(|p| p["attributes"]["created"].as_i64())
            .unwrap_or(now);
        let mut attributes = json!({"created": created, "updated": now});
        if let Some(e) = req["attributes"]["expiryTime"].as_str() {
            attributes["expiryTime"] = json!(e);
        }
        let policy = json!({"lifetimeActions": actions, "attributes": attributes});
        r.rotation_policy = Some(policy);
        json(policy_json(&base, &name, r.rotation_policy.as_ref()))
    })
}

/// The key operation an endpoint needs.
fn op_for(endpoint: &str) -> Option<&'static str> {
    Some(match endpoint {
        "encrypt" => "encrypt",
        "decrypt" => "decrypt",
        "wrapkey" => "wrapKey",
        "unwrapkey" => "unwrapKey",
        "sign" => "sign",
        "verify" => "verify",
        _ => return None,
    })
}

async fn crypto_latest(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name, op)): Path<(String, String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    crypto_op(&s, &base, &headers, &q, &hsm, &name, None, &op, body).await
}

async fn crypto_version(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name, version, op)): Path<(String, String, String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    crypto_op(
        &s,
        &base,
        &headers,
        &q,
        &hsm,
        &name,
        Some(&version),
        &op,
        body,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn crypto_op(
    s: &Shared,
    base: &str,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    hsm: &str,
    name: &str,
    version: Option<&str>,
    endpoint: &str,
    body: Body,
) -> Reply {
    let Some(op) = op_for(endpoint) else {
        return Err(AzureError::kv(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("Unknown operation '{endpoint}'."),
        ));
    };
    s.begin(headers, hsm, q, Permission::Crypto)?;
    let body: Value = parse_body(body)?;
    let now = s.clock.now();
    // Clone the version out so the (possibly slow) operation runs without the lock.
    let key = s.with_hsm(hsm, |h| Ok(find(h, name, version)?.clone()))?;
    let kid = format!("{base}/keys/{name}/{}", key.id);
    if !key.enabled {
        return Err(AzureError::forbidden(
            format!("Operation \"{endpoint}\" is not allowed on a disabled key."),
            "KeyDisabled",
        ));
    }
    if key.nbf.is_some_and(|nbf| now < nbf) {
        return Err(AzureError::forbidden(
            format!("Operation \"{endpoint}\" is not allowed: the key is not yet valid."),
            "KeyNotYetValid",
        ));
    }
    if key.exp.is_some_and(|exp| now >= exp) {
        return Err(AzureError::forbidden(
            format!("Operation \"{endpoint}\" is not allowed: the key has expired."),
            "KeyExpired",
        ));
    }
    if !key.ops.iter().any(|o| o == op) {
        return Err(AzureError::forbidden(
            format!("Operation \"{op}\" is not permitted on this key."),
            "KeyOperationNotPermitted",
        ));
    }
    let parse = |v: Value| -> Result<Value, AzureError> { Ok(v) };
    let body = parse(body)?;
    let bytes = |field: &str, v: &Option<String>| -> Result<Option<Vec<u8>>, AzureError> {
        v.as_deref()
            .map(|x| decode_b64(field, x))
            .transpose()
            .map_err(Into::into)
    };
    let out = match endpoint {
        "encrypt" | "wrapkey" => {
            let r: CryptIn = serde_json::from_value(body).map_err(|e| {
                AzureError::bad_parameter(format!("The request body is not valid: {e}"))
            })?;
            let value = decode_b64("value", &r.value)?;
            let aad = bytes("aad", &r.aad)?;
            let sealed = key.material.encrypt(
                &r.alg,
                &value,
                bytes("iv", &r.iv)?.as_deref(),
                aad.as_deref(),
            )?;
            let mut out = json!({"kid": kid, "value": b64url(&sealed.value)});
            if let Some(iv) = sealed.iv {
                out["iv"] = json!(b64url(&iv));
            }
            if let Some(tag) = sealed.tag {
                out["tag"] = json!(b64url(&tag));
            }
            if let Some(aad) = aad {
                out["aad"] = json!(b64url(&aad));
            }
            out
        }
        "decrypt" | "unwrapkey" => {
            let r: CryptIn = serde_json::from_value(body).map_err(|e| {
                AzureError::bad_parameter(format!("The request body is not valid: {e}"))
            })?;
            let value = decode_b64("value", &r.value)?;
            let plain = key.material.decrypt(
                &r.alg,
                &value,
                bytes("iv", &r.iv)?.as_deref(),
                bytes("aad", &r.aad)?.as_deref(),
                bytes("tag", &r.tag)?.as_deref(),
            )?;
            json!({"kid": kid, "value": b64url(&plain)})
        }
        "sign" => {
            let r: SignIn = serde_json::from_value(body).map_err(|e| {
                AzureError::bad_parameter(format!("The request body is not valid: {e}"))
            })?;
            let sig = key.material.sign(&r.alg, &decode_b64("value", &r.value)?)?;
            json!({"kid": kid, "value": b64url(&sig)})
        }
        _ => {
            let r: VerifyIn = serde_json::from_value(body).map_err(|e| {
                AzureError::bad_parameter(format!("The request body is not valid: {e}"))
            })?;
            let ok = key.material.verify(
                &r.alg,
                &decode_b64("digest", &r.digest)?,
                &decode_b64("value", &r.value)?,
            )?;
            json!({"value": ok})
        }
    };
    json(out)
}

async fn rng(
    State(s): State<Arc<Shared>>,
    Path(hsm): Path<String>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Rng)?;
    let req: RngIn = parse_body(body)?;
    if !(1..=128).contains(&req.count) {
        return Err(AzureError::bad_parameter(
            "count must be between 1 and 128.",
        ));
    }
    json(json!({"value": b64url(&crypto::random_bytes(req.count as usize))}))
}

#[cfg(test)]
mod tests {
    use super::duration_secs;

    #[test]
    fn iso_durations() {
        assert_eq!(duration_secs("P90D"), Some(90 * 86_400));
        assert_eq!(duration_secs("P2Y"), Some(730 * 86_400));
        assert_eq!(
            duration_secs("P1Y2M3DT4H5M6S"),
            Some(365 * 86_400 + 60 * 86_400 + 3 * 86_400 + 4 * 3600 + 5 * 60 + 6)
        );
        assert_eq!(duration_secs("PT12H"), Some(12 * 3600));
        assert_eq!(duration_secs("P"), None);
        assert_eq!(duration_secs("90D"), None);
        assert_eq!(duration_secs("P9X"), None);
    }
}
