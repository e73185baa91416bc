//! The JSON shapes of the API (Fortanix DSM field names), shared by handlers and the OpenAPI
//! document.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::catalog::apps::AppPermission;
use crate::catalog::rotation::{PolicyRow, PolicyStatus, RotationPolicy};
use crate::catalog::sobjects::{
    Creator, ExternalKey, KeyOp, KeyOps, Link, LinkKind, SObject, curve_name,
};
use crate::keys::{KeyRef, KeyView};
use crate::policy::PolicyFinding;
use crate::time::{format_dsm, parse_dsm};

use super::ApiError;

/// DSM time `YYYYMMDDTHHMMSSZ`.
pub type Time = String;

pub fn time(t: i64) -> Time {
    format_dsm(t)
}

pub fn opt_time(t: Option<i64>) -> Option<Time> {
    t.map(format_dsm)
}

pub fn parse_time(field: &str, t: &str) -> Result<i64, ApiError> {
    parse_dsm(t).map_err(|e| ApiError::field(field, e))
}

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn from_b64(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    STANDARD
        .decode(text.trim())
        .map_err(|_| ApiError::field(field, "not valid (standard) base64"))
}

pub fn from_hex(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    hex::decode(text.trim()).map_err(|_| ApiError::field(field, "not valid hex"))
}

/// A field that may be set, or removed with the string `"remove"` (DSM's convention).
#[derive(Debug, Clone, PartialEq)]
pub enum Removable<T> {
    Set(T),
    Remove,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Removable<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        if v.as_str() == Some("remove") {
            return Ok(Removable::Remove);
        }
        T::deserialize(v)
            .map(Removable::Set)
            .map_err(serde::de::Error::custom)
    }
}

/// Longest name of an account, group or application, in characters.
pub const NAME_MAX: usize = 256;

/// The name of an account, group or application, trimmed: 1 to 256 characters, not only
/// spaces (the schema says so with `min_length`, `max_length` and a pattern).
pub fn display_name(field: &str, n: &str) -> Result<String, ApiError> {
    let trimmed = n.trim();
    if trimmed.is_empty() || n.chars().count() > NAME_MAX {
        return Err(ApiError::field(
            field,
            format!("must be 1 to {NAME_MAX} characters, not only spaces"),
        ));
    }
    Ok(trimmed.to_string())
}

