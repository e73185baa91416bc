//! Key lifecycle and policies through the API: states follow the dates, activate, deactivate,
//! revoke, destroy, delete; listing filters; policy enforcement with its modes visible in
//! responses and in the audit log (FLOWS F5, F6, F27, F28).

use keyward_tests::api::{Api, TestDaemon, b64, log_entries, unb64};
use reqwest::Method;
use serde_json::{Value, json};

const DAY: i64 = 86_400;

async fn setup(group_extra: Value) -> (TestDaemon, Api, Api, String) {
    let (d, admin, app, g, _) = setup_with_key(group_extra).await;
    (d, admin, app, g)
}

/// Also returns the application's API key, to log in again after moving the clock.
async fn setup_with_key(group_extra: Value) -> (TestDaemon, Api, Api, String, String) {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("life", group_extra).await;
    let (_, key) = admin.create_app("life-app", &[&g]).await;
    let app = d.login_app(&key).await;
    (d, admin, app, g, key)
}

fn dsm_time(secs: i64) -> String {
    keyward::time::format_dsm(secs)
}

#[tokio::test]
async fn states_follow_dates_and_lifecycle_calls() {
    let (d, _admin, app, _, api_key) = setup_with_key(json!({})).await;
    let now = d.clock.now();
    let key = app
        .create_key(json!({"name": "dated", "obj_type": "AES", "key_size": 256, "activation_date": dsm_time(now + DAY), "deactivation_date": dsm_time(now + 10 * DAY)}))
        .await;
    let kid = key["kid"].as_str().unwrap().to_string();
    let path = format!("/crypto/v1/keys/{kid}");
    let enc = json!({"alg": "AES", "plain": b64(b"data")});
    assert_eq!(key["state"], "PreActive");
    let (s, body) = app
        .call(Method::POST, &format!("{path}/encrypt"), Some(enc.clone()))
        .await;
    assert_eq!(s, 403, "a pre-active key cannot encrypt: {body}");

    d.clock.advance(2 * DAY);
    let app = d.login_app(&api_key).await;
    assert_eq!(app.ok(Method::GET, &path, None).await["state"], "Active");
    let ct = app
        .ok(Method::POST, &format!("{path}/encrypt"), Some(enc.clone()))
        .await;

    d.clock.advance(9 * DAY);
    let app = d.login_app(&api_key).await;
    assert_eq!(
        app.ok(Method::GET, &path, None).await["state"],
        "Deactivated"
    );
    assert_eq!(
        app.call(Method::POST, &format!("{path}/encrypt"), Some(enc.clone()))
            .await
            .0,
        403,
        "deactivated keys do not protect"
    );
    let back = json!({"alg": "AES", "cipher": ct["cipher"], "iv": ct["iv"], "tag": ct["tag"]});
    app.ok(Method::POST, &format!("{path}/decrypt"), Some(back.clone()))
        .await;

    // Activate refuses a deactivated key; destroy takes its material; the object stays.
    assert_eq!(
        app.call(Method::POST, &format!("{path}/activate"), None)
            .await
            .0,
        409
    );
    let destroyed = app.ok(Method::POST, &format!("{path}/destroy"), None).await;
    assert_eq!(destroyed["state"], "Destroyed");
    assert_eq!(
        app.call(Method::POST, &format!("{path}/decrypt"), Some(back))
            .await
            .0,
        403
    );
    assert_eq!(
        app.call(Method::PATCH, &path, Some(json!({"description": "x"})))
            .await
            .0,
        409
    );

    // Revoke for compromise; destroy only after deactivation or revocation; delete.
    let k2 = app
        .create_key(json!({"name": "revoked", "obj_type": "AES", "key_size": 128}))
        .await;
    let p2 = format!("/crypto/v1/keys/{}", k2["kid"].as_str().unwrap());
    assert_eq!(
        app.call(Method::POST, &format!("{p2}/destroy"), None)
            .await
            .0,
        409,
        "an active key is not destroyed"
    );
    let r = app
        .ok(
            Method::POST,
            &format!("{p2}/revoke"),
            Some(json!({"code": "KeyCompromise", "message": "laptop stolen"})),
        )
        .await;
    assert_eq!(r["state"], "Compromised");
    assert_eq!(r["revocation_reason"], "KeyCompromise: laptop stolen");
    assert_eq!(
        app.call(
            Method::POST,
            &format!("{p2}/revoke"),
            Some(json!({"code": "Whatever"}))
        )
        .await
        .0,
        400
    );
    let (s, _) = app.call(Method::DELETE, &p2, None).await;
    assert_eq!(s, 204);
    assert_eq!(app.call(Method::GET, &p2, None).await.0, 404);

    // Deactivate now; a disabled key is refused.
    let k3 = app
        .create_key(json!({"name": "third", "obj_type": "AES", "key_size": 128}))
        .await;
    let p3 = format!("/crypto/v1/keys/{}", k3["kid"].as_str().unwrap());
    app.ok(Method::PATCH, &p3, Some(json!({"enabled": false})))
        .await;
    let (s, body) = app
        .call(Method::POST, &format!("{p3}/encrypt"), Some(enc.clone()))
        .await;
    assert_eq!(s, 403);
    assert!(body["message"].as_str().unwrap().contains("disabled"));
    assert_eq!(
        app.ok(Method::POST, &format!("{p3}/deactivate"), None)
            .await["state"],
        "Deactivated"
    );
}

