//! Users: identified by email, logging in with a password (stored as an argon2 hash).

use crate::catalog::db::{self, Row};

use super::accounts::AccountRole;
use super::{Conn, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: String,
    pub email: String,
    /// PHC string (argon2id). Never leaves the catalog.
    pub password_hash: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub created_at: i64,
    pub last_login: Option<i64>,
}

fn from_row(r: &Row) -> User {
    User {
        id: r.get("id"),
        email: r.get("email"),
        password_hash: r.get("password_hash"),
        first_name: r.get("first_name"),
        last_name: r.get("last_name"),
        created_at: r.get("created_at"),
        last_login: r.get("last_login"),
    }
}

pub async fn count(c: &mut Conn) -> Result<i64> {
    Ok(db::query("SELECT COUNT(*) FROM users")
        .fetch_one(c)
        .await?
        .get(0))
}

pub async fn insert(c: &mut Conn, u: &User) -> Result<()> {
    db::query("INSERT INTO users (id, email, password_hash, first_name, last_name, created_at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(&u.first_name)
        .bind(&u.last_name)
        .bind(u.created_at)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn get(c: &mut Conn, id: &str) -> Result<Option<User>> {
    Ok(db::query("SELECT * FROM users WHERE id = ?")
        .bind(id)
        .fetch_optional(c)
        .await?
        .as_ref()
        .map(from_row))
}

pub async fn get_by_email(c: &mut Conn, email: &str) -> Result<Option<User>> {
    Ok(
        db::query("SELECT * FROM users WHERE lower(email) = lower(?)")
            .bind(email)
            .fetch_optional(c)
            .await?
            .as_ref()
            .map(from_row),
    )
}

pub async fn update(c: &mut Conn, u: &User) -> Result<()> {
    db::query("UPDATE users SET first_name = ?, last_name = ?, password_hash = ? WHERE id = ?")
        .bind(&u.first_name)
        .bind(&u.last_name)
        .bind(&u.password_hash)
        .bind(&u.id)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn set_last_login(c: &mut Conn, id: &str, at: i64) -> Result<()> {
    db::query("UPDATE users SET last_login = ? WHERE id = ?")
        .bind(at)
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// Members of an account with their roles.
pub async fn in_account(c: &mut Conn, account: &str) -> Result<Vec<(User, AccountRole)>> {
    let rows = db::query("SELECT u.*, m.role FROM users u JOIN account_members m ON m.user_id = u.id WHERE m.account_id = ? ORDER BY u.email")
        .bind(account)
        .fetch_all(c)
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((from_row(r), AccountRole::parse(r.get("role"))?)))
        .collect())
}
