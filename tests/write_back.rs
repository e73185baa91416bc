//! What comes back obeys the rules a request does, and every trigger acts as a person could:
//! each test is one way a key's promise was broken (issue 17) tried again through the path
//! that broke it — a copy's update, an application's permissions, a webhook, a job, a
//! workflow script, the HSM's own state after a sync, a restore from escrow, a failed
//! rotation, the metrics, a notification endpoint.

use keyward::webhooks::signature::Secret;
use keyward_tests::api::{Api, TestDaemon, http_client};
use keyward_tests::azure::{Azure, HSM, eventually, settle};
use reqwest::Method;
use serde_json::{Value, json};

const PW: &str = "correct horse battery staple";

fn kid(v: &Value) -> String {
    v["kid"].as_str().expect("a key").to_string()
}

/// Invites a user with the given group roles and signs them in.
async fn user(d: &TestDaemon, admin: &Api, email: &str, groups: Value) -> (String, Api) {
    let u = admin
        .ok(
            Method::POST,
            "/sys/v1/users/invite",
            Some(json!({"user_email": email, "user_password": PW, "account_role": "member", "groups": groups})),
        )
        .await;
    let id = u["user_id"].as_str().expect("a user id").to_string();
    (id, d.login(email, PW).await)
}

/// The audit events of an action about an object.
async fn events(admin: &Api, action: &str, object: &str) -> Vec<Value> {
    let logs = admin
        .ok(
            Method::GET,
            &format!("/sys/v1/logs?action={action}&size=500"),
            None,
        )
        .await;
    keyward_tests::api::log_entries(&logs)
        .into_iter()
        .filter(|e| e["object_id"] == object)
        .collect()
}

#[tokio::test]
async fn a_copy_never_gains_operations_its_source_lacks() {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let a = admin.create_group("a", json!({})).await;
    let b = admin.create_group("b", json!({})).await;
    let (_, b_admin) = user(
        &d,
        &admin,
        "b-admin@example.com",
        json!({&b: "administrator"}),
    )
    .await;
    let source = kid(&admin
        .create_key(json!({"name": "enc-only", "group_id": a, "obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT"]}))
        .await);
    let copy = admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/copy",
            Some(json!({"key": {"kid": source}, "group_id": b, "name": "enc-copy"})),
        )
        .await;
    assert_eq!(copy["key_ops"], json!(["ENCRYPT"]));
    let copy = kid(&copy);

    // The administrator of the copy's group only cannot make it decrypt what its source
    // encrypted: 403, and the copy is unchanged.
    let (s, body) = b_admin
        .call(
            Method::PATCH,
            &format!("/crypto/v1/keys/{copy}"),
            Some(json!({"key_ops": ["ENCRYPT", "DECRYPT"]})),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("source"),
        "{body}"
    );
    let now = admin
        .ok(Method::GET, &format!("/crypto/v1/keys/{copy}"), None)
        .await;
    assert_eq!(now["key_ops"], json!(["ENCRYPT"]));

    // A copy narrowed at copy time may get back what its source has, and no more.
    let both = kid(&admin
        .create_key(json!({"name": "enc-dec", "group_id": a, "obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT", "DECRYPT"]}))
        .await);
    let narrow = kid(&admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/copy",
            Some(json!({"key": {"kid": both}, "group_id": b, "name": "narrow", "key_ops": ["ENCRYPT"]})),
        )
        .await);
    let widened = b_admin
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{narrow}"),
            Some(json!({"key_ops": ["ENCRYPT", "DECRYPT"]})),
        )
        .await;
    assert_eq!(widened["key_ops"], json!(["ENCRYPT", "DECRYPT"]));
    let (s, body) = b_admin
        .call(
            Method::PATCH,
            &format!("/crypto/v1/keys/{narrow}"),
            Some(json!({"key_ops": ["ENCRYPT", "DECRYPT", "WRAPKEY"]})),
        )
        .await;
    assert_eq!(s, 403, "{body}");
}

