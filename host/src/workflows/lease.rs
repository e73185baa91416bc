//! A run's hold on its exclusive key (one sync of a group at a time, ...) across every daemon
//! sharing the catalog: a lease row (`catalog::leases`, timed by the database's clock) taken
//! before the run starts and renewed every third of its TTL ([`TTL`] by default, so every 5 s)
//! while it runs. When a renewal fails (the database is unreachable, or the lease was lost)
//! the run is told to stop at once, two renewal periods before the lease could run out and
//! another daemon take the work over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::catalog::{Catalog, CatalogError, leases};

/// How long a lease lasts without renewal, by default.
pub const TTL: Duration = Duration::from_secs(15);

/// A held lease, renewed until dropped (and then given up).
pub struct RunLease {
    catalog: Catalog,
    name: String,
    holder: String,
    stop: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

/// Takes the lease of exclusive key `key` for run `run_id` of daemon `holder`. `Err(run)`:
/// another run holds it (its id, when known).
pub async fn take(
    catalog: &Catalog,
    holder: &str,
    key: &str,
    run_id: &str,
    ttl: Duration,
) -> Result<Result<RunLease, Option<String>>, CatalogError> {
    let name = format!("run:{key}");
    let ttl_ms = ttl.as_millis() as i64;
    let renew = ttl / 3;
    let mut c = catalog.conn().await?;
    if !leases::take(&mut c, &name, holder, Some(run_id), ttl_ms).await? {
        let other = leases::holder_of(&mut c, &name).await?;
        return Ok(Err(other.and_then(|l| l.detail)));
    }
    drop(c);
    let stop = Arc::new(AtomicBool::new(false));
    let renewer = tokio::spawn({
        let (catalog, name, holder, run_id, stop) = (
            catalog.clone(),
            name.clone(),
            holder.to_string(),
            run_id.to_string(),
            stop.clone(),
        );
        async move {
            loop {
                tokio::time::sleep(renew).await;
                let renewed = async {
                    let mut c = catalog.conn().await?;
                    leases::take(&mut c, &name, &holder, Some(&run_id), ttl_ms).await
                };
                match tokio::time::timeout(renew, renewed).await {
                    Ok(Ok(true)) => {}
                    outcome => {
                        tracing::warn!(run = %run_id, lease = %name, ?outcome, "the run's lease could not be renewed; stopping the run");
                        stop.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        }
    });
    Ok(Ok(RunLease {
        catalog: catalog.clone(),
        name,
        holder: holder.to_string(),
        stop,
        renewer,
    }))
}

impl RunLease {
    /// Set when the run must stop: its lease is no longer certain.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }
}

impl Drop for RunLease {
    fn drop(&mut self) {
        self.renewer.abort();
        let (catalog, name, holder) =
            (self.catalog.clone(), self.name.clone(), self.holder.clone());
        // Given up in the background: dropping happens where nothing can be awaited. Were it
        // not given up, it would expire after its TTL.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Ok(mut c) = catalog.conn().await {
                    let _ = leases::release(&mut c, &name, &holder).await;
                }
            });
        }
    }
}
