//! Encrypt throughput through the REST API: AES-256-GCM on a 64-byte payload, bearer token,
//! keep-alive connections, the crypto policy plugin in the path. Printed next to the same
//! operation in-process and a no-op endpoint on the same server, with the ratios; then the
//! same for one daemon on PostgreSQL and for two daemons on one PostgreSQL driven
//! round-robin by the same clients.
//!
//! Run with `cargo bench -p keyward --bench api_encrypt`. Target: at least 5,000 req/s on a
//! 2-core machine. PostgreSQL is the test suite's (`tests/postgres.sh start`, which installs
//! Debian's `postgresql` when it is missing), or `KEYWARD_BENCH_POSTGRES=<admin URL>`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward::catalog::Location;
use keyward::daemon::{self, DaemonConfig};
use keyward::plugins::policy::{Action, KeyOp, PolicyRequest, Principal};
use serde_json::{Value, json};
use support::{new_database, postgres_admin};

const WINDOW: Duration = Duration::from_secs(5);
const CONCURRENCY: usize = 16;

async fn post(
    c: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    basic: Option<&str>,
    body: Value,
) -> Value {
    let mut r = c.post(url).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = basic {
        r = r.header("authorization", format!("Basic {b}"));
    }
    let resp = r.send().await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.unwrap()
}

