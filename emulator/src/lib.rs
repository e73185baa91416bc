//! An Azure Managed HSM and Key Vault emulator that the official Azure SDKs accept.
//!
//! It speaks HTTPS with its own CA and serves, on one port:
//! - Entra ID: OpenID discovery, signing keys and the v2 client-credentials token endpoint
//!   ([`aad`]), issuing RS256 JWTs ([`jwt`]) with Entra ID's error codes;
//! - Azure Resource Manager: the Managed HSMs of a subscription ([`arm`]);
//! - the keys data plane ([`keys`]) of Managed HSMs at `https://{hsm}.{hsm_domain}:{port}`
//!   and of Standard and Premium vaults at `https://{vault}.vault.{hsm_domain}:{port}`, with
//!   real cryptography ([`crypto`]), each tier's key types, soft delete, backups and BYOK
//!   import.
//!
//! An admin API on a second port ([`admin`]) configures tenants, applications,
//! subscriptions, HSMs and role assignments, seeds keys, advances the clock ([`clock`]),
//! injects faults and reads request counts ([`faults`]). Start it in-process with [`start`], or
//! run the `mhsm-emulator` binary.

pub mod aad;
pub mod admin;
pub mod arm;
pub mod clock;
pub mod config;
/// Key material and algorithms, shared with Keyward.
pub use keyward_crypto as crypto;
pub mod error;
pub mod faults;
pub mod jwt;
pub mod keys;
pub mod names;
pub mod pki;
mod server;
mod shared;
pub mod state;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::EmulatorConfig;
pub use faults::FaultConfig;

use crate::crypto::{b64url, decode_b64};
use crate::shared::Shared;
use crate::state::World;

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot bind {what}: {source}")]
    Bind {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("state directory: {0}")]
    State(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// Keys that must survive restarts when there is a state directory: the token signing key
/// (tokens stay valid) and the backup sealing key (backups stay restorable).
#[derive(Serialize, Deserialize)]
struct ServiceKeys {
    token_key_pkcs8: String,
    backup_key: String,
}

fn load_or_create_keys(dir: Option<&Path>) -> Result<(rsa::PrivateKey, [u8; 32]), EmulatorError> {
    let path = dir.map(|d| d.join("service-keys.json"));
    if let Some(p) = &path
        && let Ok(text) = std::fs::read_to_string(p)
    {
        let keys: ServiceKeys = serde_json::from_str(&text)
            .map_err(|e| EmulatorError::State(format!("{}: {e}", p.display())))?;
        let der = decode_b64("token_key", &keys.token_key_pkcs8)
            .map_err(|e| EmulatorError::State(e.to_string()))?;
        let token_key = rsa::PrivateKey::from_pkcs8_der(&der)
            .map_err(|e| EmulatorError::State(e.to_string()))?;
        let backup: [u8; 32] = decode_b64("backup_key", &keys.backup_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| EmulatorError::State("bad backup key".into()))?;
        return Ok((token_key, backup));
    }
    let token_key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048)
        .map_err(|e| EmulatorError::State(e.to_string()))?;
    let backup: [u8; 32] = crypto::random_bytes(32).try_into().expect("32 bytes");
    if let Some(p) = &path {
        let keys = ServiceKeys {
            token_key_pkcs8: b64url(
                token_key
                    .to_pkcs8_der()
                    .map_err(|e| EmulatorError::State(e.to_string()))?
                    .as_bytes(),
            ),
            backup_key: b64url(&backup),
        };
        pki::write_private(p, &serde_json::to_string(&keys).expect("serialize"))
            .map_err(EmulatorError::State)?;
    }
    Ok((token_key, backup))
}

/// A running emulator. Dropping it does not stop it; call [`RunningEmulator::stop`].
pub struct RunningEmulator {
    /// `https://localhost:{port}`: the Entra ID authority host and the ARM endpoint.
    pub base_url: String,
    /// `http://{bind}:{admin_port}`: the admin API.
    pub admin_url: String,
    pub port: u16,
    /// The CA that signed the server certificate; clients trust it.
    pub ca_pem: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningEmulator {
    /// Data-plane URI of an HSM (`https://{name}.{hsm_domain}:{port}/`).
    pub fn hsm_uri(&self, name: &str) -> String {
        self.shared.hsm_uri(name)
    }

    /// Data-plane URI of a vault (`https://{name}.vault.{hsm_domain}:{port}/`).
    pub fn vault_uri(&self, name: &str) -> String {
        self.shared.vault_uri(name)
    }

    /// The audience data-plane tokens carry (`https://{hsm_domain}`).
    pub fn hsm_resource(&self) -> String {
        self.shared.hsm_resource()
    }

    /// Requests counted per operation (`aad.token`, `keys.get`, ...).
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.shared.faults.counts()
    }

    pub fn set_faults(&self, faults: FaultConfig) -> Result<(), String> {
        self.shared.faults.set(faults)
    }

    pub fn advance_clock(&self, secs: i64) {
        self.shared.clock.advance(secs);
    }

    /// Stops accepting connections and finishes in-flight requests.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.shared.persist();
    }
}

