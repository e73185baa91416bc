//! Key release: an exportable HSM key with a release policy leaves, wrapped for the key an
//! attested environment holds, when a trusted attestation service's token satisfies the
//! policy; and not otherwise. The requests and answers have the shapes of the Key Vault REST
//! specification's release example.

mod common;

use common::*;
use keyward_emulator::config::AttestationIssuer;
use keyward_emulator::crypto::{self, Material, b64url};
use keyward_emulator::jwt::TokenIssuer;
use keyward_emulator::{EmulatorConfig, RunningEmulator};
use rsa::pkcs8::EncodePublicKey;
use serde_json::{Value, json};

const ISSUER: &str = "https://sharedeus.eus.attest.azure.net";

/// The emulator with a trusted attestation service, and that service (to sign tokens).
async fn with_attestation() -> (RunningEmulator, TokenIssuer) {
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
    let pem = key
        .to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    let mut config = EmulatorConfig::demo();
    config.attestation_issuers.push(AttestationIssuer {
        issuer: ISSUER.into(),
        public_key_pem: pem,
    });
    let em = keyward_emulator::start(config).await.unwrap();
    (em, TokenIssuer::new(key))
}

/// An attestation token of `issuer` saying `claims`, carrying the environment's key.
fn token(issuer: &TokenIssuer, iss: &str, claims: Value, env_key: &Material) -> String {
    let mut jwk = serde_json::Map::new();
    env_key.public_jwk(&mut jwk);
    let mut body = claims;
    body["iss"] = json!(iss);
    body["exp"] = json!(4_000_000_000_i64);
    body["x-ms-runtime"] = json!({"keys": [{"kid": "TpmEphemeralEncryptionKey", "kty": "RSA",
        "key_ops": ["encrypt"], "n": jwk["n"], "e": jwk["e"]}]});
    issuer.sign_json(&body)
}

