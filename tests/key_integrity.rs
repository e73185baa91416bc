//! The promises a key manager makes about its keys, tried the way a user, a script or a race
//! would break them: the material of a non-exportable key never comes out, copies never gain
//! operations, the lifecycle follows KMIP, applications manage only APPMANAGEABLE keys,
//! unwrapping under a key-encryption key is the KEK's cryptographic operation, concurrent
//! requests never undo each other, caches expire, the audit log loses nothing, and in a
//! linked group one HSM name gives one key and every change has exactly one audit event.

use std::collections::BTreeMap;

use keyward::catalog::sobjects::KeyState;
use keyward_emulator::FaultConfig;
use keyward_tests::api::{Api, TestDaemon, b64, catalog_snapshot, unb64};
use keyward_tests::azure::{Azure, settle};
use reqwest::Method;
use serde_json::{Value, json};

const DAY: i64 = 86_400;

struct World {
    d: TestDaemon,
    admin: Api,
    app: Api,
    /// The application's group, where users may not export.
    g: String,
    /// A second group of the application.
    g2: String,
}

async fn world() -> World {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("keys", json!({})).await;
    let g2 = admin.create_group("more keys", json!({})).await;
    let (_, key) = admin.create_app("app", &[&g, &g2]).await;
    let app = d.login_app(&key).await;
    World {
        d,
        admin,
        app,
        g,
        g2,
    }
}

fn kid(v: &Value) -> String {
    v["kid"].as_str().expect("a key").to_string()
}

fn denied(s: u16, body: &Value, what: &str) {
    assert!(matches!(s, 403 | 404), "{what}: {s} {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: the refusal says why: {body}"
    );
}

/// The sealed material column of a key (present or not).
async fn has_material(d: &TestDaemon, kid: &str) -> bool {
    let mut conn = d.state.catalog.conn().await.unwrap();
    keyward::catalog::db::query("SELECT material IS NOT NULL FROM sobjects WHERE kid = ?")
        .bind(kid)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0)
}

/// Successful `action`s on `object` in the audit log. Denied attempts are audited too, but
/// through the batched queue, so when they arrive depends on its flush.
async fn audit_count(d: &TestDaemon, action: &str, object: &str) -> i64 {
    let mut conn = d.state.catalog.conn().await.unwrap();
    keyward::catalog::db::query(
        "SELECT COUNT(*) FROM audit_events WHERE action = ? AND object_id = ? AND outcome = 'success'",
    )
        .bind(action)
        .bind(object)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_material_of_a_non_exportable_key_never_leaves() {
    let w = world().await;
    let (admin, app) = (&w.admin, &w.app);
    let k = app
        .create_key(json!({"name": "secret", "obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT", "DECRYPT", "APPMANAGEABLE"]}))
        .await;
    let k = kid(&k);
    assert_eq!(
        app.ok(Method::GET, &format!("/crypto/v1/keys/{k}"), None)
            .await["never_exportable"],
        true
    );
    let export = |who: &Api, kid: &str| {
        let (who, kid) = (who.clone(), kid.to_string());
        async move {
            who.call(
                Method::POST,
                "/crypto/v1/keys/export",
                Some(json!({"kid": kid})),
            )
            .await
        }
    };
    for who in [admin, app] {
        let (s, body) = export(who, &k).await;
        assert_eq!(s, 403, "{body}");
        assert!(body.get("value").is_none());
    }

    // The first reproduction: a copy that asks for EXPORT, into the same group.
    for who in [admin, app] {
        let (s, body) = who
            .call(
                Method::POST,
                "/crypto/v1/keys/copy",
                Some(json!({"key": {"kid": k}, "group_id": w.g, "key_ops": ["EXPORT", "ENCRYPT"]})),
            )
            .await;
        assert_eq!(s, 403, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("EXPORT"),
            "{body}"
        );
    }
    // A plain copy is fine, and as non-exportable as its source.
    let copy = app
        .ok(
            Method::POST,
            "/crypto/v1/keys/copy",
            Some(json!({"key": {"kid": k}, "group_id": w.g2})),
        )
        .await;
    assert_eq!(copy["never_exportable"], true);
    assert!(
        !copy["key_ops"]
            .as_array()
            .unwrap()
            .contains(&json!("EXPORT"))
    );
    let (s, _) = export(app, &kid(&copy)).await;
    assert_eq!(s, 403);

    // The second reproduction: an update that adds EXPORT.
    for who in [admin, app] {
        let (s, body) = who
            .call(
                Method::PATCH,
                &format!("/crypto/v1/keys/{k}"),
                Some(json!({"key_ops": ["EXPORT", "ENCRYPT", "DECRYPT", "APPMANAGEABLE"]})),
            )
            .await;
        assert_eq!(s, 403, "{body}");
        assert!(body["message"].as_str().unwrap().contains("EXPORT"));
    }
    let (s, _) = export(app, &k).await;
    assert_eq!(s, 403);

    // Under a key-encryption key, by a user: users do no cryptography, unwrapping included.
    let kek_bytes = [9u8; 32];
    let kek = app
        .ok(
            Method::PUT,
            "/crypto/v1/keys",
            Some(json!({"name": "kek", "obj_type": "AES", "value": b64(&kek_bytes), "key_ops": ["WRAPKEY", "UNWRAPKEY", "APPMANAGEABLE"]})),
        )
        .await;
    let kek = kid(&kek);
    let wrapped = keyward_crypto::aes_kw_wrap(&kek_bytes, &[5u8; 32], true).unwrap();
    let before = catalog_snapshot(&w.d).await;
    let (s, body) = admin
        .call(
            Method::PUT,
            "/crypto/v1/keys",
            Some(json!({"name": "smuggled", "group_id": w.g, "obj_type": "AES", "value": b64(&wrapped), "wrapped_by": {"kid": kek}})),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("users do not perform cryptographic operations")
    );
    let (s, body) = admin
        .call(
            Method::POST,
            &format!("/crypto/v1/keys/{kek}/unwrapkey"),
            Some(json!({"alg": "AES", "wrapped_key": b64(&wrapped), "obj_type": "AES", "name": "smuggled"})),
        )
        .await;
    denied(s, &body, "unwrap endpoint by a user");
    assert_eq!(before, catalog_snapshot(&w.d).await, "nothing changed");

    // Wrapped by another key, to unwrap elsewhere: wrapping is an export of the subject.
    for body in [
        json!({"alg": "AES", "subject": {"kid": k}}),
        json!({"alg": "AES", "subject": {"name": "secret"}, "mode": "KW"}),
    ] {
        let (s, reply) = app
            .call(
                Method::POST,
                &format!("/crypto/v1/keys/{kek}/wrapkey"),
                Some(body),
            )
            .await;
        assert_eq!(s, 403, "{reply}");
        assert!(reply.get("wrapped_key").is_none());
    }
    let (s, reply) = app
        .call(
            Method::POST,
            "/crypto/v1/wrapkey",
            Some(json!({"key": {"kid": kek}, "alg": "AES", "subject": {"kid": k}})),
        )
        .await;
    assert_eq!(s, 403, "{reply}");

    // A group that lets users export does not make the key exportable.
    let open = admin
        .create_group("open", json!({"user_export": true}))
        .await;
    let (s, _) = app
        .call(
            Method::POST,
            "/crypto/v1/keys/copy",
            Some(json!({"key": {"kid": k}, "group_id": open, "name": "in-open"})),
        )
        .await;
    assert_eq!(s, 403, "the application is not in that group");
    let moved = admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/copy",
            Some(json!({"key": {"kid": k}, "group_id": open, "name": "in-open"})),
        )
        .await;
    let (s, _) = export(admin, &kid(&moved)).await;
    assert_eq!(s, 403);

    // The key still works for what it permits, and its material is still only sealed.
    let e = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{k}/encrypt"),
            Some(json!({"alg": "AES", "plain": b64(b"still mine")})),
        )
        .await;
    let d = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{k}/decrypt"),
            Some(json!({"alg": "AES", "cipher": e["cipher"], "iv": e["iv"], "tag": e["tag"]})),
        )
        .await;
    assert_eq!(unb64(&d["plain"]), b"still mine");
}