#[tokio::test]
async fn export_reaches_an_application_only_where_users_may_export() {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let closed = admin.create_group("closed", json!({})).await;
    let open = admin
        .create_group("open", json!({"user_export": true}))
        .await;
    let (_, g_admin) = user(
        &d,
        &admin,
        "g-admin@example.com",
        json!({&closed: "administrator", &open: "administrator"}),
    )
    .await;

    // Asked for explicitly where users may not export: refused, nothing made.
    let (s, body) = g_admin
        .call(
            Method::POST,
            "/sys/v1/apps",
            Some(json!({"name": "exfil", "add_groups": {&closed: ["ENCRYPT", "EXPORT"]}})),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("EXPORT"),
        "{body}"
    );
    let apps = admin.ok(Method::GET, "/sys/v1/apps", None).await;
    assert!(!apps.to_string().contains("exfil"));

    // The short form gives every permission the caller may grant: EXPORT only where the
    // group allows users to export.
    let app = g_admin
        .ok(
            Method::POST,
            "/sys/v1/apps",
            Some(json!({"name": "plain", "groups": [&closed, &open]})),
        )
        .await;
    let perms = &app["groups"];
    assert!(!perms[&closed].to_string().contains("EXPORT"), "{app}");
    assert!(perms[&open].to_string().contains("EXPORT"), "{app}");
    let app_id = app["app_id"].as_str().unwrap();

    // Nor can it be added later, by mod_groups.
    let (s, body) = g_admin
        .call(
            Method::PATCH,
            &format!("/sys/v1/apps/{app_id}"),
            Some(json!({"mod_groups": {&closed: ["ENCRYPT", "EXPORT"]}})),
        )
        .await;
    assert_eq!(s, 403, "{body}");

    // An account administrator grants it anywhere.
    let granted = admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/apps/{app_id}"),
            Some(json!({"mod_groups": {&closed: ["ENCRYPT", "EXPORT"]}})),
        )
        .await;
    assert!(granted["groups"][&closed].to_string().contains("EXPORT"));
}

