//! Key release (`POST /keys/{name}/{version}/release`): an exportable HSM key leaves, wrapped
//! for a key that an attested environment holds, when the environment's attestation token,
//! from a trusted attestation service, satisfies the key's release policy.
//!
//! The token is an RS256 JWT of one of the configured attestation issuers. The policy's
//! `anyOf` rules each name an `authority` (the token's issuer) and conditions
//! (`allOf` or `anyOf` of `{"claim", "equals"}`, a claim named by its path with dots). The
//! key is wrapped (CKM_RSA_AES_KEY_WRAP) for the first RSA key of the token's
//! `x-ms-runtime.keys`, and the answer is a JWS signed by the service, as Key Vault's is.

use super::*;

use super::model::{attributes, kty_name, release_policy_json};

#[derive(Deserialize)]
struct ReleaseIn {
    target: String,
    nonce: Option<String>,
    enc: Option<String>,
}

/// A claim by its path (`x-ms-runtime.client-payload.nonce`).
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

/// Whether the token's claims satisfy the policy for a token of `issuer`.
fn satisfies(policy: &Value, issuer: &str, claims: &Value) -> bool {
    let holds = |c: &Value| {
        c["claim"]
            .as_str()
            .and_then(|path| claim(claims, path))
            .is_some_and(|v| *v == c["equals"])
    };
    policy["anyOf"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|rule| {
            let authority = rule["authority"].as_str().unwrap_or_default();
            if authority.trim_end_matches('/') != issuer {
                return false;
            }
            match (rule["allOf"].as_array(), rule["anyOf"].as_array()) {
                (Some(all), _) => all.iter().all(holds),
                (None, Some(any)) => any.iter().any(holds),
                (None, None) => false,
            }
        })
}

fn refused(message: &str) -> AzureError {
    AzureError::forbidden(message, "AccessDenied")
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn release(
    s: &Shared,
    base: &str,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    hsm: &str,
    name: &str,
    version: Option<&str>,
    body: Body,
) -> Reply {
    let api = s.begin(headers, hsm, q, Permission::Release)?;
    let req: ReleaseIn = parse_body(body)?;
    if req
        .enc
        .as_deref()
        .is_some_and(|e| e != "CKM_RSA_AES_KEY_WRAP")
    {
        return Err(AzureError::bad_parameter(format!(
            "The release algorithm '{}' is not supported by this emulator; use CKM_RSA_AES_KEY_WRAP.",
            req.enc.as_deref().unwrap_or_default()
        )));
    }
    let (key, hsm_view) = s.with_hsm(hsm, |h| {
        let v = find(h, name, version)?;
        Ok((v.clone(), attributes(h, v)))
    })?;
    let Some(policy) = key.release_policy.clone().filter(|_| key.exportable) else {
        return Err(AzureError::bad_parameter(
            "The key is not exportable: only keys created exportable with a release policy can be released.",
        ));
    };
    // Which attestation service issued the token, then its signature and the policy.
    let issuer = jwt::unverified_claims(&req.target)
        .and_then(|c| {
            c["iss"]
                .as_str()
                .map(|i| i.trim_end_matches('/').to_string())
        })
        .ok_or_else(|| {
            AzureError::bad_parameter("The target is not an attestation token (JWT).")
        })?;
    let Some((_, trusted)) = s.attestation.iter().find(|(i, _)| *i == issuer) else {
        return Err(refused(&format!(
            "The attestation token's issuer '{issuer}' is not a trusted attestation service."
        )));
    };
    let claims = jwt::verify_rs256(trusted, &req.target)
        .map_err(|e| refused(&format!("The attestation token cannot be verified: {e}.")))?;
    let now = s.clock.now();
    if claims["exp"].as_i64().is_some_and(|exp| exp <= now) {
        return Err(refused("The attestation token is expired."));
    }
    if !satisfies(&policy, &issuer, &claims) {
        return Err(refused(
            "Target environment attestation statement does not satisfy the key's release policy.",
        ));
    }
    let wrapping = claim(&claims, "x-ms-runtime.keys")
        .and_then(Value::as_array)
        .and_then(|keys| keys.iter().find(|k| k["kty"] == "RSA"))
        .ok_or_else(|| {
            AzureError::bad_parameter(
                "The attestation token carries no RSA key to wrap for (x-ms-runtime.keys).",
            )
        })?;
    let n = decode_b64("n", wrapping["n"].as_str().unwrap_or_default())?;
    let e = decode_b64("e", wrapping["e"].as_str().unwrap_or_default())?;
    let public = crypto::rsa_public(&n, &e)?;
    let target = key.material.to_der();
    let wrapped = tokio::task::spawn_blocking(move || crypto::byok_wrap(&public, &target))
        .await
        .expect("wrapping does not panic")?;
    let kid = format!("{base}/keys/{name}/{}", key.id);
    let payload = json!({
        "request": {"api-version": api, "enc": "CKM_RSA_AES_KEY_WRAP", "kid": kid, "nonce": req.nonce},
        "response": {"key": {
            "key": {"kid": kid, "kty": kty_name(&key), "key_ops": key.ops, "key_hsm": b64url(&wrapped)},
            "attributes": hsm_view,
            "release_policy": release_policy_json(&policy),
        }},
    });
    json(json!({"value": s.issuer.sign_json(&payload)}))
}