#[tokio::test]
async fn the_catalog_itself_refuses_what_the_rules_forbid() {
    // Even a write that skipped the key service's checks cannot add EXPORT, bring material
    // back, or undo a compromise: the schema's triggers refuse it.
    let w = world().await;
    let k = kid(&w
        .app
        .create_key(json!({"name": "guarded", "obj_type": "AES", "key_size": 128}))
        .await);
    w.app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{k}/revoke"),
            Some(json!({"code": "KeyCompromise"})),
        )
        .await;
    let mut conn = w.d.state.catalog.conn().await.unwrap();
    for sql in [
        r#"UPDATE sobjects SET key_ops = '["ENCRYPT","EXPORT"]' WHERE kid = ?"#,
        "UPDATE sobjects SET never_exportable = NOT never_exportable WHERE kid = ?",
        "UPDATE sobjects SET compromise_date = NULL WHERE kid = ?",
        "UPDATE sobjects SET deactivation_date = NULL WHERE kid = ?",
        "UPDATE sobjects SET material = ? WHERE kid = ?",
    ] {
        let mut q = keyward::catalog::db::query(sql);
        if sql.contains("material") {
            q = q.bind(vec![0u8]);
        }
        let e = q.bind(&k).execute(&mut conn).await.expect_err(sql);
        assert!(e.to_string().contains("integrity:"), "{sql}: {e}");
    }
    drop(conn);
    w.app
        .ok(Method::POST, &format!("/crypto/v1/keys/{k}/destroy"), None)
        .await;
    let mut conn = w.d.state.catalog.conn().await.unwrap();
    for sql in [
        "UPDATE sobjects SET destruction_date = NULL WHERE kid = ?",
        "UPDATE sobjects SET material = ? WHERE kid = ?",
    ] {
        let mut q = keyward::catalog::db::query(sql);
        if sql.contains("material") {
            q = q.bind(vec![0u8]);
        }
        assert!(q.bind(&k).execute(&mut conn).await.is_err(), "{sql}");
    }
}

#[tokio::test]
async fn who_may_export_and_what_it_leaves_in_the_audit_log() {
    let w = world().await;
    let (admin, app) = (&w.admin, &w.app);
    let open = admin
        .create_group("open", json!({"user_export": true}))
        .await;
    let exportable = json!({"obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT", "DECRYPT", "EXPORT", "APPMANAGEABLE"]});
    let mut body = exportable.clone();
    body["name"] = json!("app-key");
    let k = kid(&app.create_key(body).await);
    let mut body = exportable.clone();
    body["name"] = json!("open-key");
    body["group_id"] = json!(open);
    let ko = kid(&admin.create_key(body).await);
    let export = |who: &Api, kid: &str| {
        let (who, kid) = (who.clone(), kid.to_string());
        async move {
            who.call(
                Method::POST,
                "/crypto/v1/keys/export",
                Some(json!({"kid": kid})),
            )
            .await
        }
    };
    // Applications of the key's group may; users only where the group allows it.
    let (s, body) = export(app, &k).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(unb64(&body["value"]).len(), 32);
    assert_eq!(
        audit_count(&w.d, "key.export", &k).await,
        1,
        "recorded before the answer"
    );
    let (s, body) = export(admin, &k).await;
    assert_eq!(s, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("user_export"));
    let (s, body) = export(admin, &ko).await;
    assert_eq!(s, 200, "{body}");
    // Another group's application may not.
    let other = admin.create_group("other", json!({})).await;
    let (_, other_key) = admin.create_app("other-app", &[&other]).await;
    let other_app = w.d.login_app(&other_key).await;
    let (s, body) = export(&other_app, &k).await;
    denied(s, &body, "an application of another group");

    // Removing EXPORT is final, and never_exportable keeps saying the key once was.
    let removed = app
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{k}"),
            Some(json!({"key_ops": ["ENCRYPT", "DECRYPT", "APPMANAGEABLE"]})),
        )
        .await;
    assert_eq!(removed["never_exportable"], false);
    assert_eq!(export(app, &k).await.0, 403);
    let (s, _) = app
        .call(
            Method::PATCH,
            &format!("/crypto/v1/keys/{k}"),
            Some(json!({"key_ops": ["ENCRYPT", "DECRYPT", "EXPORT", "APPMANAGEABLE"]})),
        )
        .await;
    assert_eq!(s, 403, "and cannot be added back");

    // A disabled key does no cryptography, export included; a destroyed one has nothing.
    admin
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{ko}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(export(admin, &ko).await.0, 403);
    admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{ko}/deactivate"),
            None,
        )
        .await;
    admin
        .ok(Method::POST, &format!("/crypto/v1/keys/{ko}/destroy"), None)
        .await;
    assert_eq!(export(admin, &ko).await.0, 409);

    // Export is a cryptographic operation for the policies.
    let policed = admin
        .create_group(
            "policed",
            json!({"user_export": true, "cryptographic_policy": {"aes": {}, "key_ops": ["ENCRYPT", "DECRYPT", "EXPORT"]}}),
        )
        .await;
    let mut body = exportable.clone();
    body["name"] = json!("policed-key");
    body["group_id"] = json!(policed);
    body["key_ops"] = json!(["ENCRYPT", "DECRYPT", "EXPORT"]);
    let kp = kid(&admin.create_key(body).await);
    assert_eq!(export(admin, &kp).await.0, 200);
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{policed}"),
            Some(json!({"cryptographic_policy": {"aes": {}, "key_ops": ["ENCRYPT", "DECRYPT"]}})),
        )
        .await;
    let (s, body) = export(admin, &kp).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["code"], "PolicyViolation");
}

