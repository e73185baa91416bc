//! The first-run demo: an Azure emulator inside the daemon's process (a Managed HSM, a
//! Standard and a Premium tier Key Vault), and a demo account (an administrator, an
//! application, a group of Keyward keys and a group linked to each of the three kinds of
//! Azure key store, synced) created through the REST API, so that `cargo run` gives
//! something to try at once. Nothing here is used when the demo is turned off.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward_emulator::config::demo as ids;
use keyward_emulator::{EmulatorConfig, RunningEmulator};
use serde_json::{Value, json};

use crate::daemon::{DaemonConfig, DaemonError};
use crate::kms::AZURE_PLUGIN;
use crate::plugins::HostPattern;

/// Where the demo's emulator listens. Fixed, because the demo group's link names it.
pub const DEFAULT_EMULATOR_PORT: u16 = 8443;
const ADMIN_EMAIL: &str = "admin@demo.keyward";
const HSM_GROUP: &str = "Azure demo HSM";
const STANDARD_GROUP: &str = "Azure demo Standard vault";
const PREMIUM_GROUP: &str = "Azure demo Premium vault";
const LOCAL_GROUP: &str = "Demo keys";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo HSM emulator did not start: {0}")]
    Emulator(String),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("setting up the demo failed: {0}")]
    Setup(String),
    #[error(
        "the demo listens on loopback only (its administrator password is printed in the clear); {0} is not a loopback address. Run `keyward serve --demo false` to serve elsewhere"
    )]
    NotLoopback(std::net::SocketAddr),
    #[error(
        "the demo serves plain HTTP on loopback; run `keyward serve --demo false --tls-cert ... --tls-key ...` for HTTPS"
    )]
    Tls,
}

/// The emulator, with its state (keys, CA) under `<data_dir>/emulator`.
/// The demo emulator's ports: its HTTPS endpoints and its plain-HTTP admin API (0: any free
/// port, printed at start).
#[derive(Debug, Clone, Copy)]
pub struct EmulatorPorts {
    pub https: u16,
    pub admin: u16,
}

pub async fn start_emulator(
    data_dir: &Path,
    ports: EmulatorPorts,
) -> Result<RunningEmulator, DemoError> {
    let mut config = EmulatorConfig::demo();
    config.server.port = ports.https;
    config.server.admin_port = ports.admin;
    config.server.state_dir = Some(data_dir.join("emulator"));
    config.server.persist = true;
    keyward_emulator::start(config)
        .await
        .map_err(|e| DemoError::Emulator(e.to_string()))
}

/// Lets the Azure connector reach the emulator (its manifest allows only Azure's hosts).
pub fn allow_emulator(config: &mut DaemonConfig, em: &RunningEmulator) {
    let hosts = [
        format!("https://localhost:{}", em.port),
        format!("https://*.localhost:{}", em.port),
    ];
    config
        .extra_outbound_hosts
        .entry(AZURE_PLUGIN.to_string())
        .or_default()
        .extend(
            hosts
                .iter()
                .map(|h| HostPattern::parse(h).expect("valid pattern")),
        );
}

/// What the demo set up, kept in `<data_dir>/demo.json` (readable by the owner only).
fn details_path(data_dir: &Path) -> PathBuf {
    data_dir.join("demo.json")
}

/// Creates the demo account on the first run; later runs read what was created. Returns the
/// text telling the user how to log in and what to try.
pub async fn prepare(
    api: &str,
    em: &RunningEmulator,
    data_dir: &Path,
) -> Result<String, DemoError> {
    let path = details_path(data_dir);
    let details = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| DemoError::Setup(format!("{}: {e}", path.display())))?,
        Err(_) => {
            let d = create(api, em).await?;
            write_private(&path, &d.to_string()).map_err(DemoError::Setup)?;
            d
        }
    };
    Ok(instructions(api, em, &details, &path))
}

