//! Inbound webhooks (a signed POST runs a workflow, or an Azure Event Grid delivery syncs or
//! rotates a key) and their deliveries. Secrets are stored sealed; an accepted delivery's
//! message id is unique per webhook, so a replay is recognised.

use crate::catalog::db::{self, Row};

use super::sobjects::Creator;
use super::{Conn, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    /// Standard Webhooks 1.0 signatures; the body is the workflow's input.
    Standard,
    /// Azure Event Grid deliveries (which cannot sign): a secret in the URL query.
    EventGrid,
}

impl WebhookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookKind::Standard => "standard",
            WebhookKind::EventGrid => "event_grid",
        }
    }

    pub fn parse(s: &str) -> Option<WebhookKind> {
        match s {
            "standard" => Some(WebhookKind::Standard),
            "event_grid" => Some(WebhookKind::EventGrid),
            _ => None,
        }
    }
}

/// The sealing context of a webhook's secrets.
pub fn secret_context(id: &str) -> String {
    format!("webhook:{id}:secret")
}

#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: String,
    pub account_id: String,
    /// The path: `POST /webhooks/{account_id}/{name}`; unique in the account.
    pub name: String,
    pub kind: WebhookKind,
    /// Standard webhooks: the workflow a delivery runs.
    pub workflow: Option<String>,
    /// The group the run is for (Event Grid: the group whose HSM sends the events).
    pub group_id: Option<String>,
    /// Sealed.
    pub secret: Vec<u8>,
    /// Sealed; still accepted until `previous_until` after a secret rotation.
    pub previous_secret: Option<Vec<u8>>,
    pub previous_until: Option<i64>,
    /// Deliveries run as who created the webhook.
    pub owner: Creator,
    pub created_at: i64,
}

fn from_row(r: &Row) -> Webhook {
    Webhook {
        id: r.get("id"),
        account_id: r.get("account_id"),
        name: r.get("name"),
        kind: WebhookKind::parse(r.get("kind")).unwrap_or(WebhookKind::Standard),
        workflow: r.get("workflow"),
        group_id: r.get("group_id"),
        secret: r.get("secret"),
        previous_secret: r.get("previous_secret"),
        previous_until: r.get("previous_until"),
        owner: Creator::from_parts(r.get("owner_kind"), r.get("owner_id")),
        created_at: r.get("created_at"),
    }
}

