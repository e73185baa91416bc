//! API errors: each maps to one HTTP status and a JSON body that names the problem.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::catalog::CatalogError;
use crate::keys::{FlowError, KeyError};
use crate::kms::KmsError;
use crate::policy::{PolicyFinding, PolicyUnavailable};
use crate::workflows::{CompileProblem, HostError, HostErrorKind, ScriptError, WorkflowError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a value is invalid.
    #[error("{message}")]
    BadRequest {
        message: String,
        field: Option<String>,
    },
    /// 400: a workflow script put or checked does not compile.
    #[error("source: the script does not compile: {}", .0)]
    Script(CompileProblem),
    /// 401: no or invalid credentials, or an expired session.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 403, code `ApprovalRequired`, with DSM's message (which DSM clients match): a quorum
    /// approval policy protects the operation.
    #[error("This operation requires approval")]
    ApprovalRequired,
    /// 403: a policy denied the operation.
    #[error("denied by policy: {}", .0.iter().map(|v| format!("{} ({})", v.message, v.rule)).collect::<Vec<_>>().join("; "))]
    PolicyDenied(Vec<PolicyFinding>),
    /// 404
    #[error("{0}")]
    NotFound(String),
    /// 405
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: conflicts with the current state (name taken, wrong key state).
    #[error("{0}")]
    Conflict(String),
    /// 413
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// 429: too many attempts; `Retry-After` says when to try again.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    /// 503: a dependency (policy plugin) could not answer; nothing was done.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a fault on our side; details are in the log, not in the response.
    #[error("internal error")]
    Internal(String),
    /// 500: a workflow script failed (its message is shown: scripts are the user's to fix).
    #[error("{0}")]
    Workflow(String),
    /// 502: the external key manager refused Keyward (credentials, permissions) or failed.
    #[error("{0}")]
    BadGateway(String),
    /// 504: a workflow ran out of time.
    #[error("{0}")]
    Timeout(String),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable error code: `InvalidInput`, `InvalidScript`, `Unauthorized`, `Forbidden`, `PolicyViolation`, `ApprovalRequired`,
    /// `NotFound`, `MethodNotAllowed`, `Conflict`, `PayloadTooLarge`, `TooManyRequests`, `Unavailable`,
    /// `InternalError`, `WorkflowFailed`, `ExternalKmsError`, `Timeout`.
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Where a script does not compile, for `InvalidScript` (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// Every violated policy rule, for `PolicyViolation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violations: Option<Vec<PolicyFinding>>,
}

impl ApiError {
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            field: None,
        }
    }

    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: format!("{field}: {}", message.into()),
            field: Some(field.to_string()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::Script(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::PolicyDenied(_) | ApiError::ApprovalRequired => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) | ApiError::Workflow(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "InvalidInput",
            ApiError::Script(_) => "InvalidScript",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::PolicyDenied(_) => "PolicyViolation",
            ApiError::ApprovalRequired => "ApprovalRequired",
            ApiError::NotFound(_) => "NotFound",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::Conflict(_) => "Conflict",
            ApiError::TooLarge(_) => "PayloadTooLarge",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::Unavailable(_) => "Unavailable",
            ApiError::Internal(_) => "InternalError",
            ApiError::Workflow(_) => "WorkflowFailed",
            ApiError::BadGateway(_) => "ExternalKmsError",
            ApiError::Timeout(_) => "Timeout",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!("internal error: {detail}");
        }
        let body = ErrorBody {
            code: self.code(),
            message: self.to_string(),
            field: match &self {
                ApiError::BadRequest { field, .. } => field.clone(),
                ApiError::Script(_) => Some("source".into()),
                _ => None,
            },
            line: match &self {
                ApiError::Script(p) => p.line,
                _ => None,
            },
            column: match &self {
                ApiError::Script(p) => p.column,
                _ => None,
            },
            violations: match &self {
                ApiError::PolicyDenied(v) => Some(v.clone()),
                _ => None,
            },
        };
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after, .. } = &self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after),
            );
        }
        response
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        if e.is_unique_violation() {
            return ApiError::Conflict("the name is already taken".into());
        }
        if e.is_unavailable() {
            tracing::warn!(error = %e, "the catalog database is unavailable");
            return ApiError::Unavailable(
                "the catalog database is unavailable; nothing was changed, try again shortly"
                    .into(),
            );
        }
        ApiError::Internal(e.to_string())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from(CatalogError::from(e))
    }
}

