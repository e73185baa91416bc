//! Sessions and failed logins (catalog version 10): shared by every daemon on the catalog.
//! Tokens are stored as their SHA-256 only; so are the account names of failed logins.

use super::db::{self, Row};
use super::{Conn, Result};

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub token_hash: Vec<u8>,
    /// `user` or `app`.
    pub principal_kind: String,
    pub principal_id: String,
    /// The user's email or the application's name.
    pub principal_name: String,
    pub account_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// The SHA-256 of the client certificate the session logged in with (catalog version
    /// 11): every request on it must present that certificate.
    pub client_cert_sha256: Option<Vec<u8>>,
}

fn from_row(r: &Row) -> SessionRow {
    SessionRow {
        token_hash: r.get("token_hash"),
        principal_kind: r.get("principal_kind"),
        principal_id: r.get("principal_id"),
        principal_name: r.get("principal_name"),
        account_id: r.get("account_id"),
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
        client_cert_sha256: r.get("client_cert_sha256"),
    }
}

pub async fn insert(c: &mut Conn, s: &SessionRow) -> Result<()> {
    db::query(
        "INSERT INTO sessions (token_hash, principal_kind, principal_id, principal_name, account_id, created_at, expires_at, client_cert_sha256)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&s.token_hash)
    .bind(&s.principal_kind)
    .bind(&s.principal_id)
    .bind(&s.principal_name)
    .bind(&s.account_id)
    .bind(s.created_at)
    .bind(s.expires_at)
    .bind(&s.client_cert_sha256)
    .execute(c)
    .await?;
    Ok(())
}

/// The session of a token hash, if it has not expired at `now`.
pub async fn live(c: &mut Conn, token_hash: &[u8], now: i64) -> Result<Option<SessionRow>> {
    Ok(
        db::query("SELECT * FROM sessions WHERE token_hash = ? AND expires_at > ?")
            .bind(token_hash)
            .bind(now)
            .fetch_optional(c)
            .await?
            .as_ref()
            .map(from_row),
    )
}

/// Extends a live session to `expires_at`; false when it is gone or expired.
pub async fn extend(c: &mut Conn, token_hash: &[u8], now: i64, expires_at: i64) -> Result<bool> {
    Ok(
        db::query("UPDATE sessions SET expires_at = ? WHERE token_hash = ? AND expires_at > ?")
            .bind(expires_at)
            .bind(token_hash)
            .bind(now)
            .execute(c)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Moves a live session to another account; false when it is gone or expired.
pub async fn set_account(c: &mut Conn, token_hash: &[u8], now: i64, account: &str) -> Result<bool> {
    Ok(
        db::query("UPDATE sessions SET account_id = ? WHERE token_hash = ? AND expires_at > ?")
            .bind(account)
            .bind(token_hash)
            .bind(now)
            .execute(c)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Ends one session; false when there was none.
pub async fn delete(c: &mut Conn, token_hash: &[u8]) -> Result<bool> {
    Ok(db::query("DELETE FROM sessions WHERE token_hash = ?")
        .bind(token_hash)
        .execute(c)
        .await?
        .rows_affected()
        == 1)
}

/// Ends every session of a user or application.
pub async fn delete_of(c: &mut Conn, principal_id: &str) -> Result<u64> {
    Ok(db::query("DELETE FROM sessions WHERE principal_id = ?")
        .bind(principal_id)
        .execute(c)
        .await?
        .rows_affected())
}

/// Forgets sessions that expired before `now`, and failed logins older than `since`.
pub async fn purge(c: &mut Conn, now: i64, since: i64) -> Result<()> {
    db::query("DELETE FROM sessions WHERE expires_at <= ?")
        .bind(now)
        .execute(&mut *c)
        .await?;
    db::query("DELETE FROM login_failures WHERE at <= ?")
        .bind(since)
        .execute(c)
        .await?;
    Ok(())
}

/// What a failed login is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Name,
    Address,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Name => "name",
            Scope::Address => "address",
        }
    }
}

pub async fn record_failure(c: &mut Conn, scope: Scope, subject: &[u8], at: i64) -> Result<()> {
    db::query("INSERT INTO login_failures (scope, subject, at) VALUES (?, ?, ?)")
        .bind(scope.as_str())
        .bind(subject)
        .bind(at)
        .execute(c)
        .await?;
    Ok(())
}

/// The times of the newest `limit` failures of a subject after `since`, newest first.
pub async fn recent_failures(
    c: &mut Conn,
    scope: Scope,
    subject: &[u8],
    since: i64,
    limit: usize,
) -> Result<Vec<i64>> {
    Ok(db::query(
        "SELECT at FROM login_failures WHERE scope = ? AND subject = ? AND at > ? ORDER BY at DESC LIMIT ?",
    )
    .bind(scope.as_str())
    .bind(subject)
    .bind(since)
    .bind(limit as i64)
    .fetch_all(c)
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

pub async fn clear_failures(c: &mut Conn, scope: Scope, subject: &[u8]) -> Result<()> {
    db::query("DELETE FROM login_failures WHERE scope = ? AND subject = ?")
        .bind(scope.as_str())
        .bind(subject)
        .execute(c)
        .await?;
    Ok(())
}
