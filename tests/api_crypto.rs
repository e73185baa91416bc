//! Cryptographic correctness through the REST API: NIST AES-GCM known answers, RSA-OAEP and
//! PSS, ECDSA, wrapping, and export/import round trips, checked against independent local
//! implementations where it matters.

use keyward_tests::api::{Api, TestDaemon, b64, unb64};
use reqwest::Method;
use rsa::pkcs8::DecodePublicKey;
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha384};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// An admin, a group and an application that may use its keys.
async fn setup() -> (TestDaemon, Api, Api) {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("crypto", json!({})).await;
    let (_, key) = admin.create_app("crypto-app", &[&g]).await;
    let app = d.login_app(&key).await;
    (d, admin, app)
}

async fn kid_of(v: &Value) -> String {
    v["kid"].as_str().unwrap().to_string()
}

/// NIST SP 800-38A F.2.5 (CBC-AES256, four blocks) through `CBCNOPAD`; `CBC` pads with
/// PKCS#7 (a whole block after whole-block data); a bad padding or ragged data is a 400.
#[tokio::test]
async fn aes_cbc_matches_nist_vectors_and_pads_with_pkcs7() {
    let (_d, _admin, app) = setup().await;
    let key = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
    let iv = hex("000102030405060708090a0b0c0d0e0f");
    let plain = hex(
        "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710",
    );
    let cipher = hex(
        "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b",
    );
    let k = app
        .ok(
            Method::PUT,
            "/crypto/v1/keys",
            Some(
                json!({"name": "nist-cbc", "obj_type": "AES", "value": key, "value_format": "hex"}),
            ),
        )
        .await;
    let kid = kid_of(&k).await;
    let op = |name: &str| format!("/crypto/v1/keys/{kid}/{name}");
    let enc = app
        .ok(
            Method::POST,
            &op("encrypt"),
            Some(json!({"alg": "AES", "mode": "CBCNOPAD", "plain": b64(&plain), "iv": b64(&iv)})),
        )
        .await;
    assert_eq!(unb64(&enc["cipher"]), cipher);
    assert_eq!(unb64(&enc["iv"]), iv);
    let dec = app
        .ok(
            Method::POST,
            &op("decrypt"),
            Some(json!({"alg": "AES", "mode": "CBCNOPAD", "cipher": b64(&cipher), "iv": b64(&iv)})),
        )
        .await;
    assert_eq!(unb64(&dec["plain"]), plain);

    let padded = app
        .ok(
            Method::POST,
            &op("encrypt"),
            Some(json!({"alg": "AES", "mode": "CBC", "plain": b64(&plain), "iv": b64(&iv)})),
        )
        .await;
    let padded_cipher = unb64(&padded["cipher"]);
    assert_eq!(padded_cipher.len(), 80);
    assert_eq!(&padded_cipher[..64], &cipher[..]);
    // Without an iv one is drawn and answered.
    let fresh = app
        .ok(
            Method::POST,
            &op("encrypt"),
            Some(json!({"alg": "AES", "mode": "CBC", "plain": b64(b"abc")})),
        )
        .await;
    assert_eq!(unb64(&fresh["iv"]).len(), 16);
    let dec = app
        .ok(
            Method::POST,
            &op("decrypt"),
            Some(
                json!({"alg": "AES", "mode": "CBC", "cipher": fresh["cipher"], "iv": fresh["iv"]}),
            ),
        )
        .await;
    assert_eq!(unb64(&dec["plain"]), b"abc");

    for (name, body) in [
        (
            "decrypt",
            json!({"alg": "AES", "mode": "CBC", "cipher": b64(&cipher), "iv": b64(&iv)}),
        ),
        (
            "decrypt",
            json!({"alg": "AES", "mode": "CBC", "cipher": padded["cipher"]}),
        ),
        (
            "encrypt",
            json!({"alg": "AES", "mode": "CBCNOPAD", "plain": b64(b"ragged")}),
        ),
        (
            "encrypt",
            json!({"alg": "AES", "mode": "CBC", "plain": b64(b"x"), "iv": b64(&[0u8; 12])}),
        ),
        (
            "encrypt",
            json!({"alg": "AES", "mode": "CBC", "plain": b64(b"x"), "ad": b64(b"ctx")}),
        ),
    ] {
        let (status, body_back) = app.call(Method::POST, &op(name), Some(body.clone())).await;
        assert_eq!(status, 400, "{body} -> {body_back}");
        assert!(body_back["message"].is_string(), "{body_back}");
    }
}

