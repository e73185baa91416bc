//! Protocol details the SDK does not cover, checked with a plain HTTP client: Entra ID error
//! shapes, the challenge, ARM listing and paging, authorization, BYOK transfers, retention,
//! crypto refusals, and every injected fault.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const API: &str = "api-version=7.5";

async fn token_error(
    em: &keyward_emulator::RunningEmulator,
    tenant: &str,
    form: &[(&str, &str)],
) -> (u16, Value) {
    let resp = http(em)
        .post(format!("{}/{tenant}/oauth2/v2.0/token", em.base_url))
        .form(form)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn entra_id_errors_have_entra_ids_shape() {
    let em = emulator().await;
    let scope = "https://localhost/.default";
    let base = [
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT),
        ("client_secret", SECRET),
        ("scope", scope),
    ];

    let (status, body) = token_error(&em, "00000000-0000-0000-0000-000000000000", &base).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_tenant");
    assert_eq!(body["error_codes"], json!([90002]));
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS90002: Tenant '00000000-0000-0000-0000-000000000000' not found")
    );
    for field in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(body[field].is_string(), "{field} missing: {body}");
    }

    let wrong_secret = [base[0], base[1], ("client_secret", "nope"), base[3]];
    let (status, body) = token_error(&em, TENANT, &wrong_secret).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert_eq!(body["error_codes"], json!([7000215]));

    let unknown_client = [
        base[0],
        ("client_id", "11111111-2222-3333-4444-555555555555"),
        base[2],
        base[3],
    ];
    let (status, body) = token_error(&em, TENANT, &unknown_client).await;
    assert_eq!(
        (status, body["error_codes"].clone()),
        (400, json!([700016]))
    );

    let (status, body) = token_error(&em, TENANT, &base[..3]).await;
    assert_eq!((status, body["error_codes"].clone()), (400, json!([90014])));

    let no_default = [base[0], base[1], base[2], ("scope", "https://localhost")];
    let (_, body) = token_error(&em, TENANT, &no_default).await;
    assert_eq!(body["error"], "invalid_scope");

    let unknown_resource = [
        base[0],
        base[1],
        base[2],
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let (_, body) = token_error(&em, TENANT, &unknown_resource).await;
    assert_eq!(body["error_codes"], json!([500011]));

    let password = [("grant_type", "password"), base[1], base[2], base[3]];
    let (_, body) = token_error(&em, TENANT, &password).await;
    assert_eq!(body["error"], "unsupported_grant_type");

    // Discovery, as MSAL-based clients do it.
    let c = http(&em);
    let oidc: Value = c
        .get(format!(
            "{}/{TENANT}/v2.0/.well-known/openid-configuration",
            em.base_url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        oidc["token_endpoint"],
        format!("{}/{TENANT}/oauth2/v2.0/token", em.base_url)
    );
    let unknown = c
        .get(format!(
            "{}/nope/v2.0/.well-known/openid-configuration",
            em.base_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let inst: Value = c
        .get(format!("{}/common/discovery/instance?api-version=1.1&authorization_endpoint={}/{TENANT}/oauth2/v2.0/authorize", em.base_url, em.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        inst["tenant_discovery_endpoint"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{TENANT}/v2.0/.well-known/openid-configuration"))
    );
    let jwks: Value = c
        .get(format!("{}/{TENANT}/discovery/v2.0/keys", em.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
}

#[tokio::test]
async fn the_data_plane_challenges_and_checks_tokens() {
    let em = emulator().await;
    let url = data_url(&em, HSM, &format!("/keys?{API}"));

    let resp = http(&em).get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        challenge,
        format!(
            r#"Bearer authorization="{}/{TENANT}", resource="https://localhost:{}""#,
            em.base_url, em.port
        )
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("AKV10000")
    );

    // An ARM token is for another audience.
    let arm = token(&em, CLIENT, SECRET, "https://management.azure.com/.default").await;
    let (status, body) = call(&em, &arm, Method::GET, &url, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid audience")
    );

    // A forged token fails its signature.
    let good = hsm_token(&em).await;
    let mut forged = good.clone();
    forged.replace_range(forged.len() - 8.., "AAAAAAAA");
    assert_eq!(call(&em, &forged, Method::GET, &url, None).await.0, 401);

    // Expiry follows the emulator's clock.
    assert_eq!(call(&em, &good, Method::GET, &url, None).await.0, 200);
    admin(
        &em,
        Method::POST,
        "/admin/clock/advance",
        json!({"seconds": 3600}),
    )
    .await;
    let (status, body) = call(&em, &good, Method::GET, &url, None).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    // Another tenant's application is refused even with a token for the right audience.
    admin(
        &em,
        Method::POST,
        "/admin/tenants",
        json!({"id": "other-tenant"}),
    )
    .await;
    admin(
        &em,
        Method::POST,
        "/admin/applications",
        json!({"tenant": "other-tenant", "client_id": "other-app", "client_secret": "s3"}),
    )
    .await;
    let resp = http(&em)
        .post(format!("{}/other-tenant/oauth2/v2.0/token", em.base_url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "other-app"),
            ("client_secret", "s3"),
            ("scope", &format!("https://localhost:{}/.default", em.port)),
        ])
        .send()
        .await
        .unwrap();
    let other: Value = resp.json().await.unwrap();
    let (status, body) = call(
        &em,
        other["access_token"].as_str().unwrap(),
        Method::GET,
        &url,
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid issuer")
    );

    // An application of the right tenant without a role gets 403; an auditor reads only.
    admin(
        &em,
        Method::POST,
        "/admin/applications",
        json!({"tenant": TENANT, "client_id": "auditor", "client_secret": "s4"}),
    )
    .await;
    let auditor = token(
        &em,
        "auditor",
        "s4",
        &format!("{}/.default", em.hsm_resource()),
    )
    .await;
    let (status, body) = call(&em, &auditor, Method::GET, &url, None).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "Forbidden");
    admin(
        &em,
        Method::POST,
        "/admin/role-assignments",
        json!({"principal": "auditor", "role": "Managed HSM Crypto Auditor", "hsm": HSM}),
    )
    .await;
    assert_eq!(call(&em, &auditor, Method::GET, &url, None).await.0, 200);
    let create = data_url(&em, HSM, &format!("/keys/a/create?{API}"));
    assert_eq!(
        call(
            &em,
            &auditor,
            Method::POST,
            &create,
            Some(json!({"kty": "oct-HSM"}))
        )
        .await
        .0,
        403
    );
}

#[tokio::test]
async fn arm_lists_managed_hsms_with_paging() {
    let em = emulator().await;
    admin(
        &em,
        Method::POST,
        "/admin/hsms",
        json!({"name": "third-hsm", "subscription": SUBSCRIPTION}),
    )
    .await;
    let arm = token(&em, CLIENT, SECRET, "https://management.azure.com/.default").await;
    let list = format!(
        "{}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.KeyVault/managedHSMs?api-version=2025-05-01&$top=2",
        em.base_url
    );

    let (status, page1) = call(&em, &arm, Method::GET, &list, None).await;
    assert_eq!(status, 200, "{page1}");
    assert_eq!(page1["value"].as_array().unwrap().len(), 2);
    let hsm = &page1["value"][0];
    assert_eq!(hsm["type"], "Microsoft.KeyVault/managedHSMs");
    assert_eq!(hsm["name"], "demo-hsm");
    assert_eq!(hsm["properties"]["hsmUri"], em.hsm_uri(HSM));
    assert_eq!(hsm["properties"]["tenantId"], TENANT);
    assert_eq!(hsm["properties"]["softDeleteRetentionInDays"], 90);
    assert_eq!(hsm["sku"]["family"], "B");
    let next = page1["nextLink"].as_str().expect("a second page");
    let (_, page2) = call(&em, &arm, Method::GET, next, None).await;
    assert_eq!(page2["value"].as_array().unwrap().len(), 1);
    assert!(page2.get("nextLink").is_none());

    let one = format!(
        "{}/subscriptions/{SUBSCRIPTION}/resourceGroups/keyward-demo/providers/Microsoft.KeyVault/managedHSMs/locked-hsm?api-version=2025-05-01",
        em.base_url
    );
    let (status, body) = call(&em, &arm, Method::GET, &one, None).await;
    assert_eq!(
        (status, body["properties"]["enablePurgeProtection"].clone()),
        (200, json!(true))
    );

    let vaults = format!(
        "{}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.KeyVault/vaults?api-version=2025-05-01",
        em.base_url
    );
    let listed = call(&em, &arm, Method::GET, &vaults, None).await.1;
    let names: Vec<&str> = listed["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [PREMIUM, STANDARD],
        "the vaults, not the Managed HSMs"
    );

    let unknown = format!(
        "{}/subscriptions/00000000-1111-2222-3333-444444444444/providers/Microsoft.KeyVault/managedHSMs?api-version=2025-05-01",
        em.base_url
    );
    let (status, body) = call(&em, &arm, Method::GET, &unknown, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("SubscriptionNotFound"))
    );

    let no_version = format!(
        "{}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.KeyVault/managedHSMs",
        em.base_url
    );
    let (status, body) = call(&em, &arm, Method::GET, &no_version, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("MissingApiVersionParameter"))
    );

    let resp = http(&em).get(&list).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));

    admin(
        &em,
        Method::DELETE,
        "/admin/role-assignments",
        json!({"principal": CLIENT, "role": "Reader", "subscription": SUBSCRIPTION}),
    )
    .await;
    let (status, body) = call(&em, &arm, Method::GET, &list, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("AuthorizationFailed"))
    );
}

