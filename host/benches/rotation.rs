//! Rotation of a source key with 1,000 linked copies in the Azure Managed HSM emulator, 20 ms
//! injected latency per request: the whole path of `POST /crypto/v1/keys/rekey` with
//! `rotate_copied_keys` (key service, `rotate_copies` workflow, connector plugin, BYOK import
//! of the new material under each copy's name, leased steps, catalog writes). Prints wall
//! time, requests made, and the ratio to the lower bound `requests x latency / concurrency`.
//!
//! Run with `cargo bench -p keyward --bench rotation`. Target: within 1.5x of the bound.
//! `KEYWARD_BENCH_COPIES`, `KEYWARD_BENCH_CONCURRENCY` and `KEYWARD_BENCH_LATENCY_MS` change the
//! size and the latency (0 shows what is not waiting on the network).

mod support;

use std::sync::Arc;
use std::time::Instant;

use keyward_emulator::EmulatorConfig;
use serde_json::json;
use support::{Daemon, Measured, env, print_against_bound, with_latency};

const TARGET: f64 = 1.5;

#[tokio::main]
async fn main() {
    let copies = env("KEYWARD_BENCH_COPIES", 1_000);
    let concurrency = env("KEYWARD_BENCH_CONCURRENCY", 32);
    let latency_ms = env("KEYWARD_BENCH_LATENCY_MS", 20) as u64;

    let em = keyward_emulator::start(EmulatorConfig::demo())
        .await
        .unwrap();
    let d =
        Arc::new(Daemon::start(Some(&em), |c| c.workflow_limits.concurrency = concurrency).await);
    let azure = d.azure_group(&em, "azure").await;
    let plain = d
        .post("/sys/v1/groups", Some(json!({"name": "source"})))
        .await;
    let source = d
        .post(
            "/crypto/v1/keys",
            Some(
                json!({"name": "source", "group_id": plain["group_id"], "obj_type": "AES",
                "key_size": 256, "key_ops": ["ENCRYPT", "DECRYPT", "EXPORT", "APPMANAGEABLE"]}),
            ),
        )
        .await;
    let source_kid = source["kid"].as_str().unwrap().to_string();

    // The copies are made through the API, without latency, `concurrency` at a time.
    let made = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut copiers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (d, next, azure, source_kid) =
            (d.clone(), next.clone(), azure.clone(), source_kid.clone());
        copiers.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= copies {
                    break;
                }
                d.post(
                    "/crypto/v1/keys/copy",
                    Some(json!({"key": {"kid": source_kid}, "group_id": azure,
                        "name": format!("copy-{i:05}"), "key_ops": ["ENCRYPT", "DECRYPT"]})),
                )
                .await;
            }
        });
    }
    copiers.join_all().await;
    println!("made {copies} BYOK copies in {:.1?}", made.elapsed());

    let Measured {
        value: rotated,
        wall,
        requests,
        per_op,
    } = with_latency(
        &em,
        latency_ms,
        d.post(
            "/crypto/v1/keys/rekey",
            Some(json!({"name": "source", "rotate_copied_keys": "all_external"})),
        ),
    )
    .await;
    let outcomes = rotated["rotated_copies"].as_array().unwrap();
    assert_eq!(outcomes.len(), copies, "every copy was rotated");
    let failed: Vec<_> = outcomes.iter().filter(|o| !o["error"].is_null()).collect();
    assert!(
        failed.is_empty(),
        "{} copies failed, first: {}",
        failed.len(),
        failed[0]
    );

    println!(
        "rotation of a key with {copies} linked copies, {latency_ms} ms latency per request, concurrency {concurrency}"
    );
    println!(
        "  per copy       {:.1} ms, {:.1} requests",
        wall.as_secs_f64() * 1000.0 / copies as f64,
        requests as f64 / copies as f64
    );
    let ratio = print_against_bound(wall, requests, &per_op, latency_ms, concurrency, TARGET);
    println!(
        "  target         <= {TARGET}x: {}",
        if ratio <= TARGET { "met" } else { "NOT met" }
    );

    Arc::into_inner(d).unwrap().stop().await;
    em.stop().await;
}
