//! The dashboard and `GET /sys/v1/reports/...` over a catalog whose figures are known: keys in
//! each state across three groups (one linked to the emulated HSM and synced), a rotation
//! policy stopped after failing, one overdue, one due soon, a deactivation due soon, and
//! three cryptographic operations today. The page's tiles and charts, the JSON reports and
//! their CSV downloads must all say the same. A group administrator sees only their group's
//! figures, and another account's keys are never counted.

use keyward::daemon::DaemonConfig;
use keyward::time::format_dsm;
use keyward_tests::api::{ADMIN_EMAIL, ADMIN_PASSWORD, Api, b64};
use keyward_tests::azure::{Azure, HSM};
use reqwest::Method;
use serde_json::{Value, json};

use crate::browser::Browser;

const DAY: i64 = 86_400;

fn by_hand(c: &mut DaemonConfig) {
    c.scheduler.enabled = false;
    c.scheduler.max_attempts = 1;
    c.session_lifetime_secs = 30 * DAY;
}

async fn key(admin: &Api, group: &str, name: &str, extra: Value) -> String {
    let mut body = json!({"name": name, "group_id": group, "obj_type": "AES", "key_size": 256});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    admin.create_key(body).await["kid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The catalog of the module doc; returns the plain group and the strict group.
async fn known_catalog(az: &Azure) -> (String, String) {
    let d = &az.daemon;
    let admin = &az.admin;
    let plain = &az.plain_group;
    let now = d.clock.now();
    key(
        admin,
        plain,
        "k-active-1",
        json!({"key_ops": ["ENCRYPT", "DECRYPT"]}),
    )
    .await;
    key(admin, plain, "k-active-2", json!({})).await;
    key(
        admin,
        plain,
        "k-pre",
        json!({"activation_date": format_dsm(now + 40 * DAY)}),
    )
    .await;
    let deact = key(admin, plain, "k-deact", json!({})).await;
    admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{deact}/deactivate"),
            None,
        )
        .await;
    key(
        admin,
        plain,
        "k-soon",
        json!({"deactivation_date": format_dsm(now + 5 * DAY)}),
    )
    .await;

    // A daily policy on a 128-bit key, then the group wants 256 bits: its rotation fails and,
    // with one attempt allowed, the policy stops.
    let strict = admin.create_group("Strict", json!({})).await;
    key(
        admin,
        &strict,
        "stuck",
        json!({"key_size": 128, "rotation_policy": {"interval_days": 1}}),
    )
    .await;
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{strict}"),
            Some(json!({"cryptographic_policy": {"aes": {"key_sizes": [256]}}})),
        )
        .await;
    d.clock.advance(DAY + 60);
    let r = d.state.scheduler.tick().await.unwrap();
    assert_eq!(r.rotation_failures, 1, "{r:?}");

    // A daily policy left without a scheduler round for two days: overdue.
    key(
        admin,
        plain,
        "late",
        json!({"rotation_policy": {"interval_days": 1}}),
    )
    .await;
    d.clock.advance(2 * DAY);
    key(
        admin,
        plain,
        "rotating",
        json!({"rotation_policy": {"interval_days": 20}}),
    )
    .await;

    // The linked group: two HSM keys, synced.
    az.seed(HSM, json!({"count": 2, "prefix": "native"})).await;
    assert_eq!(az.sync().await.len(), 2);

    // Three operations today, by the application.
    let kid = admin
        .ok(
            Method::GET,
            &format!("/crypto/v1/keys?name=k-active-1&group_id={plain}"),
            None,
        )
        .await[0]["kid"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..3 {
        az.app
            .ok(
                Method::POST,
                &format!("/crypto/v1/keys/{kid}/encrypt"),
                Some(json!({"alg": "AES", "mode": "GCM", "plain": b64(b"sixteen byte msg")})),
            )
            .await;
    }
    d.state.audit.flush().await;
    (plain.clone(), strict)
}

fn rows<'a>(report: &'a Value, field: &str, value: &str) -> Vec<&'a Value> {
    report
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[field] == value)
        .collect()
}

