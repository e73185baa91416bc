//! Groups linked to Key Vault vaults (Standard and Premium) end to end: the link's kind, the
//! tier rules before anything reaches Azure, every key flow on each tier (generate, import,
//! copy, tags, deactivate, soft delete, recover, purge, restore, rotation native, of linked
//! copies and to Keyward material, sync), and the two ways material travels: a plain JWK into
//! a Standard vault (only what may be exported), a BYOK transfer into a Premium vault.

use keyward_crypto::{Kty, Material};
use keyward_tests::api::{b64, catalog_snapshot, log_entries, unb64};
use keyward_tests::azure::{
    Azure, HSM, PREMIUM_VAULT, SECRET, STANDARD_VAULT, link, settle, vault_link,
};
use reqwest::Method;
use serde_json::{Value, json};

/// Signs through the API and verifies with `m` here: the vault holds the same key.
async fn signs_like(az: &Azure, kid: &str, m: &Material) {
    let data = b"signed in the vault";
    let s = az
        .app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/sign"),
            Some(json!({"hash_alg": "SHA256", "data": b64(data)})),
        )
        .await;
    let alg = if m.family() == Kty::Rsa {
        "RS256"
    } else {
        "ES256"
    };
    let digest = keyward_crypto::sha256(data);
    let mut signature = unb64(&s["signature"]);
    if let Some(curve) = m.curve() {
        // DSM returns ECDSA signatures in DER.
        signature = keyward_crypto::ecdsa_signature_from_der(curve, &signature).unwrap();
    }
    assert!(m.verify(alg, &digest, &signature).unwrap());
}

/// An exportable catalog key and its material.
async fn exportable(az: &Azure, name: &str, body: Value) -> (Value, Material) {
    let mut body = body;
    body["name"] = json!(name);
    body["group_id"] = json!(az.plain_group);
    let key = az.admin.create_key(body).await;
    let exported = az
        .app
        .ok(
            Method::POST,
            "/crypto/v1/keys/export",
            Some(json!({"kid": key["kid"]})),
        )
        .await;
    let kty = if key["obj_type"] == "RSA" {
        Kty::Rsa
    } else {
        Kty::Ec
    };
    let m = Material::from_private_der(kty, &unb64(&exported["value"])).unwrap();
    (key, m)
}

fn copy_events(logs: &Value) -> Vec<Value> {
    log_entries(logs)
        .into_iter()
        .filter(|e| e["action"] == "key.copy" && e["outcome"] == "success")
        .collect()
}

