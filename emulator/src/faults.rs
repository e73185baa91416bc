//! Fault injection and request counting: latency (fixed plus jitter), a rate of 429s with
//! Retry-After, a rate of 500/503s and dropped connections, applied before a request reaches
//! its handler; and a count of requests per operation, so tests and benchmarks can assert how
//! many calls a client made.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use axum::http::Method;
use serde::{Deserialize, Serialize};

/// Which endpoints a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Entra ID (token, discovery).
    Aad,
    /// Resource Manager.
    Arm,
    /// The HSM keys data plane.
    Data,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Added to every request.
    pub latency_ms: u64,
    /// Uniform random extra latency, 0..=jitter_ms.
    pub jitter_ms: u64,
    /// Fraction (0..1) of requests answered 429 Throttled.
    pub throttle_rate: f64,
    /// Retry-After (seconds) on those 429s.
    pub retry_after_secs: u64,
    /// Fraction of requests answered with a server error.
    pub error_rate: f64,
    /// Statuses to pick from for server errors.
    pub error_statuses: Vec<u16>,
    /// Fraction of requests whose connection is dropped without a response.
    pub drop_rate: f64,
    /// Endpoints the faults (not the latency) apply to; empty means all.
    pub targets: Vec<Target>,
    /// Seed for reproducible fault sequences.
    pub seed: Option<u64>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            latency_ms: 0,
            jitter_ms: 0,
            throttle_rate: 0.0,
            retry_after_secs: 1,
            error_rate: 0.0,
            error_statuses: vec![500, 503],
            drop_rate: 0.0,
            targets: vec![],
            seed: None,
        }
    }
}

impl FaultConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("throttle_rate", self.throttle_rate),
            ("error_rate", self.error_rate),
            ("drop_rate", self.drop_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        if self.throttle_rate + self.error_rate + self.drop_rate > 1.0 {
            return Err("throttle_rate + error_rate + drop_rate must not exceed 1".into());
        }
        if self.error_rate > 0.0
            && (self.error_statuses.is_empty()
                || self.error_statuses.iter().any(|s| !(500..=599).contains(s)))
        {
            return Err("error_statuses must be 5xx codes".into());
        }
        Ok(())
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Throttle { retry_after_secs: u64 },
    Error(u16),
    Drop,
}

#[derive(Default)]
pub struct Faults {
    config: RwLock<FaultConfig>,
    rng: Mutex<u64>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
    injected: Mutex<BTreeMap<String, u64>>,
}

impl Faults {
    pub fn config(&self) -> FaultConfig {
        self.config.read().unwrap().clone()
    }

    pub fn set(&self, config: FaultConfig) -> Result<(), String> {
        config.validate()?;
        *self.rng.lock().unwrap() = config.seed.unwrap_or_else(|| {
            let b = crate::crypto::random_bytes(8);
            u64::from_le_bytes(b.try_into().expect("8 bytes"))
        });
        *self.config.write().unwrap() = config;
        Ok(())
    }

    /// SplitMix64: tiny, fast and reproducible from a seed; cryptographic quality is not
    /// needed to pick which requests fail.
    fn next_unit(&self) -> f64 {
        let mut s = self.rng.lock().unwrap();
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Counts the request and decides its latency and fault.
    pub fn on_request(&self, op: &'static str, target: Target) -> (Duration, Fault) {
        *self.counts.lock().unwrap().entry(op).or_default() += 1;
        let c = self.config.read().unwrap().clone();
        let mut latency = c.latency_ms;
        if c.jitter_ms > 0 {
            latency += (self.next_unit() * (c.jitter_ms + 1) as f64) as u64;
        }
        let applies = c.targets.is_empty() || c.targets.contains(&target);
        let fault = if !applies || c.throttle_rate + c.error_rate + c.drop_rate == 0.0 {
            Fault::None
        } else {
            let r = self.next_unit();
            if r < c.throttle_rate {
                Fault::Throttle {
                    retry_after_secs: c.retry_after_secs,
                }
            } else if r < c.throttle_rate + c.error_rate {
                let i = (self.next_unit() * c.error_statuses.len() as f64) as usize;
                Fault::Error(c.error_statuses[i.min(c.error_statuses.len() - 1)])
            } else if r < c.throttle_rate + c.error_rate + c.drop_rate {
                Fault::Drop
            } else {
                Fault::None
            }
        };
        if fault != Fault::None {
            let label = match fault {
                Fault::Throttle { .. } => "429".to_string(),
                Fault::Error(s) => s.to_string(),
                Fault::Drop => "drop".to_string(),
                Fault::None => unreachable!(),
            };
            *self.injected.lock().unwrap().entry(label).or_default() += 1;
        }
        (Duration::from_millis(latency), fault)
    }

    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().unwrap().clone()
    }

    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.injected.lock().unwrap().clone()
    }

    pub fn reset_counts(&self) {
        self.counts.lock().unwrap().clear();
        self.injected.lock().unwrap().clear();
    }
}