#[tokio::test]
async fn listing_filters_pages_and_sorts() {
    let (_d, admin, app, g) = setup(json!({})).await;
    for i in 0..7 {
        app.create_key(json!({"name": format!("key-{i}"), "obj_type": "AES", "key_size": 128}))
            .await;
    }
    let other = admin.create_group("other", json!({})).await;
    admin.create_key(json!({"name": "elsewhere", "group_id": other, "obj_type": "EC", "elliptic_curve": "NistP256"})).await;
    app.ok(
        Method::POST,
        "/crypto/v1/keys/info",
        Some(json!({"name": "key-3"})),
    )
    .await;
    let names = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };

    let page = admin
        .ok(
            Method::GET,
            &format!("/crypto/v1/keys?group_id={g}&limit=3&offset=2"),
            None,
        )
        .await;
    assert_eq!(names(&page), ["key-2", "key-3", "key-4"]);
    let desc = admin
        .ok(
            Method::GET,
            &format!("/crypto/v1/keys?group_id={g}&sort=name:desc&limit=2"),
            None,
        )
        .await;
    assert_eq!(names(&desc), ["key-6", "key-5"]);
    let by_name = admin
        .ok(Method::GET, "/crypto/v1/keys?name=elsewhere", None)
        .await;
    assert_eq!(names(&by_name), ["elsewhere"]);
    let kid = admin
        .ok(Method::GET, "/crypto/v1/keys?name=key-5", None)
        .await[0]["kid"]
        .as_str()
        .unwrap()
        .to_string();
    admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/deactivate"),
            None,
        )
        .await;
    let deactivated = admin
        .ok(Method::GET, "/crypto/v1/keys?state=Deactivated", None)
        .await;
    assert_eq!(names(&deactivated), ["key-5"]);
    let active = admin
        .ok(Method::GET, "/crypto/v1/keys?state=Active", None)
        .await;
    assert_eq!(active.as_array().unwrap().len(), 7);
}

