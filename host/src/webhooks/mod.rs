//! Webhooks in (FLOWS F31): `POST /webhooks/{account_id}/{name}` starts a workflow, or, for
//! Azure Event Grid, syncs or rotates the key an event is about. Each webhook acts as the
//! principal that created it, with that principal's rights when a delivery arrives, and may
//! start only what that principal may start by hand.
//!
//! - Standard webhooks are signed (Standard Webhooks 1.0, [`signature`]): the raw body is
//!   verified before it is parsed, deliveries older or newer than five minutes are refused,
//!   and a repeated `webhook-id` is acknowledged without running anything again. The JSON
//!   body is the workflow's `input`.
//! - Event Grid cannot sign, so such a webhook authenticates with a secret in the URL query,
//!   compared in constant time. Both subscription handshakes are answered (the Event Grid
//!   schema's `SubscriptionValidation`, the CloudEvents `OPTIONS`), and
//!   `KeyNewVersionCreated` syncs the key (`sync_key`), `KeyNearExpiry` and `KeyExpired`
//!   rotate it ([`event_grid`]). Events are deduplicated on their id.
//!
//! Here: webhooks created, listed, secret-rotated (the old secret stays valid for a day) and
//! deleted through the API; a secret is shown once and stored sealed. In `delivery`: the
//! deliveries, each accepted one recorded with its outcome, refusals counted.

mod delivery;
pub mod event_grid;
pub mod signature;

pub use delivery::{Credentials, Received};

use std::sync::Arc;

use serde_json::{Value, json};

use crate::audit::Event;
use crate::auth::Access;
use crate::catalog::webhooks::{self, Delivery, Webhook, WebhookKind, secret_context};
use crate::catalog::{Catalog, CatalogError, groups, new_id};
use crate::keys::KeyService;
use crate::time::Clock;
use crate::workflows::{WorkflowError, Workflows};

use signature::Secret;

/// The largest delivery accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// How long the previous secret is still accepted after a rotation of the secret.
pub const PREVIOUS_SECRET_SECS: i64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// 400.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// 400: the delivery's body is unusable.
    #[error("{0}")]
    BadDelivery(String),
    /// 401: the delivery's signature or secret does not check out.
    #[error("{0}")]
    Unauthorized(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 413.
    #[error("the delivery is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
}

impl From<sqlx::Error> for WebhookError {
    fn from(e: sqlx::Error) -> Self {
        WebhookError::Catalog(e.into())
    }
}

fn invalid(field: &str, message: impl Into<String>) -> WebhookError {
    WebhookError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A webhook to create.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub name: String,
    pub kind: WebhookKind,
    pub workflow: Option<String>,
    pub group_id: Option<String>,
}

/// A webhook and its secret, shown this once.
pub struct WithSecret {
    pub webhook: Webhook,
    pub secret: String,
}

#[derive(Clone)]
pub struct Webhooks {
    catalog: Catalog,
    keys: KeyService,
    workflows: Arc<Workflows>,
    clock: Clock,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Webhooks {
    pub fn new(
        catalog: Catalog,
        keys: KeyService,
        workflows: Arc<Workflows>,
        clock: Clock,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Webhooks {
        Webhooks {
            catalog,
            keys,
            workflows,
            clock,
            metrics,
        }
    }

    pub async fn create(
        &self,
        access: &Access,
        spec: NewWebhook,
    ) -> Result<WithSecret, WebhookError> {
        let name = spec.name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "name",
                "must be 1 to 64 letters, digits, '-' or '_' (it is the path /webhooks/{account_id}/{name})",
            ));
        }
        match spec.kind {
            WebhookKind::Standard => {
                let w = spec
                    .workflow
                    .as_deref()
                    .ok_or_else(|| invalid("workflow", "is required for a standard webhook"))?;
                if self.workflows.source(&access.account_id, w).is_err() {
                    // A name that refers to nothing, as an unknown id does.
                    return Err(WebhookError::NotFound(format!(
                        "workflow: there is no workflow named '{w}'"
                    )));
                }
                crate::workflows::may_start(access, w, spec.group_id.as_deref())?;
            }
            WebhookKind::EventGrid => {
                if spec.workflow.is_some() {
                    return Err(invalid(
                        "workflow",
                        "an Event Grid webhook syncs or rotates the key an event names; it takes no workflow",
                    ));
                }
                if spec.group_id.is_none() {
                    return Err(invalid(
                        "group_id",
                        "is required: the group linked to the key manager that sends the events",
                    ));
                }
            }
        }
        self.may_manage(access, spec.group_id.as_deref(), spec.kind)
            .await?;
        let (secret, shown) = new_secret(spec.kind);
        let id = new_id();
        let now = self.clock.now();
        let w = Webhook {
            secret: self.catalog.seal(&secret_context(&id), &secret),
            id,
            account_id: access.account_id.clone(),
            name: name.to_string(),
            kind: spec.kind,
            workflow: spec.workflow,
            group_id: spec.group_id,
            previous_secret: None,
            previous_until: None,
            owner: crate::keys::creator(&access.principal),
            created_at: now,
        };
        let mut tx = self.catalog.begin().await?;
        webhooks::insert(&mut tx, &w).await.map_err(|e| {
            if e.is_unique_violation() {
                WebhookError::Conflict(format!(
                    "a webhook named '{}' exists in this account",
                    w.name
                ))
            } else {
                e.into()
            }
        })?;
        self.event(
            access,
            "webhook.create",
            &w.id,
            json!({"name": w.name, "kind": w.kind.as_str(),
            "workflow": w.workflow, "group_id": w.group_id}),
        )
        .write(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(WithSecret {
            webhook: w,
            secret: shown,
        })
    }

