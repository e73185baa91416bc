//! Accounts (the top-level, fully isolated containers) and their members.

use crate::catalog::db::{self, Row};

use super::{CatalogError, Conn, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: i64,
    pub created_by: Option<String>,
    /// JSON document for the crypto-policy plugin, applying to every group of the account.
    pub crypto_policy: Option<String>,
    /// DSM's `approval_policy`: what needs a quorum's approval in the account, and whose.
    pub approval_policy: Option<super::approvals::AccountApprovalPolicy>,
    /// How long the account's approval requests wait, in seconds (default 30 days).
    pub approval_request_expiry: Option<i64>,
}

impl Account {
    /// How long a new approval request of the account waits for its quorum.
    pub fn request_expiry(&self) -> i64 {
        self.approval_request_expiry
            .unwrap_or(super::approvals::EXPIRY_SECS)
    }
}

/// A user's role in an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountRole {
    Administrator,
    Member,
    Auditor,
}

impl AccountRole {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountRole::Administrator => "administrator",
            AccountRole::Member => "member",
            AccountRole::Auditor => "auditor",
        }
    }

    /// DSM's account flag for the role (`account_role` on the DSM wire is a list of flags).
    pub fn dsm_flag(self) -> &'static str {
        match self {
            AccountRole::Administrator => "ACCOUNTADMINISTRATOR",
            AccountRole::Member => "ACCOUNTMEMBER",
            AccountRole::Auditor => "ACCOUNTAUDITOR",
        }
    }

    pub fn from_dsm_flag(flag: &str) -> Option<AccountRole> {
        [
            AccountRole::Administrator,
            AccountRole::Member,
            AccountRole::Auditor,
        ]
        .into_iter()
        .find(|r| r.dsm_flag() == flag)
    }

    pub fn parse(s: &str) -> Option<AccountRole> {
        match s {
            "administrator" => Some(AccountRole::Administrator),
            "member" => Some(AccountRole::Member),
            "auditor" => Some(AccountRole::Auditor),
            _ => None,
        }
    }
}

fn from_row(r: &Row) -> Result<Account> {
    Ok(Account {
        id: r.get("id"),
        name: r.get("name"),
        description: r.get("description"),
        created_at: r.get("created_at"),
        created_by: r.get("created_by"),
        crypto_policy: r.get("crypto_policy"),
        approval_policy: match r.get::<Option<String>, _>("approval_policy") {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
                CatalogError::Corrupt(format!("an account's approval policy: {e}"))
            })?),
            None => None,
        },
        approval_request_expiry: r.get("approval_request_expiry"),
    })
}

fn policy_json(p: &super::approvals::AccountApprovalPolicy) -> String {
    serde_json::to_string(p).expect("a policy serializes")
}

pub async fn insert(c: &mut Conn, a: &Account) -> Result<()> {
    db::query("INSERT INTO accounts (id, name, description, created_at, created_by, crypto_policy, approval_policy, approval_request_expiry)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        .bind(&a.id)
        .bind(&a.name)
        .bind(&a.description)
        .bind(a.created_at)
        .bind(&a.created_by)
        .bind(&a.crypto_policy)
        .bind(a.approval_policy.as_ref().map(policy_json))
        .bind(a.approval_request_expiry)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn get(c: &mut Conn, id: &str) -> Result<Option<Account>> {
    db::query("SELECT * FROM accounts WHERE id = ?")
        .bind(id)
        .fetch_optional(c)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn update(c: &mut Conn, a: &Account) -> Result<()> {
    db::query("UPDATE accounts SET name = ?, description = ?, crypto_policy = ?, approval_policy = ?, approval_request_expiry = ?
               WHERE id = ?")
        .bind(&a.name)
        .bind(&a.description)
        .bind(&a.crypto_policy)
        .bind(a.approval_policy.as_ref().map(policy_json))
        .bind(a.approval_request_expiry)
        .bind(&a.id)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn delete(c: &mut Conn, id: &str) -> Result<()> {
    db::query("DELETE FROM accounts WHERE id = ?")
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// The accounts a user belongs to, with the user's role in each.
pub async fn for_user(c: &mut Conn, user_id: &str) -> Result<Vec<(Account, AccountRole)>> {
    let rows = db::query(
        "SELECT a.*, m.role FROM accounts a JOIN account_members m ON m.account_id = a.id WHERE m.user_id = ? ORDER BY a.created_at",
    )
    .bind(user_id)
    .fetch_all(c)
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        if let Some(role) = AccountRole::parse(r.get("role")) {
            out.push((from_row(r)?, role));
        }
    }
    Ok(out)
}

pub async fn set_member(
    c: &mut Conn,
    account: &str,
    user: &str,
    role: AccountRole,
    at: i64,
) -> Result<()> {
    db::query(
        "INSERT INTO account_members (account_id, user_id, role, added_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (account_id, user_id) DO UPDATE SET role = excluded.role",
    )
    .bind(account)
    .bind(user)
    .bind(role.as_str())
    .bind(at)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn remove_member(c: &mut Conn, account: &str, user: &str) -> Result<()> {
    db::query("DELETE FROM account_members WHERE account_id = ? AND user_id = ?")
        .bind(account)
        .bind(user)
        .execute(&mut *c)
        .await?;
    // Group roles in the account go with the membership.
    db::query("DELETE FROM group_members WHERE user_id = ? AND group_id IN (SELECT id FROM groups WHERE account_id = ?)")
        .bind(user)
        .bind(account)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn member_role(c: &mut Conn, account: &str, user: &str) -> Result<Option<AccountRole>> {
    let row = db::query("SELECT role FROM account_members WHERE account_id = ? AND user_id = ?")
        .bind(account)
        .bind(user)
        .fetch_optional(c)
        .await?;
    Ok(row.and_then(|r| AccountRole::parse(r.get("role"))))
}

pub async fn count_administrators(c: &mut Conn, account: &str) -> Result<i64> {
    Ok(db::query(
        "SELECT COUNT(*) FROM account_members WHERE account_id = ? AND role = 'administrator'",
    )
    .bind(account)
    .fetch_one(c)
    .await?
    .get(0))
}