#[tokio::test]
async fn aes_gcm_matches_nist_vectors() {
    let (_d, _admin, app) = setup().await;
    // NIST SP 800-38D test cases 3 and 4 (AES-128) and 15 and 16 (AES-256).
    let p = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
    let p60 = &p[..120];
    let aad = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
    let iv = "cafebabefacedbaddecaf888";
    let k128 = "feffe9928665731c6d6a8f9467308308";
    let k256 = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
    let cases = [
        (
            "tc3",
            k128,
            p,
            "",
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
            "4d5c2af327cd64a62cf35abd2ba6fab4",
        ),
        (
            "tc4",
            k128,
            p60,
            aad,
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
            "5bc94fbc3221a5db94fae95ae7121a47",
        ),
        (
            "tc15",
            k256,
            p,
            "",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
            "b094dac5d93471bdec1a502270e3cc6c",
        ),
        (
            "tc16",
            k256,
            p60,
            aad,
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            "76fc6ece0f4e1768cddf8853bb2d551b",
        ),
    ];
    for (name, key, plain, ad, cipher, tag) in cases {
        let k = app
            .ok(Method::PUT, "/crypto/v1/keys", Some(json!({"name": format!("nist-{name}"), "obj_type": "AES", "value": key, "value_format": "hex"})))
            .await;
        let kid = kid_of(&k).await;
        let mut req =
            json!({"alg": "AES", "mode": "GCM", "plain": b64(&hex(plain)), "iv": b64(&hex(iv))});
        if !ad.is_empty() {
            req["ad"] = json!(b64(&hex(ad)));
        }
        let enc = app
            .ok(
                Method::POST,
                &format!("/crypto/v1/keys/{kid}/encrypt"),
                Some(req),
            )
            .await;
        assert_eq!(unb64(&enc["cipher"]), hex(cipher), "{name} ciphertext");
        assert_eq!(unb64(&enc["tag"]), hex(tag), "{name} tag");
        let mut back = json!({"alg": "AES", "mode": "GCM", "cipher": enc["cipher"], "iv": enc["iv"], "tag": enc["tag"]});
        if !ad.is_empty() {
            back["ad"] = json!(b64(&hex(ad)));
        }
        let dec = app
            .ok(
                Method::POST,
                &format!("/crypto/v1/keys/{kid}/decrypt"),
                Some(back.clone()),
            )
            .await;
        assert_eq!(unb64(&dec["plain"]), hex(plain), "{name} plaintext");
        // A flipped tag bit is refused.
        let mut bad_tag = hex(tag);
        bad_tag[0] ^= 1;
        back["tag"] = json!(b64(&bad_tag));
        assert_eq!(
            app.call(
                Method::POST,
                &format!("/crypto/v1/keys/{kid}/decrypt"),
                Some(back)
            )
            .await
            .0,
            400
        );
    }
}