#[tokio::test]
async fn a_standard_vault_group_takes_software_keys_and_plain_transfers_of_exportable_keys() {
    let az = Azure::start_in_vault(STANDARD_VAULT, "STANDARD").await;
    let group = az
        .admin
        .ok(Method::GET, &format!("/sys/v1/groups/{}", az.group), None)
        .await;
    assert_eq!(group["external_kms"]["key_vault_type"], "STANDARD");

    // F14: generated in the vault, software-protected.
    let rsa = az
        .admin
        .create_key(json!({"name": "std-rsa", "group_id": az.group, "obj_type": "RSA", "key_size": 2048, "key_ops": ["SIGN", "VERIFY"]}))
        .await;
    assert_eq!(rsa["external"]["kty"], "RSA", "{rsa}");
    assert_eq!(az.remote("std-rsa").await.unwrap().kty, "RSA");
    let ec = az
        .admin
        .create_key(json!({"name": "std-ec", "group_id": az.group, "obj_type": "EC", "elliptic_curve": "NistP384", "key_ops": ["SIGN", "VERIFY"]}))
        .await;
    assert_eq!(ec["external"]["kty"], "EC");

    // The tier refuses AES before anything reaches Azure, and says what it holds.
    settle(&az.admin).await;
    let before = catalog_snapshot(&az.daemon).await;
    let calls = az.em.counts().get("keys.create").copied().unwrap_or(0);
    let (s, body) = az
        .admin
        .call(
            Method::POST,
            "/crypto/v1/keys",
            Some(json!({"name": "std-aes", "group_id": az.group, "obj_type": "AES", "key_size": 256})),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("Standard tier Key Vault") && msg.contains("software-protected"),
        "{msg}"
    );
    assert_eq!(before, catalog_snapshot(&az.daemon).await);
    assert_eq!(
        az.em.counts().get("keys.create").copied().unwrap_or(0),
        calls
    );

    // F15: the caller's material goes in as a plain JWK; the vault has the same key.
    let m = Material::generate_rsa(2048, None).unwrap();
    let imported = az
        .admin
        .ok(
            Method::PUT,
            "/crypto/v1/keys",
            Some(json!({"name": "std-imported", "group_id": az.group, "obj_type": "RSA", "value": b64(&m.to_der()), "key_ops": ["SIGN", "VERIFY"]})),
        )
        .await;
    assert_eq!(imported["external"]["kty"], "RSA");
    signs_like(&az, imported["kid"].as_str().unwrap(), &m).await;

    // F16 (flow a): a copy of an exportable key, recorded as a plain transfer.
    let (src, src_m) = exportable(
        &az,
        "signer",
        json!({"obj_type": "EC", "elliptic_curve": "NistP256", "key_ops": ["SIGN", "VERIFY", "EXPORT"]}),
    )
    .await;
    let copy = az
        .admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/copy",
            Some(json!({"key": {"kid": src["kid"]}, "group_id": az.group, "key_ops": ["SIGN", "VERIFY"]})),
        )
        .await;
    assert_eq!(copy["links"]["copiedFrom"], src["kid"]);
    signs_like(&az, copy["kid"].as_str().unwrap(), &src_m).await;
    let logs = az
        .admin
        .ok(Method::GET, "/sys/v1/logs?action=key.copy", None)
        .await;
    let event = copy_events(&logs)
        .into_iter()
        .find(|e| e["object_id"] == copy["kid"] || e["details"]["source"] == src["kid"])
        .unwrap_or_else(|| panic!("a copy event: {logs}"));
    assert_eq!(event["details"]["transfer"], "plain_jwk", "{event}");
    assert_eq!(event["details"]["vault_type"], "STANDARD");

    // A key without EXPORT does not leave as a plain JWK.
    let locked = az
        .admin
        .create_key(json!({"name": "locked", "group_id": az.plain_group, "obj_type": "RSA", "key_size": 2048, "key_ops": ["SIGN", "VERIFY"]}))
        .await;
    settle(&az.admin).await;
    let before = catalog_snapshot(&az.daemon).await;
    let (s, body) = az
        .admin
        .call(
            Method::POST,
            "/crypto/v1/keys/copy",
            Some(json!({"key": {"kid": locked["kid"]}, "group_id": az.group})),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("EXPORT"),
        "{body}"
    );
    assert_eq!(before, catalog_snapshot(&az.daemon).await);
    assert!(az.remote("locked").await.is_none());

    lifecycle(&az, "std-rsa", "RSA").await;

    // F24: the source rotates and its copy in the vault gets the new material, plainly.
    let r = az
        .admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{}/rekey", src["kid"].as_str().unwrap()),
            Some(json!({"rotate_copied_keys": "all_external"})),
        )
        .await;
    let outcome = &r["rotated_copies"][0];
    assert!(outcome["error"].is_null(), "{r}");
    let exported = az
        .app
        .ok(
            Method::POST,
            "/crypto/v1/keys/export",
            Some(json!({"kid": r["kid"]})),
        )
        .await;
    let new_m = Material::from_private_der(Kty::Ec, &unb64(&exported["value"])).unwrap();
    signs_like(&az, outcome["new_kid"].as_str().unwrap(), &new_m).await;

    // EXPORT removed from the source afterwards: its copies in a Standard vault no longer
    // rotate (their material would have to leave plainly), and the refusal says why.
    az.admin
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{}", r["kid"].as_str().unwrap()),
            Some(json!({"key_ops": ["SIGN", "VERIFY"]})),
        )
        .await;
    let version_before = az.remote("signer-copy1").await.unwrap().version;
    let r2 = az
        .admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{}/rekey", r["kid"].as_str().unwrap()),
            Some(json!({"rotate_copied_keys": "all_external"})),
        )
        .await;
    let refused = r2["rotated_copies"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(refused.contains("EXPORT"), "{r2}");
    assert_eq!(
        az.remote("signer-copy1").await.unwrap().version,
        version_before,
        "no new version reached the vault"
    );

    // F13: a vault with 1,000 keys syncs into virtual keys.
    az.seed(
        STANDARD_VAULT,
        json!({"count": 1000, "kty": "EC", "prefix": "bulk"}),
    )
    .await;
    let added = az.sync().await;
    assert_eq!(added.len(), 1000, "one virtual key per vault key");
    assert!(added.iter().all(|k| k["external"]["kty"] == "EC"));
    az.stop().await;
}