pub async fn insert(c: &mut Conn, w: &Webhook) -> Result<()> {
    db::query(
        "INSERT INTO webhooks (id, account_id, name, kind, workflow, group_id, secret, previous_secret, previous_until, owner_kind, owner_id, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&w.id)
    .bind(&w.account_id)
    .bind(&w.name)
    .bind(w.kind.as_str())
    .bind(&w.workflow)
    .bind(&w.group_id)
    .bind(&w.secret)
    .bind(&w.previous_secret)
    .bind(w.previous_until)
    .bind(w.owner.kind())
    .bind(w.owner.id())
    .bind(w.created_at)
    .execute(c)
    .await?;
    Ok(())
}

/// A webhook by its delivery path: the account and the name.
pub async fn by_name(c: &mut Conn, account: &str, name: &str) -> Result<Option<Webhook>> {
    Ok(
        db::query("SELECT * FROM webhooks WHERE account_id = ? AND name = ?")
            .bind(account)
            .bind(name)
            .fetch_optional(c)
            .await?
            .as_ref()
            .map(from_row),
    )
}

pub async fn get(c: &mut Conn, account: &str, id: &str) -> Result<Option<Webhook>> {
    Ok(
        db::query("SELECT * FROM webhooks WHERE id = ? AND account_id = ?")
            .bind(id)
            .bind(account)
            .fetch_optional(c)
            .await?
            .as_ref()
            .map(from_row),
    )
}

pub async fn of_account(c: &mut Conn, account: &str) -> Result<Vec<Webhook>> {
    Ok(
        db::query("SELECT * FROM webhooks WHERE account_id = ? ORDER BY name")
            .bind(account)
            .fetch_all(c)
            .await?
            .iter()
            .map(from_row)
            .collect(),
    )
}

/// Replaces the secret, keeping the old one valid until `previous_until`.
pub async fn rotate_secret(
    c: &mut Conn,
    account: &str,
    id: &str,
    secret: &[u8],
    previous: Option<&[u8]>,
    previous_until: Option<i64>,
) -> Result<bool> {
    Ok(db::query(
        "UPDATE webhooks SET secret = ?, previous_secret = ?, previous_until = ? WHERE id = ? AND account_id = ?",
    )
    .bind(secret)
    .bind(previous)
    .bind(previous_until)
    .bind(id)
    .bind(account)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

pub async fn delete(c: &mut Conn, account: &str, id: &str) -> Result<bool> {
    Ok(
        db::query("DELETE FROM webhooks WHERE id = ? AND account_id = ?")
            .bind(id)
            .bind(account)
            .execute(c)
            .await?
            .rows_affected()
            == 1,
    )
}

/// A delivery and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: String,
    /// Accepted deliveries only.
    pub message_id: Option<String>,
    pub received_at: i64,
    /// `accepted`, `duplicate`, `refused`, `validated` (an Event Grid handshake).
    pub outcome: String,
    pub run_id: Option<String>,
    pub error: Option<String>,
}

/// Records an accepted delivery; `false` when a delivery with that message id was accepted
/// before (a replay).
pub async fn accept(c: &mut Conn, webhook: &str, message_id: &str, at: i64) -> Result<Option<i64>> {
    Ok(db::query(
        "INSERT INTO webhook_deliveries (webhook_id, message_id, received_at, outcome) VALUES (?, ?, ?, 'accepted')
         ON CONFLICT (webhook_id, message_id) DO NOTHING RETURNING id",
    )
    .bind(webhook)
    .bind(message_id)
    .bind(at)
    .fetch_optional(c)
    .await?
    .map(|r| r.get(0)))
}

/// Records a delivery that was not accepted (refused, a duplicate, a handshake).
pub async fn record(
    c: &mut Conn,
    webhook: &str,
    outcome: &str,
    error: Option<&str>,
    at: i64,
) -> Result<()> {
    db::query(
        "INSERT INTO webhook_deliveries (webhook_id, message_id, received_at, outcome, error) VALUES (?, NULL, ?, ?, ?)",
    )
    .bind(webhook)
    .bind(at)
    .bind(outcome)
    .bind(error)
    .execute(c)
    .await?;
    Ok(())
}

/// Notes the run an accepted delivery started, or why it could not start.
pub async fn set_run(
    c: &mut Conn,
    delivery: i64,
    run_id: Option<&str>,
    error: Option<&str>,
) -> Result<()> {
    db::query(
        "UPDATE webhook_deliveries SET run_id = ?, error = ?, outcome = CASE WHEN ? IS NULL THEN outcome ELSE 'failed' END WHERE id = ?",
    )
    .bind(run_id)
    .bind(error)
    .bind(error)
    .bind(delivery)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn deliveries(c: &mut Conn, webhook: &str, limit: u32) -> Result<Vec<Delivery>> {
    Ok(
        db::query("SELECT * FROM webhook_deliveries WHERE webhook_id = ? ORDER BY id DESC LIMIT ?")
            .bind(webhook)
            .bind(i64::from(limit))
            .fetch_all(c)
            .await?
            .iter()
            .map(|r| Delivery {
                id: r.get("id"),
                webhook_id: r.get("webhook_id"),
                message_id: r.get("message_id"),
                received_at: r.get("received_at"),
                outcome: r.get("outcome"),
                run_id: r.get("run_id"),
                error: r.get("error"),
            })
            .collect(),
    )
}
