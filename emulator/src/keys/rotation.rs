//! Rotation: a new version now (`rotate`), and rotation policies as Key Vault stores them.

use super::*;

use super::model::*;

pub(super) async fn rotate(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Rotate)?;
    let (family, size, curve, ops, tags, expiry, protected, policy) = s.with_hsm(&hsm, |h| {
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
            l.hsm,
            l.release_policy.clone(),
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
        if !h.keys.contains_key(&name) {
            return Err(AzureError::key_not_found(&name));
        }
        add_version(
            h,
            &name,
            KeyVersion {
                id: new_version_id(),
                material,
                ops,
                enabled: true,
                nbf: None,
                exp: expiry.map(|e| now + e),
                created: now,
                updated: now,
                tags,
                // A new version keeps the key's release policy.
                exportable: policy.is_some(),
                hsm: protected,
                release_policy: policy,
            },
        )?;
        json(key_bundle(&base, h, &name, h.keys[&name].latest()))
    })
}

/// Seconds in an ISO-8601 duration (`P90D`, `P2Y`, `P1M`, `PT12H`, `P1W`); months count 30
/// days and years 365, as Key Vault does for rotation policies.
pub(super) fn duration_secs(iso: &str) -> Option<i64> {
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

/// The shortest trigger, and the least time a trigger must leave before expiry.
const MIN_TRIGGER_SECS: i64 = 7 * 86_400;

/// One lifetime action as Key Vault validates it: `Rotate` or `Notify` in any case (stored
/// as Key Vault spells them); exactly one trigger, an ISO 8601 duration of at least 7 days;
/// `timeAfterCreate` for `Rotate` only; with a policy expiry, a trigger that fires at least
/// 7 days before it. Returns the action as stored.
fn lifetime_action(a: &Value, expiry: Option<i64>) -> Result<Value, AzureError> {
    let kind = a["action"]["type"].as_str().unwrap_or_default();
    let kind = if kind.eq_ignore_ascii_case("rotate") {
        "Rotate"
    } else if kind.eq_ignore_ascii_case("notify") {
        "Notify"
    } else {
        return Err(AzureError::bad_parameter(format!(
            "Invalid lifetime action type '{kind}': expected Rotate or Notify."
        )));
    };
    let t = &a["trigger"];
    let (field, text) = match (
        t["timeAfterCreate"].as_str(),
        t["timeBeforeExpiry"].as_str(),
    ) {
        (Some(d), None) => ("timeAfterCreate", d),
        (None, Some(d)) => ("timeBeforeExpiry", d),
        _ => {
            return Err(AzureError::bad_parameter(
                "A trigger needs exactly one of timeAfterCreate and timeBeforeExpiry.",
            ));
        }
    };
    let secs = duration_secs(text).ok_or_else(|| {
        AzureError::bad_parameter(format!(
            "Invalid {field} '{text}': expected an ISO 8601 duration such as P30D."
        ))
    })?;
    if kind == "Notify" && field == "timeAfterCreate" {
        return Err(AzureError::bad_parameter(
            "A Notify action is triggered by timeBeforeExpiry only.",
        ));
    }
    if secs < MIN_TRIGGER_SECS {
        return Err(AzureError::bad_parameter(format!(
            "The {field} of a lifetime action must be at least 7 days (P7D)."
        )));
    }
    match (field, expiry) {
        ("timeBeforeExpiry", None) => {
            return Err(AzureError::bad_parameter(
                "timeBeforeExpiry needs attributes.expiryTime.",
            ));
        }
        (_, Some(e)) if secs > e - MIN_TRIGGER_SECS => {
            return Err(AzureError::bad_parameter(format!(
                "The {field} of a lifetime action must be at most the expiryTime minus 7 days."
            )));
        }
        _ => {}
    }
    Ok(json!({"trigger": {field: text}, "action": {"type": kind}}))
}

pub(super) fn policy_json(base: &str, name: &str, stored: Option<&Value>) -> Value {
    let mut p = stored
        .cloned()
        .unwrap_or_else(|| json!({"lifetimeActions": [], "attributes": {}}));
    p["id"] = json!(format!("{base}/keys/{name}/rotationpolicy"));
    p
}

pub(super) async fn get_rotation_policy(
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
        let name = h.keys.created_name(&name).expect("found above");
        json(policy_json(&base, name, r.rotation_policy.as_ref()))
    })
}

pub(super) async fn put_rotation_policy(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Update)?;
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
        .unwrap_or_default()
        .iter()
        .map(|a| lifetime_action(a, expiry))
        .collect::<Result<Vec<_>, _>>()?;
    let now = s.clock.now();
    s.with_hsm_mut(&hsm, |h| {
        let name = h
            .keys
            .created_name(&name)
            .ok_or_else(|| AzureError::key_not_found(&name))?
            .to_string();
        let r = h.keys.get_mut(&name).expect("found above");
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
