//! How the API is reached and entered: HTTPS with the daemon's certificate, plain HTTP only on
//! loopback unless asked for, the demo on loopback only, and failed logins throttled per
//! account name and per source address.

use std::net::SocketAddr;
use std::time::Duration;

use keyward::auth::ThrottleLimits;
use keyward::daemon::{DaemonConfig, DaemonError, TlsFiles};
use keyward_tests::api::{ADMIN_EMAIL, ADMIN_PASSWORD, TestDaemon, http_client};
use keyward_tests::tls::TestCa;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn the_api_serves_https_with_the_given_certificate() {
    let ca = TestCa::new("keyward test CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("api.crt"), dir.path().join("api.key"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let d = TestDaemon::start_with(|c| {
        c.tls = Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await;
    let port = d.url.rsplit(':').next().unwrap().to_string();
    let _ = http_client();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let health = client
        .get(format!("https://localhost:{port}/sys/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let signup = client
        .post(format!("https://localhost:{port}/sys/v1/users"))
        .json(&json!({"user_email": ADMIN_EMAIL, "user_password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    // Plain HTTP to the same port gets no API.
    let plain = http_client()
        .get(format!("http://127.0.0.1:{port}/sys/v1/health"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    // A client that does not trust the certificate does not get through either.
    let untrusting = http_client()
        .get(format!("https://localhost:{port}/sys/v1/health"))
        .send()
        .await;
    assert!(untrusting.is_err());
    d.stop().await;

    // A certificate file that holds none is refused at start, naming the file.
    std::fs::write(&cert, "not a certificate").unwrap();
    let err = TestDaemon::start_with_result(|c| {
        c.tls = Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await
    .err()
    .expect("refused");
    assert!(matches!(err, DaemonError::Tls(_)), "{err}");
    assert!(err.to_string().contains("api.crt"), "{err}");
}

#[tokio::test]
async fn plain_http_is_served_on_loopback_only_unless_asked_for() {
    let everywhere: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let err = TestDaemon::start_with_result(|c| c.listen = everywhere)
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, DaemonError::InsecureListen(_)), "{err}");
    assert!(err.to_string().contains("--tls-cert"), "{err}");
    let d = TestDaemon::start_with(|c| {
        c.listen = everywhere;
        c.insecure_http = true;
    })
    .await;
    let port = d.url.rsplit(':').next().unwrap().to_string();
    let health = http_client()
        .get(format!("http://127.0.0.1:{port}/sys/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    d.stop().await;

    // The demo prints its administrator's password: it will not listen beyond loopback.
    let dir = tempfile::tempdir().unwrap();
    let mut config = DaemonConfig::new(dir.path());
    config.listen = everywhere;
    let err = keyward::demo::run(
        config,
        keyward::demo::EmulatorPorts { https: 0, admin: 0 },
        async {},
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(err, keyward::demo::DemoError::NotLoopback(_)),
        "{err}"
    );
}

#[tokio::test]
async fn failed_logins_are_throttled_per_name_and_per_address() {
    let d = TestDaemon::start_with(|c| {
        c.login_limits = ThrottleLimits {
            per_name: 3,
            per_address: 6,
            window_secs: 300,
        };
    })
    .await;
    d.bootstrap().await;
    let login = |email: &str, password: &str| {
        let (url, email, password) = (d.url.clone(), email.to_string(), password.to_string());
        async move {
            http_client()
                .post(format!("{url}/sys/v1/session/auth"))
                .basic_auth(email, Some(password))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(login(ADMIN_EMAIL, "wrong password").await.status(), 401);
    }
    // Now even the right password waits, and is told how long.
    let refused = login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&wait), "{wait}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "TooManyRequests");
    // Unknown emails count the same as known ones; and the address has its own limit.
    for i in 0..3 {
        assert_eq!(
            login(&format!("nobody{i}@example.com"), "guess")
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        login("someone-new@example.com", "guess").await.status(),
        429,
        "the address is over its limit"
    );
    d.clock.advance(301);
    let ok = login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(ok.status(), 200, "the window has moved on");
    // A successful login clears the name's failures.
    let api = d.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    api.ok(Method::GET, "/sys/v1/users", None).await;
    d.stop().await;
}
