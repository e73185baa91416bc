//! Webhooks in and notifications out (F31): signed deliveries run a workflow and every kind
//! of bad delivery is refused with no run; Azure Event Grid's handshakes are answered and its
//! key events sync or rotate the key; Keyward's own signed notifications reach a local
//! receiver once, after retries, not after a 410, and never outside the allowlist.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use keyward::daemon::DaemonConfig;
use keyward::plugins::HostPattern;
use keyward::webhooks::signature::{self, Secret};
use keyward_tests::DAY;
use keyward_tests::api::{Api, TestDaemon, http_client};
use keyward_tests::azure::{Azure, eventually};
use reqwest::Method;
use serde_json::{Value, json};

const ECHO: &str = r#"// Test workflow: what the webhook sent.
output.email = input.email;
output.username = input.username;
"#;

async fn runs(d: &TestDaemon) -> i64 {
    let mut conn = d.state.catalog.conn().await.unwrap();
    keyward::catalog::db::query("SELECT COUNT(*) FROM workflow_runs")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0)
}

/// POSTs a delivery with Standard Webhooks headers.
async fn post(
    d: &TestDaemon,
    path: &str,
    id: &str,
    ts: i64,
    sig: &str,
    body: &[u8],
) -> (u16, Value) {
    let r = http_client()
        .post(format!("{}{path}", d.url))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn signed_deliveries_run_the_workflow_and_bad_ones_run_nothing() {
    let scripts = tempfile::tempdir().unwrap();
    std::fs::write(scripts.path().join("echo.rhai"), ECHO).unwrap();
    let dir = scripts.path().to_path_buf();
    let d = TestDaemon::start_with(|c| {
        c.workflow_dir = Some(dir);
        c.session_lifetime_secs = 400 * DAY;
    })
    .await;
    let admin = d.bootstrap().await;
    let hook = admin
        .ok(
            Method::POST,
            "/sys/v1/webhooks",
            Some(json!({"name": "signup-hook", "workflow": "echo"})),
        )
        .await;
    let secret = Secret::parse(hook["secret"].as_str().unwrap()).unwrap();
    assert!(hook["secret"].as_str().unwrap().starts_with("whsec_"));
    let listed = admin.ok(Method::GET, "/sys/v1/webhooks", None).await;
    assert!(
        listed[0].get("secret").is_none(),
        "the secret is shown once"
    );
    let path = hook["path"].as_str().unwrap().to_string();
    let path = path.as_str();
    assert!(path.starts_with("/webhooks/") && path.ends_with("/signup-hook"));
    let body = br#"{"email":"test@example.com","username":"test_user"}"#;
    let now = d.clock.now();

    // A valid signature runs the workflow with the body as its input.
    let (s, r) = post(
        &d,
        path,
        "msg_1",
        now,
        &secret.sign("msg_1", now, body),
        body,
    )
    .await;
    assert_eq!(s, 202, "{r}");
    let run_path = format!("/sys/v1/workflow_runs/{}", r["run_id"].as_str().unwrap());
    let run = eventually(30, || async {
        let run = admin.ok(Method::GET, &run_path, None).await;
        (run["status"] != "running").then_some(run)
    })
    .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "webhook");
    assert_eq!(run["output"]["username"], "test_user");

    // Refused, each with a clear error and no run.
    let before = runs(&d).await;
    let now = d.clock.now();
    let other = Secret::generate();
    let big = vec![b' '; 70 * 1024];
    // (webhook-id, signature, timestamp, body, expected status, the error says)
    type Case<'a> = (&'a str, String, i64, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "msg_2",
            other.sign("msg_2", now, body),
            now,
            body.to_vec(),
            401,
            "does not check out",
        ),
        (
            "msg_3",
            secret.sign("msg_3", now - 301, body),
            now - 301,
            body.to_vec(),
            401,
            "does not check out",
        ),
        (
            "msg_4",
            // The daemon's clock keeps running while the test does, so a
            // timestamp just past the tolerance would drift back inside it.
            secret.sign("msg_4", now + 360, body),
            now + 360,
            body.to_vec(),
            401,
            "does not check out",
        ),
        (
            "msg_5",
            secret.sign("msg_5", now, body),
            now,
            br#"{"email":"evil@example.com","username":"test_user"}"#.to_vec(),
            401,
            "does not check out",
        ),
        (
            "msg_6",
            secret.sign("msg_6", now, &big),
            now,
            big.clone(),
            413,
            "larger",
        ),
        (
            "msg_7",
            secret.sign("msg_7", now, b"[1]"),
            now,
            b"[1]".to_vec(),
            400,
            "JSON object",
        ),
    ];
    for (id, sig, ts, b, status, says) in cases {
        let (s, r) = post(&d, path, id, ts, &sig, &b).await;
        assert_eq!(s, status, "{id}: {r}");
        assert!(
            r["message"].as_str().unwrap_or_default().contains(says),
            "{id}: {r}"
        );
    }
    // Answered exactly as a bad signature is: the answer tells nobody which names exist.
    let (s, unknown) = post(
        &d,
        &path.replace("signup-hook", "nobody"),
        "msg_8",
        now,
        &secret.sign("msg_8", now, body),
        body,
    )
    .await;
    let (_, bad) = post(
        &d,
        path,
        "msg_8",
        now,
        &other.sign("msg_8", now, body),
        body,
    )
    .await;
    assert_eq!(s, 401, "{unknown}");
    assert_eq!(unknown, bad);
    let r = http_client()
        .post(format!("{}{path}", d.url))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "unsigned");
    // A replayed id is acknowledged and not run again.
    let (s, r) = post(
        &d,
        path,
        "msg_1",
        now,
        &secret.sign("msg_1", now, body),
        body,
    )
    .await;
    assert_eq!((s, &r["duplicate"]), (200, &json!(true)), "{r}");
    assert_eq!(
        runs(&d).await,
        before,
        "no refused or repeated delivery ran anything"
    );

    // After a secret rotation both secrets verify for a while, signed together or apart.
    let rotated = admin
        .ok(
            Method::POST,
            &format!(
                "/sys/v1/webhooks/{}/rotate_secret",
                hook["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    let new = Secret::parse(rotated["secret"].as_str().unwrap()).unwrap();
    let (s, _) = post(
        &d,
        path,
        "msg_9",
        now,
        &secret.sign("msg_9", now, body),
        body,
    )
    .await;
    assert_eq!(s, 202, "the old secret still works");
    let both = format!(
        "{} {}",
        other.sign("msg_10", now, body),
        new.sign("msg_10", now, body)
    );
    let (s, _) = post(&d, path, "msg_10", now, &both, body).await;
    assert_eq!(s, 202, "one matching signature among several");
    d.clock.advance(DAY + 1);
    let now = d.clock.now();
    let (s, _) = post(
        &d,
        path,
        "msg_11",
        now,
        &secret.sign("msg_11", now, body),
        body,
    )
    .await;
    assert_eq!(s, 401, "not after the grace period");

    let deliveries = admin
        .ok(
            Method::GET,
            &format!(
                "/sys/v1/webhooks/{}/deliveries",
                hook["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    let outcomes: Vec<&str> = deliveries
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "accepted").count(),
        3,
        "{deliveries}"
    );
    // Refusals are counted, not stored one row each (anyone can send them).
    assert!(outcomes.contains(&"duplicate") && !outcomes.contains(&"refused"));
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("keyward_webhook_refused_deliveries_total{reason=\"signature\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("keyward_webhook_refused_deliveries_total{reason=\"unknown\"}"));
    assert!(
        !deliveries
            .to_string()
            .contains(rotated["secret"].as_str().unwrap())
    );
}

#[tokio::test]
async fn event_grid_handshakes_are_answered_and_key_events_sync_or_rotate() {
    let az = Azure::start().await;
    let key = az
        .app
        .create_key(
            json!({"name": "watched", "group_id": az.group, "obj_type": "AES", "key_size": 256,
            "key_ops": ["ENCRYPT", "DECRYPT", "APPMANAGEABLE"]}),
        )
        .await;
    let hook = az
        .admin
        .ok(
            Method::POST,
            "/sys/v1/webhooks",
            Some(json!({"name": "grid", "kind": "event_grid", "group_id": az.group})),
        )
        .await;
    let secret = hook["secret"].as_str().unwrap();
    let url = format!(
        "{}{}?secret={secret}",
        az.daemon.url,
        hook["path"].as_str().unwrap()
    );
    let http = http_client();

    // The Event Grid schema handshake: 200 with the validation code.
    let validation = json!([{"id": "v1", "topic": "/subscriptions/x", "subject": "", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2026-12-01T00:00:00Z", "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://x:553/y"},
        "metadataVersion": "1", "dataVersion": "1"}]);
    let r = http
        .post(&url)
        .header("aeg-event-type", "SubscriptionValidation")
        .json(&validation)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["validationResponse"],
        "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    );
    // The CloudEvents handshake: OPTIONS with WebHook-Request-Origin.
    let r = http
        .request(Method::OPTIONS, &url)
        .header("WebHook-Request-Origin", "eventemitter.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["webhook-allowed-origin"],
        "eventemitter.example.com"
    );
    // Without the right secret, nothing.
    let hook_url = format!("{}{}", az.daemon.url, hook["path"].as_str().unwrap());
    // (Its first character changed, whatever it was: a fixed replacement is the secret
    // itself once in a while.)
    let first = if secret.starts_with('0') { '1' } else { '0' };
    let wrong = format!("{hook_url}?secret={first}{}", &secret[1..]);
    let r = http.post(&wrong).json(&validation).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.post(&hook_url).json(&validation).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // A version made outside Keyward: KeyNewVersionCreated syncs it in as the key's replacement.
    let link = az.link().await;
    let made = az
        .daemon
        .state
        .kms
        .rotate_key(&link, "watched")
        .await
        .unwrap();
    let event = |id: &str, t: &str| {
        json!([{"id": id, "topic": "/subscriptions/s/providers/Microsoft.KeyVault/managedHSMs/h", "subject": "watched",
        "eventType": t, "eventTime": "2026-12-01T00:00:00Z",
        "data": {"Id": made.id, "VaultName": "h", "ObjectType": "Key", "ObjectName": "watched", "Version": made.version, "NBF": null, "EXP": null},
        "dataVersion": "1", "metadataVersion": "1"}])
    };
    let r = http
        .post(&url)
        .header("aeg-event-type", "Notification")
        .json(&event("e1", "Microsoft.KeyVault.KeyNewVersionCreated"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["accepted"], 1);
    let current = eventually(30, || async {
        let k = az
            .admin
            .ok(
                Method::POST,
                "/crypto/v1/keys/info",
                Some(json!({"name": "watched"})),
            )
            .await;
        (k["external"]["id"]["version"] == made.version.as_str()).then_some(k)
    })
    .await;
    assert_eq!(current["links"]["replaced"], key["kid"]);
    // The same event again is a duplicate.
    let r = http
        .post(&url)
        .json(&event("e1", "Microsoft.KeyVault.KeyNewVersionCreated"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["duplicates"], 1);

    // KeyNearExpiry rotates the key.
    let r = http
        .post(&url)
        .json(&event("e2", "Microsoft.KeyVault.KeyNearExpiry"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(30, || async {
        let k = az
            .admin
            .ok(
                Method::POST,
                "/crypto/v1/keys/info",
                Some(json!({"name": "watched"})),
            )
            .await;
        (k["links"]["replaced"] == current["kid"]).then_some(())
    })
    .await;
    let versions = az
        .daemon
        .state
        .kms
        .list_versions(&link, "watched", None)
        .await
        .unwrap()
        .items;
    assert_eq!(versions.len(), 3);
}

// ---------------------------------------------------------------------------------------
// Notifications out.

/// A status to answer, with a `Retry-After`.
type Answer = (u16, Option<&'static str>);

/// A local receiver: records each request and answers from a script (then 200).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    answers: Arc<Mutex<VecDeque<Answer>>>,
}

impl Receiver {
    async fn start(&self) -> String {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let me = me.clone();
                async move {
                    me.got.lock().unwrap().push((headers, body));
                    let (status, retry) = me
                        .answers
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or((200, None));
                    let mut h = HeaderMap::new();
                    if let Some(r) = retry {
                        h.insert("retry-after", r.parse().unwrap());
                    }
                    (StatusCode::from_u16(status).unwrap(), h, "")
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("http://{addr}/hook")
    }

    fn got(&self) -> Vec<(HeaderMap, Bytes)> {
        self.got.lock().unwrap().clone()
    }
}

fn by_hand(c: &mut DaemonConfig) {
    c.scheduler.enabled = false;
    c.notify.enabled = false;
    c.session_lifetime_secs = 400 * DAY;
    c.notify.allowed_hosts = vec![HostPattern::parse("http://127.0.0.1:*").unwrap()];
}

async fn endpoint(admin: &Api, url: &str, events: Value) -> (String, Secret) {
    let e = admin
        .ok(
            Method::POST,
            "/sys/v1/notification_endpoints",
            Some(json!({"url": url, "events": events})),
        )
        .await;
    (
        e["id"].as_str().unwrap().to_string(),
        Secret::parse(e["secret"].as_str().unwrap()).unwrap(),
    )
}

fn verified(h: &HeaderMap, body: &[u8], secret: &Secret, now: i64) -> Value {
    let s = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let headers = signature::Headers {
        id: s("webhook-id"),
        timestamp: s("webhook-timestamp"),
        signature: s("webhook-signature"),
    };
    signature::verify(std::slice::from_ref(secret), &headers, body, now)
        .expect("a valid signature");
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn key_events_reach_a_receiver_once_signed_and_retried() {
    let d = TestDaemon::start_with(by_hand).await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("plain", json!({})).await;
    let rx = Receiver::default();
    let url = rx.start().await;
    let (id, secret) = endpoint(&admin, &url, json!(["key.rotated", "key.near_expiry"])).await;

    // Outside the allowlist (the daemon's configuration forbids it: 403), or an unknown
    // event (400): refused.
    let (s, b) = admin
        .call(
            Method::POST,
            "/sys/v1/notification_endpoints",
            Some(json!({"url": "https://internal.example.com/hook"})),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    assert!(b["message"].as_str().unwrap().starts_with("url:"), "{b}");
    let (s, b) = admin
        .call(
            Method::POST,
            "/sys/v1/notification_endpoints",
            Some(json!({"url": url, "events": ["key.exploded"]})),
        )
        .await;
    assert_eq!((s, b["field"].as_str()), (400, Some("events")), "{b}");

    // A rotation is notified once, signed.
    admin
        .create_key(json!({"name": "k", "group_id": g, "obj_type": "AES", "key_size": 256}))
        .await;
    let r = admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"name": "k"})),
        )
        .await;
    assert_eq!(d.state.deliverer.deliver_due().await.unwrap().delivered, 1);
    assert_eq!(
        d.state.deliverer.deliver_due().await.unwrap().delivered,
        0,
        "once"
    );
    let got = rx.got();
    assert_eq!(got.len(), 1);
    let event = verified(&got[0].0, &got[0].1, &secret, d.clock.now());
    assert_eq!(event["type"], "key.rotated");
    assert_eq!(event["data"]["kid"], r["kid"]);

    // A 503 is retried after the schedule's wait, or a later Retry-After, with the same id.
    rx.answers
        .lock()
        .unwrap()
        .extend([(503, None), (503, Some("600"))]);
    admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"name": "k"})),
        )
        .await;
    assert_eq!(d.state.deliverer.deliver_due().await.unwrap().retried, 1);
    assert_eq!(
        d.state.deliverer.deliver_due().await.unwrap(),
        Default::default(),
        "not before 5 s"
    );
    d.clock.advance(5);
    assert_eq!(d.state.deliverer.deliver_due().await.unwrap().retried, 1);
    d.clock.advance(301);
    assert_eq!(
        d.state.deliverer.deliver_due().await.unwrap(),
        Default::default(),
        "Retry-After: 600 s, later than the schedule's 5 min"
    );
    d.clock.advance(300);
    assert_eq!(d.state.deliverer.deliver_due().await.unwrap().delivered, 1);
    let got = rx.got();
    assert_eq!(got.len(), 4);
    let ids: Vec<_> = got[1..]
        .iter()
        .map(|(h, _)| h["webhook-id"].clone())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "the same webhook-id on every attempt"
    );
    verified(&got[3].0, &got[3].1, &secret, d.clock.now());
    let messages = admin
        .ok(
            Method::GET,
            &format!("/sys/v1/notification_endpoints/{id}/messages"),
            None,
        )
        .await;
    assert_eq!(messages[0]["status"], "delivered");
    assert_eq!(messages[0]["attempts"], 3);
    // Every attempt is counted by its outcome.
    let metrics = d.state.metrics.render();
    for line in [
        r#"keyward_notification_deliveries_total{outcome="delivered"} 2"#,
        r#"keyward_notification_deliveries_total{outcome="retried"} 2"#,
        "keyward_notification_delivery_duration_seconds_count 4",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    // Expiry warnings: a key 5 days from deactivation gets its 7-day warning, once.
    let expiring = admin
        .create_key(
            json!({"name": "short-lived", "group_id": g, "obj_type": "AES", "key_size": 256,
            "deactivation_date": keyward::time::format_dsm(d.clock.now() + 5 * DAY)}),
        )
        .await;
    assert_eq!(d.state.scheduler.tick().await.unwrap().expiry_notices, 1);
    assert_eq!(d.state.scheduler.tick().await.unwrap().expiry_notices, 0);
    d.state.deliverer.deliver_due().await.unwrap();
    let last = rx.got().pop().unwrap();
    let warning = verified(&last.0, &last.1, &secret, d.clock.now());
    assert_eq!(
        (warning["type"].as_str(), warning["data"]["days"].as_i64()),
        (Some("key.near_expiry"), Some(7))
    );
    assert_eq!(warning["data"]["kid"], expiring["kid"]);

    // 410 Gone disables the endpoint: nothing more is sent.
    rx.answers.lock().unwrap().push_back((410, None));
    admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"name": "k"})),
        )
        .await;
    admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"name": "k"})),
        )
        .await;
    let r = d.state.deliverer.deliver_due().await.unwrap();
    assert_eq!((r.delivered, r.failed), (0, 1), "{r:?}");
    let e = admin
        .ok(
            Method::GET,
            &format!("/sys/v1/notification_endpoints/{id}"),
            None,
        )
        .await;
    assert_eq!(e["enabled"], false);
    assert!(e["disabled_reason"].as_str().unwrap().contains("410"));
    let sent = rx.got().len();
    admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"name": "k"})),
        )
        .await;
    d.clock.advance(DAY);
    d.state.deliverer.deliver_due().await.unwrap();
    assert_eq!(rx.got().len(), sent, "a disabled endpoint gets nothing");
}

