//! The authorization matrix: each role and principal kind against each endpoint family,
//! allowed versus 401/403, including attempts across accounts (FLOWS F1 to F4).

use std::collections::BTreeMap;

use keyward_tests::api::{Api, TestDaemon, b64};
use reqwest::Method;
use serde_json::{Value, json};

const PW: &str = "long enough password";

struct World {
    d: TestDaemon,
    p: BTreeMap<&'static str, Api>,
    g1: String,
    g2: String,
    k1: String,
    k_export: String,
    k2: String,
    gb: String,
    kb: String,
}

async fn invite(admin: &Api, email: &str, role: &str, groups: Value) {
    admin.ok(Method::POST, "/sys/v1/users/invite", Some(json!({"user_email": email, "user_password": PW, "account_role": role, "groups": groups}))).await;
}

/// Account A with every kind of principal, and account B with its own admin, app and key.
async fn world() -> World {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let g1 = admin.create_group("g1", json!({})).await;
    let g2 = admin.create_group("g2", json!({})).await;
    invite(&admin, "member@example.com", "member", json!({})).await;
    invite(&admin, "auditor@example.com", "auditor", json!({})).await;
    invite(
        &admin,
        "gadmin@example.com",
        "member",
        json!({&g1: "administrator"}),
    )
    .await;
    invite(
        &admin,
        "gauditor@example.com",
        "member",
        json!({&g1: "auditor"}),
    )
    .await;
    let (_, key1) = admin.create_app("app1", &[&g1]).await;
    let (_, key2) = admin.create_app("app2", &[&g2]).await;
    let app1 = d.login_app(&key1).await;
    let app2 = d.login_app(&key2).await;
    let k1 = app1
        .create_key(json!({"name": "k1", "obj_type": "AES", "key_size": 256}))
        .await["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let k_export = app1.create_key(json!({"name": "k-export", "obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT", "DECRYPT", "EXPORT"]})).await["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let k2 = app2
        .create_key(json!({"name": "k2", "obj_type": "AES", "key_size": 256}))
        .await["kid"]
        .as_str()
        .unwrap()
        .to_string();

    // Account B: made by the admin, handed to bob, who builds his own group, app and key.
    admin.create_account("B").await;
    invite(&admin, "bob@example.com", "administrator", json!({})).await;
    let acct_a = admin
        .ok(Method::GET, "/sys/v1/accounts", None)
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] != "B")
        .unwrap()["acct_id"]
        .clone();
    admin
        .ok(
            Method::POST,
            "/sys/v1/session/select_account",
            Some(json!({"acct_id": acct_a})),
        )
        .await;
    let bob = d.login("bob@example.com", PW).await;
    // Bob's default account is B (his only one).
    let gb = bob.create_group("gb", json!({})).await;
    let (_, keyb) = bob.create_app("appb", &[&gb]).await;
    let appb = d.login_app(&keyb).await;
    let kb = appb
        .create_key(json!({"name": "kb", "obj_type": "AES", "key_size": 256}))
        .await["kid"]
        .as_str()
        .unwrap()
        .to_string();

    let mut p = BTreeMap::new();
    p.insert("none", d.anonymous());
    p.insert("admin", admin);
    p.insert("member", d.login("member@example.com", PW).await);
    p.insert("auditor", d.login("auditor@example.com", PW).await);
    p.insert("gadmin", d.login("gadmin@example.com", PW).await);
    p.insert("gauditor", d.login("gauditor@example.com", PW).await);
    p.insert("app1", app1);
    p.insert("app2", app2);
    p.insert("bob", bob);
    p.insert("appb", appb);
    World {
        d,
        p,
        g1,
        g2,
        k1,
        k_export,
        k2,
        gb,
        kb,
    }
}

/// Expected outcome: `ok` (2xx), `401` or `403`.
fn expect(allowed: &[&str], principal: &str) -> &'static str {
    if principal == "none" {
        "401"
    } else if allowed.contains(&principal) {
        "ok"
    } else {
        "403"
    }
}

const ALL: &[&str] = &[
    "none", "admin", "member", "auditor", "gadmin", "gauditor", "app1", "app2", "bob", "appb",
];

