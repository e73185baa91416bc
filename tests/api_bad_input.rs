//! Bad input on every endpoint family gets a 4xx JSON error naming the problem, and changes
//! nothing in the catalog.

use keyward_tests::api::{TestDaemon, catalog_snapshot};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("g", json!({})).await;
    let (app_id, api_key) = admin.create_app("app", &[&g]).await;
    let app = d.login_app(&api_key).await;
    let aes = app
        .create_key(json!({"name": "aes", "obj_type": "AES", "key_size": 256}))
        .await;
    let kid = aes["kid"].as_str().unwrap().to_string();
    let missing = "00000000-0000-4000-8000-000000000000";
    let before = catalog_snapshot(&d).await;

    // (who, method, path, raw body, expected status, a word the message must contain)
    type Case<'a> = (&'a str, Method, String, String, u16, &'a str);
    let raw = |v: Value| v.to_string();
    let cases: Vec<Case> = vec![
        // NUL characters in a path or query, refused before any handler (PostgreSQL cannot
        // compare text with one).
        (
            "admin",
            Method::GET,
            "/sys/v1/workflow_runs?workflow=sync%00".into(),
            String::new(),
            400,
            "NUL",
        ),
        (
            "app",
            Method::GET,
            "/crypto/v1/keys?name=a%00b".into(),
            String::new(),
            400,
            "NUL",
        ),
        (
            "admin",
            Method::GET,
            "/sys/v1/workflows/sync%00".into(),
            String::new(),
            400,
            "NUL",
        ),
        // users
        (
            "anon",
            Method::POST,
            "/sys/v1/users".into(),
            "{\"user_email\": ".into(),
            400,
            "malformed JSON",
        ),
        (
            "admin",
            Method::POST,
            "/sys/v1/users/invite".into(),
            raw(
                json!({"user_email": "not-an-email", "user_password": "long enough", "account_role": "member"}),
            ),
            400,
            "user_email",
        ),
        (
            "admin",
            Method::POST,
            "/sys/v1/users/invite".into(),
            raw(
                json!({"user_email": "x@example.com", "user_password": "short", "account_role": "member"}),
            ),
            400,
            "at least 8",
        ),
        (
            "admin",
            Method::POST,
            "/sys/v1/users/invite".into(),
            raw(
                json!({"user_email": "x@example.com", "user_password": "long enough", "account_role": "king"}),
            ),
            400,
            "not a role",
        ),
        (
            "admin",
            Method::POST,
            "/sys/v1/users/invite".into(),
            raw(
                json!({"user_email": "x@example.com", "user_password": "long enough", "account_role": "member", "groups": {missing: "administrator"}}),
            ),
            404,
            "no group",
        ),
        (
            "admin",
            Method::GET,
            format!("/sys/v1/users/{missing}"),
            String::new(),
            404,
            "no user",
        ),
        (
            "admin",
            Method::GET,
            "/sys/v1/users/not-an-id".into(),
            String::new(),
            400,
            "not a valid user id",
        ),
        // accounts
        (
            "admin",
            Method::POST,
            "/sys/v1/accounts".into(),
            raw(json!({"name": ""})),
            400,
            "name",
        ),
        (
            "admin",
            Method::POST,
            "/sys/v1/accounts".into(),
            raw(json!({"name": "x", "cryptographic_policy": {"aes": {"key_sizes": "big"}}})),
            400,
            "cryptographic_policy",
        ),
        (
            "admin",
            Method::PATCH,
            format!("/sys/v1/accounts/{missing}"),
            raw(json!({"name": "x"})),
            403,
            "not a member",
        ),
        // apps
        (
            "admin",
            Method::POST,
            "/sys/v1/apps".into(),
            // Well-formed, but not one of the application's groups: a conflict with them.
            raw(json!({"name": "a2", "groups": [g], "default_group": missing})),
            409,
            "default_group",
        ),
        (
            "admin",
            Method::POST,
            "/sys/v1/apps".into(),
            raw(json!({"name": "a2", "groups": "g"})),
            400,
            "invalid type",
        ),
        (
            "admin",
            Method::PATCH,
            format!("/sys/v1/apps/{missing}"),
            raw(json!({"name": "x"})),
            404,
            "no application",
        ),
        (
            "admin",
            Method::POST,
            "/sys/v1/apps".into(),
            raw(json!({"name": "app", "groups": [g]})),
            409,
            "exists",
        ),
        // groups
        (
            "admin",
            Method::POST,
            "/sys/v1/groups".into(),
            raw(json!({"name": "g2", "unknown_field": 1})),
            400,
            "unknown field",
        ),
        (
            "admin",
            Method::POST,
            "/sys/v1/groups".into(),
            raw(
                json!({"name": "g2", "key_metadata_policy": {"base": {"description": {"required": {}, "forbidden": {}}}}}),
            ),
            400,
            "key_metadata_policy",
        ),
        (
            "admin",
            Method::POST,
            "/sys/v1/groups".into(),
            raw(json!({"name": "g2", "external_kms": {"kind": "AwsKms"}})),
            400,
            "not supported",
        ),
        (
            "admin",
            Method::POST,
            "/sys/v1/groups".into(),
            raw(
                json!({"name": "g2", "external_kms": {"kind": "AzureManagedHsm", "tls": {"ca_pem": "not a certificate"}}}),
            ),
            400,
            "external_kms.tls",
        ),
        (
            "admin",
            Method::POST,
            "/sys/v1/groups".into(),
            raw(json!({"name": "g"})),
            409,
            "exists",
        ),
        (
            "admin",
            Method::DELETE,
            format!("/sys/v1/groups/{g}"),
            String::new(),
            409,
            "still holds",
        ),
        // keys
        (
            "app",
            Method::POST,
            "/crypto/v1/keys".into(),
            raw(json!({"name": "k", "obj_type": "DES", "key_size": 56})),
            400,
            "obj_type",
        ),
        (
            "app",
            Method::POST,
            "/crypto/v1/keys".into(),
            raw(json!({"name": "k", "obj_type": "AES", "key_size": 512})),
            400,
            "key_size",
        ),
        (
            "app",
            Method::POST,
            "/crypto/v1/keys".into(),
            raw(json!({"name": "k", "obj_type": "RSA", "key_size": 1024})),
            400,
            "key_size",
        ),
        (
            "app",
            Method::POST,
            "/crypto/v1/keys".into(),
            raw(json!({"name": "k", "obj_type": "EC", "elliptic_curve": "Curve25519"})),
            400,
            "elliptic_curve",
        ),
        (
            "app",
            Method::POST,
            "/crypto/v1/keys".into(),
            raw(json!({"name": "k", "obj_type": "AES", "key_size": "256"})),
            400,
            "invalid type",
        ),
        (
            "app",
            Method::POST,
            "/crypto/v1/keys".into(),
            raw(json!({"name": "k", "obj_type": "AES", "key_size": 256, "key_ops": ["SIGN"]})),
            400,
            "key_ops",
        ),
        (
            "app",
            Method::POST,
            "/crypto/v1/keys".into(),
            raw(
                json!({"name": "k", "obj_type": "AES", "key_size": 256, "activation_date": "2026-01-01"}),
            ),
            400,
            "YYYYMMDDTHHMMSSZ",
        ),
        (
            "app",
            Method::POST,
            "/crypto/v1/keys".into(),
            raw(
                json!({"name": "k", "obj_type": "AES", "key_size": 256, "activation_date": "20300101T000000Z", "deactivation_date": "20290101T000000Z"}),
            ),
            400,
            "deactivation_date",
        ),
        (
            "app",
            Method::POST,
            "/crypto/v1/keys".into(),
            raw(json!({"name": "aes", "obj_type": "AES", "key_size": 256})),
            409,
            "exists",
        ),
        (
            "app",
            Method::POST,
            "/crypto/v1/keys".into(),
            raw(json!({"name": "k", "group_id": missing, "obj_type": "AES", "key_size": 256})),
            404,
            "no group",
        ),
        (
            "app",
            Method::PUT,
            "/crypto/v1/keys".into(),
            raw(json!({"name": "k", "obj_type": "AES", "value": "%%% not base64"})),
            400,
            "base64",
        ),
        (
            "app",
            Method::PUT,
            "/crypto/v1/keys".into(),
            raw(json!({"name": "k", "obj_type": "AES", "value": "xyz", "value_format": "hex"})),
            400,
            "hex",
        ),
        (
            "app",
            Method::PUT,
            "/crypto/v1/keys".into(),
            raw(
                json!({"name": "k", "obj_type": "AES", "value": "00112233", "value_format": "hex"}),
            ),
            400,
            "value",
        ),
        (
            "app",
            Method::PUT,
            "/crypto/v1/keys".into(),
            raw(json!({"name": "k", "obj_type": "RSA", "value": "AAAA"})),
            400,
            "RSA private key",
        ),
        (
            "app",
            Method::PUT,
            "/crypto/v1/keys".into(),
            raw(json!({"name": "k", "obj_type": "AES", "value": "AAAA", "value_format": "raw"})),
            400,
            "value_format",
        ),
        (
            "app",
            Method::GET,
            format!("/crypto/v1/keys/{missing}"),
            String::new(),
            404,
            "no key",
        ),
        (
            "app",
            Method::GET,
            "/crypto/v1/keys/123".into(),
            String::new(),
            400,
            "not a valid key id",
        ),
        (
            "app",
            Method::GET,
            "/crypto/v1/keys?limit=0".into(),
            String::new(),
            400,
            "limit",
        ),
        (
            "app",
            Method::GET,
            "/crypto/v1/keys?state=Sleeping".into(),
            String::new(),
            400,
            "state",
        ),
        (
            "app",
            Method::GET,
            "/crypto/v1/keys?colour=red".into(),
            String::new(),
            400,
            "invalid query",
        ),
        (
            "app",
            Method::PATCH,
            format!("/crypto/v1/keys/{kid}"),
            raw(json!({"deactivation_date": "20261301T000000Z"})),
            400,
            "not a valid date",
        ),
        (
            "app",
            Method::PATCH,
            format!("/crypto/v1/keys/{kid}"),
            raw(json!({"key_ops": "ENCRYPT"})),
            400,
            "invalid type",
        ),
        (
            "app",
            Method::POST,
            format!("/crypto/v1/keys/{kid}/revoke"),
            raw(json!({})),
            400,
            "code",
        ),
        (
            "app",
            Method::POST,
            "/crypto/v1/keys/info".into(),
            raw(json!({"kid": kid, "name": "aes"})),
            400,
            "exactly one",
        ),
        // crypto operations
        (
            "app",
            Method::POST,
            format!("/crypto/v1/keys/{kid}/encrypt"),
            raw(json!({"alg": "AES", "plain": "!!"})),
            400,
            "plain",
        ),
        (
            "app",
            Method::POST,
            format!("/crypto/v1/keys/{kid}/encrypt"),
            raw(json!({"alg": "RSA", "plain": "aGk="})),
            400,
            "alg",
        ),
        (
            "app",
            Method::POST,
            format!("/crypto/v1/keys/{kid}/encrypt"),
            raw(json!({"alg": "AES", "plain": "aGk=", "mode": "ECB"})),
            400,
            "mode",
        ),
        (
            "app",
            Method::POST,
            format!("/crypto/v1/keys/{kid}/encrypt"),
            raw(json!({"alg": "AES", "plain": "aGk=", "iv": "AAAA"})),
            400,
            "iv",
        ),
        (
            "app",
            Method::POST,
            format!("/crypto/v1/keys/{kid}/decrypt"),
            raw(
                json!({"alg": "AES", "cipher": "aGk=", "iv": "AAAAAAAAAAAAAAAA", "tag": "AAAAAAAAAAAAAAAAAAAAAA=="}),
            ),
            400,
            "Decryption failed",
        ),
        (
            "app",
            Method::POST,
            format!("/crypto/v1/keys/{kid}/sign"),
            raw(json!({"hash_alg": "MD5", "data": "aGk="})),
            400,
            "unknown variant",
        ),
        (
            "app",
            Method::POST,
            format!("/crypto/v1/keys/{missing}/encrypt"),
            raw(json!({"alg": "AES", "plain": "aGk="})),
            404,
            "no key",
        ),
        (
            "app",
            Method::POST,
            "/crypto/v1/encrypt".into(),
            raw(json!({"alg": "AES", "plain": "aGk="})),
            400,
            "key",
        ),
        // audit
        (
            "admin",
            Method::GET,
            "/sys/v1/logs?range_from=yesterday".into(),
            String::new(),
            400,
            "from",
        ),
        (
            "admin",
            Method::GET,
            "/sys/v1/logs?outcome=maybe".into(),
            String::new(),
            400,
            "outcome",
        ),
        // sessions
        (
            "admin",
            Method::POST,
            "/sys/v1/session/select_account".into(),
            raw(json!({"acct_id": 5})),
            400,
            "invalid type",
        ),
        // anything
        (
            "admin",
            Method::GET,
            "/sys/v1/nothing-here".into(),
            String::new(),
            404,
            "no such endpoint",
        ),
        (
            "app",
            Method::POST,
            "/crypto/v1/keys".into(),
            String::new(),
            400,
            "body is required",
        ),
        (
            "app",
            Method::POST,
            "/crypto/v1/keys".into(),
            "[1, 2, 3]".into(),
            400,
            "invalid",
        ),
    ];
    let mut failures = Vec::new();
    for (who, method, path, body, status, word) in &cases {
        let api = match *who {
            "admin" => admin.clone(),
            "app" => app.clone(),
            _ => d.anonymous(),
        };
        let (s, reply) = if body.is_empty() && *method == Method::GET {
            api.call(method.clone(), path, None).await
        } else {
            api.raw(method.clone(), path, body.clone()).await
        };
        let message = reply["message"].as_str().unwrap_or_default();
        if s != *status || !message.contains(word) || reply["code"].as_str().is_none() {
            failures.push(format!(
                "{method} {path} {body}: got {s} {reply}, want {status} with '{word}'"
            ));
        }
    }

    // An oversized body is refused before it is parsed.
    let big = format!(
        "{{\"name\": \"{}\", \"obj_type\": \"AES\", \"key_size\": 256}}",
        "x".repeat(400 * 1024)
    );
    let (s, reply) = app.raw(Method::POST, "/crypto/v1/keys", big).await;
    if s != 413 || reply["code"] != "PayloadTooLarge" {
        failures.push(format!("oversized body: got {s} {reply}"));
    }

    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        before,
        catalog_snapshot(&d).await,
        "refused requests changed the catalog"
    );
    let _ = app_id;
}
