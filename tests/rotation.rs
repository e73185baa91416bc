//! Rotation end to end (F23, F24, F26 and DSM rekey of catalog keys): the daemon, its
//! rotation workflows and the connector against the emulator. Each test checks the HSM's
//! versions, the catalog's objects, names and links, the states, the escrow, and with
//! cryptography that each version holds the material it should.

use keyward_tests::api::{TestDaemon, b64, unb64};
use keyward_tests::azure::Azure;
use reqwest::Method;
use serde_json::{Value, json};

/// Encrypts with a key through the API and opens the result with `key` here.
async fn opens_with(api: &keyward_tests::api::Api, kid: &str, key: &[u8]) {
    let plain = b"attack at dawn";
    let e = api
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/encrypt"),
            Some(json!({"alg": "AES", "plain": b64(plain), "mode": "GCM"})),
        )
        .await;
    let mut sealed = unb64(&e["cipher"]);
    sealed.extend(unb64(&e["tag"]));
    let opened = keyward_crypto::gcm_open(key, &unb64(&e["iv"]), &sealed, b"")
        .expect("the ciphertext opens with the expected material");
    assert_eq!(opened, plain);
}

async fn export(api: &keyward_tests::api::Api, kid: &str) -> Vec<u8> {
    unb64(
        &api.ok(
            Method::POST,
            "/crypto/v1/keys/export",
            Some(json!({"kid": kid})),
        )
        .await["value"],
    )
}

async fn get(api: &keyward_tests::api::Api, kid: &Value) -> Value {
    api.ok(
        Method::GET,
        &format!("/crypto/v1/keys/{}", kid.as_str().unwrap()),
        None,
    )
    .await
}

/// The versions the HSM has of a key, oldest first.
async fn hsm_versions(az: &Azure, name: &str) -> Vec<String> {
    let link = az.link().await;
    let kms = &az.daemon.state.kms;
    let mut out = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let p = kms
            .list_versions(&link, name, page.as_deref())
            .await
            .unwrap();
        out.extend(p.items.into_iter().filter_map(|i| i.version));
        match p.next {
            Some(n) => page = Some(n),
            None => break,
        }
    }
    out
}