#[tokio::test]
async fn copies_never_have_more_than_their_source_and_answer_to_both_groups() {
    let w = world().await;
    let (admin, app) = (&w.admin, &w.app);
    let copy = |who: &Api, body: Value| {
        let who = who.clone();
        async move {
            who.call(Method::POST, "/crypto/v1/keys/copy", Some(body))
                .await
        }
    };
    let new = |name: &str, extra: Value| {
        let mut b = json!({"name": name, "obj_type": "AES", "key_size": 128});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        b
    };

    // Sources that are not usable are not copied.
    let compromised = kid(&app.create_key(new("compromised", json!({}))).await);
    app.ok(
        Method::POST,
        &format!("/crypto/v1/keys/{compromised}/revoke"),
        Some(json!({"code": "KeyCompromise"})),
    )
    .await;
    let retired = kid(&app.create_key(new("retired", json!({}))).await);
    app.ok(
        Method::POST,
        &format!("/crypto/v1/keys/{retired}/deactivate"),
        None,
    )
    .await;
    let destroyed = kid(&app.create_key(new("destroyed", json!({}))).await);
    app.ok(
        Method::POST,
        &format!("/crypto/v1/keys/{destroyed}/deactivate"),
        None,
    )
    .await;
    app.ok(
        Method::POST,
        &format!("/crypto/v1/keys/{destroyed}/destroy"),
        None,
    )
    .await;
    let disabled = kid(&app
        .create_key(new("disabled", json!({"enabled": false})))
        .await);
    for source in [&compromised, &retired, &destroyed, &disabled] {
        let (s, body) = copy(admin, json!({"key": {"kid": source}, "group_id": w.g2})).await;
        assert_eq!(s, 409, "{body}");
    }
    let later = kid(&app
        .create_key(new(
            "later",
            json!({"activation_date": keyward::time::format_dsm(w.d.clock.now() + DAY)}),
        ))
        .await);
    let (s, body) = copy(admin, json!({"key": {"kid": later}, "group_id": w.g2})).await;
    assert_eq!(s, 201, "a pre-active key may be copied: {body}");

    // RSA and EC sources need EXPORT; operations never grow.
    let rsa = kid(&app
        .create_key(json!({"name": "rsa", "obj_type": "RSA", "key_size": 2048, "key_ops": ["SIGN", "VERIFY", "APPMANAGEABLE"]}))
        .await);
    let (s, body) = copy(app, json!({"key": {"kid": rsa}, "group_id": w.g2})).await;
    assert_eq!(s, 403, "{body}");
    let signer = kid(&app
        .create_key(json!({"name": "signer", "obj_type": "RSA", "key_size": 2048, "key_ops": ["SIGN", "VERIFY", "EXPORT", "APPMANAGEABLE"]}))
        .await);
    let (s, body) = copy(
        app,
        json!({"key": {"kid": signer}, "group_id": w.g2, "key_ops": ["SIGN", "VERIFY", "ENCRYPT"]}),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    let (s, body) = copy(
        app,
        json!({"key": {"kid": signer}, "group_id": w.g2, "key_ops": ["VERIFY"]}),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["key_ops"], json!(["VERIFY"]));
    assert_eq!(body["links"]["copiedFrom"], json!(signer));

    // The source group's policy decides too: a key that no longer complies stays put.
    let small = kid(&app.create_key(new("small", json!({}))).await);
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{}", w.g),
            Some(json!({"cryptographic_policy": {"aes": {"key_sizes": [256]}}})),
        )
        .await;
    let (s, body) = copy(admin, json!({"key": {"kid": small}, "group_id": w.g2})).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["code"], "PolicyViolation");
    // And the target group's.
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{}", w.g),
            Some(json!({"cryptographic_policy": "remove"})),
        )
        .await;
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{}", w.g2),
            Some(json!({"cryptographic_policy": {"aes": {"key_sizes": [256]}}})),
        )
        .await;
    let (s, body) = copy(admin, json!({"key": {"kid": small}, "group_id": w.g2})).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["code"], "PolicyViolation");
}

#[tokio::test]
async fn applications_manage_only_keys_that_permit_it() {
    let w = world().await;
    let (admin, app) = (&w.admin, &w.app);
    let k = kid(&app
        .create_key(json!({"name": "hands-off", "obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT", "DECRYPT"]}))
        .await);
    let path = format!("/crypto/v1/keys/{k}");
    let before = catalog_snapshot(&w.d).await;
    for (method, p, body) in [
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"description": "mine"})),
        ),
        (Method::POST, format!("{path}/deactivate"), None),
        (
            Method::POST,
            format!("{path}/revoke"),
            Some(json!({"code": "Superseded"})),
        ),
        (Method::DELETE, path.clone(), None),
        (
            Method::POST,
            "/crypto/v1/keys/copy".to_string(),
            Some(json!({"key": {"kid": k}, "group_id": w.g2})),
        ),
    ] {
        let (s, reply) = app.call(method.clone(), &p, body).await;
        assert_eq!(s, 403, "{method} {p}: {reply}");
        assert!(reply["message"].as_str().unwrap().contains("APPMANAGEABLE"));
    }
    assert_eq!(before, catalog_snapshot(&w.d).await);
    // It still uses the key; users who manage the group still manage it.
    app.ok(
        Method::POST,
        &format!("{path}/encrypt"),
        Some(json!({"alg": "AES", "plain": b64(b"x")})),
    )
    .await;
    admin
        .ok(Method::PATCH, &path, Some(json!({"description": "theirs"})))
        .await;
}