#[tokio::test]
async fn an_endpoint_that_always_fails_is_disabled_after_the_last_retry() {
    let d = TestDaemon::start_with(|c| {
        by_hand(c);
        c.notify.retry_secs = vec![1, 1];
    })
    .await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("plain", json!({})).await;
    let rx = Receiver::default();
    let url = rx.start().await;
    let (id, _) = endpoint(&admin, &url, json!([])).await;
    rx.answers
        .lock()
        .unwrap()
        .extend([(500, None), (502, None), (504, None)]);
    admin
        .create_key(json!({"name": "k", "group_id": g, "obj_type": "AES", "key_size": 256}))
        .await;
    admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"name": "k"})),
        )
        .await;
    for _ in 0..2 {
        assert_eq!(d.state.deliverer.deliver_due().await.unwrap().retried, 1);
        d.clock.advance(1);
    }
    assert_eq!(d.state.deliverer.deliver_due().await.unwrap().failed, 1);
    let e = admin
        .ok(
            Method::GET,
            &format!("/sys/v1/notification_endpoints/{id}"),
            None,
        )
        .await;
    assert_eq!(e["enabled"], false);
    assert!(
        e["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("every attempt failed"),
        "{e}"
    );
    // Enabled again by an administrator, it receives what comes next.
    admin
        .ok(
            Method::POST,
            &format!("/sys/v1/notification_endpoints/{id}/enable"),
            None,
        )
        .await;
    admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"name": "k"})),
        )
        .await;
    assert_eq!(d.state.deliverer.deliver_due().await.unwrap().delivered, 1);
}