/// Builds a BYOK transfer document the way a vendor tool does: RSA-OAEP-SHA1 of a fresh AES
/// key under the KEK, then that key's RFC 5649 wrap of the target (independent of the
/// emulator's own BYOK code).
fn byok_blob(kek_kid: &str, n: &[u8], e: &[u8], target: &[u8]) -> String {
    use aes_gcm::aead::KeyInit;
    use aes_kw::KwpAes256;
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let kek = rsa::PublicKey::new(
        rsa::BoxedUint::from_be_slice_vartime(n),
        rsa::BoxedUint::from_be_slice_vartime(e),
    )
    .unwrap();
    let transport = keyward_emulator::crypto::random_bytes(32);
    let mut ciphertext = kek.oaep_encrypt::<sha1::Sha1>(&transport).unwrap();
    let mut buf = vec![0u8; target.len().div_ceil(8) * 8 + 8];
    let wrapped = KwpAes256::new_from_slice(&transport)
        .unwrap()
        .wrap_key(target, &mut buf)
        .unwrap()
        .to_vec();
    ciphertext.extend(wrapped);
    let doc = json!({
        "schema_version": "1.0.0",
        "header": {"kid": kek_kid, "alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"},
        "ciphertext": URL_SAFE_NO_PAD.encode(&ciphertext),
        "generator": "keyward tests",
    });
    STANDARD.encode(doc.to_string())
}

