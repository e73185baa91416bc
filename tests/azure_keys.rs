//! Keys of an Azure-linked group (F14 to F22) end to end: the daemon, its workflow scripts
//! and the connector plugin against the emulator over HTTPS. Material equality is checked
//! with cryptography: what the HSM encrypts or signs, the original material opens or
//! verifies.

use keyward_crypto::{Kty, Material};
use keyward_tests::api::{b64, catalog_snapshot, unb64};
use keyward_tests::azure::{Azure, settle};
use reqwest::Method;
use serde_json::json;

/// Encrypts `plain` with an AES key through the API and opens the result with `key` here.
async fn aes_roundtrip_with(az: &Azure, kid: &str, key: &[u8]) {
    let plain = b"attack at dawn";
    let e = az
        .app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/encrypt"),
            Some(json!({"alg": "AES", "plain": b64(plain), "mode": "GCM"})),
        )
        .await;
    let mut sealed = unb64(&e["cipher"]);
    sealed.extend(unb64(&e["tag"]));
    let opened = keyward_crypto::gcm_open(key, &unb64(&e["iv"]), &sealed, b"").unwrap();
    assert_eq!(opened, plain);
}

/// Signs with a key through the API and verifies the signature with `m` here.
async fn rsa_signature_verifies_with(az: &Azure, kid: &str, m: &Material) {
    let data = b"signed by the HSM";
    let s = az
        .app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/sign"),
            Some(json!({"hash_alg": "SHA256", "data": b64(data)})),
        )
        .await;
    let digest = keyward_crypto::sha256(data);
    assert!(m.verify("RS256", &digest, &unb64(&s["signature"])).unwrap());
}

async fn escrow_count(az: &Azure, kid: &str) -> i64 {
    az.count("SELECT COUNT(*) FROM escrow_blobs WHERE kid = ?", kid)
        .await
}

async fn material_stored(az: &Azure, kid: &str) -> bool {
    az.count(
        "SELECT COUNT(*) FROM sobjects WHERE kid = ? AND material IS NOT NULL",
        kid,
    )
    .await
        > 0
}

