//! Failed logins, counted per account name (email, or application id) and per source
//! address over a sliding window, in the catalog, so that every daemon sharing it counts the
//! same failures. Past a limit, logins from there are refused (429 with `Retry-After`) until
//! the oldest failure leaves the window, so guessing passwords costs a lot of time while a
//! user who mistypes a few times is not locked out for long.

use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::catalog::sessions::{self as stored, Scope};
use crate::catalog::{self, Catalog};
use crate::time::Clock;

/// The longest window failures are kept for; older ones are purged.
pub const LONGEST_WINDOW_SECS: i64 = 3600;

#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Failures of one account name within the window.
    pub per_name: usize,
    /// Failures from one source address within the window.
    pub per_address: usize,
    pub window_secs: i64,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        ThrottleLimits {
            per_name: 5,
            per_address: 30,
            window_secs: 300,
        }
    }
}

pub struct LoginThrottle {
    catalog: Catalog,
    clock: Clock,
    limits: ThrottleLimits,
}

/// Seconds until a subject has room again, given its newest failures (newest first, at most
/// `limit` of them, all within the window), if it is full.
fn wait(recent: &[i64], limit: usize, now: i64, span: i64) -> Option<u64> {
    (limit > 0 && recent.len() >= limit).then(|| {
        let oldest = recent[limit - 1];
        (oldest + span - now).max(1) as u64
    })
}

/// The stored form of an account name: its SHA-256, since people type passwords there.
fn name_subject(name: &str) -> Vec<u8> {
    Sha256::digest(name.to_lowercase().as_bytes()).to_vec()
}

fn address_subject(address: IpAddr) -> Vec<u8> {
    address.to_string().into_bytes()
}

impl LoginThrottle {
    pub fn new(catalog: Catalog, clock: Clock, limits: ThrottleLimits) -> LoginThrottle {
        LoginThrottle {
            catalog,
            clock,
            limits: ThrottleLimits {
                window_secs: limits.window_secs.clamp(1, LONGEST_WINDOW_SECS),
                ..limits
            },
        }
    }

    /// `Err(seconds)` when a login for `name` from `address` must wait.
    pub async fn check(
        &self,
        name: &str,
        address: Option<IpAddr>,
    ) -> catalog::Result<Result<(), u64>> {
        let now = self.clock.now();
        let span = self.limits.window_secs;
        let mut c = self.catalog.conn().await?;
        let names = stored::recent_failures(
            &mut c,
            Scope::Name,
            &name_subject(name),
            now - span,
            self.limits.per_name,
        )
        .await?;
        let by_name = wait(&names, self.limits.per_name, now, span);
        let by_address = match address {
            Some(a) => {
                let recent = stored::recent_failures(
                    &mut c,
                    Scope::Address,
                    &address_subject(a),
                    now - span,
                    self.limits.per_address,
                )
                .await?;
                wait(&recent, self.limits.per_address, now, span)
            }
            None => None,
        };
        Ok(match by_name.max(by_address) {
            Some(secs) => Err(secs),
            None => Ok(()),
        })
    }

    pub async fn failed(&self, name: &str, address: Option<IpAddr>) -> catalog::Result<()> {
        let now = self.clock.now();
        let mut tx = self.catalog.begin().await?;
        stored::record_failure(&mut tx, Scope::Name, &name_subject(name), now).await?;
        if let Some(a) = address {
            stored::record_failure(&mut tx, Scope::Address, &address_subject(a), now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A successful login clears the failures of its name (not of its address).
    pub async fn succeeded(&self, name: &str) -> catalog::Result<()> {
        let mut c = self.catalog.conn().await?;
        stored::clear_failures(&mut c, Scope::Name, &name_subject(name)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_past_the_limit_wait_until_the_window_moves() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(
            &dir.path().join("catalog.db"),
            catalog::MasterKey::generate(),
        )
        .await
        .unwrap();
        let clock = Clock::system();
        let t = LoginThrottle::new(
            catalog,
            clock.clone(),
            ThrottleLimits {
                per_name: 3,
                per_address: 5,
                window_secs: 60,
            },
        );
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(t.check("A@example.com", Some(addr)).await.unwrap().is_ok());
            t.failed("a@example.com", Some(addr)).await.unwrap();
        }
        let wait = t.check("a@example.com", None).await.unwrap().unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        // Other names from the same address still get their chance, up to its limit.
        t.failed("b@example.com", Some(addr)).await.unwrap();
        assert!(t.check("b@example.com", Some(addr)).await.unwrap().is_ok());
        t.failed("c@example.com", Some(addr)).await.unwrap();
        assert!(
            t.check("d@example.com", Some(addr)).await.unwrap().is_err(),
            "the address is over its limit"
        );
        assert!(t.check("d@example.com", None).await.unwrap().is_ok());
        clock.advance(61);
        assert!(
            t.check("a@example.com", Some(addr)).await.unwrap().is_ok(),
            "the window moved"
        );
        t.failed("a@example.com", None).await.unwrap();
        t.succeeded("a@example.com").await.unwrap();
        assert!(t.check("a@example.com", None).await.unwrap().is_ok());
    }
}
