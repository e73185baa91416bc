//! Deliveries to `POST /webhooks/{account_id}/{name}`: checked (a Standard Webhooks
//! signature, or an Event Grid webhook's URL secret), recorded, and acted on as the
//! webhook's owner with the owner's rights at that moment. A refusal answers alike whatever
//! its reason and is counted, not stored.

use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::audit::Event;
use crate::auth::{self, Access};
use crate::catalog::sobjects;
use crate::catalog::webhooks::{self, Webhook, WebhookKind, secret_context};
use crate::keys::{KeyError, KeyRef, RekeySpec};
use crate::kms::Link;
use crate::workflows::{RunRequest, Trigger};

use super::event_grid::{self, KeyEventKind};
use super::signature::{self, Secret};
use super::{MAX_BODY, WebhookError, Webhooks};

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// The workflow run started.
    Started { run_id: String },
    /// A `webhook-id` seen before: acknowledged, nothing run.
    Duplicate,
    /// An Event Grid subscription handshake.
    Validation { code: String },
    /// Event Grid events: how many were acted on, seen before, or not about keys.
    Events {
        accepted: usize,
        duplicates: usize,
        ignored: usize,
    },
}

/// The signature headers and the query secret of a delivery.
pub struct Credentials<'a> {
    pub headers: signature::Headers<'a>,
    /// `?secret=` (Event Grid webhooks).
    pub query_secret: Option<&'a str>,
    /// `aeg-event-type`.
    pub aeg_event_type: Option<&'a str>,
}

/// What every refused delivery is answered, whatever the reason (an unknown name, a bad
/// signature or secret), so that answers tell nobody which webhooks exist.
const UNAUTHORIZED: &str = "the delivery's signature does not check out for a webhook of that name";

/// Why a delivery was refused: the bounded label of its metric.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Unknown,
    Signature,
    Body,
    TooLarge,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown",
            Refusal::Signature => "signature",
            Refusal::Body => "body",
            Refusal::TooLarge => "too_large",
        }
    }
}

impl Webhooks {
    /// A delivery to `POST /webhooks/{account}/{name}`: checked, recorded, and acted on.
    pub async fn receive(
        &self,
        account: &str,
        name: &str,
        creds: &Credentials<'_>,
        body: &[u8],
    ) -> Result<Received, WebhookError> {
        let Some(w) = self.by_name(account, name).await? else {
            self.refused(Refusal::Unknown);
            return Err(WebhookError::Unauthorized(UNAUTHORIZED.into()));
        };
        let now = self.clock.now();
        if body.len() > MAX_BODY {
            self.refused(Refusal::TooLarge);
            return Err(WebhookError::TooLarge);
        }
        match w.kind {
            WebhookKind::Standard => self.receive_signed(&w, creds, body, now).await,
            WebhookKind::EventGrid => {
                self.check_query_secret(&w, creds.query_secret, now).await?;
                self.receive_event_grid(&w, creds.aeg_event_type, body, now)
                    .await
            }
        }
    }

