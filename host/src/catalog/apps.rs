//! Applications: authenticate with an API key (checked against a SHA-256 hash of its
//! secret; the secret itself is kept sealed under the master key for its administrators to
//! read again), belong to groups, and are the only principals that perform cryptographic
//! operations.

use crate::catalog::db::{self, Row};
use std::collections::BTreeMap;

use super::sobjects::KeyOp;
use super::{CatalogError, Conn, Result};

/// What an application may do with the keys of one of its groups: DSM's `AppPermissions`.
/// A key's own operations still apply on top (an app with ENCRYPT cannot encrypt with a key
/// that does not permit it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AppPermission {
    Encrypt,
    Decrypt,
    WrapKey,
    UnwrapKey,
    Sign,
    Verify,
    MacGenerate,
    MacVerify,
    DeriveKey,
    AgreeKey,
    MaskDecrypt,
    Export,
    /// Create, update, lifecycle and delete of the group's keys (those that permit
    /// APPMANAGEABLE).
    Manage,
}

impl AppPermission {
    pub const ALL: [AppPermission; 13] = [
        AppPermission::Encrypt,
        AppPermission::Decrypt,
        AppPermission::WrapKey,
        AppPermission::UnwrapKey,
        AppPermission::Sign,
        AppPermission::Verify,
        AppPermission::MacGenerate,
        AppPermission::MacVerify,
        AppPermission::DeriveKey,
        AppPermission::AgreeKey,
        AppPermission::MaskDecrypt,
        AppPermission::Export,
        AppPermission::Manage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AppPermission::Encrypt => "ENCRYPT",
            AppPermission::Decrypt => "DECRYPT",
            AppPermission::WrapKey => "WRAPKEY",
            AppPermission::UnwrapKey => "UNWRAPKEY",
            AppPermission::Sign => "SIGN",
            AppPermission::Verify => "VERIFY",
            AppPermission::MacGenerate => "MACGENERATE",
            AppPermission::MacVerify => "MACVERIFY",
            AppPermission::DeriveKey => "DERIVEKEY",
            AppPermission::AgreeKey => "AGREEKEY",
            AppPermission::MaskDecrypt => "MASKDECRYPT",
            AppPermission::Export => "EXPORT",
            AppPermission::Manage => "MANAGE",
        }
    }

    pub fn parse(s: &str) -> Option<AppPermission> {
        AppPermission::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The permission a key operation needs; `None` for APPMANAGEABLE, which is the key's
    /// consent to MANAGE rather than an operation.
    pub fn for_op(op: KeyOp) -> Option<AppPermission> {
        Some(match op {
            KeyOp::Sign => AppPermission::Sign,
            KeyOp::Verify => AppPermission::Verify,
            KeyOp::Encrypt => AppPermission::Encrypt,
            KeyOp::Decrypt => AppPermission::Decrypt,
            KeyOp::WrapKey => AppPermission::WrapKey,
            KeyOp::UnwrapKey => AppPermission::UnwrapKey,
            KeyOp::Export => AppPermission::Export,
            KeyOp::AppManageable => return None,
        })
    }
}

/// An application's groups and what it may do in each.
pub type AppGroups = BTreeMap<String, Vec<AppPermission>>;

/// Stored as the names joined by commas, in a fixed order.
fn permissions_text(ps: &[AppPermission]) -> String {
    let mut ps = ps.to_vec();
    ps.sort();
    ps.dedup();
    ps.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")
}

fn permissions_of(text: &str) -> Result<Vec<AppPermission>> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            AppPermission::parse(p)
                .ok_or_else(|| CatalogError::Corrupt(format!("unknown app permission '{p}'")))
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: i64,
    pub created_by: String,
    pub api_key_hash: Vec<u8>,
    /// The secret sealed with [`secret_context`]; `None` for apps made before version 6 of
    /// the catalog, until their secret is reset.
    pub api_secret_sealed: Option<Vec<u8>>,
    pub enabled: bool,
    pub default_group: Option<String>,
    pub groups: AppGroups,
}

/// The sealing context of an application's secret: a sealed secret opens only as its own.
pub fn secret_context(app_id: &str) -> String {
    format!("app-secret:{app_id}")
}

fn from_row(r: &Row) -> App {
    App {
        id: r.get("id"),
        account_id: r.get("account_id"),
        name: r.get("name"),
        description: r.get("description"),
        created_at: r.get("created_at"),
        created_by: r.get("created_by"),
        api_key_hash: r.get("api_key_hash"),
        api_secret_sealed: r.get("api_secret_sealed"),
        enabled: r.get("enabled"),
        default_group: r.get("default_group"),
        groups: AppGroups::new(),
    }
}