#[tokio::test]
async fn keys_generated_in_azure_are_virtual_keys_with_their_azure_details() {
    let az = Azure::start().await;
    let g = az.group.clone();

    let rsa = az
        .admin
        .create_key(json!({"name": "payments-rsa", "group_id": g, "obj_type": "RSA", "key_size": 3072,
            "key_ops": ["SIGN", "VERIFY", "ENCRYPT", "DECRYPT"], "custom_metadata": {"owner": "payments"}}))
        .await;
    // F18: the Azure key's identity, version and source.
    let ext = &rsa["external"];
    assert_eq!(ext["id"]["label"], "payments-rsa");
    assert_eq!(ext["kty"], "RSA-HSM");
    assert_eq!(ext["source"], "External");
    assert_eq!(ext["state"], "Active");
    let version = ext["key_version"].as_str().unwrap();
    assert_eq!(
        ext["key_id"],
        format!("{}keys/payments-rsa/{version}", az.em.hsm_uri("demo-hsm"))
    );
    assert_eq!(rsa["origin"], "External");
    assert_eq!(rsa["key_size"], 3072);
    assert!(rsa["pub_key"].is_string(), "the public key is shown");
    let kid = rsa["kid"].as_str().unwrap();
    assert!(
        !material_stored(&az, kid).await,
        "no material in the catalog"
    );
    assert_eq!(escrow_count(&az, kid).await, 1, "a backup is escrowed");

    // The HSM has it, with the tags and operations asked for.
    let remote = az.remote("payments-rsa").await.expect("in the HSM");
    assert_eq!(remote.version, version);
    assert!(
        remote
            .tags
            .iter()
            .any(|t| t.name == "owner" && t.value == "payments")
    );
    assert_eq!(remote.ops.len(), 4);

    // AES 256 and EC too; the key state follows the activation date (F14).
    let aes = az
        .admin
        .create_key(json!({"name": "vault-aes", "group_id": g, "obj_type": "AES", "key_size": 256}))
        .await;
    assert_eq!(aes["state"], "Active");
    // Read once: the clock runs, and a second boundary between two reads
    // would make the comparison below fail.
    let later_secs = az.daemon.clock.now() + 86_400;
    let later = keyward::time::format_dsm(later_secs);
    let pre = az
        .admin
        .create_key(json!({"name": "later-aes", "group_id": g, "obj_type": "AES", "key_size": 256, "activation_date": later}))
        .await;
    assert_eq!(pre["state"], "PreActive");
    assert_eq!(
        az.remote("later-aes").await.unwrap().properties.not_before,
        Some(later_secs)
    );
    let ec = az
        .admin
        .create_key(json!({"name": "signing-ec", "group_id": g, "obj_type": "EC", "elliptic_curve": "NistP256"}))
        .await;
    assert_eq!(ec["external"]["kty"], "EC-HSM");

    // Applications use virtual keys; the work happens in the HSM.
    let before = az.em.counts().get("keys.encrypt").copied().unwrap_or(0);
    let aes_kid = aes["kid"].as_str().unwrap();
    let e = az
        .app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{aes_kid}/encrypt"),
            Some(json!({"alg": "AES", "plain": b64(b"hello"), "ad": b64(b"ctx")})),
        )
        .await;
    assert_eq!(
        az.em.counts()["keys.encrypt"],
        before + 1,
        "encrypted by the HSM"
    );
    let d = az
        .app
        .ok(Method::POST, &format!("/crypto/v1/keys/{aes_kid}/decrypt"), Some(json!({"alg": "AES", "cipher": e["cipher"], "iv": e["iv"], "tag": e["tag"], "ad": b64(b"ctx")})))
        .await;
    assert_eq!(unb64(&d["plain"]), b"hello");
    // AES-CBC with PKCS#7 padding is Managed HSM's A256CBCPAD; the HSM picks the iv.
    let e = az
        .app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{aes_kid}/encrypt"),
            Some(json!({"alg": "AES", "mode": "CBC", "plain": b64(b"seventeen bytes!!")})),
        )
        .await;
    assert_eq!(unb64(&e["cipher"]).len(), 32);
    assert_eq!(unb64(&e["iv"]).len(), 16);
    assert_eq!(az.em.counts()["keys.encrypt"], before + 2);
    let d = az
        .app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{aes_kid}/decrypt"),
            Some(json!({"alg": "AES", "mode": "CBC", "cipher": e["cipher"], "iv": e["iv"]})),
        )
        .await;
    assert_eq!(unb64(&d["plain"]), b"seventeen bytes!!");
    let e = az
        .app
        .ok(Method::POST, &format!("/crypto/v1/keys/{kid}/encrypt"), Some(json!({"alg": "RSA", "plain": b64(b"secret"), "mode": {"OAEP": {"mgf": {"mgf1": {"hash": "SHA256"}}}}})))
        .await;
    let d = az
        .app
        .ok(Method::POST, &format!("/crypto/v1/keys/{kid}/decrypt"), Some(json!({"alg": "RSA", "cipher": e["cipher"], "mode": {"OAEP": {"mgf": {"mgf1": {"hash": "SHA256"}}}}})))
        .await;
    assert_eq!(unb64(&d["plain"]), b"secret");
    for (key, hash) in [(kid, "SHA256"), (ec["kid"].as_str().unwrap(), "SHA256")] {
        let s = az
            .app
            .ok(
                Method::POST,
                &format!("/crypto/v1/keys/{key}/sign"),
                Some(json!({"hash_alg": hash, "data": b64(b"msg")})),
            )
            .await;
        let v = az
            .app
            .ok(
                Method::POST,
                &format!("/crypto/v1/keys/{key}/verify"),
                Some(json!({"hash_alg": hash, "data": b64(b"msg"), "signature": s["signature"]})),
            )
            .await;
        assert_eq!(v["result"], true);
        let v = az
            .app
            .ok(
                Method::POST,
                &format!("/crypto/v1/keys/{key}/verify"),
                Some(json!({"hash_alg": hash, "data": b64(b"other"), "signature": s["signature"]})),
            )
            .await;
        assert_eq!(v["result"], false);
    }
    // Wrap a catalog key with the HSM's AES key, unwrap it back into the catalog.
    let local = az
        .admin
        .create_key(json!({"name": "to-wrap", "group_id": az.plain_group, "obj_type": "AES", "key_size": 128, "key_ops": ["ENCRYPT", "DECRYPT", "EXPORT"]}))
        .await;
    let w = az
        .app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{aes_kid}/wrapkey"),
            Some(json!({"alg": "AES", "subject": {"kid": local["kid"]}, "mode": "KW"})),
        )
        .await;
    let u = az
        .app
        .ok(Method::POST, &format!("/crypto/v1/keys/{aes_kid}/unwrapkey"), Some(json!({"alg": "AES", "wrapped_key": w["wrapped_key"], "mode": "KW", "obj_type": "AES", "name": "unwrapped", "group_id": az.plain_group})))
        .await;
    assert_eq!(u["kcv"], local["kcv"], "the same key came back");

    // F19: one list of every group's keys, virtual ones marked.
    let all = az.admin.ok(Method::GET, "/crypto/v1/keys", None).await;
    let all = all.as_array().unwrap();
    let marked = all.iter().filter(|k| k["external"].is_object()).count();
    assert_eq!(marked, 4);
    assert!(
        all.iter()
            .any(|k| k["name"] == "to-wrap" && k["external"].is_null())
    );
    az.stop().await;
}