/// For a collection field where `null` means the same as leaving it out (empty):
/// `#[serde(default, deserialize_with = "null_is_default")]`.
pub fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// For a field where `null` removes what is stored (as DSM's `"remove"` does) and an absent
/// field keeps it: `#[serde(default, deserialize_with = "null_removes")]`.
pub fn null_removes<'de, D, T>(d: D) -> Result<Option<Removable<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(Some(Removable::Remove));
    }
    Removable::deserialize(v)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountOut {
    pub acct_id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: Time,
    /// The crypto policy applying to every group of the account.
    pub cryptographic_policy: Option<Value>,
    /// The caller's role in the account.
    pub role: Option<String>,
    /// DSM's `AccountApprovalPolicy`, when the account has one.
    #[schema(value_type = Option<Object>)]
    pub approval_policy: Option<crate::catalog::approvals::AccountApprovalPolicy>,
    /// How long the account's approval requests wait for their quorum, in seconds.
    pub approval_request_expiry: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserOut {
    pub user_id: String,
    pub user_email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub created_at: Time,
    pub last_logged_in_at: Option<Time>,
    /// Role in the caller's account, as DSM's account flags: one of `ACCOUNTADMINISTRATOR`,
    /// `ACCOUNTMEMBER` or `ACCOUNTAUDITOR`, and `STATEENABLED`.
    pub account_role: Vec<&'static str>,
    /// Group id → `administrator` or `auditor`.
    pub groups: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppOut {
    pub app_id: String,
    pub acct_id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: Time,
    pub creator: CreatorOut,
    pub enabled: bool,
    /// Each group with what the application may do with its keys (DSM's `AppGroups`).
    pub groups: std::collections::BTreeMap<String, Vec<Permission>>,
    pub default_group: Option<String>,
    /// DSM's `AppAuthType`: `Secret` (an API key), `Certificate` (a pinned client
    /// certificate) or `TrustedCa` (client certificates of a CA naming a subject).
    pub auth_type: &'static str,
    /// When the pinned certificate, or the trusted CA, expires.
    pub cert_not_after: Option<Time>,
    /// The pinned certificate's subject, or what a trusted CA's certificates must name.
    pub cert_subject: Option<String>,
}

/// An application with its API key, returned once, when it is created or reset.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppWithKey {
    #[serde(flatten)]
    pub app: AppOut,
    /// `base64(app_id:secret)`. Keyward keeps only a hash; this is the only time it is shown.
    /// Absent for applications that log in with a certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CreatorOut {
    User(String),
    App(String),
    System(String),
}

impl From<&Creator> for CreatorOut {
    fn from(c: &Creator) -> Self {
        match c {
            Creator::User(u) => CreatorOut::User(u.clone()),
            Creator::App(a) => CreatorOut::App(a.clone()),
            Creator::System(s) => CreatorOut::System(s.clone()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupOut {
    pub group_id: String,
    pub acct_id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: Time,
    pub creator: CreatorOut,
    pub cryptographic_policy: Option<Value>,
    pub key_metadata_policy: Option<Value>,
    pub custom_policies: Vec<CustomPolicyIo>,
    /// The link to an external key manager (secrets are never returned).
    pub external_kms: Option<super::links::ExternalKmsOut>,
    /// Whether the group's keys live in an external key manager.
    pub is_external: bool,
    /// For linked groups: `Connected`, `Not Connected` (see `external_kms.connection.reason`)
    /// or `Unknown` before the first test.
    pub connection_status: Option<String>,
    /// The caller's role in the group, if it has one.
    pub role: Option<String>,
    /// Whether users who manage the group's keys may export them (applications of the group
    /// may, for keys that permit EXPORT).
    pub user_export: bool,
    /// DSM's `approval_policy`, when the group has one.
    #[schema(value_type = Option<Object>)]
    pub approval_policy: Option<crate::catalog::approvals::GroupApprovalPolicy>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomPolicyIo {
    /// Name of a loaded policy plugin.
    pub plugin: String,
    /// Its configuration.
    pub config: Value,
}

/// Links between keys (camelCase, as DSM).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct LinksOut {
    #[serde(rename = "copiedFrom", skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<String>,
    #[serde(rename = "copiedTo", skip_serializing_if = "Vec::is_empty")]
    pub copied_to: Vec<CopyOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CopyOut {
    pub kid: String,
    pub copied_by: String,
    pub copied_at: Time,
    pub group_id: Option<String>,
}

impl LinksOut {
    pub fn from_links(kid: &str, links: &[Link]) -> LinksOut {
        let mut out = LinksOut::default();
        for l in links {
            match l.kind {
                LinkKind::Copy if l.target == kid => out.copied_from = Some(l.source.clone()),
                LinkKind::Copy => out.copied_to.push(CopyOut {
                    kid: l.target.clone(),
                    copied_by: l.created_by.clone(),
                    copied_at: time(l.created_at),
                    group_id: l.target_group.clone(),
                }),
                LinkKind::Replacement if l.target == kid => out.replaced = Some(l.source.clone()),
                LinkKind::Replacement => out.replacement = Some(l.target.clone()),
            }
        }
        out
    }
}

/// A security object (DSM `Sobject`). Never carries key material, except in an export.
#[derive(Debug, Serialize, ToSchema)]
pub struct SobjectOut {
    pub kid: String,
    pub acct_id: String,
    pub group_id: String,
    pub name: String,
    pub description: Option<String>,
    pub obj_type: String,
    pub key_size: Option<u32>,
    pub elliptic_curve: Option<String>,
    pub key_ops: Vec<String>,
    pub enabled: bool,
    /// PreActive, Active, Deactivated, Compromised or Destroyed, from the dates.
    pub state: String,
    pub activation_date: Option<Time>,
    pub deactivation_date: Option<Time>,
    pub compromise_date: Option<Time>,
    pub destruction_date: Option<Time>,
    pub revocation_reason: Option<String>,
    pub created_at: Time,
    pub lastused_at: Time,
    pub creator: CreatorOut,
    /// DSM's names: `FortanixHSM` (generated by Keyward) or `External` (imported, or held by
    /// an external KMS).
    pub origin: String,
    pub public_only: bool,
    /// True when the key has never permitted EXPORT; fixed at creation (EXPORT can be
    /// removed from a key, never added).
    pub never_exportable: bool,
    /// Public key, SubjectPublicKeyInfo DER, base64.
    pub pub_key: Option<String>,
    pub kcv: Option<String>,
    pub custom_metadata: BTreeMap<String, String>,
    pub links: LinksOut,
    /// For virtual keys: where the key lives (DSM `external`: `id.label` is the key's name in
    /// the key manager, `state` its state there, `source` where its material came from).
    #[schema(value_type = Option<Object>)]
    pub external: Option<ExternalKey>,
    /// Violations of `warn` policies for the operation that returned this object.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy_warnings: Vec<PolicyFinding>,
    /// Key material (export only): PKCS#8 DER for RSA and EC, raw bytes for AES; base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The key's rotation policy (DSM `rotation_policy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub rotation_policy: Option<RotationPolicy>,
    /// When the policy rotates the key next (DSM `scheduled_rotation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_rotation: Option<Time>,
    /// How scheduled rotations have gone: `active`, or `failed` after repeated failures (set
    /// the policy again to restart it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_status: Option<RotationStatusOut>,
    /// When a rotation replaced the key (its replacement is `links.replacement`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<Time>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotationStatusOut {
    pub status: String,
    pub failures: i64,
    pub last_error: Option<String>,
    pub last_rotated_at: Option<Time>,
}

impl SobjectOut {
    pub fn new(o: &SObject, links: &[Link], rotation: Option<&PolicyRow>, now: i64) -> SobjectOut {
        SobjectOut {
            kid: o.kid.clone(),
            acct_id: o.account_id.clone(),
            group_id: o.group_id.clone(),
            name: o.name.clone(),
            description: o.description.clone(),
            obj_type: o.obj_type.as_str().to_string(),
            key_size: o.key_size,
            elliptic_curve: o.curve.map(|c| curve_name(c).to_string()),
            key_ops: o.key_ops.names().iter().map(|s| s.to_string()).collect(),
            enabled: o.enabled,
            state: o.state(now).as_str().to_string(),
            activation_date: opt_time(o.activation_date),
            deactivation_date: opt_time(o.deactivation_date),
            compromise_date: opt_time(o.compromise_date),
            destruction_date: opt_time(o.destruction_date),
            revocation_reason: o.revocation_reason.clone(),
            created_at: time(o.created_at),
            // DSM clients require the field; a never-used key reports its creation time.
            lastused_at: time(o.lastused_at.unwrap_or(o.created_at)),
            creator: (&o.creator).into(),
            origin: o.origin.dsm_name().to_string(),
            public_only: false,
            never_exportable: o.never_exportable,
            pub_key: o.pub_key.as_deref().map(b64),
            kcv: o.kcv.clone(),
            custom_metadata: o.tags.clone(),
            links: LinksOut::from_links(&o.kid, links),
            external: o.external.clone(),
            policy_warnings: vec![],
            value: None,
            rotation_policy: rotation.map(|r| r.policy.clone()),
            scheduled_rotation: rotation
                .filter(|r| r.status == PolicyStatus::Active)
                .and_then(|r| r.next_due)
                .map(time),
            rotation_status: rotation.map(|r| RotationStatusOut {
                status: match r.status {
                    PolicyStatus::Active => "active".into(),
                    PolicyStatus::Failed => "failed".into(),
                },
                failures: r.failures,
                last_error: r.last_error.clone(),
                last_rotated_at: opt_time(r.last_rotated_at),
            }),
            rotated_at: opt_time(o.rotated_at),
        }
    }
}

impl SobjectOut {
    /// A key as the key service returned it, with the warnings of `warn` policies.
    pub fn of(v: &KeyView, now: i64) -> SobjectOut {
        let mut out = SobjectOut::new(&v.object, &v.links, v.rotation.as_ref(), now);
        out.policy_warnings = v.warnings.clone();
        out
    }
}

/// Identifies a key by id or name (DSM `SobjectDescriptor`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyDescriptor {
    #[schema(schema_with = super::schemas::id)]
    pub kid: Option<String>,
    pub name: Option<String>,
}

impl KeyDescriptor {
    /// The key it names; `field` is where the descriptor sits in the request.
    pub fn to_ref(&self, field: &str) -> Result<KeyRef, ApiError> {
        match (&self.kid, &self.name) {
            (Some(kid), None) => Ok(KeyRef::Kid(kid.clone())),
            (None, Some(name)) => Ok(KeyRef::Name(name.clone())),
            _ => Err(ApiError::field(
                field,
                "give exactly one of 'kid' and 'name'",
            )),
        }
    }
}

/// DSM operation names (`["ENCRYPT", "DECRYPT"]`) as a set; unknown names are refused with
/// the field named.
pub fn parse_ops(field: &str, names: &[String]) -> Result<KeyOps, ApiError> {
    names
        .iter()
        .map(|n| {
            KeyOp::parse(n).ok_or_else(|| {
                ApiError::field(
                    field,
                    format!(
                        "'{n}' is not an operation ({})",
                        KeyOp::ALL.map(KeyOp::as_str).join(", ")
                    ),
                )
            })
        })
        .collect()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListOut<T: ToSchema> {
    pub items: Vec<T>,
    pub total: i64,
    pub limit: u32,
    pub offset: u32,
}

/// One of DSM's `AppPermissions`, named as `AppPermission::as_str` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission(pub AppPermission);

impl Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        AppPermission::parse(&name).map(Permission).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown app permission '{name}' (one of {})",
                AppPermission::ALL.map(AppPermission::as_str).join(", ")
            ))
        })
    }
}

impl utoipa::PartialSchema for Permission {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::schemas::names(AppPermission::ALL.map(AppPermission::as_str)).into()
    }
}

impl utoipa::ToSchema for Permission {
    fn name() -> std::borrow::Cow<'static, str> {
        "AppPermission".into()
    }
}
