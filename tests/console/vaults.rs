//! Key Vault vaults in the browser: a user links a group to the emulated Standard vault (the
//! connection test lists the Managed HSM and both vaults with their tier; choosing one sends
//! its tier with it), makes a key there and is refused AES with the reason; then downloads a
//! key's Azure BYOK file from its page, checked through the API and the audit log.

use fantoccini::Locator;
use keyward_tests::api::{ADMIN_EMAIL, ADMIN_PASSWORD, TestDaemon, log_entries};
use keyward_tests::azure::{
    self, CLIENT, PREMIUM_VAULT, SECRET, STANDARD_VAULT, SUBSCRIPTION, TENANT,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::browser::Browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_links_a_vault_group_and_downloads_a_byok_file() {
    let em = azure::emulator().await;
    let d = TestDaemon::start_with(azure::allow_local).await;
    let admin = d.bootstrap().await;
    let b = Browser::start(&d.url).await;
    b.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;

    // Link a group to the Standard vault.
    b.goto("/console/groups/new").await;
    b.fill("group-name", "Standard vault").await;
    b.click("link-hsm").await;
    b.fill("tenant-id", TENANT).await;
    b.fill("client-id", CLIENT).await;
    b.fill("client-secret", SECRET).await;
    b.fill("subscription-id", SUBSCRIPTION).await;
    b.client
        .find(Locator::Css("details summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.fill("identity-endpoint", &em.base_url).await;
    b.fill("management-endpoint", &em.base_url).await;
    b.fill("instance-suffix", "localhost").await;
    b.fill("vault-suffix", "vault.localhost").await;
    b.fill("ca-pem", &em.ca_pem).await;
    b.click("test-connection").await;
    b.wait_text("connection-status", "Connected").await;
    let options: Vec<String> = {
        let mut out = Vec::new();
        for o in b
            .el("instance")
            .await
            .find_all(Locator::Css("option"))
            .await
            .unwrap()
        {
            out.push(o.text().await.unwrap());
        }
        out
    };
    assert!(
        options
            .iter()
            .any(|o| o.contains(STANDARD_VAULT) && o.contains("Key Vault, Standard")),
        "{options:?}"
    );
    assert!(
        options
            .iter()
            .any(|o| o.contains(PREMIUM_VAULT) && o.contains("Key Vault, Premium")),
        "{options:?}"
    );
    assert!(
        options.iter().any(|o| o.contains("Managed HSM")),
        "{options:?}"
    );
    b.select("instance", &em.vault_uri(STANDARD_VAULT)).await;
    b.shot("add-group-vault").await;
    b.click("save-group").await;
    b.wait_text("notice", "created").await;
    assert_eq!(b.text("vault-type").await, "Standard tier Key Vault");
    let group = b
        .url()
        .await
        .split("/console/groups/")
        .nth(1)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let g = admin
        .ok(Method::GET, &format!("/sys/v1/groups/{group}"), None)
        .await;
    assert_eq!(g["external_kms"]["key_vault_type"], "STANDARD", "{g}");

    // A key in the vault; AES is refused with the reason.
    b.goto("/console/keys/new").await;
    b.fill("key-name", "vault-ec").await;
    b.select("key-group", &group).await;
    b.select("key-type", "EC").await;
    b.select("key-curve", "NistP256").await;
    b.click("save-key").await;
    b.wait_text("notice", "created").await;
    let made = admin
        .ok(Method::GET, "/crypto/v1/keys?name=vault-ec", None)
        .await;
    assert_eq!(made[0]["external"]["kty"], "EC", "{made}");
    b.goto(&format!(
        "/console/keys/{}?tab=azure",
        made[0]["kid"].as_str().unwrap()
    ))
    .await;
    assert_eq!(b.text("azure-store").await, "Standard tier Key Vault");
    assert_eq!(b.text("azure-kty").await, "EC", "software-protected");
    b.goto("/console/keys/new").await;
    b.fill("key-name", "vault-aes").await;
    b.select("key-group", &group).await;
    b.select("key-type", "AES").await;
    b.fill("key-size", "256").await;
    b.click("save-key").await;
    let refused = b.wait_text("error", "Standard tier Key Vault").await;
    assert!(refused.contains("software-protected"), "{refused}");

    // A BYOK file from an exportable key of a group that allows user export.
    let open = admin
        .create_group("Exportable", json!({"user_export": true}))
        .await;
    let key = admin
        .create_key(
            json!({"name": "leaving", "group_id": open, "obj_type": "RSA", "key_size": 2048,
            "key_ops": ["ENCRYPT", "DECRYPT", "EXPORT"]}),
        )
        .await;
    let kid = key["kid"].as_str().unwrap();
    let kek = keyward_crypto::Material::generate_rsa(2048, None).unwrap();
    let der = kek.public_key_der().unwrap();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        keyward_tests::api::b64(&der)
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let kek_id = "https://contoso.vault.azure.net/keys/KEK/0123456789abcdef0123456789abcdef";
    b.goto(&format!("/console/keys/{kid}")).await;
    b.fill("byok-kek-id", kek_id).await;
    b.set_value("byok-kek-public-key", &pem).await;
    b.shot("key-byok").await;
    // The download itself, as the browser would post it (the form's fields and token).
    let csrf = b
        .client
        .find(Locator::Css("meta[name=\"csrf-token\"]"))
        .await
        .unwrap()
        .attr("content")
        .await
        .unwrap()
        .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/console/keys/{kid}/byok", d.url))
        .header("cookie", b.session_cookie().await)
        .form(&[
            ("csrf", csrf.as_str()),
            ("kek_id", kek_id),
            ("kek_public_key", pem.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(&format!("{kid}.byok"))
    );
    let file: Value = resp.json().await.unwrap();
    assert_eq!(file["header"]["kid"], kek_id);
    // The file opens with the key-exchange key's private key: the key's own material.
    let ciphertext =
        keyward_crypto::decode_b64("ciphertext", file["ciphertext"].as_str().unwrap()).unwrap();
    let inside = keyward_crypto::byok_unwrap(&kek, &ciphertext).unwrap();
    let exported = admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/export",
            Some(json!({"kid": kid})),
        )
        .await;
    assert_eq!(inside, keyward_tests::api::unb64(&exported["value"]));
    let logs = admin
        .ok(Method::GET, "/sys/v1/logs?action=key.export", None)
        .await;
    assert!(
        log_entries(&logs)
            .iter()
            .any(|e| e["details"]["format"] == "byok" && e["details"]["wrapped_for"] == kek_id),
        "{logs}"
    );
    drop(b);
    d.stop().await;
    em.stop().await;
}
