//! The CLI's connection to a daemon: its REST API with the session token, answers as JSON,
//! and every answer that is not a 2xx turned into [`CliError::Server`].

use std::path::Path;

use keyward::plugins::http::error_chain;
use reqwest::Method;
use serde_json::Value;

use super::{CliError, Tls};

/// A daemon's answer: its JSON, and the total a paged list reports (`X-Total-Count`).
pub struct Answer {
    pub value: Value,
    pub total: Option<u64>,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(addr: &str, tls: &Tls, token: Option<String>) -> Result<Client, CliError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .tls_backend_rustls()
            .user_agent(concat!("keyward-cli/", env!("CARGO_PKG_VERSION")));
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| CliError::Local(format!("{}: {e}", path.display())))
        };
        if let Some(path) = &tls.ca_cert {
            let cert = reqwest::Certificate::from_pem(&read(path)?)
                .map_err(|e| CliError::Local(format!("{}: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        // A certificate application's client certificate goes with every call: its session
        // is bound to it.
        if let Some((cert, key)) = &tls.client_cert {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                CliError::Local(format!("{} and {}: {e}", cert.display(), key.display()))
            })?;
            builder = builder.identity(identity);
        }
        let base = addr.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::Local(format!(
                "the daemon's address must start with https:// or http://, not '{addr}'"
            )));
        }
        Ok(Client {
            http: builder
                .build()
                .map_err(|e| CliError::Local(format!("HTTP client: {e}")))?,
            base,
            token,
        })
    }

    /// A call with the session token (when there is one) and an optional JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, CliError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        self.send(req, body).await
    }

    /// `POST /sys/v1/session/auth` with Basic credentials: base64 of `email:password`, or an
    /// application's API key as it is.
    pub async fn login(&self, basic: &str) -> Result<Value, CliError> {
        let req = self
            .http
            .request(Method::POST, format!("{}/sys/v1/session/auth", self.base))
            .header("authorization", format!("Basic {basic}"));
        Ok(self.send(req, None).await?.value)
    }

    async fn send(
        &self,
        mut req: reqwest::RequestBuilder,
        body: Option<&Value>,
    ) -> Result<Answer, CliError> {
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b).expect("JSON values serialize"));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CliError::Connect(format!("{}: {}", self.base, error_chain(&e))))?;
        let status = resp.status();
        let total = resp
            .headers()
            .get("x-total-count")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CliError::Connect(format!("reading the answer: {e}")))?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if status.is_success() {
            Ok(Answer { value, total })
        } else {
            Err(CliError::Server {
                status: status.as_u16(),
                body: value,
            })
        }
    }
}
