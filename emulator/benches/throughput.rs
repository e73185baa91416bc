//! Emulator throughput and latency injection.
//!
//! Prints get-key and list-page requests per second with no injected latency, list pages
//! again with 50,000 keys (a page costs its own 25 keys, not the HSM's: the ratio to the
//! 100-key figure shows it) and a whole 50,000-key listing by `nextLink`, then measured
//! against configured latency when latency (fixed plus jitter) is injected.
//! Run with `cargo bench -p keyward-emulator --bench throughput`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keyward_emulator::config::demo;
use keyward_emulator::{EmulatorConfig, FaultConfig};

const CONCURRENCY: usize = 8;
const WINDOW: Duration = Duration::from_secs(3);

fn client(em: &keyward_emulator::RunningEmulator) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(em.ca_pem.as_bytes()).unwrap()])
        .resolve(
            &format!("{}.localhost", demo::HSM),
            ([127, 0, 0, 1], em.port).into(),
        )
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap()
}

/// Requests per second of `url` with CONCURRENCY clients over WINDOW.
async fn rps(c: &reqwest::Client, token: &str, url: &str) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + WINDOW;
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (c, token, url, done) = (c.clone(), token.to_string(), url.to_string(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let r = c.get(&url).bearer_auth(&token).send().await.unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / WINDOW.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let em = keyward_emulator::start(EmulatorConfig::demo())
        .await
        .unwrap();
    let c = client(&em);
    let token: serde_json::Value = c
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            em.base_url,
            demo::TENANT
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", demo::CLIENT_ID),
            ("client_secret", demo::CLIENT_SECRET),
            ("scope", &format!("{}/.default", em.hsm_resource())),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    c.post(format!("{}/admin/hsms/{}/seed", em.admin_url, demo::HSM))
        .json(&serde_json::json!({"count": 100}))
        .send()
        .await
        .unwrap();
    let base = em.hsm_uri(demo::HSM);
    let get = format!("{base}keys/seed-00042/?api-version=7.5");
    let list = format!("{base}keys?api-version=7.5&maxresults=25");

    println!(
        "emulator throughput, {CONCURRENCY} concurrent HTTPS keep-alive clients, {}s windows",
        WINDOW.as_secs()
    );
    println!("  get key     {:>8.0} req/s", rps(&c, &token, &get).await);
    let small = rps(&c, &token, &list).await;
    println!("  list page   {small:>8.0} req/s  (25 keys per page, 100 keys)");

    // 50,000 keys: the first page, a page from the middle, and the whole list.
    c.post(format!("{}/admin/hsms/{}/seed", em.admin_url, demo::HSM))
        .json(&serde_json::json!({"count": 50_000, "prefix": "many"}))
        .send()
        .await
        .unwrap();
    let first = rps(&c, &token, &list).await;
    println!(
        "  list page   {first:>8.0} req/s  (first page of 50,100 keys: {:.2}x the 100-key rate)",
        first / small
    );
    // A continuation from the middle of the names: the token is the folded name after which
    // the page starts, as the emulator writes it.
    let token_after = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        "many-25000",
    );
    let middle = format!("{base}keys?api-version=7.5&$skiptoken={token_after}&maxresults=25");
    let mid = rps(&c, &token, &middle).await;
    println!(
        "  list page   {mid:>8.0} req/s  (page 1,000 of 2,004: {:.2}x the 100-key rate)",
        mid / small
    );
    let started = Instant::now();
    let (mut next, mut keys, mut pages) = (Some(list.clone()), 0usize, 0usize);
    while let Some(url) = next {
        let page: serde_json::Value = c
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        keys += page["value"].as_array().unwrap().len();
        pages += 1;
        next = page["nextLink"].as_str().map(str::to_string);
    }
    let whole = started.elapsed();
    assert_eq!(keys, 50_100);
    println!(
        "  whole list  {:>8.2} s      ({keys} keys in {pages} pages by nextLink, one client: {:.2} ms per page)",
        whole.as_secs_f64(),
        whole.as_secs_f64() * 1e3 / pages as f64
    );

    for (fixed, jitter) in [(20u64, 0u64), (20, 10), (100, 50)] {
        em.set_faults(FaultConfig {
            latency_ms: fixed,
            jitter_ms: jitter,
            ..Default::default()
        })
        .unwrap();
        let mut samples = Vec::new();
        for _ in 0..100 {
            let t = Instant::now();
            c.get(&get)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            samples.push(t.elapsed());
        }
        samples.sort();
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "  latency {fixed} ms + jitter 0..{jitter} ms (configured mean {:.1} ms): measured mean {:.1} ms, p50 {:.1} ms, p99 {:.1} ms",
            fixed as f64 + jitter as f64 / 2.0,
            ms(mean),
            ms(samples[50]),
            ms(samples[98]),
        );
    }
    em.stop().await;
}