#[tokio::test]
async fn rsa_oaep_and_signatures_interoperate() {
    let (_d, _admin, app) = setup().await;
    let key = app
        .create_key(json!({"name": "rsa", "obj_type": "RSA", "key_size": 2048}))
        .await;
    let kid = kid_of(&key).await;
    let public =
        rsa::PublicKey::from_public_key_der(&unb64(&key["pub_key"])).expect("SPKI public key");

    // OAEP-SHA256 encrypted here, decrypted by Keyward.
    let oaep256 = json!({"OAEP": {"mgf": {"mgf1": {"hash": "SHA256"}}}});
    let local = public.oaep_encrypt::<Sha256>(b"wrapped secret").unwrap();
    let dec = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/decrypt"),
            Some(json!({"alg": "RSA", "mode": oaep256, "cipher": b64(&local)})),
        )
        .await;
    assert_eq!(unb64(&dec["plain"]), b"wrapped secret");
    // OAEP (SHA-1, the default) round trip through Keyward.
    let enc = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/encrypt"),
            Some(json!({"alg": "RSA", "plain": b64(b"hello")})),
        )
        .await;
    let dec = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/decrypt"),
            Some(json!({"alg": "RSA", "cipher": enc["cipher"]})),
        )
        .await;
    assert_eq!(unb64(&dec["plain"]), b"hello");
    // DSM's string modes (what the `sdkms` client sends) mean the same paddings.
    let local = public.oaep_encrypt::<Sha256>(b"named mode").unwrap();
    let dec = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/decrypt"),
            Some(json!({"alg": "RSA", "mode": "OAEP_MGF1_SHA256", "cipher": b64(&local)})),
        )
        .await;
    assert_eq!(unb64(&dec["plain"]), b"named mode");
    let local = public.oaep_encrypt::<sha1::Sha1>(b"sha1 mode").unwrap();
    let dec = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/decrypt"),
            Some(json!({"alg": "RSA", "mode": "OAEP_MGF1_SHA1", "cipher": b64(&local)})),
        )
        .await;
    assert_eq!(unb64(&dec["plain"]), b"sha1 mode");
    let (s, body) = app
        .call(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/encrypt"),
            Some(json!({"alg": "RSA", "mode": "OAEP_MGF1_MD5", "plain": b64(b"x")})),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("OAEP_MGF1_SHA256"),
        "{body}"
    );

    // PSS and PKCS#1 v1.5 signatures verify here and there.
    let digest = Sha256::digest(b"release 2.0").to_vec();
    for mode in [json!({"PSS": {}}), json!({"PKCS1_V15": {}})] {
        let sig = app
            .ok(
                Method::POST,
                &format!("/crypto/v1/keys/{kid}/sign"),
                Some(json!({"hash_alg": "SHA256", "hash": b64(&digest), "mode": mode})),
            )
            .await;
        let sig_bytes = unb64(&sig["signature"]);
        if mode.get("PSS").is_some() {
            public
                .pss_verify_prehash::<Sha256>(&digest, &sig_bytes)
                .expect("a valid PSS signature");
        } else {
            public
                .pkcs1v15_verify_prehash::<Sha256>(&digest, &sig_bytes)
                .expect("a valid PKCS#1 v1.5 signature");
        }
        let ok = app.ok(Method::POST, &format!("/crypto/v1/keys/{kid}/verify"), Some(json!({"hash_alg": "SHA256", "data": b64(b"release 2.0"), "signature": sig["signature"], "mode": mode}))).await;
        assert_eq!(ok["result"], true);
        let other = app.ok(Method::POST, &format!("/crypto/v1/keys/{kid}/verify"), Some(json!({"hash_alg": "SHA256", "data": b64(b"release 2.1"), "signature": sig["signature"], "mode": mode}))).await;
        assert_eq!(other["result"], false);
    }
}