#[tokio::test]
async fn authorization_matrix() {
    let w = world().await;
    let (g1, k1, k2, kx) = (w.g1.clone(), w.k1.clone(), w.k2.clone(), w.k_export.clone());
    let enc = json!({"alg": "AES", "plain": b64(b"secret data"), "mode": "GCM"});
    // (family, method, path, body, principals allowed)
    type Row<'a> = (&'a str, Method, String, Option<Value>, Vec<&'a str>);
    let rows: Vec<Row> = vec![
        (
            "list users",
            Method::GET,
            "/sys/v1/users".into(),
            None,
            vec!["admin", "member", "auditor", "gadmin", "gauditor", "bob"],
        ),
        (
            "invite a user",
            Method::POST,
            "/sys/v1/users/invite".into(),
            Some(
                json!({"user_email": "new-{p}@example.com", "user_password": PW, "account_role": "member"}),
            ),
            vec!["admin", "bob"],
        ),
        (
            "list groups",
            Method::GET,
            "/sys/v1/groups".into(),
            None,
            vec![
                "admin", "member", "auditor", "gadmin", "gauditor", "app1", "app2", "bob", "appb",
            ],
        ),
        (
            "create a group",
            Method::POST,
            "/sys/v1/groups".into(),
            Some(json!({"name": "group-by-{p}"})),
            vec!["admin", "member", "gadmin", "gauditor", "bob"],
        ),
        (
            "read a group",
            Method::GET,
            format!("/sys/v1/groups/{g1}"),
            None,
            vec!["admin", "auditor", "gadmin", "gauditor", "app1"],
        ),
        (
            "change a group",
            Method::PATCH,
            format!("/sys/v1/groups/{g1}"),
            Some(json!({"description": "changed by {p}"})),
            vec!["admin", "gadmin"],
        ),
        (
            "create an app",
            Method::POST,
            "/sys/v1/apps".into(),
            Some(json!({"name": "app-by-{p}", "groups": [g1]})),
            vec!["admin", "gadmin"],
        ),
        (
            "create a key",
            Method::POST,
            "/crypto/v1/keys".into(),
            Some(json!({"name": "key-by-{p}", "group_id": g1, "obj_type": "AES", "key_size": 128})),
            vec!["admin", "gadmin", "app1"],
        ),
        (
            "read a key",
            Method::GET,
            format!("/crypto/v1/keys/{k1}"),
            None,
            vec!["admin", "auditor", "gadmin", "gauditor", "app1"],
        ),
        (
            "change a key",
            Method::PATCH,
            format!("/crypto/v1/keys/{k1}"),
            Some(json!({"description": "by {p}"})),
            vec!["admin", "gadmin", "app1"],
        ),
        (
            "encrypt",
            Method::POST,
            format!("/crypto/v1/keys/{k1}/encrypt"),
            Some(enc.clone()),
            vec!["app1"],
        ),
        (
            "encrypt (global form)",
            Method::POST,
            "/crypto/v1/encrypt".into(),
            Some(json!({"key": {"kid": k1}, "alg": "AES", "plain": b64(b"x")})),
            vec!["app1"],
        ),
        (
            "export an exportable key",
            Method::POST,
            "/crypto/v1/keys/export".into(),
            Some(json!({"kid": kx})),
            vec!["app1"],
        ),
        (
            "export a non-exportable key",
            Method::POST,
            "/crypto/v1/keys/export".into(),
            Some(json!({"kid": k1})),
            vec![],
        ),
        (
            "read the audit log",
            Method::GET,
            "/sys/v1/logs".into(),
            None,
            vec!["admin", "auditor", "bob"],
        ),
        (
            "change the account",
            Method::PATCH,
            "/sys/v1/accounts/{acct}".into(),
            Some(json!({"description": "by {p}"})),
            vec!["admin", "bob"],
        ),
        (
            "read another group of the account",
            Method::GET,
            format!("/sys/v1/groups/{}", w.g2),
            None,
            vec!["admin", "auditor", "app2"],
        ),
        (
            "use another group's key",
            Method::POST,
            format!("/crypto/v1/keys/{k2}/encrypt"),
            Some(enc.clone()),
            vec!["app2"],
        ),
        (
            "read account B's group",
            Method::GET,
            format!("/sys/v1/groups/{}", w.gb),
            None,
            vec!["bob", "appb"],
        ),
        (
            "read account B's key",
            Method::GET,
            format!("/crypto/v1/keys/{}", w.kb),
            None,
            vec!["bob", "appb"],
        ),
        (
            "use account B's key",
            Method::POST,
            format!("/crypto/v1/keys/{}/encrypt", w.kb),
            Some(enc.clone()),
            vec!["appb"],
        ),
    ];

    let mut accounts = BTreeMap::new();
    for who in ALL.iter().filter(|p| **p != "none") {
        let a = w.p[who].ok(Method::GET, "/sys/v1/accounts", None).await;
        accounts.insert(*who, a[0]["acct_id"].as_str().unwrap().to_string());
    }
    let mut failures = Vec::new();
    for (family, method, path, body, allowed) in &rows {
        for who in ALL {
            let path = path.replace(
                "{acct}",
                accounts
                    .get(who)
                    .map(String::as_str)
                    .unwrap_or("00000000-0000-4000-8000-000000000000"),
            );
            let body = body.as_ref().map(|b| {
                serde_json::from_str::<Value>(&b.to_string().replace("{p}", who)).unwrap()
            });
            let (status, reply) = w.p[who].call(method.clone(), &path, body).await;
            // Another account's objects are as unknown as missing ones: 404 counts as a refusal.
            let got = match status {
                200..=299 => "ok",
                401 => "401",
                403 | 404 => "403",
                _ => "other",
            };
            let want = expect(allowed, who);
            if got != want {
                failures.push(format!(
                    "{family}: {who} got {status} ({reply}), want {want}"
                ));
            }
            if matches!(status, 401 | 403 | 404) {
                assert!(
                    reply["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{family}/{who}: denials explain themselves: {reply}"
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn listings_show_only_what_the_caller_may_see() {
    let w = world().await;
    let names = |v: Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let keys = |who: &'static str| {
        let api = w.p[who].clone();
        async move { names(api.ok(Method::GET, "/crypto/v1/keys", None).await) }
    };
    assert_eq!(keys("admin").await, ["k-export", "k1", "k2"]);
    assert_eq!(keys("auditor").await, ["k-export", "k1", "k2"]);
    assert_eq!(keys("gadmin").await, ["k-export", "k1"]);
    assert_eq!(keys("app2").await, ["k2"]);
    assert!(keys("member").await.is_empty());
    assert_eq!(keys("bob").await, ["kb"]);
    let groups = names(w.p["app1"].ok(Method::GET, "/sys/v1/groups", None).await);
    assert_eq!(groups, ["g1"]);
    let _ = (&w.d, &w.g2, &w.k2);
}

#[tokio::test]
async fn bad_and_expired_credentials_are_401() {
    let w = world().await;
    let d = &w.d;
    let resp = keyward_tests::api::http_client()
        .post(format!("{}/sys/v1/session/auth", d.url))
        .basic_auth("admin@example.com", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = keyward_tests::api::http_client()
        .post(format!("{}/sys/v1/session/auth", d.url))
        .header("authorization", "Basic bm90LWEta2V5")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let forged = keyward_tests::api::Api::clone(&w.p["admin"]);
    let mut forged = forged;
    forged.token = Some("forged-token".into());
    assert_eq!(forged.call(Method::GET, "/sys/v1/users", None).await.0, 401);

    // Sessions expire with the daemon's clock; refresh keeps them alive.
    let admin = &w.p["admin"];
    d.clock.advance(3000);
    admin
        .ok(Method::POST, "/sys/v1/session/refresh", None)
        .await;
    d.clock.advance(3000);
    assert_eq!(
        admin.call(Method::GET, "/sys/v1/users", None).await.0,
        200,
        "refreshed"
    );
    d.clock.advance(3700);
    assert_eq!(
        admin.call(Method::GET, "/sys/v1/users", None).await.0,
        401,
        "expired"
    );

    // Terminated sessions are gone.
    let app = &w.p["app1"];
    let (s, _) = app
        .call(Method::POST, "/sys/v1/session/terminate", None)
        .await;
    assert_eq!(s, 204);
    assert_eq!(app.call(Method::GET, "/crypto/v1/keys", None).await.0, 401);
}

#[tokio::test]
async fn sign_up_is_closed_after_the_first_user() {
    let d = TestDaemon::start().await;
    d.bootstrap().await;
    let (s, body) = d
        .anonymous()
        .call(
            Method::POST,
            "/sys/v1/users",
            Some(json!({"user_email": "second@example.com", "user_password": PW})),
        )
        .await;
    assert_eq!(s, 403, "{body}");
}

/// A workflow run in the caller's account: a connection test of a link that cannot connect.
async fn a_run(api: &Api) -> String {
    let link = json!({"kind": "AzureManagedHsm", "tenant_id": "t", "client_id": "c", "client_secret": "s",
        "subscription_id": "sub", "endpoints": {"identity": "https://localhost:1", "management": "https://localhost:1", "instance_suffix": "localhost"}});
    api.ok(Method::POST, "/sys/v1/groups/hmg/check", Some(link))
        .await["run_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn every_id_from_another_account_is_refused_and_changes_nothing() {
    use keyward_tests::api::catalog_snapshot_without;
    let w = world().await;
    let (admin, app1) = (&w.p["admin"], &w.p["app1"]);
    let me = |api: &Api| {
        let api = api.clone();
        async move {
            api.ok(Method::GET, "/sys/v1/accounts", None).await[0]["acct_id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let acct_a = me(admin).await;
    let users = admin.ok(Method::GET, "/sys/v1/users", None).await;
    let user_id = |email: &str| {
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["user_email"] == email)
            .unwrap()["user_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let admin_id = user_id("admin@example.com");
    let member_id = user_id("member@example.com");
    let app1_id = admin
        .ok(Method::GET, "/sys/v1/apps", None)
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "app1")
        .unwrap()["app_id"]
        .as_str()
        .unwrap()
        .to_string();
    let run_a = a_run(admin).await;
    let (g1, k1, kx) = (w.g1.clone(), w.k1.clone(), w.k_export.clone());
    // The attackers: account B's administrator and application, with account A's ids.
    let (bob, appb) = (&w.p["bob"], &w.p["appb"]);
    let (gb, kb) = (w.gb.clone(), w.kb.clone());
    let linked_b = bob
        .create_group(
            "linked-b",
            // Incomplete, so no background connection test runs while we compare snapshots.
            json!({"external_kms": {"kind": "AzureManagedHsm", "instance": "https://h.localhost"}}),
        )
        .await;
    let appb_id = bob.ok(Method::GET, "/sys/v1/apps", None).await[0]["app_id"]
        .as_str()
        .unwrap()
        .to_string();
    let enc = json!({"alg": "AES", "plain": b64(b"x")});
    let before = catalog_snapshot_without(&w.d, &["audit_events"]).await;
    type Try<'a> = (&'a Api, Method, String, Option<Value>);
    let tries: Vec<Try> = vec![
        // users
        (bob, Method::GET, format!("/sys/v1/users/{member_id}"), None),
        (
            bob,
            Method::PATCH,
            format!("/sys/v1/users/{member_id}"),
            Some(json!({"account_role": "auditor"})),
        ),
        (
            bob,
            Method::DELETE,
            format!("/sys/v1/users/{member_id}"),
            None,
        ),
        // The admin is a member of both accounts: B's administrator reaches their group
        // roles in A through neither field.
        (
            bob,
            Method::PATCH,
            format!("/sys/v1/users/{admin_id}"),
            Some(json!({"del_groups": [g1]})),
        ),
        (
            bob,
            Method::PATCH,
            format!("/sys/v1/users/{admin_id}"),
            Some(json!({"add_groups": {&g1: "auditor"}})),
        ),
        (
            bob,
            Method::POST,
            "/sys/v1/users/invite".into(),
            Some(
                json!({"user_email": "x@example.com", "user_password": PW, "account_role": "member", "groups": {&g1: "auditor"}}),
            ),
        ),
        // accounts
        (bob, Method::GET, format!("/sys/v1/accounts/{acct_a}"), None),
        (
            bob,
            Method::PATCH,
            format!("/sys/v1/accounts/{acct_a}"),
            Some(json!({"description": "mine"})),
        ),
        (
            bob,
            Method::DELETE,
            format!("/sys/v1/accounts/{acct_a}"),
            None,
        ),
        (
            bob,
            Method::POST,
            "/sys/v1/session/select_account".into(),
            Some(json!({"acct_id": acct_a})),
        ),
        // groups
        (bob, Method::GET, format!("/sys/v1/groups/{g1}"), None),
        (
            bob,
            Method::PATCH,
            format!("/sys/v1/groups/{g1}"),
            Some(json!({"description": "mine"})),
        ),
        (bob, Method::DELETE, format!("/sys/v1/groups/{g1}"), None),
        (
            bob,
            Method::POST,
            format!("/sys/v1/groups/{g1}/hmg/check"),
            None,
        ),
        (
            bob,
            Method::POST,
            format!("/sys/v1/groups/{g1}/hmg/scan"),
            None,
        ),
        (
            bob,
            Method::POST,
            format!("/sys/v1/groups/{g1}/hmg/scans"),
            None,
        ),
        (
            bob,
            Method::GET,
            format!("/sys/v1/groups/{g1}/hmg/scans"),
            None,
        ),
        (
            bob,
            Method::GET,
            format!("/sys/v1/groups/{linked_b}/hmg/scans/{run_a}"),
            None,
        ),
        // apps
        (bob, Method::GET, format!("/sys/v1/apps/{app1_id}"), None),
        (
            bob,
            Method::PATCH,
            format!("/sys/v1/apps/{app1_id}"),
            Some(json!({"enabled": false})),
        ),
        (bob, Method::DELETE, format!("/sys/v1/apps/{app1_id}"), None),
        (
            bob,
            Method::POST,
            format!("/sys/v1/apps/{app1_id}/reset_secret"),
            None,
        ),
        (
            bob,
            Method::GET,
            format!("/sys/v1/apps/{app1_id}/credential"),
            None,
        ),
        (
            bob,
            Method::PATCH,
            format!("/sys/v1/apps/{app1_id}"),
            Some(json!({"add_groups": {gb.clone(): ["ENCRYPT"]}})),
        ),
        (
            bob,
            Method::POST,
            "/sys/v1/apps".into(),
            Some(json!({"name": "intruder", "groups": [g1]})),
        ),
        (
            bob,
            Method::PATCH,
            format!("/sys/v1/apps/{appb_id}"),
            Some(json!({"add_groups": {g1.clone(): ["ENCRYPT", "MANAGE"]}})),
        ),
        (
            bob,
            Method::POST,
            "/sys/v1/apps".into(),
            Some(json!({"name": "intruder2", "groups": [gb, g1], "default_group": g1})),
        ),
        // runs
        (
            bob,
            Method::GET,
            format!("/sys/v1/workflow_runs/{run_a}"),
            None,
        ),
        // keys, by id and by name
        (bob, Method::GET, format!("/crypto/v1/keys/{k1}"), None),
        (
            bob,
            Method::POST,
            "/crypto/v1/keys/info".into(),
            Some(json!({"kid": k1})),
        ),
        (
            bob,
            Method::POST,
            "/crypto/v1/keys/info".into(),
            Some(json!({"name": "k1"})),
        ),
        (
            bob,
            Method::PATCH,
            format!("/crypto/v1/keys/{k1}"),
            Some(json!({"description": "mine"})),
        ),
        (bob, Method::DELETE, format!("/crypto/v1/keys/{k1}"), None),
        (
            bob,
            Method::POST,
            format!("/crypto/v1/keys/{k1}/deactivate"),
            None,
        ),
        (
            bob,
            Method::POST,
            format!("/crypto/v1/keys/{k1}/revoke"),
            Some(json!({"code": "KeyCompromise"})),
        ),
        (
            bob,
            Method::POST,
            format!("/crypto/v1/keys/{k1}/destroy"),
            None,
        ),
        (
            bob,
            Method::POST,
            format!("/crypto/v1/keys/{k1}/activate"),
            None,
        ),
        (
            bob,
            Method::POST,
            format!("/crypto/v1/keys/{k1}/schedule_deletion"),
            Some(json!({"confirm": true})),
        ),
        (
            bob,
            Method::POST,
            format!("/crypto/v1/keys/{k1}/recover"),
            None,
        ),
        (
            bob,
            Method::GET,
            format!("/crypto/v1/keys/{k1}/copy_name"),
            None,
        ),
        (
            bob,
            Method::POST,
            "/crypto/v1/keys".into(),
            Some(json!({"name": "planted", "group_id": g1, "obj_type": "AES", "key_size": 256})),
        ),
        (
            bob,
            Method::PUT,
            "/crypto/v1/keys".into(),
            Some(
                json!({"name": "planted", "group_id": g1, "obj_type": "AES", "value": b64(&[1u8; 32])}),
            ),
        ),
        (
            bob,
            Method::POST,
            "/crypto/v1/keys/copy".into(),
            Some(json!({"key": {"kid": kx}, "group_id": gb})),
        ),
        (
            bob,
            Method::POST,
            "/crypto/v1/keys/copy".into(),
            Some(json!({"key": {"kid": kb}, "group_id": g1})),
        ),
        (
            bob,
            Method::POST,
            "/crypto/v1/keys/export".into(),
            Some(json!({"kid": kx})),
        ),
        (
            appb,
            Method::POST,
            "/crypto/v1/keys/export".into(),
            Some(json!({"kid": kx})),
        ),
        (
            appb,
            Method::POST,
            "/crypto/v1/keys/export".into(),
            Some(json!({"name": "k-export"})),
        ),
        (
            appb,
            Method::PATCH,
            format!("/crypto/v1/keys/{k1}"),
            Some(json!({"enabled": false})),
        ),
        (
            appb,
            Method::POST,
            "/crypto/v1/keys".into(),
            Some(json!({"name": "planted", "group_id": g1, "obj_type": "AES", "key_size": 256})),
        ),
        (
            appb,
            Method::PUT,
            "/crypto/v1/keys".into(),
            Some(
                json!({"name": "unwrapped", "obj_type": "AES", "value": b64(&[1u8; 40]), "wrapped_by": {"kid": k1}}),
            ),
        ),
        // cryptography
        (
            appb,
            Method::POST,
            format!("/crypto/v1/keys/{k1}/encrypt"),
            Some(enc.clone()),
        ),
        (
            appb,
            Method::POST,
            "/crypto/v1/encrypt".into(),
            Some(json!({"key": {"name": "k1"}, "alg": "AES", "plain": b64(b"x")})),
        ),
        (
            appb,
            Method::POST,
            format!("/crypto/v1/keys/{kb}/wrapkey"),
            Some(json!({"alg": "AES", "subject": {"kid": kx}})),
        ),
        (
            appb,
            Method::POST,
            format!("/crypto/v1/keys/{k1}/unwrapkey"),
            Some(
                json!({"alg": "AES", "wrapped_key": b64(&[1u8; 40]), "obj_type": "AES", "name": "u"}),
            ),
        ),
        (
            appb,
            Method::POST,
            format!("/crypto/v1/keys/{kb}/unwrapkey"),
            Some(
                json!({"alg": "AES", "wrapped_key": b64(&[1u8; 40]), "obj_type": "AES", "name": "u", "group_id": g1}),
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (who, method, path, body) in tries {
        let (s, reply) = who.call(method.clone(), &path, body.clone()).await;
        if !matches!(s, 403 | 404) {
            failures.push(format!("{method} {path} {body:?}: {s} {reply}"));
        }
    }
    // Listings filtered by another account's ids are empty.
    for path in [
        format!("/crypto/v1/keys?group_id={g1}"),
        format!("/sys/v1/workflow_runs?group_id={g1}"),
    ] {
        let list = bob.ok(Method::GET, &path, None).await;
        if !list.as_array().unwrap().is_empty() {
            failures.push(format!("{path}: {list}"));
        }
    }
    // Nor does account A's audit log show through a filter by its ids.
    for filter in [format!("object_id={k1}"), format!("actor_id={member_id}")] {
        let logs = bob
            .ok(Method::GET, &format!("/sys/v1/logs?{filter}"), None)
            .await;
        if !logs["hits"].as_array().unwrap().is_empty() {
            failures.push(format!("logs?{filter}: {logs}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        before,
        catalog_snapshot_without(&w.d, &["audit_events"]).await,
        "neither account changed"
    );
    // Account A still works as before.
    app1.ok(
        Method::POST,
        &format!("/crypto/v1/keys/{k1}/encrypt"),
        Some(enc),
    )
    .await;
    let roles = admin
        .ok(Method::GET, &format!("/sys/v1/users/{admin_id}"), None)
        .await;
    assert_eq!(roles["groups"][&g1], "administrator");
}
