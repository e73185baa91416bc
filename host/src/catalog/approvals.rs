//! Quorum approval (catalog versions 12 and 13): the policies of groups and accounts in DSM's
//! shape (`GroupApprovalPolicy`, `AccountApprovalPolicy`: a `QuorumPolicy` tree and what it
//! protects), and approval requests with their reviewers' votes. A request's result may hold secrets (an exported key, a
//! decrypted plaintext): it is stored sealed.

use serde::{Deserialize, Serialize};

use super::db::{self, Row};
use super::{CatalogError, Conn, Result};

/// DSM's `QuorumPolicy`: exactly one of a quorum of members (themselves policies), a user, or
/// an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuorumPolicy {
    Quorum(Quorum),
    User(String),
    App(String),
}

/// `n` of `members` must approve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quorum {
    pub n: u32,
    pub members: Vec<QuorumPolicy>,
    /// Reviewers who are users give their password again to approve.
    #[serde(default)]
    pub require_password: bool,
}

/// What a group's approval policy protects (DSM's `QuorumGroupPermissions`, the ones that
/// name operations Keyward has).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Protected {
    RotateSobjects,
    /// Revoke, compromise and deactivate.
    RevokeSobjects,
    ActivateSobjects,
    DestroySobjects,
    DeleteSobjects,
    /// Purge an HSM key's material.
    DeleteKeyMaterial,
    UpdateSobjectsProfile,
    UpdateSobjectsEnabledState,
    UpdateKeyOps,
    ExportSobjects,
}

/// DSM's `GroupApprovalPolicy`: the policy tree, and what it protects in the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupApprovalPolicy {
    #[serde(flatten)]
    pub policy: QuorumPolicy,
    #[serde(default)]
    pub protect_permissions: Vec<Protected>,
    /// Every cryptographic operation with the group's keys needs approval.
    #[serde(default)]
    pub protect_crypto_operations: bool,
    /// Keyward's: a requester the policy names counts towards their own request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_self_approval: bool,
}

/// What an account's approval policy protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountProtected {
    /// Creating and deleting groups (DSM's `manage_groups`).
    ManageGroups,
    /// Applications' credentials: a new API key, certificate or trusted CA.
    AuthenticationMethods,
    /// The account's cryptographic policy.
    CryptographicPolicy,
    /// Where the account's events go: its notification endpoints.
    LoggingConfig,
}

/// DSM's `AccountApprovalPolicy`: the policy tree under `policy`, and what it protects.
/// Changing or removing the policy itself (or the account's request expiry) always needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountApprovalPolicy {
    pub policy: QuorumPolicy,
    #[serde(default)]
    pub manage_groups: bool,
    #[serde(default)]
    pub protect_authentication_methods: bool,
    #[serde(default)]
    pub protect_cryptographic_policy: bool,
    #[serde(default)]
    pub protect_logging_config: bool,
    /// Keyward's: a requester the policy names counts towards their own request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_self_approval: bool,
}

impl AccountApprovalPolicy {
    pub fn protects(&self, what: AccountProtected) -> bool {
        match what {
            AccountProtected::ManageGroups => self.manage_groups,
            AccountProtected::AuthenticationMethods => self.protect_authentication_methods,
            AccountProtected::CryptographicPolicy => self.protect_cryptographic_policy,
            AccountProtected::LoggingConfig => self.protect_logging_config,
        }
    }
}

/// DSM's `ApprovalStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Approved => "APPROVED",
            Status::Denied => "DENIED",
            Status::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Approved,
            Status::Denied,
            Status::Failed,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// A user or an application, as the catalog names principals (`user`/`app`, id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reviewer {
    User(String),
    App(String),
}

