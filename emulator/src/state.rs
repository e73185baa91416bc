//! The emulated world: the directory (tenants, applications), subscriptions, and the key
//! stores, Managed HSMs and Key Vault vaults, with who may use them and their keys.
//! Serializable, for optional persistence.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{
    EmulatorConfig, HsmConfig, KEY_PERMISSIONS, RoleAssignment, VaultConfig, VaultSku,
};
use crate::crypto::Material;
use crate::names::NameMap;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct World {
    pub tenants: BTreeSet<String>,
    pub apps: BTreeMap<String, App>,
    pub subscriptions: BTreeMap<String, Subscription>,
    /// Managed HSMs and vaults by name (one namespace: both are DNS names under Azure).
    pub hsms: BTreeMap<String, Hsm>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct App {
    pub tenant: String,
    pub client_id: String,
    pub secret: String,
    /// The service principal's object id (appears in tokens and ARM errors).
    pub object_id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub readers: BTreeSet<String>,
}

/// What a key store is: it decides its host name, token audience, key types and access model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    #[default]
    Managed,
    Standard,
    Premium,
}

impl Kind {
    pub fn is_vault(self) -> bool {
        self != Kind::Managed
    }

    /// How Azure's errors name the store.
    pub fn noun(self) -> &'static str {
        if self.is_vault() {
            "vault"
        } else {
            "Managed HSM"
        }
    }
}

/// A Managed HSM or a Key Vault vault (`kind`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Hsm {
    #[serde(default)]
    pub kind: Kind,
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub retention_days: u32,
    pub purge_protection: bool,
    /// Client id → roles (Managed HSM local RBAC, or vault RBAC when `rbac`).
    pub roles: BTreeMap<String, BTreeSet<Role>>,
    /// Vaults: role-based access instead of access policies.
    #[serde(default)]
    pub rbac: bool,
    /// Vaults without `rbac`: client id → key permissions.
    #[serde(default)]
    pub access_policies: BTreeMap<String, BTreeSet<String>>,
    /// Case-insensitive, as Azure's object names are.
    pub keys: NameMap<KeyRecord>,
    pub deleted: NameMap<DeletedKey>,
}

/// Built-in Managed HSM and Key Vault roles, reduced to the data actions the emulator
/// checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    CryptoUser,
    CryptoOfficer,
    CryptoAuditor,
    Administrator,
    VaultAdministrator,
    VaultCryptoOfficer,
    VaultCryptoUser,
    VaultReader,
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    List,
    Create,
    Import,
    Update,
    Rotate,
    Delete,
    Recover,
    Purge,
    Backup,
    Restore,
    Crypto,
    Rng,
    Release,
}

impl Permission {
    /// How an access-policy refusal names what is missing.
    pub fn policy_name(self) -> &'static str {
        match self {
            Permission::Crypto => "encrypt/decrypt/wrapKey/unwrapKey/sign/verify",
            Permission::Rng => "rng",
            Permission::Release => "release",
            p => p.policy_names()[0],
        }
    }

    /// The access-policy permission that grants it (crypto: any cryptographic one).
    fn policy_names(self) -> &'static [&'static str] {
        use Permission::*;
        match self {
            Read => &["get"],
            List => &["list"],
            Create => &["create"],
            Import => &["import"],
            Update => &["update"],
            Rotate => &["rotate"],
            Delete => &["delete"],
            Recover => &["recover"],
            Purge => &["purge"],
            Backup => &["backup"],
            Restore => &["restore"],
            Crypto => &[
                "encrypt",
                "decrypt",
                "wrapKey",
                "unwrapKey",
                "sign",
                "verify",
            ],
            Rng => &[],
            Release => &["release"],
        }
    }
}

