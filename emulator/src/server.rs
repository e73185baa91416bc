//! The listeners: HTTPS (or plain HTTP when asked) for Entra ID, ARM and the HSM data plane,
//! and the admin API on its own port.
//!
//! Requests for `https://{hsm}.{hsm_domain}/...` (Managed HSMs) and
//! `https://{vault}.vault.{hsm_domain}/...` (vaults) are rewritten to `/hsm/{name}/...` before
//! routing (the path form `https://localhost:{port}/hsm/{name}/...` works too, for clients
//! that cannot resolve `*.localhost`). Faults are injected here, before any handler runs.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, Uri, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::error::AzureError;
use crate::faults::{Fault, Target, classify};
use crate::keys::HsmBase;
use crate::shared::Shared;

/// Accepts connections until `stop` turns true.
pub async fn serve_public(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stopping = async {
            let _ = stop.wait_for(|s| *s).await;
        };
        let (tcp, _) = tokio::select! {
            _ = stopping => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let router = router.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| handle(shared.clone(), router.clone(), req));
            let result = match tls {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => serve_connection(TokioIo::new(stream), service, stop).await,
                    Err(e) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        return;
                    }
                },
                None => serve_connection(TokioIo::new(tcp), service, stop).await,
            };
            if let Err(e) = result {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

async fn serve_connection<I, S>(
    io: I,
    service: S,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = std::io::Error,
        > + Send,
    S::Future: Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    router: Router,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let mut req = req.map(Body::new);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let hostname = host
        .rsplit_once(':')
        .map_or(host.as_str(), |(h, _)| h)
        .to_ascii_lowercase();
    let scheme = shared.scheme;
    let mut path = req.uri().path().to_string();
    let suffix = format!(".{}", shared.settings.hsm_domain);
    let vault_suffix = format!(".vault.{}", shared.settings.hsm_domain);
    let label = |suffix: &str| {
        hostname
            .strip_suffix(suffix)
            .filter(|n| !n.is_empty() && !n.contains('.'))
            .map(str::to_string)
    };

    let mut base = None;
    if let Some((name, vault_host)) = label(&vault_suffix)
        .map(|n| (n, true))
        .or_else(|| label(&suffix).map(|n| (n, false)))
    {
        // A vault answers only at a vault host name, a Managed HSM only at its own.
        let kind = shared.world.read().unwrap().hsms.get(&name).map(|h| h.kind);
        if kind.is_some_and(|k| k.is_vault() != vault_host) {
            return Ok(AzureError::kv(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("No such host: {hostname}"),
            )
            .into_response());
        }
        base = Some(format!("{scheme}://{host}"));
        path = format!("/hsm/{name}{path}");
    } else if let Some(rest) = path.strip_prefix("/hsm/") {
        let name = rest.split('/').next().unwrap_or_default();
        base = Some(format!("{scheme}://{host}/hsm/{name}"));
    }
    if let Some(base) = base {
        // SDKs leave an empty segment for "latest version" (`/keys/k//encrypt`).
        while path.contains("//") {
            path = path.replace("//", "/");
        }
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        *req.uri_mut() = pq.parse::<Uri>().map_err(std::io::Error::other)?;
        req.extensions_mut().insert(HsmBase(base));
    }

    let client_request_id = req.headers().get("x-ms-client-request-id").cloned();
    let (op, target) = classify(req.method(), &path);
    let (latency, fault) = shared.faults.on_request(op, target);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let injected = match fault {
        Fault::None => None,
        // Returning an error makes hyper close the connection without a response.
        Fault::Drop => return Err(std::io::Error::other("injected fault: connection dropped")),
        Fault::Throttle { retry_after_secs } => Some(match target {
            Target::Data => AzureError::throttled(retry_after_secs),
            Target::Arm => AzureError::arm(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "The request is being throttled as the limit has been reached for operation type - Read.",
            )
            .header(header::RETRY_AFTER, retry_after_secs.to_string()),
            Target::Aad => AzureError::aad(StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable", 90033, "A transient error has occurred. Please try again.")
                .header(header::RETRY_AFTER, retry_after_secs.to_string()),
        }),
        Fault::Error(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code = if status == StatusCode::SERVICE_UNAVAILABLE { "ServiceUnavailable" } else { "InternalServerError" };
            Some(match target {
                Target::Data => AzureError::kv(status, code, "The service encountered an internal error. Please try again."),
                Target::Arm => AzureError::arm(status, code, "The server encountered an internal error. Please retry the request."),
                Target::Aad => AzureError::aad(status, "temporarily_unavailable", 90033, "A transient error has occurred. Please try again."),
            })
        }
    };
    let mut response = match injected {
        Some(e) => e.into_response(),
        None => router
            .oneshot(req)
            .await
            .unwrap_or_else(|never| match never {}),
    };
    identify(response.headers_mut(), target, client_request_id);
    Ok(response)
}

/// The Managed HSM data-plane version the emulator answers as (Azure sends its build).
const SERVICE_VERSION: &str = "1.9.1325.1";

/// The headers by which Azure responses can be traced: a fresh `x-ms-request-id` on every
/// response, the caller's `x-ms-client-request-id` echoed, and on the HSM data plane the
/// service version.
fn identify(
    headers: &mut axum::http::HeaderMap,
    target: Target,
    client_request_id: Option<axum::http::HeaderValue>,
) {
    let id = request_id();
    headers.insert(
        "x-ms-request-id",
        id.parse().expect("hex digits and dashes"),
    );
    if let Some(c) = client_request_id {
        headers.insert("x-ms-client-request-id", c);
    }
    if target == Target::Data {
        headers.insert(
            "x-ms-keyvault-service-version",
            axum::http::HeaderValue::from_static(SERVICE_VERSION),
        );
    }
}

/// A random id in the GUID form Azure uses.
fn request_id() -> String {
    let b = crate::crypto::random_bytes(16);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