#[tokio::test]
async fn unwrapping_under_a_kek_is_the_keks_cryptographic_operation() {
    let w = world().await;
    let (admin, app) = (&w.admin, &w.app);
    let kek_bytes = [3u8; 32];
    let kek = kid(&app
        .ok(
            Method::PUT,
            "/crypto/v1/keys",
            Some(json!({"name": "kek", "obj_type": "AES", "value": b64(&kek_bytes), "key_ops": ["WRAPKEY", "UNWRAPKEY"]})),
        )
        .await);
    let target = [7u8; 16];
    let wrapped = keyward_crypto::aes_kw_wrap(&kek_bytes, &target, true).unwrap();
    let import = |name: &str, group: &str, kek: &str| json!({"name": name, "group_id": group, "obj_type": "AES", "value": b64(&wrapped), "wrapped_by": {"kid": kek}});
    let imported = app
        .ok(
            Method::PUT,
            "/crypto/v1/keys",
            Some(import("unwrapped", &w.g2, &kek)),
        )
        .await;
    assert_eq!(imported["key_size"], 128);
    assert_eq!(audit_count(&w.d, "key.unwrapkey", &kek).await, 1);
    // A user may not, even one who administers everything.
    let (s, _) = admin
        .call(
            Method::PUT,
            "/crypto/v1/keys",
            Some(import("by-user", &w.g2, &kek)),
        )
        .await;
    assert_eq!(s, 403);
    // An application outside the KEK's group may not.
    let (_, other_key) = admin.create_app("outsider", &[&w.g2]).await;
    let outsider = w.d.login_app(&other_key).await;
    let (s, body) = outsider
        .call(
            Method::PUT,
            "/crypto/v1/keys",
            Some(import("by-outsider", &w.g2, &kek)),
        )
        .await;
    denied(s, &body, "an application outside the KEK's group");
    let plain = kid(&app
        .create_key(json!({"name": "not-a-kek", "obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT", "DECRYPT"]}))
        .await);
    // The KEK's group's policy decides.
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{}", w.g),
            Some(json!({"cryptographic_policy": {"aes": {}, "key_ops": ["WRAPKEY"]}})),
        )
        .await;
    let (s, body) = app
        .call(
            Method::PUT,
            "/crypto/v1/keys",
            Some(import("denied", &w.g2, &kek)),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["code"], "PolicyViolation");
    assert_eq!(audit_count(&w.d, "key.unwrapkey", &kek).await, 1);
    w.d.state.audit.flush().await;
    let mut conn = w.d.state.catalog.conn().await.unwrap();
    let denied_events: i64 = keyward::catalog::db::query(
        "SELECT COUNT(*) FROM audit_events WHERE action = 'key.unwrapkey' AND object_id = ? AND outcome = 'denied'",
    )
    .bind(&kek)
    .fetch_one(&mut conn)
    .await
    .unwrap()
    .get(0);
    drop(conn);
    assert!(denied_events >= 1, "the refused unwrap is in the audit log");
    // A key that does not permit UNWRAPKEY is no KEK.
    let (s, _) = app
        .call(
            Method::PUT,
            "/crypto/v1/keys",
            Some(import("nope", &w.g2, &plain)),
        )
        .await;
    assert_eq!(s, 403);
}

/// Runs `n` requests from each of `apis` at the same time as `racer`. A racer that lost its
/// compare-and-swap every time to the others answers 409 (a concurrent change, nothing
/// written); it is then sent again, alone, and must succeed, so that the caller can check
/// what it did survived.
async fn race(
    apis: Vec<(Api, Method, String, Value)>,
    racer: (Api, Method, String, Value),
) -> Vec<u16> {
    let mut tasks = tokio::task::JoinSet::new();
    for (api, method, path, body) in apis {
        tasks.spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..6 {
                let (s, reply) = api.call(method.clone(), &path, Some(body.clone())).await;
                assert!(
                    [200, 409].contains(&s),
                    "{method} {path} {body}: {s} {reply}"
                );
                statuses.push(s);
            }
            statuses
        });
    }
    let (api, method, path, body) = racer;
    let again = (api.clone(), method.clone(), path.clone(), body.clone());
    let racer = tokio::spawn(async move { api.call(method, &path, Some(body)).await.0 });
    let mut all = vec![racer.await.unwrap()];
    while let Some(s) = tasks.join_next().await {
        all.extend(s.unwrap());
    }
    if all[0] == 409 {
        let (api, method, path, body) = again;
        let (s, reply) = api.call(method.clone(), &path, Some(body)).await;
        assert_eq!(s, 200, "{method} {path} alone: {reply}");
    }
    all
}

#[tokio::test]
async fn updates_racing_a_destroy_or_a_revoke_never_undo_it() {
    let w = world().await;
    let app = &w.app;
    for round in 0..8 {
        // A deactivated key, patched from several sides while it is destroyed.
        let k = kid(&app
            .create_key(
                json!({"name": format!("doomed-{round}"), "obj_type": "AES", "key_size": 256}),
            )
            .await);
        let path = format!("/crypto/v1/keys/{k}");
        app.ok(Method::POST, &format!("{path}/deactivate"), None)
            .await;
        let patches = (0..4)
            .map(|i| {
                let body = if i % 2 == 0 {
                    json!({"description": format!("edit {i}")})
                } else {
                    json!({"custom_metadata": {"edit": i.to_string()}})
                };
                (app.clone(), Method::PATCH, path.clone(), body)
            })
            .collect();
        let statuses = race(
            patches,
            (
                app.clone(),
                Method::POST,
                format!("{path}/destroy"),
                json!({}),
            ),
        )
        .await;
        assert!(
            statuses.iter().all(|s| [200, 409].contains(s)),
            "{statuses:?}"
        );
        let now = app.ok(Method::GET, &path, None).await;
        assert_eq!(
            now["state"], "Destroyed",
            "round {round}: the destroy answered {}",
            statuses[0]
        );
        assert!(
            !has_material(&w.d, &k).await,
            "round {round}: material gone"
        );
        let (s, _) = app
            .call(Method::PATCH, &path, Some(json!({"description": "late"})))
            .await;
        assert_eq!(s, 409);

        // An active key, enabled and re-dated from several sides while it is revoked.
        let k = kid(&app
            .create_key(
                json!({"name": format!("revoked-{round}"), "obj_type": "AES", "key_size": 256}),
            )
            .await);
        let path = format!("/crypto/v1/keys/{k}");
        let later = keyward::time::format_dsm(w.d.clock.now() + 30 * DAY);
        let patches = (0..4)
            .map(|i| {
                let body = if i % 2 == 0 {
                    json!({"enabled": true, "description": "keep going"})
                } else {
                    json!({"deactivation_date": later})
                };
                (app.clone(), Method::PATCH, path.clone(), body)
            })
            .collect();
        let statuses = race(
            patches,
            (
                app.clone(),
                Method::POST,
                format!("{path}/revoke"),
                json!({"code": "KeyCompromise"}),
            ),
        )
        .await;
        assert!(
            statuses.iter().all(|s| [200, 409].contains(s)),
            "{statuses:?}"
        );
        let now = app.ok(Method::GET, &path, None).await;
        assert_eq!(now["state"], "Compromised", "round {round}: {now}");
        let (s, _) = app
            .call(
                Method::POST,
                &format!("{path}/encrypt"),
                Some(json!({"alg": "AES", "plain": b64(b"x")})),
            )
            .await;
        assert_eq!(s, 403, "a compromised key does not protect");
    }
}

