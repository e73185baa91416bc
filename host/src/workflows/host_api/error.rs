//! What a host function (or a script) raises: the kind of failure, typed from the moment it
//! crosses into the engine, so that the API maps it by its kind, never by a string; and a
//! policy denial's violations, kept to the API's answer.

use rhai::{Dynamic, EvalAltResult, Position};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::catalog::CatalogError;
use crate::keys::KeyError;
use crate::kms::{KmsError, RemoteKind};
use crate::policy::PolicyFinding;
use crate::workflows::values::{from_json, to_json};

/// The kinds of failure a script sees (`e.kind`) and may raise itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostErrorKind {
    // From the key manager.
    NotFound,
    Unauthorized,
    Forbidden,
    Conflict,
    Throttled,
    BadRequest,
    Unavailable,
    Other,
    // From Keyward.
    /// Misuse by the script or the link.
    Invalid,
    /// The key service's rules or a policy refused.
    Denied,
    Internal,
}

impl From<RemoteKind> for HostErrorKind {
    fn from(k: RemoteKind) -> Self {
        match k {
            RemoteKind::NotFound => HostErrorKind::NotFound,
            RemoteKind::Unauthorized => HostErrorKind::Unauthorized,
            RemoteKind::Forbidden => HostErrorKind::Forbidden,
            RemoteKind::Conflict => HostErrorKind::Conflict,
            RemoteKind::Throttled => HostErrorKind::Throttled,
            RemoteKind::BadRequest => HostErrorKind::BadRequest,
            RemoteKind::Unavailable => HostErrorKind::Unavailable,
            RemoteKind::Other => HostErrorKind::Other,
        }
    }
}

/// An error a host function raised: what the key manager or the catalog said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostError {
    pub kind: HostErrorKind,
    #[serde(default)]
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub status: Option<u16>,
    /// A policy denial's violated rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<PolicyFinding>,
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl HostError {
    pub fn new(kind: HostErrorKind, message: impl Into<String>) -> HostError {
        HostError {
            kind,
            code: String::new(),
            message: message.into(),
            status: None,
            violations: vec![],
        }
    }

    pub(super) fn to_dynamic(&self) -> Dynamic {
        from_json(&serde_json::to_value(self).unwrap_or_else(|_| json!({})))
    }

    /// A thrown map with a known `kind` and a `message` (from a host function, or a script
    /// that wants its failure classified); anything else is a plain script failure.
    pub fn from_dynamic(d: &Dynamic) -> Option<HostError> {
        serde_json::from_value(to_json(d)).ok()
    }

    pub(super) fn throw(self) -> Box<EvalAltResult> {
        Box::new(EvalAltResult::ErrorRuntime(
            self.to_dynamic(),
            Position::NONE,
        ))
    }
}

impl From<KmsError> for HostError {
    fn from(e: KmsError) -> Self {
        let message = e.to_string();
        match e {
            KmsError::Remote {
                kind, status, code, ..
            } => HostError {
                kind: kind.into(),
                code,
                message,
                status,
                violations: vec![],
            },
            KmsError::NotLinked | KmsError::Incomplete(_) => {
                HostError::new(HostErrorKind::Invalid, message)
            }
            KmsError::Plugin(_) => HostError::new(HostErrorKind::Unavailable, message),
            KmsError::Secrets(_) => HostError::new(HostErrorKind::Internal, message),
        }
    }
}

impl From<CatalogError> for HostError {
    fn from(e: CatalogError) -> Self {
        if e.is_unique_violation() {
            return HostError::new(
                HostErrorKind::Conflict,
                "the name is already taken in the catalog",
            );
        }
        tracing::error!("catalog error in a workflow: {e}");
        HostError::new(
            HostErrorKind::Internal,
            "catalog error (see the daemon log)",
        )
    }
}

/// The key service's refusals, kept apart from the key manager's (`denied`, not
/// `forbidden`).
impl From<KeyError> for HostError {
    fn from(e: KeyError) -> Self {
        let message = e.to_string();
        match e {
            KeyError::Invalid { .. } | KeyError::Crypto(_) => {
                HostError::new(HostErrorKind::Invalid, message)
            }
            KeyError::NotFound(_) => HostError::new(HostErrorKind::NotFound, message),
            KeyError::Forbidden(_) | KeyError::Rule(_) => {
                HostError::new(HostErrorKind::Denied, message)
            }
            // A script does not approve for people: the change waits for an approval request.
            KeyError::ApprovalRequired => HostError {
                code: "ApprovalRequired".into(),
                status: Some(403),
                ..HostError::new(
                    HostErrorKind::Denied,
                    format!(
                        "{message}: the group's quorum policy protects it (POST /sys/v1/approval_requests)"
                    ),
                )
            },
            KeyError::PolicyDenied(violations) => HostError {
                violations,
                ..HostError::new(HostErrorKind::Denied, message)
            },
            KeyError::State(_) | KeyError::NameTaken(_) | KeyError::Concurrent => {
                HostError::new(HostErrorKind::Conflict, message)
            }
            KeyError::PolicyUnavailable(_) | KeyError::AuditUnavailable(_) => {
                HostError::new(HostErrorKind::Unavailable, message)
            }
            KeyError::Kms(k) => HostError::from(k),
            KeyError::Catalog(c) => HostError::from(c),
            KeyError::Flow(_) | KeyError::Internal(_) => {
                tracing::error!("key service error in a workflow: {message}");
                HostError::new(HostErrorKind::Internal, message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_denial_keeps_its_violations_across_the_script_boundary() {
        let finding = PolicyFinding {
            policy: "group crypto policy".into(),
            rule: "aes.key_sizes".into(),
            message: "AES keys must be 256 bits".into(),
        };
        let e = HostError::from(KeyError::PolicyDenied(vec![finding.clone()]));
        let back = HostError::from_dynamic(&e.to_dynamic()).expect("a host error");
        assert_eq!(back.kind, HostErrorKind::Denied);
        assert_eq!(back.violations, vec![finding]);
        // A script's own map with an unknown kind is a plain failure.
        let theirs = from_json(&json!({"kind": "oops", "message": "m"}));
        assert!(HostError::from_dynamic(&theirs).is_none());
        let conflict = from_json(&json!({"kind": "conflict", "message": "m"}));
        assert_eq!(
            HostError::from_dynamic(&conflict).unwrap().kind,
            HostErrorKind::Conflict
        );
    }
}
