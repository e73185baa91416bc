//! Notifications out: Keyward sends signed Standard Webhooks about key events (rotated,
//! rotation failed, near expiry, expired, and what syncs find: new, soft-deleted, purged
//! keys) to the endpoints an account configures. Managed HSM emits no Event Grid events; this
//! is how its keys' events reach other systems.
//!
//! Events are written to the catalog's outbox in the transaction of the change they report
//! (`catalog::notifications::enqueue`). The [`Deliverer`] sends them from there, at least
//! once, each with the same `webhook-id` on every attempt: only a 2xx counts, redirects are
//! not followed, retries follow the Standard Webhooks schedule (5 s, 5 min, 30 min, 2 h, 5 h,
//! 10 h, 14 h, 20 h, 24 h) or a later `Retry-After`, a 410 disables the endpoint, and so does
//! a message that fails every attempt. Destinations must match the daemon's allowlist
//! (`--notify-allow`), and the addresses a name resolves to are checked before the
//! connection ([`destination`]): an account cannot point Keyward at internal services.

mod destination;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde_json::json;

pub use destination::{Destinations, is_internal};

use crate::audit::Event;
use crate::auth::Access;
use crate::catalog::approvals::AccountProtected;
use crate::catalog::notifications::{self, Endpoint, EventType, Message, secret_context};
use crate::catalog::{Catalog, CatalogError, new_id};
use crate::plugins::HostPattern;
use crate::time::Clock;
use crate::webhooks::signature::Secret;

#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Send what the outbox holds (tests that deliver by hand turn it off).
    pub enabled: bool,
    /// Where endpoints may point. Empty: nowhere (notifications are off).
    pub allowed_hosts: Vec<HostPattern>,
    /// Seconds to wait before the 2nd, 3rd, ... attempt; after the last, the message fails.
    pub retry_secs: Vec<i64>,
    /// A receiver's time to answer.
    pub timeout: Duration,
    /// Time between looks at the outbox (at most 30 s).
    pub interval: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            enabled: true,
            allowed_hosts: vec![],
            // The Standard Webhooks example schedule, after the immediate first attempt.
            retry_secs: vec![5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400],
            timeout: Duration::from_secs(15),
            interval: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// 400.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 403 `ApprovalRequired`: the account's approval policy protects its logging
    /// configuration.
    #[error("This operation requires approval")]
    ApprovalRequired,
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl From<sqlx::Error> for NotifyError {
    fn from(e: sqlx::Error) -> Self {
        NotifyError::Catalog(e.into())
    }
}

