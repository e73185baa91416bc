//! Writing the audit log without slowing the hot path down.
//!
//! Changes to the catalog write their audit event in the same transaction as the change, so a
//! committed change always has its event; so do changes in external key managers and
//! exports of key material, before their outcome is reported. Events that change nothing go
//! through a channel to a writer task that inserts them in batches, together with the keys'
//! last-use times. A cryptographic operation's event is [`Auditor::record`]ed: its answer
//! waits until the event is committed (group commit: whatever is queued when the writer
//! turns to it shares one transaction, and the requests that come in meanwhile share the
//! next), so a daemon killed at any moment loses no acknowledged operation's event. Other
//! events ([`Auditor::later`]: denials, reads) linger up to 20 ms for company. A batch that
//! cannot be written is retried, with backoff, until it is: none is dropped; an operation
//! whose event is not written within [`DURABLE_WAIT`] is answered 503. While the writer
//! waits the channel fills, and then the operations that would add to it wait too, so nothing
//! goes unrecorded. A flush on shutdown writes what is queued.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::auth::Principal;
use crate::catalog::audit::AuditEvent;
use crate::catalog::{self, Catalog, Conn};

const QUEUE: usize = 16_384;
const BATCH: usize = 1_024;
const LINGER: Duration = Duration::from_millis(20);
/// Retries of a batch that failed start after this and double up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long an operation waits for its event to be committed before it is refused.
pub const DURABLE_WAIT: Duration = Duration::from_secs(10);

enum Item {
    Event(Box<AuditEvent>),
    /// An event whose caller waits until it is committed.
    Durable(Box<AuditEvent>, oneshot::Sender<()>),
    Used {
        kid: String,
        at: i64,
    },
    Flush(oneshot::Sender<()>),
}

impl Item {
    /// Someone waits on this item: write the batch now, without lingering.
    fn awaited(&self) -> bool {
        matches!(self, Item::Durable(..) | Item::Flush(_))
    }
}

/// An event that could not be committed in time: the operation is not answered.
#[derive(Debug, thiserror::Error)]
#[error(
    "the audit log could not be written; the operation is not answered until it can be (the daemon's log says why)"
)]
pub struct AuditUnavailable;

#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Item>,
}

/// Builds audit events.
pub struct Event(AuditEvent);

impl Event {
    pub fn new(account: Option<&str>, actor: &Principal, action: &str, at: i64) -> Event {
        Event(AuditEvent {
            id: 0,
            account_id: account.map(str::to_string),
            at,
            actor_kind: actor.kind().to_string(),
            actor_id: actor.id().to_string(),
            action: action.to_string(),
            object_kind: None,
            object_id: None,
            outcome: "success".into(),
            message: None,
            details: None,
        })
    }

    pub fn system(account: Option<&str>, actor: &str, action: &str, at: i64) -> Event {
        let mut e = Event::new(
            account,
            &Principal::User {
                user_id: actor.into(),
                email: String::new(),
            },
            action,
            at,
        );
        e.0.actor_kind = "system".into();
        e
    }

    pub fn object(mut self, kind: &str, id: &str) -> Event {
        self.0.object_kind = Some(kind.to_string());
        self.0.object_id = Some(id.to_string());
        self
    }

    pub fn outcome(mut self, outcome: &str, message: impl Into<String>) -> Event {
        self.0.outcome = outcome.to_string();
        self.0.message = Some(message.into());
        self
    }

    pub fn details(mut self, details: Value) -> Event {
        if !details.is_null() {
            self.0.details = Some(details);
        }
        self
    }

    /// Writes the event inside the caller's transaction.
    pub async fn write(self, tx: &mut Conn) -> catalog::Result<()> {
        catalog::audit::insert(tx, &self.0).await
    }
}

impl Auditor {
    /// Starts the batching writer.
    pub fn start(catalog: Catalog) -> Auditor {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(catalog, rx));
        Auditor { tx }
    }

    /// Queues an event that does not belong to a transaction.
    pub async fn later(&self, event: Event) {
        if self.tx.send(Item::Event(Box::new(event.0))).await.is_err() {
            tracing::error!("the audit writer is gone; an event was not recorded");
        }
    }

    /// Queues an event and returns once it is committed, or refuses after [`DURABLE_WAIT`]
    /// (the event is still written when the catalog comes back).
    pub async fn record(&self, event: Event) -> Result<(), AuditUnavailable> {
        let (done, committed) = oneshot::channel();
        self.tx
            .send(Item::Durable(Box::new(event.0), done))
            .await
            .map_err(|_| AuditUnavailable)?;
        match tokio::time::timeout(DURABLE_WAIT, committed).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(AuditUnavailable),
        }
    }

    pub async fn key_used(&self, kid: &str, at: i64) {
        let _ = self
            .tx
            .send(Item::Used {
                kid: kid.to_string(),
                at,
            })
            .await;
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Item::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Flushes, but gives up after `limit` (at shutdown, with a catalog that cannot be
    /// written); says so in the log.
    pub async fn flush_within(&self, limit: Duration) {
        if tokio::time::timeout(limit, self.flush()).await.is_err() {
            tracing::error!(
                "the audit log could not be written within {limit:?} at shutdown; the queued events are lost"
            );
        }
    }
}

async fn writer(catalog: Catalog, mut rx: mpsc::Receiver<Item>) {
    // One batch is written while the next gathers. (Several in flight on PostgreSQL measured
    // slower: they take the connections the requests need.)
    let writing = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(BATCH);
        let mut awaited = first.awaited();
        batch.push(first);
        // What queued up while the last batch was written goes in this one.
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(item) => {
                    awaited |= item.awaited();
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        // Nobody waits: linger for company, until someone does.
        let deadline = tokio::time::Instant::now() + LINGER;
        while !awaited && batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => {
                    awaited = item.awaited();
                    batch.push(item);
                }
                _ => break,
            }
        }
        // Batches are written in order, so a flush answers once everything before it is.
        let permit = writing
            .clone()
            .acquire_owned()
            .await
            .expect("the writer's semaphore is never closed");
        let catalog = catalog.clone();
        tokio::spawn(async move {
            let mut delay = RETRY_FIRST;
            while let Err(e) = write_batch(&catalog, &mut batch).await {
                tracing::error!(
                    events = batch.len(),
                    "could not write audit events, retrying in {delay:?}: {e}"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
            drop(permit);
            for item in batch.drain(..) {
                if let Item::Flush(done) | Item::Durable(_, done) = item {
                    let _ = done.send(());
                }
            }
        });
    }
}

async fn write_batch(catalog: &Catalog, batch: &mut [Item]) -> catalog::Result<()> {
    let mut tx = catalog.begin().await?;
    let mut used: std::collections::HashMap<&str, i64> = Default::default();
    let mut events = Vec::with_capacity(batch.len());
    for item in batch.iter() {
        match item {
            Item::Event(e) | Item::Durable(e, _) => events.push(&**e),
            Item::Used { kid, at } => {
                let t = used.entry(kid).or_default();
                *t = (*t).max(*at);
            }
            Item::Flush(_) => {}
        }
    }
    catalog::audit::insert_many(&mut tx, &events).await?;
    for (kid, at) in used {
        catalog::sobjects::mark_used(&mut tx, kid, at).await?;
    }
    tx.commit().await?;
    Ok(())
}
