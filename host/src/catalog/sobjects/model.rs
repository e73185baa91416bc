//! What a security object is: its type, operations, lifecycle dates, origin and, for a
//! virtual key, where it lives in an external key manager. Values with a fixed vocabulary are
//! enums here; the strings exist only at the edges (SQL, JSON).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use keyward_crypto::Curve;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjType {
    Aes,
    Rsa,
    Ec,
}

impl ObjType {
    pub const ALL: [ObjType; 3] = [ObjType::Aes, ObjType::Rsa, ObjType::Ec];

    pub fn as_str(self) -> &'static str {
        match self {
            ObjType::Aes => "AES",
            ObjType::Rsa => "RSA",
            ObjType::Ec => "EC",
        }
    }

    pub fn parse(s: &str) -> Option<ObjType> {
        ObjType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The operations a key of this type may be given.
    pub fn allowed_ops(self) -> KeyOps {
        use KeyOp::*;
        match self {
            ObjType::Aes => {
                KeyOps::of(&[Encrypt, Decrypt, WrapKey, UnwrapKey, Export, AppManageable])
            }
            ObjType::Rsa => KeyOps::of(&[
                Sign,
                Verify,
                Encrypt,
                Decrypt,
                WrapKey,
                UnwrapKey,
                Export,
                AppManageable,
            ]),
            ObjType::Ec => KeyOps::of(&[Sign, Verify, Export, AppManageable]),
        }
    }

    /// What a new key of this type may do when the request does not say: everything but
    /// EXPORT, which must be asked for.
    pub fn default_ops(self) -> KeyOps {
        let mut ops = self.allowed_ops();
        ops.remove(KeyOp::Export);
        ops
    }
}

/// DSM's key operation names (`key_ops`), as far as Keyward supports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum KeyOp {
    Sign,
    Verify,
    Encrypt,
    Decrypt,
    WrapKey,
    UnwrapKey,
    /// The material may leave Keyward (export, wrap by another key, copy of RSA and EC keys).
    Export,
    /// Applications of the key's group may manage it (update, lifecycle, copy, delete).
    AppManageable,
}

impl KeyOp {
    pub const ALL: [KeyOp; 8] = [
        KeyOp::Sign,
        KeyOp::Verify,
        KeyOp::Encrypt,
        KeyOp::Decrypt,
        KeyOp::WrapKey,
        KeyOp::UnwrapKey,
        KeyOp::Export,
        KeyOp::AppManageable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyOp::Sign => "SIGN",
            KeyOp::Verify => "VERIFY",
            KeyOp::Encrypt => "ENCRYPT",
            KeyOp::Decrypt => "DECRYPT",
            KeyOp::WrapKey => "WRAPKEY",
            KeyOp::UnwrapKey => "UNWRAPKEY",
            KeyOp::Export => "EXPORT",
            KeyOp::AppManageable => "APPMANAGEABLE",
        }
    }

    pub fn parse(s: &str) -> Option<KeyOp> {
        KeyOp::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Operations that only take protection off (decrypt, verify, unwrap): still allowed
    /// with deactivated and compromised keys, as KMIP allows processing existing data.
    pub fn unprotects(self) -> bool {
        matches!(self, KeyOp::Decrypt | KeyOp::Verify | KeyOp::UnwrapKey)
    }
}

/// A set of key operations, listed in DSM's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyOps(BTreeSet<KeyOp>);

impl KeyOps {
    pub fn of(ops: &[KeyOp]) -> KeyOps {
        KeyOps(ops.iter().copied().collect())
    }

    pub fn contains(&self, op: KeyOp) -> bool {
        self.0.contains(&op)
    }

    pub fn insert(&mut self, op: KeyOp) {
        self.0.insert(op);
    }

    pub fn remove(&mut self, op: KeyOp) {
        self.0.remove(&op);
    }

    pub fn is_subset(&self, other: &KeyOps) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Operations of `self` that `other` lacks.
    pub fn beyond<'a>(&'a self, other: &'a KeyOps) -> impl Iterator<Item = KeyOp> + 'a {
        self.0.difference(&other.0).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = KeyOp> + '_ {
        self.0.iter().copied()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.iter().map(KeyOp::as_str).collect()
    }
}

impl FromIterator<KeyOp> for KeyOps {
    fn from_iter<I: IntoIterator<Item = KeyOp>>(iter: I) -> Self {
        KeyOps(iter.into_iter().collect())
    }
}

pub const CURVES: [Curve; 3] = [Curve::P256, Curve::P384, Curve::P521];