/// Names the operation of a request (after the HSM host was rewritten into `/hsm/{name}`).
pub fn classify(method: &Method, path: &str) -> (&'static str, Target) {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let post = method == Method::POST;
    match segs.as_slice() {
        ["common", "discovery", "instance"] => ("aad.instance_discovery", Target::Aad),
        [_, "v2.0", ".well-known", "openid-configuration"] => {
            ("aad.openid_configuration", Target::Aad)
        }
        [_, "discovery", "v2.0", "keys"] => ("aad.keys", Target::Aad),
        [_, "oauth2", "v2.0", "token"] => ("aad.token", Target::Aad),
        ["metadata", "endpoints"] => ("arm.metadata", Target::Arm),
        ["tenants"] => ("arm.list_tenants", Target::Arm),
        ["subscriptions"] => ("arm.list_subscriptions", Target::Arm),
        ["subscriptions", _] => ("arm.get_subscription", Target::Arm),
        ["subscriptions", .., "managedHSMs"] => ("arm.list_hsms", Target::Arm),
        ["subscriptions", .., "managedHSMs", _] => ("arm.get_hsm", Target::Arm),
        ["subscriptions", .., "vaults"] => ("arm.list_vaults", Target::Arm),
        ["subscriptions", ..] => ("arm.other", Target::Arm),
        ["hsm", _, rest @ ..] => (data_op(method, rest, post), Target::Data),
        _ => ("other", Target::Aad),
    }
}

fn data_op(method: &Method, rest: &[&str], post: bool) -> &'static str {
    match (rest, method.as_str()) {
        (["keys"], _) => "keys.list",
        (["keys", "restore"], _) if post => "keys.restore",
        (["keys", _], "GET") | (["keys", _, ""], "GET") => "keys.get",
        (["keys", _], "PUT") => "keys.import",
        (["keys", _], "PATCH") | (["keys", _, ""], "PATCH") => "keys.update",
        (["keys", _], "DELETE") => "keys.delete",
        (["keys", _, "create"], _) => "keys.create",
        (["keys", _, "versions"], _) => "keys.versions",
        (["keys", _, "backup"], _) => "keys.backup",
        (["keys", _, "rotate"], _) => "keys.rotate",
        (["keys", _, "rotationpolicy"], "GET") => "keys.rotation_policy_get",
        (["keys", _, "rotationpolicy"], _) => "keys.rotation_policy_put",
        (["keys", _, op], "POST") | (["keys", _, _, op], "POST") => match *op {
            "encrypt" => "keys.encrypt",
            "decrypt" => "keys.decrypt",
            "wrapkey" => "keys.wrapkey",
            "unwrapkey" => "keys.unwrapkey",
            "sign" => "keys.sign",
            "verify" => "keys.verify",
            _ => "keys.other",
        },
        (["keys", _, _], "GET") => "keys.get",
        (["keys", _, _], "PATCH") => "keys.update",
        (["deletedkeys"], _) => "keys.list_deleted",
        (["deletedkeys", _], "GET") => "keys.get_deleted",
        (["deletedkeys", _], "DELETE") => "keys.purge",
        (["deletedkeys", _, "recover"], _) => "keys.recover",
        (["rng"], _) => "keys.rng",
        _ => "keys.other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_named() {
        assert_eq!(
            classify(&Method::POST, "/t/oauth2/v2.0/token").0,
            "aad.token"
        );
        assert_eq!(
            classify(
                &Method::GET,
                "/subscriptions/s/providers/Microsoft.KeyVault/managedHSMs"
            )
            .0,
            "arm.list_hsms"
        );
        assert_eq!(classify(&Method::GET, "/hsm/h/keys/k/").0, "keys.get");
        assert_eq!(classify(&Method::GET, "/hsm/h/keys/k/0123").0, "keys.get");
        assert_eq!(
            classify(&Method::POST, "/hsm/h/keys/k/0123/encrypt").0,
            "keys.encrypt"
        );
        assert_eq!(classify(&Method::POST, "/hsm/h/keys/k/sign").0, "keys.sign");
        assert_eq!(
            classify(&Method::DELETE, "/hsm/h/deletedkeys/k").0,
            "keys.purge"
        );
        assert_eq!(classify(&Method::GET, "/hsm/h/keys").0, "keys.list");
    }

    #[test]
    fn rates_are_honoured_over_many_requests() {
        let f = Faults::default();
        f.set(FaultConfig {
            throttle_rate: 0.1,
            error_rate: 0.05,
            seed: Some(7),
            ..Default::default()
        })
        .unwrap();
        let mut throttled = 0;
        let mut errors = 0;
        for _ in 0..10_000 {
            match f.on_request("keys.get", Target::Data).1 {
                Fault::Throttle { .. } => throttled += 1,
                Fault::Error(_) => errors += 1,
                _ => {}
            }
        }
        assert!((900..1100).contains(&throttled), "{throttled}");
        assert!((400..600).contains(&errors), "{errors}");
        assert_eq!(f.counts()["keys.get"], 10_000);
    }
}