impl Reviewer {
    pub fn of(p: &crate::auth::Principal) -> Reviewer {
        match p {
            crate::auth::Principal::User { user_id, .. } => Reviewer::User(user_id.clone()),
            crate::auth::Principal::App { app_id, .. } => Reviewer::App(app_id.clone()),
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Reviewer::User(id) | Reviewer::App(id) => id,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequest {
    pub id: String,
    pub account_id: String,
    pub requester: Reviewer,
    pub created_at: i64,
    pub expires_at: i64,
    /// The HTTP method and path of the operation, and its JSON body.
    pub method: String,
    pub operation: String,
    pub body: Option<String>,
    pub description: Option<String>,
    /// The group whose policy the operation needs, if any.
    pub group_id: Option<String>,
    /// Whether the account's policy must approve it too (or alone, without a group).
    pub account_policy: bool,
    pub status: Status,
    pub denier: Option<Reviewer>,
    pub denial_reason: Option<String>,
    /// The operation's HTTP status and sealed JSON answer, once it ran.
    pub result_status: Option<i64>,
    pub result_sealed: Option<Vec<u8>>,
    pub result_viewed: bool,
}

/// How long a request waits for its quorum unless its account says otherwise (DSM's
/// default).
pub const EXPIRY_SECS: i64 = 30 * 86_400;

/// What a request asks to have done: an API call as its requester would make it.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub method: String,
    /// The path, e.g. `/crypto/v1/keys/rekey`.
    pub path: String,
    /// The JSON body.
    pub body: Option<String>,
    pub description: Option<String>,
}

/// Whose policies decide a request: a group's, the account's, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    pub group_id: Option<String>,
    pub account: bool,
}

impl Subjects {
    pub fn group(id: &str) -> Subjects {
        Subjects {
            group_id: Some(id.to_string()),
            account: false,
        }
    }
}

impl ApprovalRequest {
    /// A new pending request of `requester`, waiting `expiry_secs` for its quorum.
    pub fn new(
        account_id: &str,
        requester: Reviewer,
        op: Operation,
        subjects: Subjects,
        now: i64,
        expiry_secs: i64,
    ) -> ApprovalRequest {
        ApprovalRequest {
            id: super::new_id(),
            account_id: account_id.to_string(),
            requester,
            created_at: now,
            expires_at: now + expiry_secs,
            method: op.method,
            operation: op.path,
            body: op.body,
            description: op.description,
            group_id: subjects.group_id,
            account_policy: subjects.account,
            status: Status::Pending,
            denier: None,
            denial_reason: None,
            result_status: None,
            result_sealed: None,
            result_viewed: false,
        }
    }
}

/// The sealing context of a request's result.
pub fn result_context(id: &str) -> String {
    format!("approval_request:{id}:result")
}

fn reviewer_of(kind: &str, id: String) -> Result<Reviewer> {
    match kind {
        "user" => Ok(Reviewer::User(id)),
        "app" => Ok(Reviewer::App(id)),
        other => Err(CatalogError::Corrupt(format!("principal kind '{other}'"))),
    }
}

fn kind_of(r: &Reviewer) -> &'static str {
    match r {
        Reviewer::User(_) => "user",
        Reviewer::App(_) => "app",
    }
}

fn from_row(r: &Row) -> Result<ApprovalRequest> {
    let status: String = r.get("status");
    let requester_kind: String = r.get("requester_kind");
    let denier_kind: Option<String> = r.get("denier_kind");
    let denier_id: Option<String> = r.get("denier_id");
    Ok(ApprovalRequest {
        id: r.get("id"),
        account_id: r.get("account_id"),
        requester: reviewer_of(&requester_kind, r.get("requester_id"))?,
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
        method: r.get("method"),
        operation: r.get("operation"),
        body: r.get("body"),
        description: r.get("description"),
        group_id: r.get("group_id"),
        account_policy: r.get("account_policy"),
        status: Status::parse(&status)
            .ok_or_else(|| CatalogError::Corrupt(format!("approval status '{status}'")))?,
        denier: match (denier_kind, denier_id) {
            (Some(k), Some(id)) => Some(reviewer_of(&k, id)?),
            _ => None,
        },
        denial_reason: r.get("denial_reason"),
        result_status: r.get("result_status"),
        result_sealed: r.get("result_sealed"),
        result_viewed: r.get("result_viewed"),
    })
}

pub async fn insert(c: &mut Conn, a: &ApprovalRequest) -> Result<()> {
    db::query(
        "INSERT INTO approval_requests (id, account_id, requester_kind, requester_id, created_at, expires_at, method, operation,
                                        body, description, group_id, account_policy, status, result_viewed)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&a.id)
    .bind(&a.account_id)
    .bind(kind_of(&a.requester))
    .bind(a.requester.id())
    .bind(a.created_at)
    .bind(a.expires_at)
    .bind(&a.method)
    .bind(&a.operation)
    .bind(&a.body)
    .bind(&a.description)
    .bind(&a.group_id)
    .bind(a.account_policy)
    .bind(a.status.as_str())
    .bind(a.result_viewed)
    .execute(c)
    .await?;
    Ok(())
}