/// DSM curve names.
pub fn curve_name(c: Curve) -> &'static str {
    match c {
        Curve::P256 => "NistP256",
        Curve::P384 => "NistP384",
        Curve::P521 => "NistP521",
    }
}

pub fn parse_curve(s: &str) -> Option<Curve> {
    CURVES.into_iter().find(|c| curve_name(*c) == s)
}

/// Lifecycle state, derived from the dates (DSM `state`, KMIP's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    PreActive,
    Active,
    Deactivated,
    Compromised,
    Destroyed,
}

impl KeyState {
    pub const ALL: [KeyState; 5] = [
        KeyState::PreActive,
        KeyState::Active,
        KeyState::Deactivated,
        KeyState::Compromised,
        KeyState::Destroyed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::PreActive => "PreActive",
            KeyState::Active => "Active",
            KeyState::Deactivated => "Deactivated",
            KeyState::Compromised => "Compromised",
            KeyState::Destroyed => "Destroyed",
        }
    }

    pub fn parse(s: &str) -> Option<KeyState> {
        KeyState::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
}

/// Who created an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creator {
    User(String),
    App(String),
    System(String),
}

impl Creator {
    /// A creator as the catalog stores it: a kind (`user`, `app`, else system) and an id.
    pub fn from_parts(kind: &str, id: String) -> Creator {
        match kind {
            "user" => Creator::User(id),
            "app" => Creator::App(id),
            _ => Creator::System(id),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Creator::User(_) => "user",
            Creator::App(_) => "app",
            Creator::System(_) => "system",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Creator::User(i) | Creator::App(i) | Creator::System(i) => i,
        }
    }
}

/// Where a key's material was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Generated by Keyward.
    Keyward,
    /// Imported, or held by an external key manager.
    External,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Keyward => "Keyward",
            Origin::External => "External",
        }
    }

    /// The name on the DSM wire, whose clients accept only DSM's closed set (`FortanixHSM`
    /// for keys the key manager made, `External` for imported ones, `Transient`): a key
    /// Keyward generated is `FortanixHSM` there.
    pub fn dsm_name(self) -> &'static str {
        match self {
            Origin::Keyward => "FortanixHSM",
            Origin::External => "External",
        }
    }

    pub fn parse(s: &str) -> Option<Origin> {
        match s {
            "Keyward" => Some(Origin::Keyward),
            "External" => Some(Origin::External),
            _ => None,
        }
    }
}

/// Where the material of a virtual key came from (FLOWS F18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeySource {
    /// Generated by the external key manager.
    External,
    /// Brought in from Keyward (import, copy).
    Keyward,
}

/// The state of a virtual key's key in the external key manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteState {
    /// The name is reserved in the catalog and the key is being created; a run that ends
    /// without recording it leaves it for the next sync to complete or release.
    Creating,
    Active,
    Disabled,
    SoftDeleted,
    Purged,
}

impl RemoteState {
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteState::Creating => "Creating",
            RemoteState::Active => "Active",
            RemoteState::Disabled => "Disabled",
            RemoteState::SoftDeleted => "SoftDeleted",
            RemoteState::Purged => "Purged",
        }
    }

    pub fn parse(s: &str) -> Option<RemoteState> {
        [
            RemoteState::Creating,
            RemoteState::Active,
            RemoteState::Disabled,
            RemoteState::SoftDeleted,
            RemoteState::Purged,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// A virtual key's name (shared by all its versions) and current version in the key manager
/// (DSM `external.id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalId {
    pub label: String,
    pub version: Option<String>,
}

/// Where a virtual key lives (DSM `external`), stored as this JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalKey {
    /// The link kind, e.g. `AzureManagedHsm`.
    pub kind: String,
    /// The group whose link reaches the key manager.
    pub hsm_group_id: String,
    /// The key manager instance (a Managed HSM URI).
    pub instance: Option<String>,
    pub id: ExternalId,
    /// The resource id of the current version.
    pub key_id: Option<String>,
    /// The current version (DSM clients read it here as well as in `id`).
    pub key_version: Option<String>,
    pub kty: Option<String>,
    pub source: KeySource,
    pub state: RemoteState,
    #[serde(default)]
    pub managed: bool,
    #[serde(with = "crate::time::dsm_opt", default)]
    pub created: Option<i64>,
    #[serde(with = "crate::time::dsm_opt", default)]
    pub updated: Option<i64>,
    #[serde(default)]
    pub recovery_level: Option<String>,
    #[serde(with = "crate::time::dsm_opt", default)]
    pub synced_at: Option<i64>,
    /// While soft-deleted: when, until when it can be recovered, and how.
    #[serde(
        with = "crate::time::dsm_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub deleted_date: Option<i64>,
    #[serde(
        with = "crate::time::dsm_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub scheduled_purge_date: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_id: Option<String>,
    #[serde(
        with = "crate::time::dsm_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub purged_seen: Option<i64>,
    /// While `Creating`: the workflow run that reserved the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl ExternalKey {
    pub fn name(&self) -> &str {
        &self.id.label
    }
}

