//! The change feed between daemons sharing a PostgreSQL catalog: what a daemon cached may
//! have been changed by another. Each daemon publishes what it changed (`pg_notify` on
//! [`CHANNEL`], after its commit) and listens for what the others changed. A notification
//! names the daemon, the cache and the entry; a listener that lost its connection may have
//! missed some, and says so with [`Feed::Resync`] so that the caches start afresh.
//!
//! On SQLite there is one daemon per catalog and no feed.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

use super::Catalog;
use super::db::Pool;

/// The PostgreSQL notification channel.
pub const CHANNEL: &str = "keyward_changes";

/// A cached entry that changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The daemon that changed it (a daemon ignores its own).
    #[serde(rename = "d")]
    pub origin: String,
    /// Which cache: `groups`, `accounts`, `keys`, ...
    #[serde(rename = "c")]
    pub cache: String,
    /// The entry's key in that cache (a row id).
    #[serde(rename = "k")]
    pub key: String,
}

/// What a listener hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// Another daemon changed an entry.
    Changed(Change),
    /// The listener (re)connected: changes may have been missed; drop everything cached.
    Resync,
}

/// Sends changes to the other daemons, in batches (one statement per batch), from a task.
pub fn publisher(catalog: Catalog) -> Option<mpsc::UnboundedSender<Change>> {
    let Pool::Postgres(_) = catalog.pool() else {
        return None;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Change>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
                if batch.len() >= 500 {
                    break;
                }
            }
            let payloads: Vec<String> = batch
                .iter()
                .map(|c| serde_json::to_string(c).expect("serialize"))
                .collect();
            if let Err(e) = notify(&catalog, &payloads).await {
                // The others' entries expire with their TTL; nothing more can be done here.
                tracing::warn!(error = %e, changes = payloads.len(), "could not tell the other daemons of changes");
            }
        }
    });
    Some(tx)
}

async fn notify(catalog: &Catalog, payloads: &[String]) -> Result<(), sqlx::Error> {
    let Pool::Postgres(hosts) = catalog.pool() else {
        return Ok(());
    };
    let mut conn = hosts.acquire().await?;
    sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(CHANNEL)
        .bind(payloads)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Listens for the other daemons' changes until the returned sender side is dropped; each
/// is passed to `heard`, as is a [`Feed::Resync`] at every (re)connection.
pub fn listen(
    catalog: Catalog,
    me: String,
    heard: impl Fn(Feed) + Send + Sync + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let Pool::Postgres(hosts) = catalog.pool().clone() else {
        return None;
    };
    Some(tokio::spawn(async move {
        loop {
            let listener = async {
                let pool = hosts.pool().await?;
                let mut l = PgListener::connect_with(&pool).await?;
                l.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let mut l = match listener.await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for other daemons' changes; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            heard(Feed::Resync);
            loop {
                match l.try_recv().await {
                    Ok(Some(n)) => match serde_json::from_str::<Change>(n.payload()) {
                        Ok(change) if change.origin != me => heard(Feed::Changed(change)),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "an unreadable change notification"),
                    },
                    // The connection was lost and is made again: what was sent meanwhile
                    // is gone.
                    Ok(None) => heard(Feed::Resync),
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the change feed; listening again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                }
            }
        }
    }))
}
