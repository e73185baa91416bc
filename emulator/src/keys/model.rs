//! Request bodies of the keys data plane, their checks, and the shapes of responses.

use super::*;

#[derive(Deserialize, Default)]
pub(super) struct AttributesIn {
    pub(super) enabled: Option<bool>,
    pub(super) nbf: Option<i64>,
    pub(super) exp: Option<i64>,
    pub(super) exportable: Option<bool>,
}

/// A key release policy as Key Vault takes it: the policy document, base64url, in `data`.
#[derive(Deserialize)]
pub(super) struct ReleasePolicyIn {
    #[serde(rename = "contentType")]
    pub(super) content_type: Option<String>,
    pub(super) data: String,
    #[allow(
        dead_code,
        reason = "accepted as Key Vault does; the emulator never makes a policy immutable"
    )]
    pub(super) immutable: Option<bool>,
}

#[derive(Deserialize)]
pub(super) struct CreateIn {
    pub(super) kty: String,
    pub(super) key_size: Option<u32>,
    pub(super) public_exponent: Option<u32>,
    pub(super) key_ops: Option<Vec<String>>,
    #[serde(default)]
    pub(super) attributes: AttributesIn,
    pub(super) tags: Option<BTreeMap<String, String>>,
    pub(super) crv: Option<String>,
    pub(super) release_policy: Option<ReleasePolicyIn>,
}

#[derive(Deserialize)]
pub(super) struct ImportIn {
    pub(super) key: Value,
    /// Import plain material as an HSM-protected key (Premium vaults; every Managed HSM key
    /// is HSM-protected anyway).
    #[serde(rename = "Hsm")]
    pub(super) hsm: Option<bool>,
    #[serde(default)]
    pub(super) attributes: AttributesIn,
    pub(super) tags: Option<BTreeMap<String, String>>,
    pub(super) release_policy: Option<ReleasePolicyIn>,
}