async fn call(
    em: &RunningEmulator,
    store_uri: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
    scope: &str,
) -> (u16, Value) {
    let t = common::token(em, CLIENT, SECRET, scope).await;
    let resp = http(em)
        .request(method, format!("{}{path}", store_uri.trim_end_matches('/')))
        .bearer_auth(t)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn payload_of(jws: &str) -> Value {
    let part = jws.split('.').nth(1).unwrap();
    serde_json::from_slice(&crypto::decode_b64("jws", part).unwrap()).unwrap()
}

#[tokio::test]
async fn an_exportable_key_is_released_to_an_attested_environment_that_meets_its_policy() {
    let (em, attestation) = with_attestation().await;
    let premium = em.vault_uri(PREMIUM);
    let scope = "https://vault.azure.net/.default";
    let policy = json!({"version": "1.0.0", "anyOf": [{"authority": ISSUER,
        "allOf": [{"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
                  {"claim": "x-ms-compliance-status", "equals": "azure-compliant-cvm"}]}]});
    let release_policy = json!({"contentType": "application/json; charset=utf-8",
        "data": b64url(policy.to_string().as_bytes())});

    // Creation rules: exportable needs a policy and an HSM key; a policy needs exportable.
    for (body, says) in [
        (
            json!({"kty": "RSA-HSM", "attributes": {"exportable": true}}),
            "must have a release policy",
        ),
        (
            json!({"kty": "RSA-HSM", "release_policy": release_policy}),
            "exportable",
        ),
        (
            json!({"kty": "RSA", "attributes": {"exportable": true}, "release_policy": release_policy}),
            "HSM-protected",
        ),
    ] {
        let (s, e) = call(
            &em,
            &premium,
            reqwest::Method::POST,
            "/keys/refused/create?api-version=7.5",
            body,
            scope,
        )
        .await;
        assert_eq!(s, 400, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(says),
            "{says}: {e}"
        );
    }
    let (s, created) = call(&em, &premium, reqwest::Method::POST, "/keys/releasable/create?api-version=7.5",
        json!({"kty": "RSA-HSM", "key_size": 2048, "attributes": {"exportable": true}, "release_policy": release_policy}), scope).await;
    assert_eq!(s, 200, "{created}");
    assert_eq!(created["attributes"]["exportable"], true);
    assert_eq!(created["release_policy"]["data"], release_policy["data"]);
    let kid = created["key"]["kid"].as_str().unwrap().to_string();
    let version = kid.rsplit('/').next().unwrap();

    // Released: the answer is a JWS of the service; its key_hsm opens with the environment's key.
    let env_key = Material::generate_rsa(2048, None).unwrap();
    let good = token(
        &attestation,
        ISSUER,
        json!({"x-ms-attestation-type": "sevsnpvm",
        "x-ms-compliance-status": "azure-compliant-cvm"}),
        &env_key,
    );
    let (s, released) = call(
        &em,
        &premium,
        reqwest::Method::POST,
        &format!("/keys/releasable/{version}/release?api-version=7.5"),
        json!({"target": good, "nonce": "n-1"}),
        scope,
    )
    .await;
    assert_eq!(s, 200, "{released}");
    let jws = released["value"].as_str().unwrap();
    let payload = payload_of(jws);
    assert_eq!(payload["request"]["nonce"], "n-1");
    assert_eq!(payload["response"]["key"]["key"]["kid"], kid.as_str());
    let blob = crypto::decode_b64(
        "key_hsm",
        payload["response"]["key"]["key"]["key_hsm"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let der = crypto::byok_unwrap(&env_key, &blob).unwrap();
    let released_key = Material::from_private_der(crypto::Kty::Rsa, &der).unwrap();
    let mut public = serde_json::Map::new();
    released_key.public_jwk(&mut public);
    assert_eq!(
        public["n"].as_str().unwrap(),
        b64url(&crypto::decode_b64("n", created["key"]["n"].as_str().unwrap()).unwrap())
    );
    // The JWS is the service's: the emulator's token key signed it.
    assert!(keyward_emulator::jwt::verify_rs256(&em_signing_key(&em).await, jws).is_ok());

    // Refusals: a claim that does not match, an untrusted issuer, a key not exportable.
    let debug = token(
        &attestation,
        ISSUER,
        json!({"x-ms-attestation-type": "sevsnpvm",
        "x-ms-compliance-status": "not-compliant"}),
        &env_key,
    );
    let (s, e) = call(
        &em,
        &premium,
        reqwest::Method::POST,
        "/keys/releasable/release?api-version=7.5",
        json!({"target": debug}),
        scope,
    )
    .await;
    assert_eq!(s, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not satisfy")
    );
    let rogue = TokenIssuer::new(rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap());
    let forged = token(
        &rogue,
        ISSUER,
        json!({"x-ms-attestation-type": "sevsnpvm",
        "x-ms-compliance-status": "azure-compliant-cvm"}),
        &env_key,
    );
    let (s, e) = call(
        &em,
        &premium,
        reqwest::Method::POST,
        "/keys/releasable/release?api-version=7.5",
        json!({"target": forged}),
        scope,
    )
    .await;
    assert_eq!(s, 403, "a token the trusted service did not sign: {e}");
    let other = token(&rogue, "https://evil.example", json!({}), &env_key);
    let (s, _) = call(
        &em,
        &premium,
        reqwest::Method::POST,
        "/keys/releasable/release?api-version=7.5",
        json!({"target": other}),
        scope,
    )
    .await;
    assert_eq!(s, 403);
    let (_, plain) = call(
        &em,
        &premium,
        reqwest::Method::POST,
        "/keys/plain/create?api-version=7.5",
        json!({"kty": "RSA-HSM"}),
        scope,
    )
    .await;
    assert!(plain["key"]["kid"].is_string());
    let (s, e) = call(
        &em,
        &premium,
        reqwest::Method::POST,
        "/keys/plain/release?api-version=7.5",
        json!({"target": good}),
        scope,
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not exportable")
    );
    em.stop().await;
}

/// The emulator's signing key, from its published JWK set.
async fn em_signing_key(em: &RunningEmulator) -> rsa::PublicKey {
    let jwks: Value = http(em)
        .get(format!("{}/{TENANT}/discovery/v2.0/keys", em.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let k = &jwks["keys"][0];
    crypto::rsa_public(
        &crypto::decode_b64("n", k["n"].as_str().unwrap()).unwrap(),
        &crypto::decode_b64("e", k["e"].as_str().unwrap()).unwrap(),
    )
    .unwrap()
}