/// Tags, deactivation, rotation, soft delete, recover, purge, restore from escrow of one
/// virtual key, each checked in the vault.
async fn lifecycle(az: &Azure, name: &str, kty: &str) {
    let key = az
        .admin
        .ok(Method::GET, &format!("/crypto/v1/keys?name={name}"), None)
        .await[0]
        .clone();
    let kid = key["kid"].as_str().unwrap().to_string();
    // F17: tags reach the vault.
    az.admin
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{kid}"),
            Some(json!({"custom_metadata": {"owner": "payments"}})),
        )
        .await;
    let remote = az.remote(name).await.unwrap();
    assert!(
        remote
            .tags
            .iter()
            .any(|t| t.name == "owner" && t.value == "payments")
    );
    // F18: details show the tier and the vault's retention.
    let detail = az
        .admin
        .ok(Method::GET, &format!("/crypto/v1/keys/{kid}"), None)
        .await;
    assert_eq!(detail["external"]["kty"], kty);
    assert_eq!(
        detail["external"]["recovery_level"],
        "Recoverable+Purgeable"
    );
    // F23: a native rotation makes a new version of the same protection.
    let rotated = az
        .admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/rekey"),
            Some(json!({})),
        )
        .await;
    assert_eq!(rotated["external"]["kty"], kty);
    let kid = rotated["kid"].as_str().unwrap().to_string();
    // F21: soft delete, then recover.
    az.admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/schedule_deletion"),
            Some(json!({"confirm": true})),
        )
        .await;
    assert!(az.remote(name).await.is_none(), "soft-deleted in the vault");
    az.admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/recover"),
            None,
        )
        .await;
    assert!(az.remote(name).await.is_some(), "recovered");
    // Purge, then restore from Keyward's escrowed backup.
    az.admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/schedule_deletion"),
            Some(json!({"confirm": true})),
        )
        .await;
    az.admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/delete_key_material"),
            Some(json!({"confirm": true})),
        )
        .await;
    assert!(az.remote(name).await.is_none());
    az.admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/restore"),
            None,
        )
        .await;
    let back = az.remote(name).await.expect("restored from escrow");
    assert_eq!(back.kty, kty);
    // F20: deactivation disables it in the vault.
    az.admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/deactivate"),
            None,
        )
        .await;
    assert!(!az.remote(name).await.unwrap().properties.enabled);
}