#[tokio::test]
async fn a_catalog_key_rotates_into_a_new_key_that_keeps_its_name() {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("plain", json!({})).await;
    let (_, key) = admin.create_app("app", &[&g]).await;
    let app = d.login_app(&key).await;
    let raw = keyward_crypto::random_bytes(32);
    let old = admin
        .ok(
            Method::PUT,
            "/crypto/v1/keys",
            Some(
                json!({"name": "payments", "group_id": g, "obj_type": "AES", "value": b64(&raw),
                "key_ops": ["ENCRYPT", "DECRYPT", "EXPORT"], "custom_metadata": {"team": "pay"},
                "rotation_policy": {"interval_days": 30}}),
            ),
        )
        .await;
    assert_eq!(old["rotation_policy"]["interval_days"], 30);
    assert!(old["scheduled_rotation"].is_string());
    let sealed_by_old = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{}/encrypt", old["kid"].as_str().unwrap()),
            Some(json!({"alg": "AES", "plain": b64(b"old secret"), "mode": "GCM"})),
        )
        .await;

    let (s, new) = admin
        .call(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"name": "payments", "deactivate_rotated_key": true, "description": "rotated"})),
        )
        .await;
    assert_eq!(s, 201, "{new}");
    assert_ne!(new["kid"], old["kid"]);
    assert_eq!(new["name"], "payments", "the replacement keeps the name");
    assert_eq!(new["state"], "Active");
    assert_eq!(new["description"], "rotated");
    assert_eq!(new["custom_metadata"]["team"], "pay");
    assert_eq!(new["links"]["replaced"], old["kid"]);
    assert_eq!(
        new["rotation_policy"]["interval_days"], 30,
        "the policy moved over"
    );
    let old_now = get(&admin, &old["kid"]).await;
    assert!(
        old_now["name"]
            .as_str()
            .unwrap()
            .starts_with("payments (rotated at "),
        "{}",
        old_now["name"]
    );
    assert_eq!(old_now["links"]["replacement"], new["kid"]);
    assert_eq!(old_now["state"], "Deactivated");
    assert!(old_now["rotated_at"].is_string());
    assert!(old_now.get("rotation_policy").is_none());

    // Clients find the current key by name; it has new material, the old key the old one.
    let info = admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/info",
            Some(json!({"name": "payments"})),
        )
        .await;
    assert_eq!(info["kid"], new["kid"]);
    let new_raw = export(&app, new["kid"].as_str().unwrap()).await;
    assert_ne!(new_raw, raw);
    assert_eq!(export(&app, old["kid"].as_str().unwrap()).await, raw);
    let opened = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{}/decrypt", old["kid"].as_str().unwrap()),
            Some(json!({"alg": "AES", "mode": "GCM", "cipher": sealed_by_old["cipher"], "iv": sealed_by_old["iv"], "tag": sealed_by_old["tag"]})),
        )
        .await;
    assert_eq!(
        unb64(&opened["plain"]),
        b"old secret",
        "the deactivated key still decrypts"
    );
    let (s, _) = app
        .call(
            Method::POST,
            &format!("/crypto/v1/keys/{}/encrypt", old["kid"].as_str().unwrap()),
            Some(json!({"alg": "AES", "plain": b64(b"x"), "mode": "GCM"})),
        )
        .await;
    assert_eq!(s, 403, "but no longer encrypts");

    // A replaced key cannot be rotated again, and the audit log has the rotation.
    let (s, body) = admin
        .call(
            Method::POST,
            &format!("/crypto/v1/keys/{}/rekey", old["kid"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("replacement"),
        "{body}"
    );
    d.state.audit.flush().await;
    let logs = admin
        .ok(Method::GET, "/sys/v1/logs?action=key.rotate", None)
        .await;
    assert!(
        logs.to_string().contains(new["kid"].as_str().unwrap()),
        "{logs}"
    );
}

#[tokio::test]
async fn a_rotation_never_adds_export_and_refuses_what_it_cannot_do() {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("plain", json!({})).await;
    let k = admin
        .create_key(json!({"name": "sealed", "group_id": g, "obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT", "DECRYPT"]}))
        .await;
    let before = keyward_tests::api::catalog_snapshot_without(&d, &["audit_events"]).await;
    for (body, status, says) in [
        (
            json!({"name": "sealed", "key_ops": ["ENCRYPT", "DECRYPT", "EXPORT"]}),
            403,
            "EXPORT",
        ),
        (json!({"name": "sealed", "obj_type": "RSA"}), 400, "type"),
        (
            json!({"name": "sealed", "rotate_copied_keys": {"select": ["00000000-0000-4000-8000-000000000000"]}}),
            400,
            "not a linked copy",
        ),
        (
            json!({"name": "sealed", "rotate_from": {"name": "sealed"}}),
            400,
            "rotate_from",
        ),
        (json!({"name": "sealed", "key_size": 100}), 400, "key_size"),
        (
            json!({"name": "sealed", "rotation_policy": {"interval_days": 1, "interval_months": 1}}),
            400,
            "only one",
        ),
        (json!({"name": "nothing-of-that-name"}), 404, "no key"),
        (json!({"kid": k["kid"], "name": "sealed"}), 400, "name"),
    ] {
        let (s, b) = admin
            .call(Method::POST, "/crypto/v1/keys/rekey", Some(body.clone()))
            .await;
        assert_eq!(s, status, "{body} -> {b}");
        assert!(
            b["message"].as_str().unwrap().contains(says),
            "{body} -> {b}"
        );
    }
    assert_eq!(
        before,
        keyward_tests::api::catalog_snapshot_without(&d, &["audit_events"]).await,
        "refused rotations change nothing"
    );
    let r = admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{}/rekey", k["kid"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(r["key_ops"], json!(["ENCRYPT", "DECRYPT"]));
    assert_eq!(r["never_exportable"], true);
}

