//! A scheduler round over 100,000 rotation policies, 1% of them due: the time the round
//! takes to find what is due and claim it (one conditional statement per fire, all in one
//! transaction), and an idle round (nothing due) as the daemon runs it every few seconds;
//! once with the catalog on SQLite and once on PostgreSQL, then the two side by side.
//! The rotations the claimed fires then run are the rotation benchmark's subject, not this
//! one's. Also prints the due query's plan, which must use the `rotation_policies_due`
//! index rather than scan the table.
//!
//! Run with `cargo bench -p keyward --bench scheduler`. Target: under 50 ms per round.
//! `KEYWARD_BENCH_POLICIES` changes the size. PostgreSQL is the test suite's
//! (`tests/postgres.sh start`) or `KEYWARD_BENCH_POSTGRES=<admin URL>`.

mod support;

use std::time::{Duration, Instant};

use keyward::catalog::Backend;
use keyward::catalog::db::{Builder, query};
use serde_json::json;
use support::{Daemon, catalogs, env};

const TARGET_MS: f64 = 50.0;
const ROUNDS: u32 = 10;

#[tokio::main]
async fn main() {
    let policies = env("KEYWARD_BENCH_POLICIES", 100_000);
    let due = policies / 100;
    let mut figures = Vec::new();
    for (name, database) in catalogs().await {
        let d = Daemon::start_on(database, None, |c| c.scheduler.enabled = false).await;
        println!("on {name}:");
        figures.push((name, measure(&d, policies, due).await));
        d.stop().await;
    }
    println!("side by side (ms per round):");
    for (i, what) in ["claim", "idle"].iter().enumerate() {
        let [(a, fa), (b, fb)] = figures.as_slice() else {
            unreachable!("two catalogs")
        };
        println!(
            "  {what:<5} {a} {:.1}, {b} {:.1} ({b}/{a} {:.2}x)",
            fa[i],
            fb[i],
            fb[i] / fa[i]
        );
    }
}

/// Seeds `policies` keys with a policy each, `due` of them due, and returns the claim and
/// idle rounds' milliseconds.
async fn measure(d: &Daemon, policies: usize, due: usize) -> [f64; 2] {
    let group = d
        .post("/sys/v1/groups", Some(json!({"name": "scheduled"})))
        .await;
    let template = d
        .post(
            "/crypto/v1/keys",
            Some(
                json!({"name": "template", "group_id": group["group_id"], "obj_type": "AES",
                "key_size": 256, "rotation_policy": {"interval_days": 30}}),
            ),
        )
        .await;
    let kid = template["kid"].as_str().unwrap();
    let seeded = Instant::now();
    seed(d, kid, policies, due).await;
    println!(
        "  seeded {policies} keys with rotation policies ({due} due) in {:.1?}",
        seeded.elapsed()
    );

    let scheduler = &d.running.state.scheduler;
    let catalog = &d.running.state.catalog;
    let mut conn = catalog.conn().await.unwrap();
    let (explain, column) = match catalog.backend() {
        Backend::Sqlite => ("EXPLAIN QUERY PLAN", "detail"),
        Backend::Postgres => ("EXPLAIN", "QUERY PLAN"),
    };
    let plan: Vec<String> = Builder::new(format!(
        "{explain} {}",
        keyward::catalog::rotation::due_policies_sql()
    ))
    .build()
    .bind(0_i64)
    .bind(1000_i64)
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(column).trim().to_string())
    .collect();
    println!("  due query plan: {}", plan.join("; "));

    // Claiming the due fires; the claims are dropped between rounds so each round claims
    // the same 1%.
    let mut claim = Duration::ZERO;
    for _ in 0..ROUNDS {
        query("DELETE FROM fires").execute(&mut conn).await.unwrap();
        let t = Instant::now();
        let claimed = scheduler.claim_due().await.unwrap();
        claim += t.elapsed();
        assert_eq!(claimed.len(), due, "every due policy is claimed once");
    }
    // With every due fire claimed already (running elsewhere, say) nothing is due for this
    // daemon: the round it runs all day long. PostgreSQL first learns that `fires` is no
    // longer empty, as autovacuum would tell it in a running catalog.
    if catalog.backend() == Backend::Postgres {
        query("ANALYZE fires").execute(&mut conn).await.unwrap();
    }
    let mut idle = Duration::ZERO;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let r = scheduler.tick().await.unwrap();
        idle += t.elapsed();
        assert_eq!(r.rotated + r.rotation_failures, 0, "{r:?}");
    }
    drop(conn);
    let mut out = [0.0; 2];
    for (i, (what, total)) in [
        (format!("claim round ({due} of {policies} due)"), claim),
        (format!("idle round ({policies} policies)"), idle),
    ]
    .into_iter()
    .enumerate()
    {
        let ms = total.as_secs_f64() * 1000.0 / f64::from(ROUNDS);
        println!(
            "  {what}: {ms:.1} ms per round, {:.2}x the {TARGET_MS} ms target ({})",
            ms / TARGET_MS,
            if ms <= TARGET_MS { "met" } else { "NOT met" }
        );
        out[i] = ms;
    }
    out
}

/// Copies the template key `kid` and its policy `n` times in SQL (through the API this
/// would take minutes), every 100th one due an hour ago, the rest in 30 days. The SQL is
/// the same on both catalogs; only the column list comes from each one's own schema.
async fn seed(d: &Daemon, kid: &str, n: usize, due: usize) {
    let catalog = &d.running.state.catalog;
    let mut tx = catalog.begin().await.unwrap();
    let columns = keyward::catalog::copy::columns(&mut tx, "sobjects")
        .await
        .unwrap();
    let select: Vec<String> = columns
        .iter()
        .map(|(c, _)| match c.as_str() {
            "kid" => "'bench-' || n".to_string(),
            "name" => "'bench key ' || n".to_string(),
            other => other.to_string(),
        })
        .collect();
    let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    let sql = format!(
        "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {n})
         INSERT INTO sobjects ({}) SELECT {} FROM seq, sobjects WHERE kid = ?",
        names.join(", "),
        select.join(", ")
    );
    Builder::new(sql)
        .build()
        .bind(kid)
        .execute(&mut tx)
        .await
        .unwrap();
    let now = d.running.state.clock.now();
    let every = n / due.max(1);
    let sql = format!(
        "INSERT INTO rotation_policies (kid, account_id, policy, owner_kind, owner_id, set_at, next_due, last_rotated_at, status, failures)
         SELECT s.kid, p.account_id, p.policy, p.owner_kind, p.owner_id, p.set_at,
                CASE WHEN CAST(substr(s.kid, 7) AS INTEGER) % {every} = 0 THEN {past} ELSE {future} END,
                p.last_rotated_at, 'active', 0
         FROM sobjects s, rotation_policies p WHERE s.kid LIKE 'bench-%' AND p.kid = ?",
        past = now - 3600,
        future = now + 30 * 86_400,
    );
    Builder::new(sql)
        .build()
        .bind(kid)
        .execute(&mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // PostgreSQL plans from statistics, which a bulk insert leaves stale until autovacuum
    // comes by; a production catalog grows slowly enough for it to keep up.
    if catalog.backend() == Backend::Postgres {
        let mut conn = catalog.conn().await.unwrap();
        query("ANALYZE").execute(&mut conn).await.unwrap();
    }
}