#[tokio::test]
async fn a_premium_vault_group_takes_hsm_keys_by_byok() {
    let az = Azure::start_in_vault(PREMIUM_VAULT, "PREMIUM").await;
    let rsa = az
        .admin
        .create_key(json!({"name": "prem-rsa", "group_id": az.group, "obj_type": "RSA", "key_size": 2048, "key_ops": ["SIGN", "VERIFY", "ENCRYPT", "DECRYPT"]}))
        .await;
    assert_eq!(rsa["external"]["kty"], "RSA-HSM");
    let (s, body) = az
        .admin
        .call(
            Method::POST,
            "/crypto/v1/keys",
            Some(json!({"name": "prem-aes", "group_id": az.group, "obj_type": "AES", "key_size": 256})),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Premium tier Key Vault")
    );

    // F15 and F16 (flow b): material arrives by BYOK, under a key-exchange key made in the
    // vault for the transfer and gone afterwards.
    let m = Material::generate_ec(keyward_crypto::Curve::P256);
    let imported = az
        .admin
        .ok(
            Method::PUT,
            "/crypto/v1/keys",
            Some(json!({"name": "prem-imported", "group_id": az.group, "obj_type": "EC", "elliptic_curve": "NistP256", "value": b64(&m.to_der()), "key_ops": ["SIGN", "VERIFY"]})),
        )
        .await;
    assert_eq!(imported["external"]["kty"], "EC-HSM");
    signs_like(&az, imported["kid"].as_str().unwrap(), &m).await;
    let (src, src_m) = exportable(
        &az,
        "rsa-src",
        json!({"obj_type": "RSA", "key_size": 2048, "key_ops": ["SIGN", "VERIFY", "EXPORT"]}),
    )
    .await;
    let copy = az
        .admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/copy",
            Some(json!({"key": {"kid": src["kid"]}, "group_id": az.group, "key_ops": ["SIGN", "VERIFY"]})),
        )
        .await;
    signs_like(&az, copy["kid"].as_str().unwrap(), &src_m).await;
    let logs = az
        .admin
        .ok(Method::GET, "/sys/v1/logs?action=key.copy", None)
        .await;
    assert!(
        copy_events(&logs)
            .iter()
            .any(|e| e["details"]["transfer"] == "byok" && e["details"]["vault_type"] == "PREMIUM"),
        "{logs}"
    );
    let keks = az
        .sync()
        .await
        .iter()
        .filter(|k| k["name"].as_str().unwrap_or_default().contains("kek"))
        .count();
    assert_eq!(keks, 0, "no key-exchange key is left in the vault");

    // F26: the vault key's next version holds a catalog key's material.
    let to_keyward = az
        .admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{}/rekey", rsa["kid"].as_str().unwrap()),
            Some(json!({"rotate_from": {"kid": src["kid"]}})),
        )
        .await;
    assert_eq!(to_keyward["external"]["source"], "Keyward");
    signs_like(&az, to_keyward["kid"].as_str().unwrap(), &src_m).await;

    lifecycle(&az, "prem-imported", "EC-HSM").await;
    az.stop().await;
}