#[derive(Deserialize)]
pub(super) struct UpdateIn {
    pub(super) key_ops: Option<Vec<String>>,
    #[serde(default)]
    pub(super) attributes: AttributesIn,
    pub(super) tags: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
pub(super) struct CryptIn {
    pub(super) alg: String,
    pub(super) value: String,
    pub(super) iv: Option<String>,
    pub(super) aad: Option<String>,
    pub(super) tag: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct SignIn {
    pub(super) alg: String,
    pub(super) value: String,
}

#[derive(Deserialize)]
pub(super) struct VerifyIn {
    pub(super) alg: String,
    pub(super) digest: String,
    pub(super) value: String,
}

#[derive(Deserialize)]
pub(super) struct BlobIn {
    pub(super) value: String,
}

#[derive(Deserialize)]
pub(super) struct RngIn {
    pub(super) count: i64,
}

pub(super) const ALL_OPS: &[&str] = &[
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
    "import",
    "export",
];

/// The tier rules: which key types a store takes, and whether a key of the type the request
/// names (`RSA`, `RSA-HSM`, ...; `hsm_flag` is the import's `Hsm`) is HSM-protected there.
/// Standard vaults hold software keys only, Premium vaults software and HSM keys, neither
/// symmetric keys; a Managed HSM holds HSM keys of every family.
pub fn protection(kind: Kind, kty: &str, hsm_flag: bool) -> Result<(Kty, bool), AzureError> {
    let family = Kty::parse_hsm(kty)?;
    if kind == Kind::Managed {
        return Ok((family, true));
    }
    if family == Kty::Oct {
        return Err(AzureError::bad_parameter(format!(
            "Invalid kty value: {kty}. Key vaults support RSA, RSA-HSM, EC and EC-HSM keys; symmetric keys need a Managed HSM."
        )));
    }
    let hsm = kty.ends_with("-HSM") || hsm_flag;
    if hsm && kind == Kind::Standard {
        return Err(AzureError::bad_parameter(
            "Hardware key operation not allowed on standard vault",
        ));
    }
    Ok((family, hsm))
}

/// The `kty` of a key version as Key Vault reports it.
pub(super) fn kty_name(v: &KeyVersion) -> &'static str {
    match (v.hsm, v.material.family()) {
        (true, f) => f.name(),
        (false, Kty::Rsa) => "RSA",
        (false, Kty::Ec) => "EC",
        (false, Kty::Oct) => "oct",
    }
}

pub(super) fn default_ops(kty: Kty) -> Vec<String> {
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

pub(super) fn check_ops(kty: Kty, ops: &[String]) -> Result<(), AzureError> {
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

pub(super) fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), AzureError> {
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

/// The release policy of a new key: an exportable key needs one and must be HSM-protected;
/// a policy needs an exportable key. The policy document is `{"version", "anyOf": [{"authority",
/// "allOf"|"anyOf": [{"claim", "equals"}]}]}`.
pub(super) fn release_policy(
    a: &AttributesIn,
    policy: Option<&ReleasePolicyIn>,
    protected: bool,
) -> Result<Option<Value>, AzureError> {
    let exportable = a.exportable == Some(true);
    match (exportable, policy) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err(AzureError::bad_parameter(
            "A release policy applies only to an exportable key ('exportable': true).",
        )),
        (true, None) => Err(AzureError::bad_parameter(
            "Exportable keys must have a release policy.",
        )),
        (true, Some(_)) if !protected => Err(AzureError::bad_parameter(
            "Only HSM-protected keys can be exportable.",
        )),
        (true, Some(p)) => {
            if p.content_type
                .as_deref()
                .is_some_and(|c| !c.starts_with("application/json"))
            {
                return Err(AzureError::bad_parameter(
                    "The release policy's contentType must be application/json.",
                ));
            }
            let doc: Value = decode_b64("release_policy.data", &p.data)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| {
                    AzureError::bad_parameter("The release policy's data is not base64url JSON.")
                })?;
            let rules_ok = doc["anyOf"].as_array().is_some_and(|any| {
                !any.is_empty()
                    && any.iter().all(|r| {
                        r["authority"].as_str().is_some()
                            && r.get("allOf")
                                .or_else(|| r.get("anyOf"))
                                .and_then(Value::as_array)
                                .is_some_and(|cs| {
                                    cs.iter().all(|c| {
                                        c["claim"].is_string() && c.get("equals").is_some()
                                    })
                                })
                    })
            });
            if !rules_ok {
                return Err(AzureError::bad_parameter(
                    "The release policy must be {\"version\", \"anyOf\": [{\"authority\", \"allOf\" or \"anyOf\": [{\"claim\", \"equals\"}]}]}.",
                ));
            }
            Ok(Some(doc))
        }
    }
}

pub(super) fn check_attributes(a: &AttributesIn) -> Result<(), AzureError> {
    if let (Some(nbf), Some(exp)) = (a.nbf, a.exp)
        && nbf >= exp
    {
        return Err(AzureError::bad_parameter(
            "The key's 'nbf' must be before its 'exp'.",
        ));
    }
    Ok(())
}

pub(super) fn attributes(hsm: &Hsm, v: &KeyVersion) -> Value {
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

pub(super) fn key_bundle(base: &str, hsm: &Hsm, name: &str, v: &KeyVersion) -> Value {
    let name = created_name(hsm, name);
    let mut jwk = Map::new();
    jwk.insert("kid".into(), json!(format!("{base}/keys/{name}/{}", v.id)));
    jwk.insert("kty".into(), json!(kty_name(v)));
    jwk.insert("key_ops".into(), json!(v.ops));
    v.material.public_jwk(&mut jwk);
    let mut bundle = json!({"key": jwk, "attributes": attributes(hsm, v)});
    if let Some(p) = &v.release_policy {
        bundle["release_policy"] = release_policy_json(p);
    }
    if !v.tags.is_empty() {
        bundle["tags"] = json!(v.tags);
    }
    bundle
}

/// A release policy as Key Vault shows it.
pub(super) fn release_policy_json(p: &Value) -> Value {
    json!({
        "contentType": "application/json; charset=utf-8",
        "data": b64url(p.to_string().as_bytes()),
        "immutable": false,
    })
}

/// A key's name as it was created, whatever case the request used.
fn created_name<'a>(hsm: &'a Hsm, name: &'a str) -> &'a str {
    hsm.keys
        .created_name(name)
        .or_else(|| hsm.deleted.created_name(name))
        .unwrap_or(name)
}

pub(super) fn key_item(
    base: &str,
    hsm: &Hsm,
    name: &str,
    v: &KeyVersion,
    with_version: bool,
) -> Value {
    let name = created_name(hsm, name);
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

pub(super) fn deleted_fields(base: &str, name: &str, d: &DeletedKey, into: &mut Value) {
    into["recoveryId"] = json!(format!("{base}/deletedkeys/{name}"));
    into["deletedDate"] = json!(d.deleted);
    into["scheduledPurgeDate"] = json!(d.scheduled_purge);
}

/// A page of a list (`maxresults` 1..=25, continuation in `$skiptoken`). `items` gives the
/// (continuation key, item) pairs after a key, in key order, rendering each as it is taken,
/// so that a page renders only its own items.
pub(super) fn paged<I: Iterator<Item = (String, Value)>>(
    q: &HashMap<String, String>,
    base: &str,
    path: &str,
    api: &str,
    items: impl FnOnce(Option<&str>) -> I,
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
    let mut rest = items(after.as_deref()).peekable();
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
