//! Two daemons on one PostgreSQL catalog, as behind a load balancer: what one does, the other
//! sees. Sessions, keys, revocations, deactivations and permission changes, account scripts, the login throttle
//! and webhook deliveries cross from one daemon to the other. The daemons share the database
//! and the master key and nothing else.
//!
//! They use the suite's PostgreSQL when it runs on one (`KEYWARD_TEST_DATABASE`), otherwise
//! a cluster of their own.

use std::time::Duration;

use keyward::webhooks::signature::Secret;
use keyward_tests::api::{ADMIN_EMAIL, ADMIN_PASSWORD, Api, TestDaemon, b64, http_client};
use keyward_tests::azure::eventually;
use keyward_tests::postgres::{Cluster, Pair, admin_url, create_database};
use reqwest::Method;
use serde_json::{Value, json};

/// How long a change on one daemon may take to be seen by the other: the change feed
/// delivers it in milliseconds; this leaves room for a loaded test machine.
const BOUND_SECS: u64 = 5;

const ECHO: &str = "output.said = \"the daemon's echo\";\noutput.input = input;\n";

/// Two daemons on one new PostgreSQL database, each with the same workflow directory (a
/// deployment ships the same scripts to every daemon).
async fn pair() -> Pair {
    let (cluster, admin) = match admin_url() {
        Some(url) => (None, url),
        None => {
            let c = Cluster::primary();
            let url = c.admin_url();
            (Some(c), url)
        }
    };
    let url = create_database(&admin).await;
    let scripts = tempfile::tempdir().unwrap();
    std::fs::write(scripts.path().join("echo.rhai"), ECHO).unwrap();
    let dir = scripts.path().to_path_buf();
    Pair::on(&url, move |c| c.workflow_dir = Some(dir.clone()))
        .await
        .keeping(scripts)
        .keeping(cluster)
}

/// The same session, through the other daemon.
fn via(api: &Api, d: &TestDaemon) -> Api {
    api.on(&d.url)
}