#[tokio::test]
async fn webhooks_and_jobs_start_only_what_their_owner_may_start_now() {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("g", json!({})).await;
    let (g_admin_id, g_admin) = user(
        &d,
        &admin,
        "hooks@example.com",
        json!({&g: "administrator"}),
    )
    .await;
    let (_, api_key) = admin.create_app("manager", &[&g]).await;
    let app = d.login_app(&api_key).await;

    // A group administrator may not run `update` by hand, so cannot bind a webhook or a
    // job to it; an application with MANAGE cannot bind one to `purge`.
    for (who, name, workflow) in [
        (&g_admin, "undo", "update"),
        (&g_admin, "wipe", "purge"),
        (&app, "purger", "purge"),
    ] {
        let (s, body) = who
            .call(
                Method::POST,
                "/sys/v1/webhooks",
                Some(json!({"name": name, "workflow": workflow, "group_id": g})),
            )
            .await;
        assert_eq!(s, 403, "{name}: {body}");
        let (s, body) = who
            .call(
                Method::POST,
                "/sys/v1/jobs",
                Some(
                    json!({"name": name, "workflow": workflow, "cron": "0 3 * * *", "group_id": g}),
                ),
            )
            .await;
        assert!(matches!(s, 400 | 403), "{name}: {s} {body}");
    }
    let (s, _) = g_admin
        .call(
            Method::POST,
            "/sys/v1/workflows/soft_delete/run",
            Some(json!({"group_id": g})),
        )
        .await;
    assert_eq!(s, 403);

    // The group's own sync it may bind; a delivery runs with the owner's rights at that
    // moment, so once the owner no longer administers the group, deliveries stop.
    let hook = g_admin
        .ok(
            Method::POST,
            "/sys/v1/webhooks",
            Some(json!({"name": "resync", "workflow": "sync", "group_id": g})),
        )
        .await;
    let secret = Secret::parse(hook["secret"].as_str().unwrap()).unwrap();
    let path = hook["path"].as_str().unwrap().to_string();
    let deliver = |id: &'static str| {
        let (url, secret) = (format!("{}{path}", d.url), &secret);
        let now = d.clock.now();
        let body = b"{}";
        async move {
            let r = http_client()
                .post(url)
                .header("webhook-id", id)
                .header("webhook-timestamp", now.to_string())
                .header("webhook-signature", secret.sign(id, now, body))
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (s, body) = deliver("msg_1").await;
    assert_eq!(s, 202, "{body}");
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/users/{g_admin_id}"),
            Some(json!({"del_groups": [&g]})),
        )
        .await;
    let (s, body) = deliver("msg_2").await;
    assert_eq!(s, 403, "{body}");
    let refused = events(&admin, "webhook.deliver", hook["id"].as_str().unwrap()).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["outcome"], "denied");

    // Names are the account's own: another account takes the same name (its own path)...
    let acct_b = admin.create_account("B").await;
    let theirs = admin
        .ok(
            Method::POST,
            "/sys/v1/webhooks",
            Some(json!({"name": "resync", "workflow": "sync"})),
        )
        .await;
    assert_ne!(theirs["path"], hook["path"]);
    assert!(theirs["path"].as_str().unwrap().contains(&acct_b));
    // ...and a delivery to a name that does not exist answers as a bad signature does.
    let (s, unknown) = {
        let url = format!("{}{}", d.url, path.replace("resync", "nothing-here"));
        let r = http_client().post(url).body("{}").send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let bad = http_client()
        .post(format!("{}{path}", d.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(s, 401);
    assert_eq!(bad.status().as_u16(), 401);
    assert_eq!(unknown, bad.json::<Value>().await.unwrap());
}

#[tokio::test]
async fn one_accounts_script_cannot_take_the_daemons_memory() {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    // 120 variables, each its own copy of a 1,000,000-element array (16 MB each).
    let mut hog = String::from("let a = [];\na.pad(1000000, 0);\n");
    for i in 0..120 {
        hog.push_str(&format!("let v{i} = a;\n"));
    }
    hog.push_str("output.n = v119.len();\n");
    admin
        .ok(
            Method::PUT,
            "/sys/v1/workflows/hog",
            Some(json!({"source": hog})),
        )
        .await;
    let run = admin
        .ok(Method::POST, "/sys/v1/workflows/hog/run", Some(json!({})))
        .await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"].as_str().unwrap().contains("memory limit"),
        "{run}"
    );
    // The process never held what the script asked for (120 x 16 MB): its peak stays far
    // below, whatever the other tests of this binary hold meanwhile.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    assert!(peak_kib < 1 << 20, "peak RSS {peak_kib} KiB");
    // The daemon goes on, and a script within its budget runs.
    admin
        .ok(
            Method::PUT,
            "/sys/v1/workflows/small",
            Some(json!({"source": "let a = [];\na.pad(1000, 0);\noutput.n = a.len();\n"})),
        )
        .await;
    let run = admin
        .ok(Method::POST, "/sys/v1/workflows/small/run", Some(json!({})))
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"]["n"], 1000);
}

#[tokio::test]
async fn metrics_labels_come_from_bounded_sets() {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("metered", json!({})).await;
    let http = http_client();
    for i in 0..50 {
        let method = Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        http.request(method, format!("{}/sys/v1/health", d.url))
            .send()
            .await
            .unwrap();
    }
    // An account's own script reports a counter of its choosing, in a run for its group.
    admin
        .ok(
            Method::PUT,
            "/sys/v1/workflows/tattle",
            Some(json!({"source": "progress(#{ secret_customer_name: 1 });\n"})),
        )
        .await;
    admin
        .ok(
            Method::POST,
            "/sys/v1/workflows/tattle/run",
            Some(json!({"group_id": g})),
        )
        .await;
    let text = d.metrics().await;
    assert!(!text.contains("MADEUP"), "made-up methods make no series");
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(!text.contains("secret_customer_name"));
    assert!(
        !text.contains("tattle"),
        "account scripts are counted as `account`"
    );
    assert!(text.contains("workflow=\"account\""));
    assert!(!text.contains(&g), "no group id in any label");
}

#[tokio::test]
async fn a_notification_endpoint_cannot_reach_an_internal_address_by_name() {
    let d = TestDaemon::start_with(|c| {
        c.notify.allowed_hosts = vec![
            keyward::plugins::HostPattern::parse("http://localhost:*").unwrap(),
            keyward::plugins::HostPattern::parse("http://127.0.0.2:*").unwrap(),
        ];
    })
    .await;
    let admin = d.bootstrap().await;
    // `localhost` is allowed by name, but it resolves to loopback, which the allowlist does
    // not name: refused.
    let (s, body) = admin
        .call(
            Method::POST,
            "/sys/v1/notification_endpoints",
            Some(json!({"url": "http://localhost:19150/hook"})),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("internal"),
        "{body}"
    );
    // A loopback address named explicitly is allowed; another one is not.
    let (s, body) = admin
        .call(
            Method::POST,
            "/sys/v1/notification_endpoints",
            Some(json!({"url": "http://127.0.0.2:19150/hook"})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = admin
        .call(
            Method::POST,
            "/sys/v1/notification_endpoints",
            Some(json!({"url": "http://127.0.0.1:19150/hook"})),
        )
        .await;
    assert_eq!(s, 403, "{body}");
}

/// Enables a key in the HSM behind Keyward's back, as someone with access to Azure could.
async fn enable_in_hsm(az: &Azure, name: &str) {
    let req = keyward::plugins::kms::UpdateRequest {
        enabled: Some(true),
        not_before: None,
        expires: None,
        ops: None,
        tags: None,
    };
    let key = keyward::plugins::kms::KeyRef {
        name: name.into(),
        version: None,
    };
    az.daemon
        .state
        .kms
        .update_key(&az.link().await, &key, &req)
        .await
        .unwrap();
}

#[tokio::test]
async fn nothing_from_the_hsm_a_webhook_or_a_restore_re_enables_a_key() {
    let az = Azure::start().await;
    let key = az
        .admin
        .create_key(
            json!({"name": "burned", "group_id": az.group, "obj_type": "AES", "key_size": 256}),
        )
        .await;
    let burned = kid(&key);
    az.admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{burned}/revoke"),
            Some(json!({"code": "KeyCompromise"})),
        )
        .await;
    assert!(!az.remote("burned").await.unwrap().properties.enabled);

    // A webhook bound to `update`, even an account administrator's, cannot enable it.
    let hook = az
        .admin
        .ok(
            Method::POST,
            "/sys/v1/webhooks",
            Some(json!({"name": "enabler", "workflow": "update", "group_id": az.group})),
        )
        .await;
    let secret = Secret::parse(hook["secret"].as_str().unwrap()).unwrap();
    let body =
        serde_json::to_vec(&json!({"azure_name": "burned", "changes": {"enabled": true}})).unwrap();
    let now = az.daemon.clock.now();
    let r = http_client()
        .post(format!(
            "{}{}",
            az.daemon.url,
            hook["path"].as_str().unwrap()
        ))
        .header("webhook-id", "msg_1")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", secret.sign("msg_1", now, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let run_id = r.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = eventually(30, || async {
        let run = az
            .admin
            .ok(
                Method::GET,
                &format!("/sys/v1/workflow_runs/{run_id}"),
                None,
            )
            .await;
        (run["status"] != "running").then_some(run)
    })
    .await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(!az.remote("burned").await.unwrap().properties.enabled);

    // Enabled in Azure behind Keyward's back: a sync of the key puts it back and says so.
    for how in ["sync_key", "sync"] {
        enable_in_hsm(&az, "burned").await;
        let run = az
            .admin
            .ok(
                Method::POST,
                &format!("/sys/v1/workflows/{how}/run"),
                Some(json!({"group_id": az.group, "input": {"azure_name": "burned"}})),
            )
            .await;
        assert_eq!(run["status"], "succeeded", "{how}: {run}");
        assert!(
            !az.remote("burned").await.unwrap().properties.enabled,
            "{how} put it back"
        );
        let now = az
            .admin
            .ok(Method::GET, &format!("/crypto/v1/keys/{burned}"), None)
            .await;
        assert_eq!(now["state"], "Compromised");
        assert_eq!(now["enabled"], false, "{how}: {now}");
    }
    assert_eq!(events(&az.admin, "key.drift", &burned).await.len(), 2);

    // Restore from escrow (F21) of a deactivated key: the backup was taken while it was
    // enabled; what comes back is disabled again.
    let key = az
        .admin
        .create_key(
            json!({"name": "retired", "group_id": az.group, "obj_type": "AES", "key_size": 256}),
        )
        .await;
    let retired = kid(&key);
    let path = |what: &str| format!("/crypto/v1/keys/{retired}/{what}");
    az.admin.ok(Method::POST, &path("deactivate"), None).await;
    az.admin
        .ok(
            Method::POST,
            &path("schedule_deletion"),
            Some(json!({"confirm": true})),
        )
        .await;
    az.em.advance_clock(91 * 86_400);
    az.sync().await;
    let restored = az.admin.ok(Method::POST, &path("restore"), None).await;
    assert_eq!(restored["state"], "Deactivated");
    assert_eq!(restored["enabled"], false, "{restored}");
    assert!(!az.remote("retired").await.unwrap().properties.enabled);
    assert_eq!(events(&az.admin, "key.drift", &retired).await.len(), 1);
    settle(&az.admin).await;
}

