//! The audit log: who did what to which object, when, and with what outcome. Never secret.

use crate::catalog::db::{self, Row};

use super::{Conn, Result};

/// DSM's classification of an audit event. Derived from the action when the event is
/// written (and stored, so the log can be filtered by it); migration 7 applies the same rule
/// to older rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionType {
    Administrative,
    Auth,
    CryptoOperation,
    RunPlugin,
    /// Events a workflow script records itself (`audit::record`).
    Custom,
    Other,
}

impl ActionType {
    pub const ALL: [ActionType; 6] = [
        ActionType::Administrative,
        ActionType::Auth,
        ActionType::CryptoOperation,
        ActionType::RunPlugin,
        ActionType::Custom,
        ActionType::Other,
    ];

    pub fn of(action: &str) -> ActionType {
        match action {
            "key.encrypt" | "key.decrypt" | "key.sign" | "key.verify" | "key.wrapkey"
            | "key.unwrapkey" | "key.export" => ActionType::CryptoOperation,
            a if a.starts_with("session.") => ActionType::Auth,
            a if a.starts_with("workflow.") => ActionType::Custom,
            _ => ActionType::Administrative,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ActionType::Administrative => "ADMINISTRATIVE",
            ActionType::Auth => "AUTH",
            ActionType::CryptoOperation => "CRYPTOOPERATION",
            ActionType::RunPlugin => "RUNPLUGIN",
            ActionType::Custom => "CUSTOM",
            ActionType::Other => "OTHER",
        }
    }

    pub fn parse(s: &str) -> Option<ActionType> {
        ActionType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

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

fn from_row(r: &Row) -> AuditEvent {
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

impl AuditEvent {
    pub fn action_type(&self) -> ActionType {
        ActionType::of(&self.action)
    }
}

pub async fn insert(c: &mut Conn, e: &AuditEvent) -> Result<()> {
    db::query(
        "INSERT INTO audit_events (account_id, at, actor_kind, actor_id, action, action_type, object_kind, object_id, outcome, message, details)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&e.account_id)
    .bind(e.at)
    .bind(&e.actor_kind)
    .bind(&e.actor_id)
    .bind(&e.action)
    .bind(e.action_type().as_str())
    .bind(&e.object_kind)
    .bind(&e.object_id)
    .bind(&e.outcome)
    .bind(&e.message)
    .bind(e.details.as_ref().map(|d| d.to_string()))
    .execute(c)
    .await?;
    Ok(())
}

/// Inserts events in one statement per 500 (the audit writer's batches: one round trip to
/// the database instead of one per event).
pub async fn insert_many(c: &mut Conn, events: &[&AuditEvent]) -> Result<()> {
    for chunk in events.chunks(500) {
        let mut q = db::Builder::new(
            "INSERT INTO audit_events (account_id, at, actor_kind, actor_id, action, action_type, object_kind, object_id, outcome, message, details) VALUES ",
        );
        for (n, e) in chunk.iter().enumerate() {
            q.push(if n == 0 { "(" } else { ", (" });
            let mut v = q.separated(", ");
            v.push_bind(e.account_id.clone())
                .push_bind(e.at)
                .push_bind(e.actor_kind.clone())
                .push_bind(e.actor_id.clone())
                .push_bind(e.action.clone())
                .push_bind(e.action_type().as_str())
                .push_bind(e.object_kind.clone())
                .push_bind(e.object_id.clone())
                .push_bind(e.outcome.clone())
                .push_bind(e.message.clone())
                .push_bind(e.details.as_ref().map(|d| d.to_string()));
            q.push(")");
        }
        q.build().execute(&mut *c).await?;
    }
    Ok(())
}

/// Empty lists filter nothing; a list matches any of its values.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub account_id: String,
    pub action: Option<String>,
    pub action_types: Vec<ActionType>,
    /// `user`, `app`, `system`.
    pub actor_kinds: Vec<String>,
    pub actor_id: Option<String>,
    pub object_id: Option<String>,
    pub outcomes: Vec<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Only events older than this one (paging by the last id seen).
    pub before_id: Option<i64>,
    pub limit: u32,
    pub offset: u32,
}

fn push_any(q: &mut db::Builder, column: &str, values: impl IntoIterator<Item = String>) {
    let values: Vec<String> = values.into_iter().collect();
    if values.is_empty() {
        return;
    }
    q.push(format!(" AND {column} IN ("));
    let mut list = q.separated(", ");
    for v in values {
        list.push_bind(v);
    }
    q.push(")");
}

/// An event as the log reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub event: AuditEvent,
    /// The group of the key the event is about, while the key is in the catalog.
    pub key_group: Option<String>,
}

/// Newest first.
pub async fn query(c: &mut Conn, f: &AuditFilter) -> Result<Vec<Logged>> {
    let mut q: db::Builder = db::Builder::new(
        "SELECT e.*, s.group_id AS key_group FROM audit_events e
         LEFT JOIN sobjects s ON e.object_kind = 'sobject' AND s.kid = e.object_id
         WHERE e.account_id = ",
    );
    q.push_bind(f.account_id.clone());
    if let Some(a) = &f.action {
        if let Some(prefix) = a.strip_suffix('*') {
            q.push(" AND e.action LIKE ")
                .push_bind(format!("{prefix}%"));
        } else {
            q.push(" AND e.action = ").push_bind(a.clone());
        }
    }
    push_any(
        &mut q,
        "e.action_type",
        f.action_types.iter().map(|t| t.as_str().to_string()),
    );
    push_any(&mut q, "e.actor_kind", f.actor_kinds.iter().cloned());
    push_any(&mut q, "e.outcome", f.outcomes.iter().cloned());
    if let Some(a) = &f.actor_id {
        q.push(" AND e.actor_id = ").push_bind(a.clone());
    }
    if let Some(o) = &f.object_id {
        q.push(" AND e.object_id = ").push_bind(o.clone());
    }
    if let Some(t) = f.from {
        q.push(" AND e.at >= ").push_bind(t);
    }
    if let Some(t) = f.to {
        q.push(" AND e.at <= ").push_bind(t);
    }
    if let Some(id) = f.before_id {
        q.push(" AND e.id < ").push_bind(id);
    }
    q.push(" ORDER BY e.id DESC LIMIT ")
        .push_bind(i64::from(f.limit))
        .push(" OFFSET ")
        .push_bind(i64::from(f.offset));
    Ok(q.build()
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| Logged {
            event: from_row(r),
            key_group: r.get("key_group"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same rule as migration 7's backfill.
    #[test]
    fn actions_are_classified_as_dsm_does() {
        for (action, t) in [
            ("session.auth", ActionType::Auth),
            ("key.encrypt", ActionType::CryptoOperation),
            ("key.unwrapkey", ActionType::CryptoOperation),
            ("key.export", ActionType::CryptoOperation),
            ("key.create", ActionType::Administrative),
            ("app.credential_read", ActionType::Administrative),
            ("workflow.update_checked", ActionType::Custom),
        ] {
            assert_eq!(ActionType::of(action), t, "{action}");
        }
        for t in ActionType::ALL {
            assert_eq!(ActionType::parse(t.as_str()), Some(t));
        }
    }
}
