//! Keyward's key metadata policy plugin (FLOWS F28).
//!
//! The policy document follows Fortanix DSM's key metadata policy:
//!
//! ```json
//! {
//!   "mode": "enforce",
//!   "base": {
//!     "custom_metadata": {
//!       "owner":       { "required": { "non_empty_after_trim": true } },
//!       "environment": { "required": { "allowed_values": ["prod", "test"] } },
//!       "password":    { "forbidden": {} }
//!     },
//!     "description": { "required": { "non_empty_after_trim": true } },
//!     "activation_date": { "required": { "allowed_values": { "min": { "days": 0 }, "max": { "days": 30 } } } },
//!     "deactivation_date": { "forbidden": {} }
//!   },
//!   "for_obj_type": { "AES": { "deactivation_date": { "required": {} } } },
//!   "legacy_objects": "allowed"
//! }
//! ```
//!
//! Items not mentioned are optional. `for_obj_type` entries override the base item field by
//! field (custom attributes name by name) for keys of that type. Date windows are relative to
//! the key's creation time. `legacy_objects` applies to existing keys that no longer comply
//! when they are used (`allowed`, `prohibited`, `unprotect_only`).

use std::collections::BTreeMap;

use keyward_policy_sdk::{
    Action, Decision, Findings, KeyAttributes, LegacyPolicy, ModeName, ObjType, Policy,
    PolicyRequest, Timestamp, parse_config,
};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataPolicy {
    #[serde(default)]
    mode: ModeName,
    #[serde(default)]
    base: PolicyItem,
    #[serde(default)]
    for_obj_type: BTreeMap<ObjType, PolicyItem>,
    #[serde(default)]
    legacy_objects: LegacyPolicy,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyItem {
    #[serde(default)]
    custom_metadata: BTreeMap<String, AttrRule>,
    description: Option<TextRule>,
    activation_date: Option<DateRule>,
    deactivation_date: Option<DateRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum AttrRule {
    Required(RequiredAttr),
    Forbidden(Empty),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequiredAttr {
    #[serde(default = "yes")]
    non_empty_after_trim: bool,
    allowed_values: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum TextRule {
    Required(RequiredText),
    Forbidden(Empty),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequiredText {
    #[serde(default = "yes")]
    non_empty_after_trim: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum DateRule {
    Required(RequiredDate),
    Forbidden(Empty),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequiredDate {
    allowed_values: Option<Window>,
}

/// Allowed offsets from the key's creation time.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Window {
    min: Option<TimeSpan>,
    max: Option<TimeSpan>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum TimeSpan {
    Seconds(i64),
    Minutes(i64),
    Hours(i64),
    Days(i64),
}

impl TimeSpan {
    fn seconds(self) -> i64 {
        match self {
            TimeSpan::Seconds(n) => n,
            TimeSpan::Minutes(n) => n.saturating_mul(60),
            TimeSpan::Hours(n) => n.saturating_mul(3600),
            TimeSpan::Days(n) => n.saturating_mul(86_400),
        }
    }

    fn describe(self) -> String {
        let (n, unit) = match self {
            TimeSpan::Seconds(n) => (n, "second"),
            TimeSpan::Minutes(n) => (n, "minute"),
            TimeSpan::Hours(n) => (n, "hour"),
            TimeSpan::Days(n) => (n, "day"),
        };
        format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
    }
}

/// Deserialization marker for `{}` (the body of `forbidden`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn yes() -> bool {
    true
}

impl PolicyItem {
    /// This item with `other`'s rules taking precedence where it has one.
    fn overridden_by(&self, other: &PolicyItem) -> PolicyItem {
        let mut merged = self.clone();
        for (name, rule) in &other.custom_metadata {
            merged.custom_metadata.insert(name.clone(), rule.clone());
        }
        if other.description.is_some() {
            merged.description = other.description.clone();
        }
        if other.activation_date.is_some() {
            merged.activation_date = other.activation_date.clone();
        }
        if other.deactivation_date.is_some() {
            merged.deactivation_date = other.deactivation_date.clone();
        }
        merged
    }

    fn validate(&self, at: &str) -> Result<(), String> {
        for (field, rule) in [
            ("activation_date", &self.activation_date),
            ("deactivation_date", &self.deactivation_date),
        ] {
            if let Some(DateRule::Required(RequiredDate {
                allowed_values: Some(w),
            })) = rule
                && let (Some(min), Some(max)) = (w.min, w.max)
                && min.seconds() > max.seconds()
            {
                return Err(format!("{at}.{field}: the window's min is after its max"));
            }
        }
        for (name, rule) in &self.custom_metadata {
            if name.trim().is_empty() {
                return Err(format!("{at}.custom_metadata: empty attribute name"));
            }
            if let AttrRule::Required(RequiredAttr {
                allowed_values: Some(v),
                ..
            }) = rule
                && v.is_empty()
            {
                return Err(format!(
                    "{at}.custom_metadata.{name}: allowed_values is empty"
                ));
            }
        }
        Ok(())
    }

    fn check(&self, key: &KeyAttributes, now: Timestamp, f: &mut Findings) {
        for (name, rule) in &self.custom_metadata {
            let value = key
                .tags
                .iter()
                .find(|t| &t.name == name)
                .map(|t| t.value.as_str());
            match (rule, value) {
                (AttrRule::Required(_), None) => f.violation(
                    format!("custom-metadata.{name}.required"),
                    format!("custom attribute '{name}' is required"),
                ),
                (AttrRule::Required(req), Some(v)) => {
                    if req.non_empty_after_trim && v.trim().is_empty() {
                        f.violation(
                            format!("custom-metadata.{name}.required"),
                            format!("custom attribute '{name}' must not be empty"),
                        );
                    } else if let Some(allowed) = &req.allowed_values
                        && !allowed.iter().any(|a| a == v)
                    {
                        f.violation(
                            format!("custom-metadata.{name}.allowed-values"),
                            format!(
                                "custom attribute '{name}' must be one of: {}",
                                allowed.join(", ")
                            ),
                        );
                    }
                }
                (AttrRule::Forbidden(_), Some(_)) => f.violation(
                    format!("custom-metadata.{name}.forbidden"),
                    format!("custom attribute '{name}' is not allowed"),
                ),
                (AttrRule::Forbidden(_), None) => {}
            }
        }

        let description = key.description.as_deref();
        match &self.description {
            Some(TextRule::Required(req)) => {
                let missing = match description {
                    None => true,
                    Some(d) => d.is_empty() || (req.non_empty_after_trim && d.trim().is_empty()),
                };
                if missing {
                    f.violation("description.required", "a description is required");
                }
            }
            Some(TextRule::Forbidden(_)) if description.is_some_and(|d| !d.is_empty()) => {
                f.violation("description.forbidden", "a description is not allowed");
            }
            _ => {}
        }

        let created = key.created.unwrap_or(now);
        check_date(
            "activation-date",
            "activation date",
            &self.activation_date,
            key.activation,
            created,
            f,
        );
        check_date(
            "deactivation-date",
            "deactivation date",
            &self.deactivation_date,
            key.deactivation,
            created,
            f,
        );
    }
}

fn check_date(
    rule_id: &str,
    label: &str,
    rule: &Option<DateRule>,
    value: Option<Timestamp>,
    created: Timestamp,
    f: &mut Findings,
) {
    match (rule, value) {
        (Some(DateRule::Required(_)), None) => f.violation(
            format!("{rule_id}.required"),
            format!("an {label} is required"),
        ),
        (
            Some(DateRule::Required(RequiredDate {
                allowed_values: Some(w),
            })),
            Some(at),
        ) => {
            let offset = at - created;
            let too_early = w.min.is_some_and(|m| offset < m.seconds());
            let too_late = w.max.is_some_and(|m| offset > m.seconds());
            if too_early || too_late {
                let bound = |t: Option<TimeSpan>| t.map(TimeSpan::describe);
                let range = match (bound(w.min), bound(w.max)) {
                    (Some(a), Some(b)) => format!("between {a} and {b}"),
                    (Some(a), None) => format!("at least {a}"),
                    (None, Some(b)) => format!("at most {b}"),
                    (None, None) => unreachable!("a bound was exceeded"),
                };
                f.violation(
                    format!("{rule_id}.window"),
                    format!("the {label} must be {range} after the key's creation time"),
                );
            }
        }
        (Some(DateRule::Forbidden(_)), Some(_)) => f.violation(
            format!("{rule_id}.forbidden"),
            format!("an {label} is not allowed"),
        ),
        _ => {}
    }
}

impl MetadataPolicy {
    pub fn parse(config: &str) -> Result<Self, String> {
        let policy: MetadataPolicy = parse_config(config)?;
        policy.base.validate("base")?;
        for (t, item) in &policy.for_obj_type {
            item.validate(&format!("for_obj_type.{t:?}"))?;
        }
        Ok(policy)
    }

    fn problems(&self, key: &KeyAttributes, now: Timestamp) -> Findings {
        let mut f = Findings::default();
        match self.for_obj_type.get(&ObjType::from(key.spec.key_type)) {
            Some(specific) => self.base.overridden_by(specific).check(key, now, &mut f),
            None => self.base.check(key, now, &mut f),
        }
        f
    }
}

impl Policy for MetadataPolicy {
    fn configure(config: &str) -> Result<Self, String> {
        Self::parse(config)
    }

    fn evaluate(&self, req: &PolicyRequest) -> Result<Decision, String> {
        let findings = match req.action {
            Action::Create | Action::Import | Action::Copy | Action::Rotate | Action::Update => {
                self.problems(&req.key, req.now)
            }
            Action::Crypto(op) => {
                let problems = self.problems(&req.key, req.now).violations;
                let mut f = Findings::default();
                self.legacy_objects
                    .apply(op, &problems, "key metadata policy", &mut f);
                f
            }
        };
        Ok(findings.decide(self.mode.into()))
    }
}

keyward_policy_sdk::policy_plugin!(MetadataPolicy);
