//! No secret (password, API key, client secret, client private key, key material) appears
//! in the logs, the audit log, or any API response other than the one that hands it out
//! (application creation and key reset for API keys, export for key material), nor
//! unsealed in the catalog's files.

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use keyward_tests::api::{Api, TestDaemon, b64, log_entries, unb64};
use keyward_tests::azure;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every response body seen, except those that hand a secret out by design.
#[derive(Default)]
struct Responses(Vec<String>);

impl Responses {
    async fn call(&mut self, api: &Api, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, reply) = api.call(method.clone(), path, body).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {reply}");
        self.0.push(reply.to_string());
        reply
    }
}

/// The forms a secret could leak in.
fn forms(secret: &[u8]) -> Vec<String> {
    let mut f = vec![
        STANDARD.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
        secret.iter().map(|b| format!("{b:02x}")).collect(),
        secret.iter().map(|b| format!("{b:02X}")).collect(),
    ];
    if let Ok(s) = std::str::from_utf8(secret) {
        f.push(s.to_string());
    }
    f
}

#[tokio::test]
async fn secrets_never_leak() {
    let captured = Captured::default();
    let sink = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();

    let em = azure::emulator().await;
    let tmp = tempfile::tempdir().unwrap();
    let d = TestDaemon::start_configured(tmp.path(), azure::allow_local)
        .await
        .unwrap();
    let mut seen = Responses::default();
    let admin_password = "admin-password-f7d1c2";
    let user_password = "user-password-93ab1e";
    // The emulator's application secret: the connector really authenticates with it.
    let client_secret = azure::SECRET;
    let client_key = keyward_tests::tls::TestCa::new("mTLS").issue(&["client"]);
    let client_key_body: String = client_key
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();

    let anon = d.anonymous();
    seen.call(
        &anon,
        Method::POST,
        "/sys/v1/users",
        Some(json!({"user_email": "admin@example.com", "user_password": admin_password})),
    )
    .await;
    let admin = d.login("admin@example.com", admin_password).await;
    seen.call(&admin, Method::POST, "/sys/v1/users/invite", Some(json!({"user_email": "u@example.com", "user_password": user_password, "account_role": "member"}))).await;
    d.login("u@example.com", user_password).await;
    let bad = keyward_tests::api::http_client()
        .post(format!("{}/sys/v1/session/auth", d.url))
        .basic_auth("admin@example.com", Some("WRONG-password-4411"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    seen.0.push(bad.text().await.unwrap());

    let mut link = azure::link(&em, client_secret, Some(azure::HSM));
    link["tls"]["client_cert"] = json!(client_key.cert_pem);
    link["tls"]["client_key"] = json!(client_key.key_pem);
    let g = seen
        .call(
            &admin,
            Method::POST,
            "/sys/v1/groups",
            Some(json!({"name": "linked", "external_kms": link})),
        )
        .await["group_id"]
        .as_str()
        .unwrap()
        .to_string();
    seen.call(
        &admin,
        Method::PATCH,
        &format!("/sys/v1/groups/{g}"),
        Some(json!({"external_kms": {"kind": "AzureManagedHsm", "client_secret": client_secret}})),
    )
    .await;
    let plain = seen
        .call(
            &admin,
            Method::POST,
            "/sys/v1/groups",
            Some(json!({"name": "plain"})),
        )
        .await["group_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The API key is handed out in this response only.
    let created = admin
        .ok(
            Method::POST,
            "/sys/v1/apps",
            Some(json!({"name": "app", "groups": [plain, g], "default_group": plain})),
        )
        .await;
    let api_key = created["api_key"].as_str().unwrap().to_string();
    let app_id = created["app_id"].as_str().unwrap().to_string();
    let key_secret = String::from_utf8(STANDARD.decode(&api_key).unwrap())
        .unwrap()
        .split_once(':')
        .unwrap()
        .1
        .to_string();
    let app = d.login_app(&api_key).await;

    let aes = keyward_crypto::random_bytes(32);
    let rsa_der = keyward_crypto::Material::generate_rsa(2048, None)
        .unwrap()
        .to_der();
    let hex: String = aes.iter().map(|b| format!("{b:02x}")).collect();
    let imported = seen.call(&app, Method::PUT, "/crypto/v1/keys", Some(json!({"name": "aes-imported", "obj_type": "AES", "value": hex, "value_format": "hex"}))).await;
    seen.call(
        &app,
        Method::PUT,
        "/crypto/v1/keys",
        Some(json!({"name": "rsa-imported", "obj_type": "RSA", "value": b64(&rsa_der)})),
    )
    .await;
    let kid = imported["kid"].as_str().unwrap().to_string();
    let ct = seen
        .call(
            &app,
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/encrypt"),
            Some(json!({"alg": "AES", "plain": b64(b"payload")})),
        )
        .await;
    seen.call(
        &app,
        Method::POST,
        &format!("/crypto/v1/keys/{kid}/decrypt"),
        Some(json!({"alg": "AES", "cipher": ct["cipher"], "iv": ct["iv"], "tag": ct["tag"]})),
    )
    .await;
    let exportable = seen.call(&app, Method::POST, "/crypto/v1/keys", Some(json!({"name": "exportable", "obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT", "EXPORT"]}))).await;
    // Export hands the material out, by design; it must not show anywhere else.
    let exported = unb64(
        &app.ok(
            Method::POST,
            "/crypto/v1/keys/export",
            Some(json!({"kid": exportable["kid"]})),
        )
        .await["value"],
    );
    // Into the HSM: connection test, generate, import (BYOK), sync, use.
    seen.call(
        &admin,
        Method::POST,
        &format!("/sys/v1/groups/{g}/hmg/check"),
        None,
    )
    .await;
    seen.call(
        &app,
        Method::POST,
        "/crypto/v1/keys",
        Some(json!({"name": "in-hsm", "group_id": g, "obj_type": "RSA", "key_size": 2048})),
    )
    .await;
    let aes_hsm = keyward_crypto::random_bytes(32);
    let in_hsm = seen.call(&app, Method::PUT, "/crypto/v1/keys", Some(json!({"name": "imported-into-hsm", "group_id": g, "obj_type": "AES", "value": b64(&aes_hsm)}))).await;
    seen.call(
        &admin,
        Method::POST,
        &format!("/sys/v1/groups/{g}/hmg/scan"),
        None,
    )
    .await;
    seen.call(
        &app,
        Method::POST,
        &format!(
            "/crypto/v1/keys/{}/encrypt",
            in_hsm["kid"].as_str().unwrap()
        ),
        Some(json!({"alg": "AES", "plain": b64(b"payload")})),
    )
    .await;
    seen.call(&admin, Method::GET, "/sys/v1/workflow_runs?limit=200", None)
        .await;
    seen.call(&app, Method::GET, "/crypto/v1/keys", None).await;
    seen.call(&admin, Method::GET, "/sys/v1/groups", None).await;
    seen.call(&admin, Method::GET, &format!("/sys/v1/apps/{app_id}"), None)
        .await;
    let reset = admin
        .ok(
            Method::POST,
            &format!("/sys/v1/apps/{app_id}/reset_secret"),
            None,
        )
        .await;
    let new_secret =
        String::from_utf8(STANDARD.decode(reset["api_key"].as_str().unwrap()).unwrap())
            .unwrap()
            .split_once(':')
            .unwrap()
            .1
            .to_string();
    let audit = seen
        .call(&admin, Method::GET, "/sys/v1/logs?size=1000", None)
        .await;
    assert!(log_entries(&audit).len() > 10, "the scenario was audited");
    let data_dir = d.data_dir.clone();
    d.stop().await;
    em.stop().await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).to_string();
    assert!(logs.contains("keyward is serving"), "logs were captured");
    let catalog_files = keyward_tests::postgres::catalog_bytes(&data_dir).await;
    assert!(catalog_files.len() > 10_000, "the catalog files were read");
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("admin password", admin_password.into()),
        ("user password", user_password.into()),
        ("wrong password", b"WRONG-password-4411".to_vec()),
        ("client secret", client_secret.into()),
        ("client private key", client_key_body.into_bytes()),
        ("API key secret", key_secret.into_bytes()),
        ("reset API key secret", new_secret.into_bytes()),
        ("imported AES key", aes.clone()),
        ("imported RSA key", rsa_der.clone()),
        ("key imported into the HSM", aes_hsm.clone()),
        ("exported key", exported.clone()),
    ];
    let responses = seen.0.join("\n");
    for (what, secret) in &secrets {
        for form in forms(secret) {
            assert!(!logs.contains(&form), "{what} appears in the logs");
            assert!(
                !responses.contains(&form),
                "{what} appears in an API response or the audit log"
            );
        }
        let raw = secret.as_slice();
        assert!(
            !catalog_files.windows(raw.len()).any(|w| w == raw),
            "{what} is stored unsealed in the catalog"
        );
    }
}