    pub async fn list(&self, access: &Access) -> Result<Vec<Webhook>, WebhookError> {
        let mut conn = self.catalog.conn().await?;
        Ok(webhooks::of_account(&mut conn, &access.account_id)
            .await?
            .into_iter()
            .filter(|w| visible(access, w))
            .collect())
    }

    pub async fn get(&self, access: &Access, id: &str) -> Result<Webhook, WebhookError> {
        if !crate::catalog::is_id(id) {
            return Err(invalid("id", format!("'{id}' is not a valid webhook id")));
        }
        let mut conn = self.catalog.conn().await?;
        webhooks::get(&mut conn, &access.account_id, id)
            .await?
            .filter(|w| visible(access, w))
            .ok_or_else(|| WebhookError::NotFound(format!("no webhook {id}")))
    }

    /// A new secret; the old one is accepted for a day more, so senders can switch over.
    pub async fn rotate_secret(
        &self,
        access: &Access,
        id: &str,
    ) -> Result<WithSecret, WebhookError> {
        let w = self.get(access, id).await?;
        self.may_manage(access, w.group_id.as_deref(), w.kind)
            .await?;
        let (secret, shown) = new_secret(w.kind);
        let sealed = self.catalog.seal(&secret_context(&w.id), &secret);
        let until = self.clock.now() + PREVIOUS_SECRET_SECS;
        let mut tx = self.catalog.begin().await?;
        webhooks::rotate_secret(
            &mut tx,
            &access.account_id,
            id,
            &sealed,
            Some(&w.secret),
            Some(until),
        )
        .await?;
        self.event(
            access,
            "webhook.rotate_secret",
            id,
            json!({"name": w.name, "previous_valid_until": crate::time::format_dsm(until)}),
        )
        .write(&mut tx)
        .await?;
        tx.commit().await?;
        let webhook = self.get(access, id).await?;
        Ok(WithSecret {
            webhook,
            secret: shown,
        })
    }

    pub async fn delete(&self, access: &Access, id: &str) -> Result<(), WebhookError> {
        let w = self.get(access, id).await?;
        self.may_manage(access, w.group_id.as_deref(), w.kind)
            .await?;
        let mut tx = self.catalog.begin().await?;
        webhooks::delete(&mut tx, &access.account_id, id).await?;
        self.event(access, "webhook.delete", id, json!({"name": w.name}))
            .write(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn deliveries(
        &self,
        access: &Access,
        id: &str,
        limit: u32,
    ) -> Result<Vec<Delivery>, WebhookError> {
        let w = self.get(access, id).await?;
        let mut conn = self.catalog.conn().await?;
        Ok(webhooks::deliveries(&mut conn, &w.id, limit).await?)
    }

    /// Webhooks of a group are managed by who manages its keys; others by account
    /// administrators.
    async fn may_manage(
        &self,
        access: &Access,
        group: Option<&str>,
        kind: WebhookKind,
    ) -> Result<(), WebhookError> {
        let Some(g) = group else {
            return if access.is_account_admin() {
                Ok(())
            } else {
                Err(WebhookError::Forbidden(
                    "only account administrators manage webhooks that belong to no group".into(),
                ))
            };
        };
        if !crate::catalog::is_id(g) {
            return Err(invalid(
                "group_id",
                format!("'{g}' is not a valid group id"),
            ));
        }
        let mut conn = self.catalog.conn().await?;
        let found = groups::get(&mut conn, &access.account_id, g)
            .await?
            .ok_or_else(|| WebhookError::NotFound(format!("no group {g}")))?;
        if kind == WebhookKind::EventGrid && found.link.is_none() {
            return Err(invalid(
                "group_id",
                "an Event Grid webhook belongs to a group linked to the key manager that sends the events",
            ));
        }
        if access.can_manage_keys(g) {
            Ok(())
        } else {
            Err(WebhookError::Forbidden(
                "you may not manage that group's keys".into(),
            ))
        }
    }

    fn event(&self, access: &Access, action: &str, id: &str, details: Value) -> Event {
        Event::new(
            Some(&access.account_id),
            &access.principal,
            action,
            self.clock.now(),
        )
        .object("webhook", id)
        .details(details)
    }
}

/// A new secret and how it is shown: `whsec_<base64>` to sign with; for Event Grid, hex (it
/// goes into a URL).
fn new_secret(kind: WebhookKind) -> (Vec<u8>, String) {
    let s = Secret::generate();
    let shown = match kind {
        WebhookKind::Standard => s.display(),
        WebhookKind::EventGrid => hex::encode(s.bytes()),
    };
    (s.bytes().to_vec(), shown)
}

fn visible(access: &Access, w: &Webhook) -> bool {
    match &w.group_id {
        None => access.reads_whole_account(),
        Some(g) => access.can_read_group(g),
    }
}
