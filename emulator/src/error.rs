//! Errors in the shapes Azure returns them: Key Vault / Managed HSM
//! (`{"error":{"code","message","innererror"}}`), ARM (`{"error":{"code","message"}}`) and
//! Entra ID (`{"error","error_description","error_codes",...}`).

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::crypto::CryptoError;

#[derive(Debug)]
pub struct AzureError {
    pub status: StatusCode,
    pub body: Value,
    pub headers: Vec<(HeaderName, String)>,
}

impl AzureError {
    /// Data plane (Key Vault / Managed HSM) error.
    pub fn kv(status: StatusCode, code: &str, message: impl Into<String>) -> AzureError {
        AzureError {
            status,
            body: json!({"error": {"code": code, "message": message.into()}}),
            headers: vec![],
        }
    }

    pub fn with_inner(mut self, inner: &str) -> AzureError {
        self.body["error"]["innererror"] = json!({"code": inner});
        self
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> AzureError {
        self.headers.push((name, value.into()));
        self
    }

    /// Resource Manager error.
    pub fn arm(status: StatusCode, code: &str, message: impl Into<String>) -> AzureError {
        AzureError {
            status,
            body: json!({"error": {"code": code, "message": message.into()}}),
            headers: vec![],
        }
    }

    /// Entra ID (AAD) token endpoint error.
    pub fn aad(status: StatusCode, error: &str, code: u32, description: &str) -> AzureError {
        let trace = crate::crypto::random_bytes(16)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let now = chrono_like_now();
        AzureError {
            status,
            body: json!({
                "error": error,
                "error_description": format!("AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {trace}\r\nTimestamp: {now}"),
                "error_codes": [code],
                "timestamp": now,
                "trace_id": trace,
                "correlation_id": trace,
                "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
            }),
            headers: vec![],
        }
    }

    pub fn bad_parameter(message: impl Into<String>) -> AzureError {
        AzureError::kv(StatusCode::BAD_REQUEST, "BadParameter", message)
    }

    pub fn key_not_found(name: &str) -> AzureError {
        AzureError::kv(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            format!(
                "A key with (name/id) {name} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        )
    }

    pub fn deleted_key_not_found(name: &str) -> AzureError {
        AzureError::kv(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            format!("Deleted Key not found: {name}"),
        )
    }

    pub fn deleted_but_recoverable(name: &str) -> AzureError {
        AzureError::kv(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Key {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged."
            ),
        )
        .with_inner("ObjectIsDeletedButRecoverable")
    }

    pub fn forbidden(message: impl Into<String>, inner: &str) -> AzureError {
        AzureError::kv(StatusCode::FORBIDDEN, "Forbidden", message).with_inner(inner)
    }

    pub fn throttled(retry_after_secs: u64) -> AzureError {
        AzureError::kv(
            StatusCode::TOO_MANY_REQUESTS,
            "Throttled",
            "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
        )
        .header(axum::http::header::RETRY_AFTER, retry_after_secs.to_string())
    }
}

impl From<CryptoError> for AzureError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::BadParameter(m) => AzureError::bad_parameter(m),
            CryptoError::Unsupported(m) => AzureError::bad_parameter(m).with_inner("NotSupported"),
        }
    }
}

impl IntoResponse for AzureError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body)).into_response();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().append(name, v);
            }
        }
        resp
    }
}

/// `2026-01-01 00:00:00Z`, the way Entra ID stamps its errors.
fn chrono_like_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    crate::clock::format_utc(secs)
}
