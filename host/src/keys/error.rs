//! What the key service refuses, and why: one variant per kind of refusal, each with the
//! HTTP status the API gives it (see `api::error`).

use crate::catalog::CatalogError;
use crate::crypto::CryptoError;
use crate::kms::KmsError;
use crate::policy::{PolicyFinding, PolicyUnavailable};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// 400: a value of the request is invalid (`field` names it).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// 404: no such key or group in the caller's account (or none the caller may see).
    #[error("{0}")]
    NotFound(String),
    /// 403: the caller's roles do not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// 403: an integrity rule forbids it (EXPORT added, a copy with more operations than its
    /// source, a user unwrapping under a key-encryption key, ...).
    #[error("{0}")]
    Rule(String),
    /// 403 with code `ApprovalRequired`: the group's quorum approval policy protects the
    /// operation; ask for it with `POST /sys/v1/approval_requests`.
    #[error("This operation requires approval")]
    ApprovalRequired,
    /// 403: a policy denied it.
    #[error("denied by policy: {}", .0.iter().map(|v| format!("{} ({})", v.message, v.rule)).collect::<Vec<_>>().join("; "))]
    PolicyDenied(Vec<PolicyFinding>),
    /// 409: the key's lifecycle or remote state does not allow it.
    #[error("{0}")]
    State(String),
    /// 409: a key of that name (or external name) exists.
    #[error("{0}")]
    NameTaken(String),
    /// 409: another request changed the key between our read and our write, every time we
    /// tried.
    #[error("the key was changed by another request meanwhile; read it again and retry")]
    Concurrent,
    /// 503: a policy could not be evaluated; nothing was done.
    #[error(transparent)]
    PolicyUnavailable(#[from] PolicyUnavailable),
    /// 400: the material or a cryptographic parameter is unusable.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// 500 (409 when a schema trigger refused the write).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Status by the flow's failure.
    #[error(transparent)]
    Flow(#[from] super::flows::FlowError),
    /// Status by the key manager's answer.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// 503: the operation's audit event could not be committed; its answer is withheld.
    #[error(transparent)]
    AuditUnavailable(#[from] crate::audit::AuditUnavailable),
    /// 500: a fault on our side.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for KeyError {
    fn from(e: sqlx::Error) -> Self {
        KeyError::Catalog(e.into())
    }
}

impl KeyError {
    pub fn invalid(field: &str, message: impl Into<String>) -> KeyError {
        KeyError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn state(message: impl Into<String>) -> KeyError {
        KeyError::State(message.into())
    }

    pub fn forbidden(message: impl Into<String>) -> KeyError {
        KeyError::Forbidden(message.into())
    }

    pub fn rule(message: impl Into<String>) -> KeyError {
        KeyError::Rule(message.into())
    }
}

pub type Result<T> = std::result::Result<T, KeyError>;
