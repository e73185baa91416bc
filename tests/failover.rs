//! Database faults under two daemons: PostgreSQL stopped and started while requests run, and a
//! primary replaced by its synchronous standby. Requests fail fast with 503 while there is
//! no database, nothing committed is lost, and both daemons serve again without a restart,
//! following the primary through the multi-host URL. Each test runs clusters of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyward_tests::api::{Api, TestDaemon, b64};
use keyward_tests::postgres::{Cluster, Pair, create_database};
use reqwest::Method;
use serde_json::{Value, json};

/// A primary with a new database, and its synchronous standby.
async fn primary_and_standby() -> (Cluster, Cluster, String) {
    let primary = Cluster::primary();
    let url = create_database(&primary.admin_url()).await;
    let standby = Cluster::standby_of(&primary);
    primary.synchronous_standby().await;
    let database = url.rsplit('/').next().unwrap().to_string();
    (primary, standby, database)
}

/// The URL daemons use to follow whichever of the two is the primary.
fn multi_host(primary: &Cluster, standby: &Cluster, database: &str) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{database}?target_session_attrs=read-write",
        primary.port, standby.port
    )
}

async fn health(d: &TestDaemon) -> (u16, Value) {
    d.anonymous()
        .call(Method::GET, "/sys/v1/health", None)
        .await
}

#[tokio::test]
async fn postgres_stopped_and_started_gives_fast_503s_then_both_daemons_serve_again() {
    let pg = Cluster::primary();
    let url = create_database(&pg.admin_url()).await;
    let p = Pair::on(&url, |_| {}).await;
    let admin = p.a.bootstrap().await;
    let group = admin.create_group("g", json!({})).await;
    let (_, api_key) = admin.create_app("app", &[group.as_str()]).await;
    let key = admin
        .create_key(
            json!({"name": "before", "group_id": group, "obj_type": "AES", "key_size": 256}),
        )
        .await;
    let kid = key["kid"].as_str().unwrap().to_string();
    let app_a = p.a.login_app(&api_key).await;
    let app_b = app_a.on(&p.b.url);
    let encrypt = |api: Api| {
        let path = format!("/crypto/v1/keys/{kid}/encrypt");
        async move {
            api.call(
                Method::POST,
                &path,
                Some(json!({"alg": "AES", "mode": "GCM", "plain": b64(b"x")})),
            )
            .await
        }
    };
    assert_eq!(encrypt(app_b.clone()).await.0, 200);
    let (s, h) = health(&p.a).await;
    assert_eq!(
        (s, h["database"]["backend"].as_str()),
        (200, Some("postgres"))
    );

    pg.stop();
    for (api, d) in [(&app_a, &p.a), (&app_b, &p.b)] {
        let started = Instant::now();
        // Sessions are read from PostgreSQL on every request, so this is a 503; were the
        // session cached, the answer would still wait for its audit event's commit, and
        // be a 503 after at most 10 s.
        let (s, body) = encrypt(api.clone()).await;
        match s {
            200 => assert!(body["cipher"].is_string(), "{body}"),
            503 => assert_eq!(body["code"], "Unavailable"),
            other => panic!("encrypt answered {other} with the database down: {body}"),
        }
        let (s, _) = admin
            .on(&d.url)
            .call(
                Method::POST,
                "/crypto/v1/keys",
                Some(json!({"name": "while-down", "group_id": group, "obj_type": "AES", "key_size": 256})),
            )
            .await;
        assert_eq!(s, 503);
        let (s, h) = health(d).await;
        assert_eq!(s, 503);
        assert_eq!(h["database"]["reachable"], false);
        assert!(h["database"]["error"].is_string(), "{h}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the requests failed fast: {:?}",
            started.elapsed()
        );
    }

    pg.start();
    pg.ready().await;
    for (api, d) in [(&app_a, &p.a), (&app_b, &p.b)] {
        keyward_tests::azure::eventually(60, || async {
            (encrypt(api.clone()).await.0 == 200).then_some(())
        })
        .await;
        assert_eq!(health(d).await.0, 200);
    }
    // What was committed before is there; what was refused while down is not.
    let keys = admin.ok(Method::GET, "/crypto/v1/keys", None).await;
    let names: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["before"]);
    admin
        .create_key(json!({"name": "after", "group_id": group, "obj_type": "AES", "key_size": 256}))
        .await;
}

