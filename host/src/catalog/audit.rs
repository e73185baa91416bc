//! The audit log: who did what to which object, when, and with what outcome. Never secret.

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{Conn, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub id: i64,
    pub account_id: Option<String>,
    pub at: i64,
    /// `user`, `app` or `system`.
    pub actor_kind: String,
    pub actor_id: String,
    /// E.g. `key.create`, `key.encrypt`, `group.update`, `session.auth`.
    pub action: String,
    pub object_kind: Option<String>,
    pub object_id: Option<String>,
    /// `success`, `denied`, `failure`.
    pub outcome: String,
    pub message: Option<String>,
    pub details: Option<serde_json::Value>,
}

fn from_row(r: &SqliteRow) -> AuditEvent {
    let details: Option<String> = r.get("details");
    AuditEvent {
        id: r.get("id"),
        account_id: r.get("account_id"),
        at: r.get("at"),
        actor_kind: r.get("actor_kind"),
        actor_id: r.get("actor_id"),
        action: r.get("action"),
        object_kind: r.get("object_kind"),
        object_id: r.get("object_id"),
        outcome: r.get("outcome"),
        message: r.get("message"),
        details: details.and_then(|d| serde_json::from_str(&d).ok()),
    }
}

pub async fn insert(c: &mut Conn, e: &AuditEvent) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_events (account_id, at, actor_kind, actor_id, action, object_kind, object_id, outcome, message, details)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&e.account_id)
    .bind(e.at)
    .bind(&e.actor_kind)
    .bind(&e.actor_id)
    .bind(&e.action)
    .bind(&e.object_kind)
    .bind(&e.object_id)
    .bind(&e.outcome)
    .bind(&e.message)
    .bind(e.details.as_ref().map(|d| d.to_string()))
    .execute(c)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub account_id: String,
    pub action: Option<String>,
    pub actor_id: Option<String>,
    pub object_id: Option<String>,
    pub outcome: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: u32,
    pub offset: u32,
}

/// Newest first.
pub async fn query(c: &mut Conn, f: &AuditFilter) -> Result<Vec<AuditEvent>> {
    let mut q: QueryBuilder<Sqlite> =
        QueryBuilder::new("SELECT * FROM audit_events WHERE account_id = ");
    q.push_bind(f.account_id.clone());
    if let Some(a) = &f.action {
        if let Some(prefix) = a.strip_suffix('*') {
            q.push(" AND action LIKE ").push_bind(format!("{prefix}%"));
        } else {
            q.push(" AND action = ").push_bind(a.clone());
        }
    }
    if let Some(a) = &f.actor_id {
        q.push(" AND actor_id = ").push_bind(a.clone());
    }
    if let Some(o) = &f.object_id {
        q.push(" AND object_id = ").push_bind(o.clone());
    }
    if let Some(o) = &f.outcome {
        q.push(" AND outcome = ").push_bind(o.clone());
    }
    if let Some(t) = f.from {
        q.push(" AND at >= ").push_bind(t);
    }
    if let Some(t) = f.to {
        q.push(" AND at <= ").push_bind(t);
    }
    q.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(f.limit))
        .push(" OFFSET ")
        .push_bind(i64::from(f.offset));
    Ok(q.build().fetch_all(c).await?.iter().map(from_row).collect())
}