#[tokio::test]
async fn policies_apply_before_anything_reaches_the_hsm() {
    let az = Azure::start().await;
    let g = az.group.clone();
    az.admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{g}"),
            Some(json!({
                "cryptographic_policy": {"mode": "enforce", "aes": {"key_sizes": [256]}, "rsa": {"minimum_key_length": 3072}},
                "key_metadata_policy": {"mode": "enforce", "base": {"custom_metadata": {"owner": {"required": {}}}}},
            })),
        )
        .await;
    settle(&az.admin).await;
    let created = az.em.counts().get("keys.create").copied().unwrap_or(0);
    let before = catalog_snapshot(&az.daemon).await;
    for body in [
        json!({"name": "small", "group_id": g, "obj_type": "RSA", "key_size": 2048, "custom_metadata": {"owner": "x"}}),
        json!({"name": "untagged", "group_id": g, "obj_type": "AES", "key_size": 256}),
    ] {
        let (s, resp) = az
            .admin
            .call(Method::POST, "/crypto/v1/keys", Some(body))
            .await;
        assert_eq!(s, 403, "{resp}");
        assert_eq!(resp["code"], "PolicyViolation");
    }
    assert_eq!(
        az.em.counts().get("keys.create").copied().unwrap_or(0),
        created
    );
    assert!(az.remote("small").await.is_none());
    // Only the denials were recorded.
    let after = catalog_snapshot(&az.daemon).await;
    let changed: Vec<&str> = after.lines().filter(|l| !before.contains(l)).collect();
    assert!(changed.iter().all(|l| l.contains("denied")), "{changed:?}");

    let ok = az
        .admin
        .create_key(json!({"name": "fine", "group_id": g, "obj_type": "RSA", "key_size": 3072, "custom_metadata": {"owner": "x"}}))
        .await;
    assert_eq!(ok["external"]["state"], "Active");
    az.stop().await;
}