#[tokio::test]
async fn policies_deny_warn_and_dry_run_visibly() {
    let crypto = json!({"mode": "enforce", "aes": {"key_sizes": [256]}, "rsa": {"minimum_key_length": 3072}});
    let metadata =
        json!({"mode": "warn", "base": {"custom_metadata": {"owner": {"required": {}}}}});
    let (d, admin, app, g) =
        setup(json!({"cryptographic_policy": crypto, "key_metadata_policy": metadata})).await;

    // Enforced crypto policy: denied with the rule.
    let (s, body) = app
        .call(
            Method::POST,
            "/crypto/v1/keys",
            Some(json!({"name": "small", "obj_type": "AES", "key_size": 128})),
        )
        .await;
    assert_eq!(s, 403);
    assert_eq!(body["code"], "PolicyViolation");
    assert_eq!(body["violations"][0]["rule"], "aes.key-size");
    assert_eq!(body["violations"][0]["policy"], "group crypto policy");

    // Warn-mode metadata policy: allowed, with the warning in the response.
    let key = app
        .create_key(json!({"name": "no-owner", "obj_type": "AES", "key_size": 256}))
        .await;
    assert_eq!(
        key["policy_warnings"][0]["rule"],
        "custom-metadata.owner.required"
    );
    let clean = app.create_key(json!({"name": "owned", "obj_type": "AES", "key_size": 256, "custom_metadata": {"owner": "payments"}})).await;
    assert!(clean.get("policy_warnings").is_none());

    // Updates are checked too: removing the owner warns, adding EXPORT to RSA... not RSA here.
    let kid = clean["kid"].as_str().unwrap();
    let upd = app
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{kid}"),
            Some(json!({"custom_metadata": {}})),
        )
        .await;
    assert_eq!(
        upd["policy_warnings"][0]["rule"],
        "custom-metadata.owner.required"
    );
    // Tag edits leave the other tags and meet the same policy.
    let edited = app
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{kid}"),
            Some(json!({"custom_metadata_edits": {"set": {"owner": "risk", "env": "prod"}}})),
        )
        .await;
    assert_eq!(
        edited["custom_metadata"],
        json!({"owner": "risk", "env": "prod"})
    );
    assert!(edited.get("policy_warnings").is_none(), "{edited}");
    let edited = app
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{kid}"),
            Some(json!({"custom_metadata_edits": {"remove": ["owner"]}})),
        )
        .await;
    assert_eq!(edited["custom_metadata"], json!({"env": "prod"}));
    assert_eq!(
        edited["policy_warnings"][0]["rule"],
        "custom-metadata.owner.required"
    );
    let (s, body) = app
        .call(
            Method::PATCH,
            &format!("/crypto/v1/keys/{kid}"),
            Some(json!({"custom_metadata": {}, "custom_metadata_edits": {"remove": ["env"]}})),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["field"], "custom_metadata_edits");

    // An account-wide dry-run policy records without denying.
    let accounts = admin.ok(Method::GET, "/sys/v1/accounts", None).await;
    let acct = accounts[0]["acct_id"].as_str().unwrap();
    admin.ok(Method::PATCH, &format!("/sys/v1/accounts/{acct}"), Some(json!({"cryptographic_policy": {"mode": "dry_run", "aes": {"key_sizes": [192]}, "rsa": {}, "ec": {}}}))).await;
    let key = app.create_key(json!({"name": "dry", "obj_type": "AES", "key_size": 256, "custom_metadata": {"owner": "x"}})).await;
    assert!(
        key.get("policy_warnings").is_none(),
        "dry-run findings are not shown: {key}"
    );

    // Crypto operations consult the policy: a key made before the policy tightened is a legacy key.
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/accounts/{acct}"),
            Some(json!({"cryptographic_policy": "remove"})),
        )
        .await;
    admin.ok(Method::PATCH, &format!("/sys/v1/groups/{g}"), Some(json!({"cryptographic_policy": {"aes": {"key_sizes": [256]}, "key_ops": ["DECRYPT"], "legacy_policy": "unprotect_only"}}))).await;
    let (s, body) = app
        .call(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/encrypt"),
            Some(json!({"alg": "AES", "plain": b64(b"x")})),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["code"], "PolicyViolation");

    // Invalid policy documents are refused when attached, naming the problem.
    let (s, body) = admin
        .call(
            Method::PATCH,
            &format!("/sys/v1/groups/{g}"),
            Some(json!({"cryptographic_policy": {"aes": {"key_sizes": [100]}}})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(body["field"], "cryptographic_policy");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("100 is not an AES key size")
    );
    let (s, _) = admin
        .call(
            Method::PATCH,
            &format!("/sys/v1/groups/{g}"),
            Some(json!({"custom_policies": [{"plugin": "no-such-plugin", "config": {}}]})),
        )
        .await;
    assert_eq!(s, 400);

    // The audit log shows the denial, the warnings and the dry-run findings.
    let log = admin
        .ok(Method::GET, "/sys/v1/logs?action=key.*&size=1000", None)
        .await;
    let events = log_entries(&log);
    let denied: Vec<&Value> = events.iter().filter(|e| e["outcome"] == "denied").collect();
    assert!(denied.iter().any(|e| e["action"] == "key.create"
        && e["details"]["policy"]["violations"][0]["rule"] == "aes.key-size"));
    assert!(denied.iter().any(|e| e["action"] == "key.encrypt"));
    assert!(
        events
            .iter()
            .any(|e| e["details"]["policy"]["warnings"][0]["rule"]
                == "custom-metadata.owner.required")
    );
    assert!(
        events
            .iter()
            .any(|e| e["details"]["policy"]["dry_run"][0]["rule"] == "aes.key-size"),
        "dry-run recorded: {log}"
    );
    let only_denied = admin
        .ok(Method::GET, "/sys/v1/logs?outcome=denied", None)
        .await;
    let only_denied = log_entries(&only_denied);
    assert!(!only_denied.is_empty());
    assert!(only_denied.iter().all(|e| e["outcome"] == "denied"));
    let _ = d;
}

