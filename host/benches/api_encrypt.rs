//! Encrypt throughput through the REST API: AES-256-GCM on a 64-byte payload, bearer token,
//! keep-alive connections, the crypto policy plugin in the path. Printed next to the same
//! operation in-process and a no-op endpoint on the same server, with the ratios.
//!
//! Run with `cargo bench -p keyward --bench api_encrypt`. Target: at least 5,000 req/s on a
//! 2-core machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward::daemon::{self, DaemonConfig};
use keyward::plugins::policy::{Action, KeyOp, PolicyRequest, Principal};
use serde_json::{Value, json};

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

/// Requests per second of `make(client)` with CONCURRENCY workers over WINDOW.
async fn rate(
    client: &reqwest::Client,
    request: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync + 'static,
) -> f64 {
    let request = Arc::new(request);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + WINDOW;
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (c, request, done) = (client.clone(), request.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let resp = request(&c).send().await.unwrap();
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

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = DaemonConfig::new(dir.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = daemon::start(config, async {
        stopped.await.ok();
    })
    .await
    .unwrap();
    let base = format!("http://{}", running.addr);
    let state = running.state.clone();
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();

    post(
        &c,
        &format!("{base}/sys/v1/users"),
        None,
        None,
        json!({"user_email": "bench@example.com", "user_password": "benchmark password"}),
    )
    .await;
    let admin = post(
        &c,
        &format!("{base}/sys/v1/session/auth"),
        None,
        Some(&STANDARD.encode("bench@example.com:benchmark password")),
        json!(null),
    )
    .await;
    let admin = admin["access_token"].as_str().unwrap().to_string();
    let group = post(&c, &format!("{base}/sys/v1/groups"), Some(&admin), None, json!({"name": "bench", "cryptographic_policy": {"aes": {"key_sizes": [256]}, "rsa": {}, "ec": {}}})).await;
    let gid = group["group_id"].as_str().unwrap().to_string();
    let app = post(
        &c,
        &format!("{base}/sys/v1/apps"),
        Some(&admin),
        None,
        json!({"name": "bench-app", "groups": [gid], "default_group": gid}),
    )
    .await;
    let session = post(
        &c,
        &format!("{base}/sys/v1/session/auth"),
        None,
        Some(app["api_key"].as_str().unwrap()),
        json!(null),
    )
    .await;
    let token = session["access_token"].as_str().unwrap().to_string();
    let key = post(
        &c,
        &format!("{base}/crypto/v1/keys"),
        Some(&token),
        None,
        json!({"name": "bench-key", "obj_type": "AES", "key_size": 256}),
    )
    .await;
    let kid = key["kid"].as_str().unwrap().to_string();
    let payload = STANDARD.encode([7u8; 64]);

    // Warm up connections, caches and plugin instances.
    let url = format!("{base}/crypto/v1/keys/{kid}/encrypt");
    let body = json!({"alg": "AES", "mode": "GCM", "plain": payload});
    for _ in 0..500 {
        post(&c, &url, Some(&token), None, body.clone()).await;
    }

    let encrypt = {
        let (url, token, body) = (url.clone(), token.clone(), body.clone());
        rate(&c, move |c| c.post(&url).bearer_auth(&token).json(&body)).await
    };
    let noop = {
        let url = format!("{base}/sys/v1/health");
        rate(&c, move |c| c.get(&url)).await
    };

    // The same work in-process: cached key, policy decision through the plugin, AES-GCM.
    let account = state
        .account(key["acct_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let group = state.group(&account.id, &gid).await.unwrap().unwrap();
    let plain = [7u8; 64];
    let rounds = 200_000;
    let started = Instant::now();
    for _ in 0..rounds {
        let k = state.keys.usable_key(&account.id, &kid).await.unwrap();
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

    println!(
        "encrypt AES-256-GCM, 64-byte payload; {CONCURRENCY} concurrent keep-alive clients on this machine, {}s windows",
        WINDOW.as_secs()
    );
    println!("  REST API (bearer token, crypto policy plugin in the path) {encrypt:>10.0} req/s");
    println!("  no-op endpoint (GET /sys/v1/health), same server           {noop:>10.0} req/s");
    println!(
        "  in-process (cached key, policy plugin, AES-GCM)            {in_process:>10.0} ops/s"
    );
    println!(
        "  ratios: API/no-op {:.2}, API/in-process {:.3}; target >= 5000 req/s: {}",
        encrypt / noop,
        encrypt / in_process,
        if encrypt >= 5000.0 { "met" } else { "MISSED" }
    );
    let _ = stop.send(());
    running.wait().await.unwrap();
}