impl Role {
    pub fn parse(name: &str) -> Result<Role, String> {
        match name {
            "Managed HSM Crypto User" => Ok(Role::CryptoUser),
            "Managed HSM Crypto Officer" => Ok(Role::CryptoOfficer),
            "Managed HSM Crypto Auditor" => Ok(Role::CryptoAuditor),
            "Managed HSM Administrator" => Ok(Role::Administrator),
            "Key Vault Administrator" => Ok(Role::VaultAdministrator),
            "Key Vault Crypto Officer" => Ok(Role::VaultCryptoOfficer),
            "Key Vault Crypto User" => Ok(Role::VaultCryptoUser),
            "Key Vault Reader" => Ok(Role::VaultReader),
            other => Err(format!(
                "unknown role '{other}' (known: Managed HSM Crypto User, Managed HSM Crypto Officer, Managed HSM Crypto Auditor, Managed HSM Administrator, Key Vault Administrator, Key Vault Crypto Officer, Key Vault Crypto User, Key Vault Reader)"
            )),
        }
    }

    /// Whether the role is one of a vault's (rather than a Managed HSM's).
    pub fn for_vaults(self) -> bool {
        matches!(
            self,
            Role::VaultAdministrator
                | Role::VaultCryptoOfficer
                | Role::VaultCryptoUser
                | Role::VaultReader
        )
    }

    pub fn allows(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Administrator | Role::VaultAdministrator => true,
            // "Perform any action on the keys of a key vault, except manage permissions."
            Role::VaultCryptoOfficer => true,
            Role::VaultCryptoUser => matches!(p, Read | List | Crypto),
            Role::VaultReader => matches!(p, Read | List),
            // "All key management operations except purge or release."
            Role::CryptoUser => !matches!(p, Purge | Release),
            // Manage keys, including purge; no cryptographic operations.
            Role::CryptoOfficer => !matches!(p, Crypto),
            Role::CryptoAuditor => matches!(p, Read | List),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Oldest first; the last one is the current version.
    pub versions: Vec<KeyVersion>,
    pub rotation_policy: Option<serde_json::Value>,
}

impl KeyRecord {
    pub fn latest(&self) -> &KeyVersion {
        self.versions
            .last()
            .expect("a key has at least one version")
    }

    pub fn latest_mut(&mut self) -> &mut KeyVersion {
        self.versions
            .last_mut()
            .expect("a key has at least one version")
    }

    pub fn version(&self, id: &str) -> Option<&KeyVersion> {
        self.versions.iter().find(|v| v.id == id)
    }

