//! Groups: collections of security objects sharing access policy, attached policies and,
//! optionally, a link to an external key manager.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{CatalogError, Conn, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomPolicy {
    /// Name of a policy plugin.
    pub plugin: String,
    /// Its configuration (JSON).
    pub config: serde_json::Value,
}

/// A group's link to an external key manager. Non-secret settings in `config`; secrets
/// (client secret, client private key) sealed in `secrets`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalLink {
    pub kind: String,
    pub config: serde_json::Value,
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

fn from_row(r: &SqliteRow) -> Result<Group> {
    let custom: String = r.get("custom_policies");
    let kind: Option<String> = r.get("hmg_kind");
    let link = match kind {
        Some(kind) => {
            let config: Option<String> = r.get("hmg_config");
            Some(ExternalLink {
                kind,
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
    })
}

pub async fn insert(c: &mut Conn, g: &Group) -> Result<()> {
    sqlx::query(
        "INSERT INTO groups (id, account_id, name, description, created_at, created_by, crypto_policy, key_metadata_policy,
                             custom_policies, hmg_kind, hmg_config, hmg_secrets)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    .bind(g.link.as_ref().map(|l| l.kind.clone()))
    .bind(g.link.as_ref().map(|l| l.config.to_string()))
    .bind(g.link.as_ref().and_then(|l| l.secrets.clone()))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn update(c: &mut Conn, g: &Group) -> Result<()> {
    sqlx::query(
        "UPDATE groups SET name = ?, description = ?, crypto_policy = ?, key_metadata_policy = ?, custom_policies = ?,
                           hmg_kind = ?, hmg_config = ?, hmg_secrets = ? WHERE id = ?",
    )
    .bind(&g.name)
    .bind(&g.description)
    .bind(&g.crypto_policy)
    .bind(&g.key_metadata_policy)
    .bind(serde_json::to_string(&g.custom_policies).expect("serialize"))
    .bind(g.link.as_ref().map(|l| l.kind.clone()))
    .bind(g.link.as_ref().map(|l| l.config.to_string()))
    .bind(g.link.as_ref().and_then(|l| l.secrets.clone()))
    .bind(&g.id)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn get(c: &mut Conn, id: &str) -> Result<Option<Group>> {
    sqlx::query("SELECT * FROM groups WHERE id = ?")
        .bind(id)
        .fetch_optional(c)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn in_account(c: &mut Conn, account: &str) -> Result<Vec<Group>> {
    sqlx::query("SELECT * FROM groups WHERE account_id = ? ORDER BY name")
        .bind(account)
        .fetch_all(c)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

pub async fn delete(c: &mut Conn, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM groups WHERE id = ?")
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn object_count(c: &mut Conn, id: &str) -> Result<i64> {
    Ok(
        sqlx::query("SELECT COUNT(*) FROM sobjects WHERE group_id = ?")
            .bind(id)
            .fetch_one(c)
            .await?
            .get(0),
    )
}

pub async fn set_member(c: &mut Conn, group: &str, user: &str, role: GroupRole) -> Result<()> {
    sqlx::query(
        "INSERT INTO group_members (group_id, user_id, role) VALUES (?, ?, ?)
         ON CONFLICT (group_id, user_id) DO UPDATE SET role = excluded.role",
    )
    .bind(group)
    .bind(user)
    .bind(role.as_str())
    .execute(c)
    .await?;
    Ok(())
}

pub async fn remove_member(c: &mut Conn, group: &str, user: &str) -> Result<()> {
    sqlx::query("DELETE FROM group_members WHERE group_id = ? AND user_id = ?")
        .bind(group)
        .bind(user)
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
    let rows = sqlx::query(
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
    let rows =
        sqlx::query("SELECT user_id, role FROM group_members WHERE group_id = ? ORDER BY user_id")
            .bind(group)
            .fetch_all(c)
            .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.get("user_id"), GroupRole::parse(r.get("role"))?)))
        .collect())
}
