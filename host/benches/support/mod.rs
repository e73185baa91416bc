//! What the benchmarks against a running daemon share: a daemon on a loopback port with an
//! administrator logged in, on SQLite or on a fresh PostgreSQL database, a group linked to
//! the Azure Managed HSM emulator, and the request counts and lower bound the
//! emulator-backed benchmarks print.
#![allow(dead_code)] // each bench binary uses its own part of this

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward::catalog::Location;
use keyward::daemon::{self, DaemonConfig, Running};
use keyward::kms::AZURE_PLUGIN;
use keyward::plugins::HostPattern;
use keyward_emulator::FaultConfig;
use keyward_emulator::RunningEmulator as Emulator;
use keyward_emulator::config::demo;
use serde_json::{Value, json};

pub const EMAIL: &str = "bench@example.com";
pub const PASSWORD: &str = "bench password 1";

/// A size or concurrency from the environment, so a bench can be run smaller or larger.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The admin URL of a PostgreSQL to measure on: `KEYWARD_BENCH_POSTGRES`, or the test
/// suite's cluster (`tests/postgres.sh start`, which installs Debian's `postgresql` when it
/// is missing).
pub fn postgres_admin() -> String {
    if let Ok(url) = std::env::var("KEYWARD_BENCH_POSTGRES") {
        return url;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/postgres.sh");
    let out = std::process::Command::new(script)
        .arg("start")
        .output()
        .expect("tests/postgres.sh start");
    assert!(out.status.success(), "tests/postgres.sh start: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A new, empty database on the PostgreSQL at `admin`.
pub async fn new_database(admin: &str) -> Location {
    use sqlx::Connection;
    let name = format!("kw_bench_{}", keyward::catalog::new_id().replace('-', ""));
    let mut c = sqlx::PgConnection::connect(admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE template0"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    Location::from_str(&format!("{base}/{name}")).unwrap()
}

/// The catalogs the benchmarks compare: SQLite (`None`, the embedded default) and a fresh
/// PostgreSQL database; with their names for the printed figures.
pub async fn catalogs() -> [(&'static str, Option<Location>); 2] {
    [
        ("SQLite", None),
        ("PostgreSQL", Some(new_database(&postgres_admin()).await)),
    ]
}

pub struct Daemon {
    pub running: Running,
    pub api: String,
    pub http: reqwest::Client,
    pub token: String,
    stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// A daemon on `127.0.0.1:0` with a fresh SQLite catalog, its plugin allowed to reach
    /// the emulator `em` if given, configured further by `tune`; its first user signed up
    /// and logged in.
    pub async fn start(em: Option<&Emulator>, tune: impl FnOnce(&mut DaemonConfig)) -> Daemon {
        Daemon::start_on(None, em, tune).await
    }

    /// As [`Daemon::start`], with the catalog on `database` (SQLite in a fresh data
    /// directory when `None`); a PostgreSQL database must be empty.
    pub async fn start_on(
        database: Option<Location>,
        em: Option<&Emulator>,
        tune: impl FnOnce(&mut DaemonConfig),
    ) -> Daemon {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let mut config = DaemonConfig::new(dir.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.database = database;
        if let Some(em) = em {
            config.extra_outbound_hosts.insert(
                AZURE_PLUGIN.into(),
                vec![
                    HostPattern::parse(&format!("https://localhost:{}", em.port)).unwrap(),
                    HostPattern::parse(&format!("https://*.localhost:{}", em.port)).unwrap(),
                ],
            );
        }
        tune(&mut config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = daemon::start(config, async {
            stopped.await.ok();
        })
        .await
        .unwrap();
        let api = format!("http://{}", running.addr);
        let http = reqwest::Client::new();
        call(
            &http,
            &format!("{api}/sys/v1/users"),
            None,
            Some(json!({"user_email": EMAIL, "user_password": PASSWORD})),
        )
        .await;
        let login = http
            .post(format!("{api}/sys/v1/session/auth"))
            .header(
                "authorization",
                format!("Basic {}", STANDARD.encode(format!("{EMAIL}:{PASSWORD}"))),
            )
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        let token = login["access_token"].as_str().unwrap().to_string();
        Daemon {
            running,
            api,
            http,
            token,
            stop,
            _dir: dir,
        }
    }

    /// POST `path` as the logged-in user; panics unless it succeeds.
    pub async fn post(&self, path: &str, body: Option<Value>) -> Value {
        call(
            &self.http,
            &format!("{}{path}", self.api),
            Some(&self.token),
            body,
        )
        .await
    }

    /// A group linked to the emulator's demo HSM; returns its id once its background
    /// connection test has had time to finish, so it does not land in a measurement.
    /// A group linked to the emulator's demo Managed HSM.
    pub async fn azure_group(&self, em: &Emulator, name: &str) -> String {
        self.azure_group_in(em, name, Kind::Managed).await
    }

    /// A group linked to the emulator's demo store of that kind.
    pub async fn azure_group_in(&self, em: &Emulator, name: &str, kind: Kind) -> String {
        let group = self
            .post(
                "/sys/v1/groups",
                Some(json!({"name": name, "external_kms": {
                    "kind": "AzureManagedHsm", "tenant_id": demo::TENANT, "client_id": demo::CLIENT_ID,
                    "client_secret": demo::CLIENT_SECRET, "subscription_id": demo::SUBSCRIPTION,
                    "instance": kind.uri(em), "key_vault_type": kind.vault_type(),
                    "endpoints": {"identity": em.base_url, "management": em.base_url,
                        "instance_suffix": "localhost", "vault_suffix": "vault.localhost"},
                    "tls": {"ca_pem": em.ca_pem},
                }})),
            )
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        group["group_id"].as_str().unwrap().to_string()
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.running.wait().await.unwrap();
    }
}

pub async fn call(
    c: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let mut r = c.post(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

/// Seeds `count` AES keys named `{prefix}-NNNNN` into the emulator's demo HSM.
/// The kinds of Azure key store (`KEYWARD_BENCH_KIND`), each the emulator's demo one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Standard,
    Premium,
    Managed,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Standard, Kind::Premium, Kind::Managed];

    /// The kinds `KEYWARD_BENCH_KIND` names (`standard`, `premium`, `managed`; all three when
    /// unset).
    pub fn from_env() -> Vec<Kind> {
        match std::env::var("KEYWARD_BENCH_KIND").ok().as_deref() {
            None | Some("") | Some("all") => Kind::ALL.to_vec(),
            Some(k) => vec![
                Kind::ALL
                    .into_iter()
                    .find(|x| x.name() == k)
                    .unwrap_or_else(|| {
                        panic!("KEYWARD_BENCH_KIND: '{k}' is not standard, premium, managed or all")
                    }),
            ],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Standard => "standard",
            Kind::Premium => "premium",
            Kind::Managed => "managed",
        }
    }

    fn vault_type(self) -> &'static str {
        match self {
            Kind::Standard => "STANDARD",
            Kind::Premium => "PREMIUM",
            Kind::Managed => "MANAGED",
        }
    }

    fn store(self) -> &'static str {
        match self {
            Kind::Standard => demo::STANDARD_VAULT,
            Kind::Premium => demo::PREMIUM_VAULT,
            Kind::Managed => demo::HSM,
        }
    }

    fn uri(self, em: &Emulator) -> String {
        match self {
            Kind::Managed => em.hsm_uri(self.store()),
            _ => em.vault_uri(self.store()),
        }
    }

    /// A cheap key type the store holds (vaults hold no AES keys).
    fn seed_kty(self) -> &'static str {
        match self {
            Kind::Standard => "EC",
            Kind::Premium => "EC-HSM",
            Kind::Managed => "oct-HSM",
        }
    }
}

/// Seeds `count` keys into the demo Managed HSM.
pub async fn seed(em: &Emulator, count: usize, prefix: &str) {
    seed_in(em, Kind::Managed, count, prefix).await
}

/// Seeds `count` keys into the demo store of that kind.
pub async fn seed_in(em: &Emulator, kind: Kind, count: usize, prefix: &str) {
    // This may be the process's first TLS-capable client: rustls needs its provider first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::new()
        .post(format!("{}/admin/hsms/{}/seed", em.admin_url, kind.store()))
        .json(&json!({"count": count, "prefix": prefix, "kty": kind.seed_kty()}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "seeding: {}", resp.status());
}

/// What one measured call did: its result, wall time, and the emulator requests it made.
pub struct Measured<T> {
    pub value: T,
    pub wall: Duration,
    pub requests: u64,
    pub per_op: String,
}

/// Runs `f` with `latency_ms` injected into every emulator request, and measures it.
pub async fn with_latency<T>(
    em: &Emulator,
    latency_ms: u64,
    f: impl Future<Output = T>,
) -> Measured<T> {
    em.set_faults(FaultConfig {
        latency_ms,
        ..Default::default()
    })
    .unwrap();
    let before = em.counts();
    let started = Instant::now();
    let value = f.await;
    let wall = started.elapsed();
    let (requests, per_op) = requests_between(&before, &em.counts());
    Measured {
        value,
        wall,
        requests,
        per_op,
    }
}

/// The requests the emulator served between two of its counts: the total, and per operation.
pub fn requests_between(
    before: &BTreeMap<&'static str, u64>,
    after: &BTreeMap<&'static str, u64>,
) -> (u64, String) {
    let mut total = 0;
    let mut per_op = Vec::new();
    for (op, n) in after {
        let d = n - before.get(op).copied().unwrap_or(0);
        if d > 0 {
            per_op.push(format!("{op} {d}"));
            total += d;
        }
    }
    (total, per_op.join(", "))
}

/// Prints wall time, requests and the ratio to `requests x latency / concurrency`, and
/// whether the ratio is within `target`.
pub fn print_against_bound(
    wall: Duration,
    requests: u64,
    per_op: &str,
    latency_ms: u64,
    concurrency: usize,
    target: f64,
) -> f64 {
    let bound = Duration::from_millis(requests * latency_ms / concurrency as u64);
    let ratio = wall.as_secs_f64() / bound.as_secs_f64();
    println!("  wall time      {:.2} s", wall.as_secs_f64());
    println!("  requests       {requests} ({per_op})");
    println!(
        "  lower bound    {:.2} s (requests x {latency_ms} ms / concurrency {concurrency})",
        bound.as_secs_f64()
    );
    println!("  ratio          {ratio:.2}x (target <= {target}x)");
    ratio
}
