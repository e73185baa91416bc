//! The scheduler (F25, F31) with its clock driven by the tests: scheduled rotations day by
//! day, catching up once after an outage, two daemons on one catalog rotating each of 50
//! HSM-backed keys once, a failing key that does not hold up the others and ends up failed, a
//! cron job syncing a group on time; and one of two daemons killed with SIGKILL in the middle
//! of rotating a source key's 50 linked copies, after which the other finishes the work and
//! catalog and HSM agree.

use std::path::Path;
use std::time::Duration;

use keyward::daemon::DaemonConfig;
use keyward::scheduler::TickReport;
use keyward_emulator::FaultConfig;
use keyward_tests::DAY;
use keyward_tests::api::{Api, Endpoint, TestDaemon, b64, log_entries};
use keyward_tests::azure::{self, Azure, SECRET, allow_local, eventually};
use reqwest::Method;
use serde_json::{Value, json};

/// Scheduler ticks by hand; sessions that outlive the simulated days.
fn by_hand(c: &mut DaemonConfig) {
    c.scheduler.enabled = false;
    c.session_lifetime_secs = 400 * DAY;
    c.cache_ttl_secs = 1;
}

async fn tick(d: &TestDaemon) -> TickReport {
    d.state.scheduler.tick().await.expect("a scheduler round")
}

async fn count(d: &TestDaemon, sql: &str) -> i64 {
    let mut conn = d.state.catalog.conn().await.unwrap();
    keyward::catalog::db::Builder::new(sql)
        .build()
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0)
}

async fn key_named(api: &Api, name: &str) -> Value {
    api.ok(
        Method::POST,
        "/crypto/v1/keys/info",
        Some(json!({"name": name})),
    )
    .await
}

async fn daily_key(api: &Api, group: &str, name: &str) -> Value {
    api.create_key(
        json!({"name": name, "group_id": group, "obj_type": "AES", "key_size": 128,
        "rotation_policy": {"interval_days": 1, "deactivate_rotated_key": true}}),
    )
    .await
}