#[tokio::test]
async fn a_session_and_a_key_from_one_daemon_work_on_the_other_until_either_ends_them() {
    let p = pair().await;
    let admin_a = p.a.bootstrap().await;
    let admin_b = via(&admin_a, &p.b);
    let group = admin_a.create_group("shared", json!({})).await;
    let (_, api_key) = admin_b.create_app("payments", &[group.as_str()]).await;

    // A key made through A is used through B by an application that logged in on B.
    let key = admin_a
        .create_key(json!({"name": "k1", "group_id": group, "obj_type": "AES", "key_size": 256}))
        .await;
    let app_b = p.b.login_app(&api_key).await;
    let sealed = app_b
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{}/encrypt", key["kid"].as_str().unwrap()),
            Some(json!({"alg": "AES", "mode": "GCM", "plain": b64(b"across daemons")})),
        )
        .await;
    let app_a = via(&app_b, &p.a);
    let opened = app_a
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{}/decrypt", key["kid"].as_str().unwrap()),
            Some(json!({"alg": "AES", "mode": "GCM", "cipher": sealed["cipher"], "iv": sealed["iv"], "tag": sealed["tag"]})),
        )
        .await;
    assert_eq!(opened["plain"], b64(b"across daemons"));

    // A logout on B ends the session on A too.
    let (s, _) = app_b
        .call(Method::POST, "/sys/v1/session/terminate", None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = app_a.call(Method::GET, "/crypto/v1/keys", None).await;
    assert_eq!(s, 401, "the session ended on both daemons");

    // A password change on A ends the user's sessions on B.
    let user_b = p.b.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let users = admin_a.ok(Method::GET, "/sys/v1/users", None).await;
    let user_id = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_email"] == ADMIN_EMAIL)
        .map(|u| u["user_id"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("the administrator is listed: {users}"));
    let (s, body) = admin_a
        .call(
            Method::PATCH,
            &format!("/sys/v1/users/{user_id}"),
            Some(json!({"user_password": "another long passphrase 42", "current_password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, _) = user_b.call(Method::GET, "/sys/v1/groups", None).await;
    assert_eq!(s, 401, "the password change ended the session on B");
}

#[tokio::test]
async fn a_revocation_or_a_lost_permission_on_one_daemon_stops_the_other_within_the_bound() {
    let p = pair().await;
    let admin_a = p.a.bootstrap().await;
    let group = admin_a.create_group("shared", json!({})).await;
    let (app_id, api_key) = admin_a.create_app("payments", &[group.as_str()]).await;
    let app_b = p.b.login_app(&api_key).await;
    let mut kids = Vec::new();
    for name in ["revoked", "deactivated", "disabled", "kept"] {
        let key = admin_a
            .create_key(
                json!({"name": name, "group_id": group, "obj_type": "AES", "key_size": 256}),
            )
            .await;
        kids.push(key["kid"].as_str().unwrap().to_string());
    }
    let encrypt = |kid: &str| {
        let app = app_b.clone();
        let path = format!("/crypto/v1/keys/{kid}/encrypt");
        async move {
            app.call(
                Method::POST,
                &path,
                Some(json!({"alg": "AES", "mode": "GCM", "plain": b64(b"x")})),
            )
            .await
            .0
        }
    };
    // B has each key in its cache.
    for kid in &kids {
        assert_eq!(encrypt(kid).await, 200);
    }
    admin_a
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{}/revoke", kids[0]),
            Some(json!({"code": "KeyCompromise"})),
        )
        .await;
    admin_a
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{}/deactivate", kids[1]),
            None,
        )
        .await;
    admin_a
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{}", kids[2]),
            Some(json!({"enabled": false})),
        )
        .await;
    for kid in &kids[..3] {
        within_bound(|| async { (encrypt(kid).await != 200).then_some(()) }).await;
    }
    assert_eq!(encrypt(&kids[3]).await, 200, "the other key still works");

    // The application loses the group on A: B refuses it at once.
    admin_a
        .ok(
            Method::PATCH,
            &format!("/sys/v1/apps/{app_id}"),
            Some(json!({"del_groups": [group]})),
        )
        .await;
    within_bound(|| async { (encrypt(&kids[3]).await != 200).then_some(()) }).await;
}

async fn within_bound<T, F, Fut>(check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(BOUND_SECS),
            "not seen within {BOUND_SECS} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_account_script_put_on_one_daemon_is_what_a_run_on_the_other_uses() {
    let p = pair().await;
    let admin_a = p.a.bootstrap().await;
    let admin_b = via(&admin_a, &p.b);
    let run = |api: Api| async move {
        api.ok(
            Method::POST,
            "/sys/v1/workflows/echo/run",
            Some(json!({"input": {"n": 1}})),
        )
        .await
    };
    // B runs the daemon's script, compiled and remembered.
    assert_eq!(
        run(admin_b.clone()).await["output"]["said"],
        "the daemon's echo"
    );
    let (s, v) = admin_a
        .call(
            Method::PUT,
            "/sys/v1/workflows/echo",
            Some(json!({"source": "output.said = \"the account's echo\";\n"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        run(admin_b.clone()).await["output"]["said"],
        "the account's echo"
    );
    let listed = admin_b
        .ok(Method::GET, "/sys/v1/workflows/echo", None)
        .await;
    assert_eq!(listed["account_version"], 1, "{listed}");
    // Going back to the daemon's script on B is what A runs next.
    admin_b
        .ok(Method::DELETE, "/sys/v1/workflows/echo", None)
        .await;
    assert_eq!(run(admin_a).await["output"]["said"], "the daemon's echo");
}

#[tokio::test]
async fn failed_logins_on_one_daemon_count_on_the_other() {
    let p = pair().await;
    p.a.bootstrap().await;
    let basic = |d: &TestDaemon, password: &str| {
        let url = format!("{}/sys/v1/session/auth", d.url);
        let password = password.to_string();
        async move {
            http_client()
                .post(url)
                .basic_auth(ADMIN_EMAIL, Some(password))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..5 {
        assert_eq!(basic(&p.a, "wrong password 1").await, 401);
    }
    assert_eq!(
        basic(&p.b, ADMIN_PASSWORD).await,
        429,
        "B counts A's failures, even for the right password"
    );
}

#[tokio::test]
async fn a_webhook_delivered_to_both_daemons_runs_once() {
    let p = pair().await;
    let admin_a = p.a.bootstrap().await;
    let hook = admin_a
        .ok(
            Method::POST,
            "/sys/v1/webhooks",
            Some(json!({"name": "deploy", "workflow": "echo"})),
        )
        .await;
    let secret = Secret::parse(hook["secret"].as_str().unwrap()).unwrap();
    let path = hook["path"].as_str().unwrap().to_string();
    let body = br#"{"release":"42"}"#;
    let now = p.a.clock.now();
    let signature = secret.sign("msg_once", now, body);
    let deliver = |d: &TestDaemon| {
        let url = format!("{}{path}", d.url);
        let signature = signature.clone();
        async move {
            let r = http_client()
                .post(url)
                .header("content-type", "application/json")
                .header("webhook-id", "msg_once")
                .header("webhook-timestamp", now.to_string())
                .header("webhook-signature", signature)
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (first, second) = tokio::join!(deliver(&p.a), deliver(&p.b));
    let run_ids: Vec<&Value> = [&first.1, &second.1]
        .iter()
        .map(|r| &r["run_id"])
        .filter(|id| id.is_string())
        .collect();
    assert!(
        [first.0, second.0].contains(&202),
        "one delivery was accepted: {first:?} {second:?}"
    );
    let runs = eventually(30, || async {
        let runs = admin_a
            .ok(Method::GET, "/sys/v1/workflow_runs?workflow=echo", None)
            .await;
        let list = runs["runs"].as_array().or(runs.as_array()).cloned()?;
        list.iter()
            .all(|r| r["status"] != "running")
            .then_some(list)
    })
    .await;
    assert_eq!(runs.len(), 1, "one run for two deliveries: {runs:?}");
    assert!(run_ids.len() <= 2);
}

#[tokio::test]
async fn two_daemons_deciding_one_approval_request_at_once_carry_it_out_once() {
    let p = pair().await;
    let admin = p.a.bootstrap().await;
    let group = admin.create_group("vault", json!({})).await;
    let key = admin
        .create_key(json!({"name": "k", "group_id": group, "obj_type": "AES", "key_size": 256}))
        .await;
    let mut reviewers = vec![];
    for name in ["r1", "r2", "r3"] {
        let email = format!("{name}@example.com");
        let u = admin
            .ok(
                Method::POST,
                "/sys/v1/users/invite",
                Some(json!({"user_email": email, "user_password": ADMIN_PASSWORD,
                    "account_role": "member", "groups": {&group: "administrator"}})),
            )
            .await;
        reviewers.push(u["user_id"].as_str().unwrap().to_string());
    }
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{group}"),
            Some(json!({"approval_policy": {
                "quorum": {"n": 2, "members": reviewers.iter().map(|id| json!({"user": id})).collect::<Vec<_>>()},
                "protect_permissions": ["ROTATE_SOBJECTS"]}})),
        )
        .await;
    let r = admin
        .ok(
            Method::POST,
            "/sys/v1/approval_requests",
            Some(
                json!({"method": "POST", "operation": "/crypto/v1/keys/rekey",
                "body": {"kid": key["kid"]}}),
            ),
        )
        .await;
    let id = r["request_id"].as_str().unwrap().to_string();
    let approve = format!("/sys/v1/approval_requests/{id}/approve");
    let r1 = p.a.login("r1@example.com", ADMIN_PASSWORD).await;
    r1.ok(Method::POST, &approve, Some(json!({}))).await;

    // The second and third reviewers approve at the same moment, one on each daemon: each
    // approval would meet the quorum, and one of them carries the rotation out.
    let r2 = p.a.login("r2@example.com", ADMIN_PASSWORD).await;
    let r3 = p.b.login("r3@example.com", ADMIN_PASSWORD).await;
    let (two, three) = tokio::join!(
        r2.call(Method::POST, &approve, Some(json!({}))),
        r3.call(Method::POST, &approve, Some(json!({})))
    );
    // The approval that arrives once the request is decided is told so (409); either way
    // the operation runs once.
    assert!(
        [two.0, three.0].contains(&200) && [two.0, three.0].iter().all(|s| [200, 409].contains(s)),
        "{two:?} {three:?}"
    );
    let done = admin
        .ok(
            Method::GET,
            &format!("/sys/v1/approval_requests/{id}"),
            None,
        )
        .await;
    assert_eq!(done["status"], "APPROVED", "{done}");
    for (action, expected) in [("approval_request.execute", 1), ("key.rotate", 1)] {
        let logs = admin
            .ok(
                Method::GET,
                &format!("/sys/v1/logs?action={action}&size=100"),
                None,
            )
            .await;
        assert_eq!(
            keyward_tests::api::log_entries(&logs).len(),
            expected,
            "{action} once"
        );
    }
    let keys = admin.ok(Method::GET, "/crypto/v1/keys", None).await;
    assert_eq!(
        keys.as_array().unwrap().len(),
        2,
        "the key and one successor: {keys}"
    );
    // The result is read once, through either daemon.
    let result = format!("/sys/v1/approval_requests/{id}/result");
    admin.ok(Method::POST, &result, None).await;
    let (s, _) = via(&admin, &p.b).call(Method::POST, &result, None).await;
    assert_eq!(s, 409);
}
