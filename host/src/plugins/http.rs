//! The host `http` import: outbound requests made by the daemon on a connector plugin's
//! behalf, limited to the manifest's allowed hosts and using the caller's TLS settings.
//!
//! Implemented with reqwest rather than `wasi:http`: pooled connections (one client per TLS
//! configuration), and no connection resets under load (see the toolchain notes).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Certificate, Client, Identity, Method, Url};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::bindings::v0_1_0::kms_connector::keyward::plugin::http::{self, Request, Response};
use super::manifest::HostPattern;

/// Largest response body handed to a plugin.
const MAX_RESPONSE_BYTES: u64 = 16 << 20;
/// Ceiling on any single request, whatever the plugin asks for.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// TLS settings of one caller (e.g. a group's link to an external KMS), applied to every
/// request a connector makes for it. A plugin cannot change them.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TlsSettings {
    /// PEM certificates to trust *instead of* the public roots (private CA, TLS-inspecting
    /// proxy). `None`: the public roots.
    pub ca_pem: Option<String>,
    /// PEM client certificate (chain) for mutual TLS.
    pub client_cert_pem: Option<String>,
    /// PEM private key of the client certificate. Secret.
    pub client_key_pem: Option<String>,
    /// Check that the server certificate names the host. On unless switched off.
    pub validate_hostname: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            ca_pem: None,
            client_cert_pem: None,
            client_key_pem: None,
            validate_hostname: true,
        }
    }
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("custom_ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client_cert_pem.is_some())
            .field("validate_hostname", &self.validate_hostname)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Checks that the settings can be used (PEMs parse, certificate and key go together).
    pub fn validate(&self) -> Result<(), String> {
        build_client(self).map(|_| ())
    }

    fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [&self.ca_pem, &self.client_cert_pem, &self.client_key_pem] {
            match part {
                Some(p) => {
                    h.update([1]);
                    h.update((p.len() as u64).to_le_bytes());
                    h.update(p.as_bytes());
                }
                None => h.update([0]),
            }
        }
        h.update([self.validate_hostname as u8]);
        h.finalize().into()
    }
}

fn build_client(tls: &TlsSettings) -> Result<Client, String> {
    // reqwest uses the process-wide rustls provider; ring is the one this build carries.
    // Installing fails harmlessly when it is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = Client::builder()
        .tls_backend_rustls()
        // A redirect could lead outside the allowed hosts; Azure does not need them.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(MAX_REQUEST_TIMEOUT)
        .dns_resolver(Arc::new(LoopbackAwareResolver));
    if let Some(pem) = &tls.ca_pem {
        let certs = Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("the custom CA is not valid PEM: {e}"))?;
        if certs.is_empty() {
            return Err("the custom CA PEM holds no certificate".into());
        }
        b = b.tls_certs_only(certs);
    } else if !tls.validate_hostname {
        return Err(
            "hostname validation can only be switched off together with a custom CA".into(),
        );
    }
    match (&tls.client_cert_pem, &tls.client_key_pem) {
        (Some(cert), Some(key)) => {
            let pem = format!("{}\n{}", cert.trim_end(), key.trim_end());
            let id = Identity::from_pem(pem.as_bytes())
                .map_err(|e| format!("the client certificate or key is not valid PEM: {e}"))?;
            b = b.identity(id);
        }
        (None, None) => {}
        _ => {
            return Err(
                "a client certificate needs both the certificate and its private key".into(),
            );
        }
    }
    if !tls.validate_hostname {
        b = b.danger_accept_invalid_hostnames(true);
    }
    b.build()
        .map_err(|e| format!("cannot set up TLS: {}", error_chain(&e)))
}

/// Resolves `localhost` and every `*.localhost` name to the loopback addresses, as RFC 6761
/// asks (browsers do the same; glibc does not), and everything else through the system
/// resolver. An Azure emulator on this machine serves its HSMs as `{name}.localhost`.
struct LoopbackAwareResolver;

