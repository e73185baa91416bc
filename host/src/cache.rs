//! Caches of what the cryptographic hot path reads from the catalog (keys with their opened
//! material, groups, accounts).
//!
//! Two rules keep a cache from serving a row older than the last committed change to it:
//! - A reader takes a [`Ticket`] before it reads the catalog and may store what it read only
//!   if no entry was forgotten since. Writers forget an entry after their commit, so a row
//!   read before a commit can never be stored after that commit's eviction.
//! - Entries expire (the daemon's clock decides), which bounds how long a change made
//!   elsewhere can go unseen when nothing else says so.
//!
//! Daemons sharing a PostgreSQL catalog tell each other what they forgot ([`Bus`], over the
//! catalog's change feed): a change committed on one daemon is forgotten by the others as
//! soon as the notification arrives (milliseconds), and within the expiry (`cache_ttl_secs`,
//! 30 s by default) if it was lost; a listener that reconnects drops everything it cached.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock, Weak};

use tokio::sync::mpsc::UnboundedSender;

use crate::catalog::changes::{self, Change, Feed};
use crate::time::Clock;

/// The key an announcement uses for "every entry of the cache".
const EVERY_ENTRY: &str = "*";

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

struct Shared<V> {
    inner: RwLock<Inner<V>>,
    clock: Clock,
    ttl_secs: i64,
}

/// What the bus may do to a cache it holds: drop an entry, or everything (`None`).
trait Forget: Send + Sync {
    fn forget_local(&self, key: Option<&str>);
}

impl<V: Send + Sync> Forget for Shared<V> {
    fn forget_local(&self, key: Option<&str>) {
        let mut inner = self.inner.write().unwrap();
        inner.generation += 1;
        match key {
            Some(k) => {
                inner.entries.remove(k);
            }
            None => inner.entries.clear(),
        }
    }
}

pub struct Cache<V> {
    shared: Arc<Shared<V>>,
    /// Where a forgotten entry is announced to the other daemons, under the cache's name.
    bus: Option<(&'static str, Arc<Bus>)>,
}

impl<V: Send + Sync + 'static> Cache<V> {
    pub fn new(clock: Clock, ttl_secs: i64) -> Cache<V> {
        Cache {
            shared: Arc::new(Shared {
                inner: RwLock::new(Inner {
                    generation: 0,
                    entries: HashMap::new(),
                }),
                clock,
                ttl_secs,
            }),
            bus: None,
        }
    }

    /// A cache whose forgotten entries the other daemons forget too, and which forgets what
    /// they announce under `name`.
    fn on_bus(clock: Clock, ttl_secs: i64, name: &'static str, bus: &Arc<Bus>) -> Cache<V> {
        let mut cache = Cache::new(clock, ttl_secs);
        let held: Arc<dyn Forget> = cache.shared.clone();
        bus.caches
            .lock()
            .unwrap()
            .push((name, Arc::downgrade(&held)));
        cache.bus = Some((name, bus.clone()));
        cache
    }

