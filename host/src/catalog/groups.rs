//! Groups: collections of security objects sharing access policy, attached policies and,
//! optionally, a link to an external key manager.

use crate::catalog::db::{self, Row};
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{CatalogError, Conn, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomPolicy {
    /// Name of a policy plugin.
    pub plugin: String,
    /// Its configuration (JSON).
    pub config: serde_json::Value,
}

/// The kinds of external key manager a group can be linked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkKind {
    AzureManagedHsm,
}

impl LinkKind {
    pub const ALL: [LinkKind; 1] = [LinkKind::AzureManagedHsm];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::AzureManagedHsm => "AzureManagedHsm",
        }
    }

    pub fn parse(s: &str) -> Option<LinkKind> {
        LinkKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What a link's instance is (DSM's `key_vault_type`): a Key Vault vault of the Standard
/// tier (software-protected keys) or of the Premium tier (HSM-protected too), or a Managed
/// HSM. Fixed once the instance is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum VaultType {
    Standard,
    Premium,
    Managed,
}

impl VaultType {
    pub const ALL: [VaultType; 3] = [VaultType::Standard, VaultType::Premium, VaultType::Managed];

    pub fn as_str(self) -> &'static str {
        match self {
            VaultType::Standard => "STANDARD",
            VaultType::Premium => "PREMIUM",
            VaultType::Managed => "MANAGED",
        }
    }

    pub fn parse(s: &str) -> Option<VaultType> {
        VaultType::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn is_vault(self) -> bool {
        self != VaultType::Managed
    }

    /// How people name the kind of store.
    pub fn label(self) -> &'static str {
        match self {
            VaultType::Standard => "Standard tier Key Vault",
            VaultType::Premium => "Premium tier Key Vault",
            VaultType::Managed => "Managed HSM",
        }
    }
}

/// Endpoint overrides of a link (sovereign clouds, private endpoints, the emulator).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEndpoints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_suffix: Option<String>,
}

/// TLS settings of a link's connections; the client key is among the sealed secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkTls {
    /// A CA to trust instead of the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    pub validate_hostname: bool,
    #[serde(default)]
    pub has_client_key: bool,
}

impl Default for LinkTls {
    fn default() -> Self {
        LinkTls {
            ca_pem: None,
            client_cert: None,
            validate_hostname: true,
            has_client_key: false,
        }
    }
}

/// The outcome of the last connection test (FLOWS F12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// `Connected` or `Not Connected`.
    pub status: String,
    pub reason: Option<String>,
    pub error_code: Option<String>,
    pub checked_at: String,
}

/// The non-secret settings of a link, as stored and as shown (secrets appear only as the
/// `has_*` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
    /// The chosen instance (Managed HSM or vault URI); once set it never changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// What the instance is; links made before vaults were supported have none and are
    /// Managed HSMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vault_type: Option<VaultType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<LinkEndpoints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<LinkTls>,
    #[serde(default)]
    pub has_client_secret: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionRecord>,
}

impl LinkConfig {
    /// The kind of the link's instance.
    pub fn vault_type(&self) -> VaultType {
        self.key_vault_type.unwrap_or(VaultType::Managed)
    }
}

/// A group's link to an external key manager. Non-secret settings in `config`; secrets
/// (client secret, client private key) sealed in `secrets`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalLink {
    pub kind: LinkKind,
    pub config: LinkConfig,
    pub secrets: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: i64,
    pub created_by: String,
    pub crypto_policy: Option<String>,
    pub key_metadata_policy: Option<String>,
    pub custom_policies: Vec<CustomPolicy>,
    pub link: Option<ExternalLink>,
    /// Whether users who manage the group's keys may export them; applications of the
    /// group may, for keys that permit EXPORT.
    pub user_export: bool,
    /// DSM's `approval_policy`: what needs a quorum's approval in the group, and whose.
    pub approval_policy: Option<super::approvals::GroupApprovalPolicy>,
}

/// A user's role in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupRole {
    Administrator,
    Auditor,
}

impl GroupRole {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupRole::Administrator => "administrator",
            GroupRole::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<GroupRole> {
        match s {
            "administrator" => Some(GroupRole::Administrator),
            "auditor" => Some(GroupRole::Auditor),
            _ => None,
        }
    }
}

/// The sealing context of a group's link secrets.
pub fn secrets_context(group_id: &str) -> String {
    format!("group:{group_id}:link-secrets")
}

