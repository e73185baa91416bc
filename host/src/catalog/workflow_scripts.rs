//! An account's versions of workflow scripts: append-only, the newest in use. A version
//! without a source records that the account went back to the daemon's script.

use crate::catalog::db::{self, Row};

use super::{Conn, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct ScriptVersion {
    pub account_id: String,
    pub name: String,
    /// 1, 2, ... per account and name.
    pub version: i64,
    /// `None`: from this version on, the account runs the daemon's script.
    pub source: Option<String>,
    /// `user:<id>` or `app:<id>`.
    pub author: String,
    pub created_at: i64,
    pub restored_from: Option<i64>,
    pub comment: Option<String>,
}

/// A version to add (its number is the next one).
pub struct NewVersion<'a> {
    pub account_id: &'a str,
    pub name: &'a str,
    pub source: Option<&'a str>,
    pub author: &'a str,
    pub created_at: i64,
    pub restored_from: Option<i64>,
    pub comment: Option<&'a str>,
}

fn from_row(r: &Row) -> ScriptVersion {
    ScriptVersion {
        account_id: r.get("account_id"),
        name: r.get("name"),
        version: r.get("version"),
        source: r.get("source"),
        author: r.get("author"),
        created_at: r.get("created_at"),
        restored_from: r.get("restored_from"),
        comment: r.get("comment"),
    }
}

macro_rules! columns {
    () => {
        "account_id, name, version, source, author, created_at, restored_from, comment"
    };
}

/// Adds the next version of a script (inside the caller's transaction, which is `BEGIN
/// IMMEDIATE`: two puts cannot take the same number).
pub async fn insert(c: &mut Conn, v: &NewVersion<'_>) -> Result<ScriptVersion> {
    let row = db::query(concat!(
        "INSERT INTO workflow_scripts (",
        columns!(),
        ") SELECT ?, ?, COALESCE(MAX(version), 0) + 1, ?, ?, ?, ?, ?
           FROM workflow_scripts WHERE account_id = ? AND name = ?
         RETURNING ",
        columns!()
    ))
    .bind(v.account_id)
    .bind(v.name)
    .bind(v.source)
    .bind(v.author)
    .bind(v.created_at)
    .bind(v.restored_from)
    .bind(v.comment)
    .bind(v.account_id)
    .bind(v.name)
    .fetch_one(&mut *c)
    .await?;
    Ok(from_row(&row))
}

/// The versions of one script of an account, newest first.
pub async fn versions(c: &mut Conn, account_id: &str, name: &str) -> Result<Vec<ScriptVersion>> {
    let rows = db::query(concat!(
        "SELECT ",
        columns!(),
        " FROM workflow_scripts WHERE account_id = ? AND name = ? ORDER BY version DESC"
    ))
    .bind(account_id)
    .bind(name)
    .fetch_all(&mut *c)
    .await?;
    Ok(rows.iter().map(from_row).collect())
}

pub async fn get(
    c: &mut Conn,
    account_id: &str,
    name: &str,
    version: i64,
) -> Result<Option<ScriptVersion>> {
    let row = db::query(concat!(
        "SELECT ",
        columns!(),
        " FROM workflow_scripts WHERE account_id = ? AND name = ? AND version = ?"
    ))
    .bind(account_id)
    .bind(name)
    .bind(version)
    .fetch_optional(&mut *c)
    .await?;
    Ok(row.as_ref().map(from_row))
}

/// The version in use of every script of every account (what the daemon loads at start).
/// The versions in use of one account's scripts.
pub async fn current_of(c: &mut Conn, account: &str) -> Result<Vec<ScriptVersion>> {
    let rows = db::query(concat!(
        "SELECT ",
        columns!(),
        " FROM workflow_scripts w
          WHERE account_id = ? AND version = (SELECT MAX(version) FROM workflow_scripts
                            WHERE account_id = w.account_id AND name = w.name)"
    ))
    .bind(account)
    .fetch_all(&mut *c)
    .await?;
    Ok(rows.iter().map(from_row).collect())
}

pub async fn current_all(c: &mut Conn) -> Result<Vec<ScriptVersion>> {
    let rows = db::query(concat!(
        "SELECT ",
        columns!(),
        " FROM workflow_scripts w
          WHERE version = (SELECT MAX(version) FROM workflow_scripts
                            WHERE account_id = w.account_id AND name = w.name)"
    ))
    .fetch_all(&mut *c)
    .await?;
    Ok(rows.iter().map(from_row).collect())
}
