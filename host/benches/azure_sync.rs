//! Sync of 5,000 keys from the Azure Managed HSM emulator with 20 ms injected latency per
//! request: the whole path (REST API, sync workflow script, connector plugin, HTTPS to the
//! emulator, catalog writes with escrow). Prints wall time, requests made, and the ratio to
//! the lower bound `requests x latency / concurrency`.
//!
//! Run with `cargo bench -p keyward --bench azure_sync`. Target: under 30 s and within 2x of
//! the bound. `KEYWARD_BENCH_KEYS` and `KEYWARD_BENCH_CONCURRENCY` change the size.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward::daemon::{self, DaemonConfig};
use keyward::kms::AZURE_PLUGIN;
use keyward::plugins::HostPattern;
use keyward_emulator::config::demo;
use keyward_emulator::{EmulatorConfig, FaultConfig};
use serde_json::{Value, json};

const LATENCY_MS: u64 = 20;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn call(c: &reqwest::Client, url: &str, token: Option<&str>, body: Option<Value>) -> Value {
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

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let keys = env("KEYWARD_BENCH_KEYS", 5_000);
    let concurrency = env("KEYWARD_BENCH_CONCURRENCY", 32);

    let em = keyward_emulator::start(EmulatorConfig::demo())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let seeded = Instant::now();
    let resp = http
        .post(format!("{}/admin/hsms/{}/seed", em.admin_url, demo::HSM))
        .json(&json!({"count": keys, "prefix": "bench"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    println!(
        "seeded {keys} keys in the emulator in {:.1?}",
        seeded.elapsed()
    );

    let dir = tempfile::tempdir().unwrap();
    let mut config = DaemonConfig::new(dir.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.workflow_limits.concurrency = concurrency;
    config.extra_outbound_hosts.insert(
        AZURE_PLUGIN.into(),
        vec![
            HostPattern::parse(&format!("https://localhost:{}", em.port)).unwrap(),
            HostPattern::parse(&format!("https://*.localhost:{}", em.port)).unwrap(),
        ],
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = daemon::start(config, async {
        stopped.await.ok();
    })
    .await
    .unwrap();
    let api = format!("http://{}", running.addr);

    call(
        &http,
        &format!("{api}/sys/v1/users"),
        None,
        Some(json!({"user_email": "bench@example.com", "user_password": "bench password 1"})),
    )
    .await;
    let login = http
        .post(format!("{api}/sys/v1/session/auth"))
        .header(
            "authorization",
            format!(
                "Basic {}",
                STANDARD.encode("bench@example.com:bench password 1")
            ),
        )
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_string();
    let group = call(
        &http,
        &format!("{api}/sys/v1/groups"),
        Some(&token),
        Some(json!({"name": "bench", "external_kms": {
            "kind": "AzureManagedHsm", "tenant_id": demo::TENANT, "client_id": demo::CLIENT_ID,
            "client_secret": demo::CLIENT_SECRET, "subscription_id": demo::SUBSCRIPTION,
            "instance": em.hsm_uri(demo::HSM),
            "endpoints": {"identity": em.base_url, "management": em.base_url, "instance_suffix": "localhost"},
            "tls": {"ca_pem": em.ca_pem},
        }})),
    )
    .await;
    let gid = group["group_id"].as_str().unwrap().to_string();
    // Let the background connection test of the new group finish before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;

    em.set_faults(FaultConfig {
        latency_ms: LATENCY_MS,
        ..Default::default()
    })
    .unwrap();
    let before = em.counts();
    let started = Instant::now();
    let added = call(
        &http,
        &format!("{api}/sys/v1/groups/{gid}/hmg/scan"),
        Some(&token),
        None,
    )
    .await;
    let wall = started.elapsed();
    let after = em.counts();
    assert_eq!(added.as_array().unwrap().len(), keys, "every key was added");

    let mut requests = 0;
    let mut per_op = Vec::new();
    for (op, n) in &after {
        let d = n - before.get(op).copied().unwrap_or(0);
        if d > 0 {
            per_op.push(format!("{op} {d}"));
            requests += d;
        }
    }
    let bound = Duration::from_millis(requests * LATENCY_MS / concurrency as u64);
    let ratio = wall.as_secs_f64() / bound.as_secs_f64();
    println!("sync of {keys} keys, {LATENCY_MS} ms latency per request, concurrency {concurrency}");
    println!("  wall time      {:.2} s", wall.as_secs_f64());
    println!("  requests       {requests} ({})", per_op.join(", "));
    println!(
        "  lower bound    {:.2} s (requests x latency / concurrency)",
        bound.as_secs_f64()
    );
    println!("  ratio          {ratio:.2}x");
    println!(
        "  target         < 30 s and <= 2x: {}",
        if wall < Duration::from_secs(30) && ratio <= 2.0 {
            "met"
        } else {
            "NOT met"
        }
    );

    let _ = stop.send(());
    running.wait().await.unwrap();
    em.stop().await;
}