fn invalid(field: &str, message: impl Into<String>) -> NotifyError {
    NotifyError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The endpoints of accounts: managed by account administrators.
#[derive(Clone)]
pub struct Notifications {
    catalog: Catalog,
    clock: Clock,
    allowed: Arc<[HostPattern]>,
}

impl Notifications {
    pub fn new(catalog: Catalog, clock: Clock, config: &NotifyConfig) -> Notifications {
        Notifications {
            catalog,
            clock,
            allowed: config.allowed_hosts.clone().into(),
        }
    }

    /// A new endpoint and its signing secret, shown this once.
    pub async fn create(
        &self,
        access: &Access,
        url: &str,
        events: &[String],
    ) -> Result<(Endpoint, String), NotifyError> {
        admin(access)?;
        self.approved(access).await?;
        let parsed = Url::parse(url).map_err(|e| invalid("url", format!("not a URL: {e}")))?;
        if allowed(&self.allowed, &parsed) {
            // Checked now for a clear answer, and again at every send (a name may move).
            let dest = Destinations::new(&self.allowed);
            dest.check_url(&parsed).map_err(|e| invalid("url", e))?;
            if let Some(host) = parsed.host_str()
                && host.parse::<std::net::IpAddr>().is_err()
                && !host.starts_with('[')
            {
                dest.resolve_checked(host)
                    .await
                    .map_err(|e| invalid("url", e))?;
            }
        } else {
            // The daemon's configuration refuses the destination: not the request's form.
            return Err(NotifyError::Forbidden(format!(
                "url: {}",
                if self.allowed.is_empty() {
                    "this daemon sends no notifications (start it with --notify-allow <host>)"
                        .to_string()
                } else {
                    format!(
                        "{url} is not among the destinations this daemon may send to (--notify-allow)"
                    )
                },
            )));
        }
        let events = events
            .iter()
            .map(|e| {
                EventType::parse(e).ok_or_else(|| {
                    invalid(
                        "events",
                        format!(
                            "'{e}' is not an event ({})",
                            EventType::ALL.map(EventType::as_str).join(", ")
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let secret = Secret::generate();
        let id = new_id();
        let now = self.clock.now();
        let e = Endpoint {
            secret: self.catalog.seal(&secret_context(&id), secret.bytes()),
            id,
            account_id: access.account_id.clone(),
            url: parsed.to_string(),
            events,
            enabled: true,
            disabled_reason: None,
            created_by: access.principal.id().to_string(),
            created_at: now,
        };
        let mut tx = self.catalog.begin().await?;
        notifications::insert_endpoint(&mut tx, &e).await?;
        Event::new(Some(&access.account_id), &access.principal, "notification_endpoint.create", now)
            .object("notification_endpoint", &e.id)
            .details(json!({"url": e.url, "events": e.events.iter().map(|t| t.as_str()).collect::<Vec<_>>()}))
            .write(&mut tx)
            .await?;
        tx.commit().await?;
        Ok((e, secret.display()))
    }

    pub async fn list(&self, access: &Access) -> Result<Vec<Endpoint>, NotifyError> {
        admin(access)?;
        let mut conn = self.catalog.conn().await?;
        Ok(notifications::endpoints_of(&mut conn, &access.account_id).await?)
    }

    pub async fn get(&self, access: &Access, id: &str) -> Result<Endpoint, NotifyError> {
        admin(access)?;
        if !crate::catalog::is_id(id) {
            return Err(invalid("id", format!("'{id}' is not a valid endpoint id")));
        }
        let mut conn = self.catalog.conn().await?;
        notifications::endpoint(&mut conn, &access.account_id, id)
            .await?
            .ok_or_else(|| NotifyError::NotFound(format!("no notification endpoint {id}")))
    }

    /// Enables an endpoint again (after a 410 or persistent failure) or disables it.
    pub async fn set_enabled(
        &self,
        access: &Access,
        id: &str,
        enabled: bool,
    ) -> Result<Endpoint, NotifyError> {
        let e = self.get(access, id).await?;
        self.approved(access).await?;
        let mut tx = self.catalog.begin().await?;
        let reason = (!enabled).then_some("disabled by an administrator");
        notifications::set_enabled(&mut tx, &access.account_id, id, enabled, reason).await?;
        Event::new(
            Some(&access.account_id),
            &access.principal,
            if enabled {
                "notification_endpoint.enable"
            } else {
                "notification_endpoint.disable"
            },
            self.clock.now(),
        )
        .object("notification_endpoint", &e.id)
        .write(&mut tx)
        .await?;
        tx.commit().await?;
        self.get(access, id).await
    }

    /// Where the account's events go is its logging configuration: under an account policy
    /// that protects it, endpoints change only by an approved request.
    async fn approved(&self, access: &Access) -> Result<(), NotifyError> {
        let mut c = self.catalog.conn().await?;
        if crate::quorum::account_allows(&mut c, access, AccountProtected::LoggingConfig).await? {
            Ok(())
        } else {
            Err(NotifyError::ApprovalRequired)
        }
    }

    pub async fn delete(&self, access: &Access, id: &str) -> Result<(), NotifyError> {
        let e = self.get(access, id).await?;
        self.approved(access).await?;
        let mut tx = self.catalog.begin().await?;
        notifications::delete_endpoint(&mut tx, &access.account_id, id).await?;
        Event::new(
            Some(&access.account_id),
            &access.principal,
            "notification_endpoint.delete",
            self.clock.now(),
        )
        .object("notification_endpoint", &e.id)
        .write(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// An endpoint's latest messages, newest first.
    pub async fn messages(
        &self,
        access: &Access,
        id: &str,
        limit: u32,
    ) -> Result<Vec<Message>, NotifyError> {
        let e = self.get(access, id).await?;
        let mut conn = self.catalog.conn().await?;
        Ok(notifications::messages_of(&mut conn, &access.account_id, &e.id, limit).await?)
    }
}

fn admin(access: &Access) -> Result<(), NotifyError> {
    if access.is_account_admin() {
        Ok(())
    } else {
        Err(NotifyError::Forbidden(
            "only account administrators manage notification endpoints".into(),
        ))
    }
}

fn allowed(patterns: &[HostPattern], url: &Url) -> bool {
    patterns.iter().any(|p| p.matches(url))
}

/// What one delivery round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: usize,
    pub retried: usize,
    pub failed: usize,
}

/// Sends the outbox.
pub struct Deliverer {
    catalog: Catalog,
    clock: Clock,
    config: NotifyConfig,
    /// The HTTP client resolves names through these checks.
    http: reqwest::Client,
    destinations: Destinations,
    metrics: Arc<crate::metrics::Metrics>,
}

/// How one attempt went.
enum Attempt {
    Delivered,
    /// Gone (410): the endpoint is disabled.
    Gone,
    Failed {
        error: String,
        retry_after: Option<i64>,
    },
}

impl Deliverer {
    pub fn new(
        catalog: Catalog,
        clock: Clock,
        config: NotifyConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Deliverer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let destinations = Destinations::new(&config.allowed_hosts);
        let http = reqwest::Client::builder()
            .tls_backend_rustls()
            .dns_resolver(Arc::new(destinations.clone()))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .user_agent(concat!("Keyward/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client");
        Deliverer {
            catalog,
            clock,
            config,
            http,
            destinations,
            metrics,
        }
    }

    /// Rounds until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let pause = self.config.interval.min(crate::scheduler::MAX_SLEEP);
        loop {
            if *shutdown.borrow() {
                return;
            }
            if let Err(e) = self.deliver_due().await {
                tracing::error!("delivering notifications: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// One round: every message due now, an attempt each (messages for one endpoint in
    /// order, endpoints side by side).
    pub async fn deliver_due(&self) -> Result<DeliveryReport, CatalogError> {
        let now = self.clock.now();
        let mut tx = self.catalog.begin().await?;
        let due = notifications::take_due(&mut tx, now, now + 120, 200).await?;
        tx.commit().await?;
        let mut report = DeliveryReport::default();
        let mut gone = std::collections::HashSet::new();
        for m in due {
            if gone.contains(&m.endpoint_id) {
                continue;
            }
            let endpoint = {
                let mut conn = self.catalog.conn().await?;
                notifications::endpoint(&mut conn, &m.account_id, &m.endpoint_id).await?
            };
            let Some(endpoint) = endpoint.filter(|e| e.enabled) else {
                let mut tx = self.catalog.begin().await?;
                notifications::attempt_failed(&mut tx, &m.id, "the endpoint is disabled", None)
                    .await?;
                tx.commit().await?;
                report.failed += 1;
                continue;
            };
            let started = std::time::Instant::now();
            let attempt = self.send(&endpoint, &m).await;
            let seconds = started.elapsed().as_secs_f64();
            let now = self.clock.now();
            let mut tx = self.catalog.begin().await?;
            match attempt {
                Attempt::Delivered => {
                    notifications::delivered(&mut tx, &m.id, now).await?;
                    report.delivered += 1;
                    self.metrics.delivery("delivered", seconds);
                }
                Attempt::Gone => {
                    let why = "the receiver answered 410 Gone";
                    notifications::attempt_failed(&mut tx, &m.id, why, None).await?;
                    notifications::set_enabled(
                        &mut tx,
                        &m.account_id,
                        &endpoint.id,
                        false,
                        Some(why),
                    )
                    .await?;
                    notifications::fail_pending(&mut tx, &endpoint.id, why).await?;
                    disabled_event(&m, why, now).write(&mut tx).await?;
                    gone.insert(endpoint.id.clone());
                    report.failed += 1;
                    self.metrics.delivery("failed", seconds);
                }
                Attempt::Failed { error, retry_after } => {
                    let n = m.attempts as usize; // attempts before this one
                    match self.config.retry_secs.get(n) {
                        Some(wait) => {
                            let wait = retry_after.map_or(*wait, |r| r.clamp(*wait, 86_400));
                            notifications::attempt_failed(&mut tx, &m.id, &error, Some(now + wait))
                                .await?;
                            report.retried += 1;
                            self.metrics.delivery("retried", seconds);
                        }
                        None => {
                            let why = format!("every attempt failed; the last: {error}");
                            notifications::attempt_failed(&mut tx, &m.id, &why, None).await?;
                            notifications::set_enabled(
                                &mut tx,
                                &m.account_id,
                                &endpoint.id,
                                false,
                                Some(&why),
                            )
                            .await?;
                            notifications::fail_pending(&mut tx, &endpoint.id, &why).await?;
                            disabled_event(&m, &why, now).write(&mut tx).await?;
                            gone.insert(endpoint.id.clone());
                            report.failed += 1;
                            self.metrics.delivery("failed", seconds);
                        }
                    }
                }
            }
            tx.commit().await?;
        }
        Ok(report)
    }

    async fn send(&self, e: &Endpoint, m: &Message) -> Attempt {
        let Ok(url) = Url::parse(&e.url) else {
            return failed("the endpoint's URL no longer parses".into());
        };
        if !allowed(&self.config.allowed_hosts, &url) {
            return failed("the destination is no longer allowed (--notify-allow)".into());
        }
        if let Err(e) = self.destinations.check_url(&url) {
            return failed(e);
        }
        let secret = match self.catalog.open_sealed(&secret_context(&e.id), &e.secret) {
            Ok(s) => Secret::from_bytes(s),
            Err(err) => return failed(format!("the endpoint's secret cannot be opened: {err}")),
        };
        let ts = self.clock.now();
        let sent = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &m.id)
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                secret.sign(&m.id, ts, m.payload.as_bytes()),
            )
            .body(m.payload.clone())
            .send()
            .await;
        match sent {
            Err(err) => failed(format!(
                "could not deliver: {}",
                crate::plugins::http::error_chain(&err)
            )),
            Ok(r) if r.status().is_success() => Attempt::Delivered,
            Ok(r) if r.status() == reqwest::StatusCode::GONE => Attempt::Gone,
            Ok(r) => Attempt::Failed {
                error: format!("the receiver answered {}", r.status()),
                retry_after: r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok()),
            },
        }
    }
}

fn failed(error: String) -> Attempt {
    Attempt::Failed {
        error,
        retry_after: None,
    }
}

fn disabled_event(m: &Message, why: &str, now: i64) -> Event {
    Event::system(
        Some(&m.account_id),
        "notifier",
        "notification_endpoint.disable",
        now,
    )
    .object("notification_endpoint", &m.endpoint_id)
    .outcome("failure", why.to_string())
}