#[tokio::test]
async fn byok_imports_rsa_and_aes_keys_wrapped_with_ckm_rsa_aes_key_wrap() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let em = emulator().await;
    let t = hsm_token(&em).await;
    let (status, kek) = call(
        &em,
        &t,
        Method::POST,
        &data_url(&em, HSM, &format!("/keys/kek/create?{API}")),
        Some(json!({"kty": "RSA-HSM", "key_size": 2048, "key_ops": ["import"]})),
    )
    .await;
    assert_eq!(status, 200, "{kek}");
    let kid = kek["key"]["kid"].as_str().unwrap();
    let n = URL_SAFE_NO_PAD
        .decode(kek["key"]["n"].as_str().unwrap())
        .unwrap();
    let e = URL_SAFE_NO_PAD
        .decode(kek["key"]["e"].as_str().unwrap())
        .unwrap();

    // AES-256: the imported key decrypts what we encrypt locally with the same bytes.
    let aes_key = keyward_emulator::crypto::random_bytes(32);
    let body = json!({"key": {"kty": "oct-HSM", "key_ops": ["encrypt", "decrypt"], "key_hsm": byok_blob(kid, &n, &e, &aes_key)}});
    let (status, imported) = call(
        &em,
        &t,
        Method::PUT,
        &data_url(&em, HSM, &format!("/keys/byok-aes?{API}")),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{imported}");
    assert_eq!(imported["key"]["kty"], "oct-HSM");
    let iv = [9u8; 12];
    let local =
        keyward_emulator::crypto::gcm_seal(&aes_key, &iv, b"bring your own key", b"").unwrap();
    let (ct, tag) = local.split_at(local.len() - 16);
    let (status, pt) = call(&em, &t, Method::POST, &data_url(&em, HSM, &format!("/keys/byok-aes//decrypt?{API}")), Some(json!({
        "alg": "A256GCM", "value": URL_SAFE_NO_PAD.encode(ct), "iv": URL_SAFE_NO_PAD.encode(iv), "tag": URL_SAFE_NO_PAD.encode(tag)
    }))).await;
    assert_eq!(status, 200, "{pt}");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(pt["value"].as_str().unwrap())
            .unwrap(),
        b"bring your own key"
    );

    // RSA-2048 (PKCS#8): the imported key's public half is ours, and its signatures verify here.
    let target = keyward_emulator::crypto::Material::generate_rsa(2048, None).unwrap();
    let keyward_emulator::crypto::Material::Rsa(private) = &target else {
        unreachable!()
    };
    let body = json!({"key": {"kty": "RSA-HSM", "key_ops": ["sign", "verify"], "key_hsm": byok_blob(kid, &n, &e, &target.to_der())}});
    let (status, imported) = call(
        &em,
        &t,
        Method::PUT,
        &data_url(&em, HSM, &format!("/keys/byok-rsa?{API}")),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{imported}");
    let jwk = keyward_emulator::crypto::rsa_private_jwk(private);
    assert_eq!(imported["key"]["n"], jwk["n"]);
    let digest = keyward_emulator::crypto::sha256(b"signed in the HSM");
    let (_, sig) = call(
        &em,
        &t,
        Method::POST,
        &data_url(&em, HSM, &format!("/keys/byok-rsa//sign?{API}")),
        Some(json!({"alg": "RS256", "value": URL_SAFE_NO_PAD.encode(&digest)})),
    )
    .await;
    let sig = URL_SAFE_NO_PAD
        .decode(sig["value"].as_str().unwrap())
        .unwrap();
    private
        .to_public_key()
        .pkcs1v15_verify_prehash::<sha2::Sha256>(&digest, &sig)
        .expect("signature by the imported key");

    // A KEK that may do more than import is refused; so is an unknown KEK.
    let (_, general) = call(
        &em,
        &t,
        Method::POST,
        &data_url(&em, HSM, &format!("/keys/general/create?{API}")),
        Some(json!({"kty": "RSA-HSM"})),
    )
    .await;
    let general_kid = general["key"]["kid"].as_str().unwrap();
    let body =
        json!({"key": {"kty": "oct-HSM", "key_hsm": byok_blob(general_kid, &n, &e, &aes_key)}});
    let (status, err) = call(
        &em,
        &t,
        Method::PUT,
        &data_url(&em, HSM, &format!("/keys/refused?{API}")),
        Some(body),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only key operation"),
        "{err}"
    );
    let body = json!({"key": {"kty": "oct-HSM", "key_hsm": byok_blob(&format!("{}/keys/none/0123", em.hsm_uri(HSM)), &n, &e, &aes_key)}});
    assert_eq!(
        call(
            &em,
            &t,
            Method::PUT,
            &data_url(&em, HSM, &format!("/keys/refused?{API}")),
            Some(body)
        )
        .await
        .0,
        400
    );
}

