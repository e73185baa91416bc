//! A group's settings through the console (F4, F10, F11, F27..F29): the crypto policy and key
//! metadata policy set as forms and as JSON, and then enforced on new keys; a policy plugin
//! attached; user export; the link's tenant edited; the CA uploaded as a file, then back to
//! the public roots (the emulator is then not trusted: Not Connected); a client certificate
//! and key uploaded and removed. Each step is checked through the API.

use keyward_tests::api::{ADMIN_EMAIL, ADMIN_PASSWORD};
use keyward_tests::azure::{Azure, TENANT};
use reqwest::Method;
use serde_json::json;

use crate::browser::Browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_policies_plugins_and_tls_are_set_in_the_browser() {
    let az = Azure::start().await;
    let d = &az.daemon;
    let admin = &az.admin;
    let group = admin.create_group("Regulated", json!({})).await;
    let b = Browser::start(&d.url).await;
    b.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let group_of = |id: &str| {
        let path = format!("/sys/v1/groups/{id}");
        async move { admin.ok(Method::GET, &path, None).await }
    };

    // The crypto policy as a form: AES-256 only, encrypt and decrypt (F27).
    b.goto(&format!("/console/groups/{group}?tab=policies"))
        .await;
    b.tick("cp-aes", true).await;
    b.fill("cp-aes-sizes", "256").await;
    b.tick("cp-op-ENCRYPT", true).await;
    b.tick("cp-op-DECRYPT", true).await;
    b.click("save-crypto-policy").await;
    b.wait_text("notice", "Group settings saved").await;
    let g = group_of(&group).await;
    assert_eq!(
        g["cryptographic_policy"],
        json!({"aes": {"key_sizes": [256]}, "key_ops": ["ENCRYPT", "DECRYPT"]})
    );
    let (s, body) = admin
        .call(
            Method::POST,
            "/crypto/v1/keys",
            Some(json!({"name": "weak", "group_id": group,
            "obj_type": "AES", "key_size": 128, "key_ops": ["ENCRYPT", "DECRYPT"]})),
        )
        .await;
    assert_eq!(s, 403, "the policy is enforced: {body}");

    // The key metadata policy as a form (F28), then a key made in the console must carry it.
    b.fill("mp-required", "owner\nenvironment: prod, test")
        .await;
    b.tick("mp-description", true).await;
    b.click("save-metadata-policy").await;
    b.wait_text("notice", "Group settings saved").await;
    let g = group_of(&group).await;
    assert_eq!(
        g["key_metadata_policy"],
        json!({"base": {"custom_metadata": {"owner": {"required": {}},
            "environment": {"required": {"allowed_values": ["prod", "test"]}}},
            "description": {"required": {}}}})
    );
    b.shot("group-policies").await;
    let make = |tags: &'static str| {
        let b = &b;
        let group = group.clone();
        async move {
            b.goto("/console/keys/new").await;
            b.fill("key-name", "tagged").await;
            b.select("key-group", &group).await;
            for op in ["WRAPKEY", "UNWRAPKEY", "APPMANAGEABLE"] {
                b.tick(&format!("op-{op}"), false).await;
            }
            b.fill("key-description", "card data").await;
            b.fill("key-tags", tags).await;
            b.click("save-key").await;
        }
    };
    make("owner=payments\nenvironment=staging").await;
    let refused = b.wait_text("error", "environment").await;
    assert!(refused.contains("allowed"), "{refused}");
    make("owner=payments\nenvironment=prod").await;
    b.wait_text("notice", "created").await;

    // The same policies as JSON: the crypto policy in warn mode.
    b.goto(&format!("/console/groups/{group}?tab=policies"))
        .await;
    b.client
        .find(fantoccini::Locator::Css(
            "[data-testid=policies-tab] details summary",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.fill("cp-json", r#"{"mode": "warn", "aes": {}}"#).await;
    b.click("save-json").await;
    b.wait_text("notice", "Group settings saved").await;
    let g = group_of(&group).await;
    assert_eq!(
        g["cryptographic_policy"],
        json!({"mode": "warn", "aes": {}})
    );
    assert_eq!(
        g["key_metadata_policy"]["base"]["description"],
        json!({"required": {}})
    );
    b.client
        .find(fantoccini::Locator::Css(
            "[data-testid=policies-tab] details summary",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.fill("cp-json", "{not json").await;
    b.click("save-json").await;
    b.wait_text("error", "not JSON").await;

    // A policy plugin attached with its configuration (F29), and user export (F4).
    b.tick("attach-key-metadata-policy", true).await;
    b.fill(
        "config-key-metadata-policy",
        r#"{"base": {"description": {"required": {}}}}"#,
    )
    .await;
    b.click("save-plugins").await;
    b.wait_text("notice", "Group settings saved").await;
    b.tick("settings-user-export", true).await;
    b.click("save-general").await;
    b.wait_text("notice", "Group settings saved").await;
    let g = group_of(&group).await;
    assert_eq!(g["custom_policies"][0]["plugin"], "key-metadata-policy");
    assert_eq!(g["user_export"], true);

    // The link (F10, F11): the tenant edited; the CA from a file; back to the public roots.
    let linked = &az.group;
    let tls_of = |g: &serde_json::Value| g["external_kms"]["tls"].clone();
    b.goto(&format!("/console/groups/{linked}?tab=hsm")).await;
    assert!(b.text("tls-trust").await.contains("custom CA"));
    b.fill("tenant-id", "00000000-1111-2222-3333-444444444444")
        .await;
    b.click("save-link").await;
    b.wait_text("notice", "Link saved").await;
    let g = group_of(linked).await;
    assert_eq!(
        g["external_kms"]["tenant_id"],
        "00000000-1111-2222-3333-444444444444"
    );
    assert!(
        g["external_kms"]["tls"]["ca_pem"].is_string(),
        "the CA stays"
    );
    // A fresh page: the last answer's "Link saved" must not stand for the next one's.
    b.goto(&format!("/console/groups/{linked}?tab=hsm")).await;
    b.fill("tenant-id", TENANT).await;
    b.tick("public-roots", true).await;
    b.click("save-link").await;
    b.wait_text("notice", "Link saved").await;
    let g = group_of(linked).await;
    assert!(tls_of(&g)["ca_pem"].is_null(), "{g}");
    assert!(b.text("tls-trust").await.contains("public roots"));
    b.click("test-connection").await;
    b.wait_text("error", "Not Connected").await;
    let ca = d.data_dir.join("emulator-ca.pem");
    std::fs::write(&ca, &az.em.ca_pem).unwrap();
    b.upload("ca-file", &ca).await;
    b.click("save-link").await;
    b.wait_text("notice", "Link saved").await;
    assert_eq!(
        tls_of(&group_of(linked).await)["ca_pem"],
        az.em.ca_pem.as_str()
    );
    b.click("test-connection").await;
    b.wait_text("notice", "Connected").await;

    // A client certificate and key from files, then removed.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["keyward-client".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (d.data_dir.join("client.pem"), d.data_dir.join("client.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    b.upload("client-cert-file", &cert_file).await;
    b.upload("client-key-file", &key_file).await;
    b.click("save-link").await;
    b.wait_text("notice", "Link saved").await;
    let tls = tls_of(&group_of(linked).await);
    assert_eq!(tls["client_cert"], cert.pem().as_str());
    assert_eq!(tls["has_client_key"], true);
    assert!(
        !b.client.source().await.unwrap().contains("PRIVATE KEY"),
        "the key is never shown"
    );
    assert!(b.text("client-cert-state").await.contains("is set"));
    b.shot("group-tls").await;
    b.goto(&format!("/console/groups/{linked}?tab=hsm")).await;
    b.tick("remove-client-cert", true).await;
    b.click("save-link").await;
    b.wait_text("notice", "Link saved").await;
    let tls = tls_of(&group_of(linked).await);
    assert!(
        tls["client_cert"].is_null() && tls["has_client_key"] == false,
        "{tls}"
    );

    let _ = b.client.clone().close().await;
    az.stop().await;
}
