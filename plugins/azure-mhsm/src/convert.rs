//! Azure's JSON shapes (KeyBundle, KeyItem, DeletedKeyBundle, ManagedHsm) to and from the
//! contract's types.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use crate::azure::other;
use crate::exports::keyward::plugin::kms::*;
use crate::keyward::plugin::types::{Curve, KeyOp, KeySpec, KeyType, Tag};

pub fn b64url(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// Azure writes base64url; be lenient about padding and alphabet.
pub fn unb64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
        .or_else(|| STANDARD.decode(s).ok())
}

pub fn ops_to_azure(ops: &[KeyOp]) -> Vec<&'static str> {
    ops.iter()
        .filter_map(|op| {
            Some(match op {
                KeyOp::Encrypt => "encrypt",
                KeyOp::Decrypt => "decrypt",
                KeyOp::Sign => "sign",
                KeyOp::Verify => "verify",
                KeyOp::WrapKey => "wrapKey",
                KeyOp::UnwrapKey => "unwrapKey",
                KeyOp::Import => "import",
                KeyOp::Export => "export",
                // No Azure counterpart: these stay in the catalog only.
                KeyOp::DeriveKey | KeyOp::AppManageable => return None,
            })
        })
        .collect()
}

fn ops_from_azure(v: &Value) -> Vec<KeyOp> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            Some(match o.as_str()? {
                "encrypt" => KeyOp::Encrypt,
                "decrypt" => KeyOp::Decrypt,
                "sign" => KeyOp::Sign,
                "verify" => KeyOp::Verify,
                "wrapKey" => KeyOp::WrapKey,
                "unwrapKey" => KeyOp::UnwrapKey,
                "import" => KeyOp::Import,
                "export" => KeyOp::Export,
                _ => return None,
            })
        })
        .collect()
}

pub fn tags_to_azure(tags: &[Tag]) -> Map<String, Value> {
    tags.iter()
        .map(|t| (t.name.clone(), json!(t.value)))
        .collect()
}

