//! The client certificate of a request, and the CRLs of trusted-CA applications.
//!
//! A request's certificate is the one its TLS connection presented. Behind a proxy that
//! terminates TLS, the daemon can be told (`--trusted-proxy`, `--client-cert-header`) which
//! addresses are that proxy and which header carries the certificate it verified; the header
//! is read only from those addresses, and ignored from anyone else, so a client cannot name a
//! certificate it does not hold. The header holds the certificate as URL-encoded PEM (nginx's
//! `$ssl_client_escaped_cert`, Envoy's and Traefik's forms) or base64 of DER (HAProxy's
//! `%[ssl_c_der,base64]`).
//!
//! CRLs given by URL are fetched when first needed and again when their `nextUpdate` passes
//! (at most an hour later), from hosts the daemon allows (`--crl-allow`), through the same
//! address checks as notifications. A CRL that cannot be fetched or has expired refuses the
//! login: revocation fails closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderName;
use axum::http::request::Parts;
use percent_encoding::percent_decode_str;
use reqwest::Url;
use rustls::pki_types::CertificateDer;

use crate::auth::certs::{self, CertCredential, CrlSource, Presented, Refusal};
use crate::notify::Destinations;
use crate::plugins::HostPattern;
use crate::time::Clock;

use super::transport::PeerAddr;
use super::{ApiError, AppState};

/// A fetched CRL is used at most this long before it is fetched again.
const CRL_REFRESH_SECS: i64 = 3600;

/// How client certificates reach the daemon, and where CRLs may be fetched from.
#[derive(Debug, Clone, Default)]
pub struct ClientCertConfig {
    /// Addresses of TLS-terminating proxies whose certificate header is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// The header those proxies put the client's certificate in. Off unless set.
    pub header: Option<HeaderName>,
    /// Hosts CRLs may be fetched from.
    pub crl_allowed_hosts: Vec<HostPattern>,
}

struct CachedCrl {
    der: Vec<u8>,
    /// When it must be fetched again (Unix seconds).
    refresh_at: i64,
    /// When it stops being usable: its `nextUpdate`.
    usable_until: Option<i64>,
}

/// The daemon's client-certificate settings and its CRL cache.
pub struct ClientCerts {
    config: ClientCertConfig,
    clock: Clock,
    http: reqwest::Client,
    destinations: Destinations,
    crls: Mutex<HashMap<String, Arc<CachedCrl>>>,
}

impl ClientCerts {
    pub fn new(config: ClientCertConfig, clock: Clock) -> ClientCerts {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let destinations = Destinations::new(&config.crl_allowed_hosts);
        let http = reqwest::Client::builder()
            .tls_backend_rustls()
            .dns_resolver(Arc::new(destinations.clone()))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("Keyward/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client");
        ClientCerts {
            config,
            clock,
            http,
            destinations,
            crls: Mutex::new(HashMap::new()),
        }
    }

    /// The certificate a request presented: from a trusted proxy's header, or from its TLS
    /// connection.
    pub fn presented(&self, parts: &Parts) -> Option<Arc<Presented>> {
        let peer = parts.extensions.get::<ConnectInfo<PeerAddr>>()?;
        if let Some(header) = &self.config.header
            && self.config.trusted_proxies.contains(&peer.0.addr.ip())
        {
            return parts
                .headers
                .get(header)
                .and_then(|v| v.to_str().ok())
                .and_then(from_header)
                .map(Arc::new);
        }
        peer.0.client_cert.clone()
    }

    /// A CRL URL an application may name: http(s), on a host the daemon allows.
    pub fn check_crl_url(&self, url: &str) -> Result<(), ApiError> {
        let parsed =
            Url::parse(url).map_err(|e| ApiError::field("crl_url", format!("not a URL: {e}")))?;
        if !self
            .config
            .crl_allowed_hosts
            .iter()
            .any(|p| p.matches(&parsed))
        {
            return Err(ApiError::field(
                "crl_url",
                if self.config.crl_allowed_hosts.is_empty() {
                    "this daemon fetches no CRLs (start it with --crl-allow <host>); upload the CRL instead".to_string()
                } else {
                    format!(
                        "{url} is not among the hosts this daemon fetches CRLs from (--crl-allow)"
                    )
                },
            ));
        }
        self.destinations
            .check_url(&parsed)
            .map_err(|e| ApiError::field("crl_url", e))
    }

    /// The CRL (DER) a credential is checked against, fetched or from the cache.
    pub async fn crl_of(&self, credential: &CertCredential) -> Result<Option<Vec<u8>>, Refusal> {
        let CertCredential::TrustedCa {
            crl: Some(source), ..
        } = credential
        else {
            return Ok(None);
        };
        match source {
            CrlSource::Uploaded(der) => Ok(Some(der.clone())),
            CrlSource::Url(url) => self.fetched(url).await.map(Some),
        }
    }

    async fn fetched(&self, url: &str) -> Result<Vec<u8>, Refusal> {
        let now = self.clock.now();
        let cached = self.crls.lock().expect("CRL cache").get(url).cloned();
        if let Some(c) = &cached
            && now < c.refresh_at
        {
            return Ok(c.der.clone());
        }
        match self.fetch(url).await {
            Ok(der) => {
                let next = certs::crl_next_update(&der);
                let refresh_at = next
                    .map_or(now + CRL_REFRESH_SECS, |n| n.min(now + CRL_REFRESH_SECS))
                    .max(now + 1);
                let entry = Arc::new(CachedCrl {
                    der: der.clone(),
                    refresh_at,
                    usable_until: next,
                });
                self.crls
                    .lock()
                    .expect("CRL cache")
                    .insert(url.to_string(), entry);
                Ok(der)
            }
            // A CRL that cannot be fetched again serves until its own nextUpdate.
            Err(e) => match cached {
                Some(c) if c.usable_until.is_some_and(|u| now < u) => Ok(c.der.clone()),
                _ => Err(Refusal::CrlUnusable(e)),
            },
        }
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        let parsed = Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        self.destinations.check_url(&parsed)?;
        let answer = self
            .http
            .get(parsed)
            .send()
            .await
            .map_err(|e| format!("fetching {url}: {e}"))?;
        if !answer.status().is_success() {
            return Err(format!("fetching {url}: HTTP {}", answer.status()));
        }
        let body = answer
            .bytes()
            .await
            .map_err(|e| format!("fetching {url}: {e}"))?;
        certs::crl_from_bytes(&body).map_err(|e| format!("{url}: {e}"))
    }
}

/// A certificate from a proxy's header: URL-encoded PEM, or base64 of DER.
fn from_header(value: &str) -> Option<Presented> {
    let decoded = percent_decode_str(value.trim()).decode_utf8().ok()?;
    let decoded = decoded.trim().trim_matches('"');
    let der = certs::certificate_from_text("header", decoded).ok()?;
    Some(Presented {
        chain: vec![CertificateDer::from(der)],
    })
}

/// The client certificate a request presented, if any.
pub struct ClientCert(pub Option<Arc<Presented>>);

impl FromRequestParts<Arc<AppState>> for ClientCert {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientCert(state.client_certs.presented(parts)))
    }
}