fn from_row(r: &Row) -> Result<Group> {
    let custom: String = r.get("custom_policies");
    let kind: Option<String> = r.get("hmg_kind");
    let link = match kind {
        Some(kind) => {
            let config: Option<String> = r.get("hmg_config");
            Some(ExternalLink {
                kind: LinkKind::parse(&kind)
                    .ok_or_else(|| CatalogError::Corrupt(format!("group link kind {kind}")))?,
                config: serde_json::from_str(config.as_deref().unwrap_or("{}"))
                    .map_err(|e| CatalogError::Corrupt(format!("group link config: {e}")))?,
                secrets: r.get("hmg_secrets"),
            })
        }
        None => None,
    };
    Ok(Group {
        id: r.get("id"),
        account_id: r.get("account_id"),
        name: r.get("name"),
        description: r.get("description"),
        created_at: r.get("created_at"),
        created_by: r.get("created_by"),
        crypto_policy: r.get("crypto_policy"),
        key_metadata_policy: r.get("key_metadata_policy"),
        custom_policies: serde_json::from_str(&custom)
            .map_err(|e| CatalogError::Corrupt(format!("custom policies: {e}")))?,
        link,
        user_export: r.get("user_export"),
        approval_policy: match r.get::<Option<String>, _>("approval_policy") {
            Some(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| CatalogError::Corrupt(format!("approval policy: {e}")))?,
            ),
            None => None,
        },
    })
}

fn policy_json(p: &super::approvals::GroupApprovalPolicy) -> String {
    serde_json::to_string(p).expect("serialize")
}

fn config_json(l: &ExternalLink) -> String {
    serde_json::to_string(&l.config).expect("serialize")
}

pub async fn insert(c: &mut Conn, g: &Group) -> Result<()> {
    db::query(
        "INSERT INTO groups (id, account_id, name, description, created_at, created_by, crypto_policy, key_metadata_policy,
                             custom_policies, hmg_kind, hmg_config, hmg_secrets, user_export, approval_policy)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&g.id)
    .bind(&g.account_id)
    .bind(&g.name)
    .bind(&g.description)
    .bind(g.created_at)
    .bind(&g.created_by)
    .bind(&g.crypto_policy)
    .bind(&g.key_metadata_policy)
    .bind(serde_json::to_string(&g.custom_policies).expect("serialize"))
    .bind(g.link.as_ref().map(|l| l.kind.as_str()))
    .bind(g.link.as_ref().map(config_json))
    .bind(g.link.as_ref().and_then(|l| l.secrets.clone()))
    .bind(g.user_export)
    .bind(g.approval_policy.as_ref().map(policy_json))
    .execute(c)
    .await?;
    Ok(())
}

/// A change to some settings of a group; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct GroupPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub crypto_policy: Option<Option<String>>,
    pub key_metadata_policy: Option<Option<String>>,
    pub custom_policies: Option<Vec<CustomPolicy>>,
    pub link: Option<Option<ExternalLink>>,
    pub user_export: Option<bool>,
    pub approval_policy: Option<Option<super::approvals::GroupApprovalPolicy>>,
}

/// Writes the settings a patch changes (callers re-read the group in the same write
/// transaction, so nothing read before it is written back).
pub async fn apply(c: &mut Conn, account: &str, id: &str, p: &GroupPatch) -> Result<()> {
    let mut q: db::Builder = db::Builder::new("UPDATE groups SET id = id");
    if let Some(v) = &p.name {
        q.push(", name = ").push_bind(v.clone());
    }
    if let Some(v) = &p.description {
        q.push(", description = ").push_bind(v.clone());
    }
    if let Some(v) = &p.crypto_policy {
        q.push(", crypto_policy = ").push_bind(v.clone());
    }
    if let Some(v) = &p.key_metadata_policy {
        q.push(", key_metadata_policy = ").push_bind(v.clone());
    }
    if let Some(v) = &p.custom_policies {
        q.push(", custom_policies = ")
            .push_bind(serde_json::to_string(v).expect("serialize"));
    }
    if let Some(l) = &p.link {
        q.push(", hmg_kind = ")
            .push_bind(l.as_ref().map(|l| l.kind.as_str()))
            .push(", hmg_config = ")
            .push_bind(l.as_ref().map(config_json))
            .push(", hmg_secrets = ")
            .push_bind(l.as_ref().and_then(|l| l.secrets.clone()));
    }
    if let Some(v) = p.user_export {
        q.push(", user_export = ").push_bind(v);
    }
    if let Some(v) = &p.approval_policy {
        q.push(", approval_policy = ")
            .push_bind(v.as_ref().map(policy_json));
    }
    q.push(" WHERE id = ")
        .push_bind(id.to_string())
        .push(" AND account_id = ")
        .push_bind(account.to_string());
    q.build().execute(c).await?;
    Ok(())
}