/// A request of `account`.
pub async fn get(c: &mut Conn, account: &str, id: &str) -> Result<Option<ApprovalRequest>> {
    db::query("SELECT * FROM approval_requests WHERE id = ? AND account_id = ?")
        .bind(id)
        .bind(account)
        .fetch_optional(c)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The requests of `account`, newest first, optionally of one status.
pub async fn list(
    c: &mut Conn,
    account: &str,
    status: Option<Status>,
) -> Result<Vec<ApprovalRequest>> {
    let rows = match status {
        Some(s) => {
            db::query("SELECT * FROM approval_requests WHERE account_id = ? AND status = ? ORDER BY created_at DESC, id")
                .bind(account)
                .bind(s.as_str())
                .fetch_all(c)
                .await?
        }
        None => {
            db::query(
                "SELECT * FROM approval_requests WHERE account_id = ? ORDER BY created_at DESC, id",
            )
            .bind(account)
            .fetch_all(c)
            .await?
        }
    };
    rows.iter().map(from_row).collect()
}

/// Records a reviewer's approval; false when they had approved already.
pub async fn vote(c: &mut Conn, id: &str, who: &Reviewer, at: i64) -> Result<bool> {
    Ok(db::query(
        "INSERT INTO approval_votes (request_id, principal_kind, principal_id, at) VALUES (?, ?, ?, ?)
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(kind_of(who))
    .bind(who.id())
    .bind(at)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

/// Who approved a request, in order.
pub async fn approvers(c: &mut Conn, id: &str) -> Result<Vec<Reviewer>> {
    let rows = db::query(
        "SELECT principal_kind, principal_id FROM approval_votes WHERE request_id = ? ORDER BY at, principal_id",
    )
    .bind(id)
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            let kind: String = r.get("principal_kind");
            reviewer_of(&kind, r.get("principal_id"))
        })
        .collect()
}

/// Moves a pending request to `status` at `at` (compare-and-swap: of several daemons
/// deciding at once, one wins); false when it was no longer pending.
pub async fn decide(
    c: &mut Conn,
    id: &str,
    status: Status,
    denier: Option<&Reviewer>,
    reason: Option<&str>,
    at: i64,
) -> Result<bool> {
    Ok(db::query(
        "UPDATE approval_requests SET status = ?, denier_kind = ?, denier_id = ?, denial_reason = ?, decided_at = ?
         WHERE id = ? AND status = 'PENDING'",
    )
    .bind(status.as_str())
    .bind(denier.map(kind_of))
    .bind(denier.map(|d| d.id().to_string()))
    .bind(reason)
    .bind(at)
    .bind(id)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

/// Stores what the approved operation answered (sealed), and FAILED when it was refused.
pub async fn set_result(
    c: &mut Conn,
    id: &str,
    status: Status,
    http_status: i64,
    sealed: &[u8],
) -> Result<()> {
    db::query(
        "UPDATE approval_requests SET status = ?, result_status = ?, result_sealed = ? WHERE id = ?",
    )
    .bind(status.as_str())
    .bind(http_status)
    .bind(sealed)
    .bind(id)
    .execute(c)
    .await?;
    Ok(())
}

/// Requests approved before `before` whose operation never reported back.
pub async fn unreported(c: &mut Conn, before: i64) -> Result<Vec<ApprovalRequest>> {
    let rows = db::query(
        "SELECT * FROM approval_requests
         WHERE status = 'APPROVED' AND result_status IS NULL AND decided_at < ? LIMIT 100",
    )
    .bind(before)
    .fetch_all(c)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Settles an approved request that never reported back as FAILED with `sealed` as its
/// result, unless its operation reported meanwhile; false then.
pub async fn settle_unreported(c: &mut Conn, id: &str, sealed: &[u8]) -> Result<bool> {
    Ok(db::query(
        "UPDATE approval_requests SET status = 'FAILED', result_status = 500, result_sealed = ?
         WHERE id = ? AND status = 'APPROVED' AND result_status IS NULL",
    )
    .bind(sealed)
    .bind(id)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

/// Marks the result read; false when it had been (a result is read once).
pub async fn mark_viewed(c: &mut Conn, id: &str) -> Result<bool> {
    Ok(db::query(
        "UPDATE approval_requests SET result_viewed = ? WHERE id = ? AND NOT result_viewed AND result_status IS NOT NULL",
    )
    .bind(true)
    .bind(id)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

pub async fn delete(c: &mut Conn, id: &str) -> Result<()> {
    db::query("DELETE FROM approval_requests WHERE id = ?")
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}
