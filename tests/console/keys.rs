//! Keys through the console (F5, F14..F26): an EC key with every field; a key generated in
//! Azure under an Azure key name of its own; a PEM import; a KEK import refused for a person
//! (only applications unwrap); the list paged and searched by part of the name; a copy whose
//! permissions are narrowed, and one that tries to widen them by a forged form; attribute
//! edits; the rotation-policy form; rotation of an Azure key to a Keyward key picked by name;
//! purge and restore. Each step is checked in what the API reports afterwards.

use keyward_tests::api::{ADMIN_EMAIL, ADMIN_PASSWORD};
use keyward_tests::azure::Azure;
use reqwest::Method;
use serde_json::{Value, json};

use crate::browser::Browser;

async fn key_of(az: &Azure, b: &Browser) -> Value {
    let kid = b.text("kid").await;
    az.admin
        .ok(Method::GET, &format!("/crypto/v1/keys/{kid}"), None)
        .await
}

/// The kid of the key page the browser is on.
async fn here(b: &Browser) -> String {
    b.url()
        .await
        .split("/console/keys/")
        .nth(1)
        .unwrap()
        .split(['?', '/'])
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_made_listed_copied_rotated_purged_and_restored_in_the_browser() {
    let az = Azure::start().await;
    let d = &az.daemon;
    let b = Browser::start(&d.url).await;
    b.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;

    // An EC key with every field (F5).
    b.goto("/console/keys/new").await;
    b.fill("key-name", "signing-ec").await;
    b.select("key-group", &az.plain_group).await;
    b.select("key-type", "EC").await;
    b.select("key-curve", "NistP384").await;
    for op in [
        "ENCRYPT",
        "DECRYPT",
        "WRAPKEY",
        "UNWRAPKEY",
        "APPMANAGEABLE",
    ] {
        b.tick(&format!("op-{op}"), false).await;
    }
    b.fill("key-description", "release signing").await;
    b.set_value("key-deactivation", "2031-06-30T12:00").await;
    b.fill("key-tags", "owner=release\nenvironment=prod").await;
    b.shot("key-new").await;
    b.click("save-key").await;
    b.wait_text("notice", "created").await;
    let k = key_of(&az, &b).await;
    assert_eq!(k["obj_type"], "EC");
    assert_eq!(k["elliptic_curve"], "NistP384");
    assert_eq!(k["key_ops"], json!(["SIGN", "VERIFY"]));
    assert_eq!(k["description"], "release signing");
    assert_eq!(k["deactivation_date"], "20310630T120000Z");
    assert_eq!(
        k["custom_metadata"],
        json!({"owner": "release", "environment": "prod"})
    );

    // Generated in Azure under its own Azure key name (F14).
    b.goto("/console/keys/new").await;
    b.fill("key-name", "Payments KEK").await;
    b.select("key-group", &az.group).await;
    b.select("key-type", "RSA").await;
    b.fill("key-size", "2048").await;
    b.fill("key-azure-name", "payments-kek-2026").await;
    b.click("save-key").await;
    b.wait_text("notice", "created").await;
    let azure_kid = b.text("kid").await;
    b.click("tab-azure").await;
    assert_eq!(b.text("azure-key-name").await, "payments-kek-2026");
    assert!(
        az.remote("payments-kek-2026").await.is_some(),
        "the HSM has it by that name"
    );
    b.shot("key-azure-details").await;

    // A PEM file (F5): an EC private key in PKCS#8.
    let pem_path = d.data_dir.join("legacy.pem");
    let pair = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&pem_path, pair.serialize_pem()).unwrap();
    b.goto("/console/keys/new").await;
    b.fill("key-name", "legacy-ec").await;
    b.select("key-group", &az.plain_group).await;
    b.select("key-type", "EC").await;
    b.click("source-import").await;
    b.upload("key-file", &pem_path).await;
    b.select("key-file-format", "pem").await;
    b.click("save-key").await;
    b.wait_text("notice", "created").await;
    let k = key_of(&az, &b).await;
    assert_eq!(
        (k["obj_type"].as_str(), k["elliptic_curve"].as_str()),
        (Some("EC"), Some("NistP256"))
    );
    assert_eq!(k["origin"], "External");

    // Unwrapping under a KEK is cryptography: a person's import with a KEK is refused and
    // makes nothing.
    let kek = az
        .admin
        .create_key(
            json!({"name": "kek", "group_id": az.plain_group, "obj_type": "AES", "key_size": 256,
            "key_ops": ["WRAPKEY", "UNWRAPKEY"]}),
        )
        .await;
    let wrapped = d.data_dir.join("wrapped.bin");
    std::fs::write(&wrapped, [7u8; 40]).unwrap();
    b.goto("/console/keys/new").await;
    b.fill("key-name", "wrapped-import").await;
    b.select("key-group", &az.plain_group).await;
    b.click("source-import").await;
    b.upload("key-file", &wrapped).await;
    b.select("key-file-format", "raw").await;
    b.fill("key-kek", "kek").await;
    b.click("save-key").await;
    let refused = b.wait_text("error", "").await;
    assert!(refused.to_lowercase().contains("application"), "{refused}");
    let none = az
        .admin
        .ok(Method::GET, "/crypto/v1/keys?name=wrapped-import", None)
        .await;
    assert_eq!(none, json!([]));
    let _ = kek;

    // The list: paged (a note says how many), searched by part of the name, filtered.
    for i in 0..101 {
        az.admin
            .create_key(
                json!({"name": format!("bulk-{i:03}"), "group_id": az.plain_group,
                "obj_type": "AES", "key_size": 128}),
            )
            .await;
    }
    b.goto(&format!("/console/keys?group_id={}", az.plain_group))
        .await;
    let count = b.text("key-count").await;
    assert!(count.starts_with("Keys 1–100 of 104"), "{count}");
    assert_eq!(b.all("key-row").await.len(), 100);
    b.click("page-next").await;
    b.wait_text("key-count", "Keys 101–104 of 104").await;
    assert_eq!(b.all("key-row").await.len(), 4);
    b.goto("/console/keys").await;
    b.fill("filter-name", "BULK-10").await;
    b.select("filter-type", "AES").await;
    b.client
        .find(fantoccini::Locator::Css("[data-testid=key-filters] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_text("key-count", "of 1").await;
    assert!(b.text("keys-table").await.contains("bulk-100"));
    b.goto("/console/keys?name=%25").await;
    b.wait_text("key-count", "No keys match").await;
    b.goto("/console/keys?external=true").await;
    b.wait_text("key-count", "of 1").await;
    assert!(b.text("keys-table").await.contains("Payments KEK"));
    b.shot("security-objects-paged").await;

    // Copy with narrower permissions (F16).
    let source = az
        .admin
        .create_key(json!({"name": "shared", "group_id": az.plain_group, "obj_type": "AES", "key_size": 256}))
        .await;
    let source_kid = source["kid"].as_str().unwrap().to_string();
    let other = az.admin.create_group("second", json!({})).await;
    b.goto(&format!("/console/keys/{source_kid}")).await;
    b.select("copy-group", &other).await;
    b.fill("copy-name", "shared-narrow").await;
    b.tick_value("key_ops", "ENCRYPT", false).await;
    b.click("action-copy").await;
    b.wait_text("notice", "Copied as shared-narrow").await;
    let copy = key_of(&az, &b).await;
    assert!(
        !copy["key_ops"]
            .as_array()
            .unwrap()
            .contains(&json!("ENCRYPT")),
        "{copy}"
    );
    assert!(
        copy["key_ops"]
            .as_array()
            .unwrap()
            .contains(&json!("DECRYPT"))
    );
    // A forged form asking the copy for EXPORT, which the source lacks, is refused.
    let csrf = b
        .client
        .find(fantoccini::Locator::Css("meta[name=\"csrf-token\"]"))
        .await
        .unwrap()
        .attr("content")
        .await
        .unwrap()
        .unwrap();
    let forged = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/console/keys/{source_kid}/copy", d.url))
        .header("cookie", b.session_cookie().await)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={csrf}&group_id={other}&name=widened&key_ops=EXPORT&key_ops=DECRYPT"
        ))
        .send()
        .await
        .unwrap();
    assert!(
        forged.headers()["location"]
            .to_str()
            .unwrap()
            .contains("error=")
    );
    let none = az
        .admin
        .ok(Method::GET, "/crypto/v1/keys?name=widened", None)
        .await;
    assert_eq!(none, json!([]), "no copy with more than its source");

    // Attributes: description and operations (removal only).
    b.goto(&format!("/console/keys/{source_kid}?tab=attributes"))
        .await;
    b.fill("update-description", "shared with partners").await;
    b.tick_value("key_ops", "WRAPKEY", false).await;
    b.click("action-update").await;
    b.wait_text("notice", "Attributes saved").await;
    let k = az
        .admin
        .ok(Method::GET, &format!("/crypto/v1/keys/{source_kid}"), None)
        .await;
    assert_eq!(k["description"], "shared with partners");
    assert!(!k["key_ops"].as_array().unwrap().contains(&json!("WRAPKEY")));

    // The rotation policy form (F25).
    b.goto(&format!("/console/keys/{source_kid}?tab=rotation"))
        .await;
    b.fill("policy-every", "30").await;
    b.select("policy-unit", "days").await;
    b.set_value("policy-start", "2030-01-01T03:00").await;
    b.tick("policy-deactivate", true).await;
    b.tick("policy-copies", true).await;
    b.click("action-policy").await;
    b.wait_text("notice", "Rotation policy saved").await;
    assert!(b.text("rotation-policy").await.contains("every 30 days"));
    let k = az
        .admin
        .ok(Method::GET, &format!("/crypto/v1/keys/{source_kid}"), None)
        .await;
    assert_eq!(
        k["rotation_policy"],
        json!({"interval_days": 30, "effective_at": "20300101T030000Z",
            "deactivate_rotated_key": true, "rotate_copied_keys": "all_external"})
    );
    assert_eq!(k["scheduled_rotation"], "20300101T030000Z");
    b.shot("key-rotation-policy").await;
    b.click("action-policy_remove").await;
    b.wait_text("notice", "Rotation policy saved").await;
    let k = az
        .admin
        .ok(Method::GET, &format!("/crypto/v1/keys/{source_kid}"), None)
        .await;
    assert!(k.get("rotation_policy").is_none_or(Value::is_null), "{k}");

    // Rotate the Azure key to a Keyward key picked by group and name (F26).
    let legacy = az
        .admin
        .create_key(json!({"name": "keyward-rsa", "group_id": az.plain_group, "obj_type": "RSA", "key_size": 2048,
            "key_ops": ["ENCRYPT", "DECRYPT", "WRAPKEY", "UNWRAPKEY", "EXPORT"]}))
        .await["kid"]
        .as_str()
        .unwrap()
        .to_string();
    b.goto(&format!("/console/keys/{azure_kid}")).await;
    b.select("rotate-from", &legacy).await;
    b.click("action-rotate").await;
    b.wait_text("notice", "Rotated").await;
    let replacement = here(&b).await;
    assert_ne!(replacement, azure_kid);
    let k = az
        .admin
        .ok(Method::GET, &format!("/crypto/v1/keys/{replacement}"), None)
        .await;
    assert_eq!(k["external"]["source"], "Keyward", "{k}");
    assert_eq!(k["external"]["id"]["label"], "payments-kek-2026");

    // Soft delete, purge, restore from the backup (F21).
    b.goto(&format!("/console/keys/{replacement}?tab=azure"))
        .await;
    assert!(
        b.attr("action-purge", "disabled").await.is_some(),
        "nothing to purge yet"
    );
    b.tick("confirm-soft-delete", true).await;
    b.click("action-soft_delete").await;
    b.wait_text("notice", "Soft deleted").await;
    b.tick("confirm-purge", true).await;
    b.click("action-purge").await;
    b.wait_text("notice", "Purged").await;
    assert_eq!(b.text("azure-state").await, "Purged");
    assert!(az.remote("payments-kek-2026").await.is_none());
    b.click("action-restore").await;
    b.wait_text("notice", "Restored").await;
    assert_eq!(b.text("azure-state").await, "Active");
    assert!(
        az.remote("payments-kek-2026").await.is_some(),
        "back in the HSM"
    );
    b.shot("key-restored").await;
    b.goto(&format!("/console/keys/{source_kid}?tab=links"))
        .await;
    assert!(
        b.text("links-tab").await.contains("shared-narrow"),
        "copies by name"
    );
    b.shot("key-detail-links").await;

    let _ = b.client.clone().close().await;
    az.stop().await;
}
