//! Values between Rust, JSON and Rhai. Secrets travel as opaque custom types: JSON views of
//! script values show them as `"<secret>"`.

use rhai::{Dynamic, Map};
use serde_json::{Value, json};

use crate::catalog::groups::Group;
use crate::kms::Link;

/// JSON to a script value (integers stay integers, `null` becomes `()`).
pub fn from_json(v: &Value) -> Dynamic {
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => Dynamic::from(s.clone()),
        Value::Array(a) => Dynamic::from_array(a.iter().map(from_json).collect()),
        Value::Object(o) => Dynamic::from_map(
            o.iter()
                .map(|(k, v)| (k.as_str().into(), from_json(v)))
                .collect::<Map>(),
        ),
    }
}

/// A script value as JSON; custom types (secrets, backups) become `"<secret>"`.
pub fn to_json(d: &Dynamic) -> Value {
    if d.is_unit() {
        Value::Null
    } else if let Ok(b) = d.as_bool() {
        json!(b)
    } else if let Ok(i) = d.as_int() {
        json!(i)
    } else if let Ok(f) = d.as_float() {
        json!(f)
    } else if d.is_string() || d.is_char() {
        json!(d.to_string())
    } else if d.is_array() {
        Value::Array(
            d.read_lock::<rhai::Array>()
                .map(|a| a.iter().map(to_json).collect())
                .unwrap_or_default(),
        )
    } else if d.is_map() {
        Value::Object(
            d.read_lock::<Map>()
                .map(|m| m.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect())
                .unwrap_or_default(),
        )
    } else {
        json!("<secret>")
    }
}

/// A thrown value as text for an error message.
pub fn describe(d: &Dynamic) -> String {
    match to_json(d) {
        Value::String(s) => s,
        Value::Object(o) if o.get("message").is_some_and(Value::is_string) => {
            o["message"].as_str().unwrap_or_default().to_string()
        }
        other => other.to_string(),
    }
}

/// Key material handed to a run (import, copy). Scripts can pass it to `hsm::import_key` or
/// `byok::wrap` but never see its bytes; `plain_ok` says whether it may leave unwrapped.
#[derive(Clone)]
pub struct Secret {
    pub material: std::sync::Arc<keyward_crypto::Material>,
    pub plain_ok: bool,
}

/// The script's `input`: the recorded JSON plus the opaque secrets.
pub fn input(input: &Value, secrets: &[(String, Secret)]) -> Dynamic {
    let mut map = from_json(input).try_cast::<Map>().unwrap_or_default();
    for (name, secret) in secrets {
        map.insert(name.as_str().into(), Dynamic::from(secret.clone()));
    }
    Dynamic::from_map(map)
}

/// The script's `group`: id, name, the chosen instance and its kind (`STANDARD`, `PREMIUM`,
/// `MANAGED`; unit values where unknown).
pub fn group(group: Option<&Group>, link: Option<&Link>) -> Dynamic {
    from_json(&json!({
        "id": group.map(|g| g.id.clone()),
        "name": group.map(|g| g.name.clone()),
        "instance": link.and_then(|l| l.instance().map(str::to_string)),
        "vault_type": link.map(|l| crate::kms::vault_type_of(l.conn.kind).as_str()),
        "instance_name": link.and_then(|l| l.instance_name()),
    }))
}