#[tokio::test]
async fn the_openapi_document_describes_the_api() {
    let d = TestDaemon::start().await;
    let doc = d
        .anonymous()
        .ok(Method::GET, "/sys/v1/openapi.json", None)
        .await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/sys/v1/session/auth",
        "/crypto/v1/keys",
        "/crypto/v1/keys/{kid}/encrypt",
        "/sys/v1/groups/{id}",
        "/sys/v1/logs",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
    assert!(doc["components"]["schemas"]["SobjectOut"].is_object());
    // Every `{parameter}` of every path is declared, so that generated clients and fuzzers
    // can fill it in.
    let mut undeclared = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let wanted: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for (method, op) in ops.as_object().unwrap() {
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            for w in &wanted {
                if !declared.contains(w) {
                    undeclared.push(format!("{method} {path}: {w}"));
                }
            }
        }
    }
    assert!(
        undeclared.is_empty(),
        "undeclared path parameters:\n{}",
        undeclared.join("\n")
    );

    // Golden file: a change of the document is a change of the API, made on purpose.
    // `KEYWARD_BLESS=1 cargo test -p keyward-tests --test api_lifecycle openapi` rewrites it.
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/openapi.json");
    let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var_os("KEYWARD_BLESS").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).expect("tests/fixtures/openapi.json");
    assert!(
        expected == text,
        "the OpenAPI document changed; review the difference (git diff after blessing) and \
         rerun with KEYWARD_BLESS=1 to accept it"
    );
}