fn sum(report: &Value, pick: impl Fn(&Value) -> bool) -> i64 {
    report
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| pick(r))
        .map(|r| r["count"].as_i64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_reports_show_the_known_figures_and_only_what_the_viewer_may_see() {
    let az = Azure::start_with(by_hand).await;
    let (plain, strict) = known_catalog(&az).await;
    let admin = &az.admin;
    // Another account's keys are never counted, even one of the same user.
    let other = az.daemon.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    other.create_account("Other account").await;
    let og = other.create_group("theirs", json!({})).await;
    key(&other, &og, "not-yours", json!({})).await;

    // The JSON reports.
    let keys = admin.ok(Method::GET, "/sys/v1/reports/keys", None).await;
    assert_eq!(sum(&keys, |_| true), 10, "{keys}");
    assert_eq!(sum(&keys, |r| r["held_by"] == "hsm"), 2);
    assert_eq!(sum(&keys, |r| r["state"] == "Active"), 8);
    assert_eq!(sum(&keys, |r| r["state"] == "PreActive"), 1);
    assert_eq!(sum(&keys, |r| r["state"] == "Deactivated"), 1);
    assert_eq!(sum(&keys, |r| r["group_id"] == strict.as_str()), 1);
    assert!(rows(&keys, "group_name", "theirs").is_empty());
    let rotation = admin
        .ok(Method::GET, "/sys/v1/reports/rotation", None)
        .await;
    let names = |finding: &str| {
        let mut n: Vec<String> = rows(&rotation, "finding", finding)
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names("overdue"), ["late"], "{rotation}");
    assert_eq!(names("stopped"), ["stuck"]);
    assert_eq!(names("rotation_due"), ["rotating"]);
    assert_eq!(names("deactivation_due"), ["k-soon"]);
    assert_eq!(
        names("no_policy"),
        [
            "k-active-1",
            "k-active-2",
            "k-soon",
            "native-00001",
            "native-00002"
        ]
    );
    assert!(
        rows(&rotation, "finding", "stopped")[0]["error"]
            .as_str()
            .unwrap()
            .contains("policy")
    );
    let failures = admin
        .ok(Method::GET, "/sys/v1/reports/failures", None)
        .await;
    assert_eq!(failures.as_array().unwrap().len(), 1, "{failures}");
    assert_eq!(failures[0]["kind"], "rotation");
    assert_eq!(failures[0]["name"], "stuck");
    assert_eq!(failures[0]["group_name"], "Strict");
    let usage = admin.ok(Method::GET, "/sys/v1/reports/usage", None).await;
    let usage = usage.as_array().unwrap();
    assert_eq!(usage.len(), 30);
    assert_eq!(usage[29]["operations"], 3, "today is last: {usage:?}");
    assert_eq!(
        usage
            .iter()
            .map(|u| u["operations"].as_i64().unwrap())
            .sum::<i64>(),
        3
    );
    let drift = admin.ok(Method::GET, "/sys/v1/reports/drift", None).await;
    assert_eq!(drift.as_array().unwrap().len(), 1, "{drift}");
    assert_eq!(drift[0]["group_id"], az.group.as_str());
    assert_eq!(drift[0]["last_sync_status"], "succeeded");
    assert_eq!(drift[0]["keys_added"], 2);
    assert_eq!(drift[0]["drift_events"], 0);

    // CSV: the same rows under a header.
    let (status, csv) = admin
        .call(Method::GET, "/sys/v1/reports/rotation?format=csv", None)
        .await;
    assert_eq!(status, 200);
    let text = csv.as_str().unwrap().to_string();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("kid,name,group_id,group_name,finding,at,error")
    );
    assert_eq!(lines.count(), rotation.as_array().unwrap().len());
    let (status, _) = admin
        .call(Method::GET, "/sys/v1/reports/rotation?format=xml", None)
        .await;
    assert_eq!(status, 400);

    // A group administrator of Strict only sees Strict.
    admin
        .ok(
            Method::POST,
            "/sys/v1/users/invite",
            Some(
                json!({"user_email": "strict@example.com", "user_password": "strict admin pw 1",
                "account_role": "member", "groups": {strict.clone(): "administrator"}}),
            ),
        )
        .await;
    let narrow = az
        .daemon
        .login("strict@example.com", "strict admin pw 1")
        .await;
    let theirs = narrow.ok(Method::GET, "/sys/v1/reports/keys", None).await;
    assert_eq!(sum(&theirs, |_| true), 1, "{theirs}");
    assert!(
        theirs
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["group_id"] == strict.as_str())
    );
    let theirs = narrow.ok(Method::GET, "/sys/v1/reports/usage", None).await;
    assert_eq!(
        theirs[29]["operations"], 0,
        "the operations were in another group"
    );
    let theirs = narrow.ok(Method::GET, "/sys/v1/reports/drift", None).await;
    assert_eq!(theirs, json!([]));
    let theirs = narrow
        .ok(Method::GET, "/sys/v1/reports/rotation", None)
        .await;
    assert!(
        theirs
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["group_id"] == strict.as_str()),
        "{theirs}"
    );

    // The page: tiles and charts carry the same figures.
    let b = Browser::start(&az.daemon.url).await;
    b.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let tile = |id: &'static str| {
        let b = &b;
        async move { b.text(&format!("{id}-value")).await }
    };
    assert_eq!(tile("tile-keys").await, "10");
    assert_eq!(tile("tile-hsm").await, "2");
    assert_eq!(tile("tile-keyward").await, "8");
    assert_eq!(tile("tile-overdue").await, "1");
    assert_eq!(tile("tile-stopped").await, "1");
    assert_eq!(tile("tile-no-policy").await, "5");
    assert_eq!(tile("tile-due").await, "2");
    assert_eq!(tile("tile-failed").await, "1");
    assert_eq!(tile("tile-drift").await, "0");
    let bars = b.all("chart-states-bar").await;
    let mut states = Vec::new();
    for bar in &bars {
        states.push((
            bar.attr("data-label").await.unwrap().unwrap(),
            bar.attr("data-value").await.unwrap().unwrap(),
        ));
    }
    assert!(
        states.contains(&("Active".into(), "8".into())),
        "{states:?}"
    );
    assert!(states.contains(&("PreActive".into(), "1".into())));
    assert!(states.contains(&("Deactivated".into(), "1".into())));
    let ops = b.all("chart-ops-bar").await;
    assert_eq!(ops.len(), 30);
    assert_eq!(
        ops[29].attr("data-value").await.unwrap().as_deref(),
        Some("3")
    );
    let groups = b.all("chart-groups-row").await;
    let mut by_group = Vec::new();
    for g in &groups {
        by_group.push((
            g.attr("data-label").await.unwrap().unwrap(),
            g.attr("data-value").await.unwrap().unwrap(),
        ));
    }
    by_group.sort();
    assert_eq!(
        by_group,
        [
            ("Strict".into(), "1".into()),
            ("azure".into(), "2".into()),
            ("plain".into(), "7".into())
        ]
    );
    assert_eq!(b.all("attention-table-row").await.len(), 2);
    assert_eq!(b.all("due-table-row").await.len(), 2);
    assert_eq!(b.all("failure-row").await.len(), 1);
    assert!(b.text("drift-table").await.contains("succeeded"));
    b.shot("dashboard").await;

    // The CSV link of the page downloads the same report with the console's session.
    let href = b.attr("csv-usage", "href").await.unwrap();
    let csv = reqwest::Client::new()
        .get(format!("{}{href}", az.daemon.url))
        .header("cookie", b.session_cookie().await)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("keyward-usage-report.csv")
    );
    let text = csv.text().await.unwrap();
    assert_eq!(text.lines().count(), 31, "a header and 30 days");
    assert!(text.lines().last().unwrap().ends_with(",3"));

    // A tile leads to the keys it counts.
    b.click("tile-hsm").await;
    b.wait_text("key-count", "of 2").await;
    let _ = plain;
    let _ = b.client.clone().close().await;
    az.stop().await;
}
