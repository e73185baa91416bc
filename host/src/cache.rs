//! Caches of what the cryptographic hot path reads from the catalog (keys with their opened
//! material, groups, accounts).
//!
//! Two rules keep a cache from serving a row older than the last committed change to it:
//! - A reader takes a [`Ticket`] before it reads the catalog and may store what it read only
//!   if no entry was forgotten since. Writers forget an entry after their commit, so a row
//!   read before a commit can never be stored after that commit's eviction.
//! - Entries expire (the daemon's clock decides), which bounds how long a change made
//!   elsewhere, such as by another daemon sharing the catalog, can go unseen.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use crate::time::Clock;

/// Entries beyond this count make a store sweep out the expired ones first.
const SWEEP_ABOVE: usize = 50_000;

/// Permission to store what was read after it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

struct Inner<V> {
    /// Bumped by every `forget`.
    generation: u64,
    entries: HashMap<String, (Arc<V>, i64)>,
}

pub struct Cache<V> {
    inner: RwLock<Inner<V>>,
    clock: Clock,
    ttl_secs: i64,
}

impl<V> Cache<V> {
    pub fn new(clock: Clock, ttl_secs: i64) -> Cache<V> {
        Cache {
            inner: RwLock::new(Inner {
                generation: 0,
                entries: HashMap::new(),
            }),
            clock,
            ttl_secs,
        }
    }

    /// The entry, unless it is absent or expired.
    pub fn get(&self, key: &str) -> Option<Arc<V>> {
        let now = self.clock.now();
        let inner = self.inner.read().unwrap();
        inner
            .entries
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(v, _)| v.clone())
    }

    /// Take before reading the catalog.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.inner.read().unwrap().generation)
    }

    /// Stores `value` unless something was forgotten since `ticket` was taken; returns
    /// whether it was stored.
    pub fn put(&self, key: &str, value: Arc<V>, ticket: Ticket) -> bool {
        let now = self.clock.now();
        let mut inner = self.inner.write().unwrap();
        if inner.generation != ticket.0 {
            return false;
        }
        if inner.entries.len() > SWEEP_ABOVE {
            inner.entries.retain(|_, (_, expires)| *expires > now);
        }
        inner
            .entries
            .insert(key.to_string(), (value, now + self.ttl_secs));
        true
    }

    /// Drops an entry; call after the change to it has committed.
    pub fn forget(&self, key: &str) {
        let mut inner = self.inner.write().unwrap();
        inner.generation += 1;
        inner.entries.remove(key);
    }

    /// The entry, or what `load` reads (stored when the rules allow).
    pub async fn get_or_load<E, F>(&self, key: &str, load: F) -> Result<Option<Arc<V>>, E>
    where
        F: Future<Output = Result<Option<V>, E>>,
    {
        if let Some(v) = self.get(key) {
            return Ok(Some(v));
        }
        let ticket = self.ticket();
        let Some(v) = load.await? else {
            return Ok(None);
        };
        let v = Arc::new(v);
        self.put(key, v.clone(), ticket);
        Ok(Some(v))
    }
}

/// The daemon's caches of catalog rows, shared by the key service and the API. (The key
/// service keeps its cache of usable keys itself, made with [`Caches::cache`].)
pub struct Caches {
    pub groups: Cache<crate::catalog::groups::Group>,
    pub accounts: Cache<crate::catalog::accounts::Account>,
    clock: Clock,
    ttl_secs: i64,
}

impl Caches {
    pub fn new(clock: Clock, ttl_secs: i64) -> Caches {
        Caches {
            groups: Cache::new(clock.clone(), ttl_secs),
            accounts: Cache::new(clock.clone(), ttl_secs),
            clock,
            ttl_secs,
        }
    }

    /// A new cache with the same clock and expiry, for a layer above that caches its own.
    pub fn cache<V>(&self) -> Cache<V> {
        Cache::new(self.clock.clone(), self.ttl_secs)
    }

    /// A group of `account`.
    pub async fn group(
        &self,
        catalog: &crate::catalog::Catalog,
        account: &str,
        id: &str,
    ) -> crate::catalog::Result<Option<Arc<crate::catalog::groups::Group>>> {
        let group = self
            .groups
            .get_or_load(id, async {
                let mut conn = catalog.conn().await?;
                crate::catalog::groups::get(&mut conn, account, id).await
            })
            .await?;
        Ok(group.filter(|g| g.account_id == account))
    }

    pub async fn account(
        &self,
        catalog: &crate::catalog::Catalog,
        id: &str,
    ) -> crate::catalog::Result<Option<Arc<crate::catalog::accounts::Account>>> {
        self.accounts
            .get_or_load(id, async {
                let mut conn = catalog.conn().await?;
                crate::catalog::accounts::get(&mut conn, id).await
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_read_before_a_change_is_not_stored_after_it() {
        let c: Cache<&str> = Cache::new(Clock::system(), 60);
        // A reader starts, reads the old row; meanwhile a writer commits and forgets.
        let ticket = c.ticket();
        c.forget("k");
        assert!(!c.put("k", Arc::new("old row"), ticket));
        assert!(c.get("k").is_none(), "the stale row was not stored");
        // A reader that starts after the change stores what it read.
        let ticket = c.ticket();
        assert!(c.put("k", Arc::new("new row"), ticket));
        assert_eq!(*c.get("k").unwrap(), "new row");
        c.forget("k");
        assert!(c.get("k").is_none());
    }

    #[test]
    fn entries_expire_with_the_clock() {
        let clock = Clock::system();
        let c: Cache<u32> = Cache::new(clock.clone(), 30);
        let t = c.ticket();
        c.put("k", Arc::new(1), t);
        clock.advance(29);
        assert!(c.get("k").is_some());
        clock.advance(2);
        assert!(c.get("k").is_none(), "expired");
    }

    #[tokio::test]
    async fn get_or_load_reads_once_while_fresh() {
        let c: Cache<u32> = Cache::new(Clock::system(), 30);
        let mut loads = 0;
        for _ in 0..3 {
            let v = c
                .get_or_load("k", async {
                    loads += 1;
                    Ok::<_, ()>(Some(7))
                })
                .await
                .unwrap();
            assert_eq!(v.as_deref(), Some(&7));
        }
        assert_eq!(loads, 1);
    }
}