/// What DSM clients call that DSM has always had: the version, the export of a key by id,
/// and 405 with `Allow` for a wrong method.
#[tokio::test]
async fn dsm_clients_find_the_version_export_by_id_and_405() {
    let (d, admin, app, _, _) = setup_with_key(json!({})).await;
    let version: Value = keyward_tests::api::http_client()
        .get(format!("{}/sys/v1/version", d.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["server_mode"], "Software");
    assert!(version["api_version"].is_string());

    let key = app
        .create_key(json!({"name": "exportable", "obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT", "EXPORT"]}))
        .await;
    // DSM's closed set of origins: generated here reads as DSM's own.
    assert_eq!(key["origin"], "FortanixHSM");
    let kid = key["kid"].as_str().unwrap();
    let by_id = app
        .ok(Method::GET, &format!("/crypto/v1/keys/{kid}/export"), None)
        .await;
    let by_body = app
        .ok(
            Method::POST,
            "/crypto/v1/keys/export",
            Some(json!({"kid": kid})),
        )
        .await;
    assert_eq!(by_id["value"], by_body["value"]);
    assert_eq!(unb64(&by_id["value"]).len(), 32);
    let plain = app
        .create_key(
            json!({"name": "kept", "obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT"]}),
        )
        .await;
    let (s, body) = app
        .call(
            Method::GET,
            &format!("/crypto/v1/keys/{}/export", plain["kid"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.get("value").is_none());
    let (s, _) = admin
        .call(Method::GET, &format!("/crypto/v1/keys/{kid}/export"), None)
        .await;
    assert_eq!(s, 403, "users export only where the group allows it");

    let r = keyward_tests::api::http_client()
        .put(format!("{}/sys/v1/groups", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let allow = r.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("method"),
        "{body}"
    );
}

/// DSM's account flags in and out: `account_role` is a list as DSM clients read it, and a
/// role can be given that way too.
#[tokio::test]
async fn account_roles_are_dsm_flags_on_the_wire() {
    let (_d, admin, _app, _, _) = setup_with_key(json!({})).await;
    let invited = admin
        .ok(
            Method::POST,
            "/sys/v1/users/invite",
            Some(
                json!({"user_email": "flags@example.com", "user_password": "long enough pw 1",
                "account_role": ["ACCOUNTAUDITOR", "STATEENABLED"]}),
            ),
        )
        .await;
    assert_eq!(
        invited["account_role"],
        json!(["ACCOUNTAUDITOR", "STATEENABLED"])
    );
    let id = invited["user_id"].as_str().unwrap();
    let changed = admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/users/{id}"),
            Some(json!({"account_role": "member"})),
        )
        .await;
    assert_eq!(
        changed["account_role"],
        json!(["ACCOUNTMEMBER", "STATEENABLED"])
    );
    for bad in [
        json!(["ACCOUNTMEMBER", "ACCOUNTAUDITOR"]),
        json!(["SUPERUSER"]),
        json!([]),
    ] {
        let (s, body) = admin
            .call(
                Method::PATCH,
                &format!("/sys/v1/users/{id}"),
                Some(json!({"account_role": bad})),
            )
            .await;
        assert_eq!(s, 400, "{bad}: {body}");
        assert_eq!(body["field"], "account_role", "{body}");
    }
    let me = admin.ok(Method::GET, "/sys/v1/users", None).await;
    assert!(
        me.as_array()
            .unwrap()
            .iter()
            .any(|u| u["account_role"] == json!(["ACCOUNTADMINISTRATOR", "STATEENABLED"])),
        "{me}"
    );
}

/// An application's credential can be read again by whoever manages it (DSM programs get an
/// API key that way); each read is in the audit log.
#[tokio::test]
async fn an_apps_credential_is_readable_by_its_managers_only() {
    let (d, admin, app, g, api_key) = setup_with_key(json!({})).await;
    let app_id = app.ok(Method::GET, "/sys/v1/apps", None).await[0]["app_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/sys/v1/apps/{app_id}/credential");
    let cred = admin.ok(Method::GET, &path, None).await;
    assert_eq!(cred["app_id"], app_id.as_str());
    assert_eq!(cred["credential"]["api_key"], api_key.as_str());
    let secret = cred["credential"]["secret"].as_str().unwrap();
    assert!(
        String::from_utf8(unb64(&json!(api_key))).unwrap() == format!("{app_id}:{secret}"),
        "the API key is base64 of app_id:secret"
    );
    // The key read back logs in.
    d.login_app(cred["credential"]["api_key"].as_str().unwrap())
        .await
        .ok(Method::GET, "/crypto/v1/keys", None)
        .await;

    // Not the application itself, nor a member who does not manage its group.
    let (s, _) = app.call(Method::GET, &path, None).await;
    assert_eq!(s, 403);
    admin
        .ok(
            Method::POST,
            "/sys/v1/users/invite",
            Some(
                json!({"user_email": "member@example.com", "user_password": "long enough pw 1",
                "account_role": "member", "groups": {g.clone(): "auditor"}}),
            ),
        )
        .await;
    let member = d.login("member@example.com", "long enough pw 1").await;
    let (s, body) = member.call(Method::GET, &path, None).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.get("credential").is_none());

    // After a reset the credential is the new key.
    let reset = admin
        .ok(
            Method::POST,
            &format!("/sys/v1/apps/{app_id}/reset_secret"),
            None,
        )
        .await;
    let cred = admin.ok(Method::GET, &path, None).await;
    assert_eq!(cred["credential"]["api_key"], reset["api_key"]);
    assert_ne!(cred["credential"]["api_key"], api_key.as_str());

    let mut conn = d.state.catalog.conn().await.unwrap();
    let reads: i64 = keyward::catalog::db::query(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'app.credential_read' AND object_id = ?",
    )
    .bind(&app_id)
    .fetch_one(&mut conn)
    .await
    .unwrap()
    .get(0);
    assert_eq!(reads, 2, "each read is recorded");
    // At rest the secret is sealed, never in the clear.
    let stored: Vec<u8> =
        keyward::catalog::db::query("SELECT api_secret_sealed FROM apps WHERE id = ?")
            .bind(&app_id)
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
    let new_secret = cred["credential"]["secret"].as_str().unwrap().as_bytes();
    assert!(!stored.windows(new_secret.len()).any(|w| w == new_secret));
}