#[tokio::test]
async fn a_daily_policy_rotates_once_a_day_and_once_after_an_outage() {
    let d = TestDaemon::start_with(by_hand).await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("plain", json!({})).await;
    let first = daily_key(&admin, &g, "daily").await;
    assert_eq!(tick(&d).await, TickReport::default(), "nothing is due yet");

    for day in 1..=10 {
        d.clock.advance(DAY);
        let r = tick(&d).await;
        assert_eq!(r.rotated, 1, "day {day}: {r:?}");
        assert_eq!(tick(&d).await.rotated, 0, "day {day}: once");
    }
    assert_eq!(
        count(
            &d,
            "SELECT COUNT(*) FROM sobjects WHERE name LIKE 'daily (rotated at %'"
        )
        .await,
        10
    );
    let current = key_named(&admin, "daily").await;
    assert_ne!(current["kid"], first["kid"]);
    assert_eq!(current["rotation_status"]["status"], "active");
    let next = keyward::time::parse_dsm(current["scheduled_rotation"].as_str().unwrap()).unwrap();
    assert!(
        (next - (d.clock.now() + DAY)).abs() < 60,
        "next due a day after the last rotation"
    );
    let old = admin
        .ok(
            Method::GET,
            &format!("/crypto/v1/keys/{}", first["kid"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(old["state"], "Deactivated", "deactivate_rotated_key");

    // Three days down: one rotation, not three, and the next one a day after it.
    d.clock.advance(3 * DAY);
    assert_eq!(tick(&d).await.rotated, 1);
    assert_eq!(tick(&d).await.rotated, 0);
    let current = key_named(&admin, "daily").await;
    let next = keyward::time::parse_dsm(current["scheduled_rotation"].as_str().unwrap()).unwrap();
    assert!((next - (d.clock.now() + DAY)).abs() < 60);
    d.clock.advance(DAY);
    assert_eq!(tick(&d).await.rotated, 1);

    let history = admin
        .ok(
            Method::GET,
            &format!(
                "/crypto/v1/keys/{}/rotations",
                current["kid"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(history.as_array().unwrap().len(), 12, "{history}");
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["status"] == "succeeded")
    );
}

/// The number of versions of `name` in the HSM that group `gid` of `account` links to.
async fn hsm_versions(d: &TestDaemon, account: &str, gid: &str, name: &str) -> usize {
    let g = d.state.group(account, gid).await.unwrap().unwrap();
    let link = keyward::kms::Link::of_group(&d.state.catalog, &g).unwrap();
    d.state
        .kms
        .list_versions(&link, name, None)
        .await
        .unwrap()
        .items
        .len()
}

/// Both daemons' schedulers run their rounds at once over the same 50 due rotations of
/// HSM-backed keys: each key gets exactly one new version in the HSM a day.
#[tokio::test]
async fn two_daemons_on_one_catalog_rotate_each_key_exactly_once() {
    let em = azure::emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = |c: &mut DaemonConfig| {
        by_hand(c);
        allow_local(c);
    };
    let a = TestDaemon::start_configured(dir.path(), config)
        .await
        .unwrap();
    let b = TestDaemon::start_configured(dir.path(), config)
        .await
        .unwrap();
    let admin = a.bootstrap().await;
    let g = admin
        .create_group(
            "azure",
            json!({"external_kms": azure::link(&em, SECRET, Some(azure::HSM))}),
        )
        .await;
    let mut account = String::new();
    for i in 0..50 {
        let k = admin
            .create_key(
                json!({"name": format!("k{i:02}"), "group_id": g, "obj_type": "AES",
                "key_size": 256, "rotation_policy": {"interval_days": 1}}),
            )
            .await;
        account = k["acct_id"].as_str().unwrap().to_string();
    }
    for day in 1..=2 {
        a.clock.advance(DAY);
        b.clock.advance(DAY);
        let (ra, rb) = tokio::join!(tick(&a), tick(&b));
        assert_eq!(ra.rotated + rb.rotated, 50, "day {day}: {ra:?} {rb:?}");
        assert_eq!(ra.rotation_failures + rb.rotation_failures, 0);
        assert_eq!(
            count(
                &a,
                "SELECT COUNT(*) FROM sobjects WHERE rotated_at IS NOT NULL"
            )
            .await,
            50 * day,
            "day {day}: each key rotated once"
        );
        assert_eq!(
            count(&a, "SELECT COUNT(*) FROM sobjects WHERE rotated_at IS NULL").await,
            50
        );
    }
    assert_eq!(
        count(&a, "SELECT COUNT(*) FROM fires WHERE status = 'succeeded'").await,
        100,
        "one fire per key and day"
    );
    // The HSM agrees: the first version and one a day, none twice.
    for i in 0..50 {
        let name = format!("k{i:02}");
        assert_eq!(hsm_versions(&b, &account, &g, &name).await, 3, "{name}");
    }
    b.stop().await;
    a.stop().await;
    em.stop().await;
}

#[tokio::test]
async fn a_failing_key_does_not_stop_the_others_and_its_policy_ends_failed() {
    let d = TestDaemon::start_with(|c| {
        by_hand(c);
        c.scheduler.max_attempts = 3;
        c.scheduler.backoff_secs = vec![600];
    })
    .await;
    let admin = d.bootstrap().await;
    let ok_group = admin.create_group("fine", json!({})).await;
    let strict = admin.create_group("strict", json!({})).await;
    daily_key(&admin, &ok_group, "fine-1").await;
    daily_key(&admin, &ok_group, "fine-2").await;
    daily_key(&admin, &strict, "stuck").await;
    // The group's policy now wants AES-256: the 128-bit key's replacement is refused.
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{strict}"),
            Some(json!({"cryptographic_policy": {"aes": {"key_sizes": [256]}}})),
        )
        .await;

    d.clock.advance(DAY);
    let r = tick(&d).await;
    assert_eq!((r.rotated, r.rotation_failures), (2, 1), "{r:?}");
    let stuck = key_named(&admin, "stuck").await;
    assert_eq!(
        stuck["rotation_status"]["status"], "active",
        "retried first"
    );
    assert_eq!(stuck["rotation_status"]["failures"], 1);
    assert!(
        stuck["rotation_status"]["last_error"]
            .as_str()
            .unwrap()
            .contains("policy"),
        "{stuck}"
    );

    // Retries wait for their backoff; after the last attempt the policy is failed.
    assert_eq!(
        tick(&d).await.rotation_failures,
        0,
        "not before the backoff"
    );
    for _ in 0..2 {
        d.clock.advance(601);
        assert_eq!(tick(&d).await.rotation_failures, 1);
    }
    let stuck = key_named(&admin, "stuck").await;
    assert_eq!(stuck["rotation_status"]["status"], "failed", "{stuck}");
    assert_eq!(stuck["rotation_status"]["failures"], 3);
    assert!(
        stuck.get("scheduled_rotation").is_none(),
        "a failed policy schedules nothing"
    );
    let history = admin
        .ok(
            Method::GET,
            &format!(
                "/crypto/v1/keys/{}/rotations",
                stuck["kid"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(history[0]["status"], "failed");
    assert_eq!(history[0]["attempt"], 3);
    d.state.audit.flush().await;
    let logs = admin
        .ok(Method::GET, "/sys/v1/logs?action=key.rotation_failed", None)
        .await;
    assert_eq!(log_entries(&logs).len(), 3, "{logs}");
    // The metrics count the failed fires and how late fires started.
    let metrics = d.state.metrics.render();
    assert!(
        metrics.contains(r#"keyward_scheduler_fires_total{kind="rotation",outcome="failed"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"keyward_scheduler_lag_seconds_count{kind="rotation"}"#),
        "{metrics}"
    );

    // The others keep rotating; setting the policy again restarts the stuck one.
    d.clock.advance(DAY);
    assert_eq!(tick(&d).await.rotated, 2);
    let v = admin
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{}", stuck["kid"].as_str().unwrap()),
            Some(json!({"rotation_policy": {"interval_days": 1}})),
        )
        .await;
    assert_eq!(v["rotation_status"]["status"], "active");
    assert_eq!(v["rotation_status"]["failures"], 0);
}

#[tokio::test]
async fn a_cron_job_syncs_a_group_on_time() {
    let az = Azure::start_with(by_hand).await;
    let d = &az.daemon;
    az.seed(azure::HSM, json!({"count": 3, "prefix": "nightly"}))
        .await;
    let job = az
        .admin
        .ok(
            Method::POST,
            "/sys/v1/jobs",
            Some(json!({"name": "nightly sync", "workflow": "sync",
            "group_id": az.group, "cron": "0 3 * * *", "time_zone": "Europe/Berlin"})),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let next = keyward::time::parse_dsm(job["next_run"].as_str().unwrap()).unwrap();
    assert!(next > d.clock.now() && next <= d.clock.now() + DAY);
    let synced = || async {
        count(
            d,
            "SELECT COUNT(*) FROM sobjects WHERE {label} LIKE 'nightly-%'",
        )
        .await
    };

    // Not before its time...
    d.clock.advance(next - d.clock.now() - 60);
    assert_eq!(tick(d).await.jobs_run, 0);
    assert_eq!(synced().await, 0);
    // ...and then once.
    d.clock.advance(120);
    assert_eq!(tick(d).await.jobs_run, 1);
    assert_eq!(synced().await, 3);
    assert_eq!(tick(d).await.jobs_run, 0);
    let job = az
        .admin
        .ok(Method::GET, &format!("/sys/v1/jobs/{id}"), None)
        .await;
    let after = keyward::time::parse_dsm(job["next_run"].as_str().unwrap()).unwrap();
    assert_eq!(after, next + DAY, "the next night, 03:00 Berlin time");
    let fires = az
        .admin
        .ok(Method::GET, &format!("/sys/v1/jobs/{id}/fires"), None)
        .await;
    assert_eq!(fires[0]["status"], "succeeded");
    let run = az
        .admin
        .ok(
            Method::GET,
            &format!(
                "/sys/v1/workflow_runs/{}",
                fires[0]["run_id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(run["trigger"], "schedule");
    assert_eq!(run["workflow"], "sync");

    // Paused, it does not run; resumed, it runs at its next time; deleted, it is gone.
    az.admin
        .ok(Method::POST, &format!("/sys/v1/jobs/{id}/pause"), None)
        .await;
    d.clock.advance(DAY);
    assert_eq!(tick(d).await.jobs_run, 0);
    let resumed = az
        .admin
        .ok(Method::POST, &format!("/sys/v1/jobs/{id}/resume"), None)
        .await;
    assert!(resumed["next_run"].is_string());
    let (s, _) = az
        .admin
        .call(Method::DELETE, &format!("/sys/v1/jobs/{id}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = az
        .admin
        .call(Method::GET, &format!("/sys/v1/jobs/{id}"), None)
        .await;
    assert_eq!(s, 404);

    // Bad jobs are refused with the field named.
    for (body, field) in [
        (
            json!({"name": "x", "workflow": "sync", "group_id": az.group, "cron": "61 * * * *"}),
            "cron",
        ),
        (
            json!({"name": "x", "workflow": "sync", "group_id": az.group, "cron": "0 3 * * *", "time_zone": "Mars/Base"}),
            "cron",
        ),
        (
            json!({"name": "x", "workflow": "sync", "group_id": az.group, "cron": "0 3 * * *", "input": [1]}),
            "input",
        ),
    ] {
        let (s, b) = az
            .admin
            .call(Method::POST, "/sys/v1/jobs", Some(body))
            .await;
        assert_eq!((s, b["field"].as_str()), (400, Some(field)), "{b}");
    }
    // A workflow that is not there is as unknown as an id (404); one that runs for a single
    // key request may not be scheduled (403). Each answer names the field.
    for (workflow, status) in [("no-such", 404), ("generate", 403)] {
        let body =
            json!({"name": "x", "workflow": workflow, "group_id": az.group, "cron": "0 3 * * *"});
        let (s, b) = az
            .admin
            .call(Method::POST, "/sys/v1/jobs", Some(body))
            .await;
        assert_eq!(s, status, "{b}");
        assert!(
            b["message"].as_str().unwrap().starts_with("workflow:"),
            "{b}"
        );
    }
    let (s, _) = az
        .app
        .call(
            Method::POST,
            "/sys/v1/jobs",
            Some(json!({"name": "x", "workflow": "sync", "cron": "0 3 * * *"})),
        )
        .await;
    assert_eq!(s, 403, "jobs of no group are for account administrators");
}

// ---------------------------------------------------------------------------------------
// A daemon killed mid-rotation.

/// Not a test: the body of the daemon process the crash test starts and kills.
#[test]
#[ignore = "run by the crash test as its child daemon"]
fn child_daemon() {
    keyward_tests::child::serve(|config| {
        config.scheduler.enabled = false;
        config.scheduler.lease_secs = 2;
        config.workflow_limits.lease_ttl = Duration::from_secs(2);
        allow_local(config);
    });
}

/// Starts the child daemon on `dir`; returns the process and its API.
async fn spawn_child(dir: &Path) -> (std::process::Child, Endpoint) {
    keyward_tests::child::spawn(dir, "child_daemon").await
}

/// Another daemon on the child's catalog, with the child's short leases.
async fn second_daemon(dir: &Path) -> TestDaemon {
    TestDaemon::start_configured(dir, |c| {
        by_hand(c);
        c.scheduler.lease_secs = 2;
        c.workflow_limits.lease_ttl = Duration::from_secs(2);
        allow_local(c);
    })
    .await
    .unwrap()
}

/// A new daemon on the killed child's catalog, once the dead one's leases have run out.
async fn restart_on(dir: &Path) -> TestDaemon {
    tokio::time::sleep(Duration::from_secs(2)).await;
    second_daemon(dir).await
}

/// Two daemons share the catalog; one is killed with SIGKILL while it rotates a source key's
/// 50 linked copies, and the other, running all along, takes the work over once the dead
/// one's leases expire.
#[tokio::test]
async fn a_daemon_killed_while_rotating_50_copies_leaves_nothing_lost_or_doubled() {
    let em = azure::emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, child_daemon) = spawn_child(dir.path()).await;
    let admin = child_daemon.bootstrap().await;
    let d = second_daemon(dir.path()).await;
    let group = admin
        .create_group(
            "azure",
            json!({"external_kms": azure::link(&em, SECRET, Some(azure::HSM))}),
        )
        .await;
    let plain = admin.create_group("plain", json!({})).await;
    let src = admin
        .ok(
            Method::PUT,
            "/crypto/v1/keys",
            Some(
                json!({"name": "source", "group_id": plain, "obj_type": "AES",
            "value": b64(&keyward_crypto::random_bytes(32)), "key_ops": ["ENCRYPT", "DECRYPT"]}),
            ),
        )
        .await;
    for i in 0..50 {
        admin
            .ok(
                Method::POST,
                "/crypto/v1/keys/copy",
                Some(json!({"key": {"kid": src["kid"]}, "group_id": group,
                "name": format!("copy-{i:02}")})),
            )
            .await;
    }

    // Slow the HSM down, start the rotation, and kill the daemon once some copies have their
    // new version in the HSM (and some of those are not recorded yet).
    em.set_faults(FaultConfig {
        latency_ms: 300,
        ..FaultConfig::default()
    })
    .unwrap();
    let imports_before = em.counts().get("keys.import").copied().unwrap_or(0);
    let rotating = tokio::spawn({
        let admin = admin.clone();
        async move {
            admin
                .call(
                    Method::POST,
                    "/crypto/v1/keys/rekey",
                    Some(json!({"name": "source", "rotate_copied_keys": "all_external"})),
                )
                .await
        }
    });
    eventually(60, || async {
        let n = em.counts().get("keys.import").copied().unwrap_or(0) - imports_before;
        (n >= 12).then_some(())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = rotating.await;
    em.set_faults(FaultConfig::default()).unwrap();
    // Requests the killed daemon had sent are still answered by the HSM: let them land.
    tokio::time::sleep(Duration::from_millis(800)).await;

    // The survivor's clock passes the dead one's leases (2 s); its scheduler rounds take
    // the interrupted copies over.
    d.clock.advance(3);
    let mut resumed = 0;
    for _ in 0..5 {
        resumed += tick(&d).await.resumed;
        if count(
            &d,
            "SELECT COUNT(*) FROM rotation_steps WHERE status = 'pending'",
        )
        .await
            == 0
        {
            break;
        }
    }
    assert!(resumed > 0, "the interrupted copies were taken over");
    assert_eq!(
        count(
            &d,
            "SELECT COUNT(*) FROM rotation_steps WHERE status <> 'done'"
        )
        .await,
        0
    );
    assert_eq!(count(&d, "SELECT COUNT(*) FROM rotation_steps").await, 50);

    // The HSM and the catalog agree: each copy has exactly two versions, the current virtual
    // key is the latest, the replaced one the first.
    let admin = d
        .login(
            keyward_tests::api::ADMIN_EMAIL,
            keyward_tests::api::ADMIN_PASSWORD,
        )
        .await;
    let g = d
        .state
        .group(src["acct_id"].as_str().unwrap(), &group)
        .await
        .unwrap()
        .unwrap();
    let link = keyward::kms::Link::of_group(&d.state.catalog, &g).unwrap();
    for i in 0..50 {
        let name = format!("copy-{i:02}");
        let versions = d
            .state
            .kms
            .list_versions(&link, &name, None)
            .await
            .unwrap()
            .items;
        assert_eq!(versions.len(), 2, "{name}: no lost and no doubled version");
        let latest = d.state.kms.find_key(&link, &name).await.unwrap().unwrap();
        let current = key_named(&admin, &format!("copy-{i:02}")).await;
        assert_eq!(
            current["external"]["id"]["version"],
            latest.version.as_str(),
            "{name}"
        );
        assert_eq!(
            count(
                &d,
                &format!("SELECT COUNT(*) FROM sobjects WHERE {{label}} = '{name}'")
            )
            .await,
            2,
            "{name}: one virtual key per version"
        );
    }
    assert_eq!(
        count(
            &d,
            "SELECT COUNT(*) FROM sobjects WHERE name LIKE 'source (rotated at %'"
        )
        .await,
        1
    );
    // And a sync (which reconciles first) finds nothing to add or settle.
    let scan = admin
        .ok(
            Method::POST,
            &format!("/sys/v1/groups/{group}/hmg/scan"),
            None,
        )
        .await;
    assert_eq!(scan.as_array().unwrap().len(), 0, "{scan}");
    d.stop().await;
    em.stop().await;
}

/// Two principals rotate a key each; the daemon is killed with SIGKILL while both new
/// versions are in the HSM and neither is recorded. The restarted daemon resumes each
/// rotation on its own, as the principal that started it: both keys get their new version,
/// each recorded as its own starter.
#[tokio::test]
async fn resumed_rotations_act_as_the_principal_that_started_each() {
    let em = azure::emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, child_daemon) = spawn_child(dir.path()).await;
    let admin = child_daemon.bootstrap().await;
    let group = admin
        .create_group(
            "azure",
            json!({"external_kms": azure::link(&em, SECRET, Some(azure::HSM))}),
        )
        .await;
    let (app_id, api_key) = admin.create_app("rotator", &[&group]).await;
    let app = child_daemon.login_app(&api_key).await;
    let k1 = admin
        .create_key(
            json!({"name": "by-admin", "group_id": group, "obj_type": "AES", "key_size": 256}),
        )
        .await;
    let k2 = app
        .create_key(
            json!({"name": "by-app", "group_id": group, "obj_type": "AES", "key_size": 256}),
        )
        .await;

    em.set_faults(FaultConfig {
        latency_ms: 500,
        ..FaultConfig::default()
    })
    .unwrap();
    let creates_before = em.counts().get("keys.create").copied().unwrap_or(0);
    let rotations = [(admin.clone(), "by-admin"), (app.clone(), "by-app")].map(|(who, name)| {
        tokio::spawn(async move {
            who.call(
                Method::POST,
                "/crypto/v1/keys/rekey",
                Some(json!({"name": name})),
            )
            .await
        })
    });
    eventually(60, || async {
        let n = em.counts().get("keys.create").copied().unwrap_or(0) - creates_before;
        (n >= 2).then_some(())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    for r in rotations {
        let _ = r.await;
    }
    em.set_faults(FaultConfig::default()).unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let d = restart_on(dir.path()).await;
    assert_eq!(
        count(
            &d,
            "SELECT COUNT(*) FROM rotation_steps WHERE status = 'pending'"
        )
        .await,
        2,
        "both rotations were interrupted before they were recorded"
    );
    let resumed = tick(&d).await.resumed;
    assert_eq!(resumed, 2);
    let steps = eventually(60, || async {
        let pending = count(
            &d,
            "SELECT COUNT(*) FROM rotation_steps WHERE status = 'pending'",
        )
        .await;
        (pending == 0).then_some(())
    });
    steps.await;
    assert_eq!(
        count(
            &d,
            "SELECT COUNT(*) FROM rotation_steps WHERE status = 'done'"
        )
        .await,
        2,
        "each key got its new version"
    );

    // Each new version is recorded as the principal that asked for it.
    let admin = d
        .login(
            keyward_tests::api::ADMIN_EMAIL,
            keyward_tests::api::ADMIN_PASSWORD,
        )
        .await;
    let logs = admin
        .ok(Method::GET, "/sys/v1/logs?action=key.rotate&size=100", None)
        .await;
    let rotated_by = |kid: &Value| {
        log_entries(&logs)
            .into_iter()
            .find(|e| e["details"]["replaced"] == *kid && e["outcome"] == "success")
            .unwrap_or_else(|| panic!("no rotation of {kid} in {logs}"))
    };
    let e1 = rotated_by(&k1["kid"]);
    assert_eq!(e1["actor_type"], "User", "{e1}");
    let e2 = rotated_by(&k2["kid"]);
    assert_eq!(e2["actor_id"], app_id.as_str(), "{e2}");
    d.stop().await;
    em.stop().await;
}

/// A cron job runs with its owner's rights at each fire: once the owner no longer
/// administers the group, the job's fires fail (for good) and nothing runs as them.
#[tokio::test]
async fn a_job_stops_when_its_owner_loses_the_right_to_run_it() {
    let az = Azure::start_with(by_hand).await;
    let d = &az.daemon;
    let pw = "correct horse battery staple";
    let invited = az
        .admin
        .ok(
            Method::POST,
            "/sys/v1/users/invite",
            Some(
                json!({"user_email": "nightly@example.com", "user_password": pw,
                "account_role": "member", "groups": {&az.group: "administrator"}}),
            ),
        )
        .await;
    let owner = d.login("nightly@example.com", pw).await;
    let job = owner
        .ok(
            Method::POST,
            "/sys/v1/jobs",
            Some(
                json!({"name": "their sync", "workflow": "sync", "group_id": az.group,
                "cron": "0 3 * * *"}),
            ),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    az.admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/users/{}", invited["user_id"].as_str().unwrap()),
            Some(json!({"del_groups": [&az.group]})),
        )
        .await;
    d.clock.advance(DAY + 60);
    let runs_before = count(d, "SELECT COUNT(*) FROM workflow_runs").await;
    tick(d).await;
    let fires = az
        .admin
        .ok(Method::GET, &format!("/sys/v1/jobs/{id}/fires"), None)
        .await;
    assert_eq!(fires[0]["status"], "failed", "{fires}");
    assert!(
        fires[0]["error"]
            .as_str()
            .unwrap()
            .contains("may no longer run it"),
        "{fires}"
    );
    assert_eq!(
        count(d, "SELECT COUNT(*) FROM workflow_runs").await,
        runs_before,
        "nothing ran as the former administrator"
    );
}
