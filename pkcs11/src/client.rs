//! Keyward's REST API as the module uses it: an application's session, its groups' keys,
//! and the cryptographic operations. Every call goes to the daemon, which authorizes, audits
//! and puts it through the policy plugins; nothing here decides what a key may do.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::StatusCode;
use reqwest::blocking::{Client as Http, RequestBuilder};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Config;

/// A key as the API describes it (DSM's `Sobject`, the fields the module uses).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Key {
    pub kid: String,
    pub name: String,
    pub obj_type: String,
    pub key_size: Option<u32>,
    pub elliptic_curve: Option<String>,
    #[serde(default)]
    pub key_ops: Vec<String>,
    #[serde(default)]
    pub never_exportable: bool,
    /// SubjectPublicKeyInfo DER, base64.
    pub pub_key: Option<String>,
    pub origin: String,
}

impl Key {
    pub fn permits(&self, op: &str) -> bool {
        self.key_ops.iter().any(|o| o == op)
    }

    pub fn public_der(&self) -> Option<Vec<u8>> {
        self.pub_key.as_deref().and_then(|p| B64.decode(p).ok())
    }
}

/// Why a call failed, as the module tells its caller.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon did not answer (down, unreachable, too slow).
    #[error("the daemon did not answer: {0}")]
    Unreachable(String),
    /// 401: the session ended (logged out, application revoked or reset).
    #[error("the session is no longer valid")]
    Unauthenticated,
    /// 403 `ApprovalRequired`: the group's quorum protects the operation.
    #[error("the operation requires approval")]
    ApprovalRequired,
    /// 403: not permitted (the key's operations, the application's permissions, a policy).
    #[error("refused: {0}")]
    Forbidden(String),
    /// 404: no such key (any more).
    #[error("not found: {0}")]
    NotFound(String),
    /// 400: the input is not acceptable.
    #[error("invalid: {0}")]
    Invalid(String),
    /// 409: the key's state does not allow it (deactivated, destroyed).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Anything else the daemon answered.
    #[error("the daemon answered {0}: {1}")]
    Daemon(u16, String),
}

pub struct Client {
    http: Http,
    base: String,
}

