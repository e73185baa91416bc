//! Restart: the catalog, its sealed secrets and the accounts' workflow scripts survive; a wrong master key refuses to start
//! with a clear message.

use keyward::catalog::CatalogError;
use keyward::daemon::DaemonError;
use keyward_tests::api::{ADMIN_EMAIL, ADMIN_PASSWORD, TestDaemon, b64, log_entries, unb64};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn data_and_sealed_secrets_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start_in(dir.path()).await.unwrap();
    let admin = d.bootstrap().await;
    let g = admin
        .create_group(
            "linked",
            json!({"external_kms": {"kind": "AzureManagedHsm", "tenant_id": "t", "client_id": "c", "client_secret": "s3cr3t-client-value", "subscription_id": "sub"}}),
        )
        .await;
    let plain = admin.create_group("plain", json!({})).await;
    let (_, api_key) = admin.create_app("app", &[&plain, &g]).await;
    let app = d.login_app(&api_key).await;
    let key = app
        .create_key(json!({"name": "survivor", "obj_type": "AES", "key_size": 256}))
        .await;
    let kid = key["kid"].as_str().unwrap().to_string();
    let ct = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/encrypt"),
            Some(json!({"alg": "AES", "plain": b64(b"kept across restarts")})),
        )
        .await;
    // An account's own workflow script, in its second version.
    for greeting in ["first", "second"] {
        admin
            .ok(
                Method::PUT,
                "/sys/v1/workflows/greet",
                Some(json!({"source": format!("output.greeting = \"{greeting}\";")})),
            )
            .await;
    }
    d.stop().await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the master key file is private");
    }

    let d = TestDaemon::start_in(dir.path()).await.unwrap();
    let admin = d.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let app = d.login_app(&api_key).await;
    let pt = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/decrypt"),
            Some(json!({"alg": "AES", "cipher": ct["cipher"], "iv": ct["iv"], "tag": ct["tag"]})),
        )
        .await;
    assert_eq!(unb64(&pt["plain"]), b"kept across restarts");
    let group = admin
        .ok(Method::GET, &format!("/sys/v1/groups/{g}"), None)
        .await;
    assert_eq!(group["external_kms"]["has_client_secret"], true);
    assert!(!group.to_string().contains("s3cr3t-client-value"));
    // The audit log of before the restart is still there.
    let log = admin
        .ok(Method::GET, "/sys/v1/logs?action=key.encrypt", None)
        .await;
    assert_eq!(log_entries(&log).len(), 1);
    // The account's script is back in its last version.
    let run = admin
        .ok(Method::POST, "/sys/v1/workflows/greet/run", Some(json!({})))
        .await;
    assert_eq!(run["output"]["greeting"], "second", "{run}");
    let versions = admin
        .ok(Method::GET, "/sys/v1/workflows/greet/versions", None)
        .await;
    assert_eq!(versions.as_array().unwrap().len(), 2);
    d.stop().await;

    // Another master key does not open this catalog.
    std::fs::remove_file(dir.path().join("master.key")).unwrap();
    std::fs::write(dir.path().join("master.key"), b64(&[7u8; 32])).unwrap();
    match TestDaemon::start_in(dir.path()).await {
        Err(DaemonError::Catalog(CatalogError::WrongMasterKey)) => {}
        Err(other) => panic!("expected a wrong-master-key error, got {other}"),
        Ok(_) => panic!("the daemon started with the wrong master key"),
    }
    let message = CatalogError::WrongMasterKey.to_string();
    assert!(
        message.contains("master key") && message.contains("cannot be recovered"),
        "{message}"
    );
}