#[tokio::test]
async fn an_azure_native_key_gets_a_new_version_and_the_old_one_stays_usable() {
    let az = Azure::start().await;
    let v1 = az
        .app
        .create_key(
            json!({"name": "native", "group_id": az.group, "obj_type": "AES", "key_size": 256,
            "key_ops": ["ENCRYPT", "DECRYPT", "APPMANAGEABLE"]}),
        )
        .await;
    let v1_version = v1["external"]["id"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    let sealed = az
        .app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{}/encrypt", v1["kid"].as_str().unwrap()),
            Some(json!({"alg": "AES", "plain": b64(b"before"), "mode": "GCM"})),
        )
        .await;

    let v2 = az
        .app
        .ok(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"name": "native"})),
        )
        .await;
    let versions = hsm_versions(&az, "native").await;
    assert_eq!(versions.len(), 2, "one new version in the HSM");
    let v2_version = v2["external"]["id"]["version"].as_str().unwrap();
    assert!(versions.contains(&v2_version.to_string()) && versions.contains(&v1_version));
    assert_eq!(
        az.remote("native").await.unwrap().version,
        v2_version,
        "the new virtual key is the latest"
    );
    assert_eq!(v2["name"], "native");
    assert_eq!(v2["external"]["id"]["label"], "native");
    assert_eq!(v2["external"]["source"], "External");
    assert_eq!(v2["links"]["replaced"], v1["kid"]);
    let old = get(&az.admin, &v1["kid"]).await;
    assert_eq!(
        old["external"]["id"]["version"],
        v1_version.as_str(),
        "the old key keeps its version"
    );
    assert_eq!(old["links"]["replacement"], v2["kid"]);
    assert_eq!(
        az.count(
            "SELECT COUNT(*) FROM escrow_blobs WHERE kid = ?",
            v2["kid"].as_str().unwrap()
        )
        .await,
        1,
        "the escrowed backup was refreshed"
    );

    // The old virtual key uses its own version: it opens what it sealed; the new one does not.
    let body = json!({"alg": "AES", "mode": "GCM", "cipher": sealed["cipher"], "iv": sealed["iv"], "tag": sealed["tag"]});
    let opened = az
        .app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{}/decrypt", v1["kid"].as_str().unwrap()),
            Some(body.clone()),
        )
        .await;
    assert_eq!(unb64(&opened["plain"]), b"before");
    let (s, _) = az
        .app
        .call(
            Method::POST,
            &format!("/crypto/v1/keys/{}/decrypt", v2["kid"].as_str().unwrap()),
            Some(body),
        )
        .await;
    assert_ne!(s, 200, "the new version is different material");

    // Whole-key flows go through the current version; a sync adds nothing twice.
    let (s, b) = az
        .admin
        .call(
            Method::POST,
            &format!(
                "/crypto/v1/keys/{}/schedule_deletion",
                v1["kid"].as_str().unwrap()
            ),
            Some(json!({"confirm": true})),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert!(az.sync().await.is_empty());
    assert_eq!(
        az.count("SELECT COUNT(*) FROM sobjects WHERE {label} = ?", "native")
            .await,
        2
    );
}

#[tokio::test]
async fn a_source_key_rotates_with_the_linked_copies_chosen() {
    let az = Azure::start().await;
    let raw = keyward_crypto::random_bytes(32);
    let src = az
        .admin
        .ok(
            Method::PUT,
            "/crypto/v1/keys",
            Some(json!({"name": "source", "group_id": az.plain_group, "obj_type": "AES", "value": b64(&raw),
                "key_ops": ["ENCRYPT", "DECRYPT", "EXPORT", "APPMANAGEABLE"]})),
        )
        .await;
    let src_kid = src["kid"].as_str().unwrap();
    let mut copies = Vec::new();
    for name in ["copy-a", "copy-b", "copy-c"] {
        copies.push(
            az.admin
                .ok(
                    Method::POST,
                    "/crypto/v1/keys/copy",
                    Some(
                        json!({"key": {"kid": src_kid}, "group_id": az.group, "name": name,
                    "key_ops": ["ENCRYPT", "DECRYPT"]}),
                    ),
                )
                .await,
        );
    }
    opens_with(&az.app, copies[0]["kid"].as_str().unwrap(), &raw).await;

    // copy-c is soft-deleted in the HSM: it cannot take a version, and says so; the others
    // rotate regardless.
    az.admin
        .ok(
            Method::POST,
            &format!(
                "/crypto/v1/keys/{}/schedule_deletion",
                copies[2]["kid"].as_str().unwrap()
            ),
            Some(json!({"confirm": true})),
        )
        .await;
    let r = az
        .admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"name": "source", "rotate_copied_keys": "all_external"})),
        )
        .await;
    let outcomes = r["rotated_copies"].as_array().unwrap().clone();
    assert_eq!(outcomes.len(), 3, "{r}");
    let by_kid = |kid: &Value| outcomes.iter().find(|o| o["kid"] == *kid).unwrap().clone();
    assert!(
        by_kid(&copies[2]["kid"])["error"]
            .as_str()
            .unwrap()
            .contains("soft-deleted"),
        "{r}"
    );
    let new_raw = export(&az.app, r["kid"].as_str().unwrap()).await;
    assert_ne!(new_raw, raw);
    for (c, name) in copies.iter().zip(["copy-a", "copy-b"]) {
        let o = by_kid(&c["kid"]);
        assert!(o["error"].is_null(), "{o}");
        let new_copy = get(&az.admin, &o["new_kid"]).await;
        assert_eq!(new_copy["name"], c["name"]);
        assert_eq!(
            new_copy["links"]["copiedFrom"], r["kid"],
            "the new version copies the new source"
        );
        assert_eq!(new_copy["links"]["replaced"], c["kid"]);
        assert_eq!(new_copy["external"]["source"], "Keyward");
        assert_eq!(new_copy["key_ops"], json!(["ENCRYPT", "DECRYPT"]));
        assert_eq!(hsm_versions(&az, name).await.len(), 2);
        opens_with(&az.app, o["new_kid"].as_str().unwrap(), &new_raw).await;
        opens_with(&az.app, c["kid"].as_str().unwrap(), &raw).await;
        assert_eq!(
            az.count(
                "SELECT COUNT(*) FROM escrow_blobs WHERE kid = ?",
                o["new_kid"].as_str().unwrap()
            )
            .await,
            1
        );
    }
    let new_src = get(&az.admin, &r["kid"]).await;
    assert_eq!(new_src["links"]["copiedTo"].as_array().unwrap().len(), 2);

    // A selection rotates just those copies.
    let copy_a2 = by_kid(&copies[0]["kid"])["new_kid"].clone();
    let r2 = az
        .admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"name": "source", "rotate_copied_keys": {"select": [copy_a2]}})),
        )
        .await;
    assert_eq!(r2["rotated_copies"].as_array().unwrap().len(), 1, "{r2}");
    assert_eq!(hsm_versions(&az, "copy-a").await.len(), 3);
    assert_eq!(hsm_versions(&az, "copy-b").await.len(), 2);
}