    /// The CloudEvents 1.0 handshake (`OPTIONS` with `WebHook-Request-Origin`): the origin
    /// allowed to deliver.
    pub async fn handshake(
        &self,
        account: &str,
        name: &str,
        query_secret: Option<&str>,
        origin: &str,
    ) -> Result<String, WebhookError> {
        // A standard webhook takes no handshake; it answers as an unknown name does.
        let Some(w) = self
            .by_name(account, name)
            .await?
            .filter(|w| w.kind == WebhookKind::EventGrid)
        else {
            self.refused(Refusal::Unknown);
            return Err(WebhookError::Unauthorized(UNAUTHORIZED.into()));
        };
        self.check_query_secret(&w, query_secret, self.clock.now())
            .await?;
        let mut tx = self.catalog.begin().await?;
        webhooks::record(
            &mut tx,
            &w.id,
            "validated",
            Some(&format!("CloudEvents handshake from {origin}")),
            self.clock.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(origin.to_string())
    }

    async fn by_name(&self, account: &str, name: &str) -> Result<Option<Webhook>, WebhookError> {
        // A path that cannot name a webhook is an unknown one, answered alike.
        if !crate::catalog::is_id(account) {
            return Ok(None);
        }
        let mut conn = self.catalog.conn().await?;
        Ok(webhooks::by_name(&mut conn, account, name).await?)
    }

    /// The webhook's secrets in force: the current one, and the previous one during its
    /// grace period.
    fn secrets(&self, w: &Webhook, now: i64) -> Result<Vec<Vec<u8>>, WebhookError> {
        let ctx = secret_context(&w.id);
        let mut out = vec![self.catalog.open_sealed(&ctx, &w.secret)?];
        if let (Some(prev), Some(until)) = (&w.previous_secret, w.previous_until)
            && until > now
        {
            out.push(self.catalog.open_sealed(&ctx, prev)?);
        }
        Ok(out)
    }

    async fn receive_signed(
        &self,
        w: &Webhook,
        creds: &Credentials<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<Received, WebhookError> {
        let secrets: Vec<Secret> = self
            .secrets(w, now)?
            .into_iter()
            .map(Secret::from_bytes)
            .collect();
        let id = match signature::verify(&secrets, &creds.headers, body, now) {
            Ok(id) => id,
            Err(e) => {
                // Why is logged, not answered: an unknown name and a bad signature answer
                // alike, so the answer tells nobody which names exist.
                tracing::debug!(webhook = %w.id, "webhook delivery refused: {e}");
                self.refused(Refusal::Signature);
                return Err(WebhookError::Unauthorized(UNAUTHORIZED.into()));
            }
        };
        let input: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                self.refused(Refusal::Body);
                return Err(WebhookError::BadDelivery(
                    "the body must be a JSON object (it becomes the workflow's input)".into(),
                ));
            }
        };
        let mut tx = self.catalog.begin().await?;
        let delivery = webhooks::accept(&mut tx, &w.id, id, now).await?;
        if delivery.is_none() {
            webhooks::record(
                &mut tx,
                &w.id,
                "duplicate",
                Some(&format!("webhook-id {id} was delivered before")),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        let Some(delivery) = delivery else {
            return Ok(Received::Duplicate);
        };
        let workflow = w.workflow.clone().unwrap_or_default();
        let started = self.start(w, &workflow, input).await;
        let mut tx = self.catalog.begin().await?;
        match &started {
            Ok(run_id) => webhooks::set_run(&mut tx, delivery, Some(run_id), None).await?,
            Err(e) => webhooks::set_run(&mut tx, delivery, None, Some(&e.to_string())).await?,
        }
        tx.commit().await?;
        Ok(Received::Started { run_id: started? })
    }

    async fn check_query_secret(
        &self,
        w: &Webhook,
        given: Option<&str>,
        now: i64,
    ) -> Result<(), WebhookError> {
        let ok = given.is_some_and(|g| {
            self.secrets(w, now)
                .unwrap_or_default()
                .iter()
                .any(|s| bool::from(hex::encode(s).as_bytes().ct_eq(g.as_bytes())))
        });
        if ok {
            return Ok(());
        }
        tracing::debug!(webhook = %w.id, missing = given.is_none(), "Event Grid delivery refused: secret");
        self.refused(Refusal::Signature);
        Err(WebhookError::Unauthorized(UNAUTHORIZED.into()))
    }

    async fn receive_event_grid(
        &self,
        w: &Webhook,
        aeg_event_type: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<Received, WebhookError> {
        let delivery = match event_grid::parse(aeg_event_type, body) {
            Ok(d) => d,
            Err(e) => {
                self.refused(Refusal::Body);
                return Err(WebhookError::BadDelivery(e));
            }
        };
        let events = match delivery {
            event_grid::Delivery::Validation { code } => {
                let mut tx = self.catalog.begin().await?;
                webhooks::record(
                    &mut tx,
                    &w.id,
                    "validated",
                    Some("Event Grid subscription validation"),
                    now,
                )
                .await?;
                tx.commit().await?;
                return Ok(Received::Validation { code });
            }
            event_grid::Delivery::Events(e) => e,
        };
        let (mut accepted, mut duplicates, mut ignored) = (0, 0, 0);
        for e in events {
            let Some(key) = e.key else {
                ignored += 1;
                continue;
            };
            let mut tx = self.catalog.begin().await?;
            let delivery = webhooks::accept(&mut tx, &w.id, &e.id, now).await?;
            tx.commit().await?;
            let Some(delivery) = delivery else {
                duplicates += 1;
                continue;
            };
            accepted += 1;
            let outcome = match key.kind {
                KeyEventKind::NewVersion => self
                    .start(
                        w,
                        "sync_key",
                        json!({"azure_name": key.name, "event": e.event_type}),
                    )
                    .await
                    .map(Some),
                KeyEventKind::NearExpiry | KeyEventKind::Expired => {
                    self.rotate_named(w, &key.name).await.map(|()| None)
                }
            };
            let mut tx = self.catalog.begin().await?;
            match outcome {
                Ok(run) => webhooks::set_run(&mut tx, delivery, run.as_deref(), None).await?,
                Err(err) => {
                    webhooks::set_run(&mut tx, delivery, None, Some(&err.to_string())).await?
                }
            }
            tx.commit().await?;
        }
        Ok(Received::Events {
            accepted,
            duplicates,
            ignored,
        })
    }

    /// Starts a workflow run for a delivery, as the webhook's owner; returns its id.
    async fn start(
        &self,
        w: &Webhook,
        workflow: &str,
        input: Value,
    ) -> Result<String, WebhookError> {
        let access = self.owner(w, workflow).await?;
        let (group, link) = match &w.group_id {
            None => (None, None),
            Some(g) => {
                let group = self
                    .keys
                    .group(&w.account_id, g)
                    .await
                    .map_err(|e| WebhookError::Conflict(e.to_string()))?;
                let link = match group.link.is_some() {
                    true => Some(
                        Link::of_group(&self.catalog, &group)
                            .map_err(|e| WebhookError::Conflict(e.to_string()))?,
                    ),
                    false => None,
                };
                (Some(group), link)
            }
        };
        let handle = self
            .workflows
            .start(RunRequest {
                workflow: workflow.to_string(),
                trigger: Trigger::Webhook,
                access,
                exclusive: crate::workflows::exclusive_for(workflow, w.group_id.as_deref()),
                group,
                link,
                input,
                secrets: vec![],
                pending: None,
                run_id: None,
            })
            .await?;
        Ok(handle.run_id)
    }

    /// Rotates the current virtual key of the webhook's group that has this HSM name, in the
    /// background (the sender is answered at once; the rotation's runs record how it went).
    async fn rotate_named(&self, w: &Webhook, name: &str) -> Result<(), WebhookError> {
        let access = self.owner(w, "rotate").await?;
        let group = w.group_id.clone().unwrap_or_default();
        let mut conn = self.catalog.conn().await?;
        let key = sobjects::by_external_name(&mut conn, &w.account_id, &group, name)
            .await?
            .ok_or_else(|| {
                WebhookError::NotFound(format!(
                    "the group has no key named '{name}' in its HSM (sync it first)"
                ))
            })?;
        drop(conn);
        let keys = self.keys.clone();
        tokio::spawn(async move {
            let spec = RekeySpec {
                key: Some(KeyRef::Kid(key.kid.clone())),
                trigger: Trigger::Webhook,
                ..RekeySpec::default()
            };
            if let Err(e) = keys.rekey(&access, spec).await {
                let already = matches!(&e, KeyError::State(_));
                tracing::warn!(kid = %key.kid, already, "rotation asked for by an Event Grid event failed: {e}");
            }
        });
        Ok(())
    }

    /// The webhook's owner with their rights now, if they may still start what the webhook
    /// starts (a standard webhook's workflow; an Event Grid webhook's syncs and rotations of
    /// its group's keys). A refusal is audited: the delivery stops here.
    async fn owner(&self, w: &Webhook, workflow: &str) -> Result<Access, WebhookError> {
        let mut conn = self.catalog.conn().await?;
        let access = auth::access::load(&mut conn, &w.account_id, &w.owner).await?;
        drop(conn);
        let checked = match access {
            None => Err(
                "the webhook's owner no longer belongs to the account; create the webhook again"
                    .to_string(),
            ),
            Some(a) => match w.kind {
                WebhookKind::Standard => {
                    crate::workflows::may_start(&a, workflow, w.group_id.as_deref())
                        .map(|()| a)
                        .map_err(|e| e.to_string())
                }
                WebhookKind::EventGrid => match &w.group_id {
                    Some(g) if a.can_manage_keys(g) => Ok(a),
                    _ => Err("the webhook's owner may no longer manage the group's keys".into()),
                },
            },
        };
        let why = match checked {
            Ok(a) => return Ok(a),
            Err(why) => why,
        };
        let mut tx = self.catalog.begin().await?;
        Event::system(
            Some(&w.account_id),
            w.owner.id(),
            "webhook.deliver",
            self.clock.now(),
        )
        .object("webhook", &w.id)
        .outcome("denied", why.clone())
        .details(json!({"name": w.name, "workflow": workflow, "owner_kind": w.owner.kind()}))
        .write(&mut tx)
        .await?;
        tx.commit().await?;
        Err(WebhookError::Forbidden(why))
    }

    /// Counts a refused delivery: a metric by reason, never a row each (anyone can send
    /// them).
    fn refused(&self, why: Refusal) {
        self.metrics.webhook_refused(why.as_str());
    }
}
