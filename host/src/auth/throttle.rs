//! Failed logins, counted per account name (email, or application id) and per source
//! address over a sliding window. Past a limit, logins from there are refused (429 with
//! `Retry-After`) until the oldest failure leaves the window, so guessing passwords costs a
//! lot of time while a user who mistypes a few times is not locked out for long.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use crate::time::Clock;

/// Entries beyond this count make the next failure sweep out the old ones.
const SWEEP_ABOVE: usize = 10_000;

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

#[derive(Default)]
struct Failures {
    by_name: HashMap<String, VecDeque<i64>>,
    by_address: HashMap<IpAddr, VecDeque<i64>>,
}

pub struct LoginThrottle {
    failures: Mutex<Failures>,
    clock: Clock,
    limits: ThrottleLimits,
}

/// Seconds until `window` has room again, if it is full.
fn wait(window: Option<&VecDeque<i64>>, limit: usize, now: i64, span: i64) -> Option<u64> {
    let w = window?;
    let recent = w.iter().filter(|t| **t > now - span).count();
    (recent >= limit).then(|| {
        let oldest = w.iter().rev().nth(limit - 1).copied().unwrap_or(now);
        (oldest + span - now).max(1) as u64
    })
}

fn record<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, VecDeque<i64>>,
    key: K,
    now: i64,
    span: i64,
    keep: usize,
) {
    if map.len() > SWEEP_ABOVE {
        map.retain(|_, w| w.back().is_some_and(|t| *t > now - span));
    }
    let w = map.entry(key).or_default();
    w.push_back(now);
    while w.len() > keep || w.front().is_some_and(|t| *t <= now - span) {
        w.pop_front();
    }
}

impl LoginThrottle {
    pub fn new(clock: Clock, limits: ThrottleLimits) -> LoginThrottle {
        LoginThrottle {
            failures: Mutex::new(Failures::default()),
            clock,
            limits,
        }
    }

    /// `Err(seconds)` when a login for `name` from `address` must wait.
    pub fn check(&self, name: &str, address: Option<IpAddr>) -> Result<(), u64> {
        let now = self.clock.now();
        let span = self.limits.window_secs;
        let f = self.failures.lock().unwrap();
        let by_name = wait(
            f.by_name.get(&name.to_lowercase()),
            self.limits.per_name,
            now,
            span,
        );
        let by_address =
            address.and_then(|a| wait(f.by_address.get(&a), self.limits.per_address, now, span));
        match by_name.max(by_address) {
            Some(secs) => Err(secs),
            None => Ok(()),
        }
    }

    pub fn failed(&self, name: &str, address: Option<IpAddr>) {
        let now = self.clock.now();
        let span = self.limits.window_secs;
        let mut f = self.failures.lock().unwrap();
        record(
            &mut f.by_name,
            name.to_lowercase(),
            now,
            span,
            self.limits.per_name,
        );
        if let Some(a) = address {
            record(&mut f.by_address, a, now, span, self.limits.per_address);
        }
    }

    /// A successful login clears the failures of its name (not of its address).
    pub fn succeeded(&self, name: &str) {
        self.failures
            .lock()
            .unwrap()
            .by_name
            .remove(&name.to_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_limit_wait_until_the_window_moves() {
        let clock = Clock::system();
        let t = LoginThrottle::new(
            clock.clone(),
            ThrottleLimits {
                per_name: 3,
                per_address: 5,
                window_secs: 60,
            },
        );
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(t.check("A@example.com", Some(addr)).is_ok());
            t.failed("a@example.com", Some(addr));
        }
        let wait = t.check("a@example.com", None).unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        // Other names from the same address still get their chance, up to its limit.
        t.failed("b@example.com", Some(addr));
        assert!(t.check("b@example.com", Some(addr)).is_ok());
        t.failed("c@example.com", Some(addr));
        assert!(
            t.check("d@example.com", Some(addr)).is_err(),
            "the address is over its limit"
        );
        assert!(t.check("d@example.com", None).is_ok());
        clock.advance(61);
        assert!(
            t.check("a@example.com", Some(addr)).is_ok(),
            "the window moved"
        );
        t.failed("a@example.com", None);
        t.succeeded("a@example.com");
        assert!(t.check("a@example.com", None).is_ok());
    }
}