async fn create(api: &str, em: &RunningEmulator) -> Result<Value, DemoError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::new(api);
    let password = keyward_crypto::b64url(&keyward_crypto::random_bytes(12));
    client
        .call(
            "POST",
            "/sys/v1/users",
            None,
            Some(json!({"user_email": ADMIN_EMAIL, "user_password": password, "account_name": "Demo", "first_name": "Demo"})),
        )
        .await?;
    let login = client
        .basic_auth(&STANDARD.encode(format!("{ADMIN_EMAIL}:{password}")))
        .await?;
    let token = login["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let t = Some(token.as_str());
    let local = client
        .call(
            "POST",
            "/sys/v1/groups",
            t,
            Some(json!({"name": LOCAL_GROUP, "description": "Keys held by Keyward; copy them to the HSM group."})),
        )
        .await?;
    let hsm = client
        .call(
            "POST",
            "/sys/v1/groups",
            t,
            Some(json!({
                "name": HSM_GROUP,
                "description": "Linked to the emulated Azure Managed HSM 'demo-hsm'.",
                "external_kms": emulator_link(em, em.hsm_uri(ids::HSM), "MANAGED"),
            })),
        )
        .await?;
    let local_id = local["group_id"].as_str().unwrap_or_default().to_string();
    let hsm_id = hsm["group_id"].as_str().unwrap_or_default().to_string();
    let mut vault_groups = Vec::new();
    for (name, vault, kind, seed) in [
        (
            STANDARD_GROUP,
            ids::STANDARD_VAULT,
            "STANDARD",
            json!({"count": 2, "prefix": "vault-ec", "kty": "EC"}),
        ),
        (
            PREMIUM_GROUP,
            ids::PREMIUM_VAULT,
            "PREMIUM",
            json!({"count": 2, "prefix": "vault-rsa", "kty": "RSA-HSM", "key_size": 2048}),
        ),
    ] {
        vault_groups.push(vault_group(&client, t, em, name, vault, kind, seed).await?);
    }
    let app = client
        .call(
            "POST",
            "/sys/v1/apps",
            t,
            Some(json!({"name": "demo-app", "groups": [local_id, hsm_id, vault_groups[0], vault_groups[1]], "default_group": local_id})),
        )
        .await?;
    // A few keys in the HSM, so the first sync has something to find.
    let admin = reqwest::Client::new();
    for seed in [
        json!({"count": 3, "prefix": "azure-aes"}),
        json!({"count": 2, "prefix": "azure-rsa", "kty": "RSA-HSM", "key_size": 2048}),
    ] {
        admin
            .post(format!("{}/admin/hsms/{}/seed", em.admin_url, ids::HSM))
            .header("content-type", "application/json")
            .body(seed.to_string())
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| DemoError::Setup(format!("seeding the emulator: {e}")))?;
    }
    let synced = client
        .call(
            "POST",
            &format!("/sys/v1/groups/{hsm_id}/hmg/scan"),
            t,
            None,
        )
        .await?;
    Ok(json!({
        "standard_group_id": vault_groups[0],
        "premium_group_id": vault_groups[1],
        "user_email": ADMIN_EMAIL,
        "user_password": password,
        "app_id": app["app_id"],
        "api_key": app["api_key"],
        "local_group_id": local_id,
        "hsm_group_id": hsm_id,
        "synced_keys": synced.as_array().map_or(0, |a| a.len()),
    }))
}

/// The `external_kms` of a group linked to one of the emulator's stores.
fn emulator_link(em: &RunningEmulator, instance: String, kind: &str) -> Value {
    json!({
        "kind": "AzureManagedHsm",
        "tenant_id": ids::TENANT,
        "client_id": ids::CLIENT_ID,
        "client_secret": ids::CLIENT_SECRET,
        "subscription_id": ids::SUBSCRIPTION,
        "instance": instance,
        "key_vault_type": kind,
        "endpoints": {"identity": em.base_url, "management": em.base_url,
            "instance_suffix": "localhost", "vault_suffix": "vault.localhost"},
        "tls": {"ca_pem": em.ca_pem, "validate_hostname": true},
    })
}

/// A group linked to one of the emulator's vaults, with a few keys seeded there and synced.
#[allow(
    clippy::too_many_arguments,
    reason = "one group's parts, named at the call site"
)]
async fn vault_group(
    client: &Client,
    t: Option<&str>,
    em: &RunningEmulator,
    name: &str,
    vault: &str,
    kind: &str,
    seed: Value,
) -> Result<String, DemoError> {
    let g = client
        .call(
            "POST",
            "/sys/v1/groups",
            t,
            Some(json!({
                "name": name,
                "description": format!("Linked to the emulated {} tier Key Vault '{vault}'.", kind.to_lowercase()),
                "external_kms": emulator_link(em, em.vault_uri(vault), kind),
            })),
        )
        .await?;
    let id = g["group_id"].as_str().unwrap_or_default().to_string();
    reqwest::Client::new()
        .post(format!("{}/admin/hsms/{vault}/seed", em.admin_url))
        .header("content-type", "application/json")
        .body(seed.to_string())
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| DemoError::Setup(format!("seeding the emulator: {e}")))?;
    client
        .call("POST", &format!("/sys/v1/groups/{id}/hmg/scan"), t, None)
        .await?;
    Ok(id)
}

