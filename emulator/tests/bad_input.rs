//! Bad input gets Azure's error shape (a 4xx with `error.code` and `error.message`), never a
//! panic or a 500, and changes nothing.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const API: &str = "api-version=7.5";

fn assert_azure_error(case: &str, status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{case}: {body}");
    assert_eq!(body["error"]["code"], want_code, "{case}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{case}: no message in {body}"
    );
}

async fn raw(
    em: &keyward_emulator::RunningEmulator,
    t: &str,
    method: Method,
    path: &str,
    body: &'static str,
) -> (u16, Value) {
    let resp = http(em)
        .request(method, data_url(em, HSM, path))
        .bearer_auth(t)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn malformed_requests_get_azure_errors() {
    let em = emulator().await;
    let t = hsm_token(&em).await;
    let (s, _) = call(
        &em,
        &t,
        Method::POST,
        &data_url(&em, HSM, &format!("/keys/good/create?{API}")),
        Some(json!({"kty": "oct-HSM"})),
    )
    .await;
    assert_eq!(s, 200);
    let before = call(
        &em,
        &t,
        Method::GET,
        &data_url(&em, HSM, &format!("/keys?{API}")),
        None,
    )
    .await
    .1;

    let create = format!("/keys/new-key/create?{API}");
    let cases: Vec<(&str, Method, String, &'static str, u16, &str)> = vec![
        (
            "malformed JSON",
            Method::POST,
            create.clone(),
            "{\"kty\": ",
            400,
            "BadParameter",
        ),
        (
            "empty body",
            Method::POST,
            create.clone(),
            "",
            400,
            "BadParameter",
        ),
        (
            "wrong kty",
            Method::POST,
            create.clone(),
            r#"{"kty": "DES"}"#,
            400,
            "BadParameter",
        ),
        (
            "wrong RSA size",
            Method::POST,
            create.clone(),
            r#"{"kty": "RSA-HSM", "key_size": 1024}"#,
            400,
            "BadParameter",
        ),
        (
            "wrong AES size",
            Method::POST,
            create.clone(),
            r#"{"kty": "oct-HSM", "key_size": 512}"#,
            400,
            "BadParameter",
        ),
        (
            "wrong curve",
            Method::POST,
            create.clone(),
            r#"{"kty": "EC-HSM", "crv": "P-999"}"#,
            400,
            "BadParameter",
        ),
        (
            "wrong type",
            Method::POST,
            create.clone(),
            r#"{"kty": "oct-HSM", "key_size": "big"}"#,
            400,
            "BadParameter",
        ),
        (
            "unknown operation",
            Method::POST,
            create.clone(),
            r#"{"kty": "oct-HSM", "key_ops": ["fly"]}"#,
            400,
            "BadParameter",
        ),
        (
            "nbf after exp",
            Method::POST,
            create.clone(),
            r#"{"kty": "oct-HSM", "attributes": {"nbf": 20, "exp": 10}}"#,
            400,
            "BadParameter",
        ),
        (
            "missing api-version",
            Method::POST,
            "/keys/new-key/create".into(),
            r#"{"kty": "oct-HSM"}"#,
            400,
            "BadParameter",
        ),
        (
            "unknown api-version",
            Method::POST,
            "/keys/new-key/create?api-version=1999-01-01".into(),
            r#"{"kty": "oct-HSM"}"#,
            400,
            "BadParameter",
        ),
        (
            "invalid key name",
            Method::POST,
            format!("/keys/bad_name!/create?{API}"),
            r#"{"kty": "oct-HSM"}"#,
            400,
            "BadParameter",
        ),
        (
            "bad base64url",
            Method::POST,
            format!("/keys/good//encrypt?{API}"),
            r#"{"alg": "A256GCM", "value": "!!!"}"#,
            400,
            "BadParameter",
        ),
        (
            "unknown algorithm",
            Method::POST,
            format!("/keys/good//encrypt?{API}"),
            r#"{"alg": "ROT13", "value": "aGk"}"#,
            400,
            "BadParameter",
        ),
        (
            "bad JWK",
            Method::PUT,
            format!("/keys/imported?{API}"),
            r#"{"key": {"kty": "oct-HSM", "k": "c2hvcnQ"}}"#,
            400,
            "BadParameter",
        ),
        (
            "JWK without kty",
            Method::PUT,
            format!("/keys/imported?{API}"),
            r#"{"key": {}}"#,
            400,
            "BadParameter",
        ),
        (
            "bad maxresults",
            Method::GET,
            "/keys?api-version=7.5&maxresults=500".into(),
            "",
            400,
            "BadParameter",
        ),
        (
            "bad skiptoken",
            Method::GET,
            "/keys?api-version=7.5&$skiptoken=%%%".into(),
            "",
            400,
            "BadParameter",
        ),
        (
            "unknown key",
            Method::GET,
            format!("/keys/nope?{API}"),
            "",
            404,
            "KeyNotFound",
        ),
        (
            "unknown version",
            Method::GET,
            format!("/keys/good/00000000000000000000000000000000?{API}"),
            "",
            404,
            "KeyNotFound",
        ),
        (
            "unknown deleted key",
            Method::GET,
            format!("/deletedkeys/nope?{API}"),
            "",
            404,
            "KeyNotFound",
        ),
        (
            "restore garbage",
            Method::POST,
            format!("/keys/restore?{API}"),
            r#"{"value": "Z2FyYmFnZQ"}"#,
            400,
            "BadParameter",
        ),
        (
            "rng too many",
            Method::POST,
            format!("/rng?{API}"),
            r#"{"count": 1000}"#,
            400,
            "BadParameter",
        ),
        (
            "rotation policy too short",
            Method::PUT,
            format!("/keys/good/rotationpolicy?{API}"),
            r#"{"attributes": {"expiryTime": "P7D"}}"#,
            400,
            "BadParameter",
        ),
    ];
    for (case, method, path, body, status, code) in cases {
        let (s, b) = raw(&em, &t, method, &path, body).await;
        assert_azure_error(case, s, &b, status, code);
    }

    // An oversized body is refused before it is read.
    let big = format!(
        r#"{{"kty": "oct-HSM", "tags": {{"x": "{}"}}}}"#,
        "a".repeat(300 * 1024)
    );
    let resp = http(&em)
        .post(data_url(&em, HSM, &create))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_azure_error("oversized body", status, &body, 413, "RequestBodyTooLarge");

    // Nothing changed.
    let after = call(
        &em,
        &t,
        Method::GET,
        &data_url(&em, HSM, &format!("/keys?{API}")),
        None,
    )
    .await
    .1;
    assert_eq!(before, after);
}