/// Requests per second of `make(client, n)` (`n` counts each worker's requests, for
/// round-robin) with CONCURRENCY workers over WINDOW.
async fn rate(
    client: &reqwest::Client,
    request: impl Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
) -> f64 {
    let request = Arc::new(request);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + WINDOW;
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let (c, request, done) = (client.clone(), request.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut n = w as u64;
            while Instant::now() < deadline {
                n += 1;
                let resp = request(&c, n).send().await.unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
                resp.bytes().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / WINDOW.as_secs_f64()
}

/// A daemon on `database` (SQLite in `dir` when `None`).
async fn start(
    dir: &std::path::Path,
    database: Option<Location>,
) -> (daemon::Running, tokio::sync::oneshot::Sender<()>) {
    let mut config = DaemonConfig::new(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.database = database;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = daemon::start(config, async {
        stopped.await.ok();
    })
    .await
    .unwrap();
    (running, stop)
}

/// What the measured requests use.
struct Fixture {
    token: String,
    kid: String,
    gid: String,
    account: String,
}

async fn fixture(c: &reqwest::Client, base: &str) -> Fixture {
    post(
        c,
        &format!("{base}/sys/v1/users"),
        None,
        None,
        json!({"user_email": "bench@example.com", "user_password": "benchmark password"}),
    )
    .await;
    let admin = post(
        c,
        &format!("{base}/sys/v1/session/auth"),
        None,
        Some(&STANDARD.encode("bench@example.com:benchmark password")),
        json!(null),
    )
    .await;
    let admin = admin["access_token"].as_str().unwrap().to_string();
    let group = post(c, &format!("{base}/sys/v1/groups"), Some(&admin), None, json!({"name": "bench", "cryptographic_policy": {"aes": {"key_sizes": [256]}, "rsa": {}, "ec": {}}})).await;
    let gid = group["group_id"].as_str().unwrap().to_string();
    let app = post(
        c,
        &format!("{base}/sys/v1/apps"),
        Some(&admin),
        None,
        json!({"name": "bench-app", "groups": [gid], "default_group": gid}),
    )
    .await;
    let session = post(
        c,
        &format!("{base}/sys/v1/session/auth"),
        None,
        Some(app["api_key"].as_str().unwrap()),
        json!(null),
    )
    .await;
    let token = session["access_token"].as_str().unwrap().to_string();
    let key = post(
        c,
        &format!("{base}/crypto/v1/keys"),
        Some(&token),
        None,
        json!({"name": "bench-key", "obj_type": "AES", "key_size": 256}),
    )
    .await;
    Fixture {
        token,
        kid: key["kid"].as_str().unwrap().to_string(),
        gid,
        account: key["acct_id"].as_str().unwrap().to_string(),
    }
}

/// Encrypt requests per second against `bases` (round-robin), after a warm-up on each.
async fn encrypt_rate(c: &reqwest::Client, bases: &[String], f: &Fixture) -> f64 {
    let payload = STANDARD.encode([7u8; 64]);
    let body = json!({"alg": "AES", "mode": "GCM", "plain": payload});
    let urls: Vec<String> = bases
        .iter()
        .map(|b| format!("{b}/crypto/v1/keys/{}/encrypt", f.kid))
        .collect();
    // Warm up connections, caches and plugin instances.
    for url in &urls {
        for _ in 0..300 {
            post(c, url, Some(&f.token), None, body.clone()).await;
        }
    }
    let token = f.token.clone();
    rate(c, move |c, n| {
        c.post(&urls[(n % urls.len() as u64) as usize])
            .bearer_auth(&token)
            .json(&body)
    })
    .await
}

/// Audit events the catalog holds (every encrypt writes one, in batches).
async fn audit_events(catalog: &keyward::catalog::Catalog) -> i64 {
    let mut c = catalog.conn().await.unwrap();
    keyward::catalog::db::query("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get(0)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();

    // One daemon on SQLite: the API, a no-op endpoint, and the same work in-process.
    let dir = tempfile::tempdir().unwrap();
    let (running, stop) = start(dir.path(), None).await;
    let base = format!("http://{}", running.addr);
    let state = running.state.clone();
    let f = fixture(&c, &base).await;
    let audited = audit_events(&state.catalog).await;
    let t = Instant::now();
    let sqlite = encrypt_rate(&c, std::slice::from_ref(&base), &f).await;
    state.audit.flush().await;
    let sqlite_audit =
        (audit_events(&state.catalog).await - audited) as f64 / t.elapsed().as_secs_f64();
    let noop = {
        let url = format!("{base}/sys/v1/version");
        rate(&c, move |c, _| c.get(&url)).await
    };
    let account = state.account(&f.account).await.unwrap().unwrap();
    let group = state.group(&account.id, &f.gid).await.unwrap().unwrap();
    let plain = [7u8; 64];
    let rounds = 200_000;
    let started = Instant::now();
    for _ in 0..rounds {
        let k = state.keys.usable_key(&account.id, &f.kid).await.unwrap();
        let request = PolicyRequest {
            action: Action::Crypto(KeyOp::Encrypt),
            principal: Principal::App(String::new()),
            account: account.id.clone(),
            group: group.id.clone(),
            key: keyward::policy::attributes(&k.object, 0),
            current: None,
            now: 0,
        };
        let verdict = keyward::policy::check(&state.plugins, &account, &group, &request)
            .await
            .unwrap();
        assert!(verdict.allowed());
        let e = keyward::crypto::encrypt(
            k.material.as_ref().unwrap(),
            Some("GCM"),
            &None,
            &plain,
            None,
            None,
        )
        .unwrap();
        std::hint::black_box(e.cipher);
    }
    let in_process = rounds as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(());
    running.wait().await.unwrap();

    // One daemon on PostgreSQL, then two on one PostgreSQL, round-robin.
    let admin = postgres_admin();
    let location = new_database(&admin).await;
    let dir_a = tempfile::tempdir().unwrap();
    let (a, stop_a) = start(dir_a.path(), Some(location.clone())).await;
    let base_a = format!("http://{}", a.addr);
    let f = fixture(&c, &base_a).await;
    let audited = audit_events(&a.state.catalog).await;
    let t = Instant::now();
    let postgres = encrypt_rate(&c, std::slice::from_ref(&base_a), &f).await;
    a.state.audit.flush().await;
    let postgres_audit =
        (audit_events(&a.state.catalog).await - audited) as f64 / t.elapsed().as_secs_f64();
    let dir_b = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir_a.path().join("master.key"),
        dir_b.path().join("master.key"),
    )
    .unwrap();
    let (b, stop_b) = start(dir_b.path(), Some(location)).await;
    let base_b = format!("http://{}", b.addr);
    let two = encrypt_rate(&c, &[base_a, base_b], &f).await;
    for (stop, running) in [(stop_a, a), (stop_b, b)] {
        let _ = stop.send(());
        running.wait().await.unwrap();
    }

    println!(
        "encrypt AES-256-GCM, 64-byte payload; {CONCURRENCY} concurrent keep-alive clients on this machine, {}s windows",
        WINDOW.as_secs()
    );
    println!("  REST API, one daemon on SQLite (bearer token, policy plugin) {sqlite:>10.0} req/s");
    println!(
        "  REST API, one daemon on PostgreSQL                           {postgres:>10.0} req/s"
    );
    println!("  REST API, two daemons on one PostgreSQL, round-robin         {two:>10.0} req/s");
    println!("  no-op endpoint (GET /sys/v1/version), SQLite daemon           {noop:>10.0} req/s");
    println!(
        "  in-process (cached key, policy plugin, AES-GCM)              {in_process:>10.0} ops/s"
    );
    println!(
        "  audit events written per second while measuring: SQLite {sqlite_audit:.0}, PostgreSQL {postgres_audit:.0} (each committed before its answer, concurrent ones sharing a transaction)"
    );
    println!(
        "  ratios: SQLite API/no-op {:.2}, API/in-process {:.3}; PostgreSQL/SQLite {:.2}; two daemons/one (PostgreSQL) {:.2}",
        sqlite / noop,
        sqlite / in_process,
        postgres / sqlite,
        two / postgres
    );
    println!(
        "  target >= 5000 req/s: SQLite {}, PostgreSQL {}",
        if sqlite >= 5000.0 { "met" } else { "MISSED" },
        if postgres >= 5000.0 { "met" } else { "MISSED" }
    );
}