fn instructions(api: &str, em: &RunningEmulator, d: &Value, path: &Path) -> String {
    let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
    format!(
        r#"
Keyward is running with its demo set-up.

  REST API     {api}   (OpenAPI at {api}/sys/v1/openapi.json)
  Sign in      {email} / {password}
  Application  demo-app, API key {api_key}
  Groups       "{LOCAL_GROUP}" ({local}): keys held by Keyward
               "{HSM_GROUP}" ({hsm}): the emulated Managed HSM {hsm_uri}
               "{STANDARD_GROUP}" ({standard}): a Standard tier Key Vault
               "{PREMIUM_GROUP}" ({premium}): a Premium tier Key Vault
  Emulator     {base} (admin API {admin}); state in its directory under the data dir

Try:
  TOKEN=$(curl -s -X POST -u '{email}:{password}' {api}/sys/v1/session/auth | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  curl -s -H "Authorization: Bearer $TOKEN" {api}/sys/v1/groups
  curl -s -H "Authorization: Bearer $TOKEN" "{api}/crypto/v1/keys?group_id={hsm}"
  curl -s -H "Authorization: Bearer $TOKEN" -X POST {api}/sys/v1/groups/{hsm}/hmg/check
  curl -s -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -X POST {api}/crypto/v1/keys \
       -d '{{"name":"my-azure-key","group_id":"{hsm}","obj_type":"RSA","key_size":2048}}'
  curl -s -H "Authorization: Bearer $TOKEN" {api}/sys/v1/workflows

These details are in {path} (keep it private).
"#,
        email = s("user_email"),
        password = s("user_password"),
        api_key = s("api_key"),
        local = s("local_group_id"),
        hsm = s("hsm_group_id"),
        standard = s("standard_group_id"),
        premium = s("premium_group_id"),
        hsm_uri = em.hsm_uri(ids::HSM),
        base = em.base_url,
        admin = em.admin_url,
        path = path.display(),
    )
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A minimal JSON client for the daemon's own API.
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: base.to_string(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Value, DemoError> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        Self::finish(path, req).await
    }

    async fn basic_auth(&self, basic: &str) -> Result<Value, DemoError> {
        let req = self
            .http
            .post(format!("{}/sys/v1/session/auth", self.base))
            .header("authorization", format!("Basic {basic}"));
        Self::finish("/sys/v1/session/auth", req).await
    }

    async fn finish(path: &str, req: reqwest::RequestBuilder) -> Result<Value, DemoError> {
        let resp = req
            .send()
            .await
            .map_err(|e| DemoError::Setup(format!("{path}: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| DemoError::Setup(format!("{path}: {e}")))?;
        if !status.is_success() {
            return Err(DemoError::Setup(format!(
                "{path}: {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

/// Runs the daemon with the demo until `shutdown` completes.
pub async fn run(
    mut config: DaemonConfig,
    emulator: EmulatorPorts,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DemoError> {
    if !config.listen.ip().is_loopback() {
        return Err(DemoError::NotLoopback(config.listen));
    }
    if config.tls.is_some() || config.insecure_http {
        return Err(DemoError::Tls);
    }
    let em = start_emulator(&config.data_dir, emulator).await?;
    allow_emulator(&mut config, &em);
    let data_dir = config.data_dir.clone();
    let running = crate::daemon::start(config, shutdown).await?;
    let api = format!("http://{}", running.addr);
    match prepare(&api, &em, &data_dir).await {
        // A closed stdout (`keyward serve | head`) must not stop the daemon: println! would
        // panic on the broken pipe.
        Ok(text) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}").and_then(|()| out.flush());
        }
        Err(e) => tracing::error!("{e}"),
    }
    let result = running.wait().await;
    em.stop().await;
    Ok(result?)
}