    /// The entry, unless it is absent or expired.
    pub fn get(&self, key: &str) -> Option<Arc<V>> {
        let now = self.shared.clock.now();
        let inner = self.shared.inner.read().unwrap();
        inner
            .entries
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(v, _)| v.clone())
    }

    /// Take before reading the catalog.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.shared.inner.read().unwrap().generation)
    }

    /// Stores `value` unless something was forgotten since `ticket` was taken; returns
    /// whether it was stored.
    pub fn put(&self, key: &str, value: Arc<V>, ticket: Ticket) -> bool {
        let now = self.shared.clock.now();
        let mut inner = self.shared.inner.write().unwrap();
        if inner.generation != ticket.0 {
            return false;
        }
        if inner.entries.len() > SWEEP_ABOVE {
            inner.entries.retain(|_, (_, expires)| *expires > now);
        }
        inner
            .entries
            .insert(key.to_string(), (value, now + self.shared.ttl_secs));
        true
    }

    /// Drops an entry here and on the other daemons; call after the change to it has
    /// committed.
    pub fn forget(&self, key: &str) {
        self.shared.forget_local(Some(key));
        if let Some((name, bus)) = &self.bus {
            bus.announce(name, key);
        }
    }

    /// Drops every entry here and on the other daemons (a change that touches entries the
    /// writer cannot name, such as every session of a user); call after the commit.
    pub fn forget_all(&self) {
        self.shared.forget_local(None);
        if let Some((name, bus)) = &self.bus {
            bus.announce(name, EVERY_ENTRY);
        }
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

/// Carries forgotten entries between the daemons sharing a catalog: out through the change
/// feed's publisher, in from its listener (see [`changes`]).
pub struct Bus {
    /// This daemon's id, so that it ignores its own announcements.
    me: String,
    caches: Mutex<Vec<(&'static str, Weak<dyn Forget>)>>,
    out: Mutex<Option<UnboundedSender<Change>>>,
}

impl Bus {
    fn announce(&self, cache: &str, key: &str) {
        if let Some(out) = self.out.lock().unwrap().as_ref() {
            let _ = out.send(Change {
                origin: self.me.clone(),
                cache: cache.to_string(),
                key: key.to_string(),
            });
        }
    }

    /// What the listener heard: forget the entry, or everything after a gap.
    pub fn heard(&self, feed: &Feed) {
        let caches = self.caches.lock().unwrap();
        for (name, cache) in caches.iter() {
            let Some(cache) = cache.upgrade() else {
                continue;
            };
            match feed {
                Feed::Changed(c) if c.cache == *name && c.key == EVERY_ENTRY => {
                    cache.forget_local(None)
                }
                Feed::Changed(c) if c.cache == *name => cache.forget_local(Some(&c.key)),
                Feed::Changed(_) => {}
                Feed::Resync => cache.forget_local(None),
            }
        }
    }
}

/// The daemon's caches of catalog rows, shared by the key service and the API. (The key
/// service keeps its cache of usable keys itself, made with [`Caches::cache`].)
pub struct Caches {
    pub groups: Cache<crate::catalog::groups::Group>,
    pub accounts: Cache<crate::catalog::accounts::Account>,
    bus: Arc<Bus>,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
    clock: Clock,
    ttl_secs: i64,
}

impl Caches {
    /// Caches of daemon `me`; [`Caches::connect`] joins them to the other daemons'.
    pub fn new(clock: Clock, ttl_secs: i64, me: &str) -> Caches {
        let bus = Arc::new(Bus {
            me: me.to_string(),
            caches: Mutex::new(Vec::new()),
            out: Mutex::new(None),
        });
        Caches {
            groups: Cache::on_bus(clock.clone(), ttl_secs, "groups", &bus),
            accounts: Cache::on_bus(clock.clone(), ttl_secs, "accounts", &bus),
            bus,
            listener: Mutex::new(None),
            clock,
            ttl_secs,
        }
    }

    /// Joins the change feed of a PostgreSQL catalog (nothing to join on SQLite): what this
    /// daemon forgets, the others forget, and the other way round.
    pub fn connect(&self, catalog: &crate::catalog::Catalog) {
        *self.bus.out.lock().unwrap() = changes::publisher(catalog.clone());
        let bus = self.bus.clone();
        *self.listener.lock().unwrap() =
            changes::listen(catalog.clone(), self.bus.me.clone(), move |feed| {
                bus.heard(&feed)
            });
    }

    /// Stops listening (at shutdown, before the catalog closes).
    pub fn disconnect(&self) {
        if let Some(l) = self.listener.lock().unwrap().take() {
            l.abort();
        }
        self.bus.out.lock().unwrap().take();
    }

    /// A new cache with the same clock and expiry, kept in step with the other daemons under
    /// `name`, for a layer above that caches its own.
    pub fn cache<V: Send + Sync + 'static>(&self, name: &'static str) -> Cache<V> {
        Cache::on_bus(self.clock.clone(), self.ttl_secs, name, &self.bus)
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