#[tokio::test]
async fn a_rotation_that_fails_changes_nothing_and_a_synced_aes_key_rotates_to_keyward() {
    let az = Azure::start().await;
    let key = az
        .admin
        .create_key(
            json!({"name": "steady", "group_id": az.group, "obj_type": "AES", "key_size": 256}),
        )
        .await;
    let steady = kid(&key);
    // The account's `rotate` fails.
    az.admin
        .ok(
            Method::PUT,
            "/sys/v1/workflows/rotate",
            Some(json!({"source": "throw \"the HSM is in maintenance\";\n"})),
        )
        .await;
    let (s, body) = az
        .admin
        .call(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"kid": steady, "rotation_policy": {"interval_days": 7}})),
        )
        .await;
    assert!(s >= 400, "{s} {body}");
    let now = az
        .admin
        .ok(Method::GET, &format!("/crypto/v1/keys/{steady}"), None)
        .await;
    assert!(now["rotation_policy"].is_null(), "{now}");
    assert!(
        events(&az.admin, "key.rotation_policy", &steady)
            .await
            .is_empty()
    );
    az.admin
        .ok(Method::DELETE, "/sys/v1/workflows/rotate", None)
        .await;

    // With the shipped script, the policy comes with the new version, audited.
    let rotated = az
        .admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"kid": steady, "rotation_policy": {"interval_days": 7}})),
        )
        .await;
    let new = kid(&rotated);
    assert!(!rotated["rotation_policy"].is_null(), "{rotated}");
    assert_eq!(
        events(&az.admin, "key.rotation_policy", &new).await.len(),
        1
    );

    // F26 with a synced AES key, whose size Azure does not report.
    az.seed(HSM, json!({"count": 1, "prefix": "synced"})).await;
    let added = az.sync().await;
    let synced = added
        .iter()
        .find(|k| k["name"].as_str().unwrap().starts_with("synced"))
        .expect("the seeded key");
    let synced = kid(synced);
    let source = kid(&az
        .admin
        .create_key(json!({"name": "material", "group_id": az.plain_group, "obj_type": "AES", "key_size": 256}))
        .await);
    let r = az
        .admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"kid": synced, "rotate_from": {"kid": source}})),
        )
        .await;
    assert_eq!(r["key_size"], 256, "{r}");
    settle(&az.admin).await;
}

