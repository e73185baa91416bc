//! Applications that log in with a TLS client certificate (DSM's `Certificate` and
//! `TrustedCa`): which certificates get in, that the session stays bound to the certificate,
//! revocation through uploaded and fetched CRLs, the trusted proxy's header, and the
//! warnings before a certificate expires. Certificates come from throwaway CAs made here.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward::daemon::{DaemonConfig, TlsFiles};
use keyward::plugins::HostPattern;
use keyward_tests::api::{Api, TestDaemon, b64, http_client};
use keyward_tests::tls::{ClientSpec, Leaf, TestCa};
use reqwest::Method;
use serde_json::{Value, json};

const DAY: i64 = 86_400;

/// A daemon serving HTTPS with a certificate of its own CA, and clients of it.
struct Https {
    daemon: TestDaemon,
    server_ca: TestCa,
    base: String,
    _dir: tempfile::TempDir,
}

impl Https {
    async fn start(adjust: impl FnOnce(&mut DaemonConfig)) -> Https {
        let server_ca = TestCa::new("keyward server CA");
        let leaf = server_ca.issue(&["localhost", "127.0.0.1"]);
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("api.crt"), dir.path().join("api.key"));
        std::fs::write(&cert, &leaf.cert_pem).unwrap();
        std::fs::write(&key, &leaf.key_pem).unwrap();
        let daemon = TestDaemon::start_with(|c| {
            c.tls = Some(TlsFiles { cert, key });
            adjust(c);
        })
        .await;
        let port = daemon.url.rsplit(':').next().unwrap().to_string();
        Https {
            daemon,
            server_ca,
            base: format!("https://localhost:{port}"),
            _dir: dir,
        }
    }

    /// A client that trusts the daemon and presents `cert`, if given.
    fn client(&self, cert: Option<&Leaf>) -> reqwest::Client {
        let _ = http_client();
        let mut b = reqwest::Client::builder().add_root_certificate(
            reqwest::Certificate::from_pem(self.server_ca.pem().as_bytes()).unwrap(),
        );
        if let Some(c) = cert {
            b = b.identity(c.identity());
        }
        b.build().unwrap()
    }

    async fn admin(&self) -> Api {
        let anon = Api::over(self.client(None), &self.base);
        let (s, b) = anon
            .call(
                Method::POST,
                "/sys/v1/users",
                Some(json!({"user_email": keyward_tests::api::ADMIN_EMAIL,
                    "user_password": keyward_tests::api::ADMIN_PASSWORD})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let basic = STANDARD.encode(format!(
            "{}:{}",
            keyward_tests::api::ADMIN_EMAIL,
            keyward_tests::api::ADMIN_PASSWORD
        ));
        let (s, b) = basic_login(&self.client(None), &self.base, &basic).await;
        assert_eq!(s, 200, "{b}");
        let mut api = Api::over(self.client(None), &self.base);
        api.token = b["access_token"].as_str().map(str::to_string);
        api
    }

    /// DSM's certificate login: `Basic base64(<app_id>:)`, presenting `cert`.
    async fn cert_login(&self, app_id: &str, cert: Option<&Leaf>) -> (u16, Value, Api) {
        let client = self.client(cert);
        let basic = STANDARD.encode(format!("{app_id}:"));
        let (s, b) = basic_login(&client, &self.base, &basic).await;
        let mut api = Api::over(client, &self.base);
        api.token = b["access_token"].as_str().map(str::to_string);
        (s, b, api)
    }
}

async fn basic_login(client: &reqwest::Client, base: &str, basic: &str) -> (u16, Value) {
    let r = client
        .post(format!("{base}/sys/v1/session/auth"))
        .header("authorization", format!("Basic {basic}"))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// The audit events of `action`, newest first, once the queued ones are written.
async fn audited(d: &TestDaemon, admin: &Api, action: &str) -> Vec<Value> {
    d.state.audit.flush().await;
    let logs = admin
        .ok(
            Method::GET,
            &format!("/sys/v1/logs?action={action}&size=1000"),
            None,
        )
        .await;
    keyward_tests::api::log_entries(&logs)
}

async fn encrypt(api: &Api, kid: &str) -> (u16, Value) {
    api.call(
        Method::POST,
        &format!("/crypto/v1/keys/{kid}/encrypt"),
        Some(json!({"alg": "AES", "mode": "GCM", "plain": b64(b"for the ledger")})),
    )
    .await
}

async fn create_app(admin: &Api, name: &str, group: &str, credential: Value) -> Value {
    let (s, b) = admin
        .call(
            Method::POST,
            "/sys/v1/apps",
            Some(json!({"name": name, "groups": [group], "credential": credential})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b
}

#[tokio::test]
async fn applications_log_in_with_their_certificate_and_only_with_it() {
    let h = Https::start(|_| {}).await;
    let admin = h.admin().await;
    let g = admin.create_group("ledger", json!({})).await;
    let key = admin
        .create_key(
            json!({"name": "ledger-key", "group_id": g, "obj_type": "AES", "key_size": 256}),
        )
        .await;
    let kid = key["kid"].as_str().unwrap();

    let clients = TestCa::new("billing clients CA");
    let pinned_cert = ClientSpec::named("pinned-app", 1).self_signed();
    let billing = clients.issue_client(&ClientSpec::named("billing", 10));
    let other_cn = clients.issue_client(&ClientSpec::named("payroll", 11));
    let now = time::OffsetDateTime::now_utc();
    let expired = clients.issue_client(&ClientSpec {
        not_before: now - time::Duration::days(30),
        not_after: now - time::Duration::days(1),
        ..ClientSpec::named("billing", 12)
    });
    let stranger = TestCa::new("someone else's CA").issue_client(&ClientSpec::named("billing", 13));

    // A pinned certificate, given as PEM; a trusted CA with a subject, as base64 DER.
    let pinned = create_app(
        &admin,
        "pinned",
        &g,
        json!({"certificate": pinned_cert.cert_pem}),
    )
    .await;
    assert_eq!(pinned["auth_type"], "Certificate", "{pinned}");
    assert!(pinned.get("api_key").is_none(), "no API key: {pinned}");
    assert!(pinned["cert_not_after"].is_string(), "{pinned}");
    let pinned_id = pinned["app_id"].as_str().unwrap();
    let trusted = create_app(
        &admin,
        "trusted",
        &g,
        json!({"trustedca": {"ca_certificate": b64(&clients.der()), "subject": [["CN", "billing"]]}}),
    )
    .await;
    assert_eq!(trusted["auth_type"], "TrustedCa");
    assert_eq!(trusted["cert_subject"], "CN=billing");
    let trusted_id = trusted["app_id"].as_str().unwrap();

    // Each logs in with its certificate and encrypts.
    let (s, b, pinned_api) = h.cert_login(pinned_id, Some(&pinned_cert)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["entity_id"], pinned_id);
    assert_eq!(encrypt(&pinned_api, kid).await.0, 200);
    let (s, b, trusted_api) = h.cert_login(trusted_id, Some(&billing)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(encrypt(&trusted_api, kid).await.0, 200);

    // Refused: no certificate, another application's certificate, a certificate of the CA
    // with another subject, an expired one, one of another CA with the right subject.
    for (app, cert, why) in [
        (pinned_id, None, "no client certificate"),
        (pinned_id, Some(&billing), "not the application's pinned"),
        (trusted_id, Some(&pinned_cert), "does not chain"),
        (trusted_id, Some(&other_cn), "does not carry"),
        (trusted_id, Some(&expired), "not valid at this time"),
        (trusted_id, Some(&stranger), "does not chain"),
    ] {
        let (s, b, _) = h.cert_login(app, cert).await;
        assert_eq!(s, 401, "{why}: {b}");
        assert_eq!(b["message"], "invalid credentials", "{b}");
        let denied = audited(&h.daemon, &admin, "session.auth").await;
        assert!(
            denied.iter().any(|e| e["outcome"] == "denied"
                && e["message"].as_str().unwrap_or_default().contains(why)),
            "the audit log says why ({why}): {denied:?}"
        );
    }

    // The token works only with the certificate it logged in with.
    let token = pinned_api.token.clone();
    for cert in [None, Some(&billing)] {
        let mut replay = Api::over(h.client(cert), &h.base);
        replay.token = token.clone();
        let (s, b) = encrypt(&replay, kid).await;
        assert_eq!(s, 401, "{b}");
        assert!(
            b["message"]
                .as_str()
                .unwrap()
                .contains("client certificate"),
            "{b}"
        );
    }
    assert_eq!(encrypt(&pinned_api, kid).await.0, 200, "still with it");

    // An API-key application works on the same listener, and cannot log in as a
    // certificate application (nor the other way round).
    let (s, b) = admin
        .call(
            Method::POST,
            "/sys/v1/apps",
            Some(json!({"name": "keyed", "groups": [g]})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["auth_type"], "Secret");
    let api_key = b["api_key"].as_str().unwrap();
    let (s, _) = basic_login(&h.client(None), &h.base, api_key).await;
    assert_eq!(s, 200);
    let (s, _, _) = h
        .cert_login(b["app_id"].as_str().unwrap(), Some(&pinned_cert))
        .await;
    assert_eq!(
        s, 401,
        "a secret application does not log in by certificate"
    );
    let (s, b) = admin
        .call(
            Method::GET,
            &format!("/sys/v1/apps/{pinned_id}/credential"),
            None,
        )
        .await;
    assert_eq!(s, 409, "a certificate application has no secret: {b}");

    // A new certificate ends the old one's sessions; reset_secret turns it into an API-key
    // application, whose certificate no longer logs in.
    let renewed = ClientSpec::named("pinned-app", 2).self_signed();
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/apps/{pinned_id}"),
            Some(json!({"credential": {"certificate": b64(&renewed.der())}})),
        )
        .await;
    assert_eq!(
        encrypt(&pinned_api, kid).await.0,
        401,
        "the old session ended"
    );
    assert_eq!(h.cert_login(pinned_id, Some(&pinned_cert)).await.0, 401);
    assert_eq!(h.cert_login(pinned_id, Some(&renewed)).await.0, 200);
    let reset = admin
        .ok(
            Method::POST,
            &format!("/sys/v1/apps/{pinned_id}/reset_secret"),
            None,
        )
        .await;
    assert_eq!(reset["auth_type"], "Secret");
    assert_eq!(h.cert_login(pinned_id, Some(&renewed)).await.0, 401);
    let (s, _) = basic_login(&h.client(None), &h.base, reset["api_key"].as_str().unwrap()).await;
    assert_eq!(s, 200);

    // Bad credentials are 400s naming the field, and change nothing.
    let ca = b64(&clients.der());
    for (bad, field) in [
        (json!({"certificate": "not a certificate"}), "credential"),
        (json!({"trustedca": {"ca_certificate": ca}}), "credential"),
        (
            json!({"trustedca": {"ca_certificate": ca, "subject": [["CN"]]}}),
            "credential",
        ),
        (
            json!({"trustedca": {"ca_certificate": b64(&billing.der()), "subject": [["CN", "x"]]}}),
            "credential",
        ),
        (
            json!({"trustedca": {"ca_certificate": ca, "subject": [["CN", "x"]], "crl_url": "http://127.0.0.1:9/crl"}}),
            "crl_url",
        ),
        (
            json!({"certificate": pinned_cert.cert_pem, "trustedca": {"ca_certificate": ca, "subject": [["CN", "x"]]}}),
            "credential",
        ),
        (json!({}), "credential"),
    ] {
        let (s, b) = admin
            .call(
                Method::POST,
                "/sys/v1/apps",
                Some(json!({"name": "bad", "groups": [g], "credential": bad})),
            )
            .await;
        assert_eq!((s, b["field"].as_str()), (400, Some(field)), "{bad}: {b}");
    }
    let names: Vec<Value> = admin
        .ok(Method::GET, "/sys/v1/apps", None)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].clone())
        .collect();
    assert!(!names.contains(&json!("bad")), "{names:?}");
    h.daemon.stop().await;
}

#[tokio::test]
async fn revoked_certificates_are_refused_by_uploaded_and_fetched_crls() {
    let clients = TestCa::new("clients CA");
    let good = clients.issue_client(&ClientSpec::named("billing", 100));
    let revoked = clients.issue_client(&ClientSpec::named("billing", 101));
    let crl = clients.crl(&[101]);
    let crl_server = CrlServer::start(crl.clone()).await;
    let allowed = format!("http://{}", crl_server.addr);
    let h = Https::start(|c| {
        c.client_certs.crl_allowed_hosts = vec![HostPattern::parse(&allowed).unwrap()];
    })
    .await;
    let admin = h.admin().await;
    let g = admin.create_group("ledger", json!({})).await;
    let ca = b64(&clients.der());
    let uploaded = create_app(
        &admin,
        "uploaded",
        &g,
        json!({"trustedca": {"ca_certificate": ca, "subject": [["CN", "billing"]], "crl": crl}}),
    )
    .await;
    let fetched = create_app(
        &admin,
        "fetched",
        &g,
        json!({"trustedca": {"ca_certificate": ca, "subject": [["CN", "billing"]],
            "crl_url": format!("{allowed}/clients.crl")}}),
    )
    .await;
    for app in [&uploaded, &fetched] {
        let id = app["app_id"].as_str().unwrap();
        assert_eq!(h.cert_login(id, Some(&good)).await.0, 200, "{app}");
        assert_eq!(h.cert_login(id, Some(&revoked)).await.0, 401, "{app}");
    }
    let denied = audited(&h.daemon, &admin, "session.auth").await;
    assert!(
        denied
            .iter()
            .filter(|e| e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("revoked"))
            .count()
            >= 2,
        "{denied:?}"
    );
    // The fetched CRL is cached: fetched once for three logins.
    let fetched_id = fetched["app_id"].as_str().unwrap();
    assert_eq!(h.cert_login(fetched_id, Some(&good)).await.0, 200);
    assert_eq!(crl_server.hits(), 1);
    // A URL outside --crl-allow is refused when the application is configured.
    let (s, b) = admin
        .call(
            Method::POST,
            "/sys/v1/apps",
            Some(json!({"name": "elsewhere", "groups": [g], "credential": {"trustedca": {"ca_certificate": ca,
                "subject": [["CN", "billing"]], "crl_url": "http://pki.example.com/x.crl"}}})),
        )
        .await;
    assert_eq!((s, b["field"].as_str()), (400, Some("crl_url")), "{b}");
    // A CRL that can no longer be fetched serves until its nextUpdate; past it, the login is
    // refused (revocation fails closed).
    drop(crl_server);
    h.daemon.clock.advance(2 * 3600);
    assert_eq!(
        h.cert_login(fetched_id, Some(&good)).await.0,
        200,
        "still within nextUpdate"
    );
    h.daemon.clock.advance(DAY);
    assert_eq!(
        h.cert_login(fetched_id, Some(&good)).await.0,
        401,
        "fails closed"
    );
    h.daemon.stop().await;
}

#[tokio::test]
async fn the_proxy_header_counts_only_from_the_trusted_proxy() {
    // Plain HTTP on loopback: the proxy in front terminates TLS. It is 127.0.0.2; requests
    // from 127.0.0.1 are anyone's.
    let d = TestDaemon::start_with(|c| {
        c.client_certs.trusted_proxies = vec!["127.0.0.2".parse().unwrap()];
        c.client_certs.header = Some("x-client-cert".parse().unwrap());
    })
    .await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("ledger", json!({})).await;
    let key = admin
        .create_key(json!({"name": "k", "group_id": g, "obj_type": "AES", "key_size": 256}))
        .await;
    let kid = key["kid"].as_str().unwrap();
    let cert = ClientSpec::named("behind-proxy", 7).self_signed();
    let app = create_app(&admin, "proxied", &g, json!({"certificate": cert.cert_pem})).await;
    let app_id = app["app_id"].as_str().unwrap();
    let port = d.url.rsplit(':').next().unwrap();
    let from = |ip: &str| {
        let _ = http_client();
        reqwest::Client::builder()
            .local_address(ip.parse::<IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let login = |client: reqwest::Client, header: Option<String>| {
        let url = format!("http://127.0.0.1:{port}/sys/v1/session/auth");
        let basic = STANDARD.encode(format!("{app_id}:"));
        async move {
            let mut r = client
                .post(url)
                .header("authorization", format!("Basic {basic}"));
            if let Some(h) = header {
                r = r.header("x-client-cert", h);
            }
            let r = r.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // nginx's $ssl_client_escaped_cert: URL-encoded PEM.
    let escaped: String =
        percent_encoding::utf8_percent_encode(&cert.cert_pem, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let (s, b) = login(from("127.0.0.1"), Some(escaped.clone())).await;
    assert_eq!(
        s, 401,
        "the header from an untrusted address is ignored: {b}"
    );
    let (s, b) = login(from("127.0.0.2"), None).await;
    assert_eq!(s, 401, "no header, no certificate: {b}");
    let (s, b) = login(from("127.0.0.2"), Some(escaped.clone())).await;
    assert_eq!(s, 200, "{b}");
    let token = b["access_token"].as_str().unwrap().to_string();
    // Later requests carry it too (HAProxy's form, base64 DER, here).
    let call = |client: reqwest::Client, header: Option<String>| {
        let url = format!("http://127.0.0.1:{port}/crypto/v1/keys/{kid}/encrypt");
        let token = token.clone();
        async move {
            let mut r = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"alg": "AES", "mode": "GCM", "plain": b64(b"x")}));
            if let Some(h) = header {
                r = r.header("x-client-cert", h);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(call(from("127.0.0.2"), Some(b64(&cert.der()))).await, 200);
    assert_eq!(call(from("127.0.0.2"), None).await, 401);
    assert_eq!(call(from("127.0.0.1"), Some(escaped)).await, 401);
    d.stop().await;

    // Without the setting, the header means nothing from anywhere.
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("ledger", json!({})).await;
    let app = create_app(&admin, "proxied", &g, json!({"certificate": cert.cert_pem})).await;
    let r = from("127.0.0.1")
        .post(format!("{}/sys/v1/session/auth", d.url))
        .header(
            "authorization",
            format!(
                "Basic {}",
                STANDARD.encode(format!("{}:", app["app_id"].as_str().unwrap()))
            ),
        )
        .header("x-client-cert", b64(&cert.der()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    d.stop().await;
}

#[tokio::test]
async fn expiring_certificates_are_shown_and_warned_about_30_and_7_days_before() {
    let d = TestDaemon::start_with(|c| {
        c.scheduler.enabled = false;
        c.notify.enabled = false;
        c.session_lifetime_secs = 400 * DAY;
        c.notify.allowed_hosts = vec![HostPattern::parse("http://127.0.0.1:*").unwrap()];
    })
    .await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("ledger", json!({})).await;
    let endpoint = admin
        .ok(
            Method::POST,
            "/sys/v1/notification_endpoints",
            Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["app.cert_near_expiry"]})),
        )
        .await;
    let now = time::OffsetDateTime::now_utc();
    let cert = ClientSpec {
        not_after: now + time::Duration::days(20),
        ..ClientSpec::named("short-lived", 3)
    }
    .self_signed();
    let app = create_app(&admin, "short", &g, json!({"certificate": cert.cert_pem})).await;
    let app_id = app["app_id"].as_str().unwrap();
    let not_after = keyward::time::parse_dsm(app["cert_not_after"].as_str().unwrap()).unwrap();
    assert!(
        (not_after - (d.clock.now() + 20 * DAY)).abs() < 120,
        "{app}"
    );
    // Another far from expiry gets nothing.
    create_app(
        &admin,
        "long",
        &g,
        json!({"certificate": ClientSpec::named("long-lived", 4).self_signed().cert_pem}),
    )
    .await;

    assert_eq!(d.state.scheduler.tick().await.unwrap().expiry_notices, 1);
    assert_eq!(
        d.state.scheduler.tick().await.unwrap().expiry_notices,
        0,
        "once"
    );
    d.clock.advance(14 * DAY);
    assert_eq!(d.state.scheduler.tick().await.unwrap().expiry_notices, 1);
    assert_eq!(d.state.scheduler.tick().await.unwrap().expiry_notices, 0);
    let messages = admin
        .ok(
            Method::GET,
            &format!(
                "/sys/v1/notification_endpoints/{}/messages",
                endpoint["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    let types: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["app.cert_near_expiry", "app.cert_near_expiry"]);
    let notices = audited(&d, &admin, "app.cert_near_expiry").await;
    let days: Vec<i64> = notices
        .iter()
        .map(|e| e["details"]["days"].as_i64().unwrap())
        .collect();
    assert_eq!(days.len(), 2, "{notices:?}");
    assert!(days.contains(&30) && days.contains(&7), "{days:?}");
    assert!(notices.iter().all(|e| e["details"]["app_id"] == app_id));
    d.stop().await;
}

/// Serves one CRL over plain HTTP on loopback, counting requests, until dropped.
struct CrlServer {
    addr: SocketAddr,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CrlServer {
    async fn start(pem: String) -> CrlServer {
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().route(
            "/clients.crl",
            axum::routing::get(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let pem = pem.clone();
                async move { pem }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        CrlServer { addr, hits, task }
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CrlServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