#[tokio::test]
async fn imported_material_goes_into_the_hsm_by_byok_and_not_into_the_catalog() {
    let az = Azure::start().await;
    let g = az.group.clone();
    let byok_creates = |az: &Azure| az.em.counts().get("keys.create").copied().unwrap_or(0);

    // AES 256 as base64 and as hex.
    let aes = Material::generate_oct(256).unwrap();
    let raw = aes.to_der();
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let k1 = az
        .admin
        .ok(
            Method::PUT,
            "/crypto/v1/keys",
            Some(json!({"name": "byok-aes", "group_id": g, "obj_type": "AES", "value": b64(&raw)})),
        )
        .await;
    assert_eq!(
        k1["external"]["source"], "Keyward",
        "F18: the material came from Keyward"
    );
    aes_roundtrip_with(&az, k1["kid"].as_str().unwrap(), &raw).await;
    let k2 = az
        .admin
        .ok(Method::PUT, "/crypto/v1/keys", Some(json!({"name": "byok-aes-hex", "group_id": g, "obj_type": "AES", "value": hex, "value_format": "hex"})))
        .await;
    aes_roundtrip_with(&az, k2["kid"].as_str().unwrap(), &raw).await;

    // RSA 2048 as PKCS#8 DER.
    let rsa = Material::generate_rsa(2048, None).unwrap();
    let k3 = az
        .admin
        .ok(Method::PUT, "/crypto/v1/keys", Some(json!({"name": "byok-rsa", "group_id": g, "obj_type": "RSA", "value": b64(&rsa.to_der()), "key_ops": ["SIGN", "VERIFY"]})))
        .await;
    assert_eq!(k3["key_size"], 2048);
    rsa_signature_verifies_with(&az, k3["kid"].as_str().unwrap(), &rsa).await;

    // Wrapped by a key-encryption key of the catalog: unwrapped here, then imported.
    let kek = az
        .admin
        .create_key(json!({"name": "kek", "group_id": az.plain_group, "obj_type": "AES", "key_size": 256, "key_ops": ["WRAPKEY", "UNWRAPKEY", "EXPORT"]}))
        .await;
    // Exporting and unwrapping are for applications of the key's group.
    let exported = az
        .app
        .ok(
            Method::POST,
            "/crypto/v1/keys/export",
            Some(json!({"kid": kek["kid"]})),
        )
        .await;
    let target = Material::generate_oct(256).unwrap().to_der();
    let wrapped = keyward_crypto::aes_kw_wrap(&unb64(&exported["value"]), &target, true).unwrap();
    let k4 = az
        .app
        .ok(Method::PUT, "/crypto/v1/keys", Some(json!({"name": "byok-wrapped", "group_id": g, "obj_type": "AES", "value": b64(&wrapped), "wrapped_by": {"kid": kek["kid"]}})))
        .await;
    aes_roundtrip_with(&az, k4["kid"].as_str().unwrap(), &target).await;

    for k in [&k1, &k2, &k3, &k4] {
        let kid = k["kid"].as_str().unwrap();
        assert!(
            !material_stored(&az, kid).await,
            "no copy of the material is kept"
        );
        assert_eq!(escrow_count(&az, kid).await, 1);
    }
    // Each import made its own key-exchange key, which is gone afterwards (deleted, purged).
    assert!(byok_creates(&az) >= 4);
    let link = az.link().await;
    let kms = &az.daemon.state.kms;
    let left: Vec<String> = kms
        .list_all_keys(&link)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .filter(|n| n.starts_with("keyward-kek"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(kms.list_all_deleted(&link).await.unwrap().is_empty());

    // A run record shows the material as a secret, never its bytes.
    let runs = az
        .admin
        .ok(Method::GET, "/sys/v1/workflow_runs?workflow=import", None)
        .await;
    assert_eq!(runs.as_array().unwrap().len(), 4);
    assert_eq!(runs[0]["inputs"]["material"], "<secret>");
    assert!(!runs.to_string().contains(&b64(&raw)));
    az.stop().await;
}

#[tokio::test]
async fn copies_carry_the_material_and_links_and_follow_the_export_rule() {
    let az = Azure::start().await;
    let src = az
        .admin
        .create_key(json!({"name": "signer", "group_id": az.plain_group, "obj_type": "RSA", "key_size": 2048,
            "key_ops": ["SIGN", "VERIFY", "EXPORT"], "custom_metadata": {"team": "a"}}))
        .await;
    let src_kid = src["kid"].as_str().unwrap();
    let exported = az
        .app
        .ok(
            Method::POST,
            "/crypto/v1/keys/export",
            Some(json!({"kid": src_kid})),
        )
        .await;
    let material = Material::from_private_der(Kty::Rsa, &unb64(&exported["value"])).unwrap();

    // The suggested name, then a copy with fewer permissions.
    let name = az
        .admin
        .ok(
            Method::GET,
            &format!("/crypto/v1/keys/{src_kid}/copy_name"),
            None,
        )
        .await;
    assert_eq!(name["name"], "signer_copy1");
    let copy = az
        .admin
        .ok(Method::POST, "/crypto/v1/keys/copy", Some(json!({"key": {"kid": src_kid}, "group_id": az.group, "key_ops": ["SIGN", "VERIFY"]})))
        .await;
    assert_eq!(copy["name"], "signer_copy1");
    assert_eq!(copy["key_ops"], json!(["SIGN", "VERIFY"]));
    assert_eq!(
        copy["external"]["id"]["label"], "signer-copy1",
        "Azure names take dashes"
    );
    assert_eq!(copy["external"]["source"], "Keyward");
    assert_eq!(copy["links"]["copiedFrom"], src_kid);
    assert_eq!(copy["custom_metadata"]["team"], "a");
    rsa_signature_verifies_with(&az, copy["kid"].as_str().unwrap(), &material).await;

    let copy2 = az
        .admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/copy",
            Some(json!({"key": {"name": "signer"}, "group_id": az.group})),
        )
        .await;
    assert_eq!(copy2["name"], "signer_copy2");
    let src = az
        .admin
        .ok(Method::GET, &format!("/crypto/v1/keys/{src_kid}"), None)
        .await;
    let copies = src["links"]["copiedTo"].as_array().unwrap();
    assert_eq!(copies.len(), 2);
    assert_eq!(copies[0]["kid"], copy["kid"]);
    assert_eq!(copies[0]["group_id"], az.group);
    assert!(copies[0]["copied_by"].is_string() && copies[0]["copied_at"].is_string());

    settle(&az.admin).await;
    let before = catalog_snapshot(&az.daemon).await;
    // RSA without EXPORT: refused.
    let locked = az
        .admin
        .create_key(json!({"name": "locked", "group_id": az.plain_group, "obj_type": "RSA", "key_size": 2048, "key_ops": ["SIGN", "VERIFY"]}))
        .await;
    let before_locked = catalog_snapshot(&az.daemon).await;
    let (s, body) = az
        .admin
        .call(
            Method::POST,
            "/crypto/v1/keys/copy",
            Some(json!({"key": {"kid": locked["kid"]}, "group_id": az.group})),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("EXPORT"));
    // A virtual key: refused.
    let (s, body) = az
        .admin
        .call(
            Method::POST,
            "/crypto/v1/keys/copy",
            Some(json!({"key": {"kid": copy["kid"]}, "group_id": az.plain_group})),
        )
        .await;
    assert_eq!(s, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("virtual key"));
    assert_eq!(before_locked, catalog_snapshot(&az.daemon).await);
    assert_ne!(before, before_locked);

    // AES needs no EXPORT to be copied (the rule is for RSA and EC).
    let aes = az
        .admin
        .create_key(json!({"name": "aes-src", "group_id": az.plain_group, "obj_type": "AES", "key_size": 256, "key_ops": ["ENCRYPT", "DECRYPT"]}))
        .await;
    let aes_copy = az
        .admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/copy",
            Some(json!({"key": {"kid": aes["kid"]}, "group_id": az.group, "name": "aes-in-azure"})),
        )
        .await;
    assert_eq!(aes_copy["name"], "aes-in-azure");
    let e = az
        .app
        .ok(
            Method::POST,
            &format!(
                "/crypto/v1/keys/{}/encrypt",
                aes_copy["kid"].as_str().unwrap()
            ),
            Some(json!({"alg": "AES", "plain": b64(b"x")})),
        )
        .await;
    let d = az
        .app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{}/decrypt", aes["kid"].as_str().unwrap()),
            Some(json!({"alg": "AES", "cipher": e["cipher"], "iv": e["iv"], "tag": e["tag"]})),
        )
        .await;
    assert_eq!(
        unb64(&d["plain"]),
        b"x",
        "the copy in the HSM is the same key"
    );
    az.stop().await;
}