/// Custom metadata of a key.
pub type Tags = BTreeMap<String, String>;

/// A security object as the catalog stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct SObject {
    pub kid: String,
    pub account_id: String,
    pub group_id: String,
    pub name: String,
    pub description: Option<String>,
    pub obj_type: ObjType,
    pub key_size: Option<u32>,
    pub curve: Option<Curve>,
    pub key_ops: KeyOps,
    pub enabled: bool,
    pub activation_date: Option<i64>,
    pub deactivation_date: Option<i64>,
    pub compromise_date: Option<i64>,
    pub destruction_date: Option<i64>,
    pub revocation_reason: Option<String>,
    pub created_at: i64,
    pub lastused_at: Option<i64>,
    pub creator: Creator,
    pub origin: Origin,
    /// True when the key has never permitted EXPORT (PKCS#11 `CKA_NEVER_EXTRACTABLE`). Fixed
    /// when the key is created (copies inherit it from their source): EXPORT can never be
    /// added, and a key once exportable can never claim it was not.
    pub never_exportable: bool,
    /// Sealed key material; `None` for virtual keys and destroyed keys.
    pub material: Option<Vec<u8>>,
    /// Public key (SubjectPublicKeyInfo DER) of RSA and EC keys.
    pub pub_key: Option<Vec<u8>>,
    pub kcv: Option<String>,
    /// Where a virtual key lives.
    pub external: Option<ExternalKey>,
    pub tags: Tags,
    /// When a rotation replaced the key (it was renamed `<name> (rotated at <time>)` and its
    /// replacement took the name); `None` for a current key.
    pub rotated_at: Option<i64>,
    /// Bumped by every write: a write names the version it read (compare-and-swap).
    pub version: i64,
}

impl SObject {
    pub fn state(&self, now: i64) -> KeyState {
        if self.destruction_date.is_some() {
            KeyState::Destroyed
        } else if self.compromise_date.is_some() {
            KeyState::Compromised
        } else if self.deactivation_date.is_some_and(|d| d <= now) {
            KeyState::Deactivated
        } else if self.activation_date.is_some_and(|a| a > now) {
            KeyState::PreActive
        } else {
            KeyState::Active
        }
    }

    pub fn has_op(&self, op: KeyOp) -> bool {
        self.key_ops.contains(op)
    }

    pub fn is_virtual(&self) -> bool {
        self.external.is_some()
    }

    /// The key's name in its external key manager.
    pub fn external_name(&self) -> Option<&str> {
        self.external.as_ref().map(ExternalKey::name)
    }

    pub fn remote_state(&self) -> Option<RemoteState> {
        self.external.as_ref().map(|e| e.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ops_use_dsm_names_in_dsm_order() {
        let ops: KeyOps =
            serde_json::from_str(r#"["EXPORT","DECRYPT","ENCRYPT","APPMANAGEABLE"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&ops).unwrap(),
            r#"["ENCRYPT","DECRYPT","EXPORT","APPMANAGEABLE"]"#
        );
        assert!(serde_json::from_str::<KeyOps>(r#"["FLY"]"#).is_err());
        for op in KeyOp::ALL {
            assert_eq!(KeyOp::parse(op.as_str()), Some(op));
        }
        assert!(!ObjType::Aes.default_ops().contains(KeyOp::Export));
    }

    #[test]
    fn the_external_document_keeps_its_wire_shape() {
        let stored = serde_json::json!({
            "kind": "AzureManagedHsm", "hsm_group_id": "g", "instance": "https://h.localhost",
            "id": {"label": "k", "version": "v1"}, "key_id": "https://h.localhost/keys/k/v1",
            "key_version": "v1", "kty": "RSA-HSM", "source": "External", "state": "SoftDeleted",
            "managed": false, "created": "20260101T000000Z", "updated": null,
            "recovery_level": "Recoverable", "synced_at": "20260102T000000Z",
            "deleted_date": "20260103T000000Z", "scheduled_purge_date": "20260403T000000Z",
            "recovery_id": "https://h.localhost/deletedkeys/k",
        });
        let e: ExternalKey = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(e.state, RemoteState::SoftDeleted);
        assert_eq!(e.deleted_date, Some(1_767_398_400));
        assert_eq!(serde_json::to_value(&e).unwrap(), stored);
    }
}