/// DSM's error body.
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl Client {
    pub fn new(config: &Config) -> Result<Client, String> {
        // The module may be the first user of rustls in its process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = Http::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30));
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("reading {}: {e}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("{}: not a PEM certificate: {e}", ca.display()))?;
            b = b.add_root_certificate(cert);
        }
        Ok(Client {
            http: b.build().map_err(|e| e.to_string())?,
            base: config.address.clone(),
        })
    }

    fn send(&self, req: RequestBuilder) -> Result<Value, ClientError> {
        let resp = req
            .send()
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Daemon(status.as_u16(), e.to_string()));
        }
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
        Err(match status {
            StatusCode::UNAUTHORIZED => ClientError::Unauthenticated,
            StatusCode::FORBIDDEN if body.code == "ApprovalRequired" => {
                ClientError::ApprovalRequired
            }
            StatusCode::FORBIDDEN => ClientError::Forbidden(body.message),
            StatusCode::NOT_FOUND => ClientError::NotFound(body.message),
            StatusCode::BAD_REQUEST => ClientError::Invalid(body.message),
            StatusCode::CONFLICT => ClientError::Conflict(body.message),
            s => ClientError::Daemon(s.as_u16(), body.message),
        })
    }

    fn get(&self, token: &str, path: &str) -> Result<Value, ClientError> {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(token),
        )
    }

    fn post(&self, token: &str, path: &str, body: Value) -> Result<Value, ClientError> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(token)
                .json(&body),
        )
    }

    /// Logs the application in with its API key (the PIN); its session token and id.
    pub fn login(&self, api_key: &str) -> Result<(String, String), ClientError> {
        let v = self.send(
            self.http
                .post(format!("{}/sys/v1/session/auth", self.base))
                .header("authorization", format!("Basic {api_key}")),
        )?;
        let token = v["access_token"]
            .as_str()
            .ok_or_else(|| ClientError::Daemon(200, "no access_token".into()))?;
        Ok((
            token.to_string(),
            v["entity_id"].as_str().unwrap_or_default().to_string(),
        ))
    }

    pub fn logout(&self, token: &str) -> Result<(), ClientError> {
        self.post(token, "/sys/v1/session/terminate", json!({}))
            .map(|_| ())
    }

    /// The group's name.
    pub fn group_name(&self, token: &str, group: &str) -> Result<String, ClientError> {
        let g = self.get(token, &format!("/sys/v1/groups/{group}"))?;
        Ok(g["name"].as_str().unwrap_or_default().to_string())
    }

    /// The groups the application may use: id and name each.
    pub fn groups(&self, token: &str) -> Result<Vec<(String, String)>, ClientError> {
        #[derive(Deserialize)]
        struct Group {
            group_id: String,
            name: String,
        }
        let groups: Vec<Group> = serde_json::from_value(self.get(token, "/sys/v1/groups")?)
            .map_err(|e| ClientError::Daemon(200, format!("a group list: {e}")))?;
        Ok(groups.into_iter().map(|g| (g.group_id, g.name)).collect())
    }

    /// Every key of the group the application sees.
    pub fn keys(&self, token: &str, group: &str) -> Result<Vec<Key>, ClientError> {
        const PAGE: usize = 1000;
        let mut out = Vec::new();
        loop {
            let page = self.get(
                token,
                &format!(
                    "/crypto/v1/keys?group_id={group}&limit={PAGE}&offset={}",
                    out.len()
                ),
            )?;
            let keys: Vec<Key> = serde_json::from_value(page)
                .map_err(|e| ClientError::Daemon(200, format!("a key list: {e}")))?;
            let n = keys.len();
            out.extend(keys);
            if n < PAGE {
                return Ok(out);
            }
        }
    }

    pub fn key(&self, token: &str, kid: &str) -> Result<Key, ClientError> {
        serde_json::from_value(self.get(token, &format!("/crypto/v1/keys/{kid}"))?)
            .map_err(|e| ClientError::Daemon(200, format!("a key: {e}")))
    }

    /// `POST /crypto/v1/keys`: a new key, as the API describes it.
    pub fn create(&self, token: &str, body: Value) -> Result<Key, ClientError> {
        serde_json::from_value(self.post(token, "/crypto/v1/keys", body)?)
            .map_err(|e| ClientError::Daemon(201, format!("a key: {e}")))
    }

    /// `PUT /crypto/v1/keys`: an imported key.
    pub fn import(&self, token: &str, body: Value) -> Result<Key, ClientError> {
        let v = self.send(
            self.http
                .put(format!("{}/crypto/v1/keys", self.base))
                .bearer_auth(token)
                .json(&body),
        )?;
        serde_json::from_value(v).map_err(|e| ClientError::Daemon(201, format!("a key: {e}")))
    }

    /// `POST /crypto/v1/keys/{kek}/unwrapkey`: the key unwrapped and imported.
    pub fn unwrap(&self, token: &str, kek: &str, body: Value) -> Result<Key, ClientError> {
        serde_json::from_value(self.post(
            token,
            &format!("/crypto/v1/keys/{kek}/unwrapkey"),
            body,
        )?)
        .map_err(|e| ClientError::Daemon(201, format!("a key: {e}")))
    }

    pub fn delete(&self, token: &str, kid: &str) -> Result<(), ClientError> {
        self.send(
            self.http
                .delete(format!("{}/crypto/v1/keys/{kid}", self.base))
                .bearer_auth(token),
        )
        .map(|_| ())
    }

    /// `POST /crypto/v1/keys/{kid}/<op>` (`sign`, `encrypt`, `decrypt`) with `body`.
    pub fn operate(
        &self,
        token: &str,
        kid: &str,
        op: &str,
        body: Value,
    ) -> Result<Value, ClientError> {
        self.post(token, &format!("/crypto/v1/keys/{kid}/{op}"), body)
    }

    /// Asks for approval of `POST <path>` with `body`; the request's id.
    pub fn ask_approval(
        &self,
        token: &str,
        path: &str,
        body: &Value,
    ) -> Result<String, ClientError> {
        let r = self.post(
            token,
            "/sys/v1/approval_requests",
            json!({"method": "POST", "operation": path, "body": body,
                "description": "asked by the PKCS#11 module"}),
        )?;
        r["request_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::Daemon(201, "no request_id".into()))
    }

    /// The request's status (`PENDING`, `APPROVED`, `DENIED`, `FAILED`).
    pub fn approval_status(&self, token: &str, id: &str) -> Result<String, ClientError> {
        let r = self.get(token, &format!("/sys/v1/approval_requests/{id}"))?;
        Ok(r["status"].as_str().unwrap_or_default().to_string())
    }

    /// What the approved operation answered: its status and body.
    pub fn approval_result(&self, token: &str, id: &str) -> Result<(u16, Value), ClientError> {
        let r = self.post(
            token,
            &format!("/sys/v1/approval_requests/{id}/result"),
            json!({}),
        )?;
        Ok((r["status"].as_u64().unwrap_or(0) as u16, r["body"].clone()))
    }

    /// `POST /crypto/v1/keys/{kid}/verify`: whether the signature holds.
    pub fn verify(&self, token: &str, kid: &str, body: Value) -> Result<bool, ClientError> {
        let v = self.post(token, &format!("/crypto/v1/keys/{kid}/verify"), body)?;
        Ok(v["result"].as_bool().unwrap_or(false))
    }
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// A base64 field of an answer, decoded.
pub fn field(v: &Value, name: &str) -> Result<Vec<u8>, ClientError> {
    let text = v[name]
        .as_str()
        .ok_or_else(|| ClientError::Daemon(200, format!("no {name} in the answer")))?;
    B64.decode(text)
        .map_err(|e| ClientError::Daemon(200, format!("{name}: {e}")))
}