/// Records the outcome of a connection test on a group's link.
pub async fn set_connection(
    c: &mut Conn,
    account: &str,
    id: &str,
    record: &ConnectionRecord,
) -> Result<()> {
    let config: Option<String> = db::query(
        "SELECT hmg_config FROM groups WHERE id = ? AND account_id = ? AND hmg_kind IS NOT NULL",
    )
    .bind(id)
    .bind(account)
    .fetch_optional(&mut *c)
    .await?
    .and_then(|r| r.get(0));
    let Some(config) = config else {
        return Ok(());
    };
    // The link's settings are kept as they are; only `connection` is replaced.
    let mut settings: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&config)
        .map_err(|e| super::CatalogError::Corrupt(format!("group {id} link settings: {e}")))?;
    settings.insert(
        "connection".to_string(),
        serde_json::to_value(record).expect("serialize"),
    );
    db::query("UPDATE groups SET hmg_config = ? WHERE id = ? AND account_id = ?")
        .bind(serde_json::Value::Object(settings).to_string())
        .bind(id)
        .bind(account)
        .execute(c)
        .await?;
    Ok(())
}

/// A group of `account`.
pub async fn get(c: &mut Conn, account: &str, id: &str) -> Result<Option<Group>> {
    db::query("SELECT * FROM groups WHERE id = ? AND account_id = ?")
        .bind(id)
        .bind(account)
        .fetch_optional(c)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn in_account(c: &mut Conn, account: &str) -> Result<Vec<Group>> {
    db::query("SELECT * FROM groups WHERE account_id = ? ORDER BY name")
        .bind(account)
        .fetch_all(c)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

pub async fn delete(c: &mut Conn, account: &str, id: &str) -> Result<()> {
    db::query("DELETE FROM groups WHERE id = ? AND account_id = ?")
        .bind(id)
        .bind(account)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn object_count(c: &mut Conn, id: &str) -> Result<i64> {
    // `id` is a group the caller loaded from its own account.
    Ok(
        db::query("SELECT COUNT(*) FROM sobjects WHERE group_id = ?")
            .bind(id)
            .fetch_one(c)
            .await?
            .get(0),
    )
}

/// Gives a user a role in a group of `account` (a group of another account is left alone:
/// callers check first and report it).
pub async fn set_member(
    c: &mut Conn,
    account: &str,
    group: &str,
    user: &str,
    role: GroupRole,
) -> Result<()> {
    db::query(
        "INSERT INTO group_members (group_id, user_id, role)
         SELECT id, ?, ? FROM groups WHERE id = ? AND account_id = ?
         ON CONFLICT (group_id, user_id) DO UPDATE SET role = excluded.role",
    )
    .bind(user)
    .bind(role.as_str())
    .bind(group)
    .bind(account)
    .execute(c)
    .await?;
    Ok(())
}

/// Takes a user's role in a group of `account` away.
pub async fn remove_member(c: &mut Conn, account: &str, group: &str, user: &str) -> Result<()> {
    db::query(
        "DELETE FROM group_members WHERE group_id = ? AND user_id = ?
           AND group_id IN (SELECT id FROM groups WHERE account_id = ?)",
    )
    .bind(group)
    .bind(user)
    .bind(account)
    .execute(c)
    .await?;
    Ok(())
}

/// A user's roles in the groups of an account.
pub async fn roles_of_user(
    c: &mut Conn,
    account: &str,
    user: &str,
) -> Result<HashMap<String, GroupRole>> {
    let rows = db::query(
        "SELECT m.group_id, m.role FROM group_members m JOIN groups g ON g.id = m.group_id WHERE g.account_id = ? AND m.user_id = ?",
    )
    .bind(account)
    .bind(user)
    .fetch_all(c)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.get("group_id"), GroupRole::parse(r.get("role"))?)))
        .collect())
}

pub async fn members(c: &mut Conn, group: &str) -> Result<Vec<(String, GroupRole)>> {
    // `group` is a group the caller loaded from its own account.
    let rows =
        db::query("SELECT user_id, role FROM group_members WHERE group_id = ? ORDER BY user_id")
            .bind(group)
            .fetch_all(c)
            .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.get("user_id"), GroupRole::parse(r.get("role"))?)))
        .collect())
}