impl From<PolicyUnavailable> for ApiError {
    fn from(e: PolicyUnavailable) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<crate::crypto::CryptoError> for ApiError {
    fn from(e: crate::crypto::CryptoError) -> Self {
        ApiError::bad(e.0)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<KmsError> for ApiError {
    fn from(e: KmsError) -> Self {
        match e {
            KmsError::Remote { .. } => ApiError::from(HostError::from(e)),
            KmsError::NotLinked | KmsError::Incomplete(_) => ApiError::Conflict(e.to_string()),
            KmsError::Plugin(_) => ApiError::Unavailable(e.to_string()),
            KmsError::Secrets(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// What a host function or script raised, by its kind.
impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        let m = e.message;
        match e.kind {
            HostErrorKind::NotFound => ApiError::NotFound(m),
            HostErrorKind::Conflict => ApiError::Conflict(m),
            HostErrorKind::BadRequest | HostErrorKind::Invalid => ApiError::bad(m),
            // A policy's refusal inside a run answers as it would outside one.
            HostErrorKind::Denied if !e.violations.is_empty() => {
                ApiError::PolicyDenied(e.violations)
            }
            // A refusal by the catalog's own rules, raised inside a run.
            HostErrorKind::Denied => ApiError::Forbidden(m),
            HostErrorKind::Forbidden | HostErrorKind::Unauthorized | HostErrorKind::Other => {
                ApiError::BadGateway(m)
            }
            HostErrorKind::Throttled | HostErrorKind::Unavailable => ApiError::Unavailable(m),
            HostErrorKind::Internal => ApiError::Internal(m),
        }
    }
}

/// A flow's failure: the engine's own error, read back as its type.
impl From<FlowError> for ApiError {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::Busy { .. } => ApiError::Conflict(e.to_string()),
            FlowError::Unrecorded { .. } => ApiError::Workflow(e.to_string()),
            FlowError::Run(inner) => match inner.downcast::<WorkflowError>() {
                Ok(w) => ApiError::from(*w),
                Err(other) => ApiError::Internal(other.to_string()),
            },
        }
    }
}

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> Self {
        match e {
            WorkflowError::NotFound(_) => ApiError::NotFound(e.to_string()),
            WorkflowError::Busy { .. } => ApiError::Conflict(e.to_string()),
            WorkflowError::Host { error, .. } => ApiError::from(error),
            WorkflowError::TimedOut { .. } => ApiError::Timeout(e.to_string()),
            WorkflowError::LeaseLost { .. } => ApiError::Unavailable(e.to_string()),
            WorkflowError::Catalog(c) => ApiError::from(c),
            WorkflowError::Forbidden(m) => ApiError::Forbidden(m),
            WorkflowError::Compile(_)
            | WorkflowError::Failed { .. }
            | WorkflowError::TooManyOperations { .. }
            | WorkflowError::OutOfMemory { .. } => ApiError::Workflow(e.to_string()),
        }
    }
}

impl From<ScriptError> for ApiError {
    fn from(e: ScriptError) -> Self {
        match e {
            ScriptError::Forbidden => ApiError::Forbidden(e.to_string()),
            ScriptError::InvalidName => ApiError::field("name", e.to_string()),
            ScriptError::TooLarge => ApiError::field("source", e.to_string()),
            ScriptError::Compile(p) => ApiError::Script(p),
            ScriptError::NotFound(m) => ApiError::NotFound(m),
            ScriptError::Catalog(c) => ApiError::from(c),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Invalid { field, message } => ApiError::field(&field, message),
            KeyError::NotFound(m) => ApiError::NotFound(m),
            KeyError::Forbidden(m) | KeyError::Rule(m) => ApiError::Forbidden(m),
            KeyError::PolicyDenied(v) => ApiError::PolicyDenied(v),
            KeyError::ApprovalRequired => ApiError::ApprovalRequired,
            KeyError::State(m) | KeyError::NameTaken(m) => ApiError::Conflict(m),
            KeyError::Concurrent => ApiError::Conflict(e.to_string()),
            KeyError::PolicyUnavailable(p) => ApiError::from(p),
            KeyError::Crypto(c) => ApiError::from(c),
            KeyError::Catalog(c) => ApiError::from(c),
            KeyError::Flow(f) => ApiError::from(f),
            KeyError::Kms(k) => ApiError::from(k),
            KeyError::AuditUnavailable(a) => ApiError::Unavailable(a.to_string()),
            KeyError::Internal(m) => ApiError::Internal(m),
        }
    }
}
