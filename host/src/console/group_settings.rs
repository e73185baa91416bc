//! A group's settings in the console: its name and description, whether users may export its
//! keys, the crypto policy (F27) and key metadata policy (F28) as forms — the documents of
//! the shipped `crypto-policy` and `key-metadata-policy` plugins (docs/policies.md), typed
//! here — or as JSON for what the forms do not show, and the custom policy plugins attached
//! to it (F29) with their configuration. Saved through the API's group update.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{FormFields, SignedForm, Viewer, back, csrf_field};
use crate::api::extract::Body;
use crate::api::groups::GroupRequest;
use crate::api::model::{CustomPolicyIo, GroupOut, Removable};
use crate::api::{ApiError, AppState, groups};
use crate::plugins::manifest::World;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/console/groups/{id}/settings", post(save))
}

/// The crypto policy document of the shipped plugin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CryptoPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aes: Option<Sizes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsa: Option<Sizes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec: Option<Curves>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_policy: Option<String>,
    /// What the form does not show (kept as it is).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sizes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sizes: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_key_length: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Curves {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elliptic_curves: Option<Vec<String>>,
}

/// The key metadata policy document of the shipped plugin, as far as the form shows it:
/// required (optionally with allowed values) and forbidden tags, a required description and
/// deactivation date. The rest (per-type overrides, date windows) stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataPolicy {
    #[serde(default)]
    pub base: MetadataItems,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_objects: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataItems {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_metadata: BTreeMap<String, Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivation_date: Option<Rule>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `{"required": {...}}` or `{"forbidden": {}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Required(Required),
    Forbidden(BTreeMap<String, Value>),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Required {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_values: Option<Vec<String>>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

fn numbers(field: &str, text: Option<String>) -> Result<Option<Vec<u32>>, ApiError> {
    text.map(|t| {
        t.split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| ApiError::field(field, format!("'{s}' is not a number")))
            })
            .collect()
    })
    .transpose()
}

fn list_text<T: ToString>(v: &Option<Vec<T>>) -> String {
    v.as_ref()
        .map(|v| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

impl CryptoPolicy {
    fn from_form(f: &FormFields, current: CryptoPolicy) -> Result<CryptoPolicy, ApiError> {
        Ok(CryptoPolicy {
            mode: f.get("cp_mode"),
            aes: f
                .ticked("cp_aes")
                .then(|| numbers("aes.key_sizes", f.get("cp_aes_sizes")))
                .transpose()?
                .map(|key_sizes| Sizes {
                    key_sizes,
                    minimum_key_length: None,
                }),
            rsa: if f.ticked("cp_rsa") {
                Some(Sizes {
                    key_sizes: numbers("rsa.key_sizes", f.get("cp_rsa_sizes"))?,
                    minimum_key_length: numbers("rsa.minimum_key_length", f.get("cp_rsa_min"))?
                        .and_then(|v| v.first().copied()),
                })
            } else {
                None
            },
            ec: f.ticked("cp_ec").then(|| {
                let c = f.all("cp_curve");
                Curves {
                    elliptic_curves: (!c.is_empty()).then_some(c),
                }
            }),
            key_ops: {
                let ops = f.all("cp_op");
                (!ops.is_empty()).then_some(ops)
            },
            legacy_policy: f.get("cp_legacy"),
            other: current.other,
        })
    }

    fn form(&self) -> Markup {
        let ops = [
            "ENCRYPT",
            "DECRYPT",
            "WRAPKEY",
            "UNWRAPKEY",
            "SIGN",
            "VERIFY",
            "EXPORT",
            "APPMANAGEABLE",
        ];
        html! {
            fieldset data-testid="crypto-policy-form" {
                legend { "Crypto policy: which key types, sizes, curves and operations may be created or used" }
                (mode_select("cp_mode", &self.mode))
                label .inline { input type="checkbox" name="cp_aes" value="on" checked[self.aes.is_some()] data-testid="cp-aes"; " AES" }
                label .inline { " sizes " input name="cp_aes_sizes" value=(list_text(&self.aes.as_ref().and_then(|a| a.key_sizes.clone()))) placeholder="any" data-testid="cp-aes-sizes"; }
                label .inline { input type="checkbox" name="cp_rsa" value="on" checked[self.rsa.is_some()] data-testid="cp-rsa"; " RSA" }
                label .inline { " sizes " input name="cp_rsa_sizes" value=(list_text(&self.rsa.as_ref().and_then(|a| a.key_sizes.clone()))) placeholder="any" data-testid="cp-rsa-sizes"; }
                label .inline { " at least " input name="cp_rsa_min" value=(self.rsa.as_ref().and_then(|r| r.minimum_key_length).map(|m| m.to_string()).unwrap_or_default()) data-testid="cp-rsa-min"; }
                label .inline { input type="checkbox" name="cp_ec" value="on" checked[self.ec.is_some()] data-testid="cp-ec"; " EC, curves:" }
                @for c in ["NistP256", "NistP384", "NistP521"] {
                    label .inline { input type="checkbox" name="cp_curve" value=(c)
                        checked[self.ec.as_ref().and_then(|e| e.elliptic_curves.as_ref()).is_some_and(|l| l.iter().any(|x| x == c))]; " " (c) }
                }
                p { "Operations keys may be given and used for (none ticked: any)" }
                @for o in ops {
                    label .inline { input type="checkbox" name="cp_op" value=(o)
                        checked[self.key_ops.as_ref().is_some_and(|l| l.iter().any(|x| x == o))] data-testid={ "cp-op-" (o) }; " " (o) }
                }
                label for="cp_legacy" { "Keys made before the policy that break it" }
                select id="cp_legacy" name="cp_legacy" {
                    @for (v, l) in [("", "allowed (warned)"), ("prohibited", "prohibited"), ("unprotect_only", "decrypt, verify and unwrap only")] {
                        option value=(v) selected[self.legacy_policy.as_deref().unwrap_or("") == v] { (l) }
                    }
                }
            }
        }
    }
}

fn mode_select(name: &str, current: &Option<String>) -> Markup {
    html! {
        label { "Mode " select name=(name) data-testid=(name) {
            @for (v, l) in [("", "enforce"), ("warn", "warn only"), ("dry_run", "dry run (record what it would refuse)")] {
                option value=(v) selected[current.as_deref().unwrap_or("") == v] { (l) }
            }
        } }
    }
}

impl MetadataPolicy {
    fn from_form(f: &FormFields, current: MetadataPolicy) -> Result<MetadataPolicy, ApiError> {
        let mut tags = BTreeMap::new();
        for line in f
            .get("mp_required")
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            let (name, values) = match line.split_once(':') {
                Some((n, v)) => (
                    n.trim(),
                    Some(
                        v.split(',')
                            .map(|x| x.trim().to_string())
                            .filter(|x| !x.is_empty())
                            .collect::<Vec<_>>(),
                    ),
                ),
                None => (line, None),
            };
            tags.insert(
                name.to_string(),
                Rule::Required(Required {
                    allowed_values: values,
                    other: BTreeMap::new(),
                }),
            );
        }
        for name in f
            .get("mp_forbidden")
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            if tags.contains_key(name) {
                return Err(ApiError::field(
                    "key_metadata_policy",
                    format!("the tag '{name}' is both required and forbidden"),
                ));
            }
            tags.insert(name.to_string(), Rule::Forbidden(BTreeMap::new()));
        }
        let required = |k: &str| f.ticked(k).then(|| Rule::Required(Required::default()));
        Ok(MetadataPolicy {
            base: MetadataItems {
                custom_metadata: tags,
                description: required("mp_description"),
                deactivation_date: required("mp_deactivation"),
                other: current.base.other,
            },
            legacy_objects: f.get("mp_legacy"),
            other: current.other,
        })
    }

    fn form(&self) -> Markup {
        let required: Vec<String> = self
            .base
            .custom_metadata
            .iter()
            .filter_map(|(n, r)| match r {
                Rule::Required(req) => Some(match &req.allowed_values {
                    Some(v) => format!("{n}: {}", v.join(", ")),
                    None => n.clone(),
                }),
                Rule::Forbidden(_) => None,
            })
            .collect();
        let forbidden: Vec<&String> = self
            .base
            .custom_metadata
            .iter()
            .filter(|(_, r)| matches!(r, Rule::Forbidden(_)))
            .map(|(n, _)| n)
            .collect();
        let is_required = |r: &Option<Rule>| matches!(r, Some(Rule::Required(_)));
        html! {
            fieldset data-testid="metadata-policy-form" {
                legend { "Key metadata policy: what every new key must (or must not) carry" }
                label for="mp_required" { "Required tags, one per line; 'name: a, b' allows only those values" }
                textarea id="mp_required" name="mp_required" rows="3" data-testid="mp-required" { (required.join("\n")) }
                label for="mp_forbidden" { "Forbidden tags, one per line" }
                textarea id="mp_forbidden" name="mp_forbidden" rows="2" data-testid="mp-forbidden" {
                    @for (i, n) in forbidden.iter().enumerate() { @if i > 0 { "\n" } (n) } }
                label .inline { input type="checkbox" name="mp_description" value="on" checked[is_required(&self.base.description)] data-testid="mp-description"; " A description is required" }
                label .inline { input type="checkbox" name="mp_deactivation" value="on" checked[is_required(&self.base.deactivation_date)] data-testid="mp-deactivation"; " A deactivation date is required" }
                label for="mp_legacy" { "Keys made before the policy that break it" }
                select id="mp_legacy" name="mp_legacy" {
                    @for (v, l) in [("", "allowed (warned)"), ("prohibited", "prohibited"), ("unprotect_only", "decrypt, verify and unwrap only")] {
                        option value=(v) selected[self.legacy_objects.as_deref().unwrap_or("") == v] { (l) }
                    }
                }
                @if !self.other.is_empty() || !self.base.other.is_empty() {
                    p .notice { "This policy also has parts only the JSON editor below shows; they are kept." }
                }
            }
        }
    }
}

fn parse<T: serde::de::DeserializeOwned + Default>(v: &Option<Value>) -> T {
    v.clone()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

fn pretty(v: &Option<Value>) -> String {
    v.as_ref()
        .and_then(|v| serde_json::to_string_pretty(v).ok())
        .unwrap_or_default()
}

/// The Policies tab of a group.
pub fn policies_tab(state: &AppState, v: &Viewer, g: &GroupOut) -> Markup {
    let crypto: CryptoPolicy = parse(&g.cryptographic_policy);
    let metadata: MetadataPolicy = parse(&g.key_metadata_policy);
    let policy_plugins: Vec<_> = state
        .plugins
        .plugins()
        .into_iter()
        .filter(|p| p.world == World::PolicyV0_1)
        .collect();
    let attached = |name: &str| g.custom_policies.iter().find(|c| c.plugin == name);
    let action = format!("/console/groups/{}/settings", g.group_id);
    html! {
        section data-testid="policies-tab" {
            p {
                a href={ "/console/groups/" (g.group_id) "/approval_policy" } data-testid="approval-policy-link" {
                    "Quorum approval policy"
                }
                @if g.approval_policy.is_some() { " (in force)" } @else { " (none)" }
            }
            form method="post" action=(action) data-testid="group-settings-form" {
                (csrf_field(v))
                input type="hidden" name="op" value="general";
                label for="gs-name" { "Name" }
                input id="gs-name" name="name" value=(g.name) required data-testid="settings-name";
                label for="gs-description" { "Description" }
                input id="gs-description" name="description" value=(g.description.clone().unwrap_or_default());
                label { input type="checkbox" name="user_export" value="on" checked[g.user_export] data-testid="settings-user-export"; " Users who manage the group's keys may export them" }
                button type="submit" data-testid="save-general" { "Save" }
            }
            form method="post" action=(action) {
                (csrf_field(v))
                input type="hidden" name="op" value="crypto";
                (crypto.form())
                label { input type="checkbox" name="remove" value="on" data-testid="cp-remove"; " No crypto policy" }
                button type="submit" data-testid="save-crypto-policy" { "Save crypto policy" }
            }
            form method="post" action=(action) {
                (csrf_field(v))
                input type="hidden" name="op" value="metadata";
                (metadata.form())
                label { input type="checkbox" name="remove" value="on" data-testid="mp-remove"; " No key metadata policy" }
                button type="submit" data-testid="save-metadata-policy" { "Save key metadata policy" }
            }
            form method="post" action=(action) data-testid="plugins-form" {
                (csrf_field(v))
                input type="hidden" name="op" value="plugins";
                fieldset {
                    legend { "Policy plugins of your own (see Plugins for what is loaded)" }
                    @for p in &policy_plugins {
                        @let on = attached(&p.name);
                        label { input type="checkbox" name="plugin" value=(p.name) checked[on.is_some()] data-testid={ "attach-" (p.name) }; " " (p.name) " " (p.version)
                            @if let Some(d) = &p.description { " — " (d) } }
                        textarea name={ "config:" (p.name) } rows="2" aria-label={ "Configuration of " (p.name) } data-testid={ "config-" (p.name) } {
                            (on.map(|c| c.config.to_string()).unwrap_or_else(|| "{}".into())) }
                    }
                }
                button type="submit" data-testid="save-plugins" { "Save attached plugins" }
            }
            details {
                summary { "Edit the policies as JSON" }
                form method="post" action=(action) {
                    (csrf_field(v))
                    input type="hidden" name="op" value="json";
                    label for="cp-json" { "Crypto policy (empty: none)" }
                    textarea id="cp-json" name="crypto_json" rows="8" data-testid="cp-json" { (pretty(&g.cryptographic_policy)) }
                    label for="mp-json" { "Key metadata policy (empty: none)" }
                    textarea id="mp-json" name="metadata_json" rows="8" data-testid="mp-json" { (pretty(&g.key_metadata_policy)) }
                    button type="submit" data-testid="save-json" { "Save both" }
                }
            }
        }
    }
}

pub(super) fn empty_request() -> GroupRequest {
    GroupRequest {
        name: None,
        description: None,
        cryptographic_policy: None,
        key_metadata_policy: None,
        custom_policies: None,
        external_kms: None,
        user_export: None,
        approval_policy: None,
    }
}

fn document<T: Serialize>(doc: &T) -> Result<Removable<Value>, ApiError> {
    serde_json::to_value(doc)
        .map(Removable::Set)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

fn json_field(field: &str, text: Option<String>) -> Result<Removable<Value>, ApiError> {
    match text {
        None => Ok(Removable::Remove),
        Some(t) => serde_json::from_str(&t)
            .map(Removable::Set)
            .map_err(|e| ApiError::field(field, format!("not JSON: {e}"))),
    }
}

async fn save(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    SignedForm {
        viewer: v,
        fields: f,
    }: SignedForm,
) -> Response {
    let here = format!("/console/groups/{id}?tab=policies");
    let current = match groups::get(State(state.clone()), v.caller.clone(), Path(id.clone())).await
    {
        Ok(axum::Json(g)) => g,
        Err(e) => return back(&here, Err(e)),
    };
    let mut req = empty_request();
    let built: Result<(), ApiError> = (|| {
        match f.get("op").as_deref() {
            Some("general") => {
                req.name = f.get("name");
                req.description = Some(f.get("description").unwrap_or_default());
                req.user_export = Some(f.ticked("user_export"));
            }
            Some("crypto") if f.ticked("remove") => {
                req.cryptographic_policy = Some(Removable::Remove)
            }
            Some("crypto") => {
                let doc = CryptoPolicy::from_form(&f, parse(&current.cryptographic_policy))?;
                req.cryptographic_policy = Some(document(&doc)?);
            }
            Some("metadata") if f.ticked("remove") => {
                req.key_metadata_policy = Some(Removable::Remove)
            }
            Some("metadata") => {
                let doc = MetadataPolicy::from_form(&f, parse(&current.key_metadata_policy))?;
                req.key_metadata_policy = Some(document(&doc)?);
            }
            Some("plugins") => {
                let mut list = Vec::new();
                for name in f.all("plugin") {
                    let text = f
                        .get(&format!("config:{name}"))
                        .unwrap_or_else(|| "{}".into());
                    let config = serde_json::from_str(&text).map_err(|e| {
                        ApiError::field(
                            "custom_policies",
                            format!("{name}: the configuration is not JSON: {e}"),
                        )
                    })?;
                    list.push(CustomPolicyIo {
                        plugin: name,
                        config,
                    });
                }
                req.custom_policies = Some(list);
            }
            Some("json") => {
                req.cryptographic_policy =
                    Some(json_field("cryptographic_policy", f.get("crypto_json"))?);
                req.key_metadata_policy =
                    Some(json_field("key_metadata_policy", f.get("metadata_json"))?);
            }
            _ => return Err(ApiError::bad("unknown change")),
        }
        Ok(())
    })();
    let done = match built {
        Ok(()) => groups::update(State(state), v.caller.clone(), Path(id), Body(req)).await,
        Err(e) => Err(e),
    };
    back(&here, done.map(|_| "Group settings saved".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documented_policies_read_and_write_back_unchanged() {
        let crypto = json!({"mode": "warn", "aes": {"key_sizes": [256]}, "rsa": {"minimum_key_length": 3072},
            "ec": {}, "key_ops": ["ENCRYPT"], "legacy_policy": "unprotect_only"});
        let doc: CryptoPolicy = serde_json::from_value(crypto.clone()).unwrap();
        assert_eq!(serde_json::to_value(&doc).unwrap(), crypto);
        let meta = json!({"base": {"custom_metadata": {"owner": {"required": {"allowed_values": ["a", "b"]}},
            "password": {"forbidden": {}}}, "description": {"required": {}},
            "activation_date": {"required": {"allowed_values": {"min": {"days": 0}}}}},
            "for_obj_type": {"RSA": {"deactivation_date": {"required": {}}}}, "legacy_objects": "allowed"});
        let doc: MetadataPolicy = serde_json::from_value(meta.clone()).unwrap();
        assert_eq!(serde_json::to_value(&doc).unwrap(), meta);
    }

    #[test]
    fn the_metadata_form_keeps_what_it_does_not_show() {
        let current: MetadataPolicy =
            serde_json::from_value(json!({"base": {"activation_date": {"required": {}}},
            "for_obj_type": {"RSA": {}}}))
            .unwrap();
        let f = FormFields(vec![
            ("mp_required".into(), "owner\nenv: prod, test".into()),
            ("mp_description".into(), "on".into()),
        ]);
        let doc = serde_json::to_value(MetadataPolicy::from_form(&f, current).unwrap()).unwrap();
        assert_eq!(
            doc,
            json!({"base": {"custom_metadata": {"owner": {"required": {}},
            "env": {"required": {"allowed_values": ["prod", "test"]}}}, "description": {"required": {}},
            "activation_date": {"required": {}}}, "for_obj_type": {"RSA": {}}})
        );
    }
}