/// Starts the emulator on the configured (or free) ports.
pub async fn start(config: EmulatorConfig) -> Result<RunningEmulator, EmulatorError> {
    let settings = config.server.clone();
    if settings.hsm_domain.is_empty() || settings.hsm_domain.contains('/') {
        return Err(EmulatorError::Config(
            "hsm_domain must be a DNS name".into(),
        ));
    }
    let state_dir = settings.state_dir.clone();
    if let Some(d) = &state_dir {
        std::fs::create_dir_all(d)
            .map_err(|e| EmulatorError::State(format!("{}: {e}", d.display())))?;
    }
    if settings.persist && state_dir.is_none() {
        return Err(EmulatorError::Config(
            "persistence needs a state directory".into(),
        ));
    }

    let pki = pki::Pki::load_or_create(state_dir.as_deref(), &settings.hsm_domain, &settings.names)
        .map_err(EmulatorError::Tls)?;
    let ca_pem = pki.ca_pem.clone();
    if let Some(d) = &state_dir {
        std::fs::write(d.join("ca.pem"), &ca_pem)
            .map_err(|e| EmulatorError::State(e.to_string()))?;
    }
    let dir = state_dir.clone();
    let (token_key, backup_key) =
        tokio::task::spawn_blocking(move || load_or_create_keys(dir.as_deref()))
            .await
            .expect("key setup does not panic")?;

    // Persisted state first, then the configuration on top (new entries, changed settings).
    let state_file = settings
        .persist
        .then(|| state_dir.as_ref().expect("checked").join("state.json"));
    let mut world = match &state_file {
        Some(p) if p.exists() => {
            let text = std::fs::read(p).map_err(|e| EmulatorError::State(e.to_string()))?;
            serde_json::from_slice::<World>(&text)
                .map_err(|e| EmulatorError::State(format!("{}: {e}", p.display())))?
        }
        _ => World::default(),
    };
    let configured = World::from_config(&config).map_err(EmulatorError::Config)?;
    merge(&mut world, configured, &config).map_err(EmulatorError::Config)?;

    let attestation = config
        .attestation_issuers
        .iter()
        .map(|a| {
            use rsa::pkcs8::DecodePublicKey;
            rsa::PublicKey::from_public_key_pem(&a.public_key_pem)
                .map(|k| (a.issuer.trim_end_matches('/').to_string(), k))
                .map_err(|e| EmulatorError::Config(format!("attestation issuer {}: {e}", a.issuer)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let listener = TcpListener::bind((settings.bind, settings.port))
        .await
        .map_err(|source| EmulatorError::Bind {
            what: "the HTTPS port",
            source,
        })?;
    let admin_listener = TcpListener::bind((settings.bind, settings.admin_port))
        .await
        .map_err(|source| EmulatorError::Bind {
            what: "the admin port",
            source,
        })?;
    let port = listener
        .local_addr()
        .map_err(|source| EmulatorError::Bind {
            what: "the HTTPS port",
            source,
        })?
        .port();
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| EmulatorError::Bind {
            what: "the admin port",
            source,
        })?;
    let scheme = if settings.plain_http { "http" } else { "https" };

    let shared = Arc::new(Shared {
        world: RwLock::new(world),
        clock: clock::Clock::default(),
        issuer: jwt::TokenIssuer::new(token_key),
        faults: faults::Faults::default(),
        base_url: format!("{scheme}://localhost:{port}"),
        scheme,
        port,
        backup_key,
        state_file,
        ca_pem: ca_pem.clone(),
        settings: settings.clone(),
        byok_opened: Default::default(),
        attestation,
    });
    shared.persist();

    let public = axum::Router::new()
        .merge(aad::routes())
        .merge(arm::routes())
        .merge(keys::routes())
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
        .with_state(shared.clone());
    let admin = admin::routes().with_state(shared.clone());
    let tls = if settings.plain_http {
        None
    } else {
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            pki.tls_config().map_err(EmulatorError::Tls)?,
        )))
    };

    let (stop, stopped) = watch::channel(false);
    let mut admin_stop = stopped.clone();
    let tasks = vec![
        tokio::spawn(server::serve_public(
            listener,
            tls,
            shared.clone(),
            public,
            stopped,
        )),
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = admin_stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(admin_listener, admin)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!("admin API stopped: {e}");
            }
        }),
    ];
    tracing::info!(base = %shared.base_url, admin = %admin_addr, "Azure emulator (Managed HSMs and Key Vault vaults) listening");
    Ok(RunningEmulator {
        base_url: shared.base_url.clone(),
        admin_url: format!("http://{admin_addr}"),
        port,
        ca_pem,
        shared,
        stop,
        tasks,
    })
}

/// Applies the configuration to a (possibly persisted) world: configured entries are added
/// or updated; keys of existing HSMs are kept.
fn merge(world: &mut World, configured: World, config: &EmulatorConfig) -> Result<(), String> {
    world.tenants.extend(configured.tenants);
    for (id, app) in configured.apps {
        let object_id = world.apps.get(&id).map(|a| a.object_id.clone());
        let entry = world.apps.entry(id).or_insert(app.clone());
        *entry = state::App {
            object_id: object_id.unwrap_or(app.object_id.clone()),
            ..app
        };
    }
    for (id, sub) in configured.subscriptions {
        let e = world.subscriptions.entry(id).or_insert(sub.clone());
        e.readers.extend(sub.readers);
        e.tenant = sub.tenant;
    }
    for h in &config.hsms {
        world.add_hsm(h)?;
    }
    for v in &config.vaults {
        world.add_vault(v)?;
    }
    Ok(())
}