#[tokio::test]
async fn tags_and_deactivation_reach_the_hsm() {
    let az = Azure::start().await;
    let k = az
        .admin
        .create_key(
            json!({"name": "tagged", "group_id": az.group, "obj_type": "AES", "key_size": 256}),
        )
        .await;
    let kid = k["kid"].as_str().unwrap();

    // F17: a tag added to the virtual key is an Azure tag.
    let updated = az
        .admin
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{kid}"),
            Some(json!({"custom_metadata": {"cost-center": "42"}})),
        )
        .await;
    assert_eq!(updated["custom_metadata"]["cost-center"], "42");
    let remote = az.remote("tagged").await.unwrap();
    assert_eq!(remote.tags.len(), 1);
    assert_eq!(remote.tags[0].name, "cost-center");
    assert_eq!(remote.tags[0].value, "42");

    // A rename stays in the catalog.
    let renamed = az
        .admin
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{kid}"),
            Some(json!({"name": "tagged-renamed"})),
        )
        .await;
    assert_eq!(renamed["name"], "tagged-renamed");
    assert_eq!(renamed["external"]["id"]["label"], "tagged");

    // F20: deactivating disables the Azure key.
    let d = az
        .admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/deactivate"),
            None,
        )
        .await;
    assert_eq!(d["state"], "Deactivated");
    assert_eq!(d["enabled"], false);
    assert!(!az.remote("tagged").await.unwrap().properties.enabled);
    let (s, _) = az
        .app
        .call(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/encrypt"),
            Some(json!({"alg": "AES", "plain": b64(b"x")})),
        )
        .await;
    assert_eq!(s, 403);

    // Its material cannot be destroyed from here.
    let (s, body) = az
        .admin
        .call(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/destroy"),
            None,
        )
        .await;
    assert_eq!(s, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("schedule_deletion")
    );
    let (s, _) = az
        .admin
        .call(
            Method::POST,
            "/crypto/v1/keys/export",
            Some(json!({"kid": kid})),
        )
        .await;
    assert!(s == 403 || s == 409);
    az.stop().await;
}

