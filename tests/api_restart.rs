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

/// Not a test: the daemon the crash test starts in a child process and kills.
#[test]
#[ignore = "run by the crash test as its child daemon"]
fn child_daemon() {
    keyward_tests::child::serve(|_| {});
}

/// Eight applications' sessions encrypt as fast as they can; the daemon is killed with
/// SIGKILL in the middle. On the same data, every encryption that was answered has its
/// audit event (the answer waits for the event's commit), and so does every key that was
/// created.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_killed_under_load_keeps_every_answered_operations_audit_event() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let (mut child, daemon) = keyward_tests::child::spawn(dir.path(), "child_daemon").await;
    let admin = daemon.bootstrap().await;
    let g = admin.create_group("load", json!({})).await;
    let (_, api_key) = admin.create_app("load", &[&g]).await;
    let app = daemon.login_app(&api_key).await;
    let key = app
        .create_key(json!({"name": "busy", "obj_type": "AES", "key_size": 256}))
        .await;
    let kid = key["kid"].as_str().unwrap().to_string();
    let token = app.token.clone().unwrap();

    let answered = Arc::new(AtomicU64::new(0));
    let keys_made = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (answered, keys_made, stop) = (answered.clone(), keys_made.clone(), stop.clone());
        let (url, token, kid) = (daemon.url.clone(), token.clone(), kid.clone());
        clients.push(tokio::spawn(async move {
            let http = keyward_tests::api::http_client();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // Every tenth call makes a key, the others encrypt.
                let (path, body) = if i.is_multiple_of(10) {
                    (
                        "/crypto/v1/keys".to_string(),
                        json!({"name": format!("k-{c}-{i}"), "obj_type": "AES", "key_size": 128}),
                    )
                } else {
                    (
                        format!("/crypto/v1/keys/{kid}/encrypt"),
                        json!({"alg": "AES", "plain": b64(b"sixteen  bytes!!")}),
                    )
                };
                let sent = http
                    .post(format!("{url}{path}"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                let Ok(resp) = sent else { break };
                let ok = resp.status().is_success();
                let Ok(v) = resp.json::<serde_json::Value>().await else {
                    break;
                };
                if ok && i.is_multiple_of(10) {
                    keys_made
                        .lock()
                        .unwrap()
                        .push(v["kid"].as_str().unwrap().into());
                } else if ok {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let answered = answered.load(Ordering::SeqCst);
    let keys_made = keys_made.lock().unwrap().clone();
    assert!(answered > 100, "the load ran: {answered} encryptions");

    let d = TestDaemon::start_in(dir.path()).await.unwrap();
    let mut conn = d.state.catalog.conn().await.unwrap();
    let recorded = events(&mut conn, "key.encrypt", &kid).await;
    assert!(
        recorded as u64 >= answered,
        "{answered} encryptions were answered, {recorded} have their event"
    );
    for made in &keys_made {
        let created = events(&mut conn, "key.create", made).await;
        assert_eq!(created, 1, "the created key {made} has its event");
    }
}

/// How many audit events of `action` name `object`.
async fn events(conn: &mut keyward::catalog::Conn, action: &str, object: &str) -> i64 {
    let mut q =
        keyward::catalog::db::Builder::new("SELECT COUNT(*) FROM audit_events WHERE action = ");
    q.push_bind(action.to_string())
        .push(" AND object_id = ")
        .push_bind(object.to_string());
    q.build().fetch_one(conn).await.unwrap().get(0)
}
