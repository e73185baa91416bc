//! Requests to Azure: bearer tokens per plane, bounded retries with backoff, and mapping
//! Azure's error bodies (Key Vault, Resource Manager, Entra ID) to the contract's errors.

use serde_json::Value;

use crate::exports::keyward::plugin::kms::{Connection, KmsError, RemoteError, ThrottleInfo};
use crate::keyward::plugin::http;
use crate::token;

/// Which audience a request needs a token for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Plane {
    Management,
    Hsm,
}

const MAX_ATTEMPTS: u32 = 6;
const BASE_DELAY_MS: u64 = 200;
const MAX_DELAY_MS: u64 = 8_000;
const MAX_RETRY_AFTER_MS: u64 = 30_000;

pub fn remote(status: Option<u16>, code: &str, message: &str) -> RemoteError {
    RemoteError {
        status,
        code: code.to_string(),
        message: message.to_string(),
    }
}

pub fn bad_request(message: &str) -> KmsError {
    KmsError::BadRequest(remote(None, "", message))
}

pub fn other(message: &str) -> KmsError {
    KmsError::Other(remote(None, "", message))
}

/// `{instance}/{path}?api-version=...&extra` (the instance URI may or may not end in `/`).
pub fn data_url(instance: &str, path: &str, extra: &[(&str, &str)]) -> String {
    let mut url = format!(
        "{}/{}?api-version={}",
        instance.trim_end_matches('/'),
        path,
        crate::KEYS_API
    );
    for (k, v) in extra {
        url.push_str(&format!("&{k}={v}"));
    }
    url
}

/// A request with a bearer token for `plane`, retried on throttling, server errors and lost
/// connections. Returns the JSON body (`Null` for an empty one).
pub fn call(
    conn: &Connection,
    plane: Plane,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<Value, KmsError> {
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let mut attempt = 0;
    let mut renewed = false;
    loop {
        attempt += 1;
        let token = token::get(conn, plane)?;
        let mut headers = vec![
            ("authorization".to_string(), format!("Bearer {token}")),
            ("accept".to_string(), "application/json".to_string()),
        ];
        if !body.is_empty() {
            headers.push(("content-type".to_string(), "application/json".to_string()));
        }
        let req = http::Request {
            method: method.into(),
            url: url.into(),
            headers,
            body: body.clone(),
            timeout_ms: Some(30_000),
        };
        let failure = match http::send(&req) {
            Ok(resp) if (200..300).contains(&resp.status) => {
                return Ok(if resp.body.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&resp.body).unwrap_or(Value::Null)
                });
            }
            // A token the service no longer accepts (expired early, revoked): fetch a new one once.
            Ok(resp) if resp.status == 401 && !renewed => {
                token::forget(conn, plane);
                renewed = true;
                continue;
            }
            Ok(resp) => Failure::Status(resp),
            Err(e) => Failure::Transport(e),
        };
        let (retryable, wait_hint, error) = classify(failure);
        if !retryable || attempt >= MAX_ATTEMPTS {
            return Err(error);
        }
        sleep_ms(backoff(attempt, wait_hint));
    }
}

/// Sends a request without authentication (the token endpoint), with the same retries.
pub fn send_with_retries(req: &http::Request) -> Result<http::Response, KmsError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = match http::send(req) {
            Ok(resp) if resp.status == 429 || resp.status >= 500 => Failure::Status(resp),
            Ok(resp) => return Ok(resp),
            Err(e) => Failure::Transport(e),
        };
        let (retryable, wait_hint, error) = classify(failure);
        if !retryable || attempt >= MAX_ATTEMPTS {
            return Err(error);
        }
        sleep_ms(backoff(attempt, wait_hint));
    }
}

enum Failure {
    Status(http::Response),
    Transport(http::Error),
}

/// (retryable, Retry-After in ms, the error to report if we stop).
fn classify(f: Failure) -> (bool, Option<u64>, KmsError) {
    match f {
        Failure::Transport(e) => {
            let (retry, message) = match &e {
                http::Error::Denied(m) => {
                    (false, format!("the connector may not reach this host: {m}"))
                }
                http::Error::InvalidRequest(m) => (false, format!("invalid request: {m}")),
                http::Error::Tls(m) => (false, format!("TLS: {m}")),
                http::Error::Connection(m) => (true, format!("connection failed: {m}")),
                http::Error::Timeout => (true, "the request timed out".to_string()),
                http::Error::TooLarge(n) => (false, format!("the response exceeded {n} bytes")),
            };
            (
                retry,
                None,
                KmsError::Unavailable(remote(None, "", &message)),
            )
        }
        Failure::Status(resp) => {
            let retry_after = header(&resp, "retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| (s * 1000).min(MAX_RETRY_AFTER_MS));
            let err = error_from(&resp);
            let retryable = resp.status == 429 || resp.status >= 500;
            let err = if resp.status == 429 {
                let KmsError::Other(r) = err else {
                    unreachable!("429 maps to other first")
                };
                KmsError::Throttled(ThrottleInfo {
                    retry_after_ms: retry_after,
                    error: r,
                })
            } else {
                err
            };
            (retryable, retry_after, err)
        }
    }
}

fn header<'a>(resp: &'a http::Response, name: &str) -> Option<&'a str> {
    resp.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Maps an error response to the contract, keeping Azure's code and message.