#[tokio::test]
async fn ecdsa_signatures_verify_with_the_public_key() {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let (_d, _admin, app) = setup().await;
    let key = app
        .create_key(json!({"name": "ec256", "obj_type": "EC", "elliptic_curve": "NistP256"}))
        .await;
    let kid = kid_of(&key).await;
    let vk = p256::ecdsa::VerifyingKey::from_public_key_der(&unb64(&key["pub_key"]))
        .expect("SPKI P-256 key");
    let sig = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/sign"),
            Some(json!({"hash_alg": "SHA256", "data": b64(b"firmware")})),
        )
        .await;
    // DER, as DSM returns ECDSA signatures.
    let der = unb64(&sig["signature"]);
    let s = p256::ecdsa::Signature::from_der(&der).expect("a DER ECDSA signature");
    vk.verify_prehash(&Sha256::digest(b"firmware"), &s)
        .expect("a valid ECDSA signature");
    // Verify takes DER and, as JOSE writes it, r || s.
    for form in [der.clone(), s.to_bytes().to_vec()] {
        let ok = app
            .ok(
                Method::POST,
                &format!("/crypto/v1/keys/{kid}/verify"),
                Some(json!({"hash_alg": "SHA256", "data": b64(b"firmware"), "signature": b64(&form)})),
            )
            .await;
        assert_eq!(ok["result"], true);
    }

    let key = app
        .create_key(json!({"name": "ec384", "obj_type": "EC", "elliptic_curve": "NistP384"}))
        .await;
    let kid = kid_of(&key).await;
    let digest = Sha384::digest(b"firmware").to_vec();
    let sig = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/sign"),
            Some(json!({"hash_alg": "SHA384", "hash": b64(&digest)})),
        )
        .await;
    let ok = app.ok(Method::POST, "/crypto/v1/verify", Some(json!({"key": {"name": "ec384"}, "hash_alg": "SHA384", "hash": b64(&digest), "signature": sig["signature"]}))).await;
    assert_eq!(ok["result"], true);
    // A P-384 key does not sign SHA-256 digests.
    let (s, _) = app
        .call(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/sign"),
            Some(json!({"hash_alg": "SHA256", "data": b64(b"x")})),
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn export_and_import_round_trip() {
    let (_d, _admin, app) = setup().await;
    for (name, spec) in [
        ("aes", json!({"obj_type": "AES", "key_size": 192})),
        ("rsa", json!({"obj_type": "RSA", "key_size": 3072})),
        (
            "ec",
            json!({"obj_type": "EC", "elliptic_curve": "NistP521"}),
        ),
    ] {
        let mut body = spec.clone();
        body["name"] = json!(format!("{name}-original"));
        body["key_ops"] = json!(if name == "aes" {
            ["ENCRYPT", "DECRYPT", "EXPORT"]
        } else {
            ["SIGN", "VERIFY", "EXPORT"]
        });
        let original = app.create_key(body).await;
        let exported = app
            .ok(
                Method::POST,
                "/crypto/v1/keys/export",
                Some(json!({"kid": original["kid"]})),
            )
            .await;
        let value = exported["value"]
            .as_str()
            .expect("exported material")
            .to_string();
        let mut import = spec.clone();
        import["name"] = json!(format!("{name}-copy"));
        import["value"] = json!(value);
        let copy = app.ok(Method::PUT, "/crypto/v1/keys", Some(import)).await;
        assert_eq!(copy["origin"], "External");
        assert_eq!(copy["key_size"], original["key_size"]);
        assert_eq!(copy["elliptic_curve"], original["elliptic_curve"]);
        if name == "aes" {
            assert_eq!(
                copy["kcv"], original["kcv"],
                "same AES key, same check value"
            );
            let enc = app
                .ok(
                    Method::POST,
                    &format!(
                        "/crypto/v1/keys/{}/encrypt",
                        original["kid"].as_str().unwrap()
                    ),
                    Some(json!({"alg": "AES", "plain": b64(b"across")})),
                )
                .await;
            let dec = app
                .ok(Method::POST, &format!("/crypto/v1/keys/{}/decrypt", copy["kid"].as_str().unwrap()), Some(json!({"alg": "AES", "cipher": enc["cipher"], "iv": enc["iv"], "tag": enc["tag"]})))
                .await;
            assert_eq!(unb64(&dec["plain"]), b"across");
        } else {
            assert_eq!(
                copy["pub_key"], original["pub_key"],
                "same private key, same public key"
            );
        }
        // Material never shows outside an export.
        assert!(copy.get("value").is_none() && original.get("value").is_none());
    }
}

#[tokio::test]
async fn wrap_unwrap_and_kek_wrapped_import() {
    let (_d, _admin, app) = setup().await;
    let kek = app.create_key(json!({"name": "kek", "obj_type": "AES", "key_size": 256, "key_ops": ["WRAPKEY", "UNWRAPKEY", "EXPORT"]})).await;
    let kek_id = kek["kid"].as_str().unwrap();
    let subject = app.create_key(json!({"name": "subject", "obj_type": "RSA", "key_size": 2048, "key_ops": ["SIGN", "VERIFY", "EXPORT"]})).await;
    let wrapped = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kek_id}/wrapkey"),
            Some(json!({"alg": "AES", "mode": "KWP", "subject": {"kid": subject["kid"]}})),
        )
        .await;
    let unwrapped = app
        .ok(Method::POST, &format!("/crypto/v1/keys/{kek_id}/unwrapkey"), Some(json!({"alg": "AES", "mode": "KWP", "wrapped_key": wrapped["wrapped_key"], "obj_type": "RSA", "name": "unwrapped"})))
        .await;
    assert_eq!(unwrapped["pub_key"], subject["pub_key"]);
    // DSM's older form names the key to wrap by `kid`; AES-KWP is deterministic, so it is
    // the same wrapping.
    let legacy = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kek_id}/wrapkey"),
            Some(json!({"alg": "AES", "mode": "KWP", "kid": subject["kid"]})),
        )
        .await;
    assert_eq!(legacy["wrapped_key"], wrapped["wrapped_key"]);
    let (s, body) = app
        .call(
            Method::POST,
            &format!("/crypto/v1/keys/{kek_id}/wrapkey"),
            Some(json!({"alg": "AES", "mode": "KWP", "kid": subject["kid"], "subject": {"kid": subject["kid"]}})),
        )
        .await;
    assert_eq!(s, 400, "{body}");

    // Import of key material wrapped (outside Keyward) under a KEK held in the catalog.
    let kek_bytes = unb64(
        &app.ok(
            Method::POST,
            "/crypto/v1/keys/export",
            Some(json!({"kid": kek_id})),
        )
        .await["value"],
    );
    let aes = keyward_crypto::random_bytes(32);
    let wrapped_aes = keyward_crypto::aes_kw_wrap(&kek_bytes, &aes, false).unwrap();
    let imported = app
        .ok(Method::PUT, "/crypto/v1/keys", Some(json!({"name": "byok", "obj_type": "AES", "value": b64(&wrapped_aes), "wrapped_by": {"name": "kek"}, "wrapping_mode": "KW"})))
        .await;
    assert_eq!(
        imported["kcv"].as_str().unwrap(),
        keyward_crypto::Material::Oct(aes).kcv().unwrap()
    );
    // The wrong KEK mode is a clear 400.
    let (s, body) = app.call(Method::PUT, "/crypto/v1/keys", Some(json!({"name": "byok2", "obj_type": "AES", "value": b64(&wrapped_aes), "wrapped_by": {"name": "kek"}, "wrapping_mode": "KWP"}))).await;
    assert_eq!(s, 400, "{body}");
}