#[tokio::test]
async fn a_run_acts_only_on_the_keys_it_was_started_for() {
    let az = Azure::start().await;
    for name in ["mine", "bystander"] {
        az.admin
            .create_key(
                json!({"name": name, "group_id": az.group, "obj_type": "AES", "key_size": 256}),
            )
            .await;
    }
    let mine = az
        .admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/info",
            Some(json!({"name": "mine"})),
        )
        .await;
    // The account's own soft delete also deletes another key of the group.
    az.admin
        .ok(
            Method::PUT,
            "/sys/v1/workflows/soft_delete",
            Some(json!({"source": "hsm::delete_key(\"bystander\");\nhsm::delete_key(input.azure_name);\n"})),
        )
        .await;
    let (s, body) = az
        .admin
        .call(
            Method::POST,
            &format!("/crypto/v1/keys/{}/schedule_deletion", kid(&mine)),
            Some(json!({"confirm": true})),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("acts on the keys it was started for"),
        "{body}"
    );
    assert!(az.remote("bystander").await.is_some());
    assert!(az.remote("mine").await.is_some());
    // The shipped script deletes the key it was started for.
    az.admin
        .ok(Method::DELETE, "/sys/v1/workflows/soft_delete", None)
        .await;
    az.admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{}/schedule_deletion", kid(&mine)),
            Some(json!({"confirm": true})),
        )
        .await;
    assert!(az.remote("mine").await.is_none());
    assert!(az.remote("bystander").await.is_some());
}