fn tags_from_azure(v: &Value) -> Vec<Tag> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| Tag {
            name: k.clone(),
            value: v.as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

fn properties(a: &Value) -> KeyProperties {
    KeyProperties {
        enabled: a["enabled"].as_bool().unwrap_or(true),
        not_before: a["nbf"].as_i64(),
        expires: a["exp"].as_i64(),
        created: a["created"].as_i64(),
        updated: a["updated"].as_i64(),
        recoverable_days: a["recoverableDays"].as_u64().map(|d| d as u32),
        recovery_level: a["recoveryLevel"].as_str().map(str::to_string),
        exportable: a["exportable"].as_bool(),
    }
}

/// `https://host/keys/{name}[/{version}]` → (name, version).
fn split_kid(kid: &str) -> (String, Option<String>) {
    let after = kid.rsplit_once("/keys/").map(|(_, r)| r).unwrap_or(kid);
    let mut parts = after.split('/');
    let name = parts.next().unwrap_or_default().to_string();
    let version = parts.next().filter(|v| !v.is_empty()).map(str::to_string);
    (name, version)
}

fn spec_of(jwk: &Value) -> (KeySpec, String) {
    let kty = jwk["kty"].as_str().unwrap_or_default().to_string();
    let spec = match kty.trim_end_matches("-HSM") {
        "RSA" => KeySpec {
            key_type: KeyType::Rsa,
            size: jwk["n"]
                .as_str()
                .and_then(unb64url)
                .map(|n| significant_bits(&n)),
            curve: None,
        },
        "EC" => KeySpec {
            key_type: KeyType::Ec,
            size: None,
            curve: match jwk["crv"].as_str() {
                Some("P-384") => Some(Curve::P384),
                Some("P-521") => Some(Curve::P521),
                Some("P-256K") => Some(Curve::Secp256k1),
                _ => Some(Curve::P256),
            },
        },
        // Azure does not report the size of symmetric keys.
        _ => KeySpec {
            key_type: KeyType::Aes,
            size: jwk["key_size"].as_u64().map(|s| s as u32),
            curve: None,
        },
    };
    (spec, kty)
}

/// RSA modulus size in bits, rounded to the usual sizes (a modulus may have leading zeros).
fn significant_bits(n: &[u8]) -> u32 {
    let bytes = n.iter().skip_while(|b| **b == 0).count() as u32;
    bytes.div_ceil(128) * 1024
}

pub fn remote_key(v: &Value) -> Result<RemoteKey, KmsError> {
    let jwk = &v["key"];
    let kid = jwk["kid"]
        .as_str()
        .ok_or_else(|| other("the key bundle has no kid"))?;
    let (name, version) = split_kid(kid);
    let (spec, kty) = spec_of(jwk);
    let public_key = match spec.key_type {
        KeyType::Rsa => match (
            jwk["n"].as_str().and_then(unb64url),
            jwk["e"].as_str().and_then(unb64url),
        ) {
            (Some(n), Some(e)) => Some(PublicKey::Rsa(RsaPublic { n, e })),
            _ => None,
        },
        KeyType::Ec => match (
            jwk["x"].as_str().and_then(unb64url),
            jwk["y"].as_str().and_then(unb64url),
            spec.curve,
        ) {
            (Some(x), Some(y), Some(curve)) => Some(PublicKey::Ec(EcPublic { curve, x, y })),
            _ => None,
        },
        KeyType::Aes => None,
    };
    Ok(RemoteKey {
        name,
        version: version.unwrap_or_default(),
        id: kid.to_string(),
        spec,
        kty,
        ops: ops_from_azure(&jwk["key_ops"]),
        properties: properties(&v["attributes"]),
        tags: tags_from_azure(&v["tags"]),
        managed: v["managed"].as_bool().unwrap_or(false),
        public_key,
    })
}

pub fn key_item(v: &Value) -> KeyItem {
    let kid = v["kid"].as_str().unwrap_or_default();
    let (name, version) = split_kid(kid);
    KeyItem {
        name,
        id: kid.to_string(),
        version,
        properties: properties(&v["attributes"]),
        tags: tags_from_azure(&v["tags"]),
        managed: v["managed"].as_bool().unwrap_or(false),
    }
}

pub fn deleted_key(v: &Value) -> Result<DeletedKey, KmsError> {
    Ok(DeletedKey {
        key: remote_key(v)?,
        recovery_id: v["recoveryId"].as_str().unwrap_or_default().to_string(),
        deleted: v["deletedDate"].as_i64(),
        scheduled_purge: v["scheduledPurgeDate"].as_i64(),
    })
}

pub fn deleted_item(v: &Value) -> DeletedKeyItem {
    DeletedKeyItem {
        item: key_item(v),
        recovery_id: v["recoveryId"].as_str().unwrap_or_default().to_string(),
        deleted: v["deletedDate"].as_i64(),
        scheduled_purge: v["scheduledPurgeDate"].as_i64(),
    }
}

/// A Managed HSM as ARM lists it (`sku` at the top, `hsmUri`).
pub fn instance(v: &Value) -> Instance {
    let p = &v["properties"];
    Instance {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        name: v["name"].as_str().unwrap_or_default().to_string(),
        kind: InstanceKind::Managed,
        uri: p["hsmUri"].as_str().unwrap_or_default().to_string(),
        location: v["location"].as_str().unwrap_or_default().to_string(),
        retention_days: p["softDeleteRetentionInDays"].as_u64().map(|d| d as u32),
        purge_protection: p["enablePurgeProtection"].as_bool().unwrap_or(false),
        rbac: true,
        key_permissions: None,
        tags: tags_from_azure(&v["tags"]),
    }
}

/// A vault as ARM lists it (`sku` inside `properties`, `vaultUri`), with the key permissions
/// the access policy of `object_id` grants when the vault uses access policies.
pub fn vault(v: &Value, object_id: Option<&str>) -> Instance {
    let p = &v["properties"];
    let kind = match p["sku"]["name"].as_str() {
        Some(s) if s.eq_ignore_ascii_case("premium") => InstanceKind::Premium,
        _ => InstanceKind::Standard,
    };
    let rbac = p["enableRbacAuthorization"].as_bool().unwrap_or(false);
    let key_permissions = (!rbac).then(|| {
        p["accessPolicies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| object_id.is_some_and(|o| a["objectId"].as_str() == Some(o)))
            .flat_map(|a| {
                a["permissions"]["keys"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect()
    });
    Instance {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        name: v["name"].as_str().unwrap_or_default().to_string(),
        kind,
        uri: p["vaultUri"].as_str().unwrap_or_default().to_string(),
        location: v["location"].as_str().unwrap_or_default().to_string(),
        // Soft delete is on for every vault; 90 days unless set at creation.
        retention_days: Some(p["softDeleteRetentionInDays"].as_u64().unwrap_or(90) as u32),
        purge_protection: p["enablePurgeProtection"].as_bool().unwrap_or(false),
        rbac,
        key_permissions,
        tags: tags_from_azure(&v["tags"]),
    }
}

pub fn crypt_body(req: &CryptRequest) -> Value {
    let mut body = json!({"alg": req.algorithm, "value": b64url(&req.value)});
    if let Some(iv) = &req.iv {
        body["iv"] = json!(b64url(iv));
    }
    if let Some(aad) = &req.aad {
        body["aad"] = json!(b64url(aad));
    }
    if let Some(tag) = &req.tag {
        body["tag"] = json!(b64url(tag));
    }
    body
}

/// Azure's name of a curve.
fn curve_name(c: Curve) -> &'static str {
    match c {
        Curve::P384 => "P-384",
        Curve::P521 => "P-521",
        Curve::Secp256k1 => "P-256K",
        Curve::P256 => "P-256",
    }
}

/// The JSON Web Key of an import: private components, or a BYOK transfer blob. Plain
/// material is named by its software type (`RSA`, `EC`) in a vault, where the import's `Hsm`
/// flag decides the protection, and by its HSM type in a Managed HSM.
pub fn import_jwk(material: &KeyMaterial, ops: &[KeyOp], kind: InstanceKind) -> Value {
    let ops = ops_to_azure(ops);
    let soft = kind != InstanceKind::Managed;
    match material {
        KeyMaterial::Rsa(k) => json!({
            "kty": if soft { "RSA" } else { "RSA-HSM" }, "key_ops": ops,
            "n": b64url(&k.n), "e": b64url(&k.e), "d": b64url(&k.d), "p": b64url(&k.p), "q": b64url(&k.q),
            "dp": b64url(&k.dp), "dq": b64url(&k.dq), "qi": b64url(&k.qi),
        }),
        KeyMaterial::Ec(k) => json!({
            "kty": if soft { "EC" } else { "EC-HSM" }, "key_ops": ops, "crv": curve_name(k.curve),
            "x": b64url(&k.x), "y": b64url(&k.y), "d": b64url(&k.d),
        }),
        KeyMaterial::Symmetric(k) => json!({"kty": "oct-HSM", "key_ops": ops, "k": b64url(k)}),
        KeyMaterial::Byok(b) => {
            let kty = match b.spec.key_type {
                KeyType::Rsa => "RSA-HSM",
                KeyType::Ec => "EC-HSM",
                KeyType::Aes => "oct-HSM",
            };
            let mut jwk = json!({"kty": kty, "key_ops": ops, "key_hsm": b64url(&b.blob)});
            if let Some(c) = b.spec.curve {
                jwk["crv"] = json!(curve_name(c));
            }
            jwk
        }
    }
}