/// DSM's per-group app permissions: what an application may do with a group's keys is what
/// its membership grants, on top of what each key permits, and a change applies to the
/// application's live sessions at once.
#[tokio::test]
async fn an_application_does_only_what_its_group_permissions_allow() {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("perms", json!({})).await;
    let other = admin.create_group("perms-other", json!({})).await;
    let (_, full_key) = admin.create_app("full", &[&g]).await;
    let full = d.login_app(&full_key).await;
    let k = kid_of(
        &full
            .create_key(
                json!({"name": "k", "obj_type": "AES", "key_size": 256, "group_id": g,
                "key_ops": ["ENCRYPT", "DECRYPT", "EXPORT", "APPMANAGEABLE"]}),
            )
            .await,
    )
    .await;

    let created = admin
        .ok(
            Method::POST,
            "/sys/v1/apps",
            Some(json!({"name": "enc-only", "add_groups": {g.clone(): ["ENCRYPT"]}, "default_group": g})),
        )
        .await;
    assert_eq!(created["groups"], json!({g.clone(): ["ENCRYPT"]}));
    let app_id = created["app_id"].as_str().unwrap().to_string();
    let app = d.login_app(created["api_key"].as_str().unwrap()).await;
    let enc = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{k}/encrypt"),
            Some(json!({"alg": "AES", "mode": "GCM", "plain": b64(b"secret")})),
        )
        .await;
    let dec_body = json!({"alg": "AES", "mode": "GCM", "cipher": enc["cipher"], "iv": enc["iv"], "tag": enc["tag"]});
    let decrypt = format!("/crypto/v1/keys/{k}/decrypt");
    let (s, body) = app
        .call(Method::POST, &decrypt, Some(dec_body.clone()))
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("DECRYPT"),
        "{body}"
    );
    // Without MANAGE it neither creates nor changes the group's keys; without EXPORT it does
    // not export.
    for (method, path, req) in [
        (
            Method::POST,
            "/crypto/v1/keys".to_string(),
            json!({"name": "k2", "obj_type": "AES", "key_size": 256, "group_id": g}),
        ),
        (
            Method::PATCH,
            format!("/crypto/v1/keys/{k}"),
            json!({"description": "mine"}),
        ),
        (
            Method::POST,
            "/crypto/v1/keys/export".to_string(),
            json!({"kid": k}),
        ),
    ] {
        let (s, body) = app.call(method.clone(), &path, Some(req)).await;
        assert_eq!(s, 403, "{method} {path}: {body}");
    }

    // mod_groups grants DECRYPT: the running session sees it.
    let path = format!("/sys/v1/apps/{app_id}");
    let changed = admin
        .ok(
            Method::PATCH,
            &path,
            Some(json!({"mod_groups": {g.clone(): ["ENCRYPT", "DECRYPT"]}})),
        )
        .await;
    assert_eq!(
        changed["groups"],
        json!({g.clone(): ["ENCRYPT", "DECRYPT"]})
    );
    let plain = app.ok(Method::POST, &decrypt, Some(dec_body.clone())).await;
    assert_eq!(unb64(&plain["plain"]), b"secret");

    // What cannot be done is refused and changes nothing: edits that do not fit the
    // application's groups conflict with them (409), an unknown permission is bad input.
    for (req, word, status) in [
        (
            json!({"add_groups": {g.clone(): ["SIGN"]}}),
            "mod_groups",
            409,
        ),
        (
            json!({"mod_groups": {other.clone(): ["SIGN"]}}),
            "add_groups",
            409,
        ),
        (json!({"del_groups": [other.clone()]}), "del_groups", 409),
        (
            json!({"groups": [g.clone()], "mod_groups": {other.clone(): []}}),
            "mod_groups",
            409,
        ),
        (json!({"add_groups": {other.clone(): ["FLY"]}}), "FLY", 400),
    ] {
        let (s, body) = admin.call(Method::PATCH, &path, Some(req.clone())).await;
        assert_eq!(s, status, "{req}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(word),
            "{req}: {body}"
        );
    }
    assert_eq!(
        admin.ok(Method::GET, &path, None).await["groups"],
        json!({g.clone(): ["ENCRYPT", "DECRYPT"]})
    );

    // add_groups and del_groups together move the application; leaving the group ends its
    // use of the group's keys, and the default group goes with it.
    let moved = admin
        .ok(
            Method::PATCH,
            &path,
            Some(json!({"add_groups": {other.clone(): ["SIGN", "VERIFY"]}, "del_groups": [g.clone()]})),
        )
        .await;
    assert_eq!(moved["groups"], json!({other.clone(): ["SIGN", "VERIFY"]}));
    assert!(moved["default_group"].is_null(), "{moved}");
    let (s, body) = app.call(Method::POST, &decrypt, Some(dec_body)).await;
    assert_eq!(s, 403, "{body}");
    // Keyward's short form gives a new group every permission and keeps a known group's own.
    let short = admin
        .ok(
            Method::PATCH,
            &path,
            Some(json!({"groups": [other.clone(), g.clone()]})),
        )
        .await;
    assert_eq!(short["groups"][&other], json!(["SIGN", "VERIFY"]));
    assert_eq!(short["groups"][&g].as_array().unwrap().len(), 13, "{short}");
}
