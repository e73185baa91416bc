//! Cryptographic operations with a key version, and the HSM's random number generator.

use super::*;

use super::lifecycle::*;
use super::model::*;

/// The key operation an endpoint needs.
pub(super) fn op_for(endpoint: &str) -> Option<&'static str> {
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

pub(super) async fn crypto_latest(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name, op)): Path<(String, String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    crypto_op(&s, &base, &headers, &q, &hsm, &name, None, &op, body).await
}

pub(super) async fn crypto_version(
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
pub(super) async fn crypto_op(
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
    if endpoint == "release" {
        return super::release::release(s, base, headers, q, hsm, name, version, body).await;
    }
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

pub(super) async fn rng(
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
