//! The shapes of what scripts see (keys, listings, instances as maps) and the parsing of
//! what they pass to host functions (key specs, operations, tags).

use rhai::EvalAltResult;
use serde_json::{Value, json};

use crate::catalog::sobjects::{SObject, curve_name};
use crate::kms::obj_type_of;
use crate::plugins::kms::{
    Curve, DeletedKey, DeletedKeyItem, Instance, KeyItem, KeyOp, KeySpec, KeyType, PublicKey,
    RemoteKey, Tag,
};

use super::invalid;

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

fn dsm_curve(c: Curve) -> &'static str {
    match c {
        Curve::P256 => "NistP256",
        Curve::P384 => "NistP384",
        Curve::P521 => "NistP521",
        Curve::Secp256k1 => "SecP256K1",
    }
}

fn dsm_ops(ops: &[KeyOp]) -> Vec<String> {
    ops.iter()
        .filter_map(|o| {
            Some(
                match o {
                    KeyOp::Encrypt => "ENCRYPT",
                    KeyOp::Decrypt => "DECRYPT",
                    KeyOp::Sign => "SIGN",
                    KeyOp::Verify => "VERIFY",
                    KeyOp::WrapKey => "WRAPKEY",
                    KeyOp::UnwrapKey => "UNWRAPKEY",
                    KeyOp::Export => "EXPORT",
                    _ => return None,
                }
                .to_string(),
            )
        })
        .collect()
}

/// A catalog key as a script sees it.
pub fn object_json(o: &SObject, now: i64) -> Value {
    json!({
        "kid": o.kid, "name": o.name, "group_id": o.group_id, "obj_type": o.obj_type.as_str(),
        "key_size": o.key_size, "elliptic_curve": o.curve.map(curve_name), "key_ops": o.key_ops,
        "enabled": o.enabled, "state": o.state(now).as_str(), "origin": o.origin.as_str(),
        "activation_date": o.activation_date, "deactivation_date": o.deactivation_date,
        "external": o.external, "tags": o.tags,
    })
}

pub fn key_json(k: &RemoteKey) -> Value {
    let p = &k.properties;
    let jwk = match &k.public_key {
        Some(PublicKey::Rsa(r)) => {
            json!({"kty": "RSA", "n": keyward_crypto::b64url(&r.n), "e": keyward_crypto::b64url(&r.e)})
        }
        Some(PublicKey::Ec(e)) => {
            json!({"kty": "EC", "crv": format!("{:?}", e.curve), "x": keyward_crypto::b64url(&e.x), "y": keyward_crypto::b64url(&e.y)})
        }
        None => Value::Null,
    };
    json!({
        "name": k.name, "version": k.version, "id": k.id, "kty": k.kty,
        "obj_type": obj_type_of(&k.spec).as_str(), "key_size": k.spec.size,
        "elliptic_curve": k.spec.curve.map(dsm_curve),
        "ops": dsm_ops(&k.ops), "enabled": p.enabled, "not_before": p.not_before,
        "expires": p.expires, "created": p.created, "updated": p.updated,
        "recoverable_days": p.recoverable_days, "recovery_level": p.recovery_level,
        "tags": tags_json(&k.tags), "managed": k.managed, "jwk": jwk,
    })
}

pub fn tags_json(tags: &[Tag]) -> Value {
    Value::Object(
        tags.iter()
            .map(|t| (t.name.clone(), json!(t.value)))
            .collect(),
    )
}

pub fn item_json(i: &KeyItem) -> Value {
    let p = &i.properties;
    json!({
        "name": i.name, "id": i.id, "version": i.version, "enabled": p.enabled,
        "not_before": p.not_before, "expires": p.expires, "created": p.created,
        "updated": p.updated, "tags": tags_json(&i.tags), "managed": i.managed,
    })
}

pub fn deleted_item_json(d: &DeletedKeyItem) -> Value {
    let mut v = item_json(&d.item);
    v["recovery_id"] = json!(d.recovery_id);
    v["deleted"] = json!(d.deleted);
    v["scheduled_purge"] = json!(d.scheduled_purge);
    v
}

pub fn deleted_json(d: &DeletedKey) -> Value {
    let mut v = key_json(&d.key);
    v["recovery_id"] = json!(d.recovery_id);
    v["deleted"] = json!(d.deleted);
    v["scheduled_purge"] = json!(d.scheduled_purge);
    v
}

pub fn instance_json(i: &Instance) -> Value {
    serde_json::to_value(crate::kms::InstanceInfo::of(i)).expect("serialize")
}

pub fn str_field(v: &Value, name: &str) -> RhaiResult<String> {
    v[name]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| invalid(format!("'{name}' is required")))
}

pub fn b64url_field(v: &Value, name: &str) -> RhaiResult<Vec<u8>> {
    let s = str_field(v, name)?;
    keyward_crypto::decode_b64(name, &s).map_err(|e| invalid(e.to_string()))
}

/// `obj_type` (RSA, EC, AES), `key_size`, `elliptic_curve` (NistP256 or P-256 style).
pub fn spec_from_json(v: &Value) -> RhaiResult<KeySpec> {
    let size = v["key_size"].as_u64().map(|s| s as u32);
    let curve = match v["elliptic_curve"].as_str() {
        None => None,
        Some("NistP256" | "P-256") => Some(Curve::P256),
        Some("NistP384" | "P-384") => Some(Curve::P384),
        Some("NistP521" | "P-521") => Some(Curve::P521),
        Some(other) => return Err(invalid(format!("unknown curve '{other}'"))),
    };
    let key_type = match v["obj_type"].as_str() {
        Some("RSA") => KeyType::Rsa,
        Some("EC") => KeyType::Ec,
        Some("AES") => KeyType::Aes,
        other => {
            return Err(invalid(format!("obj_type {other:?} is not RSA, EC or AES")));
        }
    };
    Ok(KeySpec {
        key_type,
        size,
        curve,
    })
}

/// Operations by DSM (`ENCRYPT`, `WRAPKEY`) or Azure (`encrypt`, `wrapKey`) name. Operations
/// that exist only in the catalog (`EXPORT`, `APPMANAGEABLE`, ...) are not sent.
pub fn ops_from_json(v: &Value) -> RhaiResult<Vec<KeyOp>> {
    let mut out = Vec::new();
    for op in v.as_array().into_iter().flatten() {
        let name = op
            .as_str()
            .ok_or_else(|| invalid("operations are strings"))?;
        let op = match name.to_ascii_uppercase().as_str() {
            "ENCRYPT" => KeyOp::Encrypt,
            "DECRYPT" => KeyOp::Decrypt,
            "SIGN" => KeyOp::Sign,
            "VERIFY" => KeyOp::Verify,
            "WRAPKEY" => KeyOp::WrapKey,
            "UNWRAPKEY" => KeyOp::UnwrapKey,
            "IMPORT" => KeyOp::Import,
            "EXPORT" | "APPMANAGEABLE" | "DERIVEKEY" | "MACGENERATE" | "MACVERIFY" | "AGREEKEY"
            | "TRANSFORM" | "HIGHVOLUME" => continue,
            _ => return Err(invalid(format!("unknown key operation '{name}'"))),
        };
        if !out.contains(&op) {
            out.push(op);
        }
    }
    Ok(out)
}

pub fn tags_from_json(v: &Value) -> Vec<Tag> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| Tag {
            name: k.clone(),
            value: v.as_str().map_or_else(|| v.to_string(), str::to_string),
        })
        .collect()
}