#[tokio::test]
async fn soft_delete_recover_purge_restore_and_delete() {
    let az = Azure::start().await;
    let k = az
        .admin
        .create_key(
            json!({"name": "lifecycle", "group_id": az.group, "obj_type": "AES", "key_size": 256}),
        )
        .await;
    let kid = k["kid"].as_str().unwrap().to_string();
    let path = |what: &str| format!("/crypto/v1/keys/{kid}/{what}");
    let e = az
        .app
        .ok(
            Method::POST,
            &path("encrypt"),
            Some(json!({"alg": "AES", "plain": b64(b"keep me")})),
        )
        .await;
    let decrypt = json!({"alg": "AES", "cipher": e["cipher"], "iv": e["iv"], "tag": e["tag"]});

    // F22: no delete while the key lives in Azure.
    let (s, body) = az
        .admin
        .call(Method::DELETE, &format!("/crypto/v1/keys/{kid}"), None)
        .await;
    assert_eq!(s, 409, "{body}");
    // F21: soft delete needs an explicit confirmation.
    let (s, body) = az
        .admin
        .call(Method::POST, &path("schedule_deletion"), Some(json!({})))
        .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["field"], "confirm");
    assert!(az.remote("lifecycle").await.is_some());
    let deleted = az
        .admin
        .ok(
            Method::POST,
            &path("schedule_deletion"),
            Some(json!({"confirm": true})),
        )
        .await;
    assert_eq!(deleted["external"]["state"], "SoftDeleted");
    assert!(deleted["external"]["scheduled_purge_date"].is_string());
    assert!(az.remote("lifecycle").await.is_none());
    let (s, _) = az
        .app
        .call(Method::POST, &path("decrypt"), Some(decrypt.clone()))
        .await;
    assert_eq!(s, 409, "no use while soft-deleted");

    // Still not purged: delete refused with the reason.
    let (s, body) = az
        .admin
        .call(Method::DELETE, &format!("/crypto/v1/keys/{kid}"), None)
        .await;
    assert_eq!(s, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("not purged"));

    // The name is held by the soft-deleted key: a clear conflict.
    let (s, body) = az
        .admin
        .call(Method::POST, "/crypto/v1/keys", Some(json!({"name": "lifecycle-again", "group_id": az.group, "obj_type": "AES", "key_size": 256})))
        .await;
    assert_eq!(s, 201, "another name is fine: {body}");
    az.admin
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{kid}"),
            Some(json!({"name": "old-lifecycle"})),
        )
        .await;
    let (s, body) = az
        .admin
        .call(Method::POST, "/crypto/v1/keys", Some(json!({"name": "lifecycle", "group_id": az.group, "obj_type": "AES", "key_size": 256})))
        .await;
    assert_eq!(s, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("soft-deleted"),
        "{body}"
    );

    // Recover brings it back, with its material.
    let recovered = az.admin.ok(Method::POST, &path("recover"), None).await;
    assert_eq!(recovered["external"]["state"], "Active");
    let d = az
        .app
        .ok(Method::POST, &path("decrypt"), Some(decrypt.clone()))
        .await;
    assert_eq!(unb64(&d["plain"]), b"keep me");

    // Soft-deleted again, the retention period passes: Azure purges it; sync sees it.
    az.admin
        .ok(
            Method::POST,
            &path("schedule_deletion"),
            Some(json!({"confirm": true})),
        )
        .await;
    az.em.advance_clock(91 * 86_400);
    az.sync().await;
    let purged = az
        .admin
        .ok(Method::GET, &format!("/crypto/v1/keys/{kid}"), None)
        .await;
    assert_eq!(purged["external"]["state"], "Purged");

    // Restore from escrow: the same key is back.
    let restored = az.admin.ok(Method::POST, &path("restore"), None).await;
    assert_eq!(restored["external"]["state"], "Active");
    let d = az
        .app
        .ok(Method::POST, &path("decrypt"), Some(decrypt))
        .await;
    assert_eq!(unb64(&d["plain"]), b"keep me");
    let (s, body) = az.admin.call(Method::POST, &path("restore"), None).await;
    assert_eq!(s, 409, "it exists again: {body}");

    // Purge right away (this HSM has no purge protection), then delete for good (F22).
    az.admin
        .ok(
            Method::POST,
            &path("schedule_deletion"),
            Some(json!({"confirm": true})),
        )
        .await;
    let (s, _) = az
        .admin
        .call(Method::POST, &path("delete_key_material"), Some(json!({})))
        .await;
    assert_eq!(s, 400);
    let p = az
        .admin
        .ok(
            Method::POST,
            &path("delete_key_material"),
            Some(json!({"confirm": true})),
        )
        .await;
    assert_eq!(p["external"]["state"], "Purged");
    assert_eq!(escrow_count(&az, &kid).await, 1);
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
    assert_eq!(
        escrow_count(&az, &kid).await,
        0,
        "the escrowed backup is gone too"
    );
    az.stop().await;
}