#[tokio::test]
async fn soft_delete_retention_and_purge_protection() {
    let em = emulator().await;
    let t = hsm_token(&em).await;
    for hsm in [HSM, "locked-hsm"] {
        let (s, _) = call(
            &em,
            &t,
            Method::POST,
            &data_url(&em, hsm, &format!("/keys/old/create?{API}")),
            Some(json!({"kty": "oct-HSM"})),
        )
        .await;
        assert_eq!(s, 200);
        let (s, deleted) = call(
            &em,
            &t,
            Method::DELETE,
            &data_url(&em, hsm, &format!("/keys/old?{API}")),
            None,
        )
        .await;
        assert_eq!(s, 200);
        let retention = if hsm == HSM { 90 } else { 7 };
        assert_eq!(
            deleted["scheduledPurgeDate"].as_i64().unwrap()
                - deleted["deletedDate"].as_i64().unwrap(),
            retention * 86_400
        );
        assert_eq!(
            deleted["recoveryId"],
            format!("{}/deletedkeys/old", em.hsm_uri(hsm).trim_end_matches('/'))
        );
        // The name is held while the key is soft-deleted.
        let (s, conflict) = call(
            &em,
            &t,
            Method::POST,
            &data_url(&em, hsm, &format!("/keys/old/create?{API}")),
            Some(json!({"kty": "oct-HSM"})),
        )
        .await;
        assert_eq!(s, 409);
        assert_eq!(
            conflict["error"]["innererror"]["code"],
            "ObjectIsDeletedButRecoverable"
        );
    }

    // Purge protection refuses an early purge.
    let (s, body) = call(
        &em,
        &t,
        Method::DELETE,
        &data_url(&em, "locked-hsm", &format!("/deletedkeys/old?{API}")),
        None,
    )
    .await;
    assert_eq!(s, 403);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("purge protection is enabled")
    );

    // After 8 days the 7-day HSM has purged the key; the 90-day one still holds it.
    admin(
        &em,
        Method::POST,
        "/admin/clock/advance",
        json!({"seconds": 8 * 86_400}),
    )
    .await;
    let t = hsm_token(&em).await;
    assert_eq!(
        call(
            &em,
            &t,
            Method::GET,
            &data_url(&em, "locked-hsm", &format!("/deletedkeys/old?{API}")),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(
            &em,
            &t,
            Method::GET,
            &data_url(&em, HSM, &format!("/deletedkeys/old?{API}")),
            None
        )
        .await
        .0,
        200
    );
    let (_, list) = call(
        &em,
        &t,
        Method::GET,
        &data_url(&em, "locked-hsm", &format!("/deletedkeys?{API}")),
        None,
    )
    .await;
    assert_eq!(list["value"], json!([]));
    assert_eq!(
        call(
            &em,
            &t,
            Method::POST,
            &data_url(&em, "locked-hsm", &format!("/keys/old/create?{API}")),
            Some(json!({"kty": "oct-HSM"}))
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn crypto_is_refused_as_azure_refuses_it() {
    let em = emulator().await;
    let t = hsm_token(&em).await;
    let clock: Value = plain()
        .get(format!("{}/admin/clock", em.admin_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let now = clock["now"].as_i64().unwrap();
    let mk = |name: &str, attrs: Value, ops: Value| {
        let url = data_url(&em, HSM, &format!("/keys/{name}/create?{API}"));
        let t = t.clone();
        let em = &em;
        async move {
            let (s, b) = call(
                em,
                &t,
                Method::POST,
                &url,
                Some(json!({"kty": "oct-HSM", "attributes": attrs, "key_ops": ops})),
            )
            .await;
            assert_eq!(s, 200, "{b}");
        }
    };
    let all = json!(["encrypt", "decrypt", "wrapKey", "unwrapKey"]);
    mk("disabled", json!({"enabled": false}), all.clone()).await;
    mk("future", json!({"nbf": now + 86_400}), all.clone()).await;
    mk(
        "expired",
        json!({"nbf": now - 86_400 * 2, "exp": now - 86_400}),
        all.clone(),
    )
    .await;
    mk("decrypt-only", json!({}), json!(["decrypt"])).await;
    let encrypt = |name: &str, alg: &str| {
        let url = data_url(&em, HSM, &format!("/keys/{name}//encrypt?{API}"));
        let t = t.clone();
        let alg = alg.to_string();
        let em = &em;
        async move {
            call(
                em,
                &t,
                Method::POST,
                &url,
                Some(json!({"alg": alg, "value": "aGVsbG8"})),
            )
            .await
        }
    };
    for (name, inner) in [
        ("disabled", "KeyDisabled"),
        ("future", "KeyNotYetValid"),
        ("expired", "KeyExpired"),
        ("decrypt-only", "KeyOperationNotPermitted"),
    ] {
        let (s, body) = encrypt(name, "A256GCM").await;
        assert_eq!(
            (s, body["error"]["innererror"]["code"].as_str()),
            (403, Some(inner)),
            "{name}: {body}"
        );
    }
    mk("plain", json!({}), all).await;
    let (s, body) = encrypt("plain", "RSA-OAEP").await;
    assert_eq!(s, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not supported for a key of type oct-HSM"),
        "{body}"
    );
    let (s, _) = encrypt("plain", "A128GCM").await;
    assert_eq!(s, 400, "a 256-bit key cannot do A128GCM");
}

#[tokio::test]
async fn injected_faults_and_request_counts() {
    let em = emulator().await;
    let t = hsm_token(&em).await;
    let url = data_url(&em, HSM, &format!("/keys?{API}"));
    admin(&em, Method::DELETE, "/admin/counters", json!(null)).await;

    for _ in 0..3 {
        assert_eq!(call(&em, &t, Method::GET, &url, None).await.0, 200);
    }
    let counts = admin(&em, Method::GET, "/admin/counters", json!(null)).await;
    assert_eq!(counts["requests"]["keys.list"], 3);

    admin(
        &em,
        Method::PUT,
        "/admin/faults",
        json!({"throttle_rate": 1.0, "retry_after_secs": 7}),
    )
    .await;
    let resp = http(&em).get(&url).bearer_auth(&t).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Throttled");

    admin(
        &em,
        Method::PUT,
        "/admin/faults",
        json!({"error_rate": 1.0, "error_statuses": [503]}),
    )
    .await;
    let (s, body) = call(&em, &t, Method::GET, &url, None).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (503, Some("ServiceUnavailable"))
    );

    admin(&em, Method::PUT, "/admin/faults", json!({"drop_rate": 1.0})).await;
    let dropped = http(&em).get(&url).bearer_auth(&t).send().await;
    assert!(
        dropped.is_err(),
        "the connection is dropped without a response"
    );

    // Faults can be limited to one plane: the token endpoint keeps working.
    admin(
        &em,
        Method::PUT,
        "/admin/faults",
        json!({"throttle_rate": 1.0, "targets": ["data"]}),
    )
    .await;
    hsm_token(&em).await;
    assert_eq!(call(&em, &t, Method::GET, &url, None).await.0, 429);

    admin(
        &em,
        Method::PUT,
        "/admin/faults",
        json!({"latency_ms": 120}),
    )
    .await;
    let started = std::time::Instant::now();
    assert_eq!(call(&em, &t, Method::GET, &url, None).await.0, 200);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(120),
        "latency is added before the reply"
    );

    let counts = admin(&em, Method::GET, "/admin/counters", json!(null)).await;
    assert_eq!(
        counts["requests"]["keys.list"], 8,
        "every request is counted, faulted or not: {counts}"
    );
    assert_eq!(counts["injected"]["429"], 2);

    // Invalid fault settings are refused.
    let resp = plain()
        .put(format!("{}/admin/faults", em.admin_url))
        .json(&json!({"throttle_rate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn the_path_form_reaches_the_same_hsm() {
    let em = emulator().await;
    let t = hsm_token(&em).await;
    let url = format!("{}/hsm/{HSM}/keys/p/create?{API}", em.base_url);
    let (s, key) = call(&em, &t, Method::POST, &url, Some(json!({"kty": "oct-HSM"}))).await;
    assert_eq!(s, 200);
    assert!(
        key["key"]["kid"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/hsm/{HSM}/keys/p/", em.base_url))
    );
    let (s, _) = call(
        &em,
        &t,
        Method::GET,
        &data_url(&em, HSM, &format!("/keys/p?{API}")),
        None,
    )
    .await;
    assert_eq!(
        s, 200,
        "host form sees the key created through the path form"
    );
}

#[tokio::test]
async fn state_persists_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = keyward_emulator::EmulatorConfig::demo();
    config.server.state_dir = Some(dir.path().to_path_buf());
    config.server.persist = true;
    // The same port both times, as a demo would have: the token's audience names it.
    config.server.port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let em = keyward_emulator::start(config.clone()).await.unwrap();
    let t = hsm_token(&em).await;
    call(
        &em,
        &t,
        Method::POST,
        &data_url(&em, HSM, &format!("/keys/kept/create?{API}")),
        Some(json!({"kty": "oct-HSM"})),
    )
    .await;
    let (_, backup) = call(
        &em,
        &t,
        Method::POST,
        &data_url(&em, HSM, &format!("/keys/kept/backup?{API}")),
        None,
    )
    .await;
    let ca = em.ca_pem.clone();
    em.stop().await;

    let em = keyward_emulator::start(config).await.unwrap();
    assert_eq!(em.ca_pem, ca, "the CA survives");
    assert_eq!(
        call(
            &em,
            &t,
            Method::GET,
            &data_url(&em, HSM, &format!("/keys/kept?{API}")),
            None
        )
        .await
        .0,
        200,
        "the key and the token survive"
    );
    call(
        &em,
        &t,
        Method::DELETE,
        &data_url(&em, HSM, &format!("/keys/kept?{API}")),
        None,
    )
    .await;
    call(
        &em,
        &t,
        Method::DELETE,
        &data_url(&em, HSM, &format!("/deletedkeys/kept?{API}")),
        None,
    )
    .await;
    let (s, _) = call(
        &em,
        &t,
        Method::POST,
        &data_url(&em, HSM, &format!("/keys/restore?{API}")),
        Some(backup),
    )
    .await;
    assert_eq!(s, 200, "backups made before the restart restore");
}

#[tokio::test]
async fn rotation_policy_and_random_bytes() {
    use base64::Engine;
    let em = emulator().await;
    let t = hsm_token(&em).await;
    call(
        &em,
        &t,
        Method::POST,
        &data_url(&em, HSM, &format!("/keys/rotated/create?{API}")),
        Some(json!({"kty": "oct-HSM"})),
    )
    .await;
    let url = data_url(&em, HSM, &format!("/keys/rotated/rotationpolicy?{API}"));
    let (s, default) = call(&em, &t, Method::GET, &url, None).await;
    assert_eq!((s, default["lifetimeActions"].clone()), (200, json!([])));
    let policy = json!({
        "lifetimeActions": [{"trigger": {"timeAfterCreate": "P90D"}, "action": {"type": "Rotate"}}],
        "attributes": {"expiryTime": "P1Y"}
    });
    let (s, saved) = call(&em, &t, Method::PUT, &url, Some(policy)).await;
    assert_eq!(s, 200, "{saved}");
    assert_eq!(
        saved["id"],
        format!(
            "{}/keys/rotated/rotationpolicy",
            em.hsm_uri(HSM).trim_end_matches('/')
        )
    );
    assert_eq!(
        call(&em, &t, Method::GET, &url, None).await.1["attributes"]["expiryTime"],
        "P1Y"
    );
    // Action types in any case, stored as Key Vault spells them; Notify is kept.
    let notify = json!({"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "notify"}}, {"trigger": {"timeAfterCreate": "P90D"}, "action": {"type": "ROTATE"}}], "attributes": {"expiryTime": "P1Y"}});
    let (s, saved) = call(&em, &t, Method::PUT, &url, Some(notify)).await;
    assert_eq!(s, 200, "{saved}");
    let kinds: Vec<&Value> = saved["lifetimeActions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["action"]["type"])
        .collect();
    assert_eq!(kinds, [&json!("Notify"), &json!("Rotate")]);
    let (s, _) = call(
        &em,
        &t,
        Method::PUT,
        &url,
        Some(json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P90D"}, "action": {"type": "Delete"}}]})),
    )
    .await;
    assert_eq!(s, 400, "only Rotate and Notify");

    // Rotation applies the policy's expiry to the new version.
    let (_, rotated) = call(
        &em,
        &t,
        Method::POST,
        &data_url(&em, HSM, &format!("/keys/rotated/rotate?{API}")),
        None,
    )
    .await;
    let attrs = &rotated["attributes"];
    assert_eq!(
        attrs["exp"].as_i64().unwrap() - attrs["created"].as_i64().unwrap(),
        365 * 86_400
    );

    let (s, rng) = call(
        &em,
        &t,
        Method::POST,
        &data_url(&em, HSM, &format!("/rng?{API}")),
        Some(json!({"count": 32})),
    )
    .await;
    assert_eq!(s, 200);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(rng["value"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes.len(), 32);
}

#[tokio::test]
async fn arm_serves_cloud_metadata_tenants_and_subscriptions() {
    let em = emulator().await;
    let meta: Value = http(&em)
        .get(format!(
            "{}/metadata/endpoints?api-version=2022-09-01",
            em.base_url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["authentication"]["loginEndpoint"], em.base_url);
    assert_eq!(
        meta["suffixes"]["mhsmDns"],
        format!("localhost:{}", em.port)
    );

    let arm = token(&em, CLIENT, SECRET, "https://management.azure.com/.default").await;
    let (s, subs) = call(
        &em,
        &arm,
        Method::GET,
        &format!("{}/subscriptions?api-version=2022-12-01", em.base_url),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(subs["value"][0]["subscriptionId"], SUBSCRIPTION);
    let (_, tenants) = call(
        &em,
        &arm,
        Method::GET,
        &format!("{}/tenants?api-version=2022-12-01", em.base_url),
        None,
    )
    .await;
    assert_eq!(tenants["value"][0]["tenantId"], TENANT);
    let (s, one) = call(
        &em,
        &arm,
        Method::GET,
        &format!(
            "{}/subscriptions/{SUBSCRIPTION}?api-version=2022-12-01",
            em.base_url
        ),
        None,
    )
    .await;
    assert_eq!((s, one["state"].as_str()), (200, Some("Enabled")));
}

/// Key lists page by `nextLink` in case-insensitive name order, every key once, with what
/// was created after a page was read showing on a later page; versions and deleted keys too.
#[tokio::test]
async fn key_lists_page_in_name_order_without_gaps_or_repeats() {
    let em = emulator().await;
    let t = hsm_token(&em).await;
    admin(
        &em,
        Method::POST,
        &format!("/admin/hsms/{HSM}/seed"),
        json!({"count": 60, "prefix": "Paged"}),
    )
    .await;
    let walk = |first: String| {
        let (em, t) = (&em, &t);
        async move {
            let (mut next, mut names) = (Some(first), Vec::new());
            while let Some(url) = next {
                let (s, page) = call(em, t, Method::GET, &url, None).await;
                assert_eq!(s, 200, "{page}");
                for k in page["value"].as_array().unwrap() {
                    let kid = k["kid"].as_str().unwrap();
                    names.push(kid.rsplit('/').next().unwrap().to_string());
                }
                next = page["nextLink"].as_str().map(str::to_string);
            }
            names
        }
    };
    let first = data_url(&em, HSM, &format!("/keys?{API}&maxresults=25"));
    let (_, page1) = call(&em, &t, Method::GET, &first, None).await;
    assert_eq!(page1["value"].as_array().unwrap().len(), 25);
    // A key made after the first page, sorting after it, is on a later one.
    call(
        &em,
        &t,
        Method::POST,
        &data_url(&em, HSM, &format!("/keys/paged-99999/create?{API}")),
        Some(json!({"kty": "oct-HSM"})),
    )
    .await;
    let rest = walk(page1["nextLink"].as_str().unwrap().to_string()).await;
    assert!(rest.contains(&"paged-99999".to_string()), "{rest:?}");
    let all = walk(first).await;
    let mut sorted = all.clone();
    sorted.sort_by_key(|n| n.to_ascii_lowercase());
    sorted.dedup();
    assert_eq!(all, sorted, "every key once, in folded-name order");
    assert!(all.len() >= 61, "{}", all.len());
    assert!(
        all.iter().any(|n| n == "Paged-00007"),
        "names keep their case"
    );

    // Versions by position.
    for _ in 0..2 {
        call(
            &em,
            &t,
            Method::POST,
            &data_url(&em, HSM, &format!("/keys/paged-99999/rotate?{API}")),
            None,
        )
        .await;
    }
    let versions = walk(data_url(
        &em,
        HSM,
        &format!("/keys/paged-99999/versions?{API}&maxresults=1"),
    ))
    .await;
    assert_eq!(versions.len(), 3);
    let mut unique = versions.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{versions:?}");

    // Deleted keys by name.
    for n in ["Paged-00001", "paged-00002", "PAGED-00003"] {
        call(
            &em,
            &t,
            Method::DELETE,
            &data_url(&em, HSM, &format!("/keys/{n}?{API}")),
            None,
        )
        .await;
    }
    let deleted = walk(data_url(
        &em,
        HSM,
        &format!("/deletedkeys?{API}&maxresults=2"),
    ))
    .await;
    assert_eq!(deleted, ["Paged-00001", "Paged-00002", "Paged-00003"]);
}