pub fn error_from(resp: &http::Response) -> KmsError {
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let status = Some(resp.status);
    let r = if let Some(e) = v.get("error").filter(|e| e.is_object()) {
        // Key Vault and Resource Manager: {"error": {"code", "message", "innererror": {"code"}}}
        let code = e["innererror"]["code"]
            .as_str()
            .or(e["code"].as_str())
            .unwrap_or_default();
        remote(status, code, e["message"].as_str().unwrap_or_default())
    } else if let Some(kind) = v["error"].as_str() {
        // Entra ID: {"error": "invalid_client", "error_description": "AADSTS7000215: ...", "error_codes": [...]}
        let description = v["error_description"].as_str().unwrap_or(kind);
        let first_line = description.lines().next().unwrap_or(description);
        let code = v["error_codes"][0]
            .as_i64()
            .map(|c| format!("AADSTS{c}"))
            .unwrap_or_else(|| kind.to_string());
        remote(status, &code, first_line)
    } else {
        remote(
            status,
            "",
            &String::from_utf8_lossy(&resp.body)
                .chars()
                .take(500)
                .collect::<String>(),
        )
    };
    match resp.status {
        400 if r.code.starts_with("AADSTS") => KmsError::Unauthorized(r),
        400 => KmsError::BadRequest(r),
        401 => KmsError::Unauthorized(r),
        403 => KmsError::Forbidden(r),
        404 => KmsError::NotFound(r),
        409 => KmsError::Conflict(r),
        429 => KmsError::Other(r),
        500..=599 => KmsError::Unavailable(r),
        _ => KmsError::Other(r),
    }
}

/// Exponential backoff with full jitter, or the service's Retry-After when it gave one.
fn backoff(attempt: u32, retry_after: Option<u64>) -> u64 {
    if let Some(ms) = retry_after {
        return ms + jitter(ms / 10 + 1);
    }
    let cap = (BASE_DELAY_MS << (attempt - 1).min(10)).min(MAX_DELAY_MS);
    cap / 2 + jitter(cap / 2 + 1)
}

/// A cheap pseudo-random number below `bound` (timing jitter needs no cryptographic quality).
fn jitter(bound: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x % bound.max(1)
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> http::Response {
        http::Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn entra_id_refusals_keep_the_aadsts_code_and_first_line() {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x","error_codes":[7000215]}"#;
        match error_from(&response(401, &[], body)) {
            KmsError::Unauthorized(r) => {
                assert_eq!(r.code, "AADSTS7000215");
                assert_eq!(r.status, Some(401));
                assert!(
                    r.message
                        .starts_with("AADSTS7000215: Invalid client secret provided.")
                );
                assert!(!r.message.contains("Trace ID"));
            }
            other => panic!("{other:?}"),
        }
        // An unknown tenant is a 400 from Entra ID, but still a credentials problem.
        let body = r#"{"error":"invalid_request","error_description":"AADSTS90002: Tenant not found.","error_codes":[90002]}"#;
        assert!(
            matches!(error_from(&response(400, &[], body)), KmsError::Unauthorized(r) if r.code == "AADSTS90002")
        );
    }

    #[test]
    fn key_vault_errors_map_by_status_and_keep_the_inner_code() {
        let body = r#"{"error":{"code":"Conflict","message":"Key is deleted but recoverable","innererror":{"code":"ObjectIsDeletedButRecoverable"}}}"#;
        assert!(
            matches!(error_from(&response(409, &[], body)), KmsError::Conflict(r) if r.code == "ObjectIsDeletedButRecoverable")
        );
        let body =
            r#"{"error":{"code":"KeyNotFound","message":"A key with (name/id) x was not found"}}"#;
        assert!(
            matches!(error_from(&response(404, &[], body)), KmsError::NotFound(r) if r.code == "KeyNotFound")
        );
        assert!(matches!(
            error_from(&response(403, &[], "{}")),
            KmsError::Forbidden(_)
        ));
        assert!(matches!(
            error_from(&response(400, &[], "{}")),
            KmsError::BadRequest(_)
        ));
        assert!(
            matches!(error_from(&response(503, &[], "busy")), KmsError::Unavailable(r) if r.message == "busy")
        );
    }

    #[test]
    fn throttling_and_server_errors_are_retried_other_refusals_are_not() {
        let (retry, wait, err) = classify(Failure::Status(response(
            429,
            &[("Retry-After", "3")],
            r#"{"error":{"code":"Throttled","message":"slow down"}}"#,
        )));
        assert!(retry);
        assert_eq!(wait, Some(3_000));
        assert!(
            matches!(err, KmsError::Throttled(t) if t.retry_after_ms == Some(3_000) && t.error.code == "Throttled")
        );
        // A huge Retry-After is capped.
        let (_, wait, _) = classify(Failure::Status(response(
            429,
            &[("retry-after", "3600")],
            "",
        )));
        assert_eq!(wait, Some(MAX_RETRY_AFTER_MS));
        assert!(classify(Failure::Status(response(500, &[], ""))).0);
        assert!(classify(Failure::Transport(http::Error::Connection("reset".into()))).0);
        assert!(classify(Failure::Transport(http::Error::Timeout)).0);
        for status in [400, 401, 403, 404, 409] {
            assert!(
                !classify(Failure::Status(response(status, &[], ""))).0,
                "{status}"
            );
        }
        assert!(
            !classify(Failure::Transport(http::Error::Tls(
                "bad certificate".into()
            )))
            .0
        );
        assert!(!classify(Failure::Transport(http::Error::Denied("no".into()))).0);
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_bounded() {
        for attempt in 1..=10 {
            let cap = (BASE_DELAY_MS << (attempt - 1).min(10)).min(MAX_DELAY_MS);
            let d = backoff(attempt, None);
            assert!(
                d >= cap / 2 && d <= cap,
                "attempt {attempt}: {d} outside {}..={cap}",
                cap / 2
            );
        }
        let d = backoff(1, Some(2_000));
        assert!((2_000..=2_201).contains(&d));
    }
}
