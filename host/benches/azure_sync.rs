//! Sync of 5,000 keys from the Azure Managed HSM emulator with 20 ms injected latency per
//! request: the whole path (REST API, sync workflow script, connector plugin, HTTPS to the
//! emulator, catalog writes with escrow), once with the catalog on SQLite and once on
//! PostgreSQL. Prints wall time, requests made, and the ratio to the lower bound
//! `requests x latency / concurrency` for each, then the two side by side.
//!
//! Run with `cargo bench -p keyward --bench azure_sync`. Target: under 30 s and within 2x of
//! the bound on either catalog. `KEYWARD_BENCH_KEYS` and `KEYWARD_BENCH_CONCURRENCY` change
//! the size. PostgreSQL is the test suite's (`tests/postgres.sh start`) or
//! `KEYWARD_BENCH_POSTGRES=<admin URL>`.

mod support;

use std::time::{Duration, Instant};

use keyward_emulator::EmulatorConfig;
use support::{Daemon, Measured, catalogs, env, print_against_bound, seed, with_latency};

const LATENCY_MS: u64 = 20;

#[tokio::main]
async fn main() {
    let keys = env("KEYWARD_BENCH_KEYS", 5_000);
    let concurrency = env("KEYWARD_BENCH_CONCURRENCY", 32);

    let em = keyward_emulator::start(EmulatorConfig::demo())
        .await
        .unwrap();
    let seeded = Instant::now();
    seed(&em, keys, "bench").await;
    println!(
        "seeded {keys} keys in the emulator in {:.1?}",
        seeded.elapsed()
    );

    // Each catalog gets its own daemon and syncs the same HSM from nothing.
    let mut walls = Vec::new();
    for (name, database) in catalogs().await {
        let d = Daemon::start_on(database, Some(&em), |c| {
            c.workflow_limits.concurrency = concurrency
        })
        .await;
        let gid = d.azure_group(&em, "bench").await;
        let Measured {
            value: added,
            wall,
            requests,
            per_op,
        } = with_latency(
            &em,
            LATENCY_MS,
            d.post(&format!("/sys/v1/groups/{gid}/hmg/scan"), None),
        )
        .await;
        assert_eq!(added.as_array().unwrap().len(), keys, "every key was added");

        println!(
            "sync of {keys} keys on {name}, {LATENCY_MS} ms latency per request, concurrency {concurrency}"
        );
        let ratio = print_against_bound(wall, requests, &per_op, LATENCY_MS, concurrency, 2.0);
        println!(
            "  target         < 30 s and <= 2x: {}",
            if wall < Duration::from_secs(30) && ratio <= 2.0 {
                "met"
            } else {
                "NOT met"
            }
        );
        walls.push((name, wall));
        d.stop().await;
    }
    let [(a, wa), (b, wb)] = walls.as_slice() else {
        unreachable!("two catalogs")
    };
    println!(
        "side by side: {a} {:.2} s, {b} {:.2} s ({b}/{a} {:.2}x)",
        wa.as_secs_f64(),
        wb.as_secs_f64(),
        wb.as_secs_f64() / wa.as_secs_f64()
    );
    em.stop().await;
}