#[tokio::test]
async fn the_link_records_the_kind_and_the_connection_test_says_what_is_missing() {
    let az = Azure::start().await;
    let path = "/sys/v1/groups";
    // A vault URI needs its tier; a kind that does not fit the host name is refused.
    let mut no_kind = vault_link(&az.em, PREMIUM_VAULT, "PREMIUM");
    no_kind.as_object_mut().unwrap().remove("key_vault_type");
    let (s, body) = az
        .admin
        .call(
            Method::POST,
            path,
            Some(json!({"name": "v1", "external_kms": no_kind})),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("key_vault_type"));
    let mut wrong = link(&az.em, SECRET, Some(HSM));
    wrong["key_vault_type"] = json!("PREMIUM");
    wrong["endpoints"]["vault_suffix"] = json!("vault.localhost");
    let (s, body) = az
        .admin
        .call(
            Method::POST,
            path,
            Some(json!({"name": "v2", "external_kms": wrong})),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    // The kind of a bound group does not change.
    let (s, body) = az
        .admin
        .call(
            Method::PATCH,
            &format!("{path}/{}", az.group),
            Some(json!({"external_kms": {"kind": "AzureManagedHsm", "key_vault_type": "PREMIUM"}})),
        )
        .await;
    assert_eq!(s, 409, "{body}");
    let g = az
        .admin
        .ok(Method::GET, &format!("{path}/{}", az.group), None)
        .await;
    assert_eq!(g["external_kms"]["key_vault_type"], "MANAGED");

    // The connection test lists the three kinds, each with its tier.
    let status = az
        .admin
        .ok(
            Method::POST,
            &format!("{path}/{}/hmg/check", az.group),
            Some(json!({})),
        )
        .await;
    assert_eq!(status["status"], "Connected", "{status}");
    let kind = |name: &str| {
        status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed: {status}"))["vault_type"]
            .clone()
    };
    assert_eq!(kind(HSM), "MANAGED");
    assert_eq!(kind(STANDARD_VAULT), "STANDARD");
    assert_eq!(kind(PREMIUM_VAULT), "PREMIUM");

    // A vault whose access policy lacks `import` and `purge`: the test says so, in words a
    // person can act on; a refused call names what to grant.
    let premium = az
        .admin
        .ok(
            Method::POST,
            path,
            Some(json!({"name": "premium", "external_kms": vault_link(&az.em, PREMIUM_VAULT, "PREMIUM")})),
        )
        .await;
    let gid = premium["group_id"].as_str().unwrap();
    let keys: Vec<&str> = keyward::kms::NEEDED_KEY_PERMISSIONS
        .iter()
        .copied()
        .filter(|p| !["import", "purge"].contains(p))
        .collect();
    reqwest::Client::new()
        .put(format!("{}/admin/access-policies", az.em.admin_url))
        .json(&json!({"vault": PREMIUM_VAULT, "principal": keyward_tests::azure::CLIENT, "keys": keys}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let status = az
        .admin
        .ok(
            Method::POST,
            &format!("{path}/{gid}/hmg/check"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status["status"], "Connected");
    let warning = status["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("import, purge"), "{status}");
    reqwest::Client::new()
        .put(format!("{}/admin/access-policies", az.em.admin_url))
        .json(&json!({"vault": PREMIUM_VAULT, "principal": keyward_tests::azure::CLIENT, "keys": ["create"]}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let status = az
        .admin
        .ok(
            Method::POST,
            &format!("{path}/{gid}/hmg/check"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status["status"], "Not Connected");
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("Key Vault Crypto Officer")
            && reason.contains("does not have keys list permission"),
        "{reason}"
    );
    az.stop().await;
}

#[tokio::test]
async fn an_edited_script_cannot_send_unexportable_material_in_the_clear() {
    // A Managed HSM takes AES copies without EXPORT, by BYOK only. This account's copy
    // script tries the plain way instead.
    let az = Azure::start().await;
    let script = r#"
let name = input.azure_name;
let remote = hsm::import_key(name, input.material, #{ ops: input.key.key_ops });
output.kid = keys::record(remote, hsm::backup_key(name));
"#;
    let (s, body) = az
        .admin
        .call(
            Method::PUT,
            "/sys/v1/workflows/byok_copy",
            Some(json!({"source": script, "comment": "plain copies"})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let aes = az
        .admin
        .create_key(json!({"name": "aes-locked", "group_id": az.plain_group, "obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT", "DECRYPT"]}))
        .await;
    let (s, body) = az
        .admin
        .call(
            Method::POST,
            "/crypto/v1/keys/copy",
            Some(json!({"key": {"kid": aes["kid"]}, "group_id": az.group, "name": "aes-copy"})),
        )
        .await;
    assert!(s >= 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("may not leave unwrapped"),
        "{body}"
    );
    assert!(
        az.remote("aes-copy").await.is_none(),
        "nothing reached the HSM"
    );

    // Material that may be exported may go the plain way: the script is not refused for
    // its shape, only for what it would leak.
    let open = az
        .admin
        .create_key(json!({"name": "aes-open", "group_id": az.plain_group, "obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT", "DECRYPT", "EXPORT"]}))
        .await;
    let copy = az
        .admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/copy",
            Some(
                json!({"key": {"kid": open["kid"]}, "group_id": az.group, "name": "aes-open-copy"}),
            ),
        )
        .await;
    assert_eq!(copy["links"]["copiedFrom"], open["kid"]);
    az.stop().await;
}

#[tokio::test]
async fn byok_files_are_exports_and_follow_the_export_rules() {
    use keyward::plugins::kms::KeyOp as RemoteOp;
    use keyward::plugins::kms::{CreateRequest, KeySpec, KeyType};
    let az = Azure::start_in_vault(PREMIUM_VAULT, "PREMIUM").await;
    // A key-exchange key made in the vault, known to Keyward after a sync.
    let kek = az
        .daemon
        .state
        .kms
        .create_key(
            &az.link().await,
            &CreateRequest {
                name: "byok-kek".into(),
                spec: KeySpec {
                    key_type: KeyType::Rsa,
                    size: Some(2048),
                    curve: None,
                },
                ops: vec![RemoteOp::Import],
                enabled: true,
                not_before: None,
                expires: None,
                tags: vec![],
            },
        )
        .await
        .unwrap();
    az.sync().await;
    let (key, material) = exportable(
        &az,
        "outbound",
        json!({"obj_type": "EC", "elliptic_curve": "NistP256", "key_ops": ["SIGN", "VERIFY", "EXPORT"]}),
    )
    .await;
    let kid = key["kid"].as_str().unwrap();
    let path = format!("/crypto/v1/keys/{kid}/byok");

    // The KEK named as a key of the linked group: the file is for its Azure identifier, and
    // opening it with the KEK's private key (which only the vault has) gives the key.
    let file = az
        .app
        .ok(
            Method::POST,
            &path,
            Some(json!({"kek": {"name": "byok-kek"}})),
        )
        .await;
    assert_eq!(file["schema_version"], "1.0.0");
    assert_eq!(file["header"]["kid"], kek.id.as_str());
    assert_eq!(file["header"]["alg"], "dir");
    assert!(file["generator"].as_str().unwrap().starts_with("Keyward "));
    let blob = serde_json::to_vec(&file).unwrap();
    let imported = az
        .daemon
        .state
        .kms
        .import_key(
            &az.link().await,
            &keyward::plugins::kms::ImportRequest {
                name: "landed".into(),
                material: keyward::plugins::kms::KeyMaterial::Byok(
                    keyward::plugins::kms::ByokBlob {
                        kek_id: kek.id.clone(),
                        spec: KeySpec {
                            key_type: KeyType::Ec,
                            size: None,
                            curve: Some(keyward::plugins::kms::Curve::P256),
                        },
                        blob,
                    },
                ),
                ops: vec![RemoteOp::Sign, RemoteOp::Verify],
                enabled: true,
                not_before: None,
                expires: None,
                tags: vec![],
                hsm: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        keyward::kms::public_der(&imported),
        material.public_key_der(),
        "the vault unwrapped the same key"
    );

    // Each export is in the audit log, with the key-exchange key it was made for.
    let logs = az
        .admin
        .ok(Method::GET, "/sys/v1/logs?action=key.export", None)
        .await;
    let events: Vec<Value> = log_entries(&logs)
        .into_iter()
        .filter(|e| e["details"]["format"] == "byok")
        .collect();
    assert_eq!(events.len(), 1, "{logs}");
    assert_eq!(events[0]["details"]["wrapped_for"], kek.id.as_str());

    // Refusals, each changing nothing.
    settle(&az.admin).await;
    let before = catalog_snapshot(&az.daemon).await;
    let locked = az
        .admin
        .create_key(json!({"name": "stays", "group_id": az.plain_group, "obj_type": "RSA", "key_size": 2048, "key_ops": ["SIGN", "VERIFY"]}))
        .await;
    let with_locked = catalog_snapshot(&az.daemon).await;
    let pem = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----\n";
    for (who, path, body, status, says) in [
        (
            &az.app,
            format!("/crypto/v1/keys/{}/byok", locked["kid"].as_str().unwrap()),
            json!({"kek": {"name": "byok-kek"}}),
            403,
            "EXPORT",
        ),
        // A user who manages the group, which does not allow user export.
        (
            &az.admin,
            path.clone(),
            json!({"kek": {"name": "byok-kek"}}),
            403,
            "user_export",
        ),
        (
            &az.app,
            path.clone(),
            json!({"kek_id": "https://x.vault.azure.net/keys/k", "kek_public_key": pem}),
            400,
            "kek_id",
        ),
        (
            &az.app,
            path.clone(),
            json!({"kek_id": kek.id, "kek_public_key": pem}),
            400,
            "not an RSA public key",
        ),
        (
            &az.app,
            path.clone(),
            json!({"kek": {"name": "outbound"}}),
            400,
            "vault or Managed HSM",
        ),
        (
            &az.app,
            path.clone(),
            json!({"kek": {"name": "byok-kek"}, "kek_id": kek.id}),
            400,
            "either",
        ),
    ] {
        let (s, body) = who.call(Method::POST, &path, Some(body)).await;
        assert_eq!(s, status, "{body}");
        assert!(
            body["message"].as_str().unwrap_or_default().contains(says) || body["field"] == says,
            "{says}: {body}"
        );
    }
    settle(&az.admin).await;
    assert_ne!(before, with_locked);
    assert_eq!(
        with_locked,
        catalog_snapshot(&az.daemon).await,
        "the refusals changed nothing"
    );
    assert_eq!(
        log_entries(
            &az.admin
                .ok(
                    Method::GET,
                    "/sys/v1/logs?action=key.export&outcome=success",
                    None
                )
                .await
        )
        .iter()
        .filter(|e| e["details"]["format"] == "byok")
        .count(),
        1,
        "no refused file is recorded as made"
    );
    az.stop().await;
}

#[tokio::test]
async fn a_vault_key_rotates_on_schedule_and_is_deleted_for_good() {
    const DAY: i64 = 86_400;
    let az = Azure::start_in_vault_with(STANDARD_VAULT, "STANDARD", |c| {
        c.scheduler.enabled = false;
        c.session_lifetime_secs = 400 * DAY;
    })
    .await;
    // F25: a rotation policy on a key of a Standard vault; a day later the scheduler rotates
    // it in the vault, once.
    let key = az
        .admin
        .create_key(json!({"name": "nightly", "group_id": az.group, "obj_type": "EC", "elliptic_curve": "NistP256",
            "key_ops": ["SIGN", "VERIFY"], "rotation_policy": {"interval_days": 1}}))
        .await;
    let first = az.remote("nightly").await.unwrap().version;
    az.daemon.clock.advance(DAY + 60);
    let report = az.daemon.state.scheduler.tick().await.unwrap();
    assert_eq!(report.rotated, 1, "{report:?}");
    assert_eq!(
        az.daemon.state.scheduler.tick().await.unwrap().rotated,
        0,
        "once"
    );
    let now = az.remote("nightly").await.unwrap();
    assert_ne!(now.version, first, "a new version in the vault");
    assert_eq!(now.kty, "EC", "of the same protection");
    let current = az
        .admin
        .ok(
            Method::GET,
            &format!("/crypto/v1/keys/{}", key["kid"].as_str().unwrap()),
            None,
        )
        .await;
    let kid = current["links"]["replacement"]
        .as_str()
        .unwrap()
        .to_string();

    // F22: soft delete, purge, then delete: gone from the vault and from the catalog.
    let path = |what: &str| format!("/crypto/v1/keys/{kid}/{what}");
    az.admin
        .ok(
            Method::POST,
            &path("schedule_deletion"),
            Some(json!({"confirm": true})),
        )
        .await;
    az.admin
        .ok(
            Method::POST,
            &path("delete_key_material"),
            Some(json!({"confirm": true})),
        )
        .await;
    let (s, body) = az
        .admin
        .call(Method::DELETE, &format!("/crypto/v1/keys/{kid}"), None)
        .await;
    assert_eq!(s, 204, "{body}");
    let (s, _) = az
        .admin
        .call(Method::GET, &format!("/crypto/v1/keys/{kid}"), None)
        .await;
    assert_eq!(s, 404);
    assert!(az.remote("nightly").await.is_none());
    az.stop().await;
}