/// Puts a new key into `state` through the API.
async fn key_in(app: &Api, clock: &keyward::time::Clock, name: &str, state: KeyState) -> String {
    let mut body = json!({"name": name, "obj_type": "AES", "key_size": 128});
    if state == KeyState::PreActive {
        body["activation_date"] = json!(keyward::time::format_dsm(clock.now() + DAY));
    }
    let k = kid(&app.create_key(body).await);
    let path = format!("/crypto/v1/keys/{k}");
    match state {
        KeyState::PreActive | KeyState::Active => {}
        KeyState::Deactivated => {
            app.ok(Method::POST, &format!("{path}/deactivate"), None)
                .await;
        }
        KeyState::Compromised => {
            app.ok(
                Method::POST,
                &format!("{path}/revoke"),
                Some(json!({"code": "KeyCompromise"})),
            )
            .await;
        }
        KeyState::Destroyed => {
            app.ok(Method::POST, &format!("{path}/deactivate"), None)
                .await;
            app.ok(Method::POST, &format!("{path}/destroy"), None).await;
        }
    }
    assert_eq!(
        app.ok(Method::GET, &path, None).await["state"],
        state.as_str()
    );
    k
}

#[tokio::test]
async fn every_lifecycle_transition_is_allowed_or_refused_as_kmip_says() {
    use KeyState::*;
    let w = world().await;
    let app = &w.app;
    let clock = &w.d.clock;
    let retire = json!({"code": "Superseded"});
    let compromise = json!({"code": "KeyCompromise"});
    // (from, operation, body, where it ends: None = 409)
    let table: Vec<(KeyState, &str, Option<Value>, Option<KeyState>)> = vec![
        (PreActive, "activate", None, Some(Active)),
        (PreActive, "deactivate", None, None),
        (PreActive, "revoke", Some(retire.clone()), None),
        (
            PreActive,
            "revoke",
            Some(compromise.clone()),
            Some(Compromised),
        ),
        (PreActive, "destroy", None, Some(Destroyed)),
        (Active, "activate", None, Some(Active)),
        (Active, "deactivate", None, Some(Deactivated)),
        (Active, "revoke", Some(retire.clone()), Some(Deactivated)),
        (
            Active,
            "revoke",
            Some(compromise.clone()),
            Some(Compromised),
        ),
        (Active, "destroy", None, None),
        (Deactivated, "activate", None, None),
        (Deactivated, "deactivate", None, Some(Deactivated)),
        (
            Deactivated,
            "revoke",
            Some(retire.clone()),
            Some(Deactivated),
        ),
        (
            Deactivated,
            "revoke",
            Some(compromise.clone()),
            Some(Compromised),
        ),
        (Deactivated, "destroy", None, Some(Destroyed)),
        (Compromised, "activate", None, None),
        (Compromised, "deactivate", None, None),
        (Compromised, "revoke", Some(retire.clone()), None),
        (
            Compromised,
            "revoke",
            Some(compromise.clone()),
            Some(Compromised),
        ),
        (Compromised, "destroy", None, Some(Destroyed)),
        (Destroyed, "activate", None, None),
        (Destroyed, "deactivate", None, None),
        (Destroyed, "revoke", Some(retire.clone()), None),
        (
            Destroyed,
            "revoke",
            Some(compromise.clone()),
            Some(Destroyed),
        ),
        (Destroyed, "destroy", None, None),
    ];
    let mut failures = Vec::new();
    for (i, (from, op, body, to)) in table.iter().enumerate() {
        let k = key_in(app, clock, &format!("t{i}"), *from).await;
        let (s, reply) = app
            .call(
                Method::POST,
                &format!("/crypto/v1/keys/{k}/{op}"),
                body.clone(),
            )
            .await;
        let got = match s {
            200 => Some(reply["state"].as_str().unwrap_or_default().to_string()),
            409 => None,
            other => Some(format!("status {other}: {reply}")),
        };
        if got.as_deref() != to.map(KeyState::as_str) {
            failures.push(format!("{from:?} {op} {body:?}: got {got:?}, want {to:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Dates move only where KMIP lets them: never back to Active.
    let now = clock.now();
    let t = |secs: i64| json!(keyward::time::format_dsm(secs));
    let cases: Vec<(KeyState, Value, u16)> = vec![
        (Deactivated, json!({"deactivation_date": "remove"}), 409),
        (Deactivated, json!({"deactivation_date": t(now + DAY)}), 409),
        (Compromised, json!({"deactivation_date": "remove"}), 409),
        (Destroyed, json!({"description": "x"}), 409),
        (Active, json!({"activation_date": t(now + DAY)}), 409),
        (Active, json!({"deactivation_date": t(now - DAY)}), 400),
        (Active, json!({"deactivation_date": t(now + DAY)}), 200),
        (PreActive, json!({"activation_date": t(now - DAY)}), 400),
        (PreActive, json!({"activation_date": "remove"}), 400),
        (PreActive, json!({"activation_date": t(now + 2 * DAY)}), 200),
    ];
    for (i, (state, body, want)) in cases.into_iter().enumerate() {
        let k = key_in(app, clock, &format!("d{i}"), state).await;
        let (s, reply) = app
            .call(
                Method::PATCH,
                &format!("/crypto/v1/keys/{k}"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, want, "{state:?} {body}: {reply}");
        if s != 200 {
            assert_eq!(
                app.ok(Method::GET, &format!("/crypto/v1/keys/{k}"), None)
                    .await["state"],
                state.as_str(),
                "unchanged"
            );
        }
    }
    // A future deactivation date may be removed while it is still ahead.
    let k = key_in(app, clock, "ahead", Active).await;
    let path = format!("/crypto/v1/keys/{k}");
    app.ok(
        Method::PATCH,
        &path,
        Some(json!({"deactivation_date": t(now + DAY)})),
    )
    .await;
    let back = app
        .ok(
            Method::PATCH,
            &path,
            Some(json!({"deactivation_date": "remove"})),
        )
        .await;
    assert!(back["deactivation_date"].is_null());
    // Once the date passes, the key is deactivated for good.
    app.ok(
        Method::PATCH,
        &path,
        Some(json!({"deactivation_date": t(now + 10)})),
    )
    .await;
    clock.advance(20);
    assert_eq!(
        app.ok(Method::GET, &path, None).await["state"],
        "Deactivated"
    );
    let (s, _) = app
        .call(
            Method::PATCH,
            &path,
            Some(json!({"deactivation_date": "remove"})),
        )
        .await;
    assert_eq!(s, 409);
    // Deleting needs the key out of Active.
    let active = key_in(app, clock, "in-use", Active).await;
    let (s, _) = app
        .call(Method::DELETE, &format!("/crypto/v1/keys/{active}"), None)
        .await;
    assert_eq!(s, 409);
}

#[tokio::test]
async fn cached_keys_expire_and_a_change_is_seen_at_once() {
    let w = world().await;
    let app = &w.app;
    let k = kid(&app
        .create_key(json!({"name": "cached", "obj_type": "AES", "key_size": 256}))
        .await);
    let enc = json!({"alg": "AES", "plain": b64(b"x")});
    let path = format!("/crypto/v1/keys/{k}/encrypt");
    app.ok(Method::POST, &path, Some(enc.clone())).await;
    // A change through the key service is seen by the next request.
    app.ok(
        Method::PATCH,
        &format!("/crypto/v1/keys/{k}"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(
        app.call(Method::POST, &path, Some(enc.clone())).await.0,
        403
    );
    app.ok(
        Method::PATCH,
        &format!("/crypto/v1/keys/{k}"),
        Some(json!({"enabled": true})),
    )
    .await;
    app.ok(Method::POST, &path, Some(enc.clone())).await;
    // A change the cache was not told of (another daemon on the same catalog) is seen once
    // the entry expires.
    let mut conn = w.d.state.catalog.conn().await.unwrap();
    keyward::catalog::db::query("UPDATE sobjects SET enabled = ? WHERE kid = ?")
        .bind(false)
        .bind(&k)
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    w.d.clock.advance(31);
    assert_eq!(app.call(Method::POST, &path, Some(enc)).await.0, 403);
}

#[tokio::test]
async fn an_audit_event_that_cannot_be_written_is_retried_and_nothing_is_answered_without_one() {
    let w = world().await;
    let app = &w.app;
    let k = kid(&app
        .create_key(json!({"name": "audited", "obj_type": "AES", "key_size": 256}))
        .await);
    let mut conn = w.d.state.catalog.conn().await.unwrap();
    let outage = match conn.backend() {
        keyward::catalog::Backend::Sqlite => {
            "CREATE TRIGGER audit_outage BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'disk full'); END;"
        }
        keyward::catalog::Backend::Postgres => {
            "CREATE FUNCTION audit_outage() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END; $$;
             CREATE TRIGGER audit_outage BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_outage();"
        }
    };
    conn.run_script(outage).await.unwrap();
    drop(conn);
    // A cryptographic operation is not answered without its event: after the wait for its
    // commit, 503 (its event stays queued and is written once it can be) ...
    let (s, body) = app
        .call(
            Method::POST,
            &format!("/crypto/v1/keys/{k}/encrypt"),
            Some(json!({"alg": "AES", "plain": b64(b"x")})),
        )
        .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (503, Some("Unavailable")),
        "{body}"
    );
    assert!(body.get("cipher").is_none());
    // ... and a change cannot be made without its event.
    let (s, _) = app
        .call(
            Method::PATCH,
            &format!("/crypto/v1/keys/{k}"),
            Some(json!({"description": "unrecorded"})),
        )
        .await;
    assert_eq!(s, 500);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(audit_count(&w.d, "key.encrypt", &k).await, 0);
    let mut conn = w.d.state.catalog.conn().await.unwrap();
    let restore = match conn.backend() {
        keyward::catalog::Backend::Sqlite => "DROP TRIGGER audit_outage",
        keyward::catalog::Backend::Postgres => "DROP TRIGGER audit_outage ON audit_events",
    };
    conn.run_script(restore).await.unwrap();
    drop(conn);
    w.d.state.audit.flush().await;
    assert_eq!(
        audit_count(&w.d, "key.encrypt", &k).await,
        1,
        "written once the catalog takes it"
    );
    let now = app
        .ok(Method::GET, &format!("/crypto/v1/keys/{k}"), None)
        .await;
    assert!(
        now["description"].is_null(),
        "the refused change left nothing"
    );
}

// ---------------------------------------------------------------------------------------
// Linked groups

#[tokio::test]
async fn one_hsm_name_gives_one_key_and_one_clear_conflict() {
    let az = Azure::start().await;
    // Slow enough that both requests are in flight together.
    az.faults(FaultConfig {
        latency_ms: 150,
        ..FaultConfig::default()
    });
    let create = |name: &str| {
        let (api, body) = (
            az.admin.clone(),
            json!({"name": name, "group_id": az.group, "obj_type": "AES", "key_size": 256}),
        );
        async move { api.call(Method::POST, "/crypto/v1/keys", Some(body)).await }
    };
    let creates_before = az.em.counts().get("keys.create").copied().unwrap_or(0);
    let (a, b) = tokio::join!(create("twin key"), create("twin-key"));
    let mut statuses = vec![a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{a:?} {b:?}");
    let conflict = if a.0 == 409 { &a.1 } else { &b.1 };
    assert!(
        conflict["message"].as_str().unwrap().contains("twin-key"),
        "{conflict}"
    );
    assert_eq!(
        az.em.counts().get("keys.create").copied().unwrap_or(0) - creates_before,
        1,
        "the HSM was asked once"
    );
    az.faults(FaultConfig::default());
    // Names in the HSM are compared without case, as Azure compares them.
    let (s, body) = create("Twin-Key").await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(
        az.count(
            "SELECT COUNT(*) FROM sobjects WHERE lower({label}) = ?",
            "twin-key"
        )
        .await,
        1
    );
    az.stop().await;
}

/// A workflow script that tries what the key service must refuse, then does the update it
/// was started for.
fn probing_update(plain_kid: &str, plain_name: &str) -> String {
    format!(
        r#"
let attempts = #{{}};
let remote = hsm::get_key(input.azure_name);
try {{ keys::refresh("{plain_kid}", remote); attempts.refresh = "done"; }} catch (e) {{ attempts.refresh = e.kind; }}
try {{ keys::set_remote_state("{plain_kid}", "Purged", #{{}}); attempts.set_state = "done"; }} catch (e) {{ attempts.set_state = e.kind; }}
try {{ keys::remove("{plain_kid}"); attempts.remove = "done"; }} catch (e) {{ attempts.remove = e.kind; }}
try {{ keys::escrow("{plain_kid}"); attempts.escrow = "done"; }} catch (e) {{ attempts.escrow = e.kind; }}
try {{ keys::get("{plain_kid}"); attempts.get = "done"; }} catch (e) {{ attempts.get = e.kind; }}
try {{ keys::record(remote); attempts.record = "done"; }} catch (e) {{ attempts.record = e.kind; }}
try {{ keys::set_remote_state(input.kid, "Creating", #{{}}); attempts.creating = "done"; }} catch (e) {{ attempts.creating = e.kind; }}
try {{ byok::wrap("{plain_name}", remote); attempts.wrap = "done"; }} catch (e) {{ attempts.wrap = "refused"; }}
try {{ keys::material("{plain_kid}"); attempts.material = "done"; }} catch (e) {{ attempts.material = "refused"; }}
output.attempts = attempts;
let r = hsm::update_key(input.azure_name, input.changes);
output.kid = keys::save(r);
"#
    )
}

#[tokio::test]
async fn a_workflow_script_reaches_no_material_and_no_key_outside_its_group() {
    let scripts = tempfile::tempdir().unwrap();
    let dir = scripts.path().to_path_buf();
    let az = Azure::start_with(move |c| c.workflow_dir = Some(dir)).await;
    let plain = az
        .app
        .create_key(json!({"name": "plain-secret", "group_id": az.plain_group, "obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT", "DECRYPT"]}))
        .await;
    let plain_kid = kid(&plain);
    let v = az
        .admin
        .create_key(
            json!({"name": "probed", "group_id": az.group, "obj_type": "AES", "key_size": 256}),
        )
        .await;
    std::fs::write(
        scripts.path().join("update.rhai"),
        probing_update(&plain_kid, "plain-secret"),
    )
    .unwrap();
    let list = az.admin.ok(Method::GET, "/sys/v1/workflows", None).await;
    let update = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "update")
        .unwrap()
        .clone();
    assert_eq!(update["origin"], "override", "{update}");
    assert!(update["problem"].is_null(), "{update}");
    let before = az
        .count("SELECT version FROM sobjects WHERE kid = ?", &plain_kid)
        .await;
    az.admin
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{}", kid(&v)),
            Some(json!({"custom_metadata": {"probe": "1"}})),
        )
        .await;
    let runs = az
        .admin
        .ok(
            Method::GET,
            "/sys/v1/workflow_runs?workflow=update&limit=1",
            None,
        )
        .await;
    let attempts = &runs[0]["output"]["attempts"];
    assert!(attempts.is_object(), "{runs}");
    // Writes outside the run's key are refused as outside its plan; a read finds no key
    // outside its group.
    for (what, want) in [
        ("refresh", "denied"),
        ("set_state", "denied"),
        ("remove", "denied"),
        ("escrow", "denied"),
        ("get", "not_found"),
        ("record", "invalid"),
        ("creating", "invalid"),
        ("wrap", "refused"),
        ("material", "refused"),
    ] {
        assert_eq!(attempts[what], want, "{what}: {attempts}");
    }
    assert_eq!(
        az.count("SELECT version FROM sobjects WHERE kid = ?", &plain_kid)
            .await,
        before,
        "the catalog key was not touched"
    );
    let (s, _) = az
        .app
        .call(
            Method::POST,
            "/crypto/v1/keys/export",
            Some(json!({"kid": plain_kid})),
        )
        .await;
    assert_eq!(s, 403);
    az.stop().await;
}

#[tokio::test]
async fn a_reservation_is_released_or_completed_by_the_next_sync() {
    let scripts = tempfile::tempdir().unwrap();
    let dir = scripts.path().to_path_buf();
    let az = Azure::start_with(move |c| c.workflow_dir = Some(dir)).await;
    let generate = scripts.path().join("generate.rhai");
    let create = |name: &str| {
        let (api, body) = (
            az.admin.clone(),
            json!({"name": name, "group_id": az.group, "obj_type": "AES", "key_size": 256}),
        );
        async move { api.call(Method::POST, "/crypto/v1/keys", Some(body)).await }
    };
    let reservations = || {
        az.count(
            "SELECT COUNT(*) FROM sobjects WHERE {json:external:state} = ?",
            "Creating",
        )
    };

    // A script that creates another key than the one reserved is stopped before the HSM,
    // and the reservation goes.
    std::fs::write(
        &generate,
        r#"hsm::create_key(#{ name: "elsewhere", obj_type: "AES", key_size: 256 });"#,
    )
    .unwrap();
    let (s, body) = create("reserved").await;
    assert_eq!(s, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("reserved"));
    assert!(az.remote("elsewhere").await.is_none());
    assert_eq!(reservations().await, 0);

    // A run that dies after the HSM created the key leaves the reservation for the next sync,
    // which completes it.
    std::fs::write(
        &generate,
        r#"
let key = hsm::create_key(#{ name: input.azure_name, obj_type: "AES", key_size: 256, ops: ["ENCRYPT", "DECRYPT"] });
throw "the daemon went away";
"#,
    )
    .unwrap();
    let (s, body) = create("half-done").await;
    assert_eq!(s, 500, "{body}");
    assert!(az.remote("half-done").await.is_some());
    assert_eq!(reservations().await, 1);
    std::fs::remove_file(&generate).unwrap();
    let (s, body) = create("half-done").await;
    assert_eq!(s, 409, "the name stays reserved: {body}");
    az.sync().await;
    assert_eq!(reservations().await, 0);
    let keys = az
        .admin
        .ok(Method::GET, "/crypto/v1/keys?name=half-done", None)
        .await;
    assert_eq!(keys[0]["external"]["state"], "Active", "{keys}");
    let kid = kid(&keys[0]);
    az.app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/encrypt"),
            Some(json!({"alg": "AES", "plain": b64(b"completed")})),
        )
        .await;
    assert_eq!(
        az.count("SELECT COUNT(*) FROM escrow_blobs WHERE kid = ?", &kid)
            .await,
        1
    );

    // A change interrupted between the HSM and the catalog is settled by the next sync.
    let link = az.link().await;
    az.daemon
        .state
        .kms
        .update_key(
            &link,
            &keyward::plugins::kms::KeyRef {
                name: "half-done".into(),
                version: None,
            },
            &keyward::plugins::kms::UpdateRequest {
                enabled: None,
                not_before: None,
                expires: None,
                ops: None,
                tags: Some(vec![keyward::plugins::kms::Tag {
                    name: "set".into(),
                    value: "remotely".into(),
                }]),
            },
        )
        .await
        .unwrap();
    let mut conn = az.daemon.state.catalog.conn().await.unwrap();
    let account: String =
        keyward::catalog::db::query("SELECT account_id FROM sobjects WHERE kid = ?")
            .bind(&kid)
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
    keyward::catalog::db::query(
        "INSERT INTO hsm_ops (id, account_id, group_id, run_id, actor_kind, actor_id, operation, target, kid, status, started_at)
         VALUES ('00000000-0000-4000-8000-000000000001', ?, ?, NULL, 'user', 'u', 'update_key', 'half-done', ?, 'interrupted', 0)",
    )
    .bind(&account)
    .bind(&az.group)
    .bind(&kid)
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    az.sync().await;
    let k = az
        .admin
        .ok(Method::GET, &format!("/crypto/v1/keys/{kid}"), None)
        .await;
    assert_eq!(k["custom_metadata"]["set"], "remotely", "{k}");
    assert_eq!(
        az.count(
            "SELECT COUNT(*) FROM hsm_ops WHERE id = ? AND status = 'reconciled'",
            "00000000-0000-4000-8000-000000000001"
        )
        .await,
        1
    );
    az.stop().await;
}

#[tokio::test]
async fn every_change_of_a_key_and_of_its_hsm_has_exactly_one_audit_event() {
    let az = Azure::start().await;
    let (admin, app) = (&az.admin, &az.app);
    let src = kid(&app
        .create_key(json!({"name": "source", "group_id": az.plain_group, "obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT", "DECRYPT", "EXPORT", "APPMANAGEABLE"]}))
        .await);
    admin
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{src}"),
            Some(json!({"description": "the source"})),
        )
        .await;
    let copy = kid(&admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/copy",
            Some(json!({"key": {"kid": src}, "group_id": az.group})),
        )
        .await);
    let v = kid(&admin
        .create_key(
            json!({"name": "native", "group_id": az.group, "obj_type": "RSA", "key_size": 2048}),
        )
        .await);
    let path = |what: &str| format!("/crypto/v1/keys/{v}{what}");
    admin
        .ok(
            Method::PATCH,
            &path(""),
            Some(json!({"custom_metadata": {"team": "a"}})),
        )
        .await;
    admin.ok(Method::POST, &path("/deactivate"), None).await;
    admin
        .ok(
            Method::POST,
            &path("/schedule_deletion"),
            Some(json!({"confirm": true})),
        )
        .await;
    admin.ok(Method::POST, &path("/recover"), None).await;
    app.ok(
        Method::POST,
        "/crypto/v1/keys/export",
        Some(json!({"kid": src})),
    )
    .await;
    az.seed(
        keyward_tests::azure::HSM,
        json!({"count": 2, "prefix": "found"}),
    )
    .await;
    let found: Vec<String> = az.sync().await.iter().map(kid).collect();
    assert_eq!(found.len(), 2);
    settle(admin).await;
    az.daemon.state.audit.flush().await;

    let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut expect = |action: &str, object: &str| {
        *want
            .entry((action.to_string(), object.to_string()))
            .or_default() += 1;
    };
    expect("key.create", &src);
    expect("key.update", &src);
    expect("key.copy", &copy);
    expect("key.create", &v);
    expect("key.update", &v);
    expect("key.deactivate", &v);
    expect("key.external_state", &v);
    expect("key.refresh", &v);
    expect("key.export", &src);
    for f in &found {
        expect("key.sync", f);
    }
    let mut conn = az.daemon.state.catalog.conn().await.unwrap();
    let rows = keyward::catalog::db::query(
        "SELECT action, object_id, COUNT(*) FROM audit_events WHERE action LIKE 'key.%' AND outcome = 'success'
           AND action NOT IN ('key.encrypt', 'key.decrypt', 'key.sign', 'key.verify', 'key.wrapkey')
         GROUP BY action, object_id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let got: BTreeMap<(String, String), i64> = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    assert_eq!(got, want);

    // Each change in the HSM: one journal entry, finished, and one event.
    let journal: BTreeMap<String, i64> = keyward::catalog::db::query(
        "SELECT operation, COUNT(*) FROM hsm_ops WHERE status = 'succeeded' GROUP BY operation",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let expected_ops: BTreeMap<String, i64> = [
        ("create_kek", 1),
        ("import_key", 1),
        ("delete_key", 2),
        ("purge_key", 1),
        ("create_key", 1),
        ("update_key", 2),
        ("recover_key", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(journal, expected_ops);
    let open: i64 =
        keyward::catalog::db::query("SELECT COUNT(*) FROM hsm_ops WHERE status <> 'succeeded'")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
    assert_eq!(open, 0);
    let events: BTreeMap<String, i64> = keyward::catalog::db::query(
        "SELECT substr(action, 5), COUNT(*) FROM audit_events WHERE action LIKE 'hsm.%' GROUP BY action",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    assert_eq!(events, expected_ops);
    drop(conn);
    az.stop().await;
}

/// Tag edits (the console's) apply to the key as it is when they are written: people adding
/// different tags at once all keep theirs, and a removal removes only its own tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tag_edits_do_not_undo_each_other() {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let group = admin.create_group("tags", json!({})).await;
    let kid = admin
        .create_key(
            json!({"name": "tagged", "group_id": group, "obj_type": "AES", "key_size": 256,
            "custom_metadata": {"keep": "me", "drop": "me"}}),
        )
        .await["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let caller =
        keyward::api::extract::Caller::from_token(&d.state, admin.token.as_deref().unwrap())
            .await
            .unwrap();
    let edits: Vec<keyward::keys::TagEdits> = (0..6)
        .map(|i| keyward::keys::TagEdits {
            set: BTreeMap::from([(format!("t{i}"), format!("v{i}"))]),
            remove: vec![],
        })
        .chain([keyward::keys::TagEdits {
            set: BTreeMap::new(),
            remove: vec!["drop".into()],
        }])
        .collect();
    let runs: Vec<_> = edits
        .into_iter()
        .map(|e| {
            let (keys, access, kid) = (d.state.keys.clone(), caller.access.clone(), kid.clone());
            tokio::spawn(async move {
                let change = keyward::keys::KeyChange {
                    tag_edits: Some(e.clone()),
                    ..Default::default()
                };
                (e, keys.update(&access, &kid, change).await.is_ok())
            })
        })
        .collect();
    let mut applied = vec![];
    for r in runs {
        let (e, ok) = r.await.unwrap();
        if ok {
            applied.push(e);
        }
    }
    assert!(!applied.is_empty());
    let key = admin
        .ok(Method::GET, &format!("/crypto/v1/keys/{kid}"), None)
        .await;
    let tags = &key["custom_metadata"];
    assert_eq!(tags["keep"], "me", "{tags}");
    for e in &applied {
        for (k, v) in &e.set {
            assert_eq!(tags[k], v.as_str(), "{k} was undone: {tags}");
        }
        for k in &e.remove {
            assert!(tags.get(k).is_none(), "{k} came back: {tags}");
        }
    }
    d.stop().await;
}