#[tokio::test]
async fn a_promoted_standby_keeps_every_acknowledged_write_with_its_audit_event() {
    let (primary, standby, database) = primary_and_standby().await;
    let p = Pair::on(&multi_host(&primary, &standby, &database), |_| {}).await;
    let admin = p.a.bootstrap().await;
    let group = admin.create_group("g", json!({})).await;

    // Writes through both daemons, all along; each acknowledged one is remembered.
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [p.a.url.clone(), p.b.url.clone()]
        .into_iter()
        .enumerate()
        .map(|(w, base)| {
            let api = admin.on(&base);
            let (group, acknowledged, stop) = (group.clone(), acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let name = format!("w{w}-{i}");
                    let (s, body) = api
                        .call(
                            Method::POST,
                            "/crypto/v1/keys",
                            Some(json!({"name": name, "group_id": group, "obj_type": "AES", "key_size": 256})),
                        )
                        .await;
                    match s {
                        201 | 200 => acknowledged
                            .lock()
                            .unwrap()
                            .push(body["kid"].as_str().unwrap().to_string()),
                        503 => tokio::time::sleep(Duration::from_millis(100)).await,
                        other => panic!("a write answered {other}: {body}"),
                    }
                }
            })
        })
        .collect();
    let count = || acknowledged.lock().unwrap().len();
    keyward_tests::azure::eventually(60, || async { (count() >= 20).then_some(()) }).await;

    primary.stop();
    standby.promote();
    let at_failover = count();
    keyward_tests::azure::eventually(90, || async { (count() >= at_failover + 20).then_some(()) })
        .await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    for d in [&p.a, &p.b] {
        let (s, h) = health(d).await;
        assert_eq!(s, 200, "{h}");
        assert_eq!(
            h["database"]["host"],
            format!("127.0.0.1:{}", standby.port),
            "following the new primary"
        );
    }

    // On the new primary: every acknowledged key, each with its audit event.
    let promoted = format!("postgres://postgres@127.0.0.1:{}/{database}", standby.port);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&promoted)
        .await
        .unwrap();
    use sqlx::Row;
    let kids: Vec<String> = sqlx::query("SELECT kid FROM sobjects")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let audited: Vec<String> = sqlx::query(
        "SELECT object_id FROM audit_events WHERE action = 'key.create' AND outcome = 'success'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 40);
    for kid in &acknowledged {
        assert!(
            kids.contains(kid),
            "acknowledged key {kid} is on the new primary"
        );
        assert!(audited.contains(kid), "with its audit event: {kid}");
    }
    drop(primary);
}

/// The deployment example of docs/deployment.md: two daemons behind nginx (`deploy/nginx.conf`,
/// Debian's nginx), PostgreSQL primary and synchronous standby. Clients talk to nginx only;
/// a daemon dies and the database fails over, and the clients carry on.
#[tokio::test]
async fn the_deployment_example_keeps_serving_through_a_lost_daemon_and_a_failover() {
    let (primary, standby, database) = primary_and_standby().await;
    let p = Pair::on(&multi_host(&primary, &standby, &database), |_| {}).await;
    let nginx = Nginx::start(&p.a.url, &p.b.url);
    let lb = keyward_tests::api::Endpoint::at(&nginx.url);
    let admin = lb.bootstrap().await;
    let group = admin.create_group("g", json!({})).await;
    let (_, api_key) = admin.create_app("app", &[group.as_str()]).await;
    let key = admin
        .create_key(json!({"name": "k", "group_id": group, "obj_type": "AES", "key_size": 256}))
        .await;
    let path = format!("/crypto/v1/keys/{}/encrypt", key["kid"].as_str().unwrap());
    let app = lb.login_app(&api_key).await;
    let encrypt = || {
        let (app, path) = (app.clone(), path.clone());
        async move {
            app.call(
                Method::POST,
                &path,
                Some(json!({"alg": "AES", "mode": "GCM", "plain": b64(b"through nginx")})),
            )
            .await
            .0
        }
    };
    for _ in 0..10 {
        assert_eq!(encrypt().await, 200);
    }
    // Daemon A goes away: nginx passes every request to B.
    let Pair { a, b, .. } = p;
    a.stop().await;
    for _ in 0..10 {
        assert_eq!(encrypt().await, 200, "served by B");
    }
    // The primary goes away; the standby is promoted; B follows it.
    primary.stop();
    standby.promote();
    keyward_tests::azure::eventually(60, || async {
        let (s, _) = admin
            .call(
                Method::POST,
                "/crypto/v1/keys",
                Some(json!({"name": "after failover", "group_id": group, "obj_type": "AES", "key_size": 256})),
            )
            .await;
        (s == 201).then_some(())
    })
    .await;
    assert_eq!(encrypt().await, 200);
    drop(nginx);
    b.stop().await;
}

/// nginx from Debian's packages with `deploy/nginx.conf`, in the foreground, on a free port.
struct Nginx {
    url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(a: &str, b: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let template = include_str!("../deploy/nginx.conf");
        let conf = template
            .replace("{DIR}", &dir.path().display().to_string())
            .replace("{LISTEN}", &format!("127.0.0.1:{port}"))
            .replace("{DAEMON_A}", a.trim_start_matches("http://"))
            .replace("{DAEMON_B}", b.trim_start_matches("http://"));
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = std::process::Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(&path)
            .args(["-p", &dir.path().display().to_string(), "-g", "daemon off;"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx from Debian's packages (tests/deps.sh installs it)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            url: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    /// SIGTERM, so that the master stops its workers (SIGKILL would leave them behind).
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