/// `GET /sys/v1/logs` as DSM clients read it: `{hits: [{_id, _source}]}`, DSM's field names
/// and filters (lists by repeating a parameter), `from` as an offset, epoch ranges.
#[tokio::test]
async fn the_audit_log_reads_as_dsm_writes_it() {
    let (d, admin, app, g) = setup(json!({})).await;
    let k = app
        .create_key(json!({"name": "logged", "obj_type": "AES", "key_size": 256}))
        .await;
    let kid = k["kid"].as_str().unwrap();
    let enc = format!("/crypto/v1/keys/{kid}/encrypt");
    app.ok(
        Method::POST,
        &enc,
        Some(json!({"alg": "AES", "mode": "GCM", "plain": b64(b"x")})),
    )
    .await;
    let (s, _) = app
        .call(
            Method::POST,
            &enc,
            Some(json!({"alg": "AES", "mode": "GCM", "plain": b64(b"x"), "iv": b64(&[0u8; 3])})),
        )
        .await;
    assert_eq!(s, 400);
    // A wrong password is a refused login, audited.
    let refused_login = keyward_tests::api::http_client()
        .post(format!("{}/sys/v1/session/auth", d.url))
        .basic_auth(keyward_tests::api::ADMIN_EMAIL, Some("not the password"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused_login.status(), 401);

    let all = admin.ok(Method::GET, "/sys/v1/logs", None).await;
    let hits = all["hits"].as_array().unwrap();
    assert!(hits.len() >= 4, "{all}");
    let time = regex_lite_time();
    for h in hits {
        let e = &h["_source"];
        assert!(h["_id"].as_str().is_some_and(|i| !i.is_empty()), "{h}");
        for field in [
            "action_type",
            "actor_type",
            "message",
            "severity",
            "time",
            "actor_id",
        ] {
            assert!(e[field].is_string(), "{field} in {e}");
        }
        assert!(e["group_ids"].is_array(), "{e}");
        assert!(time(e["time"].as_str().unwrap()), "{e}");
    }
    let created = hits
        .iter()
        .map(|h| &h["_source"])
        .find(|e| e["action"] == "key.create")
        .unwrap();
    assert_eq!(created["action_type"], "ADMINISTRATIVE");
    assert_eq!(created["actor_type"], "App");
    assert_eq!(created["severity"], "INFO");
    assert_eq!(created["object_id"], kid);
    assert_eq!(created["group_ids"], json!([g]), "the key's group");

    let only = |q: &'static str| {
        let admin = admin.clone();
        async move {
            log_entries(
                &admin
                    .ok(Method::GET, &format!("/sys/v1/logs?{q}"), None)
                    .await,
            )
        }
    };
    let auth = only("action_type=AUTH").await;
    assert!(!auth.is_empty());
    assert!(
        auth.iter().all(|e| e["action"] == "session.auth"),
        "{auth:?}"
    );
    let crypto = only("action_type=CRYPTOOPERATION&severity=INFO").await;
    assert_eq!(crypto.len(), 1, "{crypto:?}");
    assert_eq!(crypto[0]["action"], "key.encrypt");
    let both = only("action_type=CRYPTOOPERATION&action_type=AUTH").await;
    assert_eq!(
        both.len(),
        auth.len() + only("action_type=CRYPTOOPERATION").await.len()
    );
    let refused = only("severity=WARNING&severity=ERROR").await;
    assert!(!refused.is_empty());
    assert!(
        refused.iter().all(|e| e["outcome"] != "success"),
        "{refused:?}"
    );
    assert!(only("severity=CRITICAL").await.is_empty());
    let users = only("actor_type=User").await;
    assert!(users.iter().all(|e| e["actor_type"] == "User") && !users.is_empty());

    // Paging: `size` and `from` (an offset), or `previous_id`; epoch time ranges.
    let first = admin.ok(Method::GET, "/sys/v1/logs?size=2", None).await;
    let second = admin
        .ok(Method::GET, "/sys/v1/logs?size=2&from=2", None)
        .await;
    assert_eq!(first["hits"].as_array().unwrap().len(), 2);
    assert_eq!(first["hits"][0]["_id"], hits[0]["_id"]);
    assert_eq!(second["hits"][0]["_id"], hits[2]["_id"]);
    let after = admin
        .ok(
            Method::GET,
            &format!(
                "/sys/v1/logs?size=1&previous_id={}",
                first["hits"][1]["_id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(after["hits"][0]["_id"], hits[2]["_id"]);
    let now = d.clock.now();
    assert_eq!(
        log_entries(
            &admin
                .ok(
                    Method::GET,
                    &format!("/sys/v1/logs?range_from={}", now + 10),
                    None
                )
                .await
        )
        .len(),
        0
    );
    assert_eq!(
        log_entries(
            &admin
                .ok(
                    Method::GET,
                    &format!("/sys/v1/logs?range_from={}&range_to={}", now - 60, now + 60),
                    None
                )
                .await
        )
        .len(),
        hits.len()
    );

    for q in [
        "action_type=EVERYTHING",
        "severity=LOUD",
        "size=1001",
        "from=-1",
        "previous_id=abc",
        "limit=5",
    ] {
        let (s, body) = admin
            .call(Method::GET, &format!("/sys/v1/logs?{q}"), None)
            .await;
        assert_eq!(s, 400, "{q}: {body}");
    }
    // Applications do not read the log.
    let (s, _) = app.call(Method::GET, "/sys/v1/logs", None).await;
    assert_eq!(s, 403);
}

/// `YYYY-MM-DDTHH:MM:SSZ`, DSM's audit time.
fn regex_lite_time() -> impl Fn(&str) -> bool {
    |t: &str| {
        let b = t.as_bytes();
        b.len() == 20
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                19 => *c == b'Z',
                _ => c.is_ascii_digit(),
            })
    }
}