impl reqwest::dns::Resolve for LoopbackAwareResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        Box::pin(async move {
            if host == "localhost" || host.ends_with(".localhost") {
                let loopback: Vec<std::net::SocketAddr> = vec![
                    (std::net::Ipv4Addr::LOCALHOST, 0).into(),
                    (std::net::Ipv6Addr::LOCALHOST, 0).into(),
                ];
                return Ok(Box::new(loopback.into_iter()) as reqwest::dns::Addrs);
            }
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// One pooled client per distinct TLS configuration.
#[derive(Default)]
pub struct HttpClients {
    clients: Mutex<HashMap<[u8; 32], Client>>,
}

impl HttpClients {
    fn client(&self, tls: &TlsSettings) -> Result<Client, String> {
        let key = tls.fingerprint();
        if let Some(c) = self.clients.lock().unwrap().get(&key) {
            return Ok(c.clone());
        }
        let client = build_client(tls)?;
        Ok(self
            .clients
            .lock()
            .unwrap()
            .entry(key)
            .or_insert(client)
            .clone())
    }
}

/// What a connector instance may reach, and how.
#[derive(Clone)]
pub struct HttpGate {
    pub allowed: Arc<[HostPattern]>,
    pub tls: TlsSettings,
    pub clients: Arc<HttpClients>,
}

pub(super) async fn send(
    plugin: &str,
    gate: &HttpGate,
    req: Request,
) -> Result<Response, http::Error> {
    use http::Error as E;
    let url = Url::parse(&req.url).map_err(|e| E::InvalidRequest(format!("invalid URL: {e}")))?;
    if !gate.allowed.iter().any(|p| p.matches(&url)) {
        let origin = url.origin().ascii_serialization();
        tracing::warn!(plugin, %origin, "refused an outbound request to a host outside the plugin's allowlist");
        return Err(E::Denied(format!(
            "{origin} is not in the plugin's allowed_outbound_hosts"
        )));
    }
    let method = Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| E::InvalidRequest(format!("invalid method '{}'", req.method)))?;
    let client = gate.clients.client(&gate.tls).map_err(E::Tls)?;
    let timeout = req
        .timeout_ms
        .map(|ms| Duration::from_millis(ms.into()).min(MAX_REQUEST_TIMEOUT))
        .unwrap_or(DEFAULT_REQUEST_TIMEOUT);

    let mut builder = client.request(method.clone(), url.clone()).timeout(timeout);
    for (name, value) in &req.headers {
        // The host decides where the request goes and how it is framed.
        if ["host", "content-length", "transfer-encoding", "connection"]
            .contains(&name.to_ascii_lowercase().as_str())
        {
            return Err(E::InvalidRequest(format!(
                "the '{name}' header is set by the host"
            )));
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
    if !req.body.is_empty() || matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        builder = builder.body(req.body);
    }
    tracing::debug!(plugin, %method, host = url.host_str().unwrap_or(""), path = url.path(), "plugin HTTP request");

    let mut resp = builder.send().await.map_err(classify)?;
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES)
    {
        return Err(E::TooLarge(MAX_RESPONSE_BYTES));
    }
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if (body.len() + chunk.len()) as u64 > MAX_RESPONSE_BYTES {
            return Err(E::TooLarge(MAX_RESPONSE_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn classify(e: reqwest::Error) -> http::Error {
    let text = error_chain(&e);
    if e.is_timeout() {
        http::Error::Timeout
    } else if looks_like_tls(&text) {
        http::Error::Tls(text)
    } else if e.is_builder() {
        http::Error::InvalidRequest(text)
    } else {
        http::Error::Connection(text)
    }
}

fn looks_like_tls(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "handshake",
        "unknownissuer",
        "notvalidforname",
    ]
    .iter()
    .any(|w| t.contains(w))
}

/// The error and all its causes on one line (reqwest's top-level message alone is vague).
/// An HTTP client error with its causes, each said once (the TLS or connection reason is in
/// a source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