#[tokio::test]
async fn an_azure_native_key_rotates_to_keyward_owned_material() {
    let az = Azure::start().await;
    let native = az
        .app
        .create_key(
            json!({"name": "to-own", "group_id": az.group, "obj_type": "AES", "key_size": 256,
            "key_ops": ["ENCRYPT", "DECRYPT", "APPMANAGEABLE"]}),
        )
        .await;
    assert_eq!(native["external"]["source"], "External");
    let raw = keyward_crypto::random_bytes(32);
    let src = az
        .admin
        .ok(
            Method::PUT,
            "/crypto/v1/keys",
            Some(
                json!({"name": "owned", "group_id": az.plain_group, "obj_type": "AES",
            "value": b64(&raw), "key_ops": ["ENCRYPT", "DECRYPT"]}),
            ),
        )
        .await;
    let r = az
        .admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{}/rekey", native["kid"].as_str().unwrap()),
            Some(json!({"rotate_from": {"name": "owned"}})),
        )
        .await;
    assert_eq!(
        r["external"]["source"], "Keyward",
        "the source now shows the catalog"
    );
    assert_eq!(r["links"]["copiedFrom"], src["kid"]);
    assert_eq!(r["links"]["replaced"], native["kid"]);
    assert_eq!(
        r["key_ops"],
        json!(["ENCRYPT", "DECRYPT"]),
        "no more than the source permits"
    );
    assert_eq!(hsm_versions(&az, "to-own").await.len(), 2);
    opens_with(&az.app, r["kid"].as_str().unwrap(), &raw).await;

    // The source must match the key's type and size.
    let rsa = az
        .admin
        .create_key(json!({"name": "rsa-src", "group_id": az.plain_group, "obj_type": "RSA", "key_size": 2048, "key_ops": ["SIGN", "VERIFY", "EXPORT"]}))
        .await;
    let (s, b) = az
        .admin
        .call(
            Method::POST,
            &format!("/crypto/v1/keys/{}/rekey", r["kid"].as_str().unwrap()),
            Some(json!({"rotate_from": {"kid": rsa["kid"]}})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
}

#[tokio::test]
async fn managed_hsm_keys_have_at_most_100_versions() {
    let az = Azure::start().await;
    az.app
        .create_key(json!({"name": "busy", "group_id": az.group, "obj_type": "EC", "elliptic_curve": "NistP256",
            "key_ops": ["SIGN", "VERIFY", "APPMANAGEABLE"]}))
        .await;
    for _ in 1..100 {
        az.app
            .ok(
                Method::POST,
                "/crypto/v1/keys/rekey",
                Some(json!({"name": "busy"})),
            )
            .await;
    }
    assert_eq!(hsm_versions(&az, "busy").await.len(), 100);
    let (s, b) = az
        .app
        .call(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"name": "busy"})),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("100 versions"),
        "{b}"
    );

    // The emulator refuses the 101st version itself, as Managed HSM does.
    let link = az.link().await;
    let e = az
        .daemon
        .state
        .kms
        .rotate_key(&link, "busy")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("100 versions"), "{e}");
    assert_eq!(hsm_versions(&az, "busy").await.len(), 100);
}
