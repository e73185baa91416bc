//! The emulated world: the directory (tenants, applications), subscriptions, Managed HSMs
//! with their role assignments and keys. Serializable, for optional persistence.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{EmulatorConfig, HsmConfig, RoleAssignment};
use crate::crypto::Material;
use crate::names::NameMap;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct World {
    pub tenants: BTreeSet<String>,
    pub apps: BTreeMap<String, App>,
    pub subscriptions: BTreeMap<String, Subscription>,
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

#[derive(Debug, Serialize, Deserialize)]
pub struct Hsm {
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub retention_days: u32,
    pub purge_protection: bool,
    /// Client id → roles.
    pub roles: BTreeMap<String, BTreeSet<Role>>,
    /// Case-insensitive, as Azure's object names are.
    pub keys: NameMap<KeyRecord>,
    pub deleted: NameMap<DeletedKey>,
}

/// Built-in Managed HSM roles, reduced to the data actions the emulator checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    CryptoUser,
    CryptoOfficer,
    CryptoAuditor,
    Administrator,
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Write,
    Delete,
    Recover,
    Purge,
    Backup,
    Restore,
    Crypto,
    Rng,
}

impl Role {
    pub fn parse(name: &str) -> Result<Role, String> {
        match name {
            "Managed HSM Crypto User" => Ok(Role::CryptoUser),
            "Managed HSM Crypto Officer" => Ok(Role::CryptoOfficer),
            "Managed HSM Crypto Auditor" => Ok(Role::CryptoAuditor),
            "Managed HSM Administrator" => Ok(Role::Administrator),
            other => Err(format!(
                "unknown role '{other}' (known: Managed HSM Crypto User, Managed HSM Crypto Officer, Managed HSM Crypto Auditor, Managed HSM Administrator)"
            )),
        }
    }

    pub fn allows(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Administrator => true,
            // "All key management operations except purge or release."
            Role::CryptoUser => !matches!(p, Purge),
            // Manage keys, including purge; no cryptographic operations.
            Role::CryptoOfficer => !matches!(p, Crypto),
            Role::CryptoAuditor => matches!(p, Read),
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
        let (keys, deleted) = match self.hsms.remove(&h.name) {
            Some(old) => (old.keys, old.deleted),
            None => Default::default(),
        };
        let mut hsm = Hsm {
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
            hsm.roles
                .entry(principal.clone())
                .or_default()
                .insert(Role::parse(role)?);
        }
        self.hsms.insert(h.name.clone(), hsm);
        Ok(())
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
        self.roles
            .get(client_id)
            .is_some_and(|roles| roles.iter().any(|r| r.allows(p)))
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