async fn with_groups(c: &mut Conn, mut app: App) -> Result<App> {
    app.groups = groups_of(c, &app.id).await?;
    Ok(app)
}

pub async fn insert(c: &mut Conn, a: &App) -> Result<()> {
    db::query(
        "INSERT INTO apps (id, account_id, name, description, created_at, created_by, api_key_hash, api_secret_sealed, enabled, default_group)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&a.id)
    .bind(&a.account_id)
    .bind(&a.name)
    .bind(&a.description)
    .bind(a.created_at)
    .bind(&a.created_by)
    .bind(&a.api_key_hash)
    .bind(&a.api_secret_sealed)
    .bind(a.enabled)
    .bind(&a.default_group)
    .execute(&mut *c)
    .await?;
    set_groups(c, &a.account_id, &a.id, &a.groups).await
}

pub async fn update(c: &mut Conn, a: &App) -> Result<()> {
    db::query("UPDATE apps SET name = ?, description = ?, api_key_hash = ?, api_secret_sealed = ?, enabled = ?, default_group = ? WHERE id = ? AND account_id = ?")
        .bind(&a.name)
        .bind(&a.description)
        .bind(&a.api_key_hash)
        .bind(&a.api_secret_sealed)
        .bind(a.enabled)
        .bind(&a.default_group)
        .bind(&a.id)
        .bind(&a.account_id)
        .execute(&mut *c)
        .await?;
    set_groups(c, &a.account_id, &a.id, &a.groups).await
}

/// Only groups of the application's own account are linked.
async fn set_groups(c: &mut Conn, account: &str, app: &str, groups: &AppGroups) -> Result<()> {
    db::query("DELETE FROM app_groups WHERE app_id = ?")
        .bind(app)
        .execute(&mut *c)
        .await?;
    for (g, permissions) in groups {
        db::query(
            "INSERT INTO app_groups (app_id, group_id, permissions) SELECT ?, id, ? FROM groups WHERE id = ? AND account_id = ?",
        )
        .bind(app)
        .bind(permissions_text(permissions))
        .bind(g)
        .bind(account)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

pub async fn groups_of(c: &mut Conn, app: &str) -> Result<AppGroups> {
    let rows = db::query("SELECT group_id, permissions FROM app_groups WHERE app_id = ?")
        .bind(app)
        .fetch_all(c)
        .await?;
    rows.iter()
        .map(|r| Ok((r.get("group_id"), permissions_of(r.get("permissions"))?)))
        .collect()
}

/// An application of `account`.
pub async fn get(c: &mut Conn, account: &str, id: &str) -> Result<Option<App>> {
    match db::query("SELECT * FROM apps WHERE id = ? AND account_id = ?")
        .bind(id)
        .bind(account)
        .fetch_optional(&mut *c)
        .await?
    {
        Some(r) => Ok(Some(with_groups(c, from_row(&r)).await?)),
        None => Ok(None),
    }
}

/// The application an API key names, whatever its account (logging in decides the account).
pub async fn get_for_login(c: &mut Conn, id: &str) -> Result<Option<App>> {
    match db::query("SELECT * FROM apps WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
    {
        Some(r) => Ok(Some(with_groups(c, from_row(&r)).await?)),
        None => Ok(None),
    }
}

pub async fn in_account(c: &mut Conn, account: &str) -> Result<Vec<App>> {
    let rows = db::query("SELECT * FROM apps WHERE account_id = ? ORDER BY name")
        .bind(account)
        .fetch_all(&mut *c)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(with_groups(c, from_row(r)).await?);
    }
    Ok(out)
}

pub async fn delete(c: &mut Conn, account: &str, id: &str) -> Result<()> {
    db::query("DELETE FROM apps WHERE id = ? AND account_id = ?")
        .bind(id)
        .bind(account)
        .execute(c)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_keep_their_names_through_storage() {
        for p in AppPermission::ALL {
            assert_eq!(AppPermission::parse(p.as_str()), Some(p));
        }
        let stored = permissions_text(&[
            AppPermission::Sign,
            AppPermission::Encrypt,
            AppPermission::Sign,
        ]);
        assert_eq!(stored, "ENCRYPT,SIGN");
        assert_eq!(
            permissions_of(&stored).unwrap(),
            vec![AppPermission::Encrypt, AppPermission::Sign]
        );
        assert_eq!(permissions_of("").unwrap(), vec![]);
        assert!(permissions_of("ENCRYPT,FLY").is_err());
    }

    #[test]
    fn every_key_operation_but_appmanageable_needs_its_permission() {
        for op in KeyOp::ALL {
            assert_eq!(
                AppPermission::for_op(op).is_none(),
                op == KeyOp::AppManageable
            );
        }
    }
}
