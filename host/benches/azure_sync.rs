//! Sync of 5,000 keys from each kind of Azure key store of the emulator (a Standard and a
//! Premium tier Key Vault, a Managed HSM) with 20 ms injected latency per request: the whole
//! path (REST API, sync workflow script, connector plugin, HTTPS to the emulator, catalog
//! writes with escrow), once with the catalog on SQLite and once on PostgreSQL. Prints wall
//! time, requests made, and the ratio to the lower bound `requests x latency / concurrency`
//! for each, then the kinds and catalogs side by side.
//!
//! Run with `cargo bench -p keyward --bench azure_sync`. Target: under 30 s and within 2x of
//! the bound on either catalog. `KEYWARD_BENCH_KIND=standard|premium|managed` runs one kind
//! only; `KEYWARD_BENCH_KEYS` and `KEYWARD_BENCH_CONCURRENCY` change the size. PostgreSQL is the test suite's (`tests/postgres.sh start`) or
//! `KEYWARD_BENCH_POSTGRES=<admin URL>`.

mod support;

use std::time::{Duration, Instant};

use keyward_emulator::EmulatorConfig;
use support::{Daemon, Kind, Measured, catalogs, env, print_against_bound, seed_in, with_latency};

const LATENCY_MS: u64 = 20;

#[tokio::main]
async fn main() {
    let keys = env("KEYWARD_BENCH_KEYS", 5_000);
    let concurrency = env("KEYWARD_BENCH_CONCURRENCY", 32);
    let kinds = Kind::from_env();

    let em = keyward_emulator::start(EmulatorConfig::demo())
        .await
        .unwrap();
    for &kind in &kinds {
        let seeded = Instant::now();
        seed_in(&em, kind, keys, "bench").await;
        println!(
            "seeded {keys} keys in the emulator's {} store in {:.1?}",
            kind.name(),
            seeded.elapsed()
        );
    }

    // Each catalog gets its own daemon and syncs each store from nothing.
    let mut walls = Vec::new();
    for (name, database) in catalogs().await {
        let d = Daemon::start_on(database, Some(&em), |c| {
            c.workflow_limits.concurrency = concurrency
        })
        .await;
        for &kind in &kinds {
            let gid = d
                .azure_group_in(&em, &format!("bench-{}", kind.name()), kind)
                .await;
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
                "sync of {keys} keys from the {} store on {name}, {LATENCY_MS} ms latency per request, concurrency {concurrency}",
                kind.name()
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
            walls.push((name, kind, wall));
        }
        d.stop().await;
    }
    println!("side by side (wall time of the sync):");
    println!("  {:<10} {:>12} {:>12}", "kind", "SQLite", "PostgreSQL");
    for &kind in &kinds {
        let of = |catalog: &str| {
            walls
                .iter()
                .find(|(n, k, _)| *n == catalog && *k == kind)
                .map_or(0.0, |(_, _, w)| w.as_secs_f64())
        };
        println!(
            "  {:<10} {:>10.2} s {:>10.2} s",
            kind.name(),
            of("SQLite"),
            of("PostgreSQL")
        );
    }
    if let Some(base) = walls
        .iter()
        .find(|(n, k, _)| *n == "SQLite" && *k == Kind::Managed)
    {
        for (n, k, w) in walls.iter().filter(|(n, _, _)| *n == "SQLite") {
            println!(
                "  {n} {} / managed: {:.2}x",
                k.name(),
                w.as_secs_f64() / base.2.as_secs_f64()
            );
        }
    }
    em.stop().await;
}
