//! Azure Event Grid deliveries: the subscription-validation handshake of the Event Grid
//! schema, and Key Vault key events in either schema (Event Grid, or CloudEvents 1.0, single
//! or batched). Key Vault's `data` has been seen in PascalCase, camelCase and with stray
//! spaces in field names, so its fields are matched without case or surrounding spaces.

use serde_json::{Map, Value};

/// What a delivery holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// `aeg-event-type: SubscriptionValidation`: answer with this code.
    Validation {
        code: String,
    },
    Events(Vec<Event>),
}

/// A Key Vault event about a key, or another event (kept for the record, not acted on).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's id (deliveries are deduplicated on it).
    pub id: String,
    pub event_type: String,
    pub key: Option<KeyEvent>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyEvent {
    pub kind: KeyEventKind,
    /// The key's name in the vault or HSM.
    pub name: String,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEventKind {
    /// `Microsoft.KeyVault.KeyNewVersionCreated`: sync the key.
    NewVersion,
    /// `Microsoft.KeyVault.KeyNearExpiry`: rotate it.
    NearExpiry,
    /// `Microsoft.KeyVault.KeyExpired`: rotate it.
    Expired,
}

const VALIDATION_EVENT: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";

/// Reads a delivery (the raw body, after its secret was checked).
pub fn parse(aeg_event_type: Option<&str>, body: &[u8]) -> Result<Delivery, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let items: Vec<&Map<String, Value>> = match &v {
        Value::Array(a) => a.iter().filter_map(Value::as_object).collect(),
        Value::Object(o) => vec![o],
        _ => return Err("the body is neither an event nor an array of events".into()),
    };
    if items.is_empty() {
        return Err("the delivery holds no event".into());
    }
    let event_type = |o: &Map<String, Value>| {
        o.get("eventType")
            .or_else(|| o.get("type"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if aeg_event_type.is_some_and(|t| t.eq_ignore_ascii_case("SubscriptionValidation"))
        || items.iter().any(|o| event_type(o) == VALIDATION_EVENT)
    {
        let code = items
            .iter()
            .find(|o| event_type(o) == VALIDATION_EVENT)
            .and_then(|o| field(o.get("data")?, "validationCode"))
            .ok_or("a SubscriptionValidation delivery without data.validationCode")?;
        return Ok(Delivery::Validation { code });
    }
    let mut events = Vec::new();
    for o in items {
        let id = o
            .get("id")
            .and_then(Value::as_str)
            .ok_or("an event without an id")?
            .to_string();
        let t = event_type(o);
        let kind = match t.as_str() {
            "Microsoft.KeyVault.KeyNewVersionCreated" => Some(KeyEventKind::NewVersion),
            "Microsoft.KeyVault.KeyNearExpiry" => Some(KeyEventKind::NearExpiry),
            "Microsoft.KeyVault.KeyExpired" => Some(KeyEventKind::Expired),
            _ => None,
        };
        let data = o.get("data");
        let key = match (kind, data.and_then(|d| field(d, "ObjectName"))) {
            (Some(kind), Some(name)) => Some(KeyEvent {
                kind,
                name,
                version: data.and_then(|d| field(d, "Version")),
            }),
            (Some(_), None) => return Err(format!("a {t} event without data.ObjectName")),
            _ => None,
        };
        events.push(Event {
            id,
            event_type: t,
            key,
        });
    }
    Ok(Delivery::Events(events))
}

/// A string field of `data`, whatever its case and surrounding spaces.
fn field(data: &Value, name: &str) -> Option<String> {
    data.as_object()?
        .iter()
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_validation_handshake_is_recognised() {
        let body = br#"[{"id":"2d1781af","topic":"/subscriptions/x","subject":"","data":{"validationCode":"512d38b6-c7b8-40c8-89fe-f46f9e9622b6","validationUrl":"https://rp-eastus2.eventgrid.azure.net:553/x"},"eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","eventTime":"2018-01-25T22:12:19.4556811Z","metadataVersion":"1","dataVersion":"1"}]"#;
        assert_eq!(
            parse(Some("SubscriptionValidation"), body).unwrap(),
            Delivery::Validation {
                code: "512d38b6-c7b8-40c8-89fe-f46f9e9622b6".into()
            }
        );
    }

    #[test]
    fn key_events_are_read_in_both_schemas_and_any_casing() {
        let grid = br#"[{"id":"e1","topic":"/subscriptions/s/resourceGroups/r/providers/Microsoft.KeyVault/vaults/v","subject":"k1","eventType":"Microsoft.KeyVault.KeyNewVersionCreated","data":{"Id":"https://v.vault.azure.net/keys/k1/abc","VaultName":"v","ObjectType":"Key","ObjectName":"k1","Version":"abc","NBF":null,"EXP":null},"dataVersion":"1","metadataVersion":"1"}]"#;
        let Delivery::Events(e) = parse(Some("Notification"), grid).unwrap() else {
            panic!("events")
        };
        assert_eq!(e[0].key.as_ref().unwrap().name, "k1");
        assert_eq!(e[0].key.as_ref().unwrap().kind, KeyEventKind::NewVersion);
        let cloud = br#"{"specversion":"1.0","id":"e2","type":"Microsoft.KeyVault.KeyNearExpiry","source":"/subscriptions/s","subject":"k2","data":{"objectName ":"k2","version":"v9"}}"#;
        let Delivery::Events(e) = parse(None, cloud).unwrap() else {
            panic!("events")
        };
        let k = e[0].key.as_ref().unwrap();
        assert_eq!(
            (k.name.as_str(), k.kind, k.version.as_deref()),
            ("k2", KeyEventKind::NearExpiry, Some("v9"))
        );
        let other = br#"[{"id":"e3","eventType":"Microsoft.KeyVault.SecretNewVersionCreated","data":{"ObjectName":"s"}}]"#;
        let Delivery::Events(e) = parse(None, other).unwrap() else {
            panic!("events")
        };
        assert!(e[0].key.is_none());
        assert!(parse(None, b"[]").is_err());
        assert!(parse(None, b"not json").is_err());
    }
}
