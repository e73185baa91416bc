//! Notifications out: the endpoints an account sends key events to, and the outbox. An event
//! is written to the outbox in the transaction of the change it reports (one row per
//! subscribed endpoint), and a delivery worker sends it from there, so nothing committed goes
//! unreported and nothing unreported is claimed. Also the record of expiry warnings sent, so
//! each goes out once per key, threshold and deactivation date, whichever daemon sends it.

use crate::catalog::db::{self, Row};
use serde_json::Value;

use super::{CatalogError, Conn, Result, new_id};

/// The key events Keyward reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Rotated,
    RotationFailed,
    NearExpiry,
    Expired,
    /// A sync found a key new in the HSM.
    Found,
    SoftDeleted,
    Purged,
    /// An HSM had a key enabled, or permitting operations, beyond what the catalog allows:
    /// put back.
    Drift,
    /// An application's client certificate (or trusted CA) expires in 30 or 7 days.
    AppCertNearExpiry,
    /// An approval request waits for its reviewers.
    ApprovalRequested,
    /// An approval request was approved (and carried out) or denied.
    ApprovalDecided,
}

impl EventType {
    pub const ALL: [EventType; 11] = [
        EventType::Rotated,
        EventType::RotationFailed,
        EventType::NearExpiry,
        EventType::Expired,
        EventType::Found,
        EventType::SoftDeleted,
        EventType::Purged,
        EventType::Drift,
        EventType::AppCertNearExpiry,
        EventType::ApprovalRequested,
        EventType::ApprovalDecided,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Rotated => "key.rotated",
            EventType::RotationFailed => "key.rotation_failed",
            EventType::NearExpiry => "key.near_expiry",
            EventType::Expired => "key.expired",
            EventType::Found => "key.found",
            EventType::SoftDeleted => "key.soft_deleted",
            EventType::Purged => "key.purged",
            EventType::Drift => "key.drift",
            EventType::AppCertNearExpiry => "app.cert_near_expiry",
            EventType::ApprovalRequested => "approval.requested",
            EventType::ApprovalDecided => "approval.decided",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// The sealing context of an endpoint's signing secret.
pub fn secret_context(id: &str) -> String {
    format!("notification_endpoint:{id}:secret")
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub id: String,
    pub account_id: String,
    pub url: String,
    /// Sealed.
    pub secret: Vec<u8>,
    /// The events sent there; empty: all of them.
    pub events: Vec<EventType>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

fn endpoint_from_row(r: &Row) -> Result<Endpoint> {
    let events: String = r.get("events");
    let names: Vec<String> = serde_json::from_str(&events)
        .map_err(|_| CatalogError::Corrupt("notification endpoint events".into()))?;
    Ok(Endpoint {
        id: r.get("id"),
        account_id: r.get("account_id"),
        url: r.get("url"),
        secret: r.get("secret"),
        events: names.iter().filter_map(|n| EventType::parse(n)).collect(),
        enabled: r.get("enabled"),
        disabled_reason: r.get("disabled_reason"),
        created_by: r.get("created_by"),
        created_at: r.get("created_at"),
    })
}

pub async fn insert_endpoint(c: &mut Conn, e: &Endpoint) -> Result<()> {
    let events: Vec<&str> = e.events.iter().map(|t| t.as_str()).collect();
    db::query(
        "INSERT INTO notification_endpoints (id, account_id, url, secret, events, enabled, disabled_reason, created_by, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&e.id)
    .bind(&e.account_id)
    .bind(&e.url)
    .bind(&e.secret)
    .bind(serde_json::to_string(&events).expect("names serialize"))
    .bind(e.enabled)
    .bind(&e.disabled_reason)
    .bind(&e.created_by)
    .bind(e.created_at)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn endpoint(c: &mut Conn, account: &str, id: &str) -> Result<Option<Endpoint>> {
    db::query("SELECT * FROM notification_endpoints WHERE id = ? AND account_id = ?")
        .bind(id)
        .bind(account)
        .fetch_optional(c)
        .await?
        .as_ref()
        .map(endpoint_from_row)
        .transpose()
}

pub async fn endpoints_of(c: &mut Conn, account: &str) -> Result<Vec<Endpoint>> {
    db::query("SELECT * FROM notification_endpoints WHERE account_id = ? ORDER BY created_at")
        .bind(account)
        .fetch_all(c)
        .await?
        .iter()
        .map(endpoint_from_row)
        .collect()
}

pub async fn delete_endpoint(c: &mut Conn, account: &str, id: &str) -> Result<bool> {
    Ok(
        db::query("DELETE FROM notification_endpoints WHERE id = ? AND account_id = ?")
            .bind(id)
            .bind(account)
            .execute(c)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Enables an endpoint again, or disables it with the reason.
pub async fn set_enabled(
    c: &mut Conn,
    account: &str,
    id: &str,
    enabled: bool,
    reason: Option<&str>,
) -> Result<bool> {
    Ok(db::query(
        "UPDATE notification_endpoints SET enabled = ?, disabled_reason = ? WHERE id = ? AND account_id = ?",
    )
    .bind(enabled)
    .bind(reason)
    .bind(id)
    .bind(account)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

/// Writes an event to the outbox of every enabled endpoint of the account that takes it.
/// `data` must hold no secret (it goes out as is).
pub async fn enqueue(
    c: &mut Conn,
    account: &str,
    event: EventType,
    data: &Value,
    now: i64,
) -> Result<usize> {
    let endpoints: Vec<(String, String)> =
        db::query("SELECT id, events FROM notification_endpoints WHERE account_id = ? AND enabled")
            .bind(account)
            .fetch_all(&mut *c)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    let mut n = 0;
    for (endpoint, events) in endpoints {
        let names: Vec<String> = serde_json::from_str(&events).unwrap_or_default();
        if !names.is_empty() && !names.iter().any(|e| e == event.as_str()) {
            continue;
        }
        let id = format!("msg_{}", new_id().replace('-', ""));
        let payload = serde_json::json!({
            "type": event.as_str(),
            "timestamp": crate::time::format_rfc3339(now),
            "data": data,
        });
        db::query(
            "INSERT INTO outbox (id, account_id, endpoint_id, event_type, payload, created_at, attempts, next_attempt_at, status)
             VALUES (?, ?, ?, ?, ?, ?, 0, ?, 'pending')",
        )
        .bind(&id)
        .bind(account)
        .bind(&endpoint)
        .bind(event.as_str())
        .bind(payload.to_string())
        .bind(now)
        .bind(now)
        .execute(&mut *c)
        .await?;
        n += 1;
    }
    Ok(n)
}

/// One message of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The `webhook-id`, the same on every attempt.
    pub id: String,
    pub account_id: String,
    pub endpoint_id: String,
    pub event_type: String,
    /// The exact bytes sent (and signed).
    pub payload: String,
    pub created_at: i64,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub status: String,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

fn message_from_row(r: &Row) -> Message {
    Message {
        id: r.get("id"),
        account_id: r.get("account_id"),
        endpoint_id: r.get("endpoint_id"),
        event_type: r.get("event_type"),
        payload: r.get("payload"),
        created_at: r.get("created_at"),
        attempts: r.get("attempts"),
        next_attempt_at: r.get("next_attempt_at"),
        status: r.get("status"),
        last_error: r.get("last_error"),
        delivered_at: r.get("delivered_at"),
    }
}

/// Takes up to `limit` messages due for an attempt, leased until `lease_until` so that no
/// other worker sends them meanwhile.
pub async fn take_due(
    c: &mut Conn,
    now: i64,
    lease_until: i64,
    limit: u32,
) -> Result<Vec<Message>> {
    Ok(db::query(
        "UPDATE outbox SET lease_until = ? WHERE id IN (
            SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?
              AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_attempt_at LIMIT ?)
           AND (lease_until IS NULL OR lease_until < ?)
         RETURNING *",
    )
    .bind(lease_until)
    .bind(now)
    .bind(now)
    .bind(i64::from(limit))
    // Checked again on the row itself: a concurrent taker's lease stands.
    .bind(now)
    .fetch_all(c)
    .await?
    .iter()
    .map(message_from_row)
    .collect())
}

pub async fn delivered(c: &mut Conn, id: &str, now: i64) -> Result<()> {
    db::query(
        "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, delivered_at = ?, lease_until = NULL, last_error = NULL WHERE id = ?",
    )
    .bind(now)
    .bind(id)
    .execute(c)
    .await?;
    Ok(())
}

/// Schedules the next attempt (`Some(at)`) or gives the message up (`None`).
pub async fn attempt_failed(c: &mut Conn, id: &str, error: &str, next: Option<i64>) -> Result<()> {
    db::query(
        "UPDATE outbox SET attempts = attempts + 1, last_error = ?, lease_until = NULL,
           status = CASE WHEN ? IS NULL THEN 'failed' ELSE 'pending' END,
           next_attempt_at = COALESCE(?, next_attempt_at) WHERE id = ?",
    )
    .bind(error)
    .bind(next)
    .bind(next)
    .bind(id)
    .execute(c)
    .await?;
    Ok(())
}

/// Gives up every pending message of an endpoint (it was disabled).
pub async fn fail_pending(c: &mut Conn, endpoint: &str, reason: &str) -> Result<()> {
    db::query(
        "UPDATE outbox SET status = 'failed', last_error = ?, lease_until = NULL WHERE endpoint_id = ? AND status = 'pending'",
    )
    .bind(reason)
    .bind(endpoint)
    .execute(c)
    .await?;
    Ok(())
}

/// Newest first. Messages made in the same second tie on `created_at`; ids are random, so
/// insertion order (`{seq}`, see `db`) breaks the tie.
pub async fn messages_of(
    c: &mut Conn,
    account: &str,
    endpoint: &str,
    limit: u32,
) -> Result<Vec<Message>> {
    Ok(db::query(
        "SELECT * FROM outbox WHERE account_id = ? AND endpoint_id = ? ORDER BY created_at DESC, {seq} DESC LIMIT ?",
    )
    .bind(account)
    .bind(endpoint)
    .bind(i64::from(limit))
    .fetch_all(c)
    .await?
    .iter()
    .map(message_from_row)
    .collect())
}

/// A key whose deactivation date is near or past, for expiry warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Expiring {
    pub kid: String,
    pub account_id: String,
    pub group_id: String,
    pub name: String,
    pub deactivation_date: i64,
}

/// Current keys whose deactivation date falls before `until` and after `since` (served by the
/// partial index on `deactivation_date`).
pub async fn expiring(c: &mut Conn, since: i64, until: i64, limit: u32) -> Result<Vec<Expiring>> {
    Ok(db::query(
        "SELECT kid, account_id, group_id, name, deactivation_date FROM sobjects
         WHERE deactivation_date IS NOT NULL AND destruction_date IS NULL
           AND deactivation_date > ? AND deactivation_date <= ? AND rotated_at IS NULL
         ORDER BY deactivation_date LIMIT ?",
    )
    .bind(since)
    .bind(until)
    .bind(i64::from(limit))
    .fetch_all(c)
    .await?
    .iter()
    .map(|r| Expiring {
        kid: r.get(0),
        account_id: r.get(1),
        group_id: r.get(2),
        name: r.get(3),
        deactivation_date: r.get(4),
    })
    .collect())
}

/// Records that a warning goes out; `false` when it went out before.
pub async fn notice_once(
    c: &mut Conn,
    kid: &str,
    threshold_days: i64,
    deactivation: i64,
    now: i64,
) -> Result<bool> {
    Ok(db::query(
        "INSERT INTO expiry_notices (kid, threshold_days, deactivation_date, sent_at) VALUES (?, ?, ?, ?)
         ON CONFLICT DO NOTHING",
    )
    .bind(kid)
    .bind(threshold_days)
    .bind(deactivation)
    .bind(now)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}
