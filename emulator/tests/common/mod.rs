//! Shared set-up for the emulator's tests: an in-process emulator with the demo directory,
//! an HTTP client that trusts its CA, and the official Azure SDK clients pointed at it.

#![allow(dead_code, reason = "each test file uses part of this")]

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use keyward_emulator::config::{HsmConfig, RoleAssignment, demo};
use keyward_emulator::{EmulatorConfig, RunningEmulator};
use serde_json::{Value, json};

pub const HSM: &str = demo::HSM;
pub const TENANT: &str = demo::TENANT;
pub const CLIENT: &str = demo::CLIENT_ID;
pub const SECRET: &str = demo::CLIENT_SECRET;
pub const SUBSCRIPTION: &str = demo::SUBSCRIPTION;
pub const STANDARD: &str = demo::STANDARD_VAULT;
pub const PREMIUM: &str = demo::PREMIUM_VAULT;

/// The demo set-up plus a second HSM with a 7-day retention and purge protection.
pub async fn emulator() -> RunningEmulator {
    let mut config = EmulatorConfig::demo();
    config.hsms.push(HsmConfig {
        name: "locked-hsm".into(),
        subscription: SUBSCRIPTION.into(),
        resource_group: "keyward-demo".into(),
        location: "westeurope".into(),
        retention_days: 7,
        purge_protection: true,
        roles: vec![RoleAssignment {
            principal: CLIENT.into(),
            role: "Managed HSM Administrator".into(),
        }],
    });
    keyward_emulator::start(config)
        .await
        .expect("the emulator starts")
}

/// A client for the plain-HTTP admin API.
pub fn plain() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// An HTTP client that trusts the emulator's CA and finds `*.localhost` on this machine.
pub fn http(em: &RunningEmulator) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(em.ca_pem.as_bytes()).unwrap();
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], em.port));
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve(&format!("{HSM}.localhost"), loopback)
        .resolve("locked-hsm.localhost", loopback)
        .resolve(&format!("{STANDARD}.vault.localhost"), loopback)
        .resolve(&format!("{PREMIUM}.vault.localhost"), loopback)
        .build()
        .unwrap()
}

/// SDK client options: only the transport (trust and name resolution) and the cloud
/// (authority host) differ from talking to Azure.
fn client_options(em: &RunningEmulator) -> ClientOptions {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = em.base_url.clone();
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http(em)))),
        cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
        ..Default::default()
    }
}

pub fn credential(em: &RunningEmulator, secret: &str) -> Arc<ClientSecretCredential> {
    ClientSecretCredential::new(
        TENANT,
        CLIENT.to_string(),
        secret.to_string().into(),
        Some(ClientSecretCredentialOptions {
            client_options: client_options(em),
        }),
    )
    .unwrap()
}

pub fn key_client(em: &RunningEmulator, hsm: &str) -> KeyClient {
    KeyClient::new(
        &em.hsm_uri(hsm),
        credential(em, SECRET),
        Some(KeyClientOptions {
            client_options: client_options(em),
            ..Default::default()
        }),
    )
    .unwrap()
}

/// An SDK client for a vault (`https://{name}.vault.localhost:{port}`).
pub fn vault_client(em: &RunningEmulator, vault: &str) -> KeyClient {
    KeyClient::new(
        &em.vault_uri(vault),
        credential(em, SECRET),
        Some(KeyClientOptions {
            client_options: client_options(em),
            ..Default::default()
        }),
    )
    .unwrap()
}

/// A token for `scope`, fetched with a plain HTTP call.
pub async fn token(em: &RunningEmulator, client: &str, secret: &str, scope: &str) -> String {
    let resp = http(em)
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", em.base_url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_secret", secret),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "token request failed");
    resp.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

pub async fn hsm_token(em: &RunningEmulator) -> String {
    token(
        em,
        CLIENT,
        SECRET,
        &format!("{}/.default", em.hsm_resource()),
    )
    .await
}

/// `https://{hsm}.localhost:{port}{path_and_query}`.
pub fn data_url(em: &RunningEmulator, hsm: &str, path: &str) -> String {
    format!("{}{}", em.hsm_uri(hsm).trim_end_matches('/'), path)
}

/// POSTs to the admin API and returns the JSON reply (panics on a non-2xx).
pub async fn admin(
    em: &RunningEmulator,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Value {
    let resp = plain()
        .request(method, format!("{}{path}", em.admin_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(json!(null));
    assert!(status.is_success(), "admin {path} failed: {status} {v}");
    v
}

/// Status and JSON body of a data-plane call with a bearer token.
pub async fn call(
    em: &RunningEmulator,
    token: &str,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http(em).request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