/// The actions the key service offers (the console's buttons) follow what it accepts: each
/// offered action succeeds, and what it does not offer is refused.
#[tokio::test]
async fn offered_actions_are_the_ones_the_key_service_takes() {
    let az = Azure::start().await;
    let caller = keyward::api::extract::Caller::from_token(
        &az.daemon.state,
        az.admin.token.as_deref().unwrap(),
    )
    .await
    .unwrap();
    let keys = &az.daemon.state.keys;
    let actions = |kid: String| {
        let access = caller.access.clone();
        async move { keys.actions(&access, &kid).await.unwrap() }
    };
    let path = |kid: &str, rest: &str| format!("/crypto/v1/keys/{kid}{rest}");

    // A key held in the catalog: active keys are not deleted; deactivated ones are.
    let local = az
        .admin
        .create_key(json!({"name": "local", "group_id": az.plain_group, "obj_type": "AES", "key_size": 256}))
        .await["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let a = actions(local.clone()).await;
    assert!(
        a.deactivate && a.copy && a.rotate && !a.delete && !a.soft_delete && !a.recover,
        "{a:?}"
    );
    assert_eq!(
        az.admin
            .call(Method::DELETE, &path(&local, ""), None)
            .await
            .0,
        409
    );
    az.admin
        .ok(Method::POST, &path(&local, "/deactivate"), None)
        .await;
    let a = actions(local.clone()).await;
    assert!(!a.deactivate && a.delete, "{a:?}");

    // A virtual key: soft delete while it lives in the HSM, recover once soft-deleted.
    let remote = az
        .admin
        .create_key(
            json!({"name": "remote", "group_id": az.group, "obj_type": "AES", "key_size": 256}),
        )
        .await["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let a = actions(remote.clone()).await;
    assert!(a.soft_delete && !a.recover && !a.copy && !a.delete, "{a:?}");
    assert_eq!(
        az.admin
            .call(Method::POST, &path(&remote, "/recover"), None)
            .await
            .0
            / 100,
        4,
        "recover is not offered, and the HSM refuses it"
    );
    az.admin
        .ok(
            Method::POST,
            &path(&remote, "/schedule_deletion"),
            Some(json!({"confirm": true})),
        )
        .await;
    let a = actions(remote.clone()).await;
    assert!(
        !a.soft_delete && a.recover && a.purge && !a.restore,
        "{a:?}"
    );
    az.admin
        .ok(Method::POST, &path(&remote, "/recover"), None)
        .await;
    let a = actions(remote.clone()).await;
    assert!(!a.purge && !a.restore, "{a:?}");
    assert_eq!(
        az.admin
            .call(
                Method::POST,
                &path(&remote, "/delete_key_material"),
                Some(json!({"confirm": true}))
            )
            .await
            .0
            / 100,
        4,
        "purge is not offered for a live key, and the HSM refuses it"
    );

    // Soft deleted, then purged: restore from the escrowed backup is offered, and works.
    let gone = az
        .admin
        .create_key(
            json!({"name": "gone", "group_id": az.group, "obj_type": "AES", "key_size": 256}),
        )
        .await["kid"]
        .as_str()
        .unwrap()
        .to_string();
    az.admin
        .ok(
            Method::POST,
            &path(&gone, "/schedule_deletion"),
            Some(json!({"confirm": true})),
        )
        .await;
    az.admin
        .ok(
            Method::POST,
            &path(&gone, "/delete_key_material"),
            Some(json!({"confirm": true})),
        )
        .await;
    let a = actions(gone.clone()).await;
    assert!(a.restore && !a.purge && !a.recover && a.delete, "{a:?}");
    az.admin
        .ok(Method::POST, &path(&gone, "/restore"), None)
        .await;
    let a = actions(gone.clone()).await;
    assert!(!a.restore && a.soft_delete, "{a:?}");

    // A version a rotation replaced offers none of the key-manager flows.
    let rotated = az
        .admin
        .ok(Method::POST, &path(&remote, "/rekey"), None)
        .await;
    let a = actions(remote.clone()).await;
    assert!(!a.soft_delete && !a.recover && !a.rotate, "{a:?}");
    assert!(
        actions(rotated["kid"].as_str().unwrap().to_string())
            .await
            .soft_delete
    );

    // Someone who may not manage the key is offered nothing.
    let app_caller = keyward::api::extract::Caller::from_token(
        &az.daemon.state,
        az.app.token.as_deref().unwrap(),
    )
    .await
    .unwrap();
    let mut narrowed = app_caller.access.clone();
    narrowed.app_groups.clear();
    // (Either it is not visible at all, or nothing is offered.)
    let offered = keys.actions(&narrowed, &local).await;
    assert!(offered.is_err() || offered.unwrap() == Default::default());
    az.stop().await;
}
