//! Applications: authenticate with an API key (checked against a SHA-256 hash of its
//! secret; the secret itself is kept sealed under the master key for its administrators to
//! read again), belong to groups, and are the only principals that perform cryptographic
//! operations.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Conn, Result};

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
    pub groups: Vec<String>,
}

/// The sealing context of an application's secret: a sealed secret opens only as its own.
pub fn secret_context(app_id: &str) -> String {
    format!("app-secret:{app_id}")
}

fn from_row(r: &SqliteRow) -> App {
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
        groups: vec![],
    }
}

async fn with_groups(c: &mut Conn, mut app: App) -> Result<App> {
    app.groups = groups_of(c, &app.id).await?;
    Ok(app)
}

pub async fn insert(c: &mut Conn, a: &App) -> Result<()> {
    sqlx::query(
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
    sqlx::query("UPDATE apps SET name = ?, description = ?, api_key_hash = ?, api_secret_sealed = ?, enabled = ?, default_group = ? WHERE id = ? AND account_id = ?")
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
async fn set_groups(c: &mut Conn, account: &str, app: &str, groups: &[String]) -> Result<()> {
    sqlx::query("DELETE FROM app_groups WHERE app_id = ?")
        .bind(app)
        .execute(&mut *c)
        .await?;
    for g in groups {
        sqlx::query(
            "INSERT INTO app_groups (app_id, group_id) SELECT ?, id FROM groups WHERE id = ? AND account_id = ?",
        )
        .bind(app)
        .bind(g)
        .bind(account)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

pub async fn groups_of(c: &mut Conn, app: &str) -> Result<Vec<String>> {
    Ok(
        sqlx::query("SELECT group_id FROM app_groups WHERE app_id = ? ORDER BY group_id")
            .bind(app)
            .fetch_all(c)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect(),
    )
}

/// An application of `account`.
pub async fn get(c: &mut Conn, account: &str, id: &str) -> Result<Option<App>> {
    match sqlx::query("SELECT * FROM apps WHERE id = ? AND account_id = ?")
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
    match sqlx::query("SELECT * FROM apps WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
    {
        Some(r) => Ok(Some(with_groups(c, from_row(&r)).await?)),
        None => Ok(None),
    }
}

pub async fn in_account(c: &mut Conn, account: &str) -> Result<Vec<App>> {
    let rows = sqlx::query("SELECT * FROM apps WHERE account_id = ? ORDER BY name")
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
    sqlx::query("DELETE FROM apps WHERE id = ? AND account_id = ?")
        .bind(id)
        .bind(account)
        .execute(c)
        .await?;
    Ok(())
}