    pub fn version_mut(&mut self, id: &str) -> Option<&mut KeyVersion> {
        self.versions.iter_mut().find(|v| v.id == id)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyVersion {
    /// 32 lowercase hex digits.
    pub id: String,
    pub material: Material,
    pub ops: Vec<String>,
    pub enabled: bool,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub created: i64,
    pub updated: i64,
    pub tags: BTreeMap<String, String>,
    pub exportable: bool,
    /// HSM-protected (`RSA-HSM`) rather than software-protected (`RSA`); every Managed HSM
    /// key is.
    #[serde(default = "yes")]
    pub hsm: bool,
    /// What an attested environment must show to have the key released (exportable keys).
    #[serde(default)]
    pub release_policy: Option<serde_json::Value>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeletedKey {
    pub record: KeyRecord,
    pub deleted: i64,
    pub scheduled_purge: i64,
}

pub fn new_version_id() -> String {
    crate::crypto::random_bytes(16)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A GUID-shaped random id.
pub fn new_guid() -> String {
    let h: String = crate::crypto::random_bytes(16)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn valid_dns_label(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

impl World {
    pub fn from_config(config: &EmulatorConfig) -> Result<World, String> {
        let mut world = World::default();
        for t in &config.tenants {
            world.add_tenant(&t.id)?;
        }
        for a in &config.applications {
            world.add_app(&a.tenant, &a.client_id, &a.client_secret, a.name.as_deref())?;
        }
        for s in &config.subscriptions {
            world.add_subscription(&s.id, &s.tenant, s.name.as_deref())?;
            for r in &s.readers {
                world.grant_reader(&s.id, r)?;
            }
        }
        for h in &config.hsms {
            world.add_hsm(h)?;
        }
        for v in &config.vaults {
            world.add_vault(v)?;
        }
        Ok(world)
    }

    pub fn add_tenant(&mut self, id: &str) -> Result<(), String> {
        if id.trim().is_empty() {
            return Err("a tenant needs an id".into());
        }
        self.tenants.insert(id.to_string());
        Ok(())
    }

    pub fn add_app(
        &mut self,
        tenant: &str,
        client_id: &str,
        secret: &str,
        name: Option<&str>,
    ) -> Result<(), String> {
        if !self.tenants.contains(tenant) {
            return Err(format!("application {client_id}: unknown tenant {tenant}"));
        }
        if client_id.trim().is_empty() || secret.is_empty() {
            return Err("an application needs a client_id and a client_secret".into());
        }
        let object_id = self
            .apps
            .get(client_id)
            .map(|a| a.object_id.clone())
            .unwrap_or_else(new_guid);
        self.apps.insert(
            client_id.to_string(),
            App {
                tenant: tenant.to_string(),
                client_id: client_id.to_string(),
                secret: secret.to_string(),
                object_id,
                name: name.unwrap_or(client_id).to_string(),
            },
        );
        Ok(())
    }

    pub fn add_subscription(
        &mut self,
        id: &str,
        tenant: &str,
        name: Option<&str>,
    ) -> Result<(), String> {
        if !self.tenants.contains(tenant) {
            return Err(format!("subscription {id}: unknown tenant {tenant}"));
        }
        let readers = self
            .subscriptions
            .get(id)
            .map(|s| s.readers.clone())
            .unwrap_or_default();
        self.subscriptions.insert(
            id.to_string(),
            Subscription {
                id: id.to_string(),
                tenant: tenant.to_string(),
                name: name.unwrap_or(id).to_string(),
                readers,
            },
        );
        Ok(())
    }

    pub fn grant_reader(&mut self, subscription: &str, principal: &str) -> Result<(), String> {
        let sub = self
            .subscriptions
            .get_mut(subscription)
            .ok_or_else(|| format!("unknown subscription {subscription}"))?;
        sub.readers.insert(principal.to_string());
        Ok(())
    }

    pub fn add_hsm(&mut self, h: &HsmConfig) -> Result<(), String> {
        if !valid_dns_label(&h.name) {
            return Err(format!(
                "HSM name '{}' must be 3-24 characters of a-z, 0-9 and '-'",
                h.name
            ));
        }
        if !self.subscriptions.contains_key(&h.subscription) {
            return Err(format!(
                "HSM {}: unknown subscription {}",
                h.name, h.subscription
            ));
        }
        if !(7..=90).contains(&h.retention_days) {
            return Err(format!("HSM {}: retention_days must be 7 to 90", h.name));
        }
        let (keys, deleted) = self.take_keys(&h.name, Kind::Managed)?;
        let mut hsm = Hsm {
            kind: Kind::Managed,
            rbac: true,
            access_policies: BTreeMap::new(),
            name: h.name.clone(),
            subscription: h.subscription.clone(),
            resource_group: h.resource_group.clone(),
            location: h.location.clone(),
            retention_days: h.retention_days,
            purge_protection: h.purge_protection,
            roles: BTreeMap::new(),
            keys,
            deleted,
        };
        for RoleAssignment { principal, role } in &h.roles {
            hsm.grant(principal, role)?;
        }
        self.hsms.insert(h.name.clone(), hsm);
        Ok(())
    }

    pub fn add_vault(&mut self, v: &VaultConfig) -> Result<(), String> {
        if !valid_dns_label(&v.name) {
            return Err(format!(
                "vault name '{}' must be 3-24 characters of a-z, 0-9 and '-'",
                v.name
            ));
        }
        if !self.subscriptions.contains_key(&v.subscription) {
            return Err(format!(
                "vault {}: unknown subscription {}",
                v.name, v.subscription
            ));
        }
        if !(7..=90).contains(&v.retention_days) {
            return Err(format!("vault {}: retention_days must be 7 to 90", v.name));
        }
        let kind = match v.sku {
            VaultSku::Standard => Kind::Standard,
            VaultSku::Premium => Kind::Premium,
        };
        let (keys, deleted) = self.take_keys(&v.name, kind)?;
        let mut vault = Hsm {
            kind,
            name: v.name.clone(),
            subscription: v.subscription.clone(),
            resource_group: v.resource_group.clone(),
            location: v.location.clone(),
            retention_days: v.retention_days,
            purge_protection: v.purge_protection,
            roles: BTreeMap::new(),
            rbac: v.rbac,
            access_policies: BTreeMap::new(),
            keys,
            deleted,
        };
        for p in &v.access_policies {
            vault.set_access_policy(&p.principal, &p.keys)?;
        }
        for RoleAssignment { principal, role } in &v.roles {
            vault.grant(principal, role)?;
        }
        self.hsms.insert(v.name.clone(), vault);
        Ok(())
    }

    /// The keys of a store being configured again; a name is one kind of store for good.
    fn take_keys(
        &mut self,
        name: &str,
        kind: Kind,
    ) -> Result<(NameMap<KeyRecord>, NameMap<DeletedKey>), String> {
        match self.hsms.remove(name) {
            Some(old) if old.kind != kind => {
                let noun = old.kind.noun();
                self.hsms.insert(name.to_string(), old);
                Err(format!("'{name}' is already a {noun}"))
            }
            Some(old) => Ok((old.keys, old.deleted)),
            None => Ok(Default::default()),
        }
    }

    pub fn tenant_of_hsm(&self, hsm: &Hsm) -> &str {
        self.subscriptions
            .get(&hsm.subscription)
            .map(|s| s.tenant.as_str())
            .unwrap_or("")
    }
}

impl Hsm {
    pub fn allows(&self, client_id: &str, p: Permission) -> bool {
        if self.kind.is_vault() && !self.rbac {
            return self.access_policies.get(client_id).is_some_and(|granted| {
                p.policy_names()
                    .iter()
                    .any(|n| granted.contains(&n.to_ascii_lowercase()))
            });
        }
        self.roles
            .get(client_id)
            .is_some_and(|roles| roles.iter().any(|r| r.allows(p)))
    }

    /// Assigns a role; Managed HSM roles on Managed HSMs, Key Vault roles on vaults.
    pub fn grant(&mut self, principal: &str, role: &str) -> Result<(), String> {
        let role = Role::parse(role)?;
        if role.for_vaults() != self.kind.is_vault() {
            return Err(format!(
                "'{}' is a {}: that role does not apply to it",
                self.name,
                self.kind.noun()
            ));
        }
        self.roles
            .entry(principal.to_string())
            .or_default()
            .insert(role);
        Ok(())
    }

    /// Replaces the access policy of one application (vaults only).
    pub fn set_access_policy(&mut self, principal: &str, keys: &[String]) -> Result<(), String> {
        if !self.kind.is_vault() {
            return Err(format!(
                "'{}' is a Managed HSM: it has no access policies",
                self.name
            ));
        }
        let mut granted = BTreeSet::new();
        for k in keys {
            let known = KEY_PERMISSIONS.iter().find(|p| p.eq_ignore_ascii_case(k));
            let Some(p) = known else {
                return Err(format!(
                    "unknown key permission '{k}' (known: {})",
                    KEY_PERMISSIONS.join(", ")
                ));
            };
            granted.insert(p.to_ascii_lowercase());
        }
        if granted.is_empty() {
            self.access_policies.remove(principal);
        } else {
            self.access_policies.insert(principal.to_string(), granted);
        }
        Ok(())
    }

    /// Purges soft-deleted keys whose retention has run out.
    pub fn purge_expired(&mut self, now: i64) -> usize {
        let before = self.deleted.len();
        self.deleted.retain(|d| d.scheduled_purge > now);
        before - self.deleted.len()
    }

    pub fn recovery_level(&self) -> &'static str {
        match (self.retention_days == 90, self.purge_protection) {
            (true, false) => "Recoverable+Purgeable",
            (true, true) => "Recoverable",
            (false, false) => "CustomizedRecoverable+Purgeable",
            (false, true) => "CustomizedRecoverable",
        }
    }
}
