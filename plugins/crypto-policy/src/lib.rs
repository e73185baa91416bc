//! Keyward's crypto policy plugin (FLOWS F27).
//!
//! The policy document follows Fortanix DSM's cryptographic policy:
//!
//! ```json
//! {
//!   "mode": "enforce",
//!   "aes": { "key_sizes": [256] },
//!   "rsa": { "minimum_key_length": 3072, "key_sizes": [3072, 4096] },
//!   "ec":  { "elliptic_curves": ["NistP256", "NistP384"] },
//!   "key_ops": ["ENCRYPT", "DECRYPT", "WRAPKEY", "UNWRAPKEY", "SIGN", "VERIFY"],
//!   "legacy_policy": "unprotect_only"
//! }
//! ```
//!
//! A key type is allowed only when its section is present (an empty section allows every
//! size or curve of that type). `key_ops`, when present, lists every operation keys may be
//! given or used for. `legacy_policy` says what happens to existing keys that no longer
//! comply when they are used: `allowed` (the default), `prohibited` or `unprotect_only`
//! (decrypt, verify and unwrap only). `mode` is `enforce` (default), `warn` or `dry_run`.

use keyward_policy_sdk::{
    Action, CurveName, Decision, Findings, KeyAttributes, KeyType, LegacyPolicy, ModeName, OpName,
    Policy, PolicyRequest, curve_name, op_name, parse_config, type_name,
};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoPolicy {
    #[serde(default)]
    mode: ModeName,
    aes: Option<AesRules>,
    rsa: Option<RsaRules>,
    ec: Option<EcRules>,
    key_ops: Option<Vec<OpName>>,
    #[serde(default)]
    legacy_policy: LegacyPolicy,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AesRules {
    key_sizes: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RsaRules {
    minimum_key_length: Option<u32>,
    key_sizes: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EcRules {
    elliptic_curves: Option<Vec<CurveName>>,
}

impl CryptoPolicy {
    pub fn parse(config: &str) -> Result<Self, String> {
        let policy: CryptoPolicy = parse_config(config)?;
        policy.validate()?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(sizes) = self.aes.as_ref().and_then(|a| a.key_sizes.as_ref())
            && let Some(bad) = sizes.iter().find(|s| ![128, 192, 256].contains(*s))
        {
            return Err(format!(
                "aes.key_sizes: {bad} is not an AES key size (128, 192 or 256)"
            ));
        }
        if let Some(rsa) = &self.rsa {
            if let Some(min) = rsa.minimum_key_length
                && !(1024..=8192).contains(&min)
            {
                return Err(format!(
                    "rsa.minimum_key_length: {min} is outside 1024..8192"
                ));
            }
            if let Some(bad) = rsa
                .key_sizes
                .iter()
                .flatten()
                .find(|s| !(1024..=8192).contains(*s) || **s % 8 != 0)
            {
                return Err(format!("rsa.key_sizes: {bad} is not a valid RSA key size"));
            }
        }
        Ok(())
    }

    /// Every rule the key's type, size, curve and operations break, one finding per rule.
    fn key_problems(&self, key: &KeyAttributes) -> Findings {
        let mut f = Findings::default();
        let spec = &key.spec;
        let tname = type_name(spec.key_type);
        let size = spec.size.unwrap_or(0);
        match spec.key_type {
            KeyType::Aes => match &self.aes {
                None => f.violation("object-type", format!("{tname} keys are not allowed")),
                Some(rules) => {
                    if let Some(sizes) = &rules.key_sizes
                        && !sizes.contains(&size)
                    {
                        f.violation(
                            "aes.key-size",
                            format!(
                                "AES key size {size} is not allowed (allowed: {})",
                                list(sizes)
                            ),
                        );
                    }
                }
            },
            KeyType::Rsa => match &self.rsa {
                None => f.violation("object-type", format!("{tname} keys are not allowed")),
                Some(rules) => {
                    if let Some(min) = rules.minimum_key_length
                        && size < min
                    {
                        f.violation(
                            "rsa.minimum-key-length",
                            format!("RSA key length {size} is below the minimum of {min}"),
                        );
                    }
                    if let Some(sizes) = &rules.key_sizes
                        && !sizes.contains(&size)
                    {
                        f.violation(
                            "rsa.key-size",
                            format!(
                                "RSA key size {size} is not allowed (allowed: {})",
                                list(sizes)
                            ),
                        );
                    }
                }
            },
            KeyType::Ec => match &self.ec {
                None => f.violation("object-type", format!("{tname} keys are not allowed")),
                Some(rules) => match (spec.curve, &rules.elliptic_curves) {
                    (Some(curve), Some(curves)) if !curves.contains(&CurveName::from(curve)) => f
                        .violation(
                            "ec.curve",
                            format!("elliptic curve {} is not allowed", curve_name(curve)),
                        ),
                    (None, _) => f.violation("ec.curve", "EC key without a curve"),
                    _ => {}
                },
            },
        }
        if let Some(allowed) = &self.key_ops {
            let bad: Vec<&str> = key
                .ops
                .iter()
                .filter(|op| !allowed.contains(&OpName::from(**op)))
                .map(|op| op_name(*op))
                .collect();
            if !bad.is_empty() {
                f.violation(
                    "key-ops",
                    format!("key operations not allowed: {}", bad.join(", ")),
                );
            }
        }
        f
    }
}

impl Policy for CryptoPolicy {
    fn configure(config: &str) -> Result<Self, String> {
        Self::parse(config)
    }

    fn evaluate(&self, req: &PolicyRequest) -> Result<Decision, String> {
        let mut findings = Findings::default();
        match req.action {
            Action::Create | Action::Import | Action::Copy | Action::Rotate | Action::Update => {
                findings = self.key_problems(&req.key);
            }
            Action::Crypto(op) => {
                if let Some(allowed) = &self.key_ops
                    && !allowed.contains(&OpName::from(op))
                {
                    findings.violation(
                        "key-ops",
                        format!("the {} operation is not allowed", op_name(op)),
                    );
                }
                // The key's own ops are not re-checked here: whether the key permits `op` is
                // the host's business, and a key granted ops the policy no longer allows is
                // a legacy key like any other.
                let problems = self.key_problems(&req.key).violations;
                self.legacy_policy
                    .apply(op, &problems, "crypto policy", &mut findings);
            }
        }
        Ok(findings.decide(self.mode.into()))
    }
}

fn list(values: &[u32]) -> String {
    values
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

keyward_policy_sdk::policy_plugin!(CryptoPolicy);
